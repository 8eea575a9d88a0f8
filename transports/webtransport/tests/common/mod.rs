//! Helpers shared by the WebTransport integration tests: a gateway in this process (UDP and
//! TCP on 127.0.0.1:0) and a wtransport client that pins the gateway's certificate hash,
//! learnt from `GET /wt/cert-hash`. Every network wait is bounded by [`WAIT`].
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use streamgate::config::GatewayConfig;
use streamgate_core::{ContentType, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wtransport::error::{ConnectingError, ConnectionError};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream};

pub use streamgate::testkit::TestGateway;

/// Upper bound of every network wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

pub fn quiet() -> GatewayConfig {
    TestGateway::quiet_config()
}

/// `GET path` on the gateway's HTTP listener: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path).await
}

/// `method path` (no body) on the gateway's HTTP listener: (status, body).
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    within("HTTP request", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        let text = String::from_utf8(response).expect("utf-8 response");
        let status = text[9..12].parse().expect("status");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
}

/// The `/wt/cert-hash` document.
pub async fn cert_hash(gateway: &TestGateway) -> Value {
    let (status, body) = http_get(gateway.addr, "/wt/cert-hash").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

pub fn digest(doc: &Value) -> Sha256Digest {
    let bytes: Vec<u8> = doc["value"]
        .as_array()
        .expect("value array")
        .iter()
        .map(|b| b.as_u64().expect("byte") as u8)
        .collect();
    Sha256Digest::new(bytes.try_into().expect("32 bytes"))
}

/// A session the server closes at once (a refused URL or a limit): (code, reason), whether
/// the close arrives during the connect or right after it.
pub async fn refused(doc: &Value, query: &str) -> (u32, String) {
    refused_from(doc, query, [127, 0, 0, 1]).await
}

/// [`refused`], for a client at `from` (another loopback address is another client).
pub async fn refused_from(doc: &Value, query: &str, from: [u8; 4]) -> (u32, String) {
    let endpoint = Endpoint::client(client_config(doc, from)).expect("client endpoint");
    let url = format!("{}{query}", doc["url"].as_str().expect("url"));
    match within("WebTransport connect", endpoint.connect(url)).await {
        Ok(connection) => closed_by_server(&connection).await,
        Err(ConnectingError::ConnectionError(ConnectionError::ApplicationClosed(close))) => (
            u32::try_from(close.code().into_inner()).expect("u32 code"),
            String::from_utf8_lossy(close.reason()).into_owned(),
        ),
        Err(other) => panic!("expected an application close, got {other}"),
    }
}

fn client_config(doc: &Value, from: [u8; 4]) -> ClientConfig {
    ClientConfig::builder()
        .with_bind_address(SocketAddr::from((from, 0)))
        .with_server_certificate_hashes([digest(doc)])
        .build()
}

/// Opens a session to the document's URL followed by `query` (e.g. `?topics=a`), pinning the
/// hash in `doc`.
pub async fn connect_with(doc: &Value, query: &str) -> Result<Connection, String> {
    let endpoint = Endpoint::client(client_config(doc, [127, 0, 0, 1])).expect("client endpoint");
    let url = format!("{}{query}", doc["url"].as_str().expect("url"));
    within("WebTransport connect", endpoint.connect(url))
        .await
        .map_err(|e| e.to_string())
}

/// A session to the gateway, with `query` after `/wt`; panics if it does not open.
pub async fn connect(gateway: &TestGateway, query: &str) -> Connection {
    let doc = cert_hash(gateway).await;
    connect_with(&doc, query).await.expect("session opens")
}

/// The next length-prefixed message of `stream`; `None` at a clean end of stream.
pub async fn read_frame(stream: &mut RecvStream) -> Option<Bytes> {
    within("a framed message", async {
        let mut prefix = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match stream.read(&mut prefix[got..]).await.expect("read prefix") {
                Some(n) => got += n,
                None if got == 0 => return None,
                None => panic!("stream ended inside a length prefix"),
            }
        }
        let len = u32::from_be_bytes(prefix) as usize;
        let mut message = vec![0u8; len];
        stream.read_exact(&mut message).await.expect("read message");
        Some(Bytes::from(message))
    })
    .await
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The control stream, after checking its first message is `subscribed` in `mode`.
pub async fn control_stream(connection: &Connection, mode: &str) -> RecvStream {
    let mut control = within("control stream", connection.accept_uni())
        .await
        .expect("control stream");
    let first = json(&read_frame(&mut control).await.expect("subscribed"));
    assert_eq!(first["type"], "subscribed", "{first}");
    assert_eq!(first["mode"], mode, "{first}");
    control
}

pub async fn publish(
    gateway: &TestGateway,
    topic: &str,
    content_type: ContentType,
    payload: impl Into<Bytes>,
) -> Arc<Event> {
    gateway.publish(topic, content_type, payload).await
}

/// Waits for the session to be closed by the server: (code, reason).
pub async fn closed_by_server(connection: &Connection) -> (u32, String) {
    match within("the session to close", connection.closed()).await {
        ConnectionError::ApplicationClosed(close) => (
            u32::try_from(close.code().into_inner()).expect("u32 code"),
            String::from_utf8_lossy(close.reason()).into_owned(),
        ),
        other => panic!("expected an application close, got {other}"),
    }
}

/// `message` behind its u32 big-endian length.
pub fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = (message.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}
