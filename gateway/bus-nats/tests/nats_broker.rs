//! The NATS broker against a real nats-server with JetStream.
//!
//! Most tests use the nats-server this test binary starts for itself, or the server at
//! `NATS_URL` (see `streamgate-test-brokers`), each with its own random stream name and
//! subject prefix, and delete their stream when they end, even by a panic. The restart test
//! starts a `nats-server` of its own on a free port with a temporary store directory, so that
//! it can kill and restart it.
//!
//! Every wait is bounded: a receive gives up after ten seconds, and polling loops (a server
//! accepting connections, a client reconnecting) have a deadline.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
mod common;

use common::{nats_url, TestLog};
use streamgate_bus_nats::{NatsBroker, NatsBrokerConfig};
use streamgate_core::{Broker, BrokerError, ContentType, Event, EventId, Feed, FeedEvents, Topic};
use streamgate_test_brokers::{BrokerKind, BrokerServer};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

/// The next item of a feed, failing the test if none comes within the timeout.
async fn next_item(events: &mut FeedEvents) -> Option<Result<Event, BrokerError>> {
    tokio::time::timeout(RECEIVE_TIMEOUT, events.next())
        .await
        .expect("the feed yielded nothing within the receive timeout")
}

async fn next_event(events: &mut FeedEvents) -> Event {
    match next_item(events).await {
        Some(Ok(event)) => event,
        Some(Err(err)) => panic!("the feed failed: {err}"),
        None => panic!("the feed ended"),
    }
}

async fn take_events(events: &mut FeedEvents, count: usize) -> Vec<Event> {
    let mut taken = Vec::with_capacity(count);
    for _ in 0..count {
        taken.push(next_event(events).await);
    }
    taken
}

/// Everything about an event that must survive the trip through NATS.
type EventFacts = (Topic, EventId, u64, ContentType, Bytes);

fn facts(event: &Event) -> EventFacts {
    (
        event.topic.clone(),
        event.id.clone(),
        event.timestamp_us,
        event.content_type,
        event.payload.clone(),
    )
}

async fn follow(broker: &NatsBroker, after: Option<EventId>) -> Feed {
    tokio::time::timeout(RECEIVE_TIMEOUT, broker.follow(after))
        .await
        .expect("follow did not answer within the receive timeout")
        .unwrap()
}

async fn append(
    broker: &NatsBroker,
    topic: &Topic,
    content_type: ContentType,
    payload: impl Into<Bytes>,
    timestamp_us: u64,
) -> EventId {
    tokio::time::timeout(
        RECEIVE_TIMEOUT,
        broker.append(topic, content_type, payload.into(), timestamp_us),
    )
    .await
    .expect("append did not answer within the receive timeout")
    .unwrap()
}

async fn append_text(broker: &NatsBroker, topic: &Topic, text: &str) -> EventId {
    append(broker, topic, ContentType::Text, text.to_owned(), 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_share_one_counter_and_dotted_topics_round_trip() {
    let log = TestLog::new(&nats_url());
    let broker = log.broker(100);
    let names = ["plain", "a.b", ".x", "x..y", "-_.", "a_2Eb", "a"];
    let mut ids = Vec::new();
    for round in 0..3 {
        for name in names {
            let id = append_text(&broker, &topic(name), &format!("{name} {round}")).await;
            ids.push((name, id));
        }
    }

    let epoch = ids[0].1.epoch.clone();
    for window in ids.windows(2) {
        assert_eq!(window[1].1.epoch, epoch, "one epoch for every append");
        assert_eq!(
            window[1].1.seq,
            window[0].1.seq + 1,
            "one counter across topics"
        );
    }
    assert_eq!(ids[0].1.seq, 1);

    let mut feed = follow(&broker, None).await;
    assert_eq!(feed.epoch, epoch);
    assert_eq!(feed.head_seq, ids.len() as u64);
    assert!(feed.evicted.is_empty(), "{:?}", feed.evicted);
    for (name, id) in &ids {
        let event = next_event(&mut feed.events).await;
        assert_eq!(
            event.topic.as_str(),
            *name,
            "the exact topic name comes back"
        );
        assert_eq!(&event.id, id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_from_start_yields_retained_then_live_in_order() {
    let log = TestLog::new(&nats_url());
    let broker = log.broker(100);
    let all_bytes: Vec<u8> = (0..=255).collect();
    let retained = [
        append(&broker, &topic("news"), ContentType::Text, "héllo", 1_000).await,
        append(
            &broker,
            &topic("data"),
            ContentType::Json,
            r#"{"n":[1,2]}"#,
            2_000,
        )
        .await,
        append(
            &broker,
            &topic("blob"),
            ContentType::Binary,
            all_bytes.clone(),
            3_000,
        )
        .await,
        append(&broker, &topic("news"), ContentType::Text, "", 4_000).await,
    ];

    let mut feed = follow(&broker, None).await;
    assert_eq!(feed.epoch, retained[0].epoch);
    assert_eq!(feed.head_seq, 4);
    let expected = vec![
        (
            topic("news"),
            retained[0].clone(),
            1_000,
            ContentType::Text,
            Bytes::from("héllo"),
        ),
        (
            topic("data"),
            retained[1].clone(),
            2_000,
            ContentType::Json,
            Bytes::from(r#"{"n":[1,2]}"#),
        ),
        (
            topic("blob"),
            retained[2].clone(),
            3_000,
            ContentType::Binary,
            Bytes::from(all_bytes.clone()),
        ),
        (
            topic("news"),
            retained[3].clone(),
            4_000,
            ContentType::Text,
            Bytes::new(),
        ),
    ];
    let got: Vec<EventFacts> = take_events(&mut feed.events, 4)
        .await
        .iter()
        .map(facts)
        .collect();
    assert_eq!(got, expected);

    // Live: appended after the feed opened, from another connection too.
    let other_node = log.broker(100);
    let live = [
        append(
            &other_node,
            &topic("data"),
            ContentType::Json,
            "[]",
            u64::MAX,
        )
        .await,
        append(
            &broker,
            &topic("blob"),
            ContentType::Binary,
            all_bytes.clone(),
            0,
        )
        .await,
    ];
    let got: Vec<EventFacts> = take_events(&mut feed.events, 2)
        .await
        .iter()
        .map(facts)
        .collect();
    assert_eq!(
        got,
        vec![
            (
                topic("data"),
                live[0].clone(),
                u64::MAX,
                ContentType::Json,
                Bytes::from("[]")
            ),
            (
                topic("blob"),
                live[1].clone(),
                0,
                ContentType::Binary,
                Bytes::from(all_bytes)
            ),
        ]
    );
    assert_eq!(live[0].seq, 5);
    assert_eq!(live[1].seq, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_from_the_middle_and_two_nodes_agree_under_concurrent_appends() {
    let log = TestLog::new(&nats_url());
    let node_a = Arc::new(log.broker(1000));
    let node_b = Arc::new(log.broker(1000));

    let mut first = Vec::new();
    for i in 0..10 {
        first.push(append_text(&node_a, &topic("early"), &i.to_string()).await);
    }
    let mut from_middle = follow(&node_b, Some(first[4].clone())).await;
    assert_eq!(from_middle.head_seq, 10);
    let got: Vec<EventId> = take_events(&mut from_middle.events, 5)
        .await
        .into_iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(got, first[5..].to_vec(), "exactly the events after the id");

    // Two nodes follow from the same point while four tasks append on both nodes.
    let mut feed_a = follow(&node_a, Some(first[9].clone())).await;
    let mut feed_b = follow(&node_b, Some(first[9].clone())).await;
    let topics = [topic("t.one"), topic("t.two"), topic("t.three")];
    let mut writers = Vec::new();
    for task in 0..4_usize {
        let broker = Arc::clone(if task % 2 == 0 { &node_a } else { &node_b });
        let topics = topics.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..250_usize {
                let topic = &topics[(task + i) % topics.len()];
                let id = broker
                    .append(topic, ContentType::Text, format!("{task}/{i}").into(), 7)
                    .await
                    .unwrap();
                ids.push(id);
            }
            ids
        }));
    }
    let (seen_a, seen_b) = tokio::join!(
        take_events(&mut feed_a.events, 1000),
        take_events(&mut feed_b.events, 1000)
    );
    let mut acknowledged = BTreeSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap().into_iter().map(|id| id.seq));
    }

    let facts_a: Vec<EventFacts> = seen_a.iter().map(facts).collect();
    let facts_b: Vec<EventFacts> = seen_b.iter().map(facts).collect();
    assert_eq!(facts_a, facts_b, "both nodes see the same log");
    for pair in seen_a.windows(2) {
        assert!(pair[0].id.seq < pair[1].id.seq, "strictly increasing");
    }
    let seen: BTreeSet<u64> = seen_a.iter().map(|event| event.id.seq).collect();
    assert_eq!(
        seen, acknowledged,
        "every acknowledged append is seen, nothing else"
    );
    assert_eq!(seen, (11..=1010).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_history_is_reported_as_evicted() {
    let log = TestLog::new(&nats_url());
    let broker = log.broker(5);
    let busy = topic("busy.topic");
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(append_text(&broker, &busy, &i.to_string()).await);
    }

    let mut feed = follow(&broker, Some(ids[1].clone())).await;
    assert_eq!(feed.head_seq, 12);
    assert_eq!(feed.evicted, vec![(busy.clone(), 7)]);
    let got: Vec<EventId> = take_events(&mut feed.events, 5)
        .await
        .into_iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(got, ids[7..].to_vec(), "only the five retained events");

    // A topic below the bound lost nothing and is not reported; the live feed goes on.
    let quiet = append_text(&broker, &topic("quiet"), "q").await;
    assert_eq!(next_event(&mut feed.events).await.id, quiet);
    let reopened = follow(&broker, None).await;
    assert_eq!(reopened.evicted, vec![(busy, 7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfiguring_the_stream_keeps_its_epoch_and_reports_conservatively() {
    let log = TestLog::new(&nats_url());
    let small = log.broker(3);
    let busy = topic("busy");
    for i in 0..5 {
        append_text(&small, &busy, &i.to_string()).await;
    }
    let before = follow(&small, None).await;
    assert_eq!(before.evicted, vec![(busy.clone(), 2)]);

    // Another node with a larger bound reconfigures the stream: same incarnation, same
    // epoch, and the topic trimmed under the old bound is still reported.
    let large = log.broker(10);
    let after = follow(&large, None).await;
    assert_eq!(after.epoch, before.epoch);
    assert_eq!(after.head_seq, 5);
    assert_eq!(after.evicted, vec![(busy.clone(), 2)]);
    let stream = log.jetstream().await.get_stream(&log.stream).await.unwrap();
    assert_eq!(stream.cached_info().config.max_messages_per_subject, 10);

    let id = append_text(&large, &busy, "more").await;
    assert_eq!(id.epoch, before.epoch);
    assert_eq!(id.seq, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_stream_starts_a_new_epoch() {
    let log = TestLog::new(&nats_url());
    let broker = log.broker(100);
    let news = topic("news");
    let mut old_ids = Vec::new();
    for i in 0..3 {
        old_ids.push(append_text(&broker, &news, &format!("old {i}")).await);
    }
    let mut old_feed = follow(&broker, Some(old_ids[2].clone())).await;
    let old_epoch = old_feed.epoch.clone();

    log.delete_stream().await;
    match next_item(&mut old_feed.events).await {
        Some(Err(err)) => assert!(err.to_string().contains("deleted"), "{err}"),
        other => panic!("expected the feed to fail, got {other:?}"),
    }
    assert!(
        next_item(&mut old_feed.events).await.is_none(),
        "the feed ends"
    );

    // Appending recreates the stream: a new incarnation, counting from 1 again.
    let new_ids = [
        append_text(&broker, &news, "new 0").await,
        append_text(&broker, &news, "new 1").await,
    ];
    assert_ne!(new_ids[0].epoch, old_epoch);
    assert_eq!(new_ids[0].seq, 1);
    assert_eq!(new_ids[1].seq, 2);

    let mut feed = follow(&broker, Some(old_ids[2].clone())).await;
    assert_eq!(feed.epoch, new_ids[0].epoch);
    let got = take_events(&mut feed.events, 2).await;
    assert_eq!(
        got[0].id, new_ids[0],
        "starts from the oldest retained event"
    );
    assert_eq!(&got[0].payload[..], b"new 0");
    assert_eq!(got[1].id, new_ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_backlog_and_a_paused_reader_go_through_flow_control() {
    let log = TestLog::new(&nats_url());
    let broker = Arc::new(log.broker(10_000));
    let payload = Bytes::from(vec![b'x'; 4096]);
    let mut writers = Vec::new();
    for task in 0..8_u64 {
        let broker = Arc::clone(&broker);
        let payload = payload.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..375_u64 {
                let topic = topic(&format!("bulk.{}", (task + i) % 5));
                broker
                    .append(&topic, ContentType::Binary, payload.clone(), i)
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }

    let mut feed = follow(&broker, None).await;
    assert_eq!(feed.head_seq, 3000);
    let first_half = take_events(&mut feed.events, 1500).await;
    // Longer than two heartbeat intervals: what the server sent meanwhile (deliveries,
    // flow-control requests, heartbeats) waits in the buffer, and the feed must not mistake
    // the reader's pause for a silent server.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second_half = take_events(&mut feed.events, 1500).await;
    let seqs: Vec<u64> = first_half
        .iter()
        .chain(&second_half)
        .map(|event| event.id.seq)
        .collect();
    assert_eq!(seqs, (1..=3000).collect::<Vec<_>>());
    assert!(second_half.iter().all(|event| event.payload == payload));

    let live = append(&broker, &topic("bulk.live"), ContentType::Text, "live", 1).await;
    assert_eq!(next_event(&mut feed.events).await.id, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_messages_are_read_defensively() {
    let log = TestLog::new(&nats_url());
    let broker = log.broker(100);
    let before = append_text(&broker, &topic("mixed"), "before").await;
    let mut feed = follow(&broker, Some(before)).await;

    // Someone else publishes on the log's subjects: a bare message (usable: binary, topic
    // from the subject, JetStream's storage time), then invalid ones: JSON that is not,
    // an unknown content type, a topic name no topic can have.
    let jetstream = log.jetstream().await;
    let subject = format!("{}.t.mixed", log.prefix);
    let publish = |headers: Vec<(&'static str, &'static str)>, payload: &'static [u8]| {
        let jetstream = jetstream.clone();
        let subject = subject.clone();
        async move {
            let mut map = async_nats::HeaderMap::new();
            for (name, value) in headers {
                map.insert(name, value);
            }
            jetstream
                .publish_with_headers(subject, map, Bytes::from_static(payload))
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    let raw_seq = publish(vec![], b"\x00raw").await;
    publish(vec![("Streamgate-Content-Type", "json")], b"{not json").await;
    publish(vec![("Streamgate-Content-Type", "xml")], b"<a/>").await;
    publish(vec![("Streamgate-Topic", "no/slash")], b"x").await;
    let after = append_text(&broker, &topic("mixed"), "after").await;

    let raw = next_event(&mut feed.events).await;
    assert_eq!(raw.id.seq, raw_seq);
    assert_eq!(raw.topic.as_str(), "mixed");
    assert_eq!(raw.content_type, ContentType::Binary);
    assert_eq!(&raw.payload[..], b"\x00raw");
    assert!(raw.timestamp_us > 0);
    // The invalid messages are skipped (and logged): they must not stop the feed, which a
    // node would reopen before them, forever.
    assert_eq!(next_event(&mut feed.events).await.id, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_ends_the_feed() {
    let log = TestLog::new(&nats_url());
    let broker = log.broker(100);
    let mut feed = follow(&broker, None).await;

    let jetstream = log.jetstream().await;
    let stream = jetstream.get_stream(&log.stream).await.unwrap();
    let names: Vec<String> = stream
        .consumer_names()
        .map(|name| name.unwrap())
        .collect()
        .await;
    assert_eq!(names.len(), 1, "one consumer per feed: {names:?}");
    stream.delete_consumer(&names[0]).await.unwrap();

    match next_item(&mut feed.events).await {
        Some(Err(BrokerError::Unavailable(reason))) => {
            assert!(reason.contains("deleted"), "{reason}");
        }
        other => panic!("expected the feed to fail, got {other:?}"),
    }
    assert!(next_item(&mut feed.events).await.is_none(), "the feed ends");

    // Dropping a feed deletes its consumer.
    let second = follow(&broker, None).await;
    drop(second);
    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    loop {
        let left: Vec<String> = stream
            .consumer_names()
            .map(|name| name.unwrap())
            .collect()
            .await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "consumers left: {left:?}");
        pause_before_retry().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_at_start_fails_fast_as_unavailable() {
    let port = free_port();
    let log = TestLog::new(&format!("nats://127.0.0.1:{port}"));
    let broker = log.broker(10);
    assert_eq!(broker.name(), "nats");
    assert_eq!(broker.endpoint(), format!("nats://127.0.0.1:{port}"));

    let started = Instant::now();
    let follow_result = broker.follow(None).await;
    assert!(
        matches!(follow_result, Err(BrokerError::Unavailable(_))),
        "{follow_result:?}"
    );
    let append_result = broker
        .append(&topic("t"), ContentType::Text, Bytes::from("x"), 1)
        .await;
    assert!(
        matches!(append_result, Err(BrokerError::Unavailable(_))),
        "{append_result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn malformed_config_is_refused_without_contacting_nats() {
    for config in [
        NatsBrokerConfig::default().stream("has.dot"),
        NatsBrokerConfig::default().subject_prefix("wild.*"),
        NatsBrokerConfig::default().history_events(0),
        NatsBrokerConfig::default().url("not a url"),
    ] {
        let result = NatsBroker::new(config.clone());
        assert!(
            matches!(result, Err(BrokerError::Refused(_))),
            "{config:?}: {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_keeps_acknowledged_events_and_epoch() {
    let mut server = BrokerServer::start(BrokerKind::Nats);
    let log = TestLog::new(&server.url());
    let broker = Arc::new(log.broker(1000));
    let events_topic = topic("restart.events");

    let mut feed = follow(&broker, None).await;
    let epoch = feed.epoch.clone();
    let writer = {
        let broker = Arc::clone(&broker);
        let events_topic = events_topic.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let id = broker
                    .append(&events_topic, ContentType::Text, format!("{i}").into(), i)
                    .await
                    .unwrap();
                ids.push(id);
            }
            ids
        })
    };
    let seen = take_events(&mut feed.events, 50).await;
    let acknowledged = writer.await.unwrap();
    assert_eq!(
        seen.iter()
            .map(|event| event.id.clone())
            .collect::<Vec<_>>(),
        acknowledged
    );
    let last_seen = seen.last().unwrap().id.clone();

    server.kill();
    match next_item(&mut feed.events).await {
        Some(Err(BrokerError::Unavailable(_))) => {}
        other => panic!("expected the feed to fail as unavailable, got {other:?}"),
    }
    assert!(next_item(&mut feed.events).await.is_none(), "the feed ends");
    let started = Instant::now();
    let append_while_down = broker
        .append(&events_topic, ContentType::Text, Bytes::from("lost"), 0)
        .await;
    assert!(
        matches!(append_while_down, Err(BrokerError::Unavailable(_))),
        "{append_while_down:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    server.restart();
    // The client reconnects by itself; meanwhile follow fails as unavailable, and a caller
    // retries, as this loop does.
    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    let mut resumed = loop {
        match broker.follow(Some(last_seen.clone())).await {
            Ok(feed) => break feed,
            Err(BrokerError::Unavailable(_)) if Instant::now() < deadline => {
                pause_before_retry().await;
            }
            Err(err) => panic!("follow after the restart failed: {err}"),
        }
    };
    assert_eq!(resumed.epoch, epoch, "the stream survived: same epoch");
    assert_eq!(
        resumed.head_seq, 50,
        "every acknowledged event is still there"
    );

    // Nothing acknowledged was lost: a fresh node reads all 50 back.
    let fresh_node = log.broker(1000);
    let mut replay = follow(&fresh_node, None).await;
    let replayed: Vec<EventFacts> = take_events(&mut replay.events, 50)
        .await
        .iter()
        .map(facts)
        .collect();
    assert_eq!(replayed, seen.iter().map(facts).collect::<Vec<_>>());

    let more = [
        append_text(&broker, &events_topic, "after 1").await,
        append_text(&broker, &events_topic, "after 2").await,
    ];
    assert_eq!(more[0], EventId::new(epoch.clone(), 51));
    let got = take_events(&mut resumed.events, 2).await;
    assert_eq!(
        got.iter().map(|event| event.id.clone()).collect::<Vec<_>>(),
        more
    );
    assert_eq!(next_event(&mut replay.events).await.id, more[0]);
    drop(log);
}

/// Waits a little before a retry. Reconnection has no signal a caller can await, which is
/// why a real caller backs off too.
async fn pause_before_retry() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
