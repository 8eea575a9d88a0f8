//! [`Rejection`]: everything the gateway refuses, in one shape on every transport.
//!
//! A refusal has a machine code (`topic_budget`, `invalid_payload`, `connection_limit`, …,
//! `docs/PROTOCOL.md` §6), a reason for people, and how the refusal is said on the wire: an
//! HTTP status (with the headers that go with it), or a close code when it ends a WebSocket
//! or WebTransport session. Transports turn it into their own bytes (an HTTP error body, an
//! `error` client message, a close frame); every one of them counts it the same way
//! ([`Rejection::record`]).

use http::{header, HeaderValue, Response, StatusCode};

use crate::error::{IdError, PayloadError, PublishError, SubscribeError, TopicError};
use crate::http_message::{full_body, Body, BodyReadTimeout, BoxError};

/// A refusal: a stable machine `code`, a human `reason`, and how it is said on the wire.
///
/// Built from the code alone ([`Rejection::new`], whose HTTP status follows from the code), or
/// from the error that caused it (`From` a [`TopicError`], [`PublishError`], an
/// `AuthError`, a `PublishRefusal`, …: their modules say how). Its
/// `Display` is `code: reason`, the close reason of a session refused this way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Rejection {
    /// Stable machine-readable code (see `docs/PROTOCOL.md` §6).
    pub code: &'static str,
    /// Human-readable explanation.
    pub reason: String,
    status: StatusCode,
    close_code: Option<u16>,
    allow: Option<&'static str>,
    retry_after_secs: Option<u64>,
    challenge: Option<&'static str>,
    close_connection: bool,
}

impl Rejection {
    /// A rejection with `code` and `reason`, answered over HTTP with the status its code
    /// stands for ([`Rejection::status_of`]).
    pub fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            status: Self::status_of(code),
            close_code: None,
            allow: None,
            retry_after_secs: None,
            challenge: None,
            close_connection: false,
        }
    }

    /// The HTTP status of the codes every transport shares; `400` for the rest.
    pub fn status_of(code: &str) -> StatusCode {
        match code {
            "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "topic_limit" | "rate_limited" | "topic_budget" | "too_many_connections" => {
                StatusCode::TOO_MANY_REQUESTS
            }
            "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
            "not_found" => StatusCode::NOT_FOUND,
            "unauthorized" => StatusCode::UNAUTHORIZED,
            "forbidden" => StatusCode::FORBIDDEN,
            "bus_unavailable" | "shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// `404` `not_found`.
    pub fn not_found(path: &str) -> Self {
        Self::new("not_found", format!("no route for {path}"))
    }

    /// `405` `method_not_allowed`, with the `Allow` header.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut rejection = Self::new("method_not_allowed", format!("use {allow}"));
        rejection.allow = Some(allow);
        rejection
    }

    /// The answer to a request whose body could not be read: `408` `body_timeout` when it did
    /// not arrive in time ([`BodyReadTimeout`]), with `connection: close` since the rest of it
    /// may still come and would be read as the next request; else `400` `body_read_failed`.
    pub fn body_read(error: &BoxError) -> Self {
        match error.downcast_ref::<BodyReadTimeout>() {
            Some(timeout) => Self::new("body_timeout", timeout.to_string())
                .with_status(StatusCode::REQUEST_TIMEOUT)
                .close_connection(),
            None => Self::new(
                "body_read_failed",
                format!("could not read the request body: {error}"),
            ),
        }
    }

    /// A refusal that ends a WebSocket or WebTransport session with `close_code`.
    pub fn closing(code: &'static str, close_code: u16, reason: impl Into<String>) -> Self {
        let mut rejection = Self::new(code, reason);
        rejection.close_code = Some(close_code);
        rejection
    }

    /// Answered over HTTP with `status` instead of the one its code stands for.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds `Retry-After: <seconds>` to the HTTP answer.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    /// Adds `WWW-Authenticate: <challenge>` to the HTTP answer (RFC 6750 §3).
    #[must_use]
    pub fn challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Adds `Connection: close` to the HTTP answer: what is left of the request must not be
    /// read as the next one.
    #[must_use]
    pub fn close_connection(mut self) -> Self {
        self.close_connection = true;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The close code, for a refusal that ends a session ([`Rejection::closing`]).
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Seconds until the client may try again, when the refusal says.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// Counts the refusal (`streamgate_rejections_total{reason=code}`), logs it at WARN at most
    /// once per code every 10 s ([`crate::record_rejection`]), and each one at TRACE to the
    /// target `streamgate::rejection` (`RUST_LOG=streamgate::rejection=trace`).
    pub fn record(&self) {
        crate::telemetry::record_rejection(self.code, &self.reason);
        tracing::trace!(
            target: "streamgate::rejection",
            status = self.status.as_u16(),
            close_code = self.close_code,
            code = self.code,
            reason = %self.reason,
            "rejected"
        );
    }

    /// The HTTP answer of `docs/PROTOCOL.md` §6, `{"error":{"code":…,"reason":…}}`, recorded
    /// ([`Rejection::record`]).
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({"error": {"code": self.code, "reason": self.reason}});
        self.into_response_with(body.to_string().into())
    }

    /// The HTTP answer (status and headers) with `body` as its JSON body, recorded
    /// ([`Rejection::record`]): for transports whose refusals are client messages.
    pub fn into_response_with(self, body: bytes::Bytes) -> Response<Body> {
        self.record();
        let mut response = Response::new(full_body(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if self.close_connection {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// [`Rejection::into_response`] of a copy.
    pub fn to_response(&self) -> Response<Body> {
        self.clone().into_response()
    }
}

impl From<TopicError> for Rejection {
    fn from(e: TopicError) -> Self {
        Self::new("bad_topic", e.to_string())
    }
}

impl From<IdError> for Rejection {
    fn from(e: IdError) -> Self {
        Self::new("bad_cursor", e.to_string())
    }
}

impl From<PayloadError> for Rejection {
    fn from(e: PayloadError) -> Self {
        Self::new("invalid_payload", e.to_string())
    }
}

impl From<&SubscribeError> for Rejection {
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

impl From<&PublishError> for Rejection {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn http_answer_keeps_the_documented_shape() {
        let response = Rejection::new("topic_budget", "slow down")
            .retry_after(3)
            .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_text(response).await,
            r#"{"error":{"code":"topic_budget","reason":"slow down"}}"#
        );
    }

    #[test]
    fn headers_follow_the_refusal() {
        let response = Rejection::method_not_allowed("GET, POST").into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
        assert!(response.headers().get(header::CONNECTION).is_none());

        let timeout: BoxError = Box::new(BodyReadTimeout {
            timeout: std::time::Duration::from_secs(1),
        });
        let response = Rejection::body_read(&timeout).into_response();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");

        let other: BoxError = "reset".into();
        let rejection = Rejection::body_read(&other);
        assert_eq!(
            (rejection.code, rejection.status()),
            ("body_read_failed", StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn status_follows_the_code_unless_given() {
        assert_eq!(
            Rejection::new("payload_too_large", "").status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(Rejection::not_found("/x").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            Rejection::new("csrf", "")
                .with_status(StatusCode::FORBIDDEN)
                .status(),
            StatusCode::FORBIDDEN
        );
        let closing = Rejection::closing("ws_policy_violation", 1008, "too fast");
        assert_eq!(closing.close_code(), Some(1008));
        assert_eq!(closing.to_string(), "ws_policy_violation: too fast");
    }
}
