//! Behaviour only the in-memory bus has: `publish_now` delivering synchronously, the exact
//! lag and catch-up mechanics (queue-sized prefix, chunked replay), draining on close,
//! byte-bounded history, forgetting topics nobody publishes to, and a publishing loop that
//! cannot starve its subscribers.
//!
//! What every bus must do (ordering, fan-out, resume, gaps, resets, lag recovery, validation,
//! limits) is the shared conformance suite in `streamgate_core::conformance`, run on this bus
//! by `conformance_memory.rs`. These tests can be exact where the suite cannot: publishing
//! here is synchronous, so "what is ready now" is a meaningful question.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use streamgate_core::{
    ContentType, Delivery, Epoch, Event, EventBus, EventId, HistoryConfig, MemoryBus,
    MemoryBusConfig, Notice, PublishError, SubscribeRequest, Subscription, Topic,
};

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

fn bus(config: MemoryBusConfig) -> MemoryBus {
    MemoryBus::new(config.epoch(Epoch::new("test").unwrap()))
}

fn publish(bus: &MemoryBus, topic_name: &str, text: &str) -> Arc<Event> {
    bus.publish_now(
        topic(topic_name),
        ContentType::Text,
        Bytes::from(text.to_owned()),
    )
    .unwrap()
}

/// Takes every delivery that is ready now, without waiting.
fn ready(sub: &mut Subscription) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(Some(delivery)) = sub.next().now_or_never() {
        out.push(delivery);
    }
    out
}

fn payloads(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .filter_map(|d| match d {
            Delivery::Event(e) => Some(String::from_utf8(e.payload.to_vec()).unwrap()),
            Delivery::Notice(_) => None,
        })
        .collect()
}

fn notices(deliveries: &[Delivery]) -> Vec<Notice> {
    deliveries
        .iter()
        .filter_map(|d| match d {
            Delivery::Notice(n) => Some(n.clone()),
            Delivery::Event(_) => None,
        })
        .collect()
}

fn id(seq: u64) -> EventId {
    EventId::new(Epoch::new("test").unwrap(), seq)
}

/// `publish_now` queues under the bus lock, so the event is ready for every subscriber before
/// the call returns, and subscribers get the very allocation the publisher got back. (A
/// broker bus delivers the copy that came through its feed, so the suite compares fields.)
#[tokio::test]
async fn publish_now_delivers_at_once_and_shares_the_published_event() {
    let bus = bus(MemoryBusConfig::default());
    let mut sub = bus
        .subscribe(SubscribeRequest::live(vec![topic("a")]))
        .await
        .unwrap();
    let published: Vec<_> = (0..100)
        .map(|i| publish(&bus, "a", &i.to_string()))
        .collect();
    let got = ready(&mut sub);
    let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(payloads(&got), expected);
    for (delivery, event) in got.iter().zip(&published) {
        let Delivery::Event(received) = delivery else {
            panic!("notice")
        };
        assert!(Arc::ptr_eq(received, event), "subscribers share the event");
    }
}

/// The byte bound is each node's own memory budget (a broker bounds its log by count only),
/// so it is checked here rather than in the suite.
#[tokio::test]
async fn history_is_bounded_by_bytes() {
    let big = Bytes::from(vec![b'x'; 1000]);
    let bus = bus(MemoryBusConfig::default().history(HistoryConfig::default().max_bytes(2500)));
    for _ in 0..10 {
        bus.publish_now(topic("a"), ContentType::Text, big.clone())
            .unwrap();
    }
    let stats = bus.topic_stats().await;
    assert_eq!(stats[0].history.len, 2);
    assert!(stats[0].history.bytes <= 2500);
}

/// The suite only requires "at most a queue's worth, then `Lagged`, then the rest". This bus
/// delivers exactly `subscriber_queue` events before the notice, and catches up from history
/// without waiting for anything.
#[tokio::test]
async fn overflow_detaches_after_exactly_the_queue_and_catches_up_synchronously() {
    let bus = bus(MemoryBusConfig::default()
        .subscriber_queue(8)
        .history(HistoryConfig::default().max_events(10_000)));
    let mut slow = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    let mut fast = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    let mut fast_received = 0;
    for i in 0..1000 {
        publish(&bus, "a", &i.to_string());
        fast_received += payloads(&ready(&mut fast)).len();
    }
    assert_eq!(
        fast_received, 1000,
        "the fast subscriber got every event at once"
    );

    // The slow one never read: it was detached, and now catches up from history, with the
    // lag reported, nothing lost and nothing duplicated.
    let got = ready(&mut slow);
    let lagged: Vec<_> = notices(&got);
    assert_eq!(
        lagged,
        [Notice::Lagged {
            last_delivered: Some(id(8))
        }]
    );
    let expected: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert_eq!(payloads(&got), expected);

    // Re-attached: live events flow again.
    publish(&bus, "a", "live");
    assert_eq!(payloads(&ready(&mut slow)), ["live"]);
}

/// Events queued before `close` are still delivered: "nothing is skipped silently" holds on
/// shutdown too. (That a closed bus refuses work and ends subscriptions is in the suite.)
#[tokio::test]
async fn close_drains_what_is_queued_then_ends_subscriptions() {
    let bus = bus(MemoryBusConfig::default());
    let mut sub = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    publish(&bus, "a", "last");
    bus.close();
    // Still queued for the subscriber at the moment of closing: delivered, then the end.
    assert_eq!(payloads(&[sub.next().await.unwrap()]), ["last"]);
    assert!(sub.next().await.is_none());
    assert!(matches!(
        bus.publish_now(topic("a"), ContentType::Text, Bytes::from_static(b"x")),
        Err(PublishError::Closed),
    ));
}

/// Closing does not cut a lagging subscriber short: what it missed is still in history, and
/// ending early would drop it silently.
#[tokio::test]
async fn close_still_replays_what_a_lagging_subscriber_missed() {
    let bus = bus(MemoryBusConfig::default().subscriber_queue(2));
    let mut slow = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    for i in 0..10 {
        publish(&bus, "a", &i.to_string());
    }
    bus.close();
    let mut got = Vec::new();
    while let Some(delivery) = slow.next().await {
        got.push(delivery);
    }
    assert_eq!(
        notices(&got),
        [Notice::Lagged {
            last_delivered: Some(id(2))
        }]
    );
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(payloads(&got), expected);
}

/// Catch-up reads history in queue-sized chunks; each topic's loss is announced once, not
/// once per chunk.
#[tokio::test]
async fn one_loss_is_reported_once_across_catch_up_chunks() {
    let bus = bus(MemoryBusConfig::default()
        .subscriber_queue(1)
        .history(HistoryConfig::default().max_events(2)));
    let first = publish(&bus, "b", "b0");
    for i in 1..=4 {
        publish(&bus, "a", &format!("a{i}"));
        publish(&bus, "b", &format!("b{i}"));
    }
    // History keeps a3, a4 and b3, b4; a1, a2 and b0..b2 are gone.
    let mut sub = bus
        .subscribe_now(SubscribeRequest::resume(
            vec![topic("a"), topic("b")],
            Some(first.id.clone()),
        ))
        .unwrap();
    let got = ready(&mut sub);
    let gaps: Vec<_> = notices(&got)
        .into_iter()
        .map(|n| match n {
            Notice::Gap { topic, .. } => topic.to_string(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(gaps, ["a", "b"], "one gap per topic, however many chunks");
    assert_eq!(payloads(&got), ["a3", "b3", "a4", "b4"]);
}

/// `publish` never waits, so without spending cooperative budget a publishing loop would
/// keep its worker and starve the subscribers it wakes (they sit in that worker's LIFO slot).
#[tokio::test]
async fn a_publishing_loop_does_not_starve_subscribers() {
    let bus = bus(MemoryBusConfig::default().subscriber_queue(1024));
    let mut sub = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut events = 0;
        let mut notices = 0;
        while let Some(delivery) = sub.next().await {
            match delivery {
                Delivery::Event(_) => events += 1,
                Delivery::Notice(_) => notices += 1,
            }
        }
        (events, notices)
    });
    let publisher = bus.clone();
    tokio::spawn(async move {
        for i in 0..100_000u32 {
            publisher
                .publish(
                    topic("a"),
                    ContentType::Binary,
                    Bytes::from(i.to_be_bytes().to_vec()),
                )
                .await
                .unwrap();
        }
        publisher.close();
    })
    .await
    .unwrap();
    let (events, notices) = reader.await.unwrap();
    assert_eq!(
        (events, notices),
        (100_000, 0),
        "the reader kept up: no lag"
    );
}

/// Subscribing creates a topic entry; if nobody ever publishes to it, it goes with its last
/// subscriber, so clients subscribing to made-up names cannot use up `max_topics`.
#[tokio::test]
async fn topics_only_subscribed_to_are_forgotten_with_their_last_subscriber() {
    let bus = bus(MemoryBusConfig::default().max_topics(2));
    for round in 0..5 {
        let sub = bus
            .subscribe_now(SubscribeRequest::live(vec![topic(&format!(
                "made-up-{round}"
            ))]))
            .unwrap();
        drop(sub);
    }
    assert!(bus.topic_stats().await.is_empty());
    publish(&bus, "kept", "x");
    let sub = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("kept")]))
        .unwrap();
    drop(sub);
    assert_eq!(
        bus.topic_stats().await.len(),
        1,
        "a topic with history stays"
    );
}

/// Reclaiming goes by recency: a publish moves an idle topic to the back of the line, a
/// topic with a subscriber is never taken, and only a table of subscribed topics refuses.
#[tokio::test]
async fn reclaim_takes_the_least_recently_used_idle_topic() {
    let bus = bus(MemoryBusConfig::default().max_topics(3));
    publish(&bus, "a", "1");
    publish(&bus, "b", "1");
    publish(&bus, "c", "1");
    publish(&bus, "a", "2");
    let held = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("b")]))
        .unwrap();
    publish(&bus, "d", "1");
    let names = |stats: Vec<streamgate_core::TopicStats>| -> Vec<String> {
        stats.iter().map(|s| s.topic.to_string()).collect()
    };
    assert_eq!(
        names(bus.topic_stats().await),
        ["a", "b", "d"],
        "c was the least recently used topic without a subscriber"
    );
    publish(&bus, "e", "1");
    assert_eq!(names(bus.topic_stats().await), ["b", "d", "e"]);
    let usage = bus.history_usage();
    assert_eq!((usage.topics, usage.topics_reclaimed), (3, 2));
    // With every topic subscribed to, a new one is refused.
    let _d = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("d"), topic("e")]))
        .unwrap();
    assert!(matches!(
        bus.publish_now(topic("f"), ContentType::Text, Bytes::from_static(b"x")),
        Err(PublishError::TopicLimit { max: 3 })
    ));
    drop(held);
    publish(&bus, "f", "1");
    assert_eq!(names(bus.topic_stats().await), ["d", "e", "f"]);
}

/// A reclaimed topic's record of loss survives being subscribed to and left again without a
/// publish, and a resume from before the loss reports it however late it comes.
#[tokio::test]
async fn tombstone_outlives_a_subscription_that_published_nothing() {
    let bus = bus(MemoryBusConfig::default().max_topics(2));
    let lost = publish(&bus, "a", "1");
    publish(&bus, "b", "1");
    publish(&bus, "c", "1");
    // `a` made room for `c`; visiting it makes `b` make room in turn.
    let visit = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    drop(visit);
    assert_eq!(
        bus.history_usage().topics,
        1,
        "the visit left nothing behind"
    );
    let mut resumed = bus
        .subscribe_now(SubscribeRequest::resume(vec![topic("a")], Some(id(0))))
        .unwrap();
    assert_eq!(
        notices(&ready(&mut resumed)),
        [Notice::Gap {
            topic: topic("a"),
            after: id(0),
            lost_through: lost.id.clone(),
        }]
    );
}

/// Tombstones are bounded by `max_topics`: past it the lowest is forgotten into a watermark,
/// and a resume from before that watermark on any topic without a tombstone reports a gap
/// (a loss that may not have been, rather than a loss kept quiet).
#[tokio::test]
async fn forgotten_tombstones_fold_into_a_watermark() {
    let bus = bus(MemoryBusConfig::default().max_topics(2));
    for i in 0..6 {
        publish(&bus, &format!("t{i}"), "x");
    }
    // t0..t3 (seqs 1..=4) were reclaimed; the tombstones of t2 and t3 are kept, t0's and
    // t1's folded into the watermark 2.
    let gap_of = |name: &str, since: u64| {
        let mut sub = bus
            .subscribe_now(SubscribeRequest::resume(vec![topic(name)], Some(id(since))))
            .unwrap();
        notices(&ready(&mut sub))
    };
    let gap = |name: &str, since: u64, through: u64| Notice::Gap {
        topic: topic(name),
        after: id(since),
        lost_through: id(through),
    };
    // Its own tombstone. Making room for it reclaims t4 (seq 5), whose tombstone pushes
    // t2's (3) into the watermark.
    assert_eq!(gap_of("t3", 0), [gap("t3", 0, 4)]);
    // t0 lost seq 1, but its tombstone is gone: the watermark speaks for it.
    assert_eq!(gap_of("t0", 0), [gap("t0", 0, 3)]);
    assert_eq!(gap_of("never-seen", 2), [gap("never-seen", 2, 3)]);
    assert!(gap_of("never-seen", 3).is_empty(), "nothing lost after 3");
}

/// The bus-wide bound holds after every publish, whatever the sizes and topics, and the
/// tracked total is the sum of what the topics keep.
#[tokio::test]
async fn history_memory_is_never_exceeded() {
    let cap = 64 * 1024;
    let bus = bus(MemoryBusConfig::default().history_memory(cap));
    let mut evicted_before = 0;
    for i in 0..2_000usize {
        let size = (i * 7919) % 5000;
        bus.publish_now(
            topic(&format!("t{}", i % 37)),
            ContentType::Binary,
            Bytes::from(vec![0u8; size]),
        )
        .unwrap();
        let usage = bus.history_usage();
        assert!(usage.bytes <= cap, "after publish {i}: {usage:?}");
        assert!(usage.memory_evictions >= evicted_before);
        evicted_before = usage.memory_evictions;
    }
    let stats = bus.topic_stats().await;
    let kept: usize = stats.iter().map(|s| s.history.bytes).sum();
    let usage = bus.history_usage();
    assert_eq!(kept, usage.bytes);
    assert!(
        usage.bytes > cap / 2,
        "the bound is used, not undershot: {usage:?}"
    );
    assert!(usage.memory_evictions > 0);
    // The oldest events of all went: every kept event is newer than every evicted one.
    let oldest_kept = stats
        .iter()
        .filter_map(|s| s.history.first_seq)
        .min()
        .unwrap();
    let newest_evicted = stats
        .iter()
        .map(|s| s.history.evicted_through)
        .max()
        .unwrap();
    assert!(newest_evicted < oldest_kept);
}
