//! Helpers shared by the gateway's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// A TLS connection to the gateway's HTTPS listener, trusting exactly its (generated)
/// certificate, offering the ALPN protocol `alpn` (`b"h2"`, `b"http/1.1"`).
pub async fn tls_connect(
    gateway: &TestGateway,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let material = gateway.app.tls.as_ref().expect("TLS is on");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(material.certificate.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(gateway.tls_addr.expect("an HTTPS listener"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = within(
        "the TLS handshake",
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    stream
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
        Self::over(TcpStream::connect(addr).await.unwrap(), topics, "").await
    }

    /// [`Sse::open`] on a connection of the caller's, with `extra_headers` (each line ending
    /// in CRLF) in the request.
    pub async fn over(mut stream: TcpStream, topics: &str, extra_headers: &str) -> Self {
        let head =
            format!("GET /sse?topics={topics} HTTP/1.1\r\nhost: test\r\n{extra_headers}\r\n");
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

    /// Reads everything left, until the gateway ends the connection.
    pub async fn read_until_closed(&mut self) {
        let rest = read_until_closed(&mut self.stream).await;
        self.seen.push_str(&String::from_utf8_lossy(&rest));
    }
}

/// Everything left to read on a connection, until it ends (EOF, or an error such as a reset).
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    within("the connection to end", async {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
            seen.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    seen
}

/// One raw request on a fresh connection, read until the gateway closes it: the whole answer
/// and how long that took.
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// `POST /publish/{topic}` with a JSON body over `client`; the gateway must take it (200).
pub async fn publish_json(client: &mut TestClient, topic: &str, json: impl Into<Bytes>) {
    let response = client
        .request(
            "POST",
            &format!("/publish/{topic}"),
            &[("content-type", "application/json")],
            json,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT signed HS256 with `secret`, that may subscribe to `subscribe` and publish to
/// `publish`, valid for `ttl` seconds.
pub fn hs256_token(secret: &str, subscribe: &[&str], publish: &[&str], ttl: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({
            "sub": "tester",
            "exp": now() + ttl,
            "streamgate": {"subscribe": subscribe, "publish": publish},
        }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Asserts `body` is the gateway's JSON error `code` with a reason mentioning `reason`.
pub fn assert_error(body: &serde_json::Value, code: &str, reason: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(reason)),
        "{body}"
    );
}

/// Asserts `response` is a refusal: `status` and the JSON error `code`; a `401` also says
/// how to authenticate (`WWW-Authenticate: Bearer`).
pub fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.json()["error"]["code"],
        code,
        "{}",
        response.text()
    );
    if status == 401 {
        assert!(
            response
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{:?}",
            response.headers
        );
    }
}

/// [`assert_refused`], with a reason mentioning `reason`.
pub fn assert_refused_because(response: &Response, status: u16, code: &str, reason: &str) {
    assert_refused(response, status, code);
    assert_error(&response.json(), code, reason);
}

/// The certificate digest a `GET /wt/cert-hash` document (`doc`) gives a WebTransport
/// client to trust.
pub fn cert_hash_digest(doc: &serde_json::Value) -> wtransport::tls::Sha256Digest {
    let bytes: Vec<u8> = doc["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    wtransport::tls::Sha256Digest::new(bytes.try_into().unwrap())
}

/// One sample: name and labels, sorted.
pub type Series = (String, Vec<(String, String)>);

/// Parses the text exposition format strictly enough to catch a malformed line.
pub fn parse(text: &str) -> HashMap<Series, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment line {line:?}"
            );
            if let Some(kind) = comment.strip_prefix("TYPE ") {
                let kind = kind.split_whitespace().nth(1).expect("a TYPE has a kind");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line:?}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = Vec::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (key, quoted) = pair.split_once('=').expect("label=value");
                    let value = quoted
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("quoted label value");
                    labels.push((key.to_owned(), value.to_owned()));
                }
                labels.sort();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        samples.insert((name.to_owned(), labels), value);
    }
    samples
}

/// One scrape of `GET /metrics`, parsed.
#[derive(Debug)]
pub struct Scrape(pub HashMap<Series, f64>);

impl Scrape {
    /// The sum of every series of `name` carrying all of `labels` (0 when there is none).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// `GET /metrics`, checked to be the Prometheus text format, parsed.
pub async fn scrape(gateway: &TestGateway) -> Scrape {
    let response = send(gateway, "GET", "/metrics", &[], "").await;
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    Scrape(parse(&response.text()))
}
