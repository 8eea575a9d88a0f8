//! Exactly-once delivery over many stateless polls: a publisher writes 10 000 events to two
//! topics (and noise to a third) while a poller loops with random timeouts, batch sizes,
//! pauses and connections. The events received, concatenated, must be exactly the events
//! published, in order.
//!
//! The seed is printed; rerun one with `LONGPOLL_SEED=<seed>`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{head_cursor, topic, Client, Poll, TestGateway};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streamgate_core::ContentType;

const EVENTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_over_10k_events_with_random_poll_timing() {
    let seed = std::env::var("LONGPOLL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("LONGPOLL_SEED={seed}");

    let mut config = TestGateway::quiet_config();
    // "Loses nothing still in history": keep all of it, so any loss is the transport's.
    config.bus.history_events = 2 * EVENTS;
    config.bus.history_bytes = 64 * 1024 * 1024;
    // Both bounds bind now and then: up to 200 events, or about 60 of these envelopes.
    config.longpoll.max_batch_events = 200;
    config.longpoll.max_batch_bytes = 8 * 1024;
    let gateway = TestGateway::start(config).await;
    let cursor = head_cursor(gateway.addr, "a,b").await;

    let bus = std::sync::Arc::clone(&gateway.app.bus);
    let publisher = tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let mut published = Vec::with_capacity(EVENTS);
        while published.len() < EVENTS {
            let name = ["a", "b", "c"][rng.random_range(0..3)];
            let payload = format!(
                r#"{{"n":{},"pad":"{}"}}"#,
                published.len(),
                "p".repeat(rng.random_range(0..64))
            );
            let event = bus
                .publish(topic(name), ContentType::Json, Bytes::from(payload))
                .await
                .unwrap();
            if name != "c" {
                published.push(event.id.to_string());
            }
            match rng.random_range(0..100) {
                0..=1 => tokio::time::sleep(Duration::from_micros(rng.random_range(0..2000))).await,
                2..=11 => tokio::task::yield_now().await,
                _ => {}
            }
        }
        published
    });

    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = Client::connect(gateway.addr).await;
    let mut cursor = cursor;
    let mut received: Vec<String> = Vec::with_capacity(EVENTS);
    let mut polls = 0u32;
    let mut empty_polls = 0u32;
    let run = async {
        loop {
            // Everything was published before this poll began: an empty answer means the poller
            // has it all (what is in history comes at once, whatever the timeout).
            let all_published = publisher.is_finished();
            polls += 1;
            let timeout = ["0", "0.001", "0.02", "0.1", "0.5"][rng.random_range(0..5)];
            let limit = match rng.random_range(0..10) {
                0 => String::new(),
                1 => "&limit=1".to_owned(),
                2 => "&limit=1000".to_owned(),
                _ => format!("&limit={}", rng.random_range(1..=250)),
            };
            if rng.random_ratio(1, 20) {
                client = Client::connect(gateway.addr).await;
            }
            let path = format!("/poll?topics=a,b&cursor={cursor}&timeout={timeout}{limit}");
            let poll = Poll::from(&client.get(&path).await);
            for message in &poll.messages {
                assert_eq!(
                    message["type"], "event",
                    "seed {seed}: unexpected {message}"
                );
            }
            let ids = poll.event_ids();
            match ids.last() {
                Some(last) => assert_eq!(&poll.cursor, last, "seed {seed}"),
                None => assert_eq!(poll.cursor, cursor, "seed {seed}"),
            }
            if ids.is_empty() && all_published {
                break;
            }
            empty_polls += u32::from(ids.is_empty());
            received.extend(ids);
            cursor = poll.cursor;
            if rng.random_ratio(1, 5) {
                tokio::time::sleep(Duration::from_micros(rng.random_range(0..3000))).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: only {} events after 120 s", received.len()));
    let published = publisher.await.unwrap();
    // Nothing more may come after the last one.
    let tail = Poll::from(
        &client
            .get(&format!("/poll?topics=a,b&cursor={cursor}&timeout=0"))
            .await,
    );
    assert!(
        tail.messages.is_empty(),
        "seed {seed}: extra {:?}",
        tail.messages
    );
    if let Some(i) = (0..received.len().min(published.len())).find(|&i| received[i] != published[i])
    {
        panic!(
            "seed {seed}: first difference at {i}: received {} published {}",
            received[i], published[i]
        );
    }
    assert_eq!(
        received.len(),
        published.len(),
        "seed {seed}: lengths differ"
    );
    println!("{EVENTS} events in {polls} polls, {empty_polls} of them empty");
    gateway.shutdown().await;
}
