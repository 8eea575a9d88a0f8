//! A connection served by hyper, HTTP/1.1 or HTTP/2: every TLS connection that negotiated
//! `h2`, the internal listener's, and the lean HTTP/1.1 path's (`h1`) once a request is not
//! one it serves itself. Its own module so that the accept loop (`server`) and the lean path
//! both call it without calling each other.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::app::{tag_connection, App};
use crate::capacity::Listener;
use crate::idle::Activity;
use crate::limits;
use streamgate_core::{BoxError, ConnectionInfo, ConnectionLease};

/// Serves HTTP/1.1 or HTTP/2 on `io` until the connection ends. It is shut down gracefully
/// (HTTP/2: `GOAWAY`; HTTP/1.1: no further request) when the gateway stops, or when it has
/// had no request in progress for `server.idle_timeout` (see [`crate::idle`]).
pub(crate) async fn serve_http<I>(
    app: &Arc<App>,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    info: ConnectionInfo,
    lease: &ConnectionLease,
    listener: Listener,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let service_app = Arc::clone(app);
    let service_activity = Arc::clone(&activity);
    let lease = lease.clone();
    let body_timeout = app.config.server.body_read_timeout;
    let service = service_fn(move |request: http::Request<Incoming>| {
        let mut request = request.map(|body| limits::timed_body(body, body_timeout));
        let app = Arc::clone(&service_app);
        // From here until the response body is over (or dropped), the connection is busy.
        let busy = service_activity.busy();
        tag_connection(&mut request, info, &lease, listener);
        let refusal = crate::http::host_refusal(&request);
        async move {
            let response = match refusal {
                None => app.handle(request).await,
                Some(refusal) => refusal,
            };
            Ok::<_, std::convert::Infallible>(response.map(|body| busy.hold(body)))
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let idle_timeout = app.config.server.idle_timeout;
    let idle = async {
        if idle_timeout.is_zero() {
            std::future::pending().await
        } else {
            activity.idle_for(idle_timeout).await;
        }
    };
    tokio::select! {
        result = connection.as_mut() => return result,
        () = app.shutdown.cancelled() => tracing::debug!("shutting down the connection"),
        () = idle => tracing::debug!(?idle_timeout, "closing the idle connection"),
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}
