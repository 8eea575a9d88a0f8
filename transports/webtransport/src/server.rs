//! [`WtServer`]: the QUIC/HTTP/3 endpoint, its accept loop, certificate rotation and the
//! sessions; [`CertHashTransport`]: `GET /wt/cert-hash` on the gateway's HTTP listener.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use streamgate_core::{
    error_response, full_body, mask_credential_params, mask_header_value, mask_token_param,
    tap_id_from_query, AuthError, Authorizer, Body, BoxFuture, ContentType, Delivery, Direction,
    Event, Grant, HttpTransport, IpSlot, PerIpLimit, RecordKind, SubscribeRequest, Subscription,
    Tap, TapConnection, TapRegistry, TransportContext, TransportMetrics,
};
use streamgate_proto::{
    binary_envelope, encode_error, encode_notice, encode_published, json_envelope, ClientMessage,
    EnvelopeFormat, ProtocolError, TokenBucket,
};
use tracing::Instrument;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::endpoint::IncomingSession;
use wtransport::{Connection, Endpoint, RecvStream, SendStream, ServerConfig, VarInt};

use crate::config::WtConfig;
use crate::wire::{
    close_code, encode_datagram_fallback, encode_subscribed, fits_datagram, frame, DeliveryMode,
    FrameDecoder, SessionParams, SessionRefusal,
};

/// The error code of a session refused for its client IP's count (the one the HTTP listeners
/// use for the same limit).
const TOO_MANY_CONNECTIONS: &str = "too_many_connections";

/// Makes a fresh certificate: the rustls configuration serving it and its SHA-256.
pub type Regenerate =
    Arc<dyn Fn() -> Result<(Arc<rustls::ServerConfig>, [u8; 32]), String> + Send + Sync>;

/// The certificate the endpoint serves.
#[derive(Clone)]
pub struct CertSource {
    /// The gateway's rustls configuration (its ALPN is replaced by `h3` for QUIC).
    pub server_config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate.
    pub sha256: [u8; 32],
    /// For a generated certificate: how to make the next one, every
    /// [`WtConfig::cert_rotation`]. `None` for configured (PEM) certificates.
    pub regenerate: Option<Regenerate>,
}

impl std::fmt::Debug for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSource")
            .field("sha256", &hex(&self.sha256))
            .field("rotates", &self.regenerate.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct CertState {
    sha256: [u8; 32],
    generation: u64,
}

/// The current certificate hash and session URL, shared with `/wt/cert-hash`.
#[derive(Clone, Debug)]
pub struct CertHashHandle {
    state: Arc<RwLock<CertState>>,
    url: Arc<str>,
    self_signed: bool,
}

impl CertHashHandle {
    /// SHA-256 of the certificate served now.
    pub fn sha256(&self) -> [u8; 32] {
        self.state.read().expect("cert state lock").sha256
    }

    /// How many times the certificate was rotated.
    pub fn generation(&self) -> u64 {
        self.state.read().expect("cert state lock").generation
    }

    /// Records that the endpoint now serves a certificate with this SHA-256, replaced by its
    /// owner: a configured certificate reloaded by the gateway, which the endpoint's rustls
    /// configuration shares (its certificate resolver is asked at each handshake). Counts as
    /// one rotation in [`CertHashHandle::generation`].
    pub fn set_sha256(&self, sha256: [u8; 32]) {
        let mut state = self.state.write().expect("cert state lock");
        state.sha256 = sha256;
        state.generation += 1;
    }

    /// The session URL: `webtransport.public_url`, else `https://<bound address>/wt`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `/wt/cert-hash` document.
    pub fn to_json(&self) -> serde_json::Value {
        let (sha256, generation) = {
            let state = self.state.read().expect("cert state lock");
            (state.sha256, state.generation)
        };
        serde_json::json!({
            "algorithm": "sha-256",
            "value": sha256.to_vec(),
            "hex": hex(&sha256),
            "url": &*self.url,
            "self_signed": self.self_signed,
            "generation": generation,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /wt/cert-hash`: what a page needs for `new WebTransport(url, {serverCertificateHashes})`.
#[derive(Clone, Debug)]
pub struct CertHashTransport {
    handle: CertHashHandle,
}

impl HttpTransport for CertHashTransport {
    fn name(&self) -> &'static str {
        "webtransport-cert-hash"
    }

    fn paths(&self) -> &'static [&'static str] {
        &["/wt/cert-hash"]
    }

    fn handle(
        &self,
        request: Request<Body>,
        _context: TransportContext,
    ) -> BoxFuture<'static, Response<Body>> {
        let handle = self.handle.clone();
        Box::pin(async move {
            if request.method() != Method::GET && request.method() != Method::HEAD {
                let mut response = error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return response;
            }
            let mut response = Response::new(full_body(handle.to_json().to_string()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        })
    }
}

/// The WebTransport endpoint: bound, not yet serving.
pub struct WtServer {
    endpoint: Endpoint<Server>,
    config: Arc<WtConfig>,
    local_addr: SocketAddr,
    cert: CertHashHandle,
    regenerate: Option<Regenerate>,
    taps: Option<Arc<dyn TapRegistry>>,
}

impl std::fmt::Debug for WtServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtServer")
            .field("local_addr", &self.local_addr)
            .field("url", &self.cert.url())
            .finish_non_exhaustive()
    }
}

fn quic_server_config(
    config: &WtConfig,
    bind: SocketAddr,
    tls: &rustls::ServerConfig,
) -> std::io::Result<ServerConfig> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let mut transport = wtransport::quinn::TransportConfig::default();
    // One bidirectional stream is the session's CONNECT request.
    transport.max_concurrent_bidi_streams(wtransport::quinn::VarInt::from_u32(
        config.max_streams_per_session.saturating_add(1),
    ));
    if !config.quinn_defaults {
        size_quic_buffers(&mut transport, config);
    }
    transport.enable_segmentation_offload(config.segmentation_offload);
    ServerConfig::builder()
        .with_bind_address(bind)
        .with_custom_tls_and_transport(tls, transport)
        .max_idle_timeout(Some(config.idle_timeout))
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "webtransport.idle_timeout is out of range",
            )
        })
        .map(|builder| {
            builder
                .keep_alive_interval(Some(config.keep_alive_interval))
                .build()
        })
}

/// Windows and buffers sized for a gateway (docs/PERFORMANCE.md, "WebTransport memory"):
/// quinn's defaults suit a bulk transfer both ways, where a subscriber mostly receives small
/// events and sends next to nothing. The windows are limits, not allocations, but they bound
/// what one session can make the gateway hold: a client stream's unread data, the
/// connection's, and what a slow subscriber has not acknowledged.
fn size_quic_buffers(transport: &mut wtransport::quinn::TransportConfig, config: &WtConfig) {
    use wtransport::quinn::VarInt;
    let stream_window = config.stream_receive_window.max(1024);
    transport.stream_receive_window(VarInt::from_u32(stream_window));
    // A few client streams at full speed at once; each is read as its data arrives, so a
    // larger publish is never stuck behind the connection's credit, only paced by it.
    transport.receive_window(VarInt::from_u64(4 * u64::from(stream_window)).unwrap_or(VarInt::MAX));
    transport.send_window(u64::from(config.send_window.max(16 * 1024)));
    let datagrams = config.datagram_buffer as usize;
    transport.datagram_receive_buffer_size(Some(datagrams.max(4096)));
    transport.datagram_send_buffer_size(datagrams.max(4096));
    // HTTP/3 needs three client unidirectional streams (control, QPACK encoder and
    // decoder); WebTransport ones are refused (client messages go on bidirectional streams).
    // quinn keeps an entry per stream the client may open, so 100 cost memory for nothing.
    transport.max_concurrent_uni_streams(VarInt::from_u32(8));
}

impl WtServer {
    /// Binds the UDP socket of `config.listen` and prepares to serve `cert`.
    ///
    /// # Errors
    /// The address cannot be bound, or the configuration is unusable.
    pub fn bind(config: WtConfig, cert: CertSource) -> std::io::Result<Self> {
        let server_config = quic_server_config(&config, config.listen, &cert.server_config)?;
        let endpoint = Endpoint::server(server_config)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", config.listen)))?;
        let local_addr = endpoint.local_addr()?;
        let host = match local_addr.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let url: Arc<str> = match &config.public_url {
            Some(public) => Arc::from(public.as_str()),
            None => Arc::from(format!(
                "https://{}/wt",
                SocketAddr::new(host, local_addr.port())
            )),
        };
        Ok(Self {
            endpoint,
            config: Arc::new(config),
            local_addr,
            cert: CertHashHandle {
                state: Arc::new(RwLock::new(CertState {
                    sha256: cert.sha256,
                    generation: 0,
                })),
                url,
                self_signed: cert.regenerate.is_some(),
            },
            regenerate: cert.regenerate,
            taps: None,
        })
    }

    /// Lets sessions whose URL carries `lab=<tap id>` be recorded by `taps` (the gateway's
    /// lab). QUIC packets are encrypted, so what a tap gets is what this layer sees: the
    /// session request and its acceptance, each stream opened (with its id) and the bytes
    /// handed to it, each datagram, the close.
    pub fn set_taps(&mut self, taps: Arc<dyn TapRegistry>) {
        self.taps = Some(taps);
    }

    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The certificate hash and URL, kept current across rotations.
    pub fn cert_hash(&self) -> CertHashHandle {
        self.cert.clone()
    }

    /// The `/wt/cert-hash` route for the gateway's HTTP listener.
    pub fn cert_hash_transport(&self) -> CertHashTransport {
        CertHashTransport {
            handle: self.cert.clone(),
        }
    }

    /// Accepts sessions until `context.shutdown`, then closes every session with code 1001
    /// and waits (at most 2 s) for the closes to be sent. Spawn it into `context.tasks`.
    pub async fn run(self, context: TransportContext) {
        let sessions = Arc::new(AtomicUsize::new(0));
        let per_ip = PerIpLimit::new(self.config.max_sessions_per_ip);
        let next_id = AtomicU64::new(0);
        let metrics = TransportMetrics::new("webtransport");
        let mut next_rotation = tokio::time::Instant::now() + self.config.cert_rotation;
        tracing::info!(url = self.cert.url(), "webtransport listening");
        loop {
            let incoming = tokio::select! {
                () = context.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next_rotation), if self.regenerate.is_some() => {
                    self.rotate();
                    next_rotation = tokio::time::Instant::now() + self.config.cert_rotation;
                    continue;
                }
                incoming = self.endpoint.accept() => incoming,
            };
            let session_id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
            let span = tracing::debug_span!(
                "wt",
                session_id,
                peer = %incoming.remote_address()
            );
            // Taken before the handshake: connections still in it count against their IP.
            let ip_slot = per_ip.try_acquire(incoming.remote_address().ip());
            context.tasks.spawn(
                handle_incoming(
                    incoming,
                    ip_slot,
                    Arc::clone(&self.config),
                    context.clone(),
                    Arc::clone(&sessions),
                    self.taps.clone().map(|taps| (taps, session_id)),
                    metrics.clone(),
                )
                .instrument(span),
            );
        }
        self.endpoint.close(
            VarInt::from_u32(close_code::GOING_AWAY),
            b"server shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        tracing::debug!("webtransport endpoint closed");
    }

    fn rotate(&self) {
        let Some(regenerate) = &self.regenerate else {
            return;
        };
        let result = regenerate().and_then(|(tls, sha256)| {
            let config = quic_server_config(&self.config, self.local_addr, &tls)
                .map_err(|e| e.to_string())?;
            self.endpoint
                .reload_config(config, false)
                .map_err(|e| e.to_string())?;
            Ok(sha256)
        });
        match result {
            Ok(sha256) => {
                let mut state = self.cert.state.write().expect("cert state lock");
                state.sha256 = sha256;
                state.generation += 1;
                tracing::info!(sha256 = %hex(&sha256), generation = state.generation, "webtransport certificate rotated");
            }
            // The old certificate is still valid for a few days: keep it and retry at the
            // next rotation time.
            Err(e) => tracing::error!(error = %e, "webtransport certificate rotation failed"),
        }
    }
}

/// Counts a session against `max_sessions` while it lives.
struct SessionSlot(Arc<AtomicUsize>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn close(connection: &Connection, tap: Option<&Tap>, code: u32, reason: &str) {
    // A close reason must fit in one packet with the rest of the frame.
    let mut end = reason.len().min(512);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    tracing::debug!(code, reason, "closing session");
    let reason = &reason[..end];
    tap_session(
        tap,
        Direction::Out,
        serde_json::json!({"event": "close", "code": code, "reason": reason}),
    );
    connection.close(VarInt::from_u32(code), reason.as_bytes());
}

/// Records a session-level event (a small JSON object) when the session is tapped.
fn tap_session(tap: Option<&Tap>, direction: Direction, event: serde_json::Value) {
    if let Some(tap) = tap {
        tap.record(
            direction,
            RecordKind::WtSession,
            event.to_string().as_bytes(),
        );
    }
}

/// Records bytes handed to (or read from) a stream when the session is tapped.
fn tap_stream(tap: Option<&Tap>, direction: Direction, stream_id: u64, fin: bool, bytes: &[u8]) {
    if let Some(tap) = tap {
        tap.record(direction, RecordKind::WtStream { stream_id, fin }, bytes);
    }
}

/// A tap for this session when its URL names one the gateway's lab issued to this client
/// (`lab=<tap id>`), with the session request (the extended CONNECT) as its first record.
/// Credentials in the URL and the headers are masked before they are recorded.
///
/// # Errors
/// The reason to give when the tap belongs to another client (the session is then closed
/// `4403`).
fn open_tap(
    taps: Option<(Arc<dyn TapRegistry>, u64)>,
    request: &wtransport::endpoint::SessionRequest,
) -> Result<Option<Tap>, String> {
    let Some((taps, session_number)) = taps else {
        return Ok(None);
    };
    let Some(id) = request
        .path()
        .split_once('?')
        .and_then(|(_, query)| tap_id_from_query(query))
    else {
        return Ok(None);
    };
    let opened = taps.open(
        id,
        TapConnection {
            transport: "webtransport",
            peer: request.remote_address(),
            conn_id: session_number,
        },
    );
    let tap = match opened {
        Ok(Some(tap)) => tap,
        Ok(None) => return Ok(None),
        Err(refused) => return Err(format!("forbidden: {refused}")),
    };
    let mut headers: Vec<(&String, &String)> = request.headers().iter().collect();
    headers.sort();
    tap_session(
        Some(&tap),
        Direction::In,
        serde_json::json!({
            "event": "connect",
            "authority": request.authority(),
            "path": mask_credential_params(request.path()),
            "origin": request.origin(),
            "user_agent": request.user_agent(),
            "headers": headers
                .into_iter()
                .map(|(name, value)| {
                    let value = mask_header_value(name, value.as_bytes())
                        .unwrap_or_else(|| value.clone());
                    (name.clone(), serde_json::Value::from(value))
                })
                .collect::<serde_json::Map<_, _>>(),
        }),
    );
    Ok(Some(tap))
}

async fn handle_incoming(
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

struct Session {
    connection: Connection,
    config: Arc<WtConfig>,
    context: TransportContext,
    mode: DeliveryMode,
    envelope: EnvelopeFormat,
    rate: TokenBucket,
    open_streams: Arc<AtomicUsize>,
    /// `Some` only for a session the lab asked about (`lab=<tap id>`).
    tap: Option<Tap>,
    metrics: TransportMetrics,
    /// What the session's token allows, when `[auth]` is on: it is closed when it expires.
    grant: Option<Grant>,
}

/// Why a session ended; the close was already sent (or the peer is gone).
struct Ended;

impl Session {
    async fn run(mut self, mut subscription: Subscription) {
        let mut control = match self.open_uni("control").await {
            Ok(control) => control,
            Err(Ended) => return,
        };
        let subscribed = encode_subscribed(
            subscription.topics(),
            &self.context.bus.health().epoch,
            self.mode,
            self.connection.max_datagram_size(),
        );
        if self.write(&mut control, &frame(&subscribed)).await.is_err() {
            return;
        }
        let token_expiry = self.grant.as_ref().map(|grant| {
            tokio::time::Instant::now() + grant.remaining(std::time::SystemTime::now())
        });
        let mut token_timer = Box::pin(tokio::time::sleep_until(
            token_expiry.unwrap_or_else(tokio::time::Instant::now),
        ));
        loop {
            let step = tokio::select! {
                () = self.context.shutdown.cancelled() => {
                    self.close(close_code::GOING_AWAY, "server shutting down");
                    Err(Ended)
                }
                () = &mut token_timer, if token_expiry.is_some() => {
                    self.close(close_code::POLICY, "token expired");
                    Err(Ended)
                }
                delivery = subscription.next() => match delivery {
                    Some(delivery) => self.deliver(&mut control, delivery).await,
                    None => {
                        self.close(close_code::GOING_AWAY, "server shutting down");
                        Err(Ended)
                    }
                },
                bi = self.connection.accept_bi() => match bi {
                    Ok((send, recv)) => self.on_bidi(send, recv),
                    Err(e) => {
                        tracing::debug!(error = %e, "session ended");
                        tap_session(
                            self.tap.as_ref(),
                            Direction::In,
                            serde_json::json!({"event": "closed", "reason": e.to_string()}),
                        );
                        Err(Ended)
                    }
                },
                uni = self.connection.accept_uni() => match uni {
                    // Client→server messages go on bidirectional streams (they get replies).
                    Ok(stream) => {
                        tap_session(
                            self.tap.as_ref(),
                            Direction::In,
                            serde_json::json!({
                                "event": "uni_stream_refused",
                                "stream_id": stream.id().into_u64(),
                            }),
                        );
                        stream.stop(VarInt::from_u32(0));
                        Ok(())
                    }
                    Err(_) => Err(Ended),
                },
                datagram = self.connection.receive_datagram() => match datagram {
                    Ok(datagram) => self.on_datagram(datagram.payload()).await,
                    Err(_) => Err(Ended),
                },
            };
            if step.is_err() {
                return;
            }
        }
    }

    fn close(&self, code: u32, reason: &str) {
        close(&self.connection, self.tap.as_ref(), code, reason);
    }

    /// Opens a unidirectional stream; `purpose` (`control`, `event`) only names it for the tap.
    async fn open_uni(&self, purpose: &str) -> Result<SendStream, Ended> {
        let open = async {
            let opening = self
                .connection
                .open_uni()
                .await
                .map_err(|e| e.to_string())?;
            opening.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.config.write_timeout, open).await {
            Ok(Ok(stream)) => {
                tap_session(
                    self.tap.as_ref(),
                    Direction::Out,
                    serde_json::json!({
                        "event": "uni_stream_opened",
                        "stream_id": stream.id().into_u64(),
                        "purpose": purpose,
                    }),
                );
                Ok(stream)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, purpose, "cannot open a stream");
                self.close(close_code::INTERNAL, "cannot open the control stream");
                Err(Ended)
            }
            Err(_) => {
                self.close(close_code::POLICY, "client gave no stream credit");
                Err(Ended)
            }
        }
    }

    async fn write(&self, stream: &mut SendStream, bytes: &[u8]) -> Result<(), Ended> {
        tap_stream(
            self.tap.as_ref(),
            Direction::Out,
            stream.id().into_u64(),
            false,
            bytes,
        );
        match tokio::time::timeout(self.config.write_timeout, stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                Err(Ended)
            }
            Err(_) => {
                self.close(close_code::POLICY, "client stopped reading");
                Err(Ended)
            }
        }
    }

    async fn deliver(&self, control: &mut SendStream, delivery: Delivery) -> Result<(), Ended> {
        let event = match delivery {
            Delivery::Notice(notice) => {
                let framed = frame(&encode_notice(&notice));
                self.metrics.notice_written(&notice, framed.len());
                return self.write(control, &framed).await;
            }
            Delivery::Event(event) => event,
        };
        let envelope = envelope(&event, self.envelope);
        self.metrics
            .event_written(event.timestamp_us, envelope.len());
        match self.mode {
            DeliveryMode::Stream => self.write(control, &frame(&envelope)).await,
            DeliveryMode::StreamPerEvent => {
                let mut stream = self.open_uni("event").await?;
                let framed = frame(&envelope);
                tap_stream(
                    self.tap.as_ref(),
                    Direction::Out,
                    stream.id().into_u64(),
                    true,
                    &framed,
                );
                let timeout = self.config.write_timeout;
                // Written by its own task: a lost packet of one event does not hold up the next.
                self.context.tasks.spawn(async move {
                    let write = async {
                        stream.write_all(&framed).await?;
                        stream.finish().await
                    };
                    if let Ok(Err(e)) = tokio::time::timeout(timeout, write).await {
                        tracing::debug!(error = %e, "event stream write failed");
                    }
                });
                Ok(())
            }
            DeliveryMode::Datagram => {
                let max = self.connection.max_datagram_size();
                if fits_datagram(envelope.len(), max)
                    && self.connection.send_datagram(&envelope).is_ok()
                {
                    if let Some(tap) = &self.tap {
                        tap.record(Direction::Out, RecordKind::WtDatagram, &envelope);
                    }
                    return Ok(());
                }
                let notice = encode_datagram_fallback(&event.id.to_string(), envelope.len(), max);
                self.write(control, &frame(&notice)).await?;
                self.write(control, &frame(&envelope)).await
            }
        }
    }

    fn on_bidi(&self, send: SendStream, recv: RecvStream) -> Result<(), Ended> {
        let open = self.open_streams.fetch_add(1, Ordering::Relaxed);
        if open >= self.config.max_streams_per_session as usize {
            self.open_streams.fetch_sub(1, Ordering::Relaxed);
            let reason = format!(
                "too many streams (limit {} per session)",
                self.config.max_streams_per_session
            );
            self.close(close_code::POLICY, &reason);
            return Err(Ended);
        }
        tap_session(
            self.tap.as_ref(),
            Direction::In,
            serde_json::json!({
                "event": "bidi_stream_accepted",
                "stream_id": send.id().into_u64(),
            }),
        );
        let connection = self.connection.clone();
        let context = self.context.clone();
        let client = self.connection.remote_address().ip();
        let max = self.config.max_message_size;
        let open_streams = Arc::clone(&self.open_streams);
        let tap = self.tap.clone();
        let metrics = self.metrics.clone();
        let grant = self.grant.clone();
        self.context.tasks.spawn(async move {
            serve_bidi(
                &connection,
                send,
                recv,
                &context,
                client,
                max,
                tap,
                &metrics,
                grant,
            )
            .await;
            open_streams.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(())
    }

    async fn on_datagram(&mut self, payload: Bytes) -> Result<(), Ended> {
        if !self.rate.try_take(std::time::Instant::now()) {
            let reason = format!(
                "over the datagram rate of {}/s",
                self.config.max_datagram_rate
            );
            streamgate_core::record_rejection("wt_policy_violation", &reason);
            self.close(close_code::POLICY, &reason);
            return Err(Ended);
        }
        if let Some(tap) = &self.tap {
            tap.record(Direction::In, RecordKind::WtDatagram, &payload);
        }
        let reply = match refuse_publish(self.grant.as_ref(), &payload) {
            Some(refusal) => refusal,
            None => {
                let client = Some(self.connection.remote_address().ip());
                client_message(&self.context, client, &payload, &self.metrics).await
            }
        };
        // Replies to datagrams are datagrams: as unreliable as the request.
        if fits_datagram(reply.len(), self.connection.max_datagram_size())
            && self.connection.send_datagram(&reply).is_ok()
        {
            if let Some(tap) = &self.tap {
                tap.record(Direction::Out, RecordKind::WtDatagram, &reply);
            }
        }
        Ok(())
    }
}

fn envelope(event: &Event, format: EnvelopeFormat) -> Bytes {
    if format == EnvelopeFormat::Binary || event.content_type == ContentType::Binary {
        binary_envelope(event)
    } else {
        json_envelope(event)
    }
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

/// The `error` reply to a `publish` the session's token does not cover, or `None` to handle
/// the message as usual (authentication off, allowed, or not a publish).
fn refuse_publish(grant: Option<&Grant>, message: &[u8]) -> Option<Bytes> {
    let grant = grant?;
    let text = std::str::from_utf8(message).ok()?;
    let Ok(ClientMessage::Publish(request)) = ClientMessage::parse(text) else {
        return None;
    };
    let error = grant.check_publish(&request.topic).err()?;
    Some(encode_error(
        &ProtocolError::from(&error),
        request.reference.as_deref(),
    ))
}

/// Answers one client message (`publish`) of `client`; the reply is a JSON message.
async fn client_message(
    context: &TransportContext,
    client: Option<IpAddr>,
    message: &[u8],
    metrics: &TransportMetrics,
) -> Bytes {
    let Ok(text) = std::str::from_utf8(message) else {
        return encode_error(
            &ProtocolError::new("bad_message", "a client message is JSON text (UTF-8)"),
            None,
        );
    };
    match ClientMessage::parse(text) {
        Err((error, reference)) => encode_error(&error, reference.as_deref()),
        Ok(ClientMessage::Publish(request)) => {
            // Over the client's limits: an error reply to this publish; the session stays.
            if let Err(refusal) = context.admit_publish(client, &request.topic) {
                let error = ProtocolError::from(&refusal);
                metrics.publish(Err(error.code));
                streamgate_core::record_rejection(error.code, &error.reason);
                return encode_error(&error, request.reference.as_deref());
            }
            match context
                .bus
                .publish(request.topic, request.content_type, request.payload)
                .await
            {
                Ok(event) => {
                    metrics.publish(Ok(()));
                    encode_published(request.reference.as_deref(), &event.id)
                }
                Err(e) => {
                    let error = ProtocolError::from(&e);
                    metrics.publish(Err(error.code));
                    streamgate_core::record_rejection(error.code, &error.reason);
                    encode_error(&error, request.reference.as_deref())
                }
            }
        }
        Ok(ClientMessage::Subscribe { reference, .. })
        | Ok(ClientMessage::Unsubscribe { reference, .. }) => encode_error(
            &ProtocolError::new(
                "unsupported",
                "a WebTransport session's topics are fixed by its URL: open a new session \
                 with the new topics and since=<last id>",
            ),
            reference.as_deref(),
        ),
    }
}

/// Reads length-prefixed client messages from a client-opened bidirectional stream and
/// writes one length-prefixed JSON reply per message on its send side.
// The stream's whole state is handed to its task; a struct would only rename it.
#[allow(clippy::too_many_arguments)]
async fn serve_bidi(
    connection: &Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    context: &TransportContext,
    client: IpAddr,
    max: usize,
    tap: Option<Tap>,
    metrics: &TransportMetrics,
    grant: Option<Grant>,
) {
    let stream_id = send.id().into_u64();
    let mut decoder = FrameDecoder::new(max);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(message)) => {
                    let reply = match refuse_publish(grant.as_ref(), &message) {
                        Some(refusal) => refusal,
                        None => client_message(context, Some(client), &message, metrics).await,
                    };
                    let reply = frame(&reply);
                    tap_stream(tap.as_ref(), Direction::Out, stream_id, false, &reply);
                    if send.write_all(&reply).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(too_large) => {
                    let reason = format!(
                        "message of {} bytes, the limit is {}",
                        too_large.len, too_large.max
                    );
                    close(connection, tap.as_ref(), close_code::TOO_BIG, &reason);
                    return;
                }
            }
        }
        match recv.read(&mut buffer).await {
            Ok(Some(n)) => {
                tap_stream(tap.as_ref(), Direction::In, stream_id, false, &buffer[..n]);
                decoder.push(&buffer[..n]);
            }
            Ok(None) => {
                tap_stream(tap.as_ref(), Direction::In, stream_id, true, &[]);
                if decoder.pending() > 0 {
                    tracing::debug!(bytes = decoder.pending(), "stream ended inside a message");
                }
                let _ = send.finish().await;
                return;
            }
            Err(_) => return,
        }
    }
}
