//! Connection and rate limits under abuse: per-IP connections, slowloris, publish floods.
//! Each test also checks that the other, well-behaved clients are not affected.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{send, within, Sse, TestClient, TestGateway};
use futures_util::{SinkExt, StreamExt};
use streamgate::config::GatewayConfig;
use streamgate_core::{ContentType, Topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Reads what the server sends until it closes; the bytes and how long that took.
async fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
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
        let response = publisher
            .request(
                "POST",
                "/publish/news",
                &[("content-type", "application/json")],
                format!(r#"{{"n":{i}}}"#),
            )
            .await;
        assert_eq!(response.status, 200);
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
    let gateway = TestGateway::start(flood_config()).await;
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
