//! The shape every HTTP-served transport (WebSocket, SSE, long polling) has.
//!
//! The gateway owns the listener and the router; a transport claims a few paths and turns
//! each request it gets into a response — streaming, or an upgrade whose connection it then
//! drives as a task. It sees the bus only through [`EventBus`], and never another transport.

use std::fmt;
use std::sync::Arc;

use http::{Request, Response};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Authorizer, Grant};
use crate::bus::{BoxFuture, EventBus};
use crate::http_message::Body;

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
