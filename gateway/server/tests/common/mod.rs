//! Helpers shared by the gateway's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use streamgate::testkit::{TestClient, TestGateway, TestResponse as Response};

/// One request on a fresh connection; returns status, headers and body.
pub async fn send(
    gateway: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    TestClient::connect(gateway.addr)
        .await
        .request(method, path, headers, body)
        .await
}

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// `future`, or a panic naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// An SSE stream read from a raw socket.
pub struct Sse {
    stream: TcpStream,
    /// Everything received so far.
    pub seen: String,
}

impl Sse {
    /// Subscribes to `topics` and waits for the stream's preamble.
    pub async fn open(addr: SocketAddr, topics: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("GET /sse?topics={topics} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut sse = Self {
            stream,
            seen: String::new(),
        };
        // The subscription is made before the answer: once the preamble is here, it exists.
        sse.read_until(|seen| seen.contains("streamgate epoch"))
            .await;
        assert!(sse.seen.starts_with("HTTP/1.1 200"), "{}", sse.seen);
        sse
    }

    /// Reads until `done` holds for everything received.
    pub async fn read_until(&mut self, done: impl Fn(&str) -> bool) {
        within("SSE bytes", async {
            let mut buffer = [0u8; 4096];
            while !done(&self.seen) {
                let n = self.stream.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the SSE stream ended");
                self.seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        })
        .await;
    }

    /// Waits for the event with this payload marker.
    pub async fn expect(&mut self, marker: &str) {
        self.read_until(|seen| seen.contains(marker)).await;
    }

    /// Events received so far.
    pub fn events(&self) -> usize {
        self.seen.matches("\nid: ").count()
    }
}
