//! [`BrokerBus`] over an in-process broker: nodes sharing ids and history, losing the broker
//! and getting it back, and a log that restarts in a new epoch.
//!
//! The broker here is a test double with the exact contract of [`Broker`], plus switches to
//! take it down, cut one node's feed, or wipe it. The real backends (Redis, NATS) run the
//! same kind of scenarios against real servers in their own crates.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use streamgate_core::{
    BoxFuture, Broker, BrokerBus, BrokerBusConfig, BrokerError, ContentType, Delivery, Epoch,
    Event, EventBus, EventId, Feed, HistoryConfig, MemoryBusConfig, Notice, PublishError,
    SubscribeError, SubscribeRequest, Subscription, Topic,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Log {
    epoch: Epoch,
    seq: u64,
    topics: HashMap<Topic, Vec<Event>>,
    evicted: BTreeMap<Topic, u64>,
    up: bool,
    followers: Vec<mpsc::UnboundedSender<Result<Event, BrokerError>>>,
}

#[derive(Debug)]
struct FakeBroker {
    history: usize,
    log: Mutex<Log>,
}

impl FakeBroker {
    fn new(history: usize) -> Arc<Self> {
        Arc::new(Self {
            history,
            log: Mutex::new(Log {
                epoch: Epoch::new("first").unwrap(),
                seq: 0,
                topics: HashMap::new(),
                evicted: BTreeMap::new(),
                up: true,
                followers: Vec::new(),
            }),
        })
    }

    /// Every node's feed fails; appends and follows fail until [`FakeBroker::come_back`].
    fn go_down(&self) {
        let mut log = self.log.lock().unwrap();
        log.up = false;
        for follower in log.followers.drain(..) {
            let _ = follower.send(Err(BrokerError::Unavailable("connection reset".into())));
        }
    }

    fn come_back(&self) {
        self.log.lock().unwrap().up = true;
    }

    /// The broker restarts with nothing: a new epoch.
    fn wipe(&self) {
        let mut log = self.log.lock().unwrap();
        log.epoch = Epoch::new("second").unwrap();
        log.seq = 0;
        log.topics.clear();
        log.evicted.clear();
        for follower in log.followers.drain(..) {
            let _ = follower.send(Err(BrokerError::Unavailable("restarted".into())));
        }
    }
}

/// Events carry a cache of their encodings, so they are not `Clone`; a feed gets fresh ones.
fn copy(event: &Event) -> Event {
    Event::new(
        event.topic.clone(),
        event.id.clone(),
        event.timestamp_us,
        event.content_type,
        event.payload.clone(),
    )
}

struct FeedStream(mpsc::UnboundedReceiver<Result<Event, BrokerError>>);

impl Stream for FeedStream {
    type Item = Result<Event, BrokerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

impl Broker for FakeBroker {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn endpoint(&self) -> String {
        "fake://in-process".to_owned()
    }

    fn append(
        &self,
        topic: &Topic,
        content_type: ContentType,
        payload: Bytes,
        timestamp_us: u64,
    ) -> BoxFuture<'_, Result<EventId, BrokerError>> {
        let result = (|| {
            let mut log = self.log.lock().unwrap();
            if !log.up {
                return Err(BrokerError::Unavailable("connection refused".into()));
            }
            log.seq += 1;
            let id = EventId::new(log.epoch.clone(), log.seq);
            let event = Event::new(
                topic.clone(),
                id.clone(),
                timestamp_us,
                content_type,
                payload,
            );
            log.followers
                .retain(|follower| follower.send(Ok(copy(&event))).is_ok());
            let kept = log.topics.entry(topic.clone()).or_default();
            kept.push(event);
            if kept.len() > self.history {
                let trimmed = kept.remove(0).id.seq;
                log.evicted.insert(topic.clone(), trimmed);
            }
            Ok(id)
        })();
        Box::pin(std::future::ready(result))
    }

    fn follow(&self, after: Option<EventId>) -> BoxFuture<'_, Result<Feed, BrokerError>> {
        let result = (|| {
            let mut log = self.log.lock().unwrap();
            if !log.up {
                return Err(BrokerError::Unavailable("connection refused".into()));
            }
            let from = after
                .filter(|id| id.epoch == log.epoch)
                .map_or(0, |id| id.seq);
            let mut backlog: Vec<Event> = log
                .topics
                .values()
                .flatten()
                .filter(|e| e.id.seq > from)
                .map(copy)
                .collect();
            backlog.sort_by_key(|e| e.id.seq);
            let (sender, receiver) = mpsc::unbounded_channel();
            for event in backlog {
                sender.send(Ok(event)).unwrap();
            }
            log.followers.push(sender);
            Ok(Feed::new(
                log.epoch.clone(),
                log.seq,
                log.evicted.iter().map(|(t, s)| (t.clone(), *s)).collect(),
                Box::pin(FeedStream(receiver)),
            ))
        })();
        Box::pin(std::future::ready(result))
    }
}

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

fn config(history: usize) -> BrokerBusConfig {
    BrokerBusConfig::new(
        MemoryBusConfig::default().history(HistoryConfig::default().max_events(history)),
    )
    .backoff(Duration::from_millis(5), Duration::from_millis(20))
}

async fn node(broker: &Arc<FakeBroker>, history: usize) -> BrokerBus {
    let bus = BrokerBus::start(Arc::clone(broker) as Arc<dyn Broker>, config(history));
    assert!(bus.wait_ready().await, "the node connects");
    bus
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription is open")
}

async fn next_event(sub: &mut Subscription) -> Arc<Event> {
    match next(sub).await {
        Delivery::Event(event) => event,
        Delivery::Notice(notice) => panic!("expected an event, got {notice:?}"),
    }
}

async fn publish(bus: &BrokerBus, topic_name: &str, text: &str) -> Arc<Event> {
    bus.publish(
        topic(topic_name),
        ContentType::Text,
        Bytes::from(text.to_owned()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_one_node_reaches_another_with_the_same_id() {
    let broker = FakeBroker::new(100);
    let (a, b) = (node(&broker, 100).await, node(&broker, 100).await);
    let mut on_b = b
        .subscribe(SubscribeRequest::live(vec![topic("t")]))
        .await
        .unwrap();
    let mut on_a = a
        .subscribe(SubscribeRequest::live(vec![topic("t")]))
        .await
        .unwrap();
    let mut published = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 { &a } else { &b };
        published.push(publish(node, "t", &format!("e{i}")).await.id.clone());
    }
    for sub in [&mut on_a, &mut on_b] {
        for id in &published {
            assert_eq!(&next_event(sub).await.id, id);
        }
    }
    assert_eq!(a.health().epoch, b.health().epoch);
    assert_eq!(a.health().backend, "fake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_is_primed_with_the_history_and_serves_resumes_from_it() {
    let broker = FakeBroker::new(5);
    let a = node(&broker, 5).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(publish(&a, "t", &format!("e{i}")).await.id.clone());
    }
    let b = node(&broker, 5).await;
    // Resume from the third event: events 4 and 5 were trimmed by the broker before B
    // existed, which B must report, then replay the 5 retained.
    let mut sub = b
        .subscribe(SubscribeRequest::resume(
            vec![topic("t")],
            Some(ids[1].clone()),
        ))
        .await
        .unwrap();
    match next(&mut sub).await {
        Delivery::Notice(Notice::Gap { lost_through, .. }) => assert_eq!(lost_through, ids[2]),
        other => panic!("expected a gap, got {other:?}"),
    }
    for id in &ids[3..] {
        assert_eq!(&next_event(&mut sub).await.id, id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_broker_fails_publishes_tells_subscribers_and_loses_nothing() {
    let broker = FakeBroker::new(100);
    let a = node(&broker, 100).await;
    let mut sub = a
        .subscribe(SubscribeRequest::live(vec![topic("t")]))
        .await
        .unwrap();
    let before = publish(&a, "t", "before").await;
    assert_eq!(next_event(&mut sub).await.id, before.id);

    broker.go_down();
    match next(&mut sub).await {
        Delivery::Notice(Notice::Unavailable { reason }) => {
            assert!(reason.contains("connection reset"), "{reason}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(!a.health().available);
    let refused = a
        .bus_publish("t", "while down")
        .await
        .expect_err("publishing without a broker fails");
    assert!(
        matches!(refused, PublishError::Unavailable(_)),
        "{refused:?}"
    );
    // A subscriber arriving now is refused with the reason, to retry later.
    let refused = a
        .subscribe(SubscribeRequest::resume(
            vec![topic("t")],
            Some(before.id.clone()),
        ))
        .await
        .expect_err("subscribing without a broker fails");
    assert!(
        matches!(refused, SubscribeError::Unavailable(_)),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("connection reset"),
        "{refused}"
    );

    broker.come_back();
    // Another node publishes as soon as the broker is back, maybe before A reconnects.
    let other = node(&broker, 100).await;
    let after = publish(&other, "t", "after").await;
    assert!(matches!(
        next(&mut sub).await,
        Delivery::Notice(Notice::Available)
    ));
    assert_eq!(next_event(&mut sub).await.id, after.id);
    assert!(a.wait_connected().await);
    let mut late = a
        .subscribe(SubscribeRequest::resume(
            vec![topic("t")],
            Some(before.id.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(next_event(&mut late).await.id, after.id);
    assert!(a.health().available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_broker_is_a_reset_for_every_subscriber() {
    let broker = FakeBroker::new(100);
    let a = node(&broker, 100).await;
    let mut sub = a
        .subscribe(SubscribeRequest::live(vec![topic("t")]))
        .await
        .unwrap();
    let old = publish(&a, "t", "old").await;
    assert_eq!(next_event(&mut sub).await.id, old.id);
    broker.wipe();
    // Publishes fail until the node follows the new epoch; retry on that signal.
    let new = loop {
        match a
            .publish(topic("t"), ContentType::Text, Bytes::from_static(b"new"))
            .await
        {
            Ok(event) => break event,
            Err(PublishError::Unavailable(_)) => {
                tokio::time::timeout(WAIT, a.wait_connected())
                    .await
                    .unwrap();
            }
            Err(other) => panic!("{other}"),
        }
    };
    assert_eq!(new.id.epoch.as_str(), "second");
    loop {
        match next(&mut sub).await {
            Delivery::Notice(Notice::Reset { requested, epoch }) => {
                assert_eq!(requested, old.id);
                assert_eq!(epoch.as_str(), "second");
                break;
            }
            Delivery::Notice(Notice::Unavailable { .. } | Notice::Available) => {}
            other => panic!("expected a reset, got {other:?}"),
        }
    }
    loop {
        match next(&mut sub).await {
            Delivery::Event(event) => {
                assert_eq!(event.id, new.id);
                break;
            }
            Delivery::Notice(Notice::Available) => {}
            other @ Delivery::Notice(_) => panic!("expected the new event, got {other:?}"),
        }
    }
    // A client coming back with the old id is told too.
    let mut back = a
        .subscribe(SubscribeRequest::resume(
            vec![topic("t")],
            Some(old.id.clone()),
        ))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut back).await,
        Delivery::Notice(Notice::Reset { .. })
    ));
    assert_eq!(next_event(&mut back).await.id, new.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_reached_its_broker_refuses_clearly() {
    let broker = FakeBroker::new(10);
    broker.go_down();
    let bus = BrokerBus::start(Arc::clone(&broker) as Arc<dyn Broker>, config(10));
    assert!(!bus.wait_ready().await, "the first attempt fails");
    let health = bus.health();
    assert!(!health.available);
    assert!(health.detail.unwrap().contains("connection refused"));
    let err = bus
        .subscribe(SubscribeRequest::live(vec![topic("t")]))
        .await
        .unwrap_err();
    assert!(matches!(err, SubscribeError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("fake://in-process"), "{err}");
    broker.come_back();
    // Backoff retries until it gets through.
    assert!(tokio::time::timeout(WAIT, bus.wait_connected())
        .await
        .unwrap());
    assert!(bus.health().available);
    bus.close();
    assert!(matches!(
        bus.bus_publish("t", "x").await,
        Err(PublishError::Closed)
    ));
}

trait PublishText {
    fn bus_publish<'a>(
        &'a self,
        topic_name: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Event>, PublishError>>;
}

impl PublishText for BrokerBus {
    fn bus_publish<'a>(
        &'a self,
        topic_name: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Event>, PublishError>> {
        self.publish(
            topic(topic_name),
            ContentType::Text,
            Bytes::from(text.to_owned()),
        )
    }
}

/// The shared conformance suite, on a node over the in-process broker.
#[cfg(feature = "conformance")]
mod conformance {
    use super::*;
    use streamgate_core::conformance::BusFactory;

    fn fake_broker_node() -> impl BusFactory {
        |config: MemoryBusConfig| async move {
            let broker = FakeBroker::new(config.history.max_events);
            let bus = BrokerBus::start(
                broker as Arc<dyn Broker>,
                BrokerBusConfig::new(config).resume_wait(Duration::from_millis(300)),
            );
            assert!(bus.wait_connected().await);
            Arc::new(bus) as Arc<dyn EventBus>
        }
    }

    streamgate_core::conformance_tests!(fake_broker_node());
}
