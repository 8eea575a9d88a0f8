//! The accept loop, connection handling and graceful shutdown.
//!
//! Shutdown order, when the `shutdown` future given to [`Gateway::run`] completes:
//! 1. stop accepting (the listener is dropped, so new connects are refused);
//! 2. cancel [`App::shutdown`]: sources stop, long-lived handlers say goodbye in their own
//!    protocol, and hyper stops keep-alive on every HTTP connection;
//! 3. close the bus, so every subscription drains what it has queued and ends;
//! 4. wait for every tracked task, at most `server.shutdown_grace`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::app::{tag_connection, App};
use crate::config::GatewayConfig;
use crate::{demo, upstream};
use streamgate_core::{ConnectionInfo, EventBus, MemoryBus};

/// Largest request head (request line and headers) accepted, in bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A bound, not yet running gateway.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    app: Arc<App>,
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
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(config.bus.memory()));
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
        let listener = TcpListener::bind(config.server.listen).await?;
        Ok(Self {
            listener,
            app: Arc::new(App::new(config, bus)),
        })
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
        let Self { listener, app } = self;
        start_sources(&app);
        let graceful = GracefulShutdown::new();
        let limit = Arc::new(Semaphore::new(app.config.server.max_connections));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(app.config.server.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES);
        let builder = Arc::new(builder);
        let mut next_conn_id: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = Arc::clone(&limit).acquire_owned() => permit.expect("semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Running out of file descriptors must not end the server: wait and retry.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            next_conn_id += 1;
            let service_app = Arc::clone(&app);
            let info = ConnectionInfo {
                peer,
                conn_id: next_conn_id,
            };
            let service = service_fn(move |mut request| {
                let app = Arc::clone(&service_app);
                tag_connection(&mut request, info);
                async move { Ok::<_, std::convert::Infallible>(app.handle(request).await) }
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            let span = tracing::debug_span!("conn", conn_id = next_conn_id, %peer);
            app.tasks.spawn(
                async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
        drop(listener);
        tracing::info!("shutting down: stopped accepting");
        app.shutdown.cancel();
        app.bus.close();
        app.tasks.close();
        let grace = app.config.server.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            graceful.shutdown().await;
            app.tasks.wait().await;
        })
        .await;
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
