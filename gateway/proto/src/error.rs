//! The one error type of client input: a stable code and a human reason.

use streamgate_core::{IdError, PayloadError, PublishError, SubscribeError, TopicError};

/// Client input the gateway refuses. Always the client's fault, never fatal to the gateway:
/// HTTP transports answer 400 (or the status of [`ProtocolError::http_status`]), bidirectional
/// transports send an `error` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ProtocolError {
    /// Stable machine-readable code (see `docs/PROTOCOL.md` §6).
    pub code: &'static str,
    /// Human-readable explanation.
    pub reason: String,
}

impl ProtocolError {
    /// An error with `code` and `reason`.
    pub fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self.code {
            "payload_too_large" => 413,
            "topic_limit" => 429,
            "bus_unavailable" | "shutting_down" => 503,
            _ => 400,
        }
    }
}

impl From<TopicError> for ProtocolError {
    fn from(e: TopicError) -> Self {
        Self::new("bad_topic", e.to_string())
    }
}

impl From<IdError> for ProtocolError {
    fn from(e: IdError) -> Self {
        Self::new("bad_cursor", e.to_string())
    }
}

impl From<PayloadError> for ProtocolError {
    fn from(e: PayloadError) -> Self {
        Self::new("invalid_payload", e.to_string())
    }
}

impl From<&SubscribeError> for ProtocolError {
    fn from(e: &SubscribeError) -> Self {
        let code = match e {
            SubscribeError::NoTopics => "no_topics",
            SubscribeError::TooManyTopics { .. } => "too_many_topics",
            SubscribeError::DuplicateTopic(_) => "duplicate_topic",
            SubscribeError::CursorAhead { .. } => "cursor_ahead",
            SubscribeError::TopicLimit { .. } => "topic_limit",
            SubscribeError::Closed => "shutting_down",
            _ => "bus_unavailable",
        };
        Self::new(code, e.to_string())
    }
}

impl From<&PublishError> for ProtocolError {
    fn from(e: &PublishError) -> Self {
        let code = match e {
            PublishError::TooLarge { .. } => "payload_too_large",
            PublishError::InvalidPayload(_) => "invalid_payload",
            PublishError::TopicLimit { .. } => "topic_limit",
            PublishError::Closed => "shutting_down",
            _ => "bus_unavailable",
        };
        Self::new(code, e.to_string())
    }
}
