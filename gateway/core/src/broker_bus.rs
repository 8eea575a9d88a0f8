//! [`BrokerBus`]: an [`EventBus`] whose log lives in an external [`Broker`], mirrored locally.
//!
//! # How a node stays in step
//!
//! A background task, the *follower*, opens [`Broker::follow`] from the newest id the mirror
//! holds and ingests every event into the local [`MemoryBus`]. The first feed primes the
//! mirror with the whole retained log, so from then on a resume is served locally, and a
//! client may reconnect to any node: every node holds the same ids and the same history.
//!
//! When the feed fails the follower marks the bus unavailable, tells every subscriber
//! ([`Notice::Unavailable`]; new subscriptions are refused meanwhile), and reconnects with jittered exponential backoff. The next feed
//! starts after the mirror's head, so the events appended meanwhile (by nodes that could
//! still reach the broker, or after it came back) are delivered in order with no gap, after
//! a [`Notice::Available`]. Subscriptions stay open throughout.
//!
//! Publishes go straight to the broker and succeed only once it acknowledged; while it is
//! unreachable they fail with [`PublishError::Unavailable`] (HTTP 503), so nothing is
//! accepted and then dropped.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError, Feed};
use crate::bus::{BoxFuture, BusHealth, EventBus, Notice, SubscribeRequest, Subscription};
use crate::bus::{HistoryUsage, TopicStats};
use crate::error::{PublishError, SubscribeError};
use crate::event::{unix_micros_now, ContentType, Event, Topic};
use crate::memory::{MemoryBus, MemoryBusConfig};

/// Settings of a [`BrokerBus`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerBusConfig {
    /// The local mirror: history bounds (which should match the broker's per-topic bound),
    /// subscriber queues, payload and topic limits.
    pub mirror: MemoryBusConfig,
    /// First reconnection delay. Default: 100 ms.
    pub backoff_initial: Duration,
    /// Longest reconnection delay. Default: 5 s.
    pub backoff_max: Duration,
    /// How long a resume with an id this node has not seen yet waits for the mirror to
    /// catch up (the id was handed out by a node a little ahead). Default: 5 s.
    pub resume_wait: Duration,
}

impl Default for BrokerBusConfig {
    fn default() -> Self {
        Self {
            mirror: MemoryBusConfig::default(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            resume_wait: Duration::from_secs(5),
        }
    }
}

impl BrokerBusConfig {
    /// Settings around the given mirror settings, other values default.
    pub fn new(mirror: MemoryBusConfig) -> Self {
        Self {
            mirror,
            ..Self::default()
        }
    }

    /// Sets the reconnection backoff bounds.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// Sets [`BrokerBusConfig::resume_wait`].
    pub fn resume_wait(mut self, wait: Duration) -> Self {
        self.resume_wait = wait;
        self
    }
}

/// The bus of one node among many that share a broker. Cheap to clone.
#[derive(Clone)]
pub struct BrokerBus {
    shared: Arc<Shared>,
}

struct Shared {
    broker: Arc<dyn Broker>,
    mirror: MemoryBus,
    config: BrokerBusConfig,
    link: Mutex<Link>,
    /// The mirror's head sequence, for resumes that wait for it to catch up.
    head: watch::Sender<u64>,
    stop: CancellationToken,
}

/// The follower's view of the broker connection.
struct Link {
    /// At least one attempt to follow the broker has finished.
    attempted: bool,
    /// The mirror has been primed from the broker at least once: its epoch and history are
    /// the log's. Before that the node can serve nothing.
    primed: bool,
    connected: bool,
    closed: bool,
    /// The last failure, while disconnected.
    error: Option<String>,
}

fn lock(mutex: &Mutex<Link>) -> MutexGuard<'_, Link> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BrokerBus {
    /// Starts following `broker` in a background task on the current tokio runtime and
    /// returns at once: until the first connection succeeds, [`EventBus::health`] says the
    /// bus is unavailable and publishes and subscribes fail with `Unavailable`. Use
    /// [`BrokerBus::wait_ready`] to wait for it.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(broker: Arc<dyn Broker>, config: BrokerBusConfig) -> Self {
        let (head, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            broker,
            mirror: MemoryBus::new(config.mirror.clone()),
            config,
            link: Mutex::new(Link {
                attempted: false,
                primed: false,
                connected: false,
                closed: false,
                error: None,
            }),
            head,
            stop: CancellationToken::new(),
        });
        tokio::spawn(follow(Arc::clone(&shared)));
        Self { shared }
    }

    /// Waits until the first attempt to reach the broker has succeeded or failed (or the bus
    /// was closed). Returns whether the bus is connected.
    pub async fn wait_ready(&self) -> bool {
        self.wait_for_link(|link| link.attempted).await
    }

    /// Waits until the bus is connected to its broker. Returns `false` if the bus was closed
    /// first.
    pub async fn wait_connected(&self) -> bool {
        self.wait_for_link(|link| link.connected).await
    }

    async fn wait_for_link(&self, done: impl Fn(&Link) -> bool) -> bool {
        // Every change of the link is also signalled on the head channel.
        let mut changes = self.shared.head.subscribe();
        loop {
            {
                let link = lock(&self.shared.link);
                if link.closed {
                    return false;
                }
                if done(&link) {
                    return link.connected;
                }
            }
            if changes.changed().await.is_err() {
                return false;
            }
        }
    }

    /// The local mirror of the log.
    pub fn mirror(&self) -> &MemoryBus {
        &self.shared.mirror
    }

    fn unavailable(&self) -> Option<String> {
        let link = lock(&self.shared.link);
        if link.connected {
            return None;
        }
        Some(format!(
            "{} at {}: {}",
            self.shared.broker.name(),
            self.shared.broker.endpoint(),
            link.error.as_deref().unwrap_or("not connected yet")
        ))
    }

    async fn publish_to_broker(
        &self,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> Result<Arc<Event>, PublishError> {
        let limits = &self.shared.config.mirror;
        self.shared.mirror.check_payload(content_type, &payload)?;
        {
            let link = lock(&self.shared.link);
            if link.closed {
                return Err(PublishError::Closed);
            }
        }
        if let Some(reason) = self.unavailable() {
            return Err(PublishError::Unavailable(reason));
        }
        if !self.shared.mirror.has_room_for(&topic) {
            return Err(PublishError::TopicLimit {
                max: limits.max_topics,
            });
        }
        let timestamp_us = unix_micros_now();
        let id = self
            .shared
            .broker
            .append(&topic, content_type, payload.clone(), timestamp_us)
            .await
            .map_err(|error| {
                PublishError::Unavailable(format!(
                    "{} at {}: {error}",
                    self.shared.broker.name(),
                    self.shared.broker.endpoint()
                ))
            })?;
        Ok(Arc::new(Event::new(
            topic,
            id,
            timestamp_us,
            content_type,
            payload,
        )))
    }

    async fn subscribe_to_mirror(
        &self,
        request: SubscribeRequest,
    ) -> Result<Subscription, SubscribeError> {
        if lock(&self.shared.link).closed {
            return Err(SubscribeError::Closed);
        }
        // Refused rather than served quietly from the mirror: the client hears why (HTTP
        // 503) and retries with backoff, where a long-polling client handed a notice at once
        // would come straight back, again and again, for as long as the broker is away.
        if let Some(reason) = self.unavailable() {
            return Err(SubscribeError::Unavailable(reason));
        }
        if let Some(since) = &request.since {
            // Another node may have handed out this id before the event reached this one.
            let mut head = self.shared.head.subscribe();
            let epoch = self.shared.mirror.epoch();
            if since.epoch == epoch {
                let wait = head.wait_for(|seq| *seq >= since.seq);
                let _ = tokio::time::timeout(self.shared.config.resume_wait, wait).await;
            }
        }
        self.shared.mirror.subscribe_now(request)
    }
}

/// The follower task: keeps the mirror in step with the log until the bus closes.
async fn follow(shared: Arc<Shared>) {
    let mut backoff = shared.config.backoff_initial;
    let mut down_since_notice = false;
    loop {
        let after = {
            let link = lock(&shared.link);
            link.primed.then(|| shared.mirror.head())
        };
        let opened = tokio::select! {
            () = shared.stop.cancelled() => return,
            opened = shared.broker.follow(after) => opened,
        };
        let error = match opened {
            Ok(feed) => {
                backoff = shared.config.backoff_initial;
                let error = run_feed(&shared, feed, &mut down_since_notice).await;
                if shared.stop.is_cancelled() {
                    return;
                }
                error
            }
            Err(error) => error,
        };
        let was_connected = {
            let mut link = lock(&shared.link);
            let was = link.connected;
            link.attempted = true;
            link.connected = false;
            link.error = Some(error.to_string());
            was
        };
        let (broker, endpoint) = (shared.broker.name(), shared.broker.endpoint());
        let retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        if was_connected {
            tracing::error!(broker, %endpoint, %error, "lost the broker: publishes and new subscriptions answer 503 until it is back");
        } else if !lock(&shared.link).primed && backoff == shared.config.backoff_initial {
            tracing::error!(broker, %endpoint, %error, "cannot reach the broker; retrying with backoff, /healthz answers 503 until connected");
        } else {
            tracing::warn!(broker, %endpoint, %error, retry_in_ms, "cannot reach the broker");
        }
        if !down_since_notice && lock(&shared.link).primed {
            shared.mirror.broadcast_notice(&Notice::Unavailable {
                reason: format!("{} unreachable: {error}", shared.broker.name()),
            });
            down_since_notice = true;
        }
        // Wakes `wait_ready` callers so they learn the first attempt failed.
        shared.head.send_modify(|_| {});
        let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep(jittered) => {}
        }
        backoff = (backoff * 2).min(shared.config.backoff_max);
    }
}

/// Applies one feed to the mirror until it fails; returns why it ended.
async fn run_feed(shared: &Shared, feed: Feed, down_since_notice: &mut bool) -> BrokerError {
    let Feed {
        epoch,
        evicted,
        mut events,
        ..
    } = feed;
    shared.mirror.reset_epoch(epoch);
    for (topic, seq) in &evicted {
        shared.mirror.mark_evicted(topic, *seq);
    }
    {
        let mut link = lock(&shared.link);
        link.attempted = true;
        link.primed = true;
        link.connected = true;
        link.error = None;
    }
    tracing::info!(broker = shared.broker.name(), endpoint = %shared.broker.endpoint(), epoch = %shared.mirror.epoch(), head = shared.mirror.head().seq, "following the broker");
    if *down_since_notice {
        shared.mirror.broadcast_notice(&Notice::Available);
        *down_since_notice = false;
    }
    shared.head.send_replace(shared.mirror.head().seq);
    loop {
        let next = tokio::select! {
            () = shared.stop.cancelled() => return BrokerError::Unavailable("bus closed".to_owned()),
            next = futures_util_next(&mut events) => next,
        };
        match next {
            Some(Ok(event)) => {
                let seq = event.id.seq;
                if shared.mirror.ingest(event) {
                    shared.head.send_replace(seq);
                }
            }
            Some(Err(error)) => return error,
            None => return BrokerError::Unavailable("the broker feed ended".to_owned()),
        }
    }
}

/// `StreamExt::next` without depending on futures-util for one call.
fn futures_util_next<S: Stream + Unpin>(
    stream: &mut S,
) -> impl std::future::Future<Output = Option<S::Item>> + '_ {
    std::future::poll_fn(move |cx| Pin::new(&mut *stream).poll_next(cx))
}

impl fmt::Debug for BrokerBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerBus")
            .field("broker", &self.shared.broker)
            .field("mirror", &self.shared.mirror)
            .finish_non_exhaustive()
    }
}

impl EventBus for BrokerBus {
    fn publish(
        &self,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<Arc<Event>, PublishError>> {
        Box::pin(self.publish_to_broker(topic, content_type, payload))
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        Box::pin(self.subscribe_to_mirror(request))
    }

    fn health(&self) -> BusHealth {
        let link = lock(&self.shared.link);
        let mut health = BusHealth::new(
            self.shared.broker.name(),
            link.connected && !link.closed,
            self.shared.mirror.epoch(),
        );
        health.detail = Some(if link.closed {
            format!("{}: closed", self.shared.broker.endpoint())
        } else if link.connected {
            format!("{}: connected", self.shared.broker.endpoint())
        } else {
            format!(
                "{}: {}",
                self.shared.broker.endpoint(),
                link.error.as_deref().unwrap_or("connecting")
            )
        });
        health
    }

    fn topic_stats(&self) -> BoxFuture<'_, Vec<TopicStats>> {
        self.shared.mirror.topic_stats()
    }

    fn has_topic(&self, topic: &Topic) -> bool {
        self.shared.mirror.has_topic(topic)
    }

    fn history_usage(&self) -> Option<HistoryUsage> {
        Some(self.shared.mirror.history_usage())
    }

    fn close(&self) {
        lock(&self.shared.link).closed = true;
        self.shared.stop.cancel();
        self.shared.mirror.close();
        self.shared.head.send_modify(|_| {});
    }
}
