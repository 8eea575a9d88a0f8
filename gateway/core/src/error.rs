//! Errors at the bus boundary, one enum per operation.

use crate::event::{EventId, Topic};

/// A topic name was rejected. Caller error: report it to the client (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than allowed.
    #[error("topic name is {len} bytes, the limit is {max}")]
    TooLong {
        /// Length of the rejected name.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name has a character outside `[A-Za-z0-9_.-]`.
    #[error("topic name has {0:?}; allowed are ASCII letters, digits, '_', '-' and '.'")]
    InvalidChar(char),
}

/// An event id (`epoch:seq`) could not be parsed. Caller error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("event id is empty")]
    Empty,
    /// There is no `:` between epoch and sequence.
    #[error("event id must be written epoch:seq")]
    MissingSeparator,
    /// The epoch is empty, too long or not alphanumeric.
    #[error("event id epoch must be 1 to 32 ASCII letters or digits")]
    BadEpoch,
    /// The sequence is not a decimal u64.
    #[error("event id sequence must be a decimal number below 2^64")]
    BadSeq,
}

/// A publish failed; nothing was stored or delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The payload is larger than the bus accepts. Caller error (HTTP 413).
    #[error("payload is {size} bytes, the limit is {max}")]
    TooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The payload does not match its content type. Caller error (HTTP 400).
    #[error(transparent)]
    InvalidPayload(#[from] PayloadError),
    /// Publishing would create a topic beyond the bus's topic limit. Caller error (HTTP 429).
    #[error("the bus already tracks its limit of {max} topics")]
    TopicLimit {
        /// The limit.
        max: usize,
    },
    /// The bus is shutting down. Not retryable on this node.
    #[error("the bus is closed")]
    Closed,
    /// The backend is unreachable. Retryable (HTTP 503).
    #[error("bus backend unavailable: {0}")]
    Unavailable(String),
}

/// A payload does not match its declared content type. Caller error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// A `text` or `json` payload is not UTF-8.
    #[error("payload is not valid UTF-8 (byte {valid_up_to} starts an invalid sequence)")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A `json` payload is not one I-JSON value (RFC 7493, with a nesting limit).
    #[error("payload is not I-JSON: {0}")]
    NotJson(#[from] crate::json::JsonError),
}

/// A subscription could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// No topic was named. Caller error (HTTP 400).
    #[error("subscribe to at least one topic")]
    NoTopics,
    /// Too many topics in one subscription. Caller error (HTTP 400).
    #[error("{count} topics requested, the limit is {max}")]
    TooManyTopics {
        /// Topics requested.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The same topic was named twice. Caller error (HTTP 400).
    #[error("topic {0} is named twice")]
    DuplicateTopic(Topic),
    /// The resume id is ahead of everything this epoch has published. Caller error (HTTP 400).
    #[error("resume id {since} is ahead of the newest id {head_seq} of its epoch")]
    CursorAhead {
        /// The id the client sent.
        since: EventId,
        /// The newest sequence the bus has assigned.
        head_seq: u64,
    },
    /// Subscribing would create topics beyond the bus's topic limit. Caller error (HTTP 429).
    #[error("the bus already tracks its limit of {max} topics")]
    TopicLimit {
        /// The limit.
        max: usize,
    },
    /// The bus is shutting down.
    #[error("the bus is closed")]
    Closed,
    /// The backend is unreachable. Retryable (HTTP 503).
    #[error("bus backend unavailable: {0}")]
    Unavailable(String),
}
