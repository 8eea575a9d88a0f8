//! The shape every HTTP-served transport (WebSocket, SSE, long polling) has.
//!
//! The gateway owns the listener and the router; a transport claims a few paths and turns
//! each request it gets into a response — streaming, or an upgrade whose connection it then
//! drives as a task. It sees the bus only through [`EventBus`], and never another transport.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Authorizer, Grant};
use crate::bus::{BoxFuture, EventBus};

/// Errors a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response body type between the gateway and its transports.
pub type Body = BoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Whether `headers` contain a comma-separated token equal to `token`, case-insensitively,
/// in any instance of header `name` (`Connection: keep-alive, close`, `Upgrade: websocket`).
pub fn header_has_token(headers: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// A whole request body, or `None` as soon as it is over `limit` bytes.
///
/// Frame by frame rather than with `http_body_util::Limited`: inside an `async fn`, rustc
/// cannot prove `Limited`'s conversion of [`BoxError`] for every lifetime, and the caller's
/// future would not be `Send`.
pub async fn read_body_limited(mut body: Body, limit: usize) -> Result<Option<Bytes>, BoxError> {
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if collected.len() + data.len() > limit {
                return Ok(None);
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Some(collected.freeze()))
}

/// The error a request body fails with when it is not complete within the gateway's
/// `server.body_read_timeout` (counted from the end of the request head): a body that never
/// arrives must not hold its connection and its handler forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyReadTimeout {
    /// The time the body had.
    pub timeout: std::time::Duration,
}

impl fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body was not complete within {:?} (server.body_read_timeout)",
            self.timeout
        )
    }
}

impl std::error::Error for BodyReadTimeout {}

/// The answer to a request whose body could not be read: `408` `body_timeout` when it did not
/// arrive in time ([`BodyReadTimeout`]), with `connection: close` since the rest of it may
/// still come and would be read as the next request; else `400` `body_read_failed`.
pub fn body_read_error_response(error: &BoxError) -> Response<Body> {
    if let Some(timeout) = error.downcast_ref::<BodyReadTimeout>() {
        let mut response = error_response(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            &timeout.to_string(),
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    error_response(
        StatusCode::BAD_REQUEST,
        "body_read_failed",
        &format!("could not read the request body: {error}"),
    )
}

/// The HTTP error answer of `docs/PROTOCOL.md` §6, `{"error":{"code":…,"reason":…}}`.
///
/// Every refusal goes through here: it is counted (`streamgate_rejections_total{reason=code}`),
/// logged at WARN at most once per code every 10 s (with how many were suppressed, see
/// [`crate::record_rejection`]), and each one at TRACE to the target
/// `streamgate::rejection` (`RUST_LOG=streamgate::rejection=trace`).
pub fn error_response(status: StatusCode, code: &str, reason: &str) -> Response<Body> {
    crate::telemetry::record_rejection(code, reason);
    tracing::trace!(
        target: "streamgate::rejection",
        status = status.as_u16(),
        code,
        reason,
        "rejected request"
    );
    let body = serde_json::json!({"error": {"code": code, "reason": reason}}).to_string();
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What the gateway hands a transport with each request.
#[derive(Clone, Debug)]
pub struct TransportContext {
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// Cancelled when the gateway starts shutting down: say goodbye in the transport's own
    /// protocol (a WebSocket close 1001, the end of an SSE stream, …).
    pub shutdown: CancellationToken,
    /// Spawn connection tasks that outlive the request here (upgraded sockets), so that
    /// shutdown waits for them.
    pub tasks: TaskTracker,
    /// Token verification when `[auth] enabled`: every subscribe and publish then needs a
    /// [`crate::Grant`] covering its topics. `None`: everything is allowed.
    pub auth: Option<Arc<dyn Authorizer>>,
    /// Per-client publish limits, applied to every publish
    /// ([`TransportContext::admit_publish`]). `None`: no limits.
    pub publish_gate: Option<Arc<dyn crate::PublishGate>>,
}

impl TransportContext {
    /// The grant of the request's token when authentication is on (`Ok(None)` when it is
    /// off), checked against the topics the request subscribes to.
    ///
    /// # Errors
    /// Why it is refused; [`AuthError::to_response`] is the 401/403 answer.
    pub fn authorize_subscribe(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
        topics: &[crate::Topic],
    ) -> Result<Option<Grant>, AuthError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let grant = auth.authenticate(headers, query)?;
        grant.check_subscribe(topics)?;
        Ok(Some(grant))
    }
}

/// Facts about the TCP connection a request came in on, put in the request's extensions by
/// the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// A number unique within this gateway process, for logs.
    pub conn_id: u64,
    /// Whether the connection is TLS: the request's scheme is `https` (not what the request
    /// says, which a client chooses), for same-origin checks.
    pub tls: bool,
}

impl ConnectionInfo {
    /// The scheme requests on this connection came in with: `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// The scheme `request` arrived on: the gateway's [`ConnectionInfo`] when it put one in the
/// extensions; otherwise (a request handed in by an embedder without connection facts) the
/// request is taken at its word, and `http` when it names none.
pub fn request_scheme<B>(request: &Request<B>) -> &str {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .map(ConnectionInfo::scheme)
        .or(request.uri().scheme_str())
        .unwrap_or("http")
}

/// What one accepted connection holds against the gateway's connection limits (its slot
/// under `server.max_connections` and its client IP's under `server.max_connections_per_ip`),
/// put in each request's extensions by the gateway. The slots are freed when the last clone
/// is dropped: the gateway keeps one while it serves the connection, and a transport that
/// takes the connection over (a WebSocket upgrade) keeps one for as long as it drives it, so
/// an upgraded connection stays counted after HTTP is done with it.
///
/// Opaque on purpose: what is held is the gateway's business; a transport only keeps it.
#[derive(Clone)]
pub struct ConnectionLease(Arc<dyn std::any::Any + Send + Sync>);

impl ConnectionLease {
    /// A lease holding `slots` until its last clone is dropped.
    pub fn new(slots: impl std::any::Any + Send + Sync) -> Self {
        Self(Arc::new(slots))
    }
}

impl fmt::Debug for ConnectionLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionLease")
            .field("holders", &Arc::strong_count(&self.0))
            .finish()
    }
}

/// A transport served over the gateway's HTTP listener.
pub trait HttpTransport: Send + Sync + fmt::Debug + 'static {
    /// Short name, for logs and metrics (`ws`, `sse`, `longpoll`).
    fn name(&self) -> &'static str;

    /// Paths this transport serves (exact matches).
    fn paths(&self) -> &'static [&'static str];

    /// Whether a `GET` to this transport holds its connection for long: a stream (SSE) or a
    /// wait (long polling). The gateway serves such requests over HTTP/1.1 on a lean path of
    /// its own, whose idle cost per connection is a fraction of a general HTTP connection's.
    fn long_lived_get(&self) -> bool {
        false
    }

    /// Answers one request to one of [`HttpTransport::paths`]. Never fails: errors are
    /// responses.
    fn handle(
        &self,
        request: Request<Body>,
        context: TransportContext,
    ) -> BoxFuture<'static, Response<Body>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_scheme_trusts_the_connection_over_the_request() {
        let mut request = Request::get("http://example.test/ws").body(()).unwrap();
        assert_eq!(request_scheme(&request), "http");
        request.extensions_mut().insert(ConnectionInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            conn_id: 1,
            tls: true,
        });
        assert_eq!(request_scheme(&request), "https");
        let embedded = Request::get("https://example.test/ws").body(()).unwrap();
        assert_eq!(request_scheme(&embedded), "https");
        let bare = Request::get("/ws").body(()).unwrap();
        assert_eq!(request_scheme(&bare), "http");
    }
}
