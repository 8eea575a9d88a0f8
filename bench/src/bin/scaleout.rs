//! `scaleout`: many gateway nodes on one NATS JetStream log, tens of thousands of subscribers
//! across WebSocket, SSE and long polling, one event per `--interval` seconds per topic
//! (bench/README.md, `scaleout`; the figures and the model built on them: docs/CAPACITY.md).
//!
//! ```text
//! scaleout --quick                                   # 2 nodes, 2 000 subscribers, 10 s
//! scaleout --subscribers 10000,50000,100000 --seconds 60
//! ```
//!
//! One run: a `nats-server -js` of its own on free ports (client and monitoring), `--nodes`
//! `streamgate` processes on ports of their own, each with a config written for the run (no
//! per-IP or publish limits, `max_connections` sized to its share), then `loadgen` processes
//! (at most `--per-loadgen` subscribers each, every one of a single node and transport, bound
//! to four source addresses 127.A.B.C of its own). Subscribers are spread evenly over nodes ×
//! transports. A warm-up publishes until every subscriber has received an event (so each is
//! registered with its node), then the steady window: one open-loop publisher per topic,
//! topic `k` published on node `k % nodes`, for `--seconds`; then a drain until every
//! delivery is in or none arrives for 3 s.
//!
//! Why each node listens on its own port: the gateway has no `SO_REUSEPORT` option, and
//! nginx in front (examples/cluster/) would hold two descriptors per subscriber under the same
//! 20 000-descriptor limit and spend about as much CPU as the gateways on a 2-core machine.
//!
//! Every process runs under the harness: servers under a `sh` wrapper that kills them when
//! the harness's end of its stdin closes (on exit, panic, signal or SIGKILL alike), load
//! generators exit when their stdin closes; and a watchdog ends a run that takes more than
//! `--run-limit` seconds.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use serde::Serialize;
use streamgate_bench::vs_nchan::{
    cpu_us, free_port, rss_kib, server_subscribers, sibling_bin, slab_kib, LoadgenSummary,
    Percentiles, Publisher, Server, TransportKind,
};

/// Subscribers one gateway node may hold: the 20 000-descriptor limit of a process here,
/// less room for the broker connection, the publisher and the harness's own requests.
const MAX_PER_NODE: usize = 19_000;
/// A drain ends when no delivery arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(3);

/// Gateway nodes on one NATS JetStream log and subscribers of every transport across them.
#[derive(Debug, Parser)]
#[command(name = "scaleout")]
struct Cli {
    /// Subscriber counts, one run (or `--repeat` runs) each.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    subscribers: Vec<usize>,
    /// Gateway nodes (default: at least 5, and enough that each holds ≤ 15 000 subscribers).
    #[arg(long)]
    nodes: Option<usize>,
    /// Seconds between two events of a topic (1: one event per second per subscriber).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Seconds of steady publishing.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Topics; load generator `p` subscribes to topic `p % topics` (1: one topic, all fan-out).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Transports the subscribers are spread over.
    #[arg(long, value_delimiter = ',', default_value = "ws,sse,longpoll")]
    transports: Vec<TransportKind>,
    /// Runs per subscriber count; tables show medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Most subscribers per load-generator process.
    #[arg(long, default_value_t = 5000)]
    per_loadgen: usize,
    /// Event payload bytes (at least the time stamp's).
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// A run that takes longer than this many seconds is ended and the harness fails.
    #[arg(long, default_value_t = 180)]
    run_limit: u64,
    /// Smoke check: 2 nodes, 2 000 subscribers, 10 s.
    #[arg(long)]
    quick: bool,
    /// The gateway (default: `streamgate` next to this binary).
    #[arg(long)]
    streamgate_bin: Option<PathBuf>,
    /// The load generator (default: `loadgen` next to this binary).
    #[arg(long)]
    loadgen_bin: Option<PathBuf>,
    /// The broker (default: `nats-server` on PATH, else /usr/sbin/nats-server).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Also write every run's figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Cli {
    fn nodes_for(&self, subscribers: usize) -> usize {
        self.nodes
            .unwrap_or_else(|| subscribers.div_ceil(15_000).max(5))
            .max(1)
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

// ---------------------------------------------------------------------------------------
// Processes.

/// The deadline of the run in progress (seconds since `EPOCH`), 0 when none.
static RUN_DEADLINE: AtomicU64 = AtomicU64::new(0);

/// Ends the harness when a run passes its deadline; dropping every pipe on exit stops the
/// servers and load generators.
#[allow(clippy::exit)] // the watchdog's whole job: the stuck run cannot be unwound
fn start_watchdog(epoch: Instant) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let deadline = RUN_DEADLINE.load(Ordering::Relaxed);
        if deadline != 0 && epoch.elapsed().as_secs() > deadline {
            eprintln!("scaleout: a run passed --run-limit; stopping everything");
            std::process::exit(3);
        }
    });
}

/// A server under `sh`: the shell starts it, prints its pid, and kills it (SIGKILL) as soon as
/// its stdin, whose write end only the harness holds, reaches end of file.
#[derive(Debug)]
struct Guarded {
    shell: Child,
    pid: u32,
    name: String,
}

impl Guarded {
    fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        let script =
            r#""$@" </dev/null >&2 & child=$!; echo "$child"; read -r _; kill -9 "$child""#;
        let mut command = Command::new("sh");
        command.env("RUST_LOG", "warn");
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        command.args(["-c", script, "sh"]).arg(program).args(args);
        let mut shell = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut first = String::new();
        BufReader::new(shell.stdout.take().context("wrapper stdout")?).read_line(&mut first)?;
        let pid = first
            .trim()
            .parse()
            .with_context(|| format!("{name}: wrapper printed {first:?}"))?;
        Ok(Self {
            shell,
            pid,
            name: name.to_owned(),
        })
    }

    fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Waits until `addr` accepts a connection.
    fn wait_listening(&self, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if !self.alive() || Instant::now() > deadline {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("{} is not listening on {addr}: {log}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
    }
}

/// One `loadgen` process: subscribers of one transport on one node.
#[derive(Debug)]
struct Generator {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    node: usize,
    transport: TransportKind,
    topic: usize,
    connections: usize,
}

impl Generator {
    fn ask(&mut self, command: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{command}")?;
        Ok(self.stdin.flush()?)
    }

    fn reply(&self, within: Duration) -> anyhow::Result<String> {
        self.replies
            .recv_timeout(within)
            .with_context(|| format!("loadgen {} gave no answer", self.child.id()))
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Four source addresses for generator `index`, none shared with another generator.
fn generator_sources(index: usize) -> String {
    (0..4)
        .map(|k| format!("127.{}.{}.{}", 1 + index / 250, index % 250, 10 + k))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------
// One run.

#[derive(Debug)]
struct Cluster {
    broker: Guarded,
    broker_monitor: SocketAddr,
    nodes: Vec<(Guarded, SocketAddr)>,
    generators: Vec<Generator>,
}

/// `/varz` counters of the broker.
#[derive(Clone, Copy, Debug, Default)]
struct BrokerCounters {
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
}

fn broker_counters(monitor: SocketAddr) -> anyhow::Result<BrokerCounters> {
    let mut tcp = TcpStream::connect(monitor)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        tcp,
        "GET /varz HTTP/1.1\r\nHost: {monitor}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw)?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let varz: serde_json::Value = serde_json::from_str(body).context("/varz")?;
    let field = |name: &str| varz.get(name).and_then(serde_json::Value::as_u64);
    Ok(BrokerCounters {
        in_msgs: field("in_msgs").context("in_msgs")?,
        out_msgs: field("out_msgs").context("out_msgs")?,
        in_bytes: field("in_bytes").unwrap_or(0),
        out_bytes: field("out_bytes").unwrap_or(0),
    })
}

fn node_config(listen: SocketAddr, nats_url: &str, max_connections: usize) -> String {
    format!(
        "# Written by scaleout for one run.\n\
         [server]\nlisten = \"{listen}\"\nmax_connections = {max_connections}\n\
         max_connections_per_ip = 0\npublish_rate = 0.0\ntopic_create_rate = 0.0\n\
         backlog = 4096\nshutdown_grace = 1\n\
         [tls]\nenabled = false\n\
         [webtransport]\nenabled = false\n\
         [demo]\nenabled = false\n\
         [lab]\nenabled = false\n\
         [bus]\nbackend = \"nats\"\n\
         [bus.nats]\nurl = \"{nats_url}\"\nstream = \"SCALEOUT\"\nsubject_prefix = \"scaleout\"\n"
    )
}

/// The share of `total` that part `index` of `parts` gets.
fn share(total: usize, parts: usize, index: usize) -> usize {
    total / parts + usize::from(index < total % parts)
}

impl Cluster {
    fn start(cli: &Cli, plan: &Plan, dir: &Path) -> anyhow::Result<Self> {
        let nats = cli
            .nats_server
            .clone()
            .or_else(|| {
                ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let (client_port, monitor_port) = (free_port()?, free_port()?);
        let store = dir.join("jetstream");
        let broker_log = dir.join("nats.log");
        let broker = Guarded::spawn(
            "nats-server",
            &nats,
            &[
                "-js".into(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client_port.to_string(),
                "-m".into(),
                monitor_port.to_string(),
                "-sd".into(),
                store.display().to_string(),
            ],
            &broker_log,
        )?;
        broker.wait_listening(loopback(client_port), &broker_log)?;
        let nats_url = format!("nats://127.0.0.1:{client_port}");

        let gateway = cli
            .streamgate_bin
            .clone()
            .unwrap_or_else(|| sibling_bin("streamgate"));
        let mut nodes = Vec::new();
        for node in 0..plan.nodes {
            let addr = loopback(free_port()?);
            let config = dir.join(format!("node{node}.toml"));
            let most = share(plan.subscribers, plan.nodes, node) + 512;
            std::fs::write(&config, node_config(addr, &nats_url, most))?;
            let log = dir.join(format!("node{node}.log"));
            let args = [
                "serve".into(),
                "--config".into(),
                config.display().to_string(),
            ];
            let process = Guarded::spawn(&format!("node {node}"), &gateway, &args, &log)?;
            process.wait_listening(addr, &log)?;
            // Its first request's allocations belong to the baseline, not to the subscribers.
            server_subscribers(Server::Streamgate, addr)?;
            nodes.push((process, addr));
        }
        Ok(Self {
            broker,
            broker_monitor: loopback(monitor_port),
            nodes,
            generators: Vec::new(),
        })
    }

    fn spawn_generators(&mut self, cli: &Cli, plan: &Plan) -> anyhow::Result<()> {
        let loadgen = cli
            .loadgen_bin
            .clone()
            .unwrap_or_else(|| sibling_bin("loadgen"));
        let kinds = &plan.transports;
        for node in 0..plan.nodes {
            let on_node = share(plan.subscribers, plan.nodes, node);
            for (k, &transport) in kinds.iter().enumerate() {
                let group = share(on_node, kinds.len(), k);
                let processes = group.div_ceil(cli.per_loadgen.max(1));
                for part in 0..processes {
                    let connections = share(group, processes, part);
                    let index = self.generators.len();
                    let topic = index % plan.topics;
                    let mut child = Command::new(&loadgen)
                        .args(["--target", "streamgate", "--transport", transport.name()])
                        .arg("--url")
                        .arg(format!("http://{}", self.nodes[node].1))
                        .arg("--topic")
                        .arg(topic_name(topic))
                        .arg("--connections")
                        .arg(connections.to_string())
                        .arg("--source-ips")
                        .arg(generator_sources(index))
                        .arg("--max-seconds")
                        .arg(cli.run_limit.to_string())
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::inherit())
                        .spawn()
                        .with_context(|| format!("starting {}", loadgen.display()))?;
                    let stdin = child.stdin.take().context("loadgen stdin")?;
                    let stdout = child.stdout.take().context("loadgen stdout")?;
                    let (tx, replies) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                            if tx.send(line).is_err() {
                                break;
                            }
                        }
                    });
                    self.generators.push(Generator {
                        child,
                        stdin,
                        replies,
                        node,
                        transport,
                        topic,
                        connections,
                    });
                }
            }
        }
        let within = Duration::from_secs(60 + plan.subscribers as u64 / 1000);
        for generator in &self.generators {
            let line = generator.reply(within)?;
            ensure!(line.contains("\"ready\""), "loadgen: {line}");
        }
        Ok(())
    }

    /// Every generator's summary, in generator order.
    fn reports(&mut self) -> anyhow::Result<Vec<LoadgenSummary>> {
        for generator in &mut self.generators {
            generator.ask("report")?;
        }
        self.generators
            .iter()
            .map(|generator| {
                let line = generator.reply(Duration::from_secs(60))?;
                serde_json::from_str(&line).with_context(|| format!("loadgen said {line}"))
            })
            .collect()
    }

    fn cpu(&self) -> CpuSnapshot {
        CpuSnapshot {
            nodes: self.nodes.iter().map(|(p, _)| cpu_us(p.pid)).collect(),
            broker: cpu_us(self.broker.pid),
            generators: self.generators.iter().map(|g| cpu_us(g.child.id())).sum(),
        }
    }
}

#[derive(Debug)]
struct CpuSnapshot {
    nodes: Vec<u64>,
    broker: u64,
    generators: u64,
}

fn topic_name(topic: usize) -> String {
    format!("scale{topic}")
}

/// What one run is asked to do.
#[derive(Debug, Clone)]
struct Plan {
    subscribers: usize,
    nodes: usize,
    topics: usize,
    transports: Vec<TransportKind>,
    interval: f64,
    seconds: f64,
}

/// One transport's figures.
#[derive(Debug, Clone, Serialize)]
struct TransportFigures {
    transport: &'static str,
    subscribers: usize,
    connected: usize,
    expected: u64,
    received: u64,
    missing: i64,
    gaps: u64,
    dups: u64,
    reconnects: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// One node's figures.
#[derive(Debug, Clone, Serialize)]
struct NodeFigures {
    subscribers: usize,
    counted: u64,
    rss_kib_per_conn: f64,
    rss_mib: f64,
    cpu_us_per_delivery: f64,
    cpu_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
struct RunFigures {
    subscribers: usize,
    nodes: usize,
    topics: usize,
    events_per_topic: u64,
    steady_s: f64,
    connect_s: f64,
    transports: Vec<TransportFigures>,
    per_node: Vec<NodeFigures>,
    expected: u64,
    received: u64,
    deliveries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    gateway_rss_mib: f64,
    gateway_rss_kib_per_conn: f64,
    slab_kib_per_conn_both_ends: f64,
    gateway_cpu_us_per_delivery: f64,
    gateway_cpu_percent: f64,
    broker_cpu_percent: f64,
    broker_in_msgs_per_s: f64,
    broker_out_msgs_per_s: f64,
    broker_in_kib_per_s: f64,
    broker_out_kib_per_s: f64,
    loadgen_cpu_us_per_delivery: f64,
    loadgen_cpu_percent: f64,
    publisher_failed: u64,
    publisher_max_late_ms: f64,
    load_before: String,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run_once(cli: &Cli, plan: &Plan, dir: &Path) -> anyhow::Result<RunFigures> {
    std::fs::create_dir_all(dir)?;
    let load_before = load_average();
    let slab_before = slab_kib();
    let mut cluster = Cluster::start(cli, plan, dir)?;
    let rss_baseline: Vec<u64> = cluster.nodes.iter().map(|(p, _)| rss_kib(p.pid)).collect();

    let connect_started = Instant::now();
    cluster.spawn_generators(cli, plan)?;
    let connect_s = connect_started.elapsed().as_secs_f64();

    // Topic k is published on node k % nodes, so every node takes publishes.
    let mut publishers: Vec<Publisher> = (0..plan.topics)
        .map(|k| {
            let addr = cluster.nodes[k % plan.nodes].1;
            Publisher::new(Server::Streamgate, addr, &topic_name(k), cli.payload_bytes)
        })
        .collect();

    // Warm-up: until every subscriber has an event, i.e. is registered with its node.
    let warm_limit = Duration::from_secs(30 + plan.subscribers as u64 / 1000);
    let warm_started = Instant::now();
    loop {
        for publisher in &mut publishers {
            publisher.run(1.0, Duration::ZERO)?;
        }
        std::thread::sleep(Duration::from_millis(500));
        let fed: usize = cluster.reports()?.iter().map(|s| s.fed).sum();
        if fed >= plan.subscribers {
            break;
        }
        ensure!(
            warm_started.elapsed() < warm_limit,
            "only {fed} of {} subscribers got a warm-up event within {warm_limit:?}",
            plan.subscribers
        );
    }
    for generator in &mut cluster.generators {
        let from = publishers[generator.topic].next_index();
        generator.ask(&format!("reset {from}"))?;
    }
    for generator in &cluster.generators {
        generator.reply(Duration::from_secs(30))?;
    }
    let counted: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|(_, addr)| server_subscribers(Server::Streamgate, *addr))
        .collect::<anyhow::Result<_>>()?;
    let rss_connected: Vec<u64> = cluster.nodes.iter().map(|(p, _)| rss_kib(p.pid)).collect();
    let slab_connected = slab_kib();

    // Steady window.
    let cpu_before = cluster.cpu();
    let broker_before = broker_counters(cluster.broker_monitor)?;
    let window_started = Instant::now();
    let rate = 1.0 / plan.interval;
    let steady = Duration::from_secs_f64(plan.seconds);
    let publishing: Vec<_> = publishers
        .into_iter()
        .map(|mut publisher| {
            std::thread::spawn(move || {
                let report = publisher.run(rate, steady);
                (publisher, report)
            })
        })
        .collect();
    let mut publish_reports = Vec::new();
    for handle in publishing {
        let (_, report) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))?;
        publish_reports.push(report?);
    }
    let events_per_topic = publish_reports[0].sent;
    let expected_of = |g: &Generator| g.connections as u64 * events_per_topic;
    let expected: u64 = cluster.generators.iter().map(expected_of).sum();

    // Drain.
    let mut summaries = cluster.reports()?;
    let mut received: u64 = summaries.iter().map(|s| s.deliveries).sum();
    let mut grew = Instant::now();
    while received < expected && grew.elapsed() < DRAIN_QUIET {
        std::thread::sleep(Duration::from_millis(100));
        summaries = cluster.reports()?;
        let now: u64 = summaries.iter().map(|s| s.deliveries).sum();
        if now != received {
            received = now;
            grew = Instant::now();
        }
    }
    let window_s = window_started.elapsed().as_secs_f64();
    let cpu_after = cluster.cpu();
    let broker_after = broker_counters(cluster.broker_monitor)?;
    let rss_end: Vec<u64> = cluster.nodes.iter().map(|(p, _)| rss_kib(p.pid)).collect();
    for (process, _) in &cluster.nodes {
        ensure!(process.alive(), "{} exited during the run", process.name);
    }

    // Figures.
    let mut transports = Vec::new();
    let mut all = LoadgenSummary::default();
    for &kind in &plan.transports {
        let mut merged = LoadgenSummary::default();
        let mut expected_here = 0;
        for (generator, summary) in cluster.generators.iter().zip(&summaries) {
            if generator.transport == kind {
                merged.absorb(summary);
                expected_here += expected_of(generator);
            }
        }
        all.absorb(&merged);
        let latency = Percentiles::of(&LoadgenSummary::histogram(&merged.latency_us));
        transports.push(TransportFigures {
            transport: kind.name(),
            subscribers: merged.connections,
            connected: merged.connected,
            expected: expected_here,
            received: merged.deliveries,
            missing: expected_here as i64 - merged.deliveries as i64,
            gaps: merged.gaps,
            dups: merged.dups,
            reconnects: merged.reconnects,
            p50_ms: latency.p50_ms,
            p99_ms: latency.p99_ms,
            max_ms: latency.max_ms,
        });
    }
    let mut per_node = Vec::new();
    for node in 0..plan.nodes {
        let (subscribers, deliveries) = cluster
            .generators
            .iter()
            .zip(&summaries)
            .filter(|(g, _)| g.node == node)
            .fold((0, 0), |(n, d), (g, s)| {
                (n + g.connections, d + s.deliveries)
            });
        let cpu = cpu_after.nodes[node].saturating_sub(cpu_before.nodes[node]);
        let rss = rss_connected[node].max(rss_end[node]);
        per_node.push(NodeFigures {
            subscribers,
            counted: counted[node],
            rss_kib_per_conn: rss.saturating_sub(rss_baseline[node]) as f64
                / subscribers.max(1) as f64,
            rss_mib: rss as f64 / 1024.0,
            cpu_us_per_delivery: cpu as f64 / deliveries.max(1) as f64,
            cpu_percent: cpu as f64 / 1e4 / window_s,
        });
    }
    let gateway_cpu: u64 = cpu_after
        .nodes
        .iter()
        .zip(&cpu_before.nodes)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    let rss_total: u64 = rss_connected
        .iter()
        .zip(&rss_end)
        .map(|(a, b)| *a.max(b))
        .sum();
    let broker_cpu = cpu_after.broker.saturating_sub(cpu_before.broker);
    let loadgen_cpu = cpu_after.generators.saturating_sub(cpu_before.generators);
    let latency = Percentiles::of(&LoadgenSummary::histogram(&all.latency_us));
    let per_s = |delta: u64| delta as f64 / window_s;
    Ok(RunFigures {
        subscribers: plan.subscribers,
        nodes: plan.nodes,
        topics: plan.topics,
        events_per_topic,
        steady_s: plan.seconds,
        connect_s,
        transports,
        per_node,
        expected,
        received,
        deliveries_per_s: received as f64 / window_s,
        p50_ms: latency.p50_ms,
        p99_ms: latency.p99_ms,
        gateway_rss_mib: rss_total as f64 / 1024.0,
        gateway_rss_kib_per_conn: rss_total.saturating_sub(rss_baseline.iter().sum()) as f64
            / plan.subscribers.max(1) as f64,
        slab_kib_per_conn_both_ends: slab_connected.saturating_sub(slab_before) as f64
            / plan.subscribers.max(1) as f64,
        gateway_cpu_us_per_delivery: gateway_cpu as f64 / received.max(1) as f64,
        gateway_cpu_percent: gateway_cpu as f64 / 1e4 / window_s,
        broker_cpu_percent: broker_cpu as f64 / 1e4 / window_s,
        broker_in_msgs_per_s: per_s(broker_after.in_msgs - broker_before.in_msgs),
        broker_out_msgs_per_s: per_s(broker_after.out_msgs - broker_before.out_msgs),
        broker_in_kib_per_s: per_s(broker_after.in_bytes - broker_before.in_bytes) / 1024.0,
        broker_out_kib_per_s: per_s(broker_after.out_bytes - broker_before.out_bytes) / 1024.0,
        loadgen_cpu_us_per_delivery: loadgen_cpu as f64 / received.max(1) as f64,
        loadgen_cpu_percent: loadgen_cpu as f64 / 1e4 / window_s,
        publisher_failed: publish_reports.iter().map(|r| r.failed).sum(),
        publisher_max_late_ms: publish_reports
            .iter()
            .map(|r| r.max_late_us)
            .max()
            .unwrap_or(0) as f64
            / 1000.0,
        load_before,
    })
}

// ---------------------------------------------------------------------------------------
// Output.

fn print_run(run: &RunFigures) {
    println!(
        "\n{} subscribers on {} nodes, {} topic(s), {} events per topic over {} s (connect {:.1} s, load before {})",
        run.subscribers, run.nodes, run.topics, run.events_per_topic, run.steady_s, run.connect_s, run.load_before
    );
    println!(
        "{:>9} {:>11} {:>10} {:>11} {:>11} {:>8} {:>6} {:>6} {:>10} {:>8} {:>8} {:>8}",
        "transport",
        "subscribers",
        "connected",
        "expected",
        "received",
        "missing",
        "gaps",
        "dups",
        "reconnects",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for t in &run.transports {
        println!(
            "{:>9} {:>11} {:>10} {:>11} {:>11} {:>8} {:>6} {:>6} {:>10} {:>8.1} {:>8.1} {:>8.1}",
            t.transport,
            t.subscribers,
            t.connected,
            t.expected,
            t.received,
            t.missing,
            t.gaps,
            t.dups,
            t.reconnects,
            t.p50_ms,
            t.p99_ms,
            t.max_ms
        );
    }
    println!(
        "{:>5} {:>11} {:>9} {:>9} {:>12} {:>15} {:>6}",
        "node", "subscribers", "counted", "RSS MiB", "KiB/conn", "CPU µs/deliv", "CPU %"
    );
    for (i, n) in run.per_node.iter().enumerate() {
        println!(
            "{:>5} {:>11} {:>9} {:>9.1} {:>12.2} {:>15.2} {:>6.1}",
            i,
            n.subscribers,
            n.counted,
            n.rss_mib,
            n.rss_kib_per_conn,
            n.cpu_us_per_delivery,
            n.cpu_percent
        );
    }
    println!(
        "total: {} of {} delivered ({} missing), {:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms; \
         gateways {:.0} MiB ({:.2} KiB/conn), {:.2} µs CPU/delivery, {:.0} % CPU; \
         kernel slab {:.2} KiB/conn (both ends); broker {:.1} % CPU, {:.1} msgs/s in, {:.1} out, {:.1} KiB/s in, {:.1} out; \
         loadgens {:.2} µs/delivery, {:.0} % CPU; publisher failed {}, max late {:.1} ms",
        run.received,
        run.expected,
        run.expected as i64 - run.received as i64,
        run.deliveries_per_s,
        run.p50_ms,
        run.p99_ms,
        run.gateway_rss_mib,
        run.gateway_rss_kib_per_conn,
        run.gateway_cpu_us_per_delivery,
        run.gateway_cpu_percent,
        run.slab_kib_per_conn_both_ends,
        run.broker_cpu_percent,
        run.broker_in_msgs_per_s,
        run.broker_out_msgs_per_s,
        run.broker_in_kib_per_s,
        run.broker_out_kib_per_s,
        run.loadgen_cpu_us_per_delivery,
        run.loadgen_cpu_percent,
        run.publisher_failed,
        run.publisher_max_late_ms
    );
}

fn warn_unacknowledged(run: &RunFigures) {
    if run.publisher_failed > 0 {
        println!(
            "warning: {} publishes were not acknowledged; their events reached nobody and count as missing",
            run.publisher_failed
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_summary(runs: &[RunFigures]) {
    println!(
        "\nsummary (medians of the runs at each point; `missing` is the worst run)\n{:>11} {:>5} {:>4} {:>5} {:>9} {:>8} {:>8} {:>8} {:>10} {:>12} {:>11} {:>9} {:>10}",
        "subscribers",
        "nodes",
        "runs",
        "ev/s",
        "missing",
        "p50 ms",
        "p99 ms",
        "deliv/s",
        "KiB/conn",
        "µs CPU/deliv",
        "broker CPU%",
        "gw CPU%",
        "loadgen µs"
    );
    let mut points: BTreeMap<usize, Vec<&RunFigures>> = BTreeMap::new();
    for run in runs {
        points.entry(run.subscribers).or_default().push(run);
    }
    for (subscribers, runs) in points {
        let m = |f: fn(&RunFigures) -> f64| median(runs.iter().map(|r| f(r)).collect());
        let worst = runs
            .iter()
            .map(|r| r.expected as i64 - r.received as i64)
            .max()
            .unwrap_or(0);
        println!(
            "{:>11} {:>5} {:>4} {:>5.2} {:>9} {:>8.1} {:>8.1} {:>8.0} {:>10.2} {:>12.2} {:>11.1} {:>9.0} {:>10.2}",
            subscribers,
            runs[0].nodes,
            runs.len(),
            runs[0].topics as f64 * runs[0].events_per_topic as f64 / runs[0].steady_s,
            worst,
            m(|r| r.p50_ms),
            m(|r| r.p99_ms),
            m(|r| r.deliveries_per_s),
            m(|r| r.gateway_rss_kib_per_conn),
            m(|r| r.gateway_cpu_us_per_delivery),
            m(|r| r.broker_cpu_percent),
            m(|r| r.gateway_cpu_percent),
            m(|r| r.loadgen_cpu_us_per_delivery)
        );
    }
}

fn run(mut cli: Cli) -> anyhow::Result<bool> {
    if cli.quick {
        cli.subscribers = vec![2000];
        cli.nodes = Some(2);
        cli.seconds = 10.0;
        cli.per_loadgen = cli.per_loadgen.min(1000);
        cli.run_limit = cli.run_limit.min(60);
    }
    ensure!(cli.interval > 0.0, "--interval must be positive");
    ensure!(cli.topics >= 1, "--topics must be at least 1");
    ensure!(!cli.transports.is_empty(), "--transports is empty");
    let epoch = Instant::now();
    start_watchdog(epoch);
    let work = std::env::temp_dir().join(format!("scaleout-{}", std::process::id()));
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "scaleout: {cores} cores, load {}, work dir {}",
        load_average(),
        work.display()
    );
    let mut runs = Vec::new();
    let mut failed = false;
    for &subscribers in &cli.subscribers {
        let nodes = cli.nodes_for(subscribers);
        ensure!(
            subscribers.div_ceil(nodes) <= MAX_PER_NODE,
            "{subscribers} subscribers on {nodes} nodes is more than {MAX_PER_NODE} per node"
        );
        let plan = Plan {
            subscribers,
            nodes,
            topics: cli.topics,
            transports: cli.transports.clone(),
            interval: cli.interval,
            seconds: cli.seconds,
        };
        for attempt in 0..cli.repeat.max(1) {
            RUN_DEADLINE.store(epoch.elapsed().as_secs() + cli.run_limit, Ordering::Relaxed);
            let dir = work.join(format!("n{subscribers}-r{attempt}"));
            match run_once(&cli, &plan, &dir) {
                Ok(figures) => {
                    print_run(&figures);
                    warn_unacknowledged(&figures);
                    failed |= figures.received != figures.expected;
                    runs.push(figures);
                }
                Err(error) => {
                    eprintln!("scaleout: {subscribers} subscribers, run {attempt}: {error:#}");
                    failed = true;
                }
            }
            RUN_DEADLINE.store(0, Ordering::Relaxed);
        }
    }
    print_summary(&runs);
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&runs)?)?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(!failed)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("scaleout: a run failed or lost events (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("scaleout: {error:#}");
            ExitCode::FAILURE
        }
    }
}
