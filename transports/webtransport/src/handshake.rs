//! From an incoming QUIC connection to a running session: the HTTP/3 handshake (bounded in
//! time), then the admission checks in the order a client can act on them — its IP's session
//! count (`429`), the path (`404`), the lab tap, the gateway's session count (1013), the
//! session URL (4400), `[auth]` (4401/4403) — and the bus subscription. Apart from the session
//! loop because every refusal here ends before a session exists.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use streamgate_core::{
    mask_token_param, AuthError, Authorizer, Direction, Grant, IpSlot, SubscribeRequest,
    TapRegistry, TransportContext, TransportMetrics,
};
use streamgate_proto::{ProtocolError, TokenBucket};
use wtransport::endpoint::IncomingSession;

use crate::config::WtConfig;
use crate::session::{close, Session};
use crate::tap::{open_tap, tap_session};
use crate::wire::{close_code, SessionParams, SessionRefusal};

/// The error code of a session refused for its client IP's count (the one the HTTP listeners
/// use for the same limit).
const TOO_MANY_CONNECTIONS: &str = "too_many_connections";

/// Counts a session against `max_sessions` while it lives.
struct SessionSlot(Arc<AtomicUsize>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn handle_incoming(
    incoming: IncomingSession,
    ip_slot: Option<IpSlot>,
    config: Arc<WtConfig>,
    context: TransportContext,
    sessions: Arc<AtomicUsize>,
    taps: Option<(Arc<dyn TapRegistry>, u64)>,
    metrics: TransportMetrics,
) {
    let handshake = async {
        let request = incoming.await.map_err(|e| e.to_string())?;
        Ok::<_, String>(request)
    };
    let request = tokio::select! {
        () = context.shutdown.cancelled() => return,
        request = tokio::time::timeout(Duration::from_secs(10), handshake) => match request {
            Ok(Ok(request)) => request,
            Ok(Err(e)) => return tracing::debug!(error = %e, "handshake failed"),
            Err(_) => return tracing::debug!("handshake timed out"),
        },
    };
    let Some(ip_slot) = ip_slot else {
        // wtransport sends a refusal's status alone (no headers, no body): the reason is
        // in the log and the metrics.
        let ip = request.remote_address().ip().to_canonical();
        let reason = format!(
            "{ip} is at its limit of {} sessions (webtransport.max_sessions_per_ip)",
            config.max_sessions_per_ip
        );
        streamgate_core::record_rejection(TOO_MANY_CONNECTIONS, &reason);
        request.too_many_requests().await;
        return;
    };
    let (tap, tap_refused) = match open_tap(taps, &request) {
        Ok(tap) => (tap, None),
        Err(reason) => (None, Some(reason)),
    };
    let params = SessionParams::parse(request.path());
    if matches!(params, Err(SessionRefusal::NotFound)) {
        tracing::debug!(
            path = %mask_token_param(request.path()),
            "no such WebTransport path"
        );
        request.not_found().await;
        return;
    }
    // `[auth]`: decided on the CONNECT request, answered once the session is open (an
    // application close 4401/4403 carries a reason; a refused CONNECT would not).
    let authorized = match (&context.auth, &params) {
        (Some(auth), Ok(params)) => Some(authorize_session(
            auth.as_ref(),
            &request,
            &params.query.topics,
        )),
        _ => None,
    };
    let connection = match request.accept().await {
        Ok(connection) => connection,
        Err(e) => return tracing::debug!(error = %e, "session accept failed"),
    };
    tap_session(
        tap.as_ref(),
        Direction::Out,
        serde_json::json!({
            "event": "accepted",
            "status": 200,
            "session_id": connection.session_id().into_u64(),
            "max_datagram_size": connection.max_datagram_size(),
        }),
    );
    if let Some(reason) = tap_refused {
        streamgate_core::record_rejection("forbidden", &reason);
        close(&connection, None, close_code::FORBIDDEN, &reason);
        return;
    }
    let slot = SessionSlot(Arc::clone(&sessions));
    if sessions.fetch_add(1, Ordering::Relaxed) >= config.max_sessions {
        let reason = format!("too many sessions (limit {})", config.max_sessions);
        streamgate_core::record_rejection("too_many_sessions", &reason);
        close(
            &connection,
            tap.as_ref(),
            close_code::TRY_AGAIN_LATER,
            &reason,
        );
        return;
    }
    let params = match params {
        Ok(params) => params,
        Err(SessionRefusal::Bad(e)) => {
            close(
                &connection,
                tap.as_ref(),
                close_code::BAD_REQUEST,
                &e.to_string(),
            );
            return;
        }
        Err(SessionRefusal::NotFound) => return,
    };
    let grant = match authorized {
        Some(Ok(grant)) => Some(grant),
        Some(Err(e)) => {
            let code = match e {
                AuthError::Forbidden { .. } => close_code::FORBIDDEN,
                _ => close_code::UNAUTHORIZED,
            };
            streamgate_core::record_rejection(e.code(), &e.to_string());
            close(
                &connection,
                tap.as_ref(),
                code,
                &format!("{}: {e}", e.code()),
            );
            return;
        }
        None => None,
    };
    let subscription = match context
        .bus
        .subscribe(SubscribeRequest::resume(
            params.query.topics.clone(),
            params.query.since.clone(),
        ))
        .await
    {
        Ok(subscription) => subscription,
        Err(e) => {
            close(
                &connection,
                tap.as_ref(),
                close_code::BAD_REQUEST,
                &ProtocolError::from(&e).to_string(),
            );
            return;
        }
    };
    let session = Session {
        rate: TokenBucket::new(
            std::time::Instant::now(),
            config.max_datagram_rate,
            config.datagram_burst,
        ),
        open_streams: Arc::new(AtomicUsize::new(0)),
        connection,
        config,
        context,
        mode: params.mode,
        grant,
        envelope: params.query.envelope,
        tap,
        metrics,
    };
    tracing::debug!(mode = params.mode.as_str(), "session open");
    let open = session.metrics.connection();
    session.run(subscription).await;
    drop(open);
    drop(slot);
    drop(ip_slot);
}

/// `[auth]`: the token and topics of a session request (the `token` query parameter of the
/// CONNECT URL, an `authorization` header or the cookie).
fn authorize_session(
    auth: &dyn Authorizer,
    request: &wtransport::endpoint::SessionRequest,
    topics: &[streamgate_core::Topic],
) -> Result<Grant, AuthError> {
    let mut headers = http::HeaderMap::new();
    for (name, value) in request.headers() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    let query = request.path().split_once('?').map(|(_, query)| query);
    let grant = auth.authenticate(&headers, query)?;
    grant.check_subscribe(topics)?;
    Ok(grant)
}
