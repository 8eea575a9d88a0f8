//! The [`EventBus`] trait: what every bus backend (memory, Redis, NATS) provides.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::error::{PublishError, SubscribeError};
use crate::event::{ContentType, Epoch, Event, EventId, Topic};
use crate::history::HistoryWindow;

/// Summary of one topic, for `/topics` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic.
    pub topic: Topic,
    /// What its history holds.
    pub history: HistoryWindow,
    /// Current subscribers.
    pub subscribers: usize,
    /// Events published since the bus started.
    pub published: u64,
}

/// What the bus's retained history costs, and what its bounds have dropped, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryUsage {
    /// Bytes of history kept across all topics (by [`Event::accounted_size`]).
    pub bytes: usize,
    /// `MemoryBusConfig::history_memory`: the bound on `bytes` (0: none).
    pub limit: usize,
    /// Events evicted to keep `bytes` under `limit`, since the bus started.
    pub memory_evictions: u64,
    /// Topics tracked now.
    pub topics: usize,
    /// Topics reclaimed (least recently used without subscribers) to make room for new
    /// ones, since the bus started.
    pub topics_reclaimed: u64,
}

/// A boxed, sendable future, as returned by [`EventBus`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Publish, subscribe and resume: the contract every bus backend fulfils.
///
/// The trait is object safe; the gateway holds an `Arc<dyn EventBus>` chosen by configuration.
pub trait EventBus: Send + Sync + fmt::Debug + 'static {
    /// Validates the payload for its content type, assigns the next id, stores the event in
    /// the topic's history and queues it for every current subscriber of the topic.
    ///
    /// Never waits for subscribers: a full subscriber queue makes that subscriber lag, it
    /// does not slow the publisher.
    ///
    /// # Errors
    /// [`PublishError`]; on error nothing was stored or delivered.
    fn publish(
        &self,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<Arc<Event>, PublishError>>;

    /// Opens a subscription to one or more topics, optionally resuming after an id.
    ///
    /// # Errors
    /// [`SubscribeError`] for an empty or oversized topic list, or a resume id ahead of the
    /// stream.
    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>>;

    /// The backend's state, for `/healthz`.
    fn health(&self) -> BusHealth;

    /// One summary per known topic.
    fn topic_stats(&self) -> BoxFuture<'_, Vec<TopicStats>>;

    /// Whether `topic` exists on this node now, so that publishing to it creates nothing. A
    /// cheap check: the gateway asks it before every publish, to charge the publishing
    /// client's topic-creation budget for new topics only.
    ///
    /// The default says `true` (a backend that cannot tell never charges the budget).
    fn has_topic(&self, topic: &Topic) -> bool {
        let _ = topic;
        true
    }

    /// What retained history costs and what the bus's bounds dropped, for `/metrics`.
    /// Default: `None` (the backend keeps no history of its own).
    fn history_usage(&self) -> Option<HistoryUsage> {
        None
    }

    /// Stops the bus: publishes fail with [`PublishError::Closed`], and every subscription
    /// yields what is already queued for it and then ends.
    fn close(&self);
}

/// What to subscribe to and where to start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeRequest {
    /// Topics, each named once.
    pub topics: Vec<Topic>,
    /// Resume after this id; `None` means live events only.
    pub since: Option<EventId>,
}

impl SubscribeRequest {
    /// Live events of `topics`, from now on.
    pub fn live(topics: Vec<Topic>) -> Self {
        Self {
            topics,
            since: None,
        }
    }

    /// Events of `topics` after `since` (still in history), then live.
    pub fn resume(topics: Vec<Topic>, since: Option<EventId>) -> Self {
        Self { topics, since }
    }
}

/// One item of a [`Subscription`].
#[derive(Clone, Debug)]
pub enum Delivery {
    /// The next event, in id order.
    Event(Arc<Event>),
    /// Something the subscriber must know about what it did not get.
    Notice(Notice),
}

/// Why events are missing from a subscription. Every transport passes these on to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Events of `topic` with ids after `after` and up to `lost_through` were evicted from
    /// history before this subscriber received them. Delivery goes on with the next event
    /// still kept.
    Gap {
        /// The topic that lost events.
        topic: Topic,
        /// The subscriber's position when the loss was found.
        after: EventId,
        /// The highest evicted id of the topic.
        lost_through: EventId,
    },
    /// The resume id belongs to another epoch (the gateway restarted, or its history was
    /// reset): the subscriber may have missed anything. Delivery restarts with the oldest kept
    /// event of the current epoch.
    Reset {
        /// The id the subscriber sent.
        requested: EventId,
        /// The current epoch.
        epoch: Epoch,
    },
    /// The subscriber's queue overflowed because it read too slowly. The bus detached it and
    /// goes on delivering from history, after `last_delivered`; a [`Notice::Gap`] follows if
    /// history no longer reaches back that far.
    Lagged {
        /// The last event delivered before the overflow, if any.
        last_delivered: Option<EventId>,
    },
    /// The bus lost its broker (see [`BrokerBus`](crate::BrokerBus)): publishes fail and no
    /// new events arrive until [`Notice::Available`]. Nothing is lost meanwhile: the
    /// subscription stays open and delivery resumes where it stopped.
    Unavailable {
        /// What went wrong, for people (not for parsing).
        reason: String,
    },
    /// The broker is back; the events published meanwhile follow.
    Available,
}

/// A stream of [`Delivery`] items for one subscriber. Ends when the bus closes.
///
/// Dropping it unsubscribes.
pub struct Subscription {
    topics: Vec<Topic>,
    start: EventId,
    inner: Pin<Box<dyn Stream<Item = Delivery> + Send + Sync>>,
}

impl Subscription {
    /// Wraps a backend's stream that delivers events after `start`.
    pub fn new(
        topics: Vec<Topic>,
        start: EventId,
        inner: impl Stream<Item = Delivery> + Send + Sync + 'static,
    ) -> Self {
        Self {
            topics,
            start,
            inner: Box::pin(inner),
        }
    }

    /// The position the subscription started from: it delivers events after this id (for a
    /// live subscription, the newest id when it opened; after a reset, `epoch:0`). A
    /// stateless client (long polling) that received nothing resumes from here next time.
    pub fn start(&self) -> &EventId {
        &self.start
    }

    /// The topics subscribed to.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// A bus backend's state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusHealth {
    /// Backend name: `memory`, `redis`, `nats`.
    pub backend: &'static str,
    /// Whether publishes can currently succeed.
    pub available: bool,
    /// The current epoch.
    pub epoch: Epoch,
    /// Free-form detail (for example the broker error).
    pub detail: Option<String>,
}

impl BusHealth {
    /// Builds a health report.
    pub fn new(backend: &'static str, available: bool, epoch: Epoch) -> Self {
        Self {
            backend,
            available,
            epoch,
            detail: None,
        }
    }
}
