//! The [`Broker`] trait: what an external broker (Redis, NATS) must provide so that many
//! gateway nodes share one stream of events.
//!
//! # The design: a shared log, mirrored on every node
//!
//! The broker holds the *shared log*: it assigns every event its id (one epoch, one
//! sequence counter for the whole log, so ids are the same on every node), keeps each
//! topic's bounded history, and carries every event to every node. A node never assigns an
//! id itself.
//!
//! Each node runs a [`BrokerBus`](crate::BrokerBus): a local [`MemoryBus`](crate::MemoryBus)
//! used as a *mirror* of the log, fed by [`Broker::follow`]. Local subscribers attach to the
//! mirror exactly as they attach to the embedded bus, so fan-out to a node's own clients,
//! slow-subscriber handling and resume are the very same code. A publish goes to the broker
//! ([`Broker::append`]) and succeeds only once the broker stored the event; the event then
//! reaches every node, the publishing one included, through its feed.
//!
//! A backend therefore only has to do two things well: append atomically (id assignment and
//! storage in one step), and feed the log in sequence order, catching up after a
//! reconnection from the last sequence the node holds.

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;

use crate::bus::BoxFuture;
use crate::event::{ContentType, Epoch, Event, EventId, Topic};

/// A broker connection failed or refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker cannot be reached or the connection was lost. Retryable: the caller backs
    /// off and tries again; publishes fail with HTTP 503 meanwhile.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answered but refused (wrong credentials, a script or stream it cannot
    /// create, an unexpected reply). Also retried, but logged as an error, not a blip.
    #[error("broker refused: {0}")]
    Refused(String),
}

/// A stream of events read from the shared log.
pub type FeedEvents = Pin<Box<dyn Stream<Item = Result<Event, BrokerError>> + Send>>;

/// What [`Broker::follow`] returns: the log's state when the feed opened, then its events.
#[non_exhaustive]
pub struct Feed {
    /// The log's current epoch. When it differs from the epoch of the `after` id passed to
    /// `follow`, the log was reset (for example a broker that keeps nothing on disk
    /// restarted) and the feed starts from the oldest retained event.
    pub epoch: Epoch,
    /// The newest sequence the log had assigned when the feed opened.
    pub head_seq: u64,
    /// Per topic, the highest sequence the broker has trimmed from that topic's history, for
    /// topics where anything was trimmed. A backend that cannot tell exactly reports a value
    /// at or above the truth (it may announce a loss that did not happen, never hide one).
    pub evicted: Vec<(Topic, u64)>,
    /// Every retained event with a sequence above `after` (every retained event when `after`
    /// is `None` or from another epoch), then each new event as it is appended, in strictly
    /// increasing sequence order, all topics interleaved. Events trimmed before they could be
    /// read are simply absent (they are covered by `evicted`). The stream yields an error and
    /// ends when the connection is lost or the log's epoch changes.
    pub events: FeedEvents,
}

impl Feed {
    /// Assembles a feed.
    pub fn new(
        epoch: Epoch,
        head_seq: u64,
        evicted: Vec<(Topic, u64)>,
        events: FeedEvents,
    ) -> Self {
        Self {
            epoch,
            head_seq,
            evicted,
            events,
        }
    }
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("epoch", &self.epoch)
            .field("head_seq", &self.head_seq)
            .field("evicted", &self.evicted)
            .finish_non_exhaustive()
    }
}

/// A shared log held by an external broker. See the [module documentation](self).
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Backend name for `/healthz` and logs: `redis`, `nats`.
    fn name(&self) -> &'static str;

    /// Where the broker is, for `/healthz` and logs, with any password removed.
    fn endpoint(&self) -> String;

    /// Appends one event to the log: assigns the next sequence of the current epoch and
    /// stores the event in its topic's history (trimming that history to its bound), as one
    /// atomic step, then makes it visible to every node's feed.
    ///
    /// Resolves `Ok` only once the broker has acknowledged the event; on `Err` the caller
    /// reports failure, so the event may or may not have been stored but nobody was told it
    /// was (a retry may then store it twice, under two ids).
    ///
    /// # Errors
    /// [`BrokerError`] when the broker is unreachable or refuses.
    fn append(
        &self,
        topic: &Topic,
        content_type: ContentType,
        payload: Bytes,
        timestamp_us: u64,
    ) -> BoxFuture<'_, Result<EventId, BrokerError>>;

    /// Opens a feed of the log after `after` (see [`Feed`]).
    ///
    /// # Errors
    /// [`BrokerError`] when the broker is unreachable or refuses.
    fn follow(&self, after: Option<EventId>) -> BoxFuture<'_, Result<Feed, BrokerError>>;
}
