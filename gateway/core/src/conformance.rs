//! The backend-independent test suite every [`EventBus`] passes.
//!
//! Transports are written against `Arc<dyn EventBus>` and must not care whether events live in
//! this process ([`MemoryBus`](crate::MemoryBus)) or in a broker shared by many gateway nodes.
//! That only holds if every backend keeps the same promises: ids strictly increasing across
//! the bus, one id resuming a multi-topic subscription, the resume rule of `docs/PROTOCOL.md`,
//! and never losing an event silently. This module states those promises as executable
//! checks, so each backend proves them instead of re-describing them in its own tests.
//!
//! # Running the suite on a backend
//!
//! A backend supplies a [`BusFactory`]: every check builds a fresh bus from the
//! [`MemoryBusConfig`] it needs (a small history, a small subscriber queue, a payload limit),
//! so checks never see each other's events. Broker-backed buses honour the same settings:
//! they mirror the shared log into a local `MemoryBus` and use `history.max_events` as the
//! broker's per-topic bound.
//!
//! In a backend's integration test file, one line generates one `#[test]` per check, so a
//! failure names the broken promise:
//!
//! ```
//! use std::sync::Arc;
//! use streamgate_core::{EventBus, MemoryBus, MemoryBusConfig};
//!
//! streamgate_core::conformance_tests!(|config: MemoryBusConfig| async move {
//!     Arc::new(MemoryBus::new(config)) as Arc<dyn EventBus>
//! });
//! ```
//!
//! Attributes written before `factory =` are put on every generated test, which is how a
//! backend that needs an external service opts out by default:
//! `conformance_tests!(#[ignore = "needs a Redis server"] factory = redis_factory());`.
//! [`run_all`] runs the whole suite from one test instead, and [`checks`] hands out the list
//! for a custom runner.
//!
//! # How the checks wait
//!
//! A check sees nothing but the trait, and must pass on a bus where delivery is
//! asynchronous: `publish(..).await` returns once the event is *accepted* (for a broker bus:
//! acknowledged by the broker), and the event reaches this node's subscribers a little later,
//! through its feed. So the checks never poll a subscription "right now" and never sleep:
//!
//! - every wait is bounded by [`STEP_TIMEOUT`], so a broken backend fails instead of hanging;
//! - "nothing else was delivered" is shown by publishing a marker event afterwards and
//!   checking that the marker is the very next delivery: arrival of the marker is the signal;
//! - before a check opens a subscription whose meaning depends on what the node already holds
//!   (a live subscription that must not see earlier events, a resume from the newest id, a
//!   cursor that must count as ahead), it waits until a *witness* subscription, opened before
//!   publishing, has received the last event: from then on the node has it;
//! - ids are compared with each other and with `health().epoch`, never with constants: a
//!   backend picks its epoch and may share one sequence counter among many buses.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use crate::bus::TopicStats;
use crate::bus::{BoxFuture, Delivery, EventBus, Notice, SubscribeRequest, Subscription};
use crate::error::{PayloadError, PublishError, SubscribeError};
use crate::event::{ContentType, Epoch, Event, EventId, Topic};
use crate::history::HistoryConfig;
use crate::memory::MemoryBusConfig;

/// The longest a check waits for any one step: building the bus, a publish, a subscribe, a
/// delivery. Generous, because a broker round trip on a loaded CI machine can be slow; a
/// working backend never comes near it, so reaching it means something was lost.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a fresh bus for one check.
///
/// Each check asks for its own bus so that no check sees another's events, and so that it can
/// pick the bounds it exercises (history size, subscriber queue, payload and topic limits).
/// A broker-backed factory gives each bus a log of its own (a fresh key prefix, stream or
/// epoch) and applies `config` to its local mirror, with `config.history.max_events` as the
/// broker's per-topic bound.
///
/// The bus must be ready to serve when `make` resolves: a broker-backed factory waits until
/// its bus is connected and primed from the log (`BrokerBus::wait_connected`), since the
/// checks start publishing, and asserting `health().available`, at once. A factory that
/// cannot build its bus (the broker is unreachable) panics: the check fails with that
/// message.
///
/// Any `Fn(MemoryBusConfig) -> impl Future<Output = Arc<dyn EventBus>>` closure is a factory.
pub trait BusFactory: Send + Sync {
    /// Builds a new, empty bus honouring `config`.
    fn make(&self, config: MemoryBusConfig) -> BoxFuture<'_, Arc<dyn EventBus>>;
}

impl<F, Fut> BusFactory for F
where
    F: Fn(MemoryBusConfig) -> Fut + Send + Sync,
    Fut: Future<Output = Arc<dyn EventBus>> + Send + 'static,
{
    fn make(&self, config: MemoryBusConfig) -> BoxFuture<'_, Arc<dyn EventBus>> {
        Box::pin(self(config))
    }
}

/// One check of the suite, as a plain function, so runners can list and call them.
pub type CheckFn = for<'a> fn(&'a dyn BusFactory) -> BoxFuture<'a, ()>;

/// A bus under test and what must outlive it — a broker namespace to delete, a server to
/// stop — dropped in that order once a check lets go of the bus. Backends wrap the bus their
/// factory builds in it.
#[derive(Debug)]
pub struct WithCleanup<G: std::fmt::Debug + Send + Sync + 'static> {
    bus: Arc<dyn EventBus>,
    _cleanup: G,
}

impl<G: std::fmt::Debug + Send + Sync + 'static> WithCleanup<G> {
    /// `bus`, with `cleanup` dropped after it.
    pub fn new(bus: Arc<dyn EventBus>, cleanup: G) -> Self {
        Self {
            bus,
            _cleanup: cleanup,
        }
    }
}

impl<G: std::fmt::Debug + Send + Sync + 'static> EventBus for WithCleanup<G> {
    fn publish(
        &self,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<Arc<Event>, PublishError>> {
        self.bus.publish(topic, content_type, payload)
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        self.bus.subscribe(request)
    }

    fn health(&self) -> crate::bus::BusHealth {
        self.bus.health()
    }

    fn topic_stats(&self) -> BoxFuture<'_, Vec<TopicStats>> {
        self.bus.topic_stats()
    }

    fn close(&self) {
        self.bus.close();
    }
}

/// A named check. The name is the check function's name in this module, so a failure can be
/// looked up directly.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// The check's function name, which says the promise it verifies.
    pub name: &'static str,
    /// Runs the check against buses built by the factory; panics on failure.
    pub run: CheckFn,
}

/// Every check of the suite, in a stable order.
pub fn checks() -> Vec<Check> {
    crate::__conformance_for_each_check! { __conformance_check_list {} }
}

/// Runs every check, one after the other, and panics naming each one that failed.
///
/// Running all of them (rather than stopping at the first failure) shows at once whether a
/// backend breaks one promise or many. Prefer [`conformance_tests!`](crate::conformance_tests)
/// in test files: one test per check runs in parallel and reports separately.
///
/// # Panics
/// If any check fails, with the names and messages of the failed checks.
pub async fn run_all(factory: &dyn BusFactory) {
    let mut failures = Vec::new();
    for check in checks() {
        let outcome = AssertUnwindSafe((check.run)(factory)).catch_unwind().await;
        if let Err(panic) = outcome {
            failures.push(format!("{}: {}", check.name, panic_message(&*panic)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} conformance check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs one generated test on its own multi-threaded runtime with two workers.
///
/// Multi-threaded, as in the gateway, so that a backend's own tasks (a broker bus's feed
/// follower) and a check's spawned publishers and readers really run in parallel with the
/// check: a current-thread runtime would interleave them only at await points and hide
/// races. Used by [`conformance_tests!`](crate::conformance_tests); building the runtime here
/// spares backend test crates a dependency on tokio's macros.
///
/// # Panics
/// If the runtime cannot be built, or `test` panics.
#[doc(hidden)]
pub fn run_on_test_runtime(test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance test")
        .block_on(test);
}

/// Generates one `#[test]` per conformance check, each running the check on buses from the
/// given [`BusFactory`](crate::conformance::BusFactory) expression.
///
/// The factory expression is evaluated inside each test's runtime, so it may spawn tasks.
/// Attributes are written before `factory =` and put on every generated test:
///
/// ```
/// # use std::sync::Arc;
/// # use streamgate_core::{conformance::BusFactory, EventBus, MemoryBus, MemoryBusConfig};
/// # fn memory_bus_factory() -> impl BusFactory {
/// #     |config: MemoryBusConfig| async move { Arc::new(MemoryBus::new(config)) as Arc<dyn EventBus> }
/// # }
/// # use memory_bus_factory as redis_factory;
/// # fn main() {}
/// mod memory {
///     streamgate_core::conformance_tests!(super::memory_bus_factory());
/// }
/// mod redis {
///     streamgate_core::conformance_tests!(
///         #[ignore = "needs a Redis server"]
///         factory = super::redis_factory()
///     );
/// }
/// ```
///
/// See the [module documentation](crate::conformance).
#[macro_export]
macro_rules! conformance_tests {
    // An expression may itself start with `#[...]`, so attributes need a keyword after them
    // to tell where they end.
    ($(#[$attr:meta])* factory = $factory:expr $(,)?) => {
        $crate::__conformance_for_each_check! {
            __conformance_test_fns { { $(#[$attr])* } ($factory) }
        }
    };
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(factory = $factory);
    };
}

/// The one list of check names, handed to `$callback`, so that [`checks`] and
/// [`conformance_tests!`](crate::conformance_tests) cannot drift apart.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_for_each_check {
    ($callback:ident { $($args:tt)* }) => {
        $crate::$callback! {
            { $($args)* }
            events_arrive_in_publish_order_with_increasing_ids,
            payloads_arrive_byte_for_byte,
            live_subscription_skips_earlier_events,
            fan_out_gives_every_subscriber_the_same_events,
            multi_topic_subscription_is_in_id_order_and_resumes_from_one_id,
            history_is_bounded_per_topic_by_count,
            resume_replays_after_the_id_then_goes_live,
            resume_from_the_newest_id_replays_nothing,
            resume_past_history_start_reports_a_gap,
            resume_from_another_epoch_is_a_reset,
            resume_ahead_of_the_stream_is_rejected,
            bad_subscribe_requests_are_rejected,
            invalid_payloads_are_rejected_and_publish_nothing,
            concurrent_publishers_keep_every_subscriber_in_id_order,
            slow_subscriber_lags_then_catches_up_from_history,
            lagging_past_history_reports_a_gap,
            topic_stats_lists_published_topics,
            topic_limit_refuses_new_topics,
            idle_topic_is_reclaimed_and_a_resume_on_it_reports_a_gap,
            history_memory_evicts_the_oldest_events_of_all_topics,
            health_reports_available_with_the_ids_epoch,
            close_refuses_publishes_and_ends_subscriptions,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_check_list {
    ({} $($check:ident),* $(,)?) => {
        vec![$(
            $crate::conformance::Check {
                name: stringify!($check),
                run: |factory| Box::pin($crate::conformance::$check(factory)),
            }
        ),*]
    };
}

/// One test per check, generated recursively so that the caller's attributes (a repetition
/// of their own) can be repeated on every test.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    ({ { $(#[$attr:meta])* } ($factory:expr) } $(,)?) => {};
    ({ { $(#[$attr:meta])* } ($factory:expr) } $check:ident $(, $rest:ident)* $(,)?) => {
        $(#[$attr])*
        #[test]
        fn $check() {
            $crate::conformance::run_on_test_runtime(async {
                let factory = $factory;
                $crate::conformance::$check(&factory).await;
            });
        }
        $crate::__conformance_test_fns! { { { $(#[$attr])* } ($factory) } $($rest),* }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers. Every await on the bus is bounded by STEP_TIMEOUT, and every failure message says
// what the check was waiting for.
// ---------------------------------------------------------------------------------------------

async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing happened within {STEP_TIMEOUT:?}"),
    }
}

fn topic(name: &str) -> Topic {
    Topic::new(name).expect("the suite only uses valid topic names")
}

fn topics(names: &[&str]) -> Vec<Topic> {
    names.iter().map(|name| topic(name)).collect()
}

/// The bus under test. Closes the bus when the check ends, passed or failed, so that a
/// broker-backed bus stops its feed instead of lingering until the runtime shuts down.
struct TestBus {
    bus: Arc<dyn EventBus>,
}

impl Drop for TestBus {
    fn drop(&mut self) {
        self.bus.close();
    }
}

impl TestBus {
    async fn new(factory: &dyn BusFactory, config: MemoryBusConfig) -> Self {
        let bus = within("building the bus", factory.make(config)).await;
        Self { bus }
    }

    async fn try_publish(
        &self,
        topic_name: &str,
        content_type: ContentType,
        payload: Bytes,
    ) -> Result<Arc<Event>, PublishError> {
        within(
            &format!("publishing to {topic_name}"),
            self.bus.publish(topic(topic_name), content_type, payload),
        )
        .await
    }

    async fn publish_as(
        &self,
        topic_name: &str,
        content_type: ContentType,
        payload: Bytes,
    ) -> Arc<Event> {
        match self.try_publish(topic_name, content_type, payload).await {
            Ok(event) => event,
            Err(err) => panic!("publishing to {topic_name} failed: {err}"),
        }
    }

    async fn publish(&self, topic_name: &str, text: &str) -> Arc<Event> {
        self.publish_as(topic_name, ContentType::Text, Bytes::from(text.to_owned()))
            .await
    }

    async fn try_subscribe(
        &self,
        request: SubscribeRequest,
    ) -> Result<Subscription, SubscribeError> {
        within(
            &format!("subscribing to {:?}", request.topics),
            self.bus.subscribe(request),
        )
        .await
    }

    async fn subscribe(&self, request: SubscribeRequest) -> Subscription {
        let description = format!("{request:?}");
        match self.try_subscribe(request).await {
            Ok(subscription) => subscription,
            Err(err) => panic!("subscribing with {description} failed: {err}"),
        }
    }

    async fn live(&self, names: &[&str]) -> Subscription {
        self.subscribe(SubscribeRequest::live(topics(names))).await
    }

    async fn resume(&self, names: &[&str], since: &EventId) -> Subscription {
        self.subscribe(SubscribeRequest::resume(topics(names), Some(since.clone())))
            .await
    }

    async fn stats(&self) -> Vec<TopicStats> {
        within("reading topic stats", self.bus.topic_stats()).await
    }

    async fn stats_of(&self, topic_name: &str) -> TopicStats {
        let stats = self.stats().await;
        let mut matching = stats.iter().filter(|s| s.topic.as_str() == topic_name);
        let found = matching
            .next()
            .unwrap_or_else(|| panic!("topic_stats has no entry for {topic_name}: {stats:?}"))
            .clone();
        assert!(
            matching.next().is_none(),
            "topic_stats lists {topic_name} twice: {stats:?}"
        );
        found
    }

    /// Publishes `text` and waits until `witness` (a live subscription to `topic_name`,
    /// opened earlier) has received it: from then on this node holds the event.
    async fn publish_seen(
        &self,
        witness: &mut Subscription,
        topic_name: &str,
        text: &str,
    ) -> Arc<Event> {
        let event = self.publish(topic_name, text).await;
        let seen = next_event(witness).await;
        assert_same_event(&seen, &event, "the witness subscription");
        event
    }

    /// Publishes `count` events numbered `0..count` to `topic_name` in lockstep with
    /// `witness`: each is received before the next is published, so the witness's queue never
    /// holds more than one event and the witness can never lag.
    async fn publish_numbered_seen(
        &self,
        witness: &mut Subscription,
        topic_name: &str,
        count: usize,
    ) -> Vec<Arc<Event>> {
        let mut events = Vec::with_capacity(count);
        for i in 0..count {
            events.push(self.publish_seen(witness, topic_name, &i.to_string()).await);
        }
        events
    }

    /// Publishes a marker to `topic_name` and checks it is the next thing `subscription`
    /// delivers: proof that nothing else was pending, without sleeping to find out.
    async fn expect_nothing_before_marker(
        &self,
        subscription: &mut Subscription,
        topic_name: &str,
    ) {
        let marker = self.publish(topic_name, "marker").await;
        match next_delivery(subscription).await {
            Delivery::Event(event) if event.id == marker.id => {}
            other => panic!(
                "expected nothing more before the marker {}, got {other:?}",
                marker.id
            ),
        }
    }
}

async fn next_delivery(subscription: &mut Subscription) -> Delivery {
    let what = format!("waiting for a delivery on {:?}", subscription.topics());
    match within(&what, subscription.next()).await {
        Some(delivery) => delivery,
        None => panic!("{what}: the subscription ended"),
    }
}

async fn next_event(subscription: &mut Subscription) -> Arc<Event> {
    match next_delivery(subscription).await {
        Delivery::Event(event) => event,
        Delivery::Notice(notice) => panic!("expected an event, got the notice {notice:?}"),
    }
}

async fn next_notice(subscription: &mut Subscription) -> Notice {
    match next_delivery(subscription).await {
        Delivery::Notice(notice) => notice,
        Delivery::Event(event) => panic!("expected a notice, got the event {event:?}"),
    }
}

/// Checks that `subscription` delivers exactly `expected`, in order, with no notice between.
async fn expect_events(subscription: &mut Subscription, expected: &[Arc<Event>]) {
    for (position, want) in expected.iter().enumerate() {
        let got = next_event(subscription).await;
        assert_same_event(
            &got,
            want,
            &format!("delivery {position} of {}", expected.len()),
        );
    }
}

/// The delivered event is the published one: same id, topic, content type and payload bytes.
/// Compared field by field, not by pointer, because a broker bus hands out the copy that came
/// back through its feed.
fn assert_same_event(got: &Event, want: &Event, context: &str) {
    assert_eq!(got.id, want.id, "{context}: wrong event id");
    assert_eq!(
        got.topic, want.topic,
        "{context}: wrong topic for {}",
        want.id
    );
    assert_eq!(
        got.content_type, want.content_type,
        "{context}: wrong content type for {}",
        want.id
    );
    assert_eq!(
        got.payload, want.payload,
        "{context}: wrong payload for {}",
        want.id
    );
}

fn ids(events: &[Arc<Event>]) -> Vec<EventId> {
    events.iter().map(|event| event.id.clone()).collect()
}

fn assert_strictly_increasing_in_one_epoch(ids: &[EventId], context: &str) {
    for pair in ids.windows(2) {
        assert_eq!(
            pair[0].epoch, pair[1].epoch,
            "{context}: ids changed epoch: {pair:?}"
        );
        assert!(
            pair[0].seq < pair[1].seq,
            "{context}: ids not strictly increasing: {pair:?}"
        );
    }
}

/// An epoch the bus under test does not use, for resume ids that must be recognised as
/// foreign. Random epochs are 12 characters, so a collision means the factory pinned it.
fn foreign_epoch(current: &Epoch) -> Epoch {
    let foreign = Epoch::new("otherepoch").expect("a valid epoch");
    assert_ne!(
        &foreign, current,
        "the factory gave the bus the epoch the suite uses as foreign"
    );
    foreign
}

// ---------------------------------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------------------------------

/// Events reach a subscriber in the order they were published, with ids strictly increasing
/// in the bus's one epoch, even when published from another task.
///
/// Everything else rests on this: transports relay ids as resume cursors, and a client drops
/// any event whose sequence is not above the last it saw. The publisher runs on another task
/// while the check waits, so the subscriber must also be woken across tasks.
pub async fn events_arrive_in_publish_order_with_increasing_ids(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut subscription = bus.live(&["a"]).await;
    let shared = Arc::clone(&bus.bus);
    let publisher = tokio::spawn(async move {
        let mut published = Vec::new();
        for i in 0..100 {
            let event = shared
                .publish(topic("a"), ContentType::Text, Bytes::from(i.to_string()))
                .await
                .unwrap_or_else(|err| panic!("publishing event {i} failed: {err}"));
            published.push(event);
        }
        published
    });
    let mut received = Vec::new();
    for _ in 0..100 {
        received.push(next_event(&mut subscription).await);
    }
    let published = within("joining the publisher task", publisher)
        .await
        .expect("the publisher task panicked");
    for (position, (got, want)) in received.iter().zip(&published).enumerate() {
        assert_same_event(got, want, &format!("event {position}"));
    }
    assert_strictly_increasing_in_one_epoch(&ids(&published), "published ids");
    assert_eq!(
        published[0].id.epoch,
        bus.bus.health().epoch,
        "ids carry the epoch health() reports"
    );
}

/// Payloads come out exactly as they went in, for every content type, including empty ones,
/// every byte value and a payload of exactly `max_payload` bytes.
///
/// Transports embed `json` payloads verbatim in envelopes and hash nothing, so a backend
/// that re-encodes (parses and re-serialises JSON, trims text, base64-decodes wrongly) breaks
/// clients in ways no other check would notice.
pub async fn payloads_arrive_byte_for_byte(factory: &dyn BusFactory) {
    let max_payload = 256;
    let config = MemoryBusConfig::default().max_payload(max_payload);
    let bus = TestBus::new(factory, config).await;
    let mut subscription = bus.live(&["a"]).await;
    let every_byte: Vec<u8> = (0..=255).collect();
    let samples: [(ContentType, Bytes); 7] = [
        (ContentType::Binary, Bytes::from(every_byte)),
        (ContentType::Binary, Bytes::new()),
        (ContentType::Text, Bytes::new()),
        (
            ContentType::Text,
            Bytes::from("héllo ✓\n\t\"quoted\"\r\n  "),
        ),
        (
            ContentType::Json,
            Bytes::from(" { \"b\" : [1, 2.50, \"x\"] ,\n\"a\":null } "),
        ),
        (ContentType::Json, Bytes::from("42")),
        (ContentType::Text, Bytes::from("x".repeat(max_payload))),
    ];
    let mut published = Vec::new();
    for (content_type, payload) in samples {
        published.push(bus.publish_as("a", content_type, payload).await);
    }
    expect_events(&mut subscription, &published).await;
}

/// A subscription without a resume id sees only events published after it opened, and says
/// it started at the newest id.
///
/// The check first waits until a witness subscription has received the earlier event, so on
/// an asynchronous bus that event is known to the node before the live subscription opens.
pub async fn live_subscription_skips_earlier_events(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut witness = bus.live(&["a"]).await;
    let before = bus.publish_seen(&mut witness, "a", "before").await;
    let mut subscription = bus.live(&["a"]).await;
    assert_eq!(
        subscription.start(),
        &before.id,
        "a live subscription starts at the newest id"
    );
    let after = bus.publish("a", "after").await;
    expect_events(&mut subscription, &[after]).await;
}

/// Fifty subscribers of one topic all receive the same events with the same ids, share one
/// allocation per event, are counted in `topic_stats`, and dropping them unsubscribes.
///
/// Sharing matters for cost, not correctness: transports encode an event once per wire format
/// and reuse the bytes for every subscriber, which only works if all see the same `Arc`.
pub async fn fan_out_gives_every_subscriber_the_same_events(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut subscriptions = Vec::new();
    for _ in 0..50 {
        subscriptions.push(bus.live(&["a"]).await);
    }
    let mut published = Vec::new();
    for i in 0..10 {
        published.push(bus.publish("a", &i.to_string()).await);
    }
    let mut first: Vec<Arc<Event>> = Vec::new();
    for (number, subscription) in subscriptions.iter_mut().enumerate() {
        for (position, want) in published.iter().enumerate() {
            let got = next_event(subscription).await;
            assert_same_event(
                &got,
                want,
                &format!("subscriber {number}, event {position}"),
            );
            match first.get(position) {
                None => first.push(got),
                Some(reference) => assert!(
                    Arc::ptr_eq(reference, &got),
                    "subscriber {number} got its own copy of {}",
                    got.id
                ),
            }
        }
    }
    assert_eq!(bus.stats_of("a").await.subscribers, 50);
    drop(subscriptions);
    assert_eq!(
        bus.stats_of("a").await.subscribers,
        0,
        "dropping a subscription unsubscribes"
    );
}

/// A subscription to several topics gets their events interleaved in id order and nothing of
/// other topics; one id from it resumes all of its topics at once.
///
/// This is why sequences are bus-wide: a browser's `EventSource` keeps a single
/// `Last-Event-ID`, whatever topics the stream carries.
pub async fn multi_topic_subscription_is_in_id_order_and_resumes_from_one_id(
    factory: &dyn BusFactory,
) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut subscription = bus.live(&["a", "b"]).await;
    let mut expected = Vec::new();
    for i in 0..20 {
        let name = if i % 3 == 0 { "b" } else { "a" };
        expected.push(bus.publish(name, &i.to_string()).await);
        bus.publish("c", "not subscribed").await;
    }
    expect_events(&mut subscription, &expected).await;
    assert_strictly_increasing_in_one_epoch(&ids(&expected), "multi-topic delivery");

    // The subscription above has received everything, so the node holds it: resume from the
    // middle, naming the topics in another order.
    let mut resumed = bus.resume(&["b", "a"], &expected[6].id).await;
    assert_eq!(resumed.topics(), topics(&["b", "a"]).as_slice());
    assert_eq!(resumed.start(), &expected[6].id);
    expect_events(&mut resumed, &expected[7..]).await;
    bus.expect_nothing_before_marker(&mut resumed, "b").await;
}

/// Each topic keeps at most `history.max_events` events, oldest evicted first, and one
/// topic's traffic never evicts another topic's events.
///
/// The bound is per topic on purpose: a chatty topic must not erase the replay window of a
/// quiet one. A broker backend that trims one shared stream would fail here.
pub async fn history_is_bounded_per_topic_by_count(factory: &dyn BusFactory) {
    let config = MemoryBusConfig::default().history(HistoryConfig::default().max_events(5));
    let bus = TestBus::new(factory, config).await;
    let mut witness = bus.live(&["quiet", "busy"]).await;
    let quiet = bus.publish_seen(&mut witness, "quiet", "kept").await;
    let busy = bus.publish_numbered_seen(&mut witness, "busy", 12).await;
    drop(witness);

    let busy_stats = bus.stats_of("busy").await;
    assert_eq!(busy_stats.history.len, 5, "{busy_stats:?}");
    assert_eq!(
        busy_stats.history.first_seq,
        Some(busy[7].id.seq),
        "{busy_stats:?}"
    );
    assert_eq!(
        busy_stats.history.last_seq,
        Some(busy[11].id.seq),
        "{busy_stats:?}"
    );
    assert_eq!(
        busy_stats.history.evicted_through, busy[6].id.seq,
        "{busy_stats:?}"
    );
    assert_eq!(busy_stats.published, 12, "{busy_stats:?}");

    let quiet_stats = bus.stats_of("quiet").await;
    assert_eq!(quiet_stats.history.len, 1, "{quiet_stats:?}");
    assert_eq!(
        quiet_stats.history.first_seq,
        Some(quiet.id.seq),
        "{quiet_stats:?}"
    );
    assert_eq!(quiet_stats.history.evicted_through, 0, "{quiet_stats:?}");
}

/// Resuming after an id replays exactly the later events of the topic, oldest first, and
/// then delivers live events with nothing lost or repeated at the switch.
///
/// This is what makes a reconnect lossless: the client sends the last id it processed.
pub async fn resume_replays_after_the_id_then_goes_live(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut witness = bus.live(&["a"]).await;
    let events = bus.publish_numbered_seen(&mut witness, "a", 10).await;
    let mut resumed = bus.resume(&["a"], &events[6].id).await;
    assert_eq!(resumed.start(), &events[6].id);
    expect_events(&mut resumed, &events[7..]).await;
    let live = bus.publish("a", "live").await;
    expect_events(&mut resumed, &[live]).await;
}

/// Resuming from the newest id replays nothing and is not refused: the client was up to
/// date, and the next delivery is the next event published.
pub async fn resume_from_the_newest_id_replays_nothing(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut witness = bus.live(&["a"]).await;
    let events = bus.publish_numbered_seen(&mut witness, "a", 3).await;
    let newest = &events[2].id;
    let mut resumed = bus.resume(&["a"], newest).await;
    assert_eq!(resumed.start(), newest);
    bus.expect_nothing_before_marker(&mut resumed, "a").await;
}

/// Resuming from an id older than the topic's history first reports a `Gap` naming the topic,
/// the resume id and the newest evicted id, then replays what is kept.
///
/// "Loses nothing still in history" is the guarantee; the gap makes the rest explicit, so a
/// client can refetch or warn instead of showing a silently incomplete stream.
pub async fn resume_past_history_start_reports_a_gap(factory: &dyn BusFactory) {
    let config = MemoryBusConfig::default().history(HistoryConfig::default().max_events(3));
    let bus = TestBus::new(factory, config).await;
    let mut witness = bus.live(&["a"]).await;
    let events = bus.publish_numbered_seen(&mut witness, "a", 10).await;
    let mut resumed = bus.resume(&["a"], &events[1].id).await;
    assert_eq!(
        next_notice(&mut resumed).await,
        Notice::Gap {
            topic: topic("a"),
            after: events[1].id.clone(),
            lost_through: events[6].id.clone(),
        },
        "the gap comes before any replayed event"
    );
    expect_events(&mut resumed, &events[7..]).await;
    bus.expect_nothing_before_marker(&mut resumed, "a").await;
}

/// Resuming with an id from another epoch yields `Reset` (the id sent and the current epoch),
/// then every event still kept, with no `Gap` for what was evicted before; the subscription
/// says it started at sequence 0 of the current epoch. A huge sequence in the foreign id is
/// not "ahead": sequences of different epochs are never compared.
///
/// A foreign epoch means the history the client knew is gone (restart, broker reset): the
/// reset already says "you may have missed anything", so gaps would only repeat it.
pub async fn resume_from_another_epoch_is_a_reset(factory: &dyn BusFactory) {
    let config = MemoryBusConfig::default().history(HistoryConfig::default().max_events(3));
    let bus = TestBus::new(factory, config).await;
    let mut witness = bus.live(&["a"]).await;
    let events = bus.publish_numbered_seen(&mut witness, "a", 5).await;
    let epoch = events[0].id.epoch.clone();
    let stale = EventId::new(foreign_epoch(&epoch), 1_000_000);
    let mut resumed = bus.resume(&["a"], &stale).await;
    assert_eq!(resumed.start(), &EventId::new(epoch.clone(), 0));
    assert_eq!(
        next_notice(&mut resumed).await,
        Notice::Reset {
            requested: stale,
            epoch,
        }
    );
    expect_events(&mut resumed, &events[2..]).await;
    bus.expect_nothing_before_marker(&mut resumed, "a").await;
}

/// A resume id of the current epoch beyond anything published is refused with
/// `CursorAhead`: no such id was ever handed out, so the client is confused or forging, and
/// quietly treating it as "live" would hide that.
pub async fn resume_ahead_of_the_stream_is_rejected(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut witness = bus.live(&["a"]).await;
    let newest = bus.publish_seen(&mut witness, "a", "x").await;
    let ahead = EventId::new(newest.id.epoch.clone(), newest.id.seq + 1000);
    let request = SubscribeRequest::resume(vec![topic("a")], Some(ahead.clone()));
    match bus.try_subscribe(request).await {
        Err(SubscribeError::CursorAhead { since, head_seq }) => {
            assert_eq!(since, ahead);
            assert!(
                (newest.id.seq..ahead.seq).contains(&head_seq),
                "head_seq {head_seq} should be the newest sequence, {}",
                newest.id.seq
            );
        }
        other => panic!("expected CursorAhead, got {other:?}"),
    }
}

/// Subscribe requests naming no topic, a topic twice, or more topics than
/// `max_topics_per_subscription` are refused with the matching error; exactly the limit is
/// accepted. These are client mistakes that transports report as HTTP 400.
pub async fn bad_subscribe_requests_are_rejected(factory: &dyn BusFactory) {
    let config = MemoryBusConfig::default().max_topics_per_subscription(2);
    let bus = TestBus::new(factory, config).await;
    let attempt = |names: &[&str]| bus.try_subscribe(SubscribeRequest::live(topics(names)));
    assert!(
        matches!(attempt(&[]).await, Err(SubscribeError::NoTopics)),
        "no topics"
    );
    match attempt(&["a", "a"]).await {
        Err(SubscribeError::DuplicateTopic(duplicate)) => assert_eq!(duplicate, topic("a")),
        other => panic!("expected DuplicateTopic, got {other:?}"),
    }
    assert!(
        matches!(
            attempt(&["a", "b", "c"]).await,
            Err(SubscribeError::TooManyTopics { count: 3, max: 2 })
        ),
        "three topics with a limit of two"
    );
    assert!(attempt(&["a", "b"]).await.is_ok(), "exactly the limit");
}

/// Payloads that break their content type (bad UTF-8 for `text` or `json`, not one JSON value)
/// or exceed `max_payload` are refused with the matching error, and nothing is stored or
/// delivered: the next delivery is the next good event, and a topic that only saw rejected
/// publishes has nothing published.
///
/// Validation at publish time is what lets every envelope embed a payload without checking
/// it again; a backend that forwards first and validates later would leak bad events.
pub async fn invalid_payloads_are_rejected_and_publish_nothing(factory: &dyn BusFactory) {
    let max_payload = 8;
    let bus = TestBus::new(factory, MemoryBusConfig::default().max_payload(max_payload)).await;
    let mut subscription = bus.live(&["a"]).await;
    let rejected = [
        ("a", ContentType::Text, &b"ab\xff"[..]),
        ("a", ContentType::Json, &b"\xff"[..]),
        ("a", ContentType::Json, &b"{\"a\":"[..]),
        ("a", ContentType::Json, &b"1 2"[..]),
        ("a", ContentType::Binary, &b"123456789"[..]),
        ("a", ContentType::Text, &b"123456789"[..]),
        ("rejected", ContentType::Json, &b"{"[..]),
        ("rejected", ContentType::Binary, &b"123456789"[..]),
    ];
    for (topic_name, content_type, payload) in rejected {
        let result = bus
            .try_publish(topic_name, content_type, Bytes::copy_from_slice(payload))
            .await;
        let context = format!("{content_type} payload {:?}", Bytes::from_static(payload));
        match result {
            Err(PublishError::TooLarge { size, max }) => {
                assert!(payload.len() > max_payload, "{context}: wrongly too large");
                assert_eq!((size, max), (payload.len(), max_payload), "{context}");
            }
            Err(PublishError::InvalidPayload(PayloadError::NotUtf8 { valid_up_to })) => {
                let expected = std::str::from_utf8(payload).map_err(|e| e.valid_up_to());
                assert_eq!(Err(valid_up_to), expected, "{context}: NotUtf8");
            }
            Err(PublishError::InvalidPayload(PayloadError::NotJson(_))) => {
                assert_eq!(content_type, ContentType::Json, "{context}: NotJson");
            }
            other => panic!("{context}: expected a rejection, got {other:?}"),
        }
    }
    // Exactly max_payload bytes is still accepted, and is the next thing delivered.
    let good = bus
        .publish_as("a", ContentType::Binary, Bytes::from(vec![7; max_payload]))
        .await;
    expect_events(&mut subscription, &[good]).await;
    assert_eq!(bus.stats_of("a").await.published, 1);
    let stats = bus.stats().await;
    assert!(
        stats
            .iter()
            .all(|s| s.topic.as_str() != "rejected" || s.published == 0),
        "a topic with only rejected publishes has nothing published: {stats:?}"
    );
}

/// Four tasks publishing 100 events each to three topics, concurrently: every subscriber, of
/// one topic or of several, receives every event of its topics, in strictly increasing id
/// order, with no notice.
///
/// Concurrency is where a backend that assigns ids in one place and delivers in another can
/// reorder: two publishes racing between "got id" and "queued for subscribers" would hand a
/// multi-topic subscriber a lower id after a higher one, breaking its resume cursor.
pub async fn concurrent_publishers_keep_every_subscriber_in_id_order(factory: &dyn BusFactory) {
    const PUBLISHERS: usize = 4;
    const EVENTS_PER_PUBLISHER: usize = 100;
    const TOPICS: [&str; 3] = ["a", "b", "c"];
    let topic_of = |publisher: usize, i: usize| TOPICS[(publisher + i) % TOPICS.len()];

    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let subscriber_topics: [&[&str]; 5] = [&["a"], &["b"], &["c"], &["a", "b", "c"], &["c", "a"]];
    let mut readers = Vec::new();
    for names in subscriber_topics {
        let expected_count = (0..PUBLISHERS)
            .flat_map(|p| (0..EVENTS_PER_PUBLISHER).map(move |i| (p, i)))
            .filter(|&(p, i)| names.contains(&topic_of(p, i)))
            .count();
        let mut subscription = bus.live(names).await;
        readers.push((
            names,
            tokio::spawn(async move {
                let mut received = Vec::new();
                for _ in 0..expected_count {
                    received.push(next_delivery(&mut subscription).await);
                }
                received
            }),
        ));
    }
    let mut publishers = Vec::new();
    for publisher in 0..PUBLISHERS {
        let shared = Arc::clone(&bus.bus);
        publishers.push(tokio::spawn(async move {
            let mut published = Vec::new();
            for i in 0..EVENTS_PER_PUBLISHER {
                let name = topic_of(publisher, i);
                let event = shared
                    .publish(
                        topic(name),
                        ContentType::Text,
                        Bytes::from(format!("{publisher}-{i}")),
                    )
                    .await
                    .unwrap_or_else(|err| panic!("publisher {publisher}, event {i}: {err}"));
                published.push(event);
            }
            published
        }));
    }
    let mut published = Vec::new();
    for publisher in publishers {
        let events = within("joining a publisher", publisher)
            .await
            .expect("a publisher task panicked");
        assert_strictly_increasing_in_one_epoch(&ids(&events), "one publisher's ids");
        published.extend(events);
    }
    published.sort_by_key(|event| event.id.seq);
    assert_strictly_increasing_in_one_epoch(&ids(&published), "all published ids (no duplicates)");

    for (names, reader) in readers {
        let received = within(&format!("joining the reader of {names:?}"), reader)
            .await
            .unwrap_or_else(|err| panic!("the reader of {names:?} failed: {err}"));
        let received: Vec<EventId> = received
            .into_iter()
            .map(|delivery| match delivery {
                Delivery::Event(event) => event.id.clone(),
                Delivery::Notice(notice) => panic!("{names:?} got the notice {notice:?}"),
            })
            .collect();
        let expected: Vec<EventId> = published
            .iter()
            .filter(|event| names.contains(&event.topic.as_str()))
            .map(|event| event.id.clone())
            .collect();
        assert_eq!(received, expected, "subscriber of {names:?}");
    }
}

/// A subscriber that does not read while its queue overflows gets what was queued (at most
/// `subscriber_queue` events), then `Lagged` naming the last of them, then catches up from
/// history with nothing missing or repeated, and is live again afterwards; a subscriber that
/// keeps up meanwhile gets every event with no notice.
///
/// A slow reader must never slow the publisher or other readers, and must never lose events
/// silently: detaching it and serving it from history gives both, while the history lasts.
pub async fn slow_subscriber_lags_then_catches_up_from_history(factory: &dyn BusFactory) {
    let queue = 8;
    let config = MemoryBusConfig::default()
        .subscriber_queue(queue)
        .history(HistoryConfig::default().max_events(10_000));
    let bus = TestBus::new(factory, config).await;
    let mut slow = bus.live(&["a"]).await;
    let mut fast = bus.live(&["a"]).await;
    // The fast subscriber reads each event before the next is published: it keeps up, and
    // once it has the last event the node holds them all.
    let events = bus.publish_numbered_seen(&mut fast, "a", 200).await;

    let (prefix, last_delivered) = read_until_lagged(&mut slow).await;
    assert!(
        prefix.len() <= queue,
        "{} events were queued, more than the queue of {queue}",
        prefix.len()
    );
    assert_eq!(ids(&prefix), ids(&events[..prefix.len()]), "queued events");
    assert_eq!(last_delivered, prefix.last().map(|event| event.id.clone()));
    expect_events(&mut slow, &events[prefix.len()..]).await;
    // Caught up: live delivery resumes for both.
    let live = bus.publish("a", "live").await;
    expect_events(&mut slow, std::slice::from_ref(&live)).await;
    expect_events(&mut fast, &[live]).await;
}

/// A lagging subscriber whose position was evicted while it was detached gets `Lagged`, then
/// a `Gap` from its last delivered id through the newest evicted id, then the kept events.
pub async fn lagging_past_history_reports_a_gap(factory: &dyn BusFactory) {
    let config = MemoryBusConfig::default()
        .subscriber_queue(4)
        .history(HistoryConfig::default().max_events(10));
    let bus = TestBus::new(factory, config).await;
    let mut slow = bus.live(&["a"]).await;
    let mut fast = bus.live(&["a"]).await;
    let events = bus.publish_numbered_seen(&mut fast, "a", 100).await;

    let (prefix, last_delivered) = read_until_lagged(&mut slow).await;
    assert_eq!(ids(&prefix), ids(&events[..prefix.len()]), "queued events");
    assert_eq!(last_delivered, prefix.last().map(|event| event.id.clone()));
    let after = last_delivered.unwrap_or_else(|| slow.start().clone());
    assert_eq!(
        next_notice(&mut slow).await,
        Notice::Gap {
            topic: topic("a"),
            after,
            lost_through: events[89].id.clone(),
        }
    );
    expect_events(&mut slow, &events[90..]).await;
    bus.expect_nothing_before_marker(&mut slow, "a").await;
}

/// Reads events up to the `Lagged` notice; returns them and the notice's `last_delivered`.
async fn read_until_lagged(subscription: &mut Subscription) -> (Vec<Arc<Event>>, Option<EventId>) {
    let mut prefix = Vec::new();
    loop {
        match next_delivery(subscription).await {
            Delivery::Event(event) => prefix.push(event),
            Delivery::Notice(Notice::Lagged { last_delivered }) => return (prefix, last_delivered),
            Delivery::Notice(other) => panic!("expected Lagged, got {other:?}"),
        }
    }
}

/// `topic_stats` lists each published topic once, with what it published and keeps.
///
/// `/topics` and the metrics are built from it; on a broker bus it describes this node's view
/// of the shared log.
pub async fn topic_stats_lists_published_topics(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut witness = bus.live(&["x", "y"]).await;
    bus.publish_seen(&mut witness, "x", "1").await;
    let x_last = bus.publish_seen(&mut witness, "x", "2").await;
    let y_last = bus.publish_seen(&mut witness, "y", "1").await;
    drop(witness);
    for (name, published, last) in [("x", 2, &x_last), ("y", 1, &y_last)] {
        let stats = bus.stats_of(name).await;
        assert_eq!(stats.published, published, "{stats:?}");
        assert_eq!(stats.history.len, published as usize, "{stats:?}");
        assert_eq!(stats.history.last_seq, Some(last.id.seq), "{stats:?}");
    }
}

/// Once the bus tracks `max_topics` topics and every one of them has a subscriber,
/// publishing to or subscribing to another topic is refused with `TopicLimit`, and nothing is
/// stored for it; known topics keep working.
///
/// Every topic holds up to `history.max_events` events, so without the limit a client making
/// up topic names could grow the gateway's memory without bound.
pub async fn topic_limit_refuses_new_topics(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default().max_topics(2)).await;
    let mut witness = bus.live(&["a", "b"]).await;
    bus.publish_seen(&mut witness, "a", "x").await;
    bus.publish_seen(&mut witness, "b", "x").await;
    let refused = bus
        .try_publish("c", ContentType::Text, Bytes::from_static(b"x"))
        .await;
    assert!(
        matches!(refused, Err(PublishError::TopicLimit { max: 2 })),
        "publishing to a third topic: expected TopicLimit, got {refused:?}"
    );
    let refused = bus
        .try_subscribe(SubscribeRequest::live(topics(&["d"])))
        .await;
    assert!(
        matches!(refused, Err(SubscribeError::TopicLimit { max: 2 })),
        "subscribing to a third topic: expected TopicLimit, got {refused:?}"
    );
    let mut known = bus.live(&["a"]).await;
    bus.expect_nothing_before_marker(&mut known, "a").await;
    let stats = bus.stats().await;
    assert!(
        stats.iter().all(|s| s.topic.as_str() != "c"),
        "a refused topic is not tracked: {stats:?}"
    );
}

/// With the table full, a new topic takes the place of the least recently used topic that has
/// no subscriber; that topic's history is dropped, and a subscriber resuming on it from before
/// the loss is told `Gap` (through the newest event it had), not left to miss it silently.
///
/// Without it, one client publishing to made-up topics would fill the table for good and
/// lock every other client out of creating one.
pub async fn idle_topic_is_reclaimed_and_a_resume_on_it_reports_a_gap(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default().max_topics(2)).await;
    let mut witness = bus.live(&["a", "b"]).await;
    let a = bus.publish_seen(&mut witness, "a", "1").await;
    let a_last = bus.publish_seen(&mut witness, "a", "2").await;
    bus.publish_seen(&mut witness, "b", "1").await;
    // `a` and `b` lose their subscriber; `a` first, so it is the least recently used.
    drop(witness);
    let mut c_witness = bus.live(&["c"]).await;
    let c = bus.publish_seen(&mut c_witness, "c", "1").await;
    let stats = bus.stats().await;
    assert!(
        stats.iter().all(|s| s.topic.as_str() != "a"),
        "`a` made room for `c`: {stats:?}"
    );
    let before_a = EventId::new(a.id.epoch.clone(), a.id.seq - 1);
    let mut resumed = bus.resume(&["a"], &before_a).await;
    assert_eq!(
        next_notice(&mut resumed).await,
        Notice::Gap {
            topic: topic("a"),
            after: before_a.clone(),
            lost_through: a_last.id.clone(),
        },
        "a resume on a reclaimed topic reports what it lost"
    );
    bus.expect_nothing_before_marker(&mut resumed, "a").await;
    // A resume from after the loss has nothing to report.
    let mut caught_up = bus.resume(&["c"], &c.id).await;
    bus.expect_nothing_before_marker(&mut caught_up, "c").await;
}

/// Over `history_memory` bytes of history in total, the oldest events of the whole bus are
/// evicted first, whatever their topic, and a resume from before them reports a `Gap` per
/// topic, exactly as a topic's own bounds do; the history kept never exceeds the bound.
///
/// Per-topic bounds alone let `max_topics × history bytes` add up to tens of GiB.
pub async fn history_memory_evicts_the_oldest_events_of_all_topics(factory: &dyn BusFactory) {
    let payload = "x".repeat(100);
    let probe = Event::new(
        topic("a"),
        EventId::new(Epoch::new("probe").expect("valid"), 1),
        0,
        ContentType::Text,
        Bytes::from(payload.clone()),
    );
    let per_event = probe.accounted_size();
    let config = MemoryBusConfig::default().history_memory(per_event * 4);
    let bus = TestBus::new(factory, config).await;
    let names = ["a", "b", "c"];
    let mut witness = bus.live(&names).await;
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(bus.publish_seen(&mut witness, names[i % 3], &payload).await);
        if let Some(usage) = bus.bus.history_usage() {
            assert!(
                usage.bytes <= per_event * 4,
                "history over its bound after {} publishes: {usage:?}",
                i + 1
            );
        }
    }
    let mut resumed = bus.resume(&names, &events[0].id).await;
    // The four newest events (6..=9) are kept; each topic lost its older ones.
    for (name, lost) in [("a", 3), ("b", 4), ("c", 5)] {
        assert_eq!(
            next_notice(&mut resumed).await,
            Notice::Gap {
                topic: topic(name),
                after: events[0].id.clone(),
                lost_through: events[lost].id.clone(),
            }
        );
    }
    expect_events(&mut resumed, &events[6..]).await;
    bus.expect_nothing_before_marker(&mut resumed, "a").await;
}

/// `health()` names the backend, reports it available, and reports the epoch the bus's ids
/// carry: `/healthz` shows it, and clients compare it with their cursor's epoch.
pub async fn health_reports_available_with_the_ids_epoch(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let health = bus.bus.health();
    assert!(health.available, "a fresh bus is available: {health:?}");
    assert!(!health.backend.is_empty(), "the backend has a name");
    let event = bus.publish("a", "x").await;
    let health = bus.bus.health();
    assert!(health.available, "{health:?}");
    assert_eq!(health.epoch, event.id.epoch);
}

/// After `close`, publishes and subscribes fail with `Closed`, open subscriptions end once
/// they have delivered what they hold, and `health()` reports the bus unavailable.
///
/// Graceful shutdown relies on it: transports see their subscriptions end and close their
/// connections cleanly instead of waiting forever.
pub async fn close_refuses_publishes_and_ends_subscriptions(factory: &dyn BusFactory) {
    let bus = TestBus::new(factory, MemoryBusConfig::default()).await;
    let mut subscription = bus.live(&["a"]).await;
    let event = bus.publish("a", "before close").await;
    expect_events(&mut subscription, &[event]).await;
    bus.bus.close();
    let end = within("waiting for the subscription to end", subscription.next()).await;
    assert!(end.is_none(), "expected the end, got {end:?}");
    assert!(matches!(
        bus.try_publish("a", ContentType::Text, Bytes::from_static(b"x"))
            .await,
        Err(PublishError::Closed)
    ));
    assert!(matches!(
        bus.try_subscribe(SubscribeRequest::live(topics(&["a"])))
            .await,
        Err(SubscribeError::Closed)
    ));
    assert!(!bus.bus.health().available);
}
