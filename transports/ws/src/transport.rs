//! [`WsTransport`]: routing `/ws` and `/ws/echo` requests to handshakes and sessions.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_tungstenite::hyper;
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use hyper_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use hyper_tungstenite::WebSocketStream;
use hyper_util::rt::TokioIo;
use streamgate_core::{
    full_body, request_scheme, token_from_request, AuthError, Body, BoxFuture, ConnectionInfo,
    ConnectionLease, HttpTransport, Rejection, SubscribeRequest, Tap, TransportContext,
    TransportMetrics,
};
use streamgate_proto::SubscribeQuery;
use tracing::Instrument;

use crate::config::WsConfig;
use crate::deflate::{self, DeflateIo, Inbound};
use crate::handshake::{self, HandshakeRejection};
use crate::session::{self, Mode};
use crate::tap::TapIo;

/// The WebSocket transport. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WsTransport {
    config: Arc<WsConfig>,
    metrics: TransportMetrics,
    /// Whether `/ws/echo` is served (`ws.echo`, resolved against the lab).
    echo: bool,
}

impl WsTransport {
    /// A transport with these settings (its metric handles come from the recorder installed
    /// now, if any). `/ws/echo` is served when `ws.echo` is `true`; for `"lab"`, see
    /// [`WsTransport::with_lab`].
    pub fn new(config: WsConfig) -> Self {
        Self {
            echo: config.echo.enabled(false),
            config: Arc::new(config),
            metrics: TransportMetrics::new("ws"),
        }
    }

    /// Tells the transport whether the gateway's lab is on, which `ws.echo = "lab"` follows.
    #[must_use]
    pub fn with_lab(mut self, lab_enabled: bool) -> Self {
        self.echo = self.config.echo.enabled(lab_enabled);
        self
    }
}

impl HttpTransport for WsTransport {
    fn name(&self) -> &'static str {
        "ws"
    }

    fn paths(&self) -> &'static [&'static str] {
        &["/ws", "/ws/echo"]
    }

    fn handle(
        &self,
        request: Request<Body>,
        context: TransportContext,
    ) -> BoxFuture<'static, Response<Body>> {
        if request.uri().path() == "/ws/echo" && !self.echo {
            return Box::pin(std::future::ready(
                Rejection::new(
                    "not_found",
                    "/ws/echo is off (ws.echo: \"lab\" serves it only while the lab is on)",
                )
                .into_response(),
            ));
        }
        Box::pin(handle(
            Arc::clone(&self.config),
            self.metrics.clone(),
            request,
            context,
        ))
    }
}

/// `compression=off` declines permessage-deflate for this connection even when the client
/// offers it (browsers always do, and a page cannot stop them), so a client can compare the
/// two on the same gateway; `compression=on`, the default, negotiates it when `ws.compression`
/// allows.
///
/// # Errors
/// `bad_query` for another value or a repeated parameter.
fn compression_param(query: Option<&str>) -> Result<bool, Rejection> {
    let mut wanted = None;
    for pair in query.unwrap_or("").split('&') {
        let Some(value) = pair.strip_prefix("compression=") else {
            continue;
        };
        let value = match value {
            "on" => true,
            "off" => false,
            other => {
                return Err(Rejection::new(
                    "bad_query",
                    format!("compression must be on or off, got {other:?}"),
                ))
            }
        };
        if wanted.replace(value).is_some() {
            return Err(Rejection::new(
                "bad_query",
                "parameter compression is given twice",
            ));
        }
    }
    Ok(wanted.unwrap_or(true))
}

fn rejection_response(rejection: HandshakeRejection) -> Response<Body> {
    let mut response = Rejection::new(rejection.code, rejection.reason)
        .with_status(rejection.status)
        .into_response();
    for (name, value) in rejection.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

async fn handle(
    config: Arc<WsConfig>,
    metrics: TransportMetrics,
    mut request: Request<Body>,
    context: TransportContext,
) -> Response<Body> {
    let echo = request.uri().path() == "/ws/echo";
    let scheme = request_scheme(&request);
    let accepted = match handshake::check(
        request.method(),
        request.headers(),
        scheme,
        &config.origins,
        &config.subprotocols,
    ) {
        Ok(accepted) => accepted,
        Err(rejection) => return rejection_response(rejection),
    };
    let compression_wanted = match compression_param(request.uri().query()) {
        Ok(wanted) => wanted,
        Err(e) => return e.to_response(),
    };
    let mode = if echo {
        // `[auth]`: echo costs the gateway as much as the client sends, so only a client with
        // a valid token gets it (no topics to check).
        if let Some(auth) = &context.auth {
            if let Err(e) = auth.authenticate(request.headers(), request.uri().query()) {
                return e.to_response();
            }
        }
        Mode::Echo
    } else {
        let query = match SubscribeQuery::parse(request.uri().query()) {
            Ok(query) => query,
            Err(e) => return e.to_response(),
        };
        if query.topics.is_empty() && query.since.is_some() {
            return Rejection::new("no_topics", "since needs topics=…").to_response();
        }
        // `[auth]`: a token that came with the upgrade is checked now (401/403 before any
        // upgrade). Without one, topics in the URL are a 401; a bare `/ws` is upgraded and
        // its first message must be `{"type":"auth","token":…}` (browsers cannot set headers).
        let grant = match &context.auth {
            None => None,
            Some(auth) => {
                match token_from_request(
                    request.headers(),
                    request.uri().query(),
                    auth.cookie_name(),
                ) {
                    Some(token) => {
                        match auth
                            .verify(&token)
                            .and_then(|g| g.check_subscribe(&query.topics).map(|()| g))
                        {
                            Ok(grant) => Some(grant),
                            Err(e) => return e.to_response(),
                        }
                    }
                    None if !query.topics.is_empty() => return AuthError::Missing.to_response(),
                    None => None,
                }
            }
        };
        // Subscribing before the upgrade means a refused subscription is an HTTP error the
        // client can read, and events published during the handshake are already queued.
        let subscription = if query.topics.is_empty() {
            None
        } else {
            match context
                .bus
                .subscribe(SubscribeRequest::resume(
                    query.topics.clone(),
                    query.since.clone(),
                ))
                .await
            {
                Ok(subscription) => Some(subscription),
                Err(e) => return Rejection::from(&e).to_response(),
            }
        };
        Mode::Subscriber {
            subscription,
            envelope: query.envelope,
            grant,
            client: request
                .extensions()
                .get::<ConnectionInfo>()
                .map(|info| info.peer.ip()),
        }
    };
    let max_message = if echo {
        config.echo_max_message_size
    } else {
        config.max_message_size
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        // tungstenite refuses any frame larger than this buffer, and an event's envelope can
        // be several times its payload (JSON escaping), so it is not the slow-client bound:
        // that is `write_timeout`, as the session awaits every flush, which caps the buffer
        // at one batch of frames.
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    // Checked by `handshake::check` above; the key is what the accept hash is made from.
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Rejection::new("bad_key", "missing Sec-WebSocket-Key").into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let compression = if config.compression && compression_wanted {
        deflate::negotiate(request.headers())
    } else {
        None
    };
    // The upgrade is done here rather than by `hyper_tungstenite::upgrade` because the
    // connection needs wrapping before tungstenite reads from it (inbound deflate).
    let upgrade = hyper::upgrade::on(&mut request);
    let info = request.extensions().get::<ConnectionInfo>().copied();
    // The connection's slots under the gateway's connection limits: held by the session, so
    // an upgraded connection counts for as long as it is open, not only until the upgrade.
    let lease = request.extensions().get::<ConnectionLease>().cloned();
    // Put there by the gateway only for a connection that asked for the lab's tap.
    let tap = request.extensions().get::<Tap>().cloned();
    let span = tracing::info_span!(
        "ws",
        conn_id = info.map(|i| i.conn_id),
        peer = info.map(|i| i.peer.to_string()),
        echo,
        deflate = compression.is_some(),
        tapped = tap.is_some()
    );
    let tasks = context.tasks.clone();
    tasks.spawn(
        async move {
            let upgraded = match upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => return tracing::debug!(error = %e, "upgrade did not complete"),
            };
            let inbound = compression
                .map(|params| Inbound::new(max_message, params.client_no_context_takeover));
            let io = DeflateIo::new(TapIo::new(TokioIo::new(upgraded), tap), inbound);
            let deflate = compression.map(|params| session::Deflate {
                compress: params.server_compresses(),
                failure: io.failure(),
            });
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
            let _open = metrics.connection();
            session::run(socket, config, mode, context, deflate, metrics).await;
            drop(lease);
        }
        .instrument(span),
    );
    let mut response = Response::new(full_body(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = accepted.subprotocol {
        if let Ok(value) = HeaderValue::from_str(&protocol) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    if let Some(params) = compression {
        if let Ok(value) = HeaderValue::from_str(&params.response_header()) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_parameter() {
        assert!(compression_param(None).unwrap());
        assert!(compression_param(Some("topics=a")).unwrap());
        assert!(!compression_param(Some("topics=a&compression=off")).unwrap());
        assert!(compression_param(Some("compression=on")).unwrap());
        assert_eq!(
            compression_param(Some("compression=maybe"))
                .unwrap_err()
                .code,
            "bad_query"
        );
        assert_eq!(
            compression_param(Some("compression=on&compression=off"))
                .unwrap_err()
                .code,
            "bad_query"
        );
    }
}
