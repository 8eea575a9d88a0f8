//! The lean HTTP/1.1 path (`src/h1.rs`) on the wire: keep-alive, pipelining, hand-over to
//! hyper in the middle of a connection, clients that leave while they wait, and the framing
//! of a stream, all from raw sockets so that every byte the gateway writes is seen.

mod common;

use common::{send, tls_connect, within, TestGateway};
use streamgate_compare::wire::find;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 connection, read byte for byte.
struct Raw<S = TcpStream> {
    stream: S,
    buffer: Vec<u8>,
}

impl Raw {
    async fn connect(gateway: &TestGateway) -> Self {
        Self::over(TcpStream::connect(gateway.addr).await.unwrap())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    fn over(stream: S) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads more; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = within("bytes from the gateway", self.stream.read(&mut chunk))
            .await
            .unwrap();
        self.buffer.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn until(&mut self, needle: &str) -> usize {
        loop {
            if let Some(at) = find(&self.buffer, needle.as_bytes()) {
                return at;
            }
            assert!(
                self.fill().await,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(&self.buffer)
            );
        }
    }

    /// The next response's head (lowercased) and its whole body, by `content-length` or
    /// chunked.
    async fn response(&mut self) -> (String, String) {
        let end = self.until("\r\n\r\n").await;
        let head = String::from_utf8(self.buffer.drain(..end + 4).collect())
            .unwrap()
            .to_ascii_lowercase();
        let body = if let Some(length) = header(&head, "content-length") {
            let length: usize = length.parse().unwrap();
            while self.buffer.len() < length {
                assert!(self.fill().await, "closed in a body");
            }
            self.buffer.drain(..length).collect()
        } else {
            assert_eq!(
                header(&head, "transfer-encoding"),
                Some("chunked"),
                "{head}"
            );
            let mut body = Vec::new();
            loop {
                let line_end = self.until("\r\n").await;
                let line = String::from_utf8(self.buffer.drain(..line_end + 2).collect()).unwrap();
                let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
                while self.buffer.len() < size + 2 {
                    assert!(self.fill().await, "closed in a chunk");
                }
                body.extend(self.buffer.drain(..size));
                assert_eq!(self.buffer.drain(..2).collect::<Vec<_>>(), b"\r\n");
                if size == 0 {
                    break;
                }
            }
            body
        };
        (head, String::from_utf8(body).unwrap())
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// The `cursor` of a long-poll answer.
fn cursor(body: &str) -> &str {
    let start = body.find(r#""cursor":""#).expect("a cursor") + 10;
    let length = body[start..].find('"').unwrap();
    &body[start..start + length]
}

/// The cursor for "everything in history": the epoch of `cursor`, sequence 0.
fn from_start(cursor: &str) -> String {
    format!("{}:0", cursor.rsplit_once(':').unwrap().0)
}

fn poll(topic: &str, timeout: u32) -> String {
    format!("GET /poll?topics={topic}&timeout={timeout} HTTP/1.1\r\nhost: test\r\n\r\n")
}

#[tokio::test]
async fn an_sse_stream_over_https_with_http_1_1_on_the_lean_path() {
    let mut config = TestGateway::quiet_config();
    config.tls.enabled = true;
    let gateway = TestGateway::start(config).await;
    let mut raw = Raw::over(tls_connect(&gateway, b"http/1.1").await);
    raw.write("GET /sse?topics=t HTTP/1.1\r\nhost: test\r\n\r\n")
        .await;
    raw.until("streamgate epoch").await;
    let head = String::from_utf8_lossy(&raw.buffer).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    send(&gateway, "POST", "/publish/t", &[], "{\"tls\":1}").await;
    raw.until("{\"tls\":1}").await;
    gateway.shutdown().await;
}

async fn subscribers(gateway: &TestGateway, topic: &str) -> u64 {
    let topics = send(gateway, "GET", "/topics", &[], "").await.json();
    topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == topic)
        .map_or(0, |t| t["subscribers"].as_u64().unwrap())
}

async fn keep_alive_polls_then_a_publish_on_the_same_connection(lean: bool) {
    let mut config = TestGateway::quiet_config();
    config.server.lean_http1 = lean;
    let gateway = TestGateway::start(config).await;
    let mut raw = Raw::connect(&gateway).await;

    raw.write(&poll("k", 0)).await;
    let (head, body) = raw.response().await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(header(&head, "date").is_some(), "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert_eq!(header(&head, "connection"), None, "kept alive: {head}");
    assert!(body.contains(r#""messages":[]"#), "{body}");
    let resume = cursor(&body).to_owned();

    // A publish on the same connection: a body, so hyper's from here on.
    raw.write("POST /publish/k HTTP/1.1\r\nhost: test\r\ncontent-length: 9\r\n\r\n{\"n\":42}\n")
        .await;
    let (head, body) = raw.response().await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}: {body}");

    // And a poll after it, served by hyper, resuming where the first left off.
    raw.write(&format!(
        "GET /poll?topics=k&cursor={resume} HTTP/1.1\r\nhost: test\r\n\r\n"
    ))
    .await;
    let (_, body) = raw.response().await;
    assert!(body.contains(r#"{"n":42}"#), "{body}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn long_polls_keep_the_connection_and_a_publish_on_it_goes_to_hyper() {
    keep_alive_polls_then_a_publish_on_the_same_connection(true).await;
}

#[tokio::test]
async fn the_same_connection_served_by_hyper_alone_reads_the_same() {
    keep_alive_polls_then_a_publish_on_the_same_connection(false).await;
}

#[tokio::test]
async fn pipelined_polls_are_answered_in_order_and_connection_close_is_honoured() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    send(&gateway, "POST", "/publish/a", &[], "\"from a\"").await;
    send(&gateway, "POST", "/publish/b", &[], "\"from b\"").await;
    let mut raw = Raw::connect(&gateway).await;
    raw.write(&poll("a", 0)).await;
    let (_, body) = raw.response().await;
    let start = from_start(cursor(&body));
    let from =
        |topic: &str| format!("GET /poll?topics={topic}&cursor={start} HTTP/1.1\r\nhost: test\r\n");
    raw.write(&format!(
        "{}\r\n{}\r\n{}connection: close\r\n\r\n",
        from("b"),
        from("a"),
        from("a"),
    ))
    .await;
    let (_, first) = raw.response().await;
    let (_, second) = raw.response().await;
    let (last_head, third) = raw.response().await;
    assert!(first.contains("from b"), "{first}");
    assert!(second.contains("from a"), "{second}");
    assert!(third.contains("from a"), "{third}");
    assert_eq!(header(&last_head, "connection"), Some("close"));
    assert!(!raw.fill().await, "closed after the last response");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_waiting_poll_ends_as_soon_as_its_client_leaves() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let mut raw = Raw::connect(&gateway).await;
    raw.write(&poll("w", 60)).await;
    within("the poll to wait", async {
        while subscribers(&gateway, "w").await != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(raw);
    // Well before the poll's 60 s: the subscription ends with the connection.
    within("the subscription to end", async {
        while subscribers(&gateway, "w").await != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_sse_stream_is_chunked_and_ends_with_the_last_chunk_at_shutdown() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let mut raw = Raw::connect(&gateway).await;
    raw.write("GET /sse?topics=s HTTP/1.1\r\nhost: test\r\n\r\n")
        .await;
    let end = raw.until("streamgate epoch").await;
    let head = String::from_utf8_lossy(&raw.buffer[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    send(&gateway, "POST", "/publish/s", &[], "{\"sse\":1}").await;
    raw.until("{\"sse\":1}").await;
    let app = std::sync::Arc::clone(&gateway.app);
    let stopping = tokio::spawn(gateway.shutdown());
    raw.until("server shutting down").await;
    // The stream's end: the last chunk, then the connection closes.
    raw.until("\r\n0\r\n\r\n").await;
    while raw.fill().await {}
    assert!(app.shutdown.is_cancelled());
    stopping.await.unwrap();
}
