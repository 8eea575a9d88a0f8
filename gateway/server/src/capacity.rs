//! The listeners' connection caps, and what a connection over one gets.
//!
//! The gateway has up to two kinds of TCP listener, each with its own cap:
//!
//! - **public** (`server.listen` and `tls.listen`, `server.max_connections` between them):
//!   subscribers, and whatever else the operator leaves there;
//! - **internal** (`server.internal_listen`, `server.internal_max_connections`): publishing,
//!   `/healthz`, `/metrics`, `/topics` and the lab's API, never subscribers, so that a full
//!   public listener cannot keep events from getting in or the health check from answering.
//!
//! A connection over its listener's cap is still accepted: it is answered at once and closed
//! ([`refuse_full`]): `503` `connection_limit` with `Retry-After` for any request (a
//! WebSocket upgrade included, before any upgrade), and the node's health for `GET /healthz`
//! (`503` `"status":"full"` while the public listener is full). A refused connection holds no
//! slot, at most [`REFUSAL_DEADLINE`] of time, and one of [`MAX_REFUSALS_IN_FLIGHT`] refusal
//! tasks; past those, it is closed unanswered. Either way it never waits in the accept
//! backlog, where a client cannot tell a full gateway from a dead one.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::app::App;

/// The error code of a connection refused because its listener is at its cap.
pub(crate) const CONNECTION_LIMIT: &str = "connection_limit";

/// Connections open on a listener (gauge, label `listener`).
pub(crate) const LISTENER_CONNECTIONS_OPEN: &str = "streamgate_listener_connections_open";
/// A listener's cap (gauge, label `listener`).
pub(crate) const LISTENER_CONNECTIONS_MAX: &str = "streamgate_listener_connections_max";
/// Connections refused at a listener's cap (counter, labels `listener`, `answered`).
pub(crate) const LISTENER_REFUSED: &str = "streamgate_listener_refused_total";

/// Most refusals in progress at once, every listener together. Past it a connection over the
/// cap is closed at once, unanswered (and counted with `answered="false"`): a flood of
/// connections at a full gateway costs a bounded number of small tasks.
pub(crate) const MAX_REFUSALS_IN_FLIGHT: usize = 256;

/// The most time a refused connection is given, everything included: the TLS handshake, its
/// request head, the answer and the close. A client that sends nothing is closed then.
pub(crate) const REFUSAL_DEADLINE: Duration = Duration::from_secs(2);

/// `Retry-After` of a refusal at the cap (and of a `full` health answer), seconds.
pub(crate) const FULL_RETRY_AFTER_SECS: u64 = 1;

/// Largest request head a refusal reads (hyper's minimum buffer).
const REFUSAL_MAX_HEAD: usize = 16 * 1024;

/// Which listener a connection came in on; put in each request's extensions by the gateway.
/// A request without one (handed in by an embedder) is taken as public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Listener {
    /// `server.listen` and `tls.listen`: subscribers (and, unless
    /// `server.public_admin_routes = false`, the operator's routes).
    Public,
    /// `server.internal_listen`: publishing, health, metrics, topics, the lab's API.
    Internal,
}

impl Listener {
    /// The `listener` label of the metrics: `public` or `internal`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
        }
    }
}

/// One listener's cap: a permit per open connection, and the count for `/healthz` and the
/// metrics.
#[derive(Debug)]
pub(crate) struct ListenerSlots {
    listener: Listener,
    cap: usize,
    slots: Arc<Semaphore>,
    open: Arc<AtomicUsize>,
    gauge: metrics::Gauge,
}

impl ListenerSlots {
    /// `cap` connections at most on `listener`.
    pub(crate) fn new(listener: Listener, cap: usize) -> Self {
        metrics::gauge!(LISTENER_CONNECTIONS_MAX, "listener" => listener.name()).set(cap as f64);
        Self {
            listener,
            cap,
            slots: Arc::new(Semaphore::new(cap)),
            open: Arc::new(AtomicUsize::new(0)),
            gauge: metrics::gauge!(LISTENER_CONNECTIONS_OPEN, "listener" => listener.name()),
        }
    }

    /// A slot for a connection just accepted, or `None` when the listener is at its cap.
    pub(crate) fn try_open(&self) -> Option<OpenConnection> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        self.open.fetch_add(1, Ordering::Relaxed);
        self.gauge.increment(1.0);
        Some(OpenConnection {
            _permit: permit,
            open: Arc::clone(&self.open),
            gauge: self.gauge.clone(),
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The cap.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Whether no further connection would get a slot now.
    pub(crate) fn is_full(&self) -> bool {
        self.open() >= self.cap
    }

    /// Counts a connection refused at the cap: answered, or closed unanswered.
    pub(crate) fn refused(&self, answered: bool) {
        metrics::counter!(
            LISTENER_REFUSED,
            "listener" => self.listener.name(),
            "answered" => if answered { "true" } else { "false" }
        )
        .increment(1);
    }
}

/// A connection's slot on its listener, held (inside its
/// [`streamgate_core::ConnectionLease`]) until the connection, or the upgraded session that
/// took it over, ends.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    _permit: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
    gauge: metrics::Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.gauge.decrement(1.0);
    }
}

/// The HTTP server that answers refused connections: one request, then the connection
/// closes (HTTP/1.1 without keep-alive; HTTP/2 with a `GOAWAY` once it is answered).
pub(crate) fn refusal_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_DEADLINE)
        .max_buf_size(REFUSAL_MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1);
    builder
}

/// Answers a connection over `listener`'s cap and closes it, within [`REFUSAL_DEADLINE`]
/// (after a TLS handshake when `tls` is given): `GET /healthz` gets the node's health
/// ([`App::refusal_at_cap`]), anything else `503` `connection_limit` with `Retry-After`.
pub(crate) async fn refuse_full(
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    listener: Listener,
) {
    let answer = async {
        match tls {
            None => answer_one(app, &builder, stream, listener).await,
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(stream) => answer_one(app, &builder, stream, listener).await,
                Err(e) => tracing::debug!(error = %e, "TLS handshake of a refused connection"),
            },
        }
    };
    if tokio::time::timeout(REFUSAL_DEADLINE, answer)
        .await
        .is_err()
    {
        tracing::debug!("refused connection cut at the refusal deadline");
    }
}

async fn answer_one<I>(
    app: Arc<App>,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    listener: Listener,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let answered = Arc::new(tokio::sync::Notify::new());
    let service_answered = Arc::clone(&answered);
    let service = service_fn(move |request: http::Request<Incoming>| {
        let response = app.refusal_at_cap(&request, listener);
        service_answered.notify_one();
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "refused connection ended with an error");
            }
            return;
        }
        () = answered.notified() => {}
    }
    // HTTP/2: no further stream (the one answered finishes); HTTP/1.1 ends by itself.
    connection.as_mut().graceful_shutdown();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "refused connection ended with an error");
    }
}
