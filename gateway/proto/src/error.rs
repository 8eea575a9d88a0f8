//! The one error type of client input: a stable code and a human reason.

use http::{Response, StatusCode};
use streamgate_core::{
    error_response, AuthError, Body, IdError, PayloadError, PublishError, PublishRefusal,
    SubscribeError, TopicError,
};

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
    pub fn status(&self) -> StatusCode {
        match self.code {
            "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "topic_limit" | "rate_limited" | "topic_budget" | "too_many_connections" => {
                StatusCode::TOO_MANY_REQUESTS
            }
            "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
            "unauthorized" => StatusCode::UNAUTHORIZED,
            "forbidden" => StatusCode::FORBIDDEN,
            "bus_unavailable" | "shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The HTTP error answer for this error (`docs/PROTOCOL.md` §6).
    pub fn to_response(&self) -> Response<Body> {
        error_response(self.status(), self.code, &self.reason)
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

impl From<&AuthError> for ProtocolError {
    fn from(e: &AuthError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<&PublishRefusal> for ProtocolError {
    fn from(e: &PublishRefusal) -> Self {
        Self::new(e.code, e.reason.clone())
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
