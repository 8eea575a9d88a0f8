//! Many gateway nodes sharing one broker (issue "Scale past one machine"), tested the way they
//! run: real `streamgate serve` processes on one Redis or NATS, the example clients as real
//! processes, and brokers that are killed and restarted.
//!
//! Four scenarios, each a module with one test per backend: `nats`, `redis` (Pub/Sub fan-out)
//! and `redis_xread` (`bus.redis.fanout = "xread"`), so `cargo test --test cluster nats`
//! runs the NATS ones:
//!
//! 1. **Cross-node delivery**: a client of every transport on node B prints, in order and with
//!    the ids the publishing node answered, the events published on node A; events
//!    published on A and C at the same time arrive in id order.
//! 2. **Losing a node**: clients on node A read some events; A is killed; more events are
//!    published on B; each client, started again on B with `--since <last id it printed>`,
//!    prints exactly the rest, with no notice.
//! 3. **Broker restart mid-stream**: a publisher on A at a steady rate, subscribers on B; the
//!    broker is killed and restarted on its data. Every acknowledged event reaches every
//!    subscriber exactly once, in id order, with the same id; the subscribers are told
//!    `unavailable`, then `available`; publishes are refused with 503 while it is down.
//! 4. **Broker down at start**: the node runs, says why in its log and `/healthz`, refuses
//!    publishes and subscriptions with 503, and becomes healthy when a broker appears.
//!
//! Needs the `streamgate` binary beside the clients (`cargo build -p streamgate`, or
//! `cargo test --workspace`), and `redis-server` and `nats-server` (the Debian packages of
//! those names): scenarios 1 and 2 share one broker of each kind, which this test binary
//! starts for itself (or the servers at `REDIS_URL`, `NATS_URL`); scenarios 3 and 4 start a
//! broker of each test's own, which they kill and restart.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::cluster::{publish, Backend, Cluster};
use support::{Client, Finished, POLL, SSE, WS, WT};
use tokio::sync::watch;

/// The topic every test publishes to (each test has a log of its own).
const TOPIC: &str = "news";

/// The ordered clients: one per transport, WebTransport in `stream` mode.
const ORDERED: [(&str, &[&str]); 4] = [
    (WS, &[]),
    (SSE, &[]),
    (POLL, &[]),
    (WT, &["--mode", "stream"]),
];

/// Starts an ordered client of every transport on `gateway`, with `args` after the topic.
fn clients_of_every_transport(gateway: &str, args: &[&str]) -> Vec<Client> {
    ORDERED
        .iter()
        .map(|(binary, mode)| Client::spawn(binary, gateway, &[&[TOPIC], args, mode].concat()))
        .collect()
}

/// An event as the test knows it: the id a node answered, and the JSON payload sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    id: String,
    payload: String,
}

impl Published {
    /// The line every client prints for it (the payload is compact JSON already).
    fn line(&self) -> String {
        format!("{} {TOPIC} {}", self.id, self.payload)
    }
}

/// `[n,"node"]`: a payload that names its number and where it was published.
fn payload(n: usize, node: &str) -> String {
    format!("[{n},\"{node}\"]")
}

/// The epoch and sequence of an `epoch:seq` id.
fn split_id(id: &str) -> (&str, u64) {
    let (epoch, seq) = id
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{id:?} is not an id"));
    (
        epoch,
        seq.parse()
            .unwrap_or_else(|_| panic!("{id:?} is not an id")),
    )
}

fn seq(id: &str) -> u64 {
    split_id(id).1
}

/// Publishes `numbers` one after another on `node`, each once, and returns what it answered.
async fn publish_each(
    cluster: &Cluster,
    node: usize,
    numbers: std::ops::RangeInclusive<usize>,
) -> Vec<Published> {
    let node = &cluster.nodes[node];
    let mut published = Vec::new();
    for n in numbers {
        let payload = payload(n, &node.name);
        let id = node.publish_ok(TOPIC, &payload).await;
        published.push(Published { id, payload });
    }
    published
}

fn lines(events: &[Published]) -> Vec<String> {
    events.iter().map(Published::line).collect()
}

/// Asserts that no client printed a notice (`gap`, `reset`, `unavailable`, …).
fn assert_no_notice(finished: &Finished) {
    assert!(
        !finished.stderr.contains("notice:"),
        "unexpected notice:\n{}",
        finished.stderr
    );
}

/// Runs `scenario` against `backend`, printing how long it took (shown with --nocapture).
async fn timed(name: &str, backend: Backend, scenario: impl std::future::Future<Output = ()>) {
    let started = Instant::now();
    scenario.await;
    eprintln!("{name} [{}]: {:.1?}", backend.label(), started.elapsed());
}

/// A module `$name` with one test per backend, `$name::nats`, `$name::redis` (Pub/Sub
/// fan-out) and `$name::redis_xread`, each running `$scenario(backend)`.
macro_rules! on_every_backend {
    ($name:ident => $scenario:ident) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn nats() {
                timed(stringify!($name), Backend::Nats, $scenario(Backend::Nats)).await;
            }

            #[tokio::test]
            async fn redis() {
                timed(stringify!($name), Backend::Redis, $scenario(Backend::Redis)).await;
            }

            #[tokio::test]
            async fn redis_xread() {
                timed(
                    stringify!($name),
                    Backend::RedisXread,
                    $scenario(Backend::RedisXread),
                )
                .await;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// 1. Cross-node delivery, every transport

async fn cross_node_delivery(backend: Backend) {
    let mut cluster = Cluster::on_shared_broker(backend);
    let (a, b, c) = (
        cluster.start_node("A").await,
        cluster.start_node("B").await,
        cluster.start_node("C").await,
    );
    cluster.wait_until_available().await;

    let total = 70;
    let clients = clients_of_every_transport(&cluster.nodes[b].url(), &["--count", "70"]);
    cluster.nodes[b]
        .wait_subscribers(TOPIC, clients.len() as u64)
        .await;

    // 50 from A, one after another: printed in that order, with the ids A answered.
    let mut expected = publish_each(&cluster, a, 1..=50).await;
    let epoch = split_id(&expected[0].id).0.to_owned();
    for pair in expected.windows(2) {
        assert!(
            seq(&pair[1].id) > seq(&pair[0].id),
            "ids out of order: {pair:?}"
        );
    }
    // Then 10 each from A and C at the same time: the nodes share one counter, and every
    // client prints the 20 in id order, whatever the order of the answers.
    let (from_a, from_c) = tokio::join!(
        publish_each(&cluster, a, 51..=60),
        publish_each(&cluster, c, 61..=70)
    );
    let mut concurrent = [from_a, from_c].concat();
    concurrent.sort_by_key(|event| seq(&event.id));
    for event in &concurrent {
        assert_eq!(split_id(&event.id).0, epoch, "{event:?}: another epoch");
    }
    expected.extend(concurrent);
    assert_eq!(expected.len(), total);
    let unique: HashSet<&str> = expected.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        unique.len(),
        total,
        "an id was handed out twice: {expected:?}"
    );

    let expected = lines(&expected);
    for client in clients {
        let finished = client.finish().await;
        finished.assert_printed(&expected);
        assert_no_notice(&finished);
    }
}

on_every_backend!(cross_node_delivery_on_every_transport => cross_node_delivery);

// ---------------------------------------------------------------------------------------------
// 2. Lose node A, resume on node B from the last id, miss nothing

async fn resume_on_another_node(backend: Backend) {
    let mut cluster = Cluster::on_shared_broker(backend);
    let (a, b) = (cluster.start_node("A").await, cluster.start_node("B").await);
    cluster.wait_until_available().await;

    let mut clients = clients_of_every_transport(&cluster.nodes[a].url(), &[]);
    cluster.nodes[a]
        .wait_subscribers(TOPIC, clients.len() as u64)
        .await;

    // Published on B, read on A: each client reads at least the first five.
    let first = publish_each(&cluster, b, 1..=10).await;
    for client in &mut clients {
        for event in &first[..5] {
            assert_eq!(client.next_line().await, event.line());
        }
    }

    // A dies with the rest of the first batch possibly still in flight; the second batch
    // is published on B while the clients are away.
    cluster.nodes[a].kill();
    let second = publish_each(&cluster, b, 11..=20).await;
    let all: Vec<Published> = first.iter().chain(&second).cloned().collect();

    let mut resumed = Vec::new();
    for (client, (binary, mode)) in clients.into_iter().zip(ORDERED) {
        // What it printed before it was stopped: the first events, in order, none twice.
        let before = client.kill_and_finish().await;
        let printed = before.lines.len();
        assert!(
            printed >= 5 && before.lines[..] == lines(&all[..printed])[..],
            "{binary}: printed on A {:#?}",
            before.lines
        );
        let last = all[printed - 1].id.clone();
        let rest = &all[printed..];
        let count = rest.len().to_string();
        let client = Client::spawn(
            binary,
            &cluster.nodes[b].url(),
            &[&[TOPIC, "--since", &last, "--count", &count], mode].concat(),
        );
        resumed.push((client, lines(rest)));
    }
    for (client, rest) in resumed {
        let finished = client.finish().await;
        finished.assert_printed(&rest);
        assert_no_notice(&finished);
    }
}

on_every_backend!(clients_resume_on_another_node_after_losing_theirs => resume_on_another_node);

// ---------------------------------------------------------------------------------------------
// 3. Broker restart in the middle of a stream loses nothing acknowledged

/// What the publisher has seen so far.
#[derive(Debug, Default, Clone)]
struct Outcomes {
    /// Publishes answered 200: the event and its id. The contract covers these.
    acked: Vec<Published>,
    /// Publishes answered 503 `bus_unavailable`: nothing was promised.
    refused: usize,
    /// Anything else (another status or error code, no answer): the node misbehaved.
    other: Vec<String>,
}

/// Publishes to one node at a steady rate, each publish in its own task so one slow answer
/// does not hold back the next, and records every outcome.
struct Publisher {
    outcomes: watch::Receiver<Outcomes>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(node: SocketAddr, name: &str, every: Duration) -> Self {
        let (record, outcomes) = watch::channel(Outcomes::default());
        let record = Arc::new(record);
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut in_flight = tokio::task::JoinSet::new();
            for n in 1.. {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let payload = payload(n, &name);
                let record = Arc::clone(&record);
                in_flight.spawn(async move {
                    let reply = publish(node, TOPIC, &payload).await;
                    record.send_modify(|outcomes| match reply {
                        Ok(reply) if reply.status == 200 => {
                            let id = reply.json()["id"].as_str().unwrap_or_default().to_owned();
                            outcomes.acked.push(Published { id, payload });
                        }
                        Ok(reply)
                            if reply.status == 503
                                && reply.json()["error"]["code"] == "bus_unavailable" =>
                        {
                            outcomes.refused += 1;
                        }
                        Ok(reply) => outcomes.other.push(format!(
                            "{payload}: {} {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        )),
                        Err(e) => outcomes.other.push(format!("{payload}: {e}")),
                    });
                });
                // Reap what finished, so the set does not grow for the whole test.
                while in_flight.try_join_next().is_some() {}
            }
            while in_flight.join_next().await.is_some() {}
        });
        Self {
            outcomes,
            stop,
            task,
        }
    }

    /// Waits until `done` holds for the outcomes so far.
    async fn wait_for(&mut self, what: &str, done: impl FnMut(&Outcomes) -> bool) -> Outcomes {
        let seen =
            tokio::time::timeout(support::cluster::HEALTH_WAIT, self.outcomes.wait_for(done))
                .await
                .map(|seen| seen.map(|outcomes| outcomes.clone()));
        match seen {
            Ok(Ok(outcomes)) => outcomes,
            _ => panic!(
                "the publisher never saw {what}: {:?}",
                summary(&self.outcomes.borrow())
            ),
        }
    }

    /// Stops publishing, waits for the answers still due, and returns every outcome.
    async fn stop(self) -> Outcomes {
        let _ = self.stop.send(());
        tokio::time::timeout(support::WAIT * 2, self.task)
            .await
            .expect("the publisher's last answers within the bound")
            .expect("the publisher task");
        self.outcomes.borrow().clone()
    }
}

fn summary(outcomes: &Outcomes) -> String {
    format!(
        "{} acknowledged, {} refused with 503, {} other outcomes, first: {:?}",
        outcomes.acked.len(),
        outcomes.refused,
        outcomes.other.len(),
        &outcomes.other[..outcomes.other.len().min(3)]
    )
}

/// Checks what one subscriber printed against the acknowledged events: each exactly once,
/// with its id; everything in strictly increasing id order, in one epoch; no payload twice.
fn check_subscriber(name: &str, printed: &[String], acked: &[Published], epoch: &str) {
    let mut by_id: HashMap<&str, &str> = HashMap::new();
    let mut payloads = HashSet::new();
    let mut last_seq = 0;
    for line in printed {
        let mut fields = line.splitn(3, ' ');
        let (Some(id), Some(topic), Some(payload)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("{name}: not an event line: {line:?}");
        };
        assert_eq!(topic, TOPIC, "{name}: {line}");
        let (line_epoch, line_seq) = split_id(id);
        assert_eq!(line_epoch, epoch, "{name}: {line} is from another epoch");
        assert!(
            line_seq > last_seq,
            "{name}: {line} after seq {last_seq}: out of order or repeated"
        );
        last_seq = line_seq;
        assert!(payloads.insert(payload), "{name}: {payload} printed twice");
        by_id.insert(id, payload);
    }
    let missing: Vec<&Published> = acked
        .iter()
        .filter(|event| by_id.get(event.id.as_str()) != Some(&event.payload.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: {} acknowledged events missing or different, first {:?}",
        missing.len(),
        missing.first()
    );
}

async fn broker_restart_loses_nothing_acknowledged(backend: Backend) {
    let mut cluster = Cluster::with_own_broker(backend);
    let (a, b) = (cluster.start_node("A").await, cluster.start_node("B").await);
    cluster.wait_until_available().await;

    let mut clients = clients_of_every_transport(&cluster.nodes[b].url(), &[]);
    cluster.nodes[b]
        .wait_subscribers(TOPIC, clients.len() as u64)
        .await;

    let mut publisher = Publisher::start(cluster.nodes[a].addr, "A", Duration::from_millis(10));
    publisher
        .wait_for("20 acknowledged", |o| o.acked.len() >= 20)
        .await;

    cluster.own_broker().kill();
    cluster.wait_until_unavailable().await;
    let down = publisher.wait_for("3 refused", |o| o.refused >= 3).await;

    cluster.own_broker().restart();
    cluster.wait_until_available().await;
    let acked_before = down.acked.len();
    publisher
        .wait_for("20 more acknowledged", |o| {
            o.acked.len() >= acked_before + 20
        })
        .await;
    let outcomes = publisher.stop().await;
    eprintln!("publisher: {}", summary(&outcomes));
    assert!(outcomes.other.is_empty(), "{}", summary(&outcomes));
    assert!(outcomes.refused > 0, "{}", summary(&outcomes));

    let acked = &outcomes.acked;
    let epoch = split_id(&acked[0].id).0.to_owned();
    let last_acked = acked
        .iter()
        .map(|e| seq(&e.id))
        .max()
        .expect("acked events");
    for (client, (binary, _)) in clients.iter_mut().zip(ORDERED) {
        // Read up to the newest acknowledged id; later lines can only be events whose
        // publish failed but that the broker stored anyway.
        while client
            .lines
            .last()
            .is_none_or(|line| seq(line.split(' ').next().unwrap_or_default()) < last_acked)
        {
            client.next_line().await;
        }
        check_subscriber(binary, &client.lines, acked, &epoch);
        if binary != POLL {
            // Streams stay open through the outage and carry both notices, in that order.
            // (A long-polling client asks again instead: its polls are refused with 503.)
            let stderr = client.stderr();
            let unavailable = stderr.find("notice: unavailable");
            let available = stderr.find("notice: available");
            assert!(
                matches!((unavailable, available), (Some(u), Some(a)) if u < a),
                "{binary}: no `unavailable` then `available` notice:\n{stderr}"
            );
        }
        assert!(
            !client.stderr().contains("notice: reset") && !client.stderr().contains("notice: gap"),
            "{binary}:\n{}",
            client.stderr()
        );
    }
}

on_every_backend!(broker_restart_mid_stream_loses_nothing_acknowledged => broker_restart_loses_nothing_acknowledged);

// ---------------------------------------------------------------------------------------------
// 4. Broker down at start

async fn broker_down_at_start(backend: Backend) {
    let mut cluster = Cluster::with_broker_missing(backend);
    let url = cluster.broker_url().to_owned();
    let endpoint = url.split("://").nth(1).unwrap_or(&url).to_owned();
    let a = cluster.start_node("A").await;
    let node = &cluster.nodes[a];

    // It says which broker it cannot reach, in its log and on /healthz.
    node.wait_for_log("cannot reach the broker").await;
    let log = node.log();
    let line = log
        .lines()
        .find(|line| line.contains("cannot reach the broker"))
        .unwrap_or_default();
    assert!(
        line.contains("ERROR") && line.contains(&endpoint),
        "not an error naming {endpoint}: {line}"
    );
    let (status, health) = node.healthz().await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["bus"]["available"], false, "{health}");
    assert_eq!(health["bus"]["backend"], backend.name(), "{health}");
    let detail = health["bus"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&endpoint), "{health}");

    // Publishes and new subscriptions are refused, and say why.
    let reply = node.publish(TOPIC, "1").await;
    assert_eq!(reply.status, 503, "{:?}", reply.json());
    assert_eq!(
        reply.json()["error"]["code"],
        "bus_unavailable",
        "{:?}",
        reply.json()
    );
    let poll = node
        .request("GET", &format!("/poll?topics={TOPIC}&timeout=0"), None)
        .await;
    assert_eq!(poll.status, 503, "{:?}", poll.json());
    assert_eq!(
        poll.json()["error"]["code"],
        "bus_unavailable",
        "{:?}",
        poll.json()
    );

    // A broker appears on that port: the same process becomes healthy and serves.
    let appeared = Instant::now();
    cluster.start_broker();
    let node = &mut cluster.nodes[a];
    node.wait_health(true).await;
    eprintln!(
        "healthy {:.1?} after the broker appeared",
        appeared.elapsed()
    );
    let id = node.publish_ok(TOPIC, "1").await;
    let client = Client::spawn(
        WS,
        &node.url(),
        &[
            TOPIC,
            "--since",
            &format!("{}:0", split_id(&id).0),
            "--count",
            "1",
        ],
    );
    client
        .finish()
        .await
        .assert_printed(&[format!("{id} {TOPIC} 1")]);
    assert!(node.is_running(), "the node exited:\n{}", node.log());
}

on_every_backend!(node_started_without_its_broker_waits_for_it => broker_down_at_start);
