//! [`RedisBroker`] against a real Redis: the one this test binary starts for itself, or the
//! server at `REDIS_URL` (see `streamgate-test-brokers`).
//!
//! Every test works under a fresh random prefix and deletes its keys when it ends, even by
//! panicking. The restart tests start a `redis-server` of their own on a free port, and kill
//! it when they end.
//!
//! Tests that depend on the fan-out mode run once per mode, in the modules `pubsub` and
//! `xread`.

mod common;

use common::{redis_url, Cleanup};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use streamgate_bus_redis::{Fanout, RedisBroker, RedisBrokerConfig};
use streamgate_core::{
    Broker, BrokerError, ContentType, Epoch, Event, EventId, Feed, FeedEvents, Topic,
};
use streamgate_test_brokers::{BrokerKind, BrokerServer};

/// Longest wait for anything the test expects to happen.
const WAIT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

/// A log under a fresh prefix on `url`, and the guard that deletes it.
struct TestLog {
    config: RedisBrokerConfig,
    _cleanup: Cleanup,
}

impl TestLog {
    fn new(url: &str, fanout: Fanout, history_events: usize) -> Self {
        let prefix = format!("sgtest-{}", Epoch::random());
        let config = RedisBrokerConfig::new(url)
            .prefix(prefix.clone())
            .history_events(history_events)
            .fanout(fanout);
        Self {
            config,
            _cleanup: Cleanup {
                url: url.to_owned(),
                prefix,
            },
        }
    }

    fn on_test_redis(fanout: Fanout, history_events: usize) -> Self {
        Self::new(&redis_url(), fanout, history_events)
    }

    /// A node of this log: a broker of its own, as another gateway process would have.
    fn node(&self) -> RedisBroker {
        RedisBroker::new(self.config.clone()).unwrap()
    }

    /// A node that appends with `fanout`, whatever the log's.
    fn node_with(&self, fanout: Fanout) -> RedisBroker {
        RedisBroker::new(self.config.clone().fanout(fanout)).unwrap()
    }

    /// Runs `command` on the log's Redis, with `{p}` replaced by the prefix in every arg.
    async fn redis(&self, command: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.config.url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(command[0]);
        for arg in &command[1..] {
            cmd.arg(arg.replace("{p}", &self.config.prefix));
        }
        cmd.query_async(&mut connection).await.unwrap()
    }
}

async fn append(broker: &RedisBroker, topic_name: &str, payload: &[u8]) -> EventId {
    append_typed(broker, topic_name, ContentType::Binary, payload, 1).await
}

async fn append_typed(
    broker: &RedisBroker,
    topic_name: &str,
    content_type: ContentType,
    payload: &[u8],
    timestamp_us: u64,
) -> EventId {
    tokio::time::timeout(
        WAIT,
        broker.append(
            &topic(topic_name),
            content_type,
            Bytes::copy_from_slice(payload),
            timestamp_us,
        ),
    )
    .await
    .expect("append timed out")
    .expect("append failed")
}

async fn follow(broker: &RedisBroker, after: Option<EventId>) -> Feed {
    tokio::time::timeout(WAIT, broker.follow(after))
        .await
        .expect("follow timed out")
        .expect("follow failed")
}

/// The feed's next item, which must come within [`WAIT`].
async fn next_item(events: &mut FeedEvents) -> Option<Result<Event, BrokerError>> {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("the feed yielded nothing in time")
}

async fn next_event(events: &mut FeedEvents) -> Event {
    match next_item(events).await {
        Some(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn next_events(events: &mut FeedEvents, count: usize) -> Vec<Event> {
    let mut received = Vec::with_capacity(count);
    for _ in 0..count {
        received.push(next_event(events).await);
    }
    received
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|event| event.id.seq).collect()
}

/// The feed must yield an error, then end.
async fn expect_error_then_end(events: &mut FeedEvents) -> BrokerError {
    let error = loop {
        match next_item(events).await {
            Some(Ok(_)) => continue,
            Some(Err(error)) => break error,
            None => panic!("the feed ended without an error"),
        }
    };
    assert!(
        next_item(events).await.is_none(),
        "the feed went on after its error"
    );
    error
}

fn assert_same_event(got: &Event, expected: &Event) {
    assert_eq!(got.id, expected.id);
    assert_eq!(got.topic, expected.topic);
    assert_eq!(got.content_type, expected.content_type);
    assert_eq!(got.timestamp_us, expected.timestamp_us);
    assert_eq!(got.payload, expected.payload);
}

/// Runs each named test once per fan-out mode.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod pubsub {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fanout::PubSub).await;
                }
            )*
        }
        mod xread {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fanout::Xread).await;
                }
            )*
        }
    };
}

in_both_modes!(
    appends_share_one_counter,
    follow_replays_then_goes_live,
    follow_resumes_after_an_id,
    two_nodes_see_the_same_log,
    trimmed_history_is_reported,
    trimming_under_a_catch_up_fails_the_feed,
    holes_are_filled_from_the_topic_streams,
    a_burnt_sequence_is_skipped,
    a_wiped_log_ends_the_feed,
    a_log_behind_the_cursor_moves_to_a_new_epoch,
    acknowledged_events_survive_a_restart,
    a_restart_without_persistence_is_a_new_epoch,
);

async fn appends_share_one_counter(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 100);
    let broker = log.node();
    let mut ids = Vec::new();
    for i in 0..6 {
        let name = if i % 3 == 0 { "a" } else { "b" };
        ids.push(append(&broker, name, b"x").await);
    }
    assert!(ids.iter().all(|id| id.epoch == ids[0].epoch), "{ids:?}");
    assert_eq!(
        ids.iter().map(|id| id.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
}

async fn follow_replays_then_goes_live(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 100);
    let broker = log.node();
    let every_byte: Vec<u8> = (0..=255).collect();
    let originals = [
        (
            "a",
            ContentType::Text,
            "héllo".as_bytes(),
            1_700_000_000_000_001,
        ),
        ("b", ContentType::Json, br#"{"k":[1,2]}"#.as_slice(), 2),
        (
            "a",
            ContentType::Binary,
            every_byte.as_slice(),
            u64::from(u32::MAX) * 1000,
        ),
    ];
    let mut expected = Vec::new();
    for (name, content_type, payload, timestamp_us) in originals {
        let id = append_typed(&broker, name, content_type, payload, timestamp_us).await;
        expected.push(Event::new(
            topic(name),
            id,
            timestamp_us,
            content_type,
            Bytes::copy_from_slice(payload),
        ));
    }

    let mut feed = follow(&log.node(), None).await;
    assert_eq!(feed.epoch, expected[0].id.epoch);
    assert_eq!(feed.head_seq, 3);
    assert!(feed.evicted.is_empty());
    let retained = next_events(&mut feed.events, 3).await;
    for (got, want) in retained.iter().zip(&expected) {
        assert_same_event(got, want);
    }

    // Live: the same shapes again, appended after the feed opened.
    let mut live_expected = Vec::new();
    for (name, content_type, payload, timestamp_us) in originals {
        let id = append_typed(&broker, name, content_type, payload, timestamp_us + 1).await;
        live_expected.push(Event::new(
            topic(name),
            id,
            timestamp_us + 1,
            content_type,
            Bytes::copy_from_slice(payload),
        ));
    }
    let live = next_events(&mut feed.events, 3).await;
    for (got, want) in live.iter().zip(&live_expected) {
        assert_same_event(got, want);
    }
    assert_eq!(seqs(&live), [4, 5, 6]);
}

async fn follow_resumes_after_an_id(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 100);
    let broker = log.node();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(append(&broker, ["a", "b", "c"][i % 3], &[i as u8]).await);
    }
    let mut feed = follow(&log.node(), Some(ids[4].clone())).await;
    assert_eq!(feed.head_seq, 10);
    let later = next_events(&mut feed.events, 5).await;
    assert_eq!(seqs(&later), [6, 7, 8, 9, 10]);
    assert_eq!(later[0].payload[..], [5]);
    let head = append(&broker, "d", b"live").await;
    assert_eq!(next_event(&mut feed.events).await.id, head);

    // Resuming at the head replays nothing.
    let mut at_head = follow(&broker, Some(head)).await;
    append(&broker, "a", b"next").await;
    assert_eq!(next_event(&mut at_head.events).await.id.seq, 12);
}

async fn two_nodes_see_the_same_log(fanout: Fanout) {
    const TASKS: usize = 4;
    const PER_TASK: usize = 250;
    const TOTAL: usize = TASKS * PER_TASK;
    let log = TestLog::on_test_redis(fanout, TOTAL);
    let nodes = [Arc::new(log.node()), Arc::new(log.node())];
    let mut feeds = Vec::new();
    for node in &nodes {
        feeds.push(follow(node, None).await);
    }
    let readers: Vec<_> = feeds
        .into_iter()
        .map(|mut feed| tokio::spawn(async move { next_events(&mut feed.events, TOTAL).await }))
        .collect();

    let appenders: Vec<_> = (0..TASKS)
        .map(|task| {
            let node = Arc::clone(&nodes[task % 2]);
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let name = ["x", "y", "z"][(task + i) % 3];
                    append(&node, name, format!("{task}/{i}").as_bytes()).await;
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.await.unwrap();
    }

    let mut seen = Vec::new();
    for reader in readers {
        seen.push(reader.await.unwrap());
    }
    let expected: Vec<u64> = (1..=TOTAL as u64).collect();
    assert_eq!(
        seqs(&seen[0]),
        expected,
        "node 1 missed or reordered events"
    );
    assert_eq!(
        seqs(&seen[1]),
        expected,
        "node 2 missed or reordered events"
    );
    for (a, b) in seen[0].iter().zip(&seen[1]) {
        assert_same_event(a, b);
    }
}

async fn trimmed_history_is_reported(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 5);
    let broker = log.node();
    let mut ids = Vec::new();
    for i in 0..12u8 {
        ids.push(append(&broker, "t", &[i]).await);
    }
    let feed = follow(&broker, None).await;
    assert_eq!(feed.evicted, vec![(topic("t"), 7)]);

    let mut feed = follow(&broker, Some(ids[1].clone())).await;
    assert_eq!(feed.evicted, vec![(topic("t"), 7)]);
    let retained = next_events(&mut feed.events, 5).await;
    assert_eq!(seqs(&retained), [8, 9, 10, 11, 12]);
    assert_eq!(retained[0].payload[..], [7]);
    // Nothing else is owed: the next event is the next append.
    append(&broker, "u", b"live").await;
    assert_eq!(next_event(&mut feed.events).await.id.seq, 13);
}

async fn trimming_under_a_catch_up_fails_the_feed(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 5);
    let broker = log.node();
    for i in 0..5u8 {
        append(&broker, "t", &[i]).await;
    }
    // The feed opens with 1..=5 retained and nothing evicted, but reads none of it before
    // ten more appends trim all five away.
    let mut stale = follow(&broker, None).await;
    assert!(stale.evicted.is_empty());
    for i in 5..15u8 {
        append(&broker, "t", &[i]).await;
    }
    let error = expect_error_then_end(&mut stale.events).await;
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error}");

    // Following again tells what was lost, then replays what is left.
    let mut fresh = follow(&broker, None).await;
    assert_eq!(fresh.evicted, vec![(topic("t"), 10)]);
    assert_eq!(
        seqs(&next_events(&mut fresh.events, 5).await),
        [11, 12, 13, 14, 15]
    );
}

async fn holes_are_filled_from_the_topic_streams(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 100);
    let broker = log.node();
    let other = match fanout {
        Fanout::PubSub => Fanout::Xread,
        _ => Fanout::PubSub,
    };
    // A node fanning out the other way appends events this feed does not hear live.
    let deaf = log.node_with(other);
    let mut feed = follow(&broker, None).await;
    append(&broker, "a", b"1").await;
    append(&deaf, "b", b"2").await;
    append(&deaf, "a", b"3").await;
    append(&broker, "c", b"4").await;
    let events = next_events(&mut feed.events, 4).await;
    assert_eq!(seqs(&events), [1, 2, 3, 4]);
    assert_eq!(
        events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        [&b"1"[..], b"2", b"3", b"4"]
    );
}

async fn a_burnt_sequence_is_skipped(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 100);
    let broker = log.node();
    let mut feed = follow(&broker, None).await;
    append(&broker, "a", b"1").await;
    assert_eq!(next_event(&mut feed.events).await.id.seq, 1);
    // What a script failing after its INCR leaves: a sequence with no event.
    log.redis(&["INCR", "{p}:seq"]).await;
    append(&broker, "a", b"3").await;
    let event = next_event(&mut feed.events).await;
    assert_eq!(event.id.seq, 3);
    assert_eq!(&event.payload[..], b"3");
}

async fn a_wiped_log_ends_the_feed(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 100);
    let broker = log.node();
    let first = append(&broker, "a", b"1").await;
    let mut feed = follow(&broker, None).await;
    assert_eq!(next_event(&mut feed.events).await.id, first);
    assert!(broker.delete_keys().await.unwrap() >= 4);
    let next = append(&broker, "a", b"again").await;
    assert_ne!(next.epoch, first.epoch);
    let error = expect_error_then_end(&mut feed.events).await;
    assert!(error.to_string().contains("epoch"), "{error}");
}

async fn a_log_behind_the_cursor_moves_to_a_new_epoch(fanout: Fanout) {
    let log = TestLog::on_test_redis(fanout, 100);
    let broker = log.node();
    let mut last = None;
    for i in 0..5u8 {
        last = Some(append(&broker, "a", &[i]).await);
    }
    let last = last.unwrap();
    // What Redis restarted from an AOF missing its last second looks like: the node saw 5
    // events, the log kept 3.
    log.redis(&["SET", "{p}:seq", "3"]).await;
    for stream in ["{p}:t:a", "{p}:log"] {
        if log.redis(&["EXISTS", stream]).await == redis::Value::Int(1) {
            log.redis(&["XDEL", stream, "4-0", "5-0"]).await;
            log.redis(&["XSETID", stream, "3-0"]).await;
        }
    }

    let mut feed = follow(&broker, Some(last.clone())).await;
    assert_ne!(
        feed.epoch, last.epoch,
        "the log reused ids the node had seen"
    );
    let replayed = next_events(&mut feed.events, 3).await;
    assert_eq!(seqs(&replayed), [1, 2, 3]);
    assert!(replayed.iter().all(|event| event.id.epoch == feed.epoch));
    let next = append(&broker, "a", b"new").await;
    assert_eq!(next, EventId::new(feed.epoch.clone(), 4));
    assert_eq!(next_event(&mut feed.events).await.id, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_is_skipped() {
    let log = TestLog::on_test_redis(Fanout::PubSub, 100);
    let broker = log.node();
    let mut feed = follow(&broker, None).await;
    log.redis(&["PUBLISH", "{p}:events", "not an event"]).await;
    log.redis(&["PUBLISH", "{p}:events", ""]).await;
    let id = append(&broker, "a", b"real").await;
    assert_eq!(next_event(&mut feed.events).await.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_history_keeps_nothing_and_says_so() {
    let log = TestLog::on_test_redis(Fanout::PubSub, 0);
    let broker = log.node();
    let mut live = follow(&broker, None).await;
    append(&broker, "a", b"1").await;
    append(&broker, "a", b"2").await;
    assert_eq!(seqs(&next_events(&mut live.events, 2).await), [1, 2]);
    let feed = follow(&broker, None).await;
    assert_eq!(feed.head_seq, 2);
    assert_eq!(feed.evicted, vec![(topic("a"), 2)]);
}

#[tokio::test]
async fn endpoint_hides_the_password() {
    let broker =
        RedisBroker::new(RedisBrokerConfig::new("redis://user:hunter2@127.0.0.1:1/0")).unwrap();
    assert_eq!(broker.name(), "redis");
    assert_eq!(broker.endpoint(), "redis://user:***@127.0.0.1:1/0");
    assert!(!format!("{broker:?}").contains("hunter2"));
}

#[test]
fn a_malformed_url_is_refused() {
    for url in ["", "http://127.0.0.1:6379", "redis://[::1"] {
        match RedisBroker::new(RedisBrokerConfig::new(url)) {
            Err(BrokerError::Refused(message)) => assert!(message.contains("URL"), "{message}"),
            other => panic!("{url:?}: expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_is_unavailable_promptly() {
    let port = free_port();
    let log = TestLog::new(&format!("redis://127.0.0.1:{port}"), Fanout::PubSub, 100);
    for fanout in [Fanout::PubSub, Fanout::Xread] {
        let broker = log.node_with(fanout);
        let started = std::time::Instant::now();
        match tokio::time::timeout(WAIT, broker.follow(None)).await {
            Ok(Err(BrokerError::Unavailable(_))) => {}
            other => panic!("follow: expected Unavailable, got {other:?}"),
        }
        let payload = Bytes::from_static(b"x");
        match tokio::time::timeout(
            WAIT,
            broker.append(&topic("a"), ContentType::Text, payload, 1),
        )
        .await
        {
            Ok(Err(BrokerError::Unavailable(_))) => {}
            other => panic!("append: expected Unavailable, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}

// ---- Restarts, on a redis-server of the test's own --------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn acknowledged_events_survive_a_restart(fanout: Fanout) {
    let mut server = BrokerServer::start_durable(BrokerKind::Redis);
    let log = TestLog::new(&server.url(), fanout, 100);
    let broker = log.node();

    let mut feed = follow(&broker, None).await;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(item) = feed.events.next().await {
            if sender.send(item).is_err() {
                break;
            }
        }
    });
    let mut acknowledged = Vec::new();
    for i in 0..50u8 {
        acknowledged.push(append(&broker, ["a", "b"][usize::from(i % 2)], &[i]).await);
    }
    for id in &acknowledged {
        let item = tokio::time::timeout(WAIT, received.recv()).await.unwrap();
        assert_eq!(&item.unwrap().unwrap().id, id);
    }
    let last = acknowledged.last().unwrap().clone();

    server.kill();
    match tokio::time::timeout(WAIT, received.recv()).await.unwrap() {
        Some(Err(BrokerError::Unavailable(_))) => {}
        other => panic!("expected the feed to fail, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, received.recv())
            .await
            .unwrap()
            .is_none(),
        "the feed went on after its error"
    );
    reader.await.unwrap();
    let payload = Bytes::from_static(b"lost");
    match tokio::time::timeout(
        WAIT,
        broker.append(&topic("a"), ContentType::Text, payload, 1),
    )
    .await
    {
        Ok(Err(BrokerError::Unavailable(_))) => {}
        other => panic!("append to a dead Redis: expected Unavailable, got {other:?}"),
    }

    server.restart();
    let mut resumed = follow(&broker, Some(last.clone())).await;
    assert_eq!(resumed.epoch, last.epoch, "the restart lost the epoch");
    assert_eq!(resumed.head_seq, 50);
    let mut replay = follow(&log.node(), None).await;
    let everything = next_events(&mut replay.events, 50).await;
    assert_eq!(
        everything.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        acknowledged,
        "acknowledged events were lost"
    );

    let mut more = Vec::new();
    for i in 0..5u8 {
        more.push(append(&broker, "a", &[i]).await);
    }
    assert_eq!(
        next_events(&mut resumed.events, 5)
            .await
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        more
    );
    assert_eq!(more[0], EventId::new(last.epoch.clone(), 51));
}

async fn a_restart_without_persistence_is_a_new_epoch(fanout: Fanout) {
    let mut server = BrokerServer::start(BrokerKind::Redis);
    let log = TestLog::new(&server.url(), fanout, 100);
    let broker = log.node();
    let mut old = None;
    for i in 0..5u8 {
        old = Some(append(&broker, "a", &[i]).await);
    }
    let old = old.unwrap();

    server.kill();
    server.restart();
    let mut feed = follow(&broker, Some(old.clone())).await;
    assert_ne!(feed.epoch, old.epoch, "an empty log kept the old epoch");
    assert_eq!(feed.head_seq, 0);
    let mut fresh = Vec::new();
    for i in 0..3u8 {
        fresh.push(append(&broker, "a", &[i]).await);
    }
    assert!(fresh.iter().all(|id| id.epoch == feed.epoch));
    assert_eq!(seqs(&next_events(&mut feed.events, 3).await), [1, 2, 3]);

    // A cursor from the old epoch starts at the oldest retained event of the new one, even
    // though its sequence (5) is past the new head (3).
    let mut again = follow(&broker, Some(old)).await;
    assert_eq!(again.epoch, feed.epoch);
    let replayed = next_events(&mut again.events, 3).await;
    assert_eq!(
        replayed.into_iter().map(|e| e.id).collect::<Vec<_>>(),
        fresh
    );
}
