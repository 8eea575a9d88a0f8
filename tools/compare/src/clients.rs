//! The subscribers: one client per transport, each reading the stream the way a real client
//! of that transport would, and tallying what arrives.
//!
//! WebSocket uses tokio-tungstenite, SSE over HTTP/2 uses hyper's client, WebTransport uses
//! wtransport. SSE and long polling over HTTP/1.1 use [`HttpConn`], a few lines of HTTP/1.1
//! written here so that reading is cancel-safe and every byte is counted at the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use streamgate_client::frame::FrameDecoder;
use streamgate_client::h1::{self, BodyFraming, ChunkedDecoder, ResponseHead};
use streamgate_client::sse;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::args::Transport;
use crate::stats::latency_histogram;
use crate::tls;
use crate::wire::{
    frame_header_len, parse_binary_event, parse_json_event, ByteCounts, Counted, EventFields,
};
use crate::wsdeflate::DeflateSocket;

/// Read buffer of each client connection. tungstenite's default (128 KiB) would cost 1.3 GB
/// for 10 000 clients; events are a few hundred bytes, so 8 KiB still takes many per read.
const CLIENT_READ_BUFFER: usize = 8 * 1024;

/// What every subscriber of a run shares.
pub struct ClientSetup {
    /// The transport.
    pub transport: Transport,
    /// The gateway's plain HTTP address.
    pub http: SocketAddr,
    /// Its HTTPS address (for `sse-h2`).
    pub tls: Option<SocketAddr>,
    /// The query every subscription sends (`topics=…[&envelope=binary]`).
    pub query: String,
    /// WebTransport: the session URL (with the query and mode).
    pub wt_url: Option<String>,
    /// WebTransport: client endpoints, shared round robin by the subscribers.
    pub wt_endpoints: Vec<wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>>,
    /// TLS client config for HTTPS (ALPN `h2`).
    pub tls_h2: Option<tokio_rustls::TlsConnector>,
    /// Long polling: `timeout=` of each poll, seconds.
    pub poll_timeout: f64,
}

impl std::fmt::Debug for ClientSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSetup")
            .field("transport", &self.transport)
            .field("http", &self.http)
            .field("query", &self.query)
            .field("wt_url", &self.wt_url)
            .field("wt_endpoints", &self.wt_endpoints.len())
            .finish_non_exhaustive()
    }
}

/// A connected subscriber of any transport, ready to read events.
pub enum Feed {
    /// WebSocket.
    Ws {
        /// The socket.
        socket: Box<WebSocketStream<Counted>>,
        /// Byte counts of its TCP connection.
        counts: Arc<ByteCounts>,
    },
    /// WebSocket offering permessage-deflate.
    WsDeflate {
        /// The socket.
        socket: Box<DeflateSocket>,
        /// Byte counts of its TCP connection.
        counts: Arc<ByteCounts>,
    },
    /// SSE over HTTP/1.1.
    Sse {
        /// The connection, past the response head.
        conn: HttpConn,
        /// Body text not yet split into blocks.
        text: Vec<u8>,
    },
    /// SSE over HTTP/2.
    SseH2 {
        /// The response body.
        body: hyper::body::Incoming,
        /// Keeps the HTTP/2 connection's request side open.
        _sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        /// Byte counts of its TCP connection (TLS records).
        counts: Arc<ByteCounts>,
        /// Body text not yet split into blocks.
        text: Vec<u8>,
    },
    /// Long polling.
    Poll {
        /// The keep-alive connection.
        conn: HttpConn,
        /// The cursor of the next poll.
        cursor: String,
        /// Request target up to the cursor.
        target: String,
        /// `timeout=` of each poll.
        timeout: f64,
        /// Whether a poll was cut off between its request and the end of its response:
        /// the connection is then out of step and is replaced before the next poll.
        in_flight: bool,
    },
    /// WebTransport.
    Wt {
        /// The session.
        connection: wtransport::Connection,
        /// Its control stream.
        control: FrameReader,
        /// Per-event streams being read (`stream-per-event`).
        per_event: futures_util::stream::FuturesUnordered<
            futures_util::future::BoxFuture<'static, anyhow::Result<Option<Vec<u8>>>>,
        >,
        /// Its mode.
        transport: Transport,
    },
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Ws { .. } => "ws",
            Self::WsDeflate { .. } => "ws-deflate",
            Self::Sse { .. } => "sse",
            Self::SseH2 { .. } => "sse-h2",
            Self::Poll { .. } => "longpoll",
            Self::Wt { .. } => "wt",
        };
        f.debug_tuple("Feed").field(&kind).finish()
    }
}

/// A connected subscriber and what connecting it cost.
#[derive(Debug)]
pub struct Connected {
    /// The subscriber.
    pub feed: Feed,
    /// Whether the gateway accepted the `permessage-deflate` offer (`ws-deflate` only).
    pub deflate_accepted: bool,
}

impl Feed {
    /// Bytes `(read, written)` on this connection so far.
    pub fn bytes(&self) -> (u64, u64) {
        match self {
            Self::Ws { counts, .. }
            | Self::WsDeflate { counts, .. }
            | Self::SseH2 { counts, .. } => (counts.read(), counts.written()),
            Self::Sse { conn, .. } | Self::Poll { conn, .. } => {
                (conn.counts.read(), conn.counts.written())
            }
            Self::Wt { connection, .. } => {
                let stats = connection.quic_connection().stats();
                (stats.udp_rx.bytes, stats.udp_tx.bytes)
            }
        }
    }

    /// Reads what arrives next into `tally`. `Ok(false)` when the stream ended.
    ///
    /// Cancel-safe for every transport but long polling (whose poll is a request and a
    /// response): the run cancels it only to stop.
    pub async fn next(&mut self, tally: &mut Tally) -> anyhow::Result<bool> {
        match self {
            Self::Ws { socket, .. } => match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let len = text.len();
                    tally.on_text(text.as_bytes(), len + frame_header_len(len));
                    Ok(true)
                }
                Some(Ok(Message::Binary(bytes))) => {
                    tally.on_binary(&bytes, bytes.len() + frame_header_len(bytes.len()));
                    Ok(true)
                }
                Some(Ok(Message::Close(frame))) => bail!("closed by the gateway: {frame:?}"),
                Some(Ok(_)) => Ok(true),
                Some(Err(e)) => Err(e).context("reading"),
                None => Ok(false),
            },
            Self::WsDeflate { socket, .. } => match socket.next().await? {
                // Framing as if uncompressed, so that frame bytes over wire bytes is the
                // compression ratio.
                Some(message) if message.text => {
                    let len = message.payload.len();
                    tally.on_text(&message.payload, len + frame_header_len(len));
                    Ok(true)
                }
                Some(message) => {
                    let len = message.payload.len();
                    tally.on_binary(&message.payload, len + frame_header_len(len));
                    Ok(true)
                }
                None => bail!("closed by the gateway"),
            },
            Self::Sse { conn, text } => {
                if !conn.chunk(text).await? {
                    return Ok(false);
                }
                read_sse_blocks(text, tally);
                Ok(true)
            }
            Self::SseH2 { body, text, .. } => match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        text.extend_from_slice(data);
                        read_sse_blocks(text, tally);
                    }
                    Ok(true)
                }
                Some(Err(e)) => Err(e).context("reading the HTTP/2 stream"),
                None => Ok(false),
            },
            Self::Poll {
                conn,
                cursor,
                target,
                timeout,
                in_flight,
            } => {
                if *in_flight {
                    *conn = HttpConn::connect(conn.host).await?;
                }
                *in_flight = true;
                let body = conn
                    .poll(&format!("{target}&cursor={cursor}&timeout={timeout}"))
                    .await?;
                *in_flight = false;
                tally.polls += 1;
                match serde_json::from_slice::<PollResponse<'_>>(&body) {
                    Ok(response) => {
                        for message in &response.messages {
                            let text = message.get().as_bytes();
                            tally.on_text(text, text.len());
                        }
                        *cursor = response.cursor;
                    }
                    Err(_) => tally.unreadable_events += 1,
                }
                Ok(true)
            }
            Self::Wt {
                connection,
                control,
                per_event,
                transport,
            } => {
                let transport = *transport;
                tokio::select! {
                    message = control.next() => match message? {
                        Some(message) => tally.on_wt_message(&message, 4 + message.len()),
                        None => return Ok(false),
                    },
                    stream = connection.accept_uni(), if transport == Transport::WtStreamPerEvent => {
                        let stream = stream.context("session")?;
                        per_event.push(Box::pin(async move {
                            FrameReader::new(stream).next().await
                        }));
                    }
                    Some(message) = per_event.next(), if !per_event.is_empty() => match message {
                        Ok(Some(message)) => tally.on_wt_message(&message, 4 + message.len()),
                        Ok(None) => tally.other_messages += 1,
                        Err(_) => tally.unreadable_events += 1,
                    },
                    datagram = connection.receive_datagram(), if transport == Transport::WtDatagram => {
                        let datagram = datagram.context("session")?;
                        tally.on_wt_message(&datagram, datagram.len());
                    }
                }
                Ok(true)
            }
        }
    }
}

/// Splits complete SSE blocks off `text` (streamgate-client's borrowed block views) and
/// tallies each block's `data:` lines.
fn read_sse_blocks(text: &mut Vec<u8>, tally: &mut Tally) {
    let mut start = 0;
    let mut data = Vec::new();
    while let Some((block, used)) = sse::next_block(&text[start..]) {
        data.clear();
        for field in block.fields().filter(|f| f.name == b"data") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(field.value);
        }
        if !data.is_empty() {
            tally.on_text(&data, data.len());
        }
        start += used;
    }
    text.drain(..start);
}

/// Connects one subscriber of `setup.transport` and waits until it is subscribed: the
/// `subscribed` message (WebSocket, WebTransport), the response head (SSE) or the first,
/// immediate poll's answer (long polling).
///
/// # Errors
/// Whatever failed, with context.
pub async fn connect(setup: &ClientSetup, slot: usize) -> anyhow::Result<Connected> {
    let mut deflate_accepted = false;
    let feed = match setup.transport {
        Transport::WsDeflate => {
            let (mut socket, accepted) = DeflateSocket::connect(setup.http, &setup.query).await?;
            deflate_accepted = accepted;
            match socket.next().await? {
                Some(message) if message.payload.starts_with(b"{\"type\":\"subscribed\"") => {}
                Some(message) => bail!(
                    "unexpected first message {}",
                    String::from_utf8_lossy(&message.payload)
                ),
                None => bail!("closed before subscribing"),
            }
            Feed::WsDeflate {
                counts: socket.counts(),
                socket: Box::new(socket),
            }
        }
        Transport::Ws => {
            let tcp = TcpStream::connect(setup.http)
                .await
                .context("TCP connect")?;
            tcp.set_nodelay(true)?;
            let stream = Counted::new(tcp);
            let counts = stream.counts();
            let request = format!("ws://{}/ws?{}", setup.http, setup.query)
                .into_client_request()
                .context("WebSocket request")?;
            let (mut socket, response) = ws_handshake(request, stream, CLIENT_READ_BUFFER).await?;
            anyhow::ensure!(
                response.headers().get("sec-websocket-extensions").is_none(),
                "the gateway answered an extension nobody offered"
            );
            wait_subscribed(&mut socket).await?;
            Feed::Ws {
                socket: Box::new(socket),
                counts,
            }
        }
        Transport::Sse => {
            let mut conn = HttpConn::connect(setup.http).await?;
            conn.send_get(&format!("/sse?{}", setup.query)).await?;
            let head = conn.head().await?;
            if head.status != 200 || head.framing != BodyFraming::Chunked {
                bail!(
                    "SSE answered {} ({:?}), expected a chunked 200",
                    head.status,
                    head.framing
                );
            }
            Feed::Sse {
                conn,
                text: Vec::new(),
            }
        }
        Transport::SseH2 => connect_sse_h2(setup).await?,
        Transport::Longpoll => {
            let mut conn = HttpConn::connect(setup.http).await?;
            let target = format!("/poll?{}", setup.query);
            // A first poll that answers at once: its cursor is the newest id.
            let body = conn.poll(&format!("{target}&cursor=&timeout=0")).await?;
            let response: PollResponse<'_> =
                serde_json::from_slice(&body).context("the first poll's answer")?;
            let cursor = response.cursor;
            Feed::Poll {
                conn,
                cursor,
                target,
                timeout: setup.poll_timeout,
                in_flight: false,
            }
        }
        Transport::WtStream | Transport::WtStreamPerEvent | Transport::WtDatagram => {
            let url = setup.wt_url.as_deref().context("no WebTransport URL")?;
            let endpoint = setup
                .wt_endpoints
                .get(slot % setup.wt_endpoints.len().max(1))
                .context("no WebTransport endpoint")?;
            let (connection, control) = connect_wt(endpoint, url).await?;
            Feed::Wt {
                connection,
                control,
                per_event: futures_util::stream::FuturesUnordered::new(),
                transport: setup.transport,
            }
        }
    };
    Ok(Connected {
        feed,
        deflate_accepted,
    })
}

async fn connect_sse_h2(setup: &ClientSetup) -> anyhow::Result<Feed> {
    let tls_addr = setup.tls.context("the gateway has no HTTPS listener")?;
    let connector = setup.tls_h2.as_ref().context("no TLS client")?;
    let tcp = TcpStream::connect(tls_addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let stream = Counted::new(tcp);
    let counts = stream.counts();
    let server_name = rustls::pki_types::ServerName::from(tls_addr.ip());
    let tls = connector
        .connect(server_name, stream)
        .await
        .context("TLS handshake")?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    anyhow::ensure!(
        alpn.as_deref() == Some(b"h2"),
        "the gateway did not choose HTTP/2 (ALPN {alpn:?})"
    );
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .context("HTTP/2 handshake")?;
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://{tls_addr}/sse?{}", setup.query))
        .body(Empty::<Bytes>::new())
        .context("request")?;
    let response = sender
        .send_request(request)
        .await
        .context("SSE request over HTTP/2")?;
    anyhow::ensure!(
        response.status() == 200,
        "SSE over HTTP/2 answered {}",
        response.status()
    );
    Ok(Feed::SseH2 {
        body: response.into_body(),
        _sender: sender,
        counts,
        text: Vec::new(),
    })
}

/// The WebSocket handshake of `request` over `stream`, as a subscriber: reads of
/// `read_buffer` bytes, every frame written at once (no write buffering).
///
/// # Errors
/// If the handshake fails.
pub async fn ws_handshake<S>(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: S,
    read_buffer: usize,
) -> anyhow::Result<(
    WebSocketStream<S>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .context("WebSocket handshake")
}

/// Reads a WebSocket until its `subscribed` reply.
///
/// # Errors
/// If anything else comes first or the connection ends.
pub async fn wait_subscribed<S>(socket: &mut WebSocketStream<S>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text)))
                if text.as_str().starts_with("{\"type\":\"subscribed\"") =>
            {
                return Ok(())
            }
            Some(Ok(Message::Text(text))) => bail!("unexpected first message {}", text.as_str()),
            Some(Ok(Message::Close(frame))) => bail!("closed before subscribing: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading the subscribed reply"),
            None => bail!("connection ended before the subscribed reply"),
        }
    }
}

/// Opens a WebTransport session and reads its control stream's `subscribed` message.
///
/// # Errors
/// If the session fails or something else comes first.
pub async fn connect_wt(
    endpoint: &wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    url: &str,
) -> anyhow::Result<(wtransport::Connection, FrameReader)> {
    let connection = endpoint
        .connect(url)
        .await
        .context("WebTransport connect")?;
    let control = connection.accept_uni().await.context("control stream")?;
    let mut control = FrameReader::new(control);
    let first = control
        .next()
        .await?
        .context("control stream ended at once")?;
    if !first.starts_with(b"{\"type\":\"subscribed\"") {
        bail!(
            "unexpected first message {}",
            String::from_utf8_lossy(&first)
        );
    }
    Ok((connection, control))
}

/// A WebTransport client endpoint pinning the gateway's certificate hash.
///
/// # Errors
/// If the UDP socket cannot be bound.
pub fn wt_endpoint(
    hash: [u8; 32],
    bind: std::net::IpAddr,
) -> anyhow::Result<wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>> {
    let config = wtransport::ClientConfig::builder()
        .with_bind_address(SocketAddr::new(bind, 0))
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .max_idle_timeout(Some(Duration::from_secs(120)))
        .context("idle timeout")?
        .build();
    wtransport::Endpoint::client(config).context("WebTransport client endpoint")
}

/// `GET /wt/cert-hash`: the WebTransport certificate's SHA-256 and the session URL.
///
/// # Errors
/// If the gateway has no WebTransport or answers something else.
pub async fn cert_hash(http: SocketAddr) -> anyhow::Result<([u8; 32], String)> {
    let fetch = async {
        let mut conn = HttpConn::connect(http).await?;
        conn.send_get("/wt/cert-hash").await?;
        let head = conn.head().await?;
        let body = conn.body(&head).await?;
        anyhow::ensure!(head.status == 200, "/wt/cert-hash answered {}", head.status);
        let doc: serde_json::Value = serde_json::from_slice(&body)?;
        let bytes: Vec<u8> = doc["value"]
            .as_array()
            .context("no value array")?
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        let hash: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("hash not 32 bytes"))?;
        let url = doc["url"].as_str().context("no url")?.to_owned();
        anyhow::Ok((hash, url))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .context("/wt/cert-hash timed out")?
}

/// A TLS connector for the gateway's HTTPS listener offering `alpn`.
///
/// # Errors
/// If rustls refuses the configuration.
pub fn tls_connector(alpn: &[u8]) -> anyhow::Result<tokio_rustls::TlsConnector> {
    tls::connector(alpn)
}

/// A rustls certificate verifier that accepts whatever certificate the server presents
/// (still checking the handshake signatures with `provider`'s algorithms): for a client of a
/// gateway with a generated self-signed certificate, such as a QUIC one.
pub fn any_certificate(
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier> {
    tls::any_certificate(provider)
}

/// An HTTP/1.1 client connection that counts every byte read and written, for SSE and long
/// polling (here and in `bench/`'s `loadgen`). On the socket directly so the counts are
/// exactly the bytes on it (headers and chunked framing included) and reading is cancel-safe
/// (all state is in the struct, and a request is written apart from reading its answer); the
/// parsing is streamgate-client's sans-IO `h1` (heads through httparse, chunked bodies).
#[derive(Debug)]
pub struct HttpConn {
    tcp: Counted,
    counts: Arc<ByteCounts>,
    host: SocketAddr,
    buf: Vec<u8>,
    /// How the body after the last head ends.
    framing: BodyFraming,
    /// The chunked body being read, since the last head.
    chunked: ChunkedDecoder,
}

/// A response head, as streamgate-client parsed it.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// How its body ends.
    pub framing: BodyFraming,
    response: ResponseHead,
}

impl Head {
    /// The first header called `name` (lowercase), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.header(name)
    }
}

/// A long-polling response.
#[derive(serde::Deserialize)]
struct PollResponse<'a> {
    cursor: String,
    #[serde(borrow)]
    messages: Vec<&'a serde_json::value::RawValue>,
}

impl HttpConn {
    /// Opens a connection to `addr`.
    ///
    /// # Errors
    /// If the connection fails.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
        Self::over(tcp)
    }

    /// The connection over `tcp`, already connected (from a chosen source address, say).
    ///
    /// # Errors
    /// If the socket has no peer or refuses `TCP_NODELAY`.
    pub fn over(tcp: TcpStream) -> anyhow::Result<Self> {
        tcp.set_nodelay(true)?;
        let host = tcp.peer_addr()?;
        let tcp = Counted::new(tcp);
        Ok(Self {
            counts: tcp.counts(),
            tcp,
            host,
            buf: Vec::with_capacity(CLIENT_READ_BUFFER),
            framing: BodyFraming::Empty,
            chunked: ChunkedDecoder::default(),
        })
    }

    /// Writes a `GET` request for `target`.
    ///
    /// # Errors
    /// If the write fails.
    pub async fn send_get(&mut self, target: &str) -> anyhow::Result<()> {
        self.send_get_with(target, &[]).await
    }

    /// Writes a `GET` request for `target` with these extra headers.
    ///
    /// # Errors
    /// If the write fails.
    pub async fn send_get_with(
        &mut self,
        target: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let request = h1::request("GET", target, &self.host.to_string(), headers, b"");
        self.tcp.write_all(&request).await?;
        Ok(())
    }

    /// Reads more into `buf`; an error at the end of the connection.
    async fn fill(&mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncReadExt as _;
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(CLIENT_READ_BUFFER);
        }
        let n = self.tcp.read_buf(&mut self.buf).await?;
        if n == 0 {
            bail!("connection ended");
        }
        Ok(())
    }

    /// Reads a response head.
    ///
    /// # Errors
    /// If the connection ends or the head is malformed.
    pub async fn head(&mut self) -> anyhow::Result<Head> {
        let response = loop {
            if let Some(head) = ResponseHead::parse(&self.buf)? {
                break head;
            }
            self.fill().await?;
        };
        self.buf.drain(..response.len);
        self.framing = response.framing();
        self.chunked = ChunkedDecoder::default();
        Ok(Head {
            status: response.status,
            framing: self.framing,
            response,
        })
    }

    /// The next piece of a chunked body appended to `out`; `false` once its last chunk has
    /// been read.
    ///
    /// # Errors
    /// If the connection ends or a chunk is malformed.
    pub async fn chunk(&mut self, out: &mut Vec<u8>) -> anyhow::Result<bool> {
        let before = out.len();
        loop {
            let used = self.chunked.feed(&self.buf, out)?;
            self.buf.drain(..used);
            if self.chunked.is_done() {
                return Ok(false);
            }
            if out.len() > before {
                return Ok(true);
            }
            self.fill().await?;
        }
    }

    /// The next piece of a streamed body (an event stream) appended to `out`, chunked or
    /// lasting until the connection closes; `false` once a chunked one has ended.
    ///
    /// # Errors
    /// If the connection ends or a chunk is malformed.
    pub async fn stream(&mut self, out: &mut Vec<u8>) -> anyhow::Result<bool> {
        if self.framing == BodyFraming::Chunked {
            return self.chunk(out).await;
        }
        if self.buf.is_empty() {
            self.fill().await?;
        }
        out.append(&mut self.buf);
        Ok(true)
    }

    /// The whole body after `head`.
    ///
    /// # Errors
    /// If the connection ends first, or the body would last until it does.
    pub async fn body(&mut self, head: &Head) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        match head.framing {
            BodyFraming::Empty => {}
            BodyFraming::Chunked => while self.chunk(&mut out).await? {},
            BodyFraming::Length(len) => {
                let len = usize::try_from(len).context("body length")?;
                while self.buf.len() < len {
                    self.fill().await?;
                }
                out.extend(self.buf.drain(..len));
            }
            BodyFraming::UntilClose => bail!("no body length"),
        }
        Ok(out)
    }

    /// One long poll: `GET target`, its 200 body.
    ///
    /// # Errors
    /// If the poll fails or is answered with another status.
    pub async fn poll(&mut self, target: &str) -> anyhow::Result<Vec<u8>> {
        self.send_get(target).await?;
        let head = self.head().await?;
        let body = self.body(&head).await?;
        if head.status != 200 {
            bail!(
                "poll answered {}: {}",
                head.status,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }
}

/// A WebTransport stream read as length-prefixed messages (streamgate-client's
/// `FrameDecoder`), cancel-safe (state in the struct).
pub struct FrameReader {
    stream: wtransport::RecvStream,
    frames: FrameDecoder,
    chunk: Box<[u8]>,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("offset", &self.frames.offset())
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// Reads messages from `stream`.
    pub fn new(stream: wtransport::RecvStream) -> Self {
        Self {
            stream,
            frames: FrameDecoder::default(),
            chunk: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    /// The next message (without its prefix); `None` at the end of the stream.
    ///
    /// # Errors
    /// If the stream is reset, announces a message over the crate's limit, or ends inside a
    /// message.
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            if let Some(message) = self.frames.next_frame()? {
                return Ok(Some(message));
            }
            match self.stream.read(&mut self.chunk).await? {
                Some(n) => self.frames.feed(&self.chunk[..n]),
                None if !self.frames.is_mid_message() => return Ok(None),
                None => bail!("stream ended inside a message"),
            }
        }
    }
}

/// The events of one phase of a run: indices `first..first + events`.
#[derive(Clone, Copy, Debug)]
pub struct PhaseBounds {
    /// Index of its first event.
    pub first: u64,
    /// How many.
    pub events: u64,
}

/// What one subscriber saw of one phase.
#[derive(Debug)]
pub struct PhaseTally {
    /// Scheduled send time → receive, nanoseconds.
    pub latency: Histogram<u32>,
    /// Gateway publish time (`ts`) → receive, nanoseconds (from microseconds).
    pub fanout: Histogram<u32>,
    /// Events received.
    pub deliveries: u64,
    /// Bytes of the event messages (envelopes) received.
    pub message_bytes: u64,
    /// `message_bytes` plus the framing each message came in that the client can see
    /// without the socket: a WebSocket frame header, the WebTransport length prefix.
    pub frame_bytes: u64,
    /// Deliveries whose index was not above the previous one's (ordered transports).
    pub misordered: u64,
    /// Order-independent digest of `(index, id)` of every delivery: every subscriber that
    /// received everything has the same one iff all saw the same ids.
    pub id_digest: u64,
    /// When the last delivery arrived (ns since the Unix epoch).
    pub last_receive_ns: u64,
    /// Whether the phase is over for this subscriber (all received, or closed by the run).
    pub done: bool,
    /// Socket bytes `(read, written)` when the phase ended for this subscriber.
    pub bytes_at_end: (u64, u64),
    previous: Option<u64>,
}

impl PhaseTally {
    fn new() -> Self {
        Self {
            latency: latency_histogram(),
            fanout: latency_histogram(),
            deliveries: 0,
            message_bytes: 0,
            frame_bytes: 0,
            misordered: 0,
            id_digest: 0,
            last_receive_ns: 0,
            done: false,
            bytes_at_end: (0, 0),
            previous: None,
        }
    }
}

/// What one subscriber saw.
#[derive(Debug)]
pub struct Tally {
    /// One per phase.
    pub phases: Vec<PhaseTally>,
    bounds: Vec<PhaseBounds>,
    ordered: bool,
    /// `lagged` notices.
    pub lagged: u64,
    /// `gap` notices.
    pub gaps: u64,
    /// `error` messages.
    pub errors: u64,
    /// Messages that were neither events nor expected notices.
    pub other_messages: u64,
    /// Event messages the client could not read.
    pub unreadable_events: u64,
    /// Long polling: polls answered.
    pub polls: u64,
    /// Whether it got subscribed.
    pub connected: bool,
    /// Why the connection ended before the run did, if it did.
    pub dropped: Option<String>,
    /// Socket bytes `(read, written)` once subscribed.
    pub bytes_at_ready: (u64, u64),
}

impl Tally {
    /// A tally for events in `bounds`, phase by phase.
    pub fn new(bounds: Vec<PhaseBounds>, ordered: bool) -> Self {
        Self {
            phases: bounds.iter().map(|_| PhaseTally::new()).collect(),
            bounds,
            ordered,
            lagged: 0,
            gaps: 0,
            errors: 0,
            other_messages: 0,
            unreadable_events: 0,
            polls: 0,
            connected: false,
            dropped: None,
            bytes_at_ready: (0, 0),
        }
    }

    /// Whether every phase is over.
    pub fn finished(&self) -> bool {
        self.phases.iter().all(|phase| phase.done)
    }

    fn on_event(&mut self, event: &EventFields, message_len: usize, frame_len: usize) {
        let now_ns = wall_ns();
        let Some(slot) = self
            .bounds
            .iter()
            .position(|b| (b.first..b.first + b.events).contains(&event.index))
        else {
            self.other_messages += 1;
            return;
        };
        let bounds = self.bounds[slot];
        let phase = &mut self.phases[slot];
        // A u32 counter saturates rather than wrapping; no run records 4 billion samples.
        let _ = phase.latency.record(now_ns.saturating_sub(event.sent_ns));
        let _ = phase
            .fanout
            .record(now_ns.saturating_sub(event.ts_us.saturating_mul(1_000)));
        phase.deliveries += 1;
        phase.message_bytes += message_len as u64;
        phase.frame_bytes += frame_len as u64;
        phase.last_receive_ns = now_ns;
        phase.id_digest = phase
            .id_digest
            .wrapping_add(id_hash(event.index, &event.id));
        if phase
            .previous
            .is_some_and(|previous| event.index <= previous)
        {
            phase.misordered += 1;
        }
        phase.previous = Some(event.index);
        let last = event.index + 1 == bounds.first + bounds.events;
        if (self.ordered && last) || phase.deliveries >= bounds.events {
            phase.done = true;
        }
    }

    fn on_text(&mut self, text: &[u8], frame_len: usize) {
        if text.starts_with(b"{\"type\":\"event\"") {
            match parse_json_event(text) {
                Some(event) => self.on_event(&event, text.len(), frame_len),
                None => self.unreadable_events += 1,
            }
            return;
        }
        let kind = serde_json::from_slice::<serde_json::Value>(text)
            .ok()
            .and_then(|value| value.get("type")?.as_str().map(str::to_owned));
        match kind.as_deref() {
            Some("lagged") => self.lagged += 1,
            Some("gap") => self.gaps += 1,
            Some("error") => self.errors += 1,
            Some("subscribed") => {}
            _ => self.other_messages += 1,
        }
    }

    fn on_binary(&mut self, bytes: &[u8], frame_len: usize) {
        match parse_binary_event(bytes) {
            Some(event) => self.on_event(&event, bytes.len(), frame_len),
            None => self.unreadable_events += 1,
        }
    }

    /// A WebTransport message: a JSON envelope or (first byte 1) a binary one.
    fn on_wt_message(&mut self, bytes: &[u8], frame_len: usize) {
        if bytes.first() == Some(&1) {
            self.on_binary(bytes, frame_len);
        } else {
            self.on_text(bytes, frame_len);
        }
    }
}

/// A 64-bit hash of an event's index and id (FNV-1a: small, stable, no dependency).
fn id_hash(index: u64, id: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in index.to_le_bytes().iter().chain(id.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Nanoseconds since the Unix epoch: the one clock the clients and the gateway share.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::payload;

    fn envelope(index: u64, id: &str) -> Vec<u8> {
        let mut data = String::new();
        payload(&mut data, wall_ns(), index, 64);
        format!(
            "{{\"type\":\"event\",\"topic\":\"t\",\"id\":\"{id}\",\"ts\":1,\
             \"content_type\":\"json\",\"data\":{data}}}"
        )
        .into_bytes()
    }

    #[test]
    fn phases_end_at_their_last_event_when_ordered() {
        let bounds = vec![
            PhaseBounds {
                first: 0,
                events: 2,
            },
            PhaseBounds {
                first: 2,
                events: 3,
            },
        ];
        let mut tally = Tally::new(bounds, true);
        tally.on_text(&envelope(0, "e:1"), 0);
        assert!(!tally.phases[0].done);
        tally.on_text(&envelope(1, "e:2"), 0);
        assert!(tally.phases[0].done);
        tally.on_text(&envelope(4, "e:5"), 0);
        assert!(
            tally.phases[1].done,
            "ordered: the last index ends the phase"
        );
        assert_eq!(tally.phases[1].deliveries, 1);
        assert!(tally.finished());
    }

    #[test]
    fn unordered_phases_wait_for_the_count() {
        let mut tally = Tally::new(
            vec![PhaseBounds {
                first: 0,
                events: 3,
            }],
            false,
        );
        tally.on_text(&envelope(2, "e:3"), 0);
        tally.on_text(&envelope(0, "e:1"), 0);
        assert!(!tally.finished());
        assert_eq!(tally.phases[0].misordered, 1);
        tally.on_text(&envelope(1, "e:2"), 0);
        assert!(tally.finished());
    }

    #[test]
    fn the_id_digest_ignores_order_but_not_ids() {
        let bounds = || {
            vec![PhaseBounds {
                first: 0,
                events: 2,
            }]
        };
        let mut a = Tally::new(bounds(), false);
        a.on_text(&envelope(0, "e:1"), 0);
        a.on_text(&envelope(1, "e:2"), 0);
        let mut b = Tally::new(bounds(), false);
        b.on_text(&envelope(1, "e:2"), 0);
        b.on_text(&envelope(0, "e:1"), 0);
        let mut c = Tally::new(bounds(), false);
        c.on_text(&envelope(0, "e:1"), 0);
        c.on_text(&envelope(1, "e:3"), 0);
        assert_eq!(a.phases[0].id_digest, b.phases[0].id_digest);
        assert_ne!(a.phases[0].id_digest, c.phases[0].id_digest);
    }

    #[test]
    fn notices_are_counted() {
        let mut tally = Tally::new(Vec::new(), true);
        tally.on_text(br#"{"type":"lagged"}"#, 0);
        tally.on_text(br#"{"type":"gap","from":"a:1"}"#, 0);
        tally.on_text(br#"{"type":"subscribed"}"#, 0);
        tally.on_text(b"not json", 0);
        assert_eq!((tally.lagged, tally.gaps, tally.other_messages), (1, 1, 1));
    }

    #[test]
    fn sse_blocks_are_split_at_blank_lines() {
        let mut tally = Tally::new(
            vec![PhaseBounds {
                first: 0,
                events: 2,
            }],
            true,
        );
        let mut text = b"retry: 1000\n\n".to_vec();
        for (index, id) in [(0, "e:1"), (1, "e:2")] {
            text.extend_from_slice(format!("id: {id}\nevent: t\ndata: ").as_bytes());
            text.extend_from_slice(&envelope(index, id));
            text.extend_from_slice(b"\n\n");
        }
        text.extend_from_slice(b"id: e:3\ndata: {\"ty");
        read_sse_blocks(&mut text, &mut tally);
        assert_eq!(tally.phases[0].deliveries, 2);
        assert_eq!(text, b"id: e:3\ndata: {\"ty");
    }
}
