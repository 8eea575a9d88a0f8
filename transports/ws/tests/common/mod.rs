//! Helpers shared by the WebSocket transport's integration tests.
//!
//! Two clients talk to a gateway started in this process on `127.0.0.1:0`:
//! - a real tokio-tungstenite client, for well-formed traffic;
//! - [`RawClient`], a hand-written client over a bare `TcpStream` that does the HTTP upgrade
//!   itself and writes frames built byte by byte (masked or not, valid or not), for the
//!   malformed cases a conforming library refuses to produce.
//!
//! Every network wait is bounded by [`WAIT`]: a test that would hang fails instead, naming
//! what it was waiting for.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use streamgate::config::GatewayConfig;
use streamgate_core::{ContentType, Event, Topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use streamgate::testkit::TestGateway;

/// Upper bound of every network wait. Generous: it only matters when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A configuration without the demo source, so only the test publishes, and with `/ws/echo`
/// on whether or not the lab is.
pub fn quiet() -> GatewayConfig {
    let mut config = TestGateway::quiet_config();
    config.ws.echo = streamgate_transport_ws::EchoMode::On;
    config
}

pub async fn start(config: GatewayConfig) -> TestGateway {
    TestGateway::start(config).await
}

/// The bus's current epoch.
pub fn epoch(gateway: &TestGateway) -> String {
    gateway.app.bus.health().epoch.as_str().to_owned()
}

/// Publishes one event straight on the bus and returns it (with the id the bus gave it).
pub async fn publish(
    gateway: &TestGateway,
    topic: &str,
    content_type: ContentType,
    payload: impl AsRef<[u8]>,
) -> Arc<Event> {
    let topic = Topic::new(topic).expect("valid topic");
    let payload = Bytes::copy_from_slice(payload.as_ref());
    within(
        "a publish",
        gateway.app.bus.publish(topic, content_type, payload),
    )
    .await
    .expect("publish accepted")
}

// ---------------------------------------------------------------------------------------------
// tokio-tungstenite client

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type WsResponse = tokio_tungstenite::tungstenite::handshake::client::Response;

pub fn url(gateway: &TestGateway, path_and_query: &str) -> String {
    format!("ws://{}{path_and_query}", gateway.addr)
}

/// Opens a WebSocket; the handshake must succeed.
pub async fn connect(gateway: &TestGateway, path_and_query: &str) -> Ws {
    connect_with(gateway, path_and_query, &[]).await.0
}

/// Opens a WebSocket with extra request headers; the handshake must succeed.
pub async fn connect_with(
    gateway: &TestGateway,
    path_and_query: &str,
    headers: &[(&'static str, &str)],
) -> (Ws, WsResponse) {
    let mut request = url(gateway, path_and_query)
        .into_client_request()
        .expect("valid URL");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).expect("header value"));
    }
    let (ws, response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .unwrap_or_else(|e| panic!("handshake to {path_and_query} failed: {e}"));
    assert_eq!(response.status(), 101);
    (ws, response)
}

/// The next message that is not a ping or pong (tungstenite answers pings by itself).
pub async fn next_message(ws: &mut Ws) -> Message {
    within("a WebSocket message", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(message)) => return message,
                Some(Err(e)) => panic!("read failed: {e}"),
                None => panic!("the connection ended"),
            }
        }
    })
    .await
}

/// The next message, which must be a JSON text message.
pub async fn next_json(ws: &mut Ws) -> Value {
    match next_message(ws).await {
        Message::Text(text) => {
            serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        }
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The next message, which must be a binary message.
pub async fn next_binary(ws: &mut Ws) -> Bytes {
    match next_message(ws).await {
        Message::Binary(bytes) => bytes,
        other => panic!("expected a binary message, got {other:?}"),
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    within("a send", ws.send(Message::text(text)))
        .await
        .expect("send");
}

pub async fn send_json(ws: &mut Ws, value: &Value) {
    send_text(ws, &value.to_string()).await;
}

/// Closes from the client side and reads until the server has finished the closing handshake.
pub async fn close(mut ws: Ws) {
    within("the client close", ws.close(None))
        .await
        .expect("close");
    within("the end of the connection", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Reads the `subscribed` reply and checks its topics and epoch.
pub async fn expect_subscribed(ws: &mut Ws, gateway: &TestGateway, topics: &[&str]) {
    let reply = next_json(ws).await;
    assert_eq!(
        reply,
        serde_json::json!({"type": "subscribed", "topics": topics, "epoch": epoch(gateway)}),
    );
}

/// `data` as the JSON envelope carries it for `event`.
pub fn envelope_data(event: &Event) -> Value {
    match event.content_type {
        ContentType::Json => serde_json::from_slice(&event.payload).expect("JSON payload"),
        ContentType::Text => {
            Value::String(String::from_utf8(event.payload.to_vec()).expect("UTF-8 payload"))
        }
        ContentType::Binary => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&event.payload))
        }
    }
}

/// Checks a JSON envelope against the event the bus published.
pub fn assert_json_event(message: &Value, event: &Event) {
    assert_eq!(
        message,
        &serde_json::json!({
            "type": "event",
            "topic": event.topic.as_str(),
            "id": event.id.to_string(),
            "ts": event.timestamp_us,
            "content_type": event.content_type.as_str(),
            "data": envelope_data(event),
        }),
        "envelope of {}",
        event.id
    );
}

/// Reads the next message, which must be the JSON envelope of `event`.
pub async fn expect_json_event(ws: &mut Ws, event: &Event) {
    let message = next_json(ws).await;
    assert_json_event(&message, event);
}

/// Reads the next message, which must be the binary envelope of `event`.
pub async fn expect_binary_event(ws: &mut Ws, event: &Event) {
    let message = next_binary(ws).await;
    assert_binary_event(&message, event);
}

/// A decoded binary envelope (`docs/PROTOCOL.md` §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryEnvelope {
    pub version: u8,
    pub kind: u8,
    pub content_type: u8,
    pub topic: String,
    pub id: String,
    pub ts: u64,
    pub payload: Vec<u8>,
}

/// Decodes a binary envelope field by field, checking every length against the message.
pub fn parse_binary_envelope(bytes: &[u8]) -> BinaryEnvelope {
    assert!(bytes.len() >= 4, "binary envelope too short: {bytes:?}");
    let topic_len = usize::from(bytes[3]);
    assert!(
        (1..=128).contains(&topic_len),
        "topic length {topic_len} out of range"
    );
    let id_at = 4 + topic_len;
    assert!(bytes.len() > id_at, "binary envelope cut in the topic");
    let id_len = usize::from(bytes[id_at]);
    assert!(
        (3..=53).contains(&id_len),
        "id length {id_len} out of range"
    );
    let ts_at = id_at + 1 + id_len;
    let payload_at = ts_at + 8;
    assert!(
        bytes.len() >= payload_at,
        "binary envelope cut before the payload"
    );
    BinaryEnvelope {
        version: bytes[0],
        kind: bytes[1],
        content_type: bytes[2],
        topic: String::from_utf8(bytes[4..id_at].to_vec()).expect("ASCII topic"),
        id: String::from_utf8(bytes[id_at + 1..ts_at].to_vec()).expect("ASCII id"),
        ts: u64::from_be_bytes(bytes[ts_at..payload_at].try_into().expect("8 bytes")),
        payload: bytes[payload_at..].to_vec(),
    }
}

/// Checks a binary envelope against the event the bus published.
pub fn assert_binary_event(bytes: &[u8], event: &Event) {
    let content_type = match event.content_type {
        ContentType::Text => 0,
        ContentType::Json => 1,
        ContentType::Binary => 2,
    };
    assert_eq!(
        parse_binary_envelope(bytes),
        BinaryEnvelope {
            version: 1,
            kind: 1,
            content_type,
            topic: event.topic.as_str().to_owned(),
            id: event.id.to_string(),
            ts: event.timestamp_us,
            payload: event.payload.to_vec(),
        },
        "binary envelope of {}",
        event.id
    );
}

// ---------------------------------------------------------------------------------------------
// Raw client

/// The `Sec-WebSocket-Key` of RFC 6455's example.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The masking key of every masked frame the raw client writes.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The headers of a valid upgrade request to `addr`, in order.
pub fn upgrade_headers(addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("Host", addr.to_string()),
        ("Upgrade", "websocket".to_owned()),
        ("Connection", "Upgrade".to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
        ("Sec-WebSocket-Key", KEY.to_owned()),
    ]
}

/// `headers` with `name` set to `value` (replaced if present, appended otherwise).
pub fn with_header(
    mut headers: Vec<(&'static str, String)>,
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name, value.to_owned()));
    headers
}

/// `headers` without `name`.
pub fn without_header(
    mut headers: Vec<(&'static str, String)>,
    name: &str,
) -> Vec<(&'static str, String)> {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers
}

/// An HTTP response as the raw client read it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `error.code` of a JSON error body (`docs/PROTOCOL.md` §6).
    pub fn error_code(&self) -> String {
        let body = self.json();
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {body}"))
            .to_owned()
    }
}

/// One frame as the raw client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The status code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The reason of a close frame (must be UTF-8).
    pub fn close_reason(&self) -> String {
        assert_eq!(self.opcode, OP_CLOSE, "not a close frame: {self:?}");
        String::from_utf8(self.payload.get(2..).unwrap_or_default().to_vec())
            .expect("close reason is UTF-8")
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("UTF-8 payload")
    }
}

/// Encodes one frame: `first_byte` holds FIN, RSV1-3 and the opcode; a `mask` masks the
/// payload (clients must mask, so `None` builds an invalid client frame on purpose).
pub fn encode_frame(first_byte: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let fin_bit = if fin { 0x80 } else { 0 };
    encode_frame(fin_bit | opcode, payload, Some(MASK))
}

/// The payload of a close frame.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// A WebSocket client over a bare TCP stream.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    /// Bytes read but not yet parsed.
    buffer: Vec<u8>,
}

/// How a read ended when no frame came.
#[derive(Debug)]
pub enum ReadEnd {
    /// The peer closed the TCP connection cleanly (FIN) between frames.
    Eof,
    /// The read failed (for example `ECONNRESET`).
    Error(io::Error),
}

impl RawClient {
    /// Opens a TCP connection and writes `request_head` (a full HTTP/1.1 request head for
    /// `method path` with `headers`), then reads the response head and, unless it is a 101,
    /// the body.
    pub async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&'static str, String)],
    ) -> (Self, HttpResponse) {
        let stream = within("a TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = Self {
            stream,
            buffer: Vec::new(),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if method != "GET" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        client.send(head.as_bytes()).await;
        let response = client.read_response().await;
        (client, response)
    }

    /// Just the response to an upgrade request.
    pub async fn http(
        gateway: &TestGateway,
        method: &str,
        path: &str,
        headers: &[(&'static str, String)],
    ) -> HttpResponse {
        Self::request(gateway.addr, method, path, headers).await.1
    }

    /// Upgrades `path`; the server must answer 101 with the right `Sec-WebSocket-Accept`.
    pub async fn connect(gateway: &TestGateway, path: &str) -> Self {
        let (client, response) =
            Self::request(gateway.addr, "GET", path, &upgrade_headers(gateway.addr)).await;
        assert_eq!(
            response.status,
            101,
            "upgrade of {path} refused: {:?} {}",
            response.headers,
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(derive_accept_key(KEY.as_bytes()).as_str())
        );
        client
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within("a raw write", self.stream.write_all(bytes))
            .await
            .expect("raw write");
    }

    /// Reads more bytes into the buffer; `Ok(0)` at EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = within("bytes from the server", self.stream.read(&mut chunk)).await?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads until the buffer holds `n` bytes; panics on EOF or error before that.
    async fn fill_to(&mut self, n: usize, what: &str) {
        while self.buffer.len() < n {
            match self.fill().await {
                Ok(0) => panic!("connection closed in the middle of {what}"),
                Ok(_) => {}
                Err(e) => panic!("read failed in the middle of {what}: {e}"),
            }
        }
    }

    async fn read_response(&mut self) -> HttpResponse {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            match self.fill().await {
                Ok(0) => panic!(
                    "connection closed before a full response head: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                ),
                Ok(_) => {}
                Err(e) => panic!("reading the response head failed: {e}"),
            }
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).expect("ASCII head");
        self.buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("header line");
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        let mut response = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if status != 101 {
            let length: usize = response
                .header("content-length")
                .map(|v| v.parse().expect("numeric Content-Length"))
                .expect("a refusal has a Content-Length body");
            self.fill_to(length, "the response body").await;
            response.body = self.buffer.drain(..length).collect();
        }
        response
    }

    /// Reads one frame; `Err` when the connection ended (cleanly or not) between frames.
    pub async fn read_frame(&mut self) -> Result<RawFrame, ReadEnd> {
        while self.buffer.len() < 2 {
            match self.fill().await {
                Ok(0) if self.buffer.is_empty() => return Err(ReadEnd::Eof),
                Ok(0) => panic!("connection closed in the middle of a frame header"),
                Ok(_) => {}
                Err(e) => return Err(ReadEnd::Error(e)),
            }
        }
        let (b0, b1) = (self.buffer[0], self.buffer[1]);
        assert_eq!(b1 & 0x80, 0, "the server masked a frame");
        let (len, header_len) = match b1 & 0x7F {
            126 => {
                self.fill_to(4, "a frame header").await;
                (
                    usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                    4,
                )
            }
            127 => {
                self.fill_to(10, "a frame header").await;
                let len = u64::from_be_bytes(self.buffer[2..10].try_into().expect("8 bytes"));
                (usize::try_from(len).expect("frame length fits usize"), 10)
            }
            len => (usize::from(len), 2),
        };
        self.fill_to(header_len + len, "a frame payload").await;
        let payload = self.buffer[header_len..header_len + len].to_vec();
        self.buffer.drain(..header_len + len);
        Ok(RawFrame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: b0 & 0x0F,
            payload,
        })
    }

    /// Reads one frame, which must come.
    pub async fn next_frame(&mut self) -> RawFrame {
        match self.read_frame().await {
            Ok(frame) => frame,
            Err(end) => panic!("expected a frame, the connection ended: {end:?}"),
        }
    }

    /// Reads the next frame, which must be a close frame with `code`; returns its reason.
    pub async fn expect_close(&mut self, code: u16) -> String {
        let frame = self.next_frame().await;
        assert_eq!(
            frame.opcode,
            OP_CLOSE,
            "expected a close frame with {code}, got {frame:?} ({:?})",
            String::from_utf8_lossy(&frame.payload)
        );
        assert!(frame.fin, "a control frame must not be fragmented");
        assert!(frame.payload.len() <= 125, "control frame over 125 bytes");
        let reason = frame.close_reason();
        assert_eq!(
            frame.close_code(),
            Some(code),
            "close code (reason {reason:?})"
        );
        reason
    }

    /// The server must close the TCP connection cleanly (EOF) with no further frame.
    pub async fn expect_eof(&mut self) {
        match self.read_frame().await {
            Err(ReadEnd::Eof) => {}
            Err(ReadEnd::Error(e)) => panic!("expected EOF, the read failed: {e}"),
            Ok(frame) => panic!("expected EOF, got a frame {frame:?}"),
        }
    }

    /// The server must end the TCP connection, with a FIN or a reset, with no further frame.
    pub async fn expect_disconnect(&mut self) {
        match self.read_frame().await {
            Err(ReadEnd::Eof) => {}
            Err(ReadEnd::Error(e)) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ),
                "unexpected read error {e}"
            ),
            Ok(frame) => panic!("expected the connection to end, got a frame {frame:?}"),
        }
    }

    /// Answers the server's close with `code` and waits for the TCP connection to end.
    pub async fn finish_close(&mut self, code: u16) {
        // The server may already have given up on the connection: a failed write is fine.
        let _ = self
            .stream
            .write_all(&frame(true, OP_CLOSE, &close_payload(code, "")))
            .await;
        self.expect_disconnect().await;
    }
}

/// Shuts the gateway down; every connection must have ended within the grace period.
/// Drop the test's clients first, or the server waits `ws.close_timeout` for each of them.
pub async fn stop(gateway: TestGateway) {
    let outcome = within("the gateway shutdown", gateway.shutdown()).await;
    assert_eq!(outcome, streamgate::ShutdownOutcome::Drained);
}
