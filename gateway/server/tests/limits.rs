//! Connection and rate limits under abuse: per-IP connections, slowloris, publish floods,
//! idle and dead connections. Each test also checks that the other, well-behaved clients are
//! not affected.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{publish_json, scrape, send, tls_connect, within, Sse, TestClient, TestGateway};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use streamgate::config::GatewayConfig;
use streamgate_core::{ContentType, Topic};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Reads what the server sends until it closes; the bytes and how long that took.
async fn read_to_close(stream: &mut (impl AsyncRead + Unpin)) -> (String, Duration) {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    within("the server to close the connection", async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    (String::from_utf8_lossy(&seen).into_owned(), start.elapsed())
}

async fn publish(gateway: &TestGateway, topic: &str, payload: &str) {
    gateway
        .app
        .bus
        .publish(
            Topic::new(topic).unwrap(),
            ContentType::Json,
            Bytes::copy_from_slice(payload.as_bytes()),
        )
        .await
        .expect("published");
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_get_429_and_the_others_keep_receiving() {
    const N: usize = 3;
    let mut config = TestGateway::quiet_config();
    config.server.max_connections_per_ip = N;
    let gateway = TestGateway::start(config).await;
    let mut streams = Vec::new();
    for _ in 0..N {
        streams.push(Sse::open(gateway.addr, "t").await);
    }

    // The N+1th connection from 127.0.0.1 is answered 429 without being read, and closed.
    let mut extra = TcpStream::connect(gateway.addr).await.unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(
        answer.contains(r#""code":"too_many_connections""#),
        "{answer}"
    );
    assert!(answer.contains("connection: close"), "{answer}");

    // The first N keep receiving.
    publish(&gateway, "t", r#"{"after":"refusal"}"#).await;
    for stream in &mut streams {
        stream.expect(r#"{"after":"refusal"}"#).await;
    }

    // Once one of them leaves, a new connection is served again.
    drop(streams.pop());
    let status = within("a freed slot", async {
        loop {
            let mut probe = TcpStream::connect(gateway.addr).await.unwrap();
            probe
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let (answer, _) = read_to_close(&mut probe).await;
            if !answer.starts_with("HTTP/1.1 429 ") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    publish(&gateway, "t", r#"{"after":"freed"}"#).await;
    for stream in &mut streams {
        stream.expect(r#"{"after":"freed"}"#).await;
    }
    gateway.shutdown().await;
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: &'static [u8], gap: Duration) {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(std::slice::from_ref(byte)).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
}

#[tokio::test]
async fn slowloris_clients_are_cut_at_the_header_timeout_while_others_are_served() {
    let timeout = Duration::from_secs(1);
    let mut config = TestGateway::quiet_config();
    config.server.header_read_timeout = timeout;
    let gateway = TestGateway::start(config).await;
    let mut subscriber = Sse::open(gateway.addr, "t").await;

    // Three kinds of slow client: silent, a request head a byte at a time, and the HTTP/2
    // preface a byte at a time.
    let silent = TcpStream::connect(gateway.addr).await.unwrap();
    let mut slow = Vec::new();
    for head in [
        &b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        let stream = TcpStream::connect(gateway.addr).await.unwrap();
        let (reader, writer) = stream.into_split();
        trickle(writer, head, Duration::from_millis(150));
        slow.push(reader);
    }

    // Meanwhile, a normal client is served and the subscriber receives.
    let started = Instant::now();
    let healthz = send(&gateway, "GET", "/healthz", &[], "").await;
    assert_eq!(healthz.status, 200);
    assert!(started.elapsed() < timeout, "served without waiting");
    publish(&gateway, "t", r#"{"during":"slowloris"}"#).await;
    subscriber.expect(r#"{"during":"slowloris"}"#).await;

    let mut silent = silent;
    let (answer, elapsed) = read_to_close(&mut silent).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(elapsed < timeout * 3, "silent client cut after {elapsed:?}");
    for mut reader in slow {
        let start = Instant::now();
        within("a slow client to be cut", async {
            let mut buffer = [0u8; 1024];
            loop {
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        // Each trickles for well over the timeout (≥ 24 bytes × 150 ms) if not cut.
        assert!(
            start.elapsed() < timeout * 3,
            "cut after {:?}",
            start.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(24 * 150),
        "slow clients were cut before they finished their heads"
    );

    // And afterwards.
    assert_eq!(send(&gateway, "GET", "/healthz", &[], "").await.status, 200);
    publish(&gateway, "t", r#"{"after":"slowloris"}"#).await;
    subscriber.expect(r#"{"after":"slowloris"}"#).await;
    gateway.shutdown().await;
}

fn flood_config() -> GatewayConfig {
    let mut config = TestGateway::quiet_config();
    config.ws.message_rate = 20.0;
    config.ws.message_burst = 20;
    config
}

#[tokio::test]
async fn a_websocket_publish_flood_is_closed_with_1008_and_subscribers_lose_nothing() {
    let gateway = TestGateway::start(flood_config()).await;
    let url = |q: &str| format!("ws://{}/ws{q}", gateway.addr);
    let (mut subscriber, _) = tokio_tungstenite::connect_async(url("?topics=news"))
        .await
        .unwrap();
    let subscribed = within("subscribed", subscriber.next())
        .await
        .unwrap()
        .unwrap();
    assert!(subscribed.to_text().unwrap().contains("subscribed"));
    let (flooder, _) = tokio_tungstenite::connect_async(url("")).await.unwrap();
    let (mut flood_out, mut flood_in) = flooder.split();

    // The flooder sends as fast as it can (bounded) while reading what comes back.
    let flood = tokio::spawn(async move {
        for i in 0..20_000 {
            let message = format!(r#"{{"type":"publish","topic":"spam","data":{i}}}"#);
            if flood_out.send(Message::text(message)).await.is_err() {
                break;
            }
        }
    });
    let close_code = within("the flooder to be closed", async {
        while let Some(message) = flood_in.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await;
    assert_eq!(close_code, Some(1008));
    flood.abort();

    // The legitimate publisher's events all reach the subscriber, in order.
    const LEGIT: usize = 50;
    let mut publisher = TestClient::connect(gateway.addr).await;
    for i in 0..LEGIT {
        publish_json(&mut publisher, "news", format!(r#"{{"n":{i}}}"#)).await;
    }
    for i in 0..LEGIT {
        let message = within("a news event", subscriber.next())
            .await
            .unwrap()
            .unwrap();
        let text = message.to_text().unwrap();
        assert!(
            text.contains(&format!(r#""data":{{"n":{i}}}"#)),
            "{i}: {text}"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_http_publish_flood_does_not_stop_other_clients() {
    // Without the per-IP publish rate (tested below): the bus and the other clients cope.
    let mut config = flood_config();
    config.server.publish_rate = 0.0;
    let gateway = TestGateway::start(config).await;
    let mut subscriber = Sse::open(gateway.addr, "news").await;
    let addr = gateway.addr;
    let hammer = tokio::spawn(async move {
        let mut client = TestClient::connect(addr).await;
        for i in 0..2_000 {
            let response = client
                .request("POST", "/publish/spam", &[], format!("{i}"))
                .await;
            assert_eq!(response.status, 200);
        }
    });
    // While it hammers: health answers, and every legitimate event arrives.
    for i in 0..20 {
        assert_eq!(send(&gateway, "GET", "/healthz", &[], "").await.status, 200);
        let marker = format!(r#"{{"legit":{i}}}"#);
        let response = send(&gateway, "POST", "/publish/news", &[], marker.clone()).await;
        assert_eq!(response.status, 200);
        subscriber.expect(&marker).await;
    }
    within("the hammer to finish", hammer).await.unwrap();
    assert_eq!(subscriber.seen.matches("event: news").count(), 20);
    gateway.shutdown().await;
}

/// A gateway whose per-IP publish rate allows a burst of `burst` and then one publish per
/// 100 s (nothing refills while a test runs), and an SSE subscriber of `news` on it.
async fn publish_rate_gateway(burst: usize) -> (TestGateway, Sse) {
    let mut config = TestGateway::quiet_config();
    config.server.publish_rate = 0.01;
    config.server.publish_burst = burst as u32;
    let gateway = TestGateway::start(config).await;
    let subscriber = Sse::open(gateway.addr, "news").await;
    (gateway, subscriber)
}

/// `count` publishes on one keep-alive connection, `POST path` with `body(i)`: the first `burst`
/// are taken (200), every later one refused (429), which `check_refusal` looks at. Returns the
/// statuses.
async fn publish_past_the_burst(
    client: &mut TestClient,
    (count, burst): (usize, usize),
    path: &str,
    body: impl Fn(usize) -> String,
    check_refusal: impl Fn(&common::Response),
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..count {
        let response = client.request("POST", path, &[], body(i)).await;
        if response.status == 429 {
            check_refusal(&response);
        }
        statuses.push(response.status);
    }
    assert_eq!(statuses[..burst], vec![200; burst], "{statuses:?}");
    assert!(statuses[burst..].iter().all(|s| *s == 429), "{statuses:?}");
    statuses
}

#[tokio::test]
async fn http_publishes_over_the_per_ip_rate_get_429_and_other_addresses_are_served() {
    const BURST: usize = 5;
    let (gateway, mut subscriber) = publish_rate_gateway(BURST).await;
    let rejections = |scrape: &common::Scrape| {
        scrape.get("streamgate_rejections_total", &[("reason", "rate_limited")])
    };
    let before = rejections(&scrape(&gateway).await);

    // One client publishes past its burst, on one keep-alive connection.
    let mut flooder = TestClient::connect(gateway.addr).await;
    let statuses = publish_past_the_burst(
        &mut flooder,
        (20, BURST),
        "/publish/spam",
        |i| format!("{i}"),
        |response| {
            assert_eq!(response.json()["error"]["code"], "rate_limited");
            assert_eq!(response.header("retry-after"), Some("100"));
            assert_eq!(response.header("content-type"), Some("application/json"));
        },
    )
    .await;
    // The limit is per IP, not per connection.
    let response = send(&gateway, "POST", "/publish/news", &[], "again").await;
    assert_eq!(response.status, 429, "{}", response.text());

    // A client from another address publishes, and its events arrive.
    let mut other = TestClient::connect_from(gateway.addr, "127.0.0.2".parse().unwrap()).await;
    for i in 0..BURST {
        let marker = format!(r#"{{"other":{i}}}"#);
        let response = other
            .request("POST", "/publish/news", &[], marker.clone())
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        subscriber.expect(&marker).await;
    }
    assert!(!subscriber.seen.contains("again"));

    // Each refusal is counted by its reason; none of them was published.
    let refused = statuses.iter().filter(|s| **s == 429).count() + 1;
    assert_eq!(rejections(&scrape(&gateway).await) - before, refused as f64);
    let topics = send(&gateway, "GET", "/topics", &[], "").await.json();
    let spam = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "spam")
        .expect("the spam topic");
    assert_eq!(spam["published"], BURST, "{topics}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn long_poll_publishes_share_the_per_ip_publish_rate() {
    const BURST: usize = 3;
    let (gateway, mut subscriber) = publish_rate_gateway(BURST).await;
    let publish =
        |i: usize| format!(r#"{{"type":"publish","topic":"news","data":{{"poll":{i}}}}}"#);

    let mut flooder = TestClient::connect(gateway.addr).await;
    publish_past_the_burst(&mut flooder, (10, BURST), "/poll", publish, |response| {
        // The transport's own reply format for client messages.
        assert_eq!(response.json()["type"], "error", "{}", response.text());
        assert_eq!(response.json()["code"], "rate_limited");
        assert_eq!(response.header("retry-after"), Some("100"));
    })
    .await;
    // POST /publish from that address draws on the same bucket.
    let response = send(&gateway, "POST", "/publish/news", &[], "more").await;
    assert_eq!(response.status, 429, "{}", response.text());

    // Another address publishes through /poll, and its event arrives.
    let mut other = TestClient::connect_from(gateway.addr, "127.0.0.2".parse().unwrap()).await;
    let response = other.request("POST", "/poll", &[], publish(99)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    subscriber.expect(r#"{"poll":99}"#).await;
    assert!(!subscriber.seen.contains(r#"{"poll":5}"#));
    gateway.shutdown().await;
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// A connection that can play dead: once `frozen` is set, every read and write stays pending
/// for ever, while the TCP connection itself stays up (what a peer that vanished behind a
/// NAT or a dead host look like to the server).
struct Freezable<S> {
    inner: S,
    frozen: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Freezable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Freezable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTP/2 connection over TLS (ALPN `h2`), driven by a task of its own: its sender, the
/// switch that makes it play dead, and the task (which ends when the connection does).
async fn h2_connect(
    gateway: &TestGateway,
) -> (
    H2Sender,
    Arc<AtomicBool>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let frozen = Arc::new(AtomicBool::new(false));
    let stream = Freezable {
        inner: tls_connect(gateway, b"h2").await,
        frozen: Arc::clone(&frozen),
    };
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    (sender, frozen, tokio::spawn(connection))
}

/// `GET path` on an HTTP/2 connection; the response with its body unread.
async fn h2_get(sender: &mut H2Sender, path: &str) -> hyper::Response<Incoming> {
    let request = hyper::Request::get(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("an HTTP/2 response", sender.send_request(request))
        .await
        .expect("response");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    response
}

/// Reads an SSE body until it has carried `needle`.
async fn read_body_until(body: &mut Incoming, seen: &mut String, needle: &str) {
    within(needle, async {
        while !seen.contains(needle) {
            let frame = body.frame().await.expect("stream open").expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed_while_open_streams_stay() {
    let idle_timeout = Duration::from_secs(1);
    let mut config = TestGateway::quiet_config();
    config.tls.enabled = true;
    config.server.idle_timeout = idle_timeout;
    // Longer than the test: an HTTP/1.1 connection is not closed by hyper's header timer.
    config.server.header_read_timeout = Duration::from_secs(60);
    let gateway = TestGateway::start(config).await;

    // Streams that stay open longer than the idle timeout, over HTTP/2 and HTTP/1.1.
    let (mut streaming, _, streaming_connection) = h2_connect(&gateway).await;
    let mut h2_sse = h2_get(&mut streaming, "/sse?topics=news").await.into_body();
    let mut h2_seen = String::new();
    read_body_until(&mut h2_sse, &mut h2_seen, "streamgate epoch").await;
    let mut h1_sse = Sse::open(gateway.addr, "news").await;

    // An HTTP/2 connection that made one request and then nothing.
    let (mut quiet, _, quiet_connection) = h2_connect(&gateway).await;
    let body = h2_get(&mut quiet, "/healthz").await.into_body();
    within("the body", body.collect()).await.unwrap();
    let quiet_since = Instant::now();
    // And an HTTP/1.1 keep-alive connection likewise.
    let mut keep_alive = TcpStream::connect(gateway.addr).await.unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    // And a TLS connection that never sends a request (hyper has no timer on it).
    let mut silent = tls_connect(&gateway, b"h2").await;

    // The server closes both (HTTP/2 with a GOAWAY: the client's connection ends cleanly).
    let (answer, h1_elapsed) = read_to_close(&mut keep_alive).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        !answer.contains("connection: close"),
        "kept alive at first: {answer}"
    );
    within("the idle HTTP/2 connection to be closed", quiet_connection)
        .await
        .unwrap()
        .expect("a graceful close");
    let (nothing, _) = read_to_close(&mut silent).await;
    assert!(nothing.is_empty(), "{nothing}");
    // Not before their time.
    assert!(h1_elapsed >= idle_timeout / 2, "{h1_elapsed:?}");
    assert!(quiet_since.elapsed() >= idle_timeout / 2);
    assert!(
        !streaming_connection.is_finished(),
        "the stream's connection is open"
    );

    // The open streams, older than the timeout, still receive.
    publish(&gateway, "news", r#"{"after":"idle"}"#).await;
    read_body_until(&mut h2_sse, &mut h2_seen, r#"{"after":"idle"}"#).await;
    h1_sse.expect(r#"{"after":"idle"}"#).await;
    // And the HTTP/2 connection with a stream still takes new requests.
    h2_get(&mut streaming, "/healthz").await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_dead_http2_peer_is_found_by_pings_while_live_ones_stay() {
    let mut config = TestGateway::quiet_config();
    config.tls.enabled = true;
    config.server.http2_ping_interval = Duration::from_secs(1);
    config.server.http2_ping_timeout = Duration::from_secs(1);
    let gateway = TestGateway::start(config).await;

    // A live client, whose connection answers pings, streaming `live`.
    let (mut live, _, live_connection) = h2_connect(&gateway).await;
    let mut live_sse = h2_get(&mut live, "/sse?topics=live").await.into_body();
    let mut live_seen = String::new();
    read_body_until(&mut live_sse, &mut live_seen, "streamgate epoch").await;

    // A client streaming `dead` that stops reading anything (its TCP connection stays up):
    // its stream is open, so only the pings can tell it is gone.
    let (mut dead, freeze, _dead_connection) = h2_connect(&gateway).await;
    let mut dead_sse = h2_get(&mut dead, "/sse?topics=dead").await.into_body();
    let mut dead_seen = String::new();
    read_body_until(&mut dead_sse, &mut dead_seen, "streamgate epoch").await;
    let subscribers = |topic: &'static str| {
        let bus = Arc::clone(&gateway.app.bus);
        async move {
            bus.topic_stats()
                .await
                .iter()
                .find(|t| t.topic.as_str() == topic)
                .map_or(0, |t| t.subscribers)
        }
    };
    assert_eq!(subscribers("dead").await, 1);
    freeze.store(true, Ordering::SeqCst);

    // The server pings it, gets no answer, and drops the connection, ending its stream.
    within("the dead peer to be dropped", async {
        while subscribers("dead").await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // The live one has answered the same pings all along, and still receives.
    assert!(!live_connection.is_finished());
    assert_eq!(subscribers("live").await, 1);
    publish(&gateway, "live", r#"{"after":"pings"}"#).await;
    read_body_until(&mut live_sse, &mut live_seen, r#"{"after":"pings"}"#).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_internal_listener_serves_the_operator_routes_and_no_subscriber() {
    let mut config = TestGateway::quiet_config();
    config.server.internal_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    config.server.public_admin_routes = false;
    let gateway = TestGateway::start(config).await;
    let internal = gateway.internal_addr.expect("an internal listener");
    let mut subscriber = Sse::open(gateway.addr, "t").await;

    let mut inside = TestClient::connect(internal).await;
    publish_json(&mut inside, "t", r#"{"via":"internal"}"#).await;
    subscriber.expect(r#"{"via":"internal"}"#).await;
    let health = inside.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["listeners"]["internal"]["cap"], 256);
    for path in ["/topics", "/metrics", "/lab/api/config"] {
        assert_eq!(inside.get(path).await.status, 200, "{path}");
    }
    for path in [
        "/sse?topics=t",
        "/poll?topics=t&timeout=0",
        "/ws?topics=t",
        "/wt/cert-hash",
        "/lab",
    ] {
        let refused = inside.get(path).await;
        assert_eq!(refused.status, 404, "{path}");
        let reason = refused.json()["error"]["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains("internal listener"), "{reason}");
    }

    // public_admin_routes = false: the operator's routes are the internal listener's only.
    let mut outside = TestClient::connect(gateway.addr).await;
    let refused = outside.send("POST", "/publish/t", "{}").await;
    assert_eq!(refused.status, 404);
    assert!(
        refused.text().contains("public_admin_routes"),
        "{}",
        refused.text()
    );
    for path in ["/metrics", "/topics"] {
        assert_eq!(outside.get(path).await.status, 404, "{path}");
    }
    assert_eq!(outside.get("/healthz").await.status, 200);
    assert_eq!(outside.get("/poll?topics=t&timeout=0").await.status, 200);
    drop((inside, outside, subscriber));
    gateway.shutdown().await;
}

#[tokio::test]
async fn https_over_max_connections_is_answered_503_after_the_handshake() {
    let mut config = TestGateway::quiet_config();
    config.tls.enabled = true;
    config.server.max_connections = 1;
    config.server.max_connections_per_ip = 0;
    let gateway = TestGateway::start(config).await;
    let holder = Sse::open(gateway.addr, "t").await;
    assert_eq!(gateway.app.connections_open(), 1);

    // HTTP/1.1 over TLS: the refusal, then the close.
    let mut tls = tls_connect(&gateway, b"http/1.1").await;
    tls.write_all(b"GET /sse?topics=t HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = read_to_close(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains(r#""code":"connection_limit""#), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nretry-after: 1"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    // HTTP/2: /healthz is the `full` health answer.
    let stream = tls_connect(&gateway, b"h2").await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("https://test/healthz")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("an HTTP/2 answer at the cap", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], "full", "{body}");
    assert_eq!(body["open"], 1, "{body}");
    assert_eq!(body["cap"], 1, "{body}");
    assert_eq!(gateway.app.connections_open(), 1, "no refusal took a slot");
    drop(holder);
    gateway.shutdown().await;
}
