//! Behaviour of the in-memory bus: ordering, fan-out, history bounds, resume and lag.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use streamgate_core::{
    ContentType, Delivery, Epoch, Event, EventBus, EventId, HistoryConfig, MemoryBus,
    MemoryBusConfig, Notice, PublishError, SubscribeError, SubscribeRequest, Subscription, Topic,
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

#[tokio::test]
async fn events_arrive_in_publish_order_with_increasing_ids() {
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
    assert!(published.windows(2).all(|w| w[0].id.seq < w[1].id.seq));
}

#[tokio::test]
async fn live_subscription_skips_earlier_events() {
    let bus = bus(MemoryBusConfig::default());
    publish(&bus, "a", "before");
    let mut sub = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    publish(&bus, "a", "after");
    assert_eq!(payloads(&ready(&mut sub)), ["after"]);
}

#[tokio::test]
async fn fan_out_reaches_every_subscriber() {
    let bus = bus(MemoryBusConfig::default());
    let mut subs: Vec<_> = (0..500)
        .map(|_| {
            bus.subscribe_now(SubscribeRequest::live(vec![topic("a")]))
                .unwrap()
        })
        .collect();
    for i in 0..10 {
        publish(&bus, "a", &i.to_string());
    }
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    for sub in &mut subs {
        assert_eq!(payloads(&ready(sub)), expected);
    }
    let stats = bus.topic_stats().await;
    assert_eq!(stats[0].subscribers, 500);
    drop(subs);
    assert_eq!(
        bus.topic_stats().await[0].subscribers,
        0,
        "drop unsubscribes"
    );
}

#[tokio::test]
async fn subscriber_wakes_on_publish_from_another_task() {
    let bus = bus(MemoryBusConfig::default());
    let mut sub = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    let publisher = bus.clone();
    let handle = tokio::spawn(async move {
        tokio::task::yield_now().await;
        publisher.publish_now(topic("a"), ContentType::Text, Bytes::from_static(b"x"))
    });
    let Some(Delivery::Event(event)) = sub.next().await else {
        panic!("expected an event")
    };
    assert_eq!(event.id, handle.await.unwrap().unwrap().id);
}

#[tokio::test]
async fn multi_topic_subscription_is_in_id_order() {
    let bus = bus(MemoryBusConfig::default());
    let mut sub = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a"), topic("b")]))
        .unwrap();
    for i in 0..20 {
        publish(&bus, if i % 3 == 0 { "b" } else { "a" }, &i.to_string());
        publish(&bus, "c", "not subscribed");
    }
    let got = ready(&mut sub);
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(payloads(&got), expected);
}

#[tokio::test]
async fn history_is_bounded_by_count_and_bytes() {
    let bus = bus(MemoryBusConfig::default().history(HistoryConfig::default().max_events(5)));
    for i in 0..12 {
        publish(&bus, "a", &i.to_string());
    }
    let stats = bus.topic_stats().await;
    assert_eq!(stats[0].history.len, 5);
    assert_eq!(stats[0].history.first_seq, Some(8));
    assert_eq!(stats[0].history.evicted_through, 7);
    assert_eq!(stats[0].published, 12);

    let big = Bytes::from(vec![b'x'; 1000]);
    let bus = bus_with_bytes(2500);
    for _ in 0..10 {
        bus.publish_now(topic("a"), ContentType::Text, big.clone())
            .unwrap();
    }
    let stats = bus.topic_stats().await;
    assert_eq!(stats[0].history.len, 2);
    assert!(stats[0].history.bytes <= 2500);
}

fn bus_with_bytes(max_bytes: usize) -> MemoryBus {
    bus(MemoryBusConfig::default().history(HistoryConfig::default().max_bytes(max_bytes)))
}

#[tokio::test]
async fn resume_replays_after_the_id_then_goes_live() {
    let bus = bus(MemoryBusConfig::default());
    let events: Vec<_> = (0..10)
        .map(|i| publish(&bus, "a", &i.to_string()))
        .collect();
    let mut sub = bus
        .subscribe_now(SubscribeRequest::resume(
            vec![topic("a")],
            Some(events[6].id.clone()),
        ))
        .unwrap();
    publish(&bus, "a", "live");
    assert_eq!(payloads(&ready(&mut sub)), ["7", "8", "9", "live"]);
}

#[tokio::test]
async fn resume_from_the_newest_id_replays_nothing() {
    let bus = bus(MemoryBusConfig::default());
    publish(&bus, "a", "0");
    publish(&bus, "a", "1");
    let last = publish(&bus, "a", "2");
    let mut sub = bus
        .subscribe_now(SubscribeRequest::resume(
            vec![topic("a")],
            Some(last.id.clone()),
        ))
        .unwrap();
    assert!(ready(&mut sub).is_empty());
    publish(&bus, "a", "next");
    assert_eq!(payloads(&ready(&mut sub)), ["next"]);
}

#[tokio::test]
async fn resume_across_topics_uses_one_id() {
    let bus = bus(MemoryBusConfig::default());
    let a1 = publish(&bus, "a", "a1");
    publish(&bus, "b", "b1");
    publish(&bus, "a", "a2");
    publish(&bus, "b", "b2");
    let mut sub = bus
        .subscribe_now(SubscribeRequest::resume(
            vec![topic("b"), topic("a")],
            Some(a1.id.clone()),
        ))
        .unwrap();
    assert_eq!(payloads(&ready(&mut sub)), ["b1", "a2", "b2"]);
}

#[tokio::test]
async fn resume_past_history_start_reports_a_gap() {
    let bus = bus(MemoryBusConfig::default().history(HistoryConfig::default().max_events(3)));
    let events: Vec<_> = (0..10)
        .map(|i| publish(&bus, "a", &i.to_string()))
        .collect();
    let mut sub = bus
        .subscribe_now(SubscribeRequest::resume(
            vec![topic("a")],
            Some(events[1].id.clone()),
        ))
        .unwrap();
    let got = ready(&mut sub);
    assert_eq!(
        notices(&got),
        [Notice::Gap {
            topic: topic("a"),
            after: events[1].id.clone(),
            lost_through: events[6].id.clone(),
        }]
    );
    assert!(matches!(got[0], Delivery::Notice(_)), "the gap comes first");
    assert_eq!(payloads(&got), ["7", "8", "9"]);
}

#[tokio::test]
async fn resume_from_another_epoch_is_a_reset() {
    let bus = bus(MemoryBusConfig::default());
    publish(&bus, "a", "x");
    publish(&bus, "a", "y");
    let stale = EventId::new(Epoch::new("gone").unwrap(), 1);
    let mut sub = bus
        .subscribe_now(SubscribeRequest::resume(
            vec![topic("a")],
            Some(stale.clone()),
        ))
        .unwrap();
    let got = ready(&mut sub);
    assert_eq!(
        notices(&got),
        [Notice::Reset {
            requested: stale,
            epoch: Epoch::new("test").unwrap()
        }]
    );
    assert_eq!(payloads(&got), ["x", "y"], "everything kept is replayed");
}

#[tokio::test]
async fn resume_ahead_of_the_stream_is_rejected() {
    let bus = bus(MemoryBusConfig::default());
    publish(&bus, "a", "x");
    let err = bus
        .subscribe_now(SubscribeRequest::resume(vec![topic("a")], Some(id(5))))
        .unwrap_err();
    assert!(matches!(
        err,
        SubscribeError::CursorAhead { head_seq: 1, .. }
    ));
}

#[tokio::test]
async fn bad_subscribe_requests_are_rejected() {
    let bus = bus(MemoryBusConfig::default().max_topics_per_subscription(2));
    assert!(matches!(
        bus.subscribe_now(SubscribeRequest::live(vec![])),
        Err(SubscribeError::NoTopics)
    ));
    assert!(matches!(
        bus.subscribe_now(SubscribeRequest::live(vec![topic("a"), topic("a")])),
        Err(SubscribeError::DuplicateTopic(_))
    ));
    assert!(matches!(
        bus.subscribe_now(SubscribeRequest::live(vec![
            topic("a"),
            topic("b"),
            topic("c")
        ])),
        Err(SubscribeError::TooManyTopics { count: 3, max: 2 })
    ));
}

#[tokio::test]
async fn slow_subscriber_does_not_hold_back_a_fast_one() {
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

#[tokio::test]
async fn lagging_past_history_reports_the_gap() {
    let bus = bus(MemoryBusConfig::default()
        .subscriber_queue(4)
        .history(HistoryConfig::default().max_events(10)));
    let mut slow = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    for i in 0..100 {
        publish(&bus, "a", &i.to_string());
    }
    let got = ready(&mut slow);
    assert_eq!(
        notices(&got),
        [
            Notice::Lagged {
                last_delivered: Some(id(4))
            },
            Notice::Gap {
                topic: topic("a"),
                after: id(4),
                lost_through: id(90)
            }
        ]
    );
    let mut expected: Vec<String> = (0..4).map(|i| i.to_string()).collect();
    expected.extend((90..100).map(|i| i.to_string()));
    assert_eq!(payloads(&got), expected);
}

#[tokio::test]
async fn publish_validates_payloads_and_size() {
    let bus = bus(MemoryBusConfig::default().max_payload(4));
    assert!(matches!(
        bus.publish_now(
            topic("a"),
            ContentType::Binary,
            Bytes::from_static(b"12345")
        ),
        Err(PublishError::TooLarge { size: 5, max: 4 })
    ));
    assert!(matches!(
        bus.publish_now(topic("a"), ContentType::Json, Bytes::from_static(b"{")),
        Err(PublishError::InvalidPayload(_))
    ));
    assert!(matches!(
        bus.publish_now(topic("a"), ContentType::Text, Bytes::from_static(b"\xff")),
        Err(PublishError::InvalidPayload(_))
    ));
    assert!(
        bus.topic_stats().await.is_empty(),
        "rejected publishes store nothing"
    );
}

#[tokio::test]
async fn topic_limit_is_enforced() {
    let bus = bus(MemoryBusConfig::default().max_topics(2));
    publish(&bus, "a", "x");
    publish(&bus, "b", "x");
    assert!(matches!(
        bus.publish_now(topic("c"), ContentType::Text, Bytes::from_static(b"x")),
        Err(PublishError::TopicLimit { max: 2 })
    ));
    assert!(matches!(
        bus.subscribe_now(SubscribeRequest::live(vec![topic("d")])),
        Err(SubscribeError::TopicLimit { max: 2 })
    ));
    assert!(bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .is_ok());
}

#[tokio::test]
async fn close_drains_then_ends_subscriptions_and_refuses_publishes() {
    let bus = bus(MemoryBusConfig::default());
    let mut sub = bus
        .subscribe_now(SubscribeRequest::live(vec![topic("a")]))
        .unwrap();
    publish(&bus, "a", "last");
    bus.close();
    assert_eq!(payloads(&[sub.next().await.unwrap()]), ["last"]);
    assert!(sub.next().await.is_none());
    assert!(matches!(
        bus.publish_now(topic("a"), ContentType::Text, Bytes::from_static(b"x")),
        Err(PublishError::Closed)
    ));
    assert!(!bus.health().available);
}

#[tokio::test]
async fn concurrent_publishers_keep_every_subscriber_in_id_order() {
    let bus = bus(MemoryBusConfig::default()
        .subscriber_queue(64)
        .history(HistoryConfig::default().max_events(100_000)));
    let topics = vec![topic("a"), topic("b"), topic("c")];
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let mut sub = bus
                .subscribe_now(SubscribeRequest::live(topics.clone()))
                .unwrap();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                while let Some(delivery) = sub.next().await {
                    if let Delivery::Event(e) = delivery {
                        seqs.push(e.id.seq);
                    }
                }
                seqs
            })
        })
        .collect();
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..2000 {
                    publish(&bus, name, &i.to_string());
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    bus.close();
    for reader in readers {
        let seqs = reader.await.unwrap();
        assert_eq!(seqs, (1..=6000).collect::<Vec<u64>>());
    }
}

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

#[tokio::test]
async fn a_reset_is_not_followed_by_gaps_for_what_was_evicted_before_it() {
    let bus = bus(MemoryBusConfig::default().history(HistoryConfig::default().max_events(2)));
    for i in 0..5 {
        publish(&bus, "a", &i.to_string());
    }
    let stale = EventId::new(Epoch::new("gone").unwrap(), 1);
    let mut sub = bus
        .subscribe_now(SubscribeRequest::resume(
            vec![topic("a")],
            Some(stale.clone()),
        ))
        .unwrap();
    let got = ready(&mut sub);
    assert_eq!(
        notices(&got),
        [Notice::Reset {
            requested: stale,
            epoch: Epoch::new("test").unwrap()
        }]
    );
    assert_eq!(payloads(&got), ["3", "4"]);
}
