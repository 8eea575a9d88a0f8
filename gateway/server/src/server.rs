//! The accept loop, connection handling and graceful shutdown.
//!
//! Shutdown order, when the `shutdown` future given to [`Gateway::run`] completes:
//! 1. stop accepting (the listener is dropped, so new connects are refused);
//! 2. cancel [`App::shutdown`]: sources stop, long-lived handlers say goodbye in their own
//!    protocol, and every HTTP connection is shut down gracefully (HTTP/1.1 keep-alive ends,
//!    HTTP/2 gets a `GOAWAY`; requests in progress finish);
//! 3. close the bus, so every subscription drains what it has queued and ends;
//! 4. wait for every tracked task, at most `server.shutdown_grace`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::app::App;
use crate::capacity::{self, Listener};
use crate::config::GatewayConfig;
use crate::hyper_conn::serve_http;
use crate::limits;
use crate::tls::TlsMaterial;
use crate::{demo, upstream};
use streamgate_core::{BoxError, ConnectionInfo, ConnectionLease, EventBus};

/// Largest request head (request line and headers) accepted, in bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A bound, not yet running gateway.
pub struct Gateway {
    listener: TcpListener,
    tls_listener: Option<(TcpListener, TlsAcceptor)>,
    internal_listener: Option<TcpListener>,
    app: Arc<App>,
    #[cfg(feature = "webtransport")]
    wt: Option<webtransport::WtServer>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listener", &self.listener)
            .field("tls", &self.tls_local_addr())
            .field("internal", &self.internal_local_addr())
            .finish_non_exhaustive()
    }
}

/// How the gateway ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every connection and task finished within the grace period.
    Drained,
    /// The grace period ran out with this many tasks still running; they were abandoned.
    TimedOut {
        /// Tasks still running.
        remaining: usize,
    },
}

impl Gateway {
    /// Binds the listener named by the configuration, with the bus it names.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(config: GatewayConfig) -> std::io::Result<Self> {
        let bus = crate::bus::build(&config.bus)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Self::bind_with_bus(config, bus).await
    }

    /// Binds the configured listener, serving `bus`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind_with_bus(
        config: GatewayConfig,
        bus: Arc<dyn EventBus>,
    ) -> std::io::Result<Self> {
        let listener = bind_tcp(config.server.listen, config.server.backlog)
            .map_err(|e| listen_error(config.server.listen, "TCP: server.listen, --listen", &e))?;
        let internal_listener = match config.server.internal_listen {
            Some(addr) => Some(bind_tcp(addr, config.server.backlog).map_err(|e| {
                listen_error(addr, "TCP: server.internal_listen, --internal-listen", &e)
            })?),
            None => None,
        };
        let (tls, tls_listener) = if config.tls.enabled {
            let material = match (&config.tls.cert, &config.tls.key) {
                (Some(cert), Some(key)) => TlsMaterial::from_pem_files(cert, key),
                _ => TlsMaterial::self_signed_https(),
            }
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls_listener = bind_tcp(config.tls.listen, config.server.backlog).map_err(|e| {
                listen_error(
                    config.tls.listen,
                    "TCP: tls.listen, --tls-listen; --no-tls turns HTTPS off",
                    &e,
                )
            })?;
            let acceptor = TlsAcceptor::from(Arc::clone(&material.server_config));
            (Some(material), Some((tls_listener, acceptor)))
        } else {
            (None, None)
        };
        #[cfg(feature = "webtransport")]
        let mut wt = bind_webtransport(&config, tls.as_ref())?;
        let auth = crate::auth::build(&config.auth)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut app = App::new(config, bus, tls);
        app.set_auth(auth);
        #[cfg(feature = "webtransport")]
        if let Some(wt) = &mut wt {
            app.add_transport(Arc::new(wt.cert_hash_transport()));
            app.set_webtransport_cert(wt.cert_hash());
            if let Some(taps) = app.tap_registry() {
                wt.set_taps(taps);
            }
        }
        Ok(Self {
            listener,
            tls_listener,
            internal_listener,
            app: Arc::new(app),
            #[cfg(feature = "webtransport")]
            wt,
        })
    }

    /// The bound HTTPS address, when TLS is on.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_listener
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The bound internal listener's address, when `server.internal_listen` is set.
    pub fn internal_local_addr(&self) -> Option<SocketAddr> {
        self.internal_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The bound WebTransport (UDP) address, when WebTransport is on.
    #[cfg(feature = "webtransport")]
    pub fn wt_local_addr(&self) -> Option<SocketAddr> {
        self.wt.as_ref().map(webtransport::WtServer::local_addr)
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> ShutdownOutcome {
        let Self {
            listener,
            tls_listener,
            internal_listener,
            app,
            #[cfg(feature = "webtransport")]
            wt,
        } = self;
        start_sources(&app);
        #[cfg(feature = "webtransport")]
        if let Some(wt) = wt {
            app.tasks.spawn(
                wt.run(app.transport_context())
                    .instrument(tracing::info_span!("wt")),
            );
        }
        start_metrics_upkeep(&app);
        // Connections over a cap are answered by tasks of their own, this many at once.
        let refusals = Arc::new(tokio::sync::Semaphore::new(
            capacity::MAX_REFUSALS_IN_FLIGHT,
        ));
        let refusal_builder = Arc::new(capacity::refusal_builder());
        let per_ip = Arc::clone(&app.connections_per_ip);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(app.config.server.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES);
        // Pings find a dead peer even while it has streams open (an SSE stream, which the
        // idle timeout leaves alone).
        let ping = app.config.server.http2_ping_interval;
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval((!ping.is_zero()).then_some(ping))
            .keep_alive_timeout(app.config.server.http2_ping_timeout);
        let builder = Arc::new(builder);
        let mut next_conn_id: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            // Every listener is always accepted from: a connection over its listener's cap is
            // answered and closed (`capacity::refuse_full`) rather than left in the backlog.
            let (accepted, tls, kind) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => (accepted, None, Listener::Public),
                accepted = accept_tls(&tls_listener) => (accepted, tls_listener.as_ref().map(|(_, a)| a.clone()), Listener::Public),
                accepted = accept_optional(internal_listener.as_ref()) => (accepted, None, Listener::Internal),
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Running out of file descriptors must not end the server: wait and retry.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(app.config.server.tcp_nodelay);
            set_stall_timeout(&stream, app.config.server.write_timeout);
            let Some(slot) = app.open_connection(kind) else {
                let slots = app.slots(kind);
                match Arc::clone(&refusals).try_acquire_owned() {
                    Ok(refusal) => {
                        slots.refused(true);
                        let refused = capacity::refuse_full(
                            Arc::clone(&app),
                            Arc::clone(&refusal_builder),
                            stream,
                            tls,
                            kind,
                        );
                        app.tasks.spawn(async move {
                            refused.await;
                            drop(refusal);
                        });
                    }
                    Err(_) => {
                        // Closed at once: the client sees the connection end, not a wait.
                        slots.refused(false);
                        streamgate_core::record_rejection(
                            capacity::CONNECTION_LIMIT,
                            &format!(
                                "the {} listener is at its cap of {} connections, and {} \
                                 refusals are in progress: closed unanswered",
                                kind.name(),
                                slots.cap(),
                                capacity::MAX_REFUSALS_IN_FLIGHT
                            ),
                        );
                        drop(stream);
                    }
                }
                continue;
            };
            // The internal listener has no per-IP limit: its clients are the operator's.
            let ip_slot = match kind {
                Listener::Public => match per_ip.try_acquire(peer.ip()) {
                    Some(ip_slot) => Some(ip_slot),
                    None => {
                        drop(slot);
                        let max = app.config.server.max_connections_per_ip;
                        streamgate_core::record_rejection(
                            limits::TOO_MANY_CONNECTIONS,
                            &format!("{} is at its limit of {max} connections", peer.ip()),
                        );
                        // Plain HTTP gets a 429 it can read; TLS is closed (no handshake is
                        // spent). Neither holds a slot, and the answers are bounded like the
                        // refusals at the cap.
                        if let (None, Ok(refusal)) =
                            (&tls, Arc::clone(&refusals).try_acquire_owned())
                        {
                            app.tasks.spawn(async move {
                                limits::refuse_too_many(stream, max).await;
                                drop(refusal);
                            });
                        }
                        continue;
                    }
                },
                Listener::Internal => None,
            };
            next_conn_id += 1;
            let info = ConnectionInfo {
                peer,
                conn_id: next_conn_id,
                tls: tls.is_some(),
            };
            let span = tracing::debug_span!(
                "conn",
                conn_id = next_conn_id,
                %peer,
                tls = tls.is_some(),
                listener = kind.name()
            );
            // Freed when the connection ends, or, for an upgraded one, when the transport
            // that took it over is done with it.
            let lease = ConnectionLease::new((slot, ip_slot));
            let connection = serve_connection(
                Arc::clone(&app),
                Arc::clone(&builder),
                stream,
                tls,
                info,
                lease,
                kind,
            );
            app.tasks.spawn(connection.instrument(span));
        }
        drop(listener);
        drop(tls_listener);
        drop(internal_listener);
        tracing::info!("shutting down: stopped accepting");
        app.shutdown.cancel();
        app.bus.close();
        app.tasks.close();
        let grace = app.config.server.shutdown_grace;
        // Every connection is a tracked task, shut down gracefully by `App::shutdown`.
        let drained = tokio::time::timeout(grace, app.tasks.wait()).await;
        match drained {
            Ok(()) => {
                tracing::info!("shutdown complete");
                ShutdownOutcome::Drained
            }
            Err(_) => {
                let remaining = app.tasks.len();
                tracing::warn!(remaining, "shutdown grace period over; abandoning tasks");
                ShutdownOutcome::TimedOut { remaining }
            }
        }
    }
}

/// Binds the WebTransport endpoint: with the configured (PEM) certificate when there is one,
/// else a generated 13-day certificate of its own, rotated every `webtransport.cert_rotation`.
#[cfg(feature = "webtransport")]
fn bind_webtransport(
    config: &GatewayConfig,
    tls: Option<&TlsMaterial>,
) -> std::io::Result<Option<webtransport::WtServer>> {
    if !config.webtransport.enabled {
        return Ok(None);
    }
    let invalid =
        |e: crate::tls::TlsError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    // A configured certificate is shared with HTTPS; a generated one is WebTransport's own,
    // short-lived so browsers accept it by hash.
    let material = match tls {
        Some(material) if !material.self_signed => material.clone(),
        _ => TlsMaterial::self_signed().map_err(invalid)?,
    };
    let regenerate: Option<webtransport::Regenerate> = material.self_signed.then(|| {
        Arc::new(|| {
            TlsMaterial::self_signed()
                .map(|m| (m.server_config, m.certificate_sha256))
                .map_err(|e| e.to_string())
        }) as webtransport::Regenerate
    });
    let source = webtransport::CertSource {
        server_config: material.server_config,
        sha256: material.certificate_sha256,
        regenerate,
    };
    webtransport::WtServer::bind(config.webtransport.clone(), source)
        .map(Some)
        .map_err(|e| {
            // The endpoint's error already starts with the address.
            let e = std::io::Error::new(
                e.kind(),
                e.to_string()
                    .trim_start_matches(&format!("{}: ", config.webtransport.listen))
                    .to_owned(),
            );
            listen_error(
                config.webtransport.listen,
                "UDP: webtransport.listen, --wt-listen; --no-webtransport turns WebTransport off",
                &e,
            )
        })
}

/// Hands the kernel the cut-off for a client that stopped reading: with `TCP_USER_TIMEOUT`,
/// data the gateway wrote that stays unacknowledged this long (the client's receive window
/// is closed, or the client is gone) aborts the connection, so the session's next read or
/// write fails and it ends. The gateway itself only sees a stalled reader once the socket's
/// send buffer is full, which at a few events a second takes minutes (the kernel sizes it up
/// to megabytes); the kernel sees it as soon as the window closes. 0 leaves it unset.
fn set_stall_timeout(stream: &TcpStream, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if !timeout.is_zero() {
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
            tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, timeout);
}

/// A listener that could not be bound, said with the setting and flag that name it (a
/// clash on the HTTPS or WebTransport port must not read as one on the HTTP port).
fn listen_error(addr: SocketAddr, setting: &str, e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("cannot listen on {addr} ({setting}): {e}"),
    )
}

/// Binds a listener with an explicit accept backlog. `TcpListener::bind` uses a fixed 128,
/// which a reconnect storm (thousands of clients coming back at once) overflows: the kernel
/// drops the excess SYNs and those clients wait a full SYN retry (1 s, then 3 s, …).
fn bind_tcp(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn accept_optional(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_tls(
    tls: &Option<(TcpListener, TlsAcceptor)>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match tls {
        Some((listener, _)) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves one connection, plain or TLS, until it ends or graceful shutdown closes it.
async fn serve_connection(
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    info: ConnectionInfo,
    lease: ConnectionLease,
    listener: Listener,
) {
    let result = match tls {
        None => {
            // hyper's header timeout starts once it knows the protocol: a client that sends
            // nothing, or the HTTP/2 preface a byte at a time, is cut here.
            let timeout = app.config.server.header_read_timeout;
            let started = tokio::select! {
                // Like hyper's graceful shutdown does for an idle connection.
                () = app.shutdown.cancelled() => return,
                started = Box::pin(limits::request_started(&stream, timeout)) => started,
            };
            match started {
                limits::RequestStart::Started => {}
                limits::RequestStart::Closed => {
                    tracing::debug!("closed before sending a request");
                    return;
                }
                limits::RequestStart::TimedOut => {
                    streamgate_core::record_rejection(
                        limits::HEADER_TIMEOUT,
                        "no request started within server.header_read_timeout",
                    );
                    return;
                }
            }
            // Boxed, like the TLS connection: the connection's task then holds only what its
            // kind of connection needs, not room for every kind.
            // The internal listener serves no long-lived request: hyper's path alone.
            if app.config.server.lean_http1 && listener == Listener::Public {
                Box::pin(crate::h1::serve(&app, &builder, stream, info, &lease)).await
            } else {
                Box::pin(serve_http(&app, &builder, stream, info, &lease, listener)).await
            }
        }
        Some(acceptor) => Box::pin(serve_tls(&app, &builder, stream, acceptor, info, &lease)).await,
    };
    if let Err(e) = result {
        let timed_out = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timed_out {
            streamgate_core::record_rejection(
                limits::HEADER_TIMEOUT,
                "request head not complete within server.header_read_timeout",
            );
        }
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves one TLS connection: the handshake, then HTTP/2 (hyper) or HTTP/1.1 (the lean path).
async fn serve_tls(
    app: &Arc<App>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    acceptor: TlsAcceptor,
    info: ConnectionInfo,
    lease: &ConnectionLease,
) -> Result<(), BoxError> {
    // The handshake counts against the same budget as request headers (slowloris).
    let timeout = app.config.server.header_read_timeout;
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return Ok(());
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return Ok(());
        }
    };
    // HTTP/2 is hyper's; HTTP/1.1 starts on the lean path.
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 || !app.config.server.lean_http1 {
        serve_http(app, builder, stream, info, lease, Listener::Public).await
    } else {
        crate::h1::serve(app, builder, stream, info, lease).await
    }
}

/// Folds histogram samples into their buckets every few seconds, so memory stays bounded
/// between scrapes (the exporter has no task of its own here).
fn start_metrics_upkeep(app: &Arc<App>) {
    let Some(handle) = app.metrics_handle().cloned() else {
        return;
    };
    let shutdown = app.shutdown.clone();
    app.tasks.spawn(async move {
        let mut tick = tokio::time::interval(crate::prometheus::UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    });
}

fn start_sources(app: &Arc<App>) {
    if app.config.demo.enabled {
        let demo_config = app.config.demo.clone();
        app.tasks.spawn(
            demo::run(Arc::clone(&app.bus), demo_config, app.shutdown.clone())
                .instrument(tracing::info_span!("demo")),
        );
    }
    for source in &app.config.sources {
        let span = tracing::info_span!("source", url = %source.url, topic = %source.topic);
        app.tasks.spawn(
            upstream::run(Arc::clone(&app.bus), source.clone(), app.shutdown.clone())
                .instrument(span),
        );
    }
}
