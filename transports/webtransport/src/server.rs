//! [`WtServer`]: the QUIC/HTTP/3 endpoint, its transport configuration (windows and buffers
//! sized for a gateway), its accept loop and certificate rotation. Each incoming session is
//! handed to [`crate::handshake`]; what follows the handshake lives in [`crate::session`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use streamgate_core::{PerIpLimit, TapRegistry, TransportContext, TransportMetrics};
use tracing::Instrument;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::{Endpoint, ServerConfig, VarInt};

use crate::cert::{hex, CertHashHandle, CertHashTransport, CertSource, CertState, Regenerate};
use crate::config::WtConfig;
use crate::handshake::handle_incoming;
use crate::wire::close_code;

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
