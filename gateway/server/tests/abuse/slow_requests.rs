//! Abuse: slow requests. A body announced and never sent is cut at
//! `server.body_read_timeout` with `408` `body_timeout`; a head dripped on the lean HTTP/1.1
//! path and grown past its 8 KiB is handed to hyper with the time it has left, not a fresh
//! `server.header_read_timeout`; an HTTP/1.1 request without exactly one `Host` is a `400`.

use std::time::{Duration, Instant};

use streamgate::testkit::TestGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::{assert_error, read_until_closed, send, within};
use super::support::served_within;

/// Everything the gateway sends on `stream` until it closes the connection.
async fn answer_on(stream: &mut TcpStream) -> String {
    String::from_utf8_lossy(&read_until_closed(stream).await).into_owned()
}

/// Asserts `answer`, a response read off the wire, carries the JSON error `code` with a
/// reason mentioning `reason`.
fn assert_error_in(answer: &str, code: &str, reason: &str) {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let error = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    assert_error(&error, code, reason);
}

/// A second client's `GET /healthz`, served during `attack`.
async fn second_client_is_served(gateway: &TestGateway, attack: &str) {
    let (health, _) = served_within(attack, send(gateway, "GET", "/healthz", &[], "")).await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn a_body_that_never_comes_is_cut_with_408_at_the_body_timeout() {
    let timeout = Duration::from_secs(1);
    let mut config = TestGateway::quiet_config();
    config.server.body_read_timeout = timeout;
    let gateway = TestGateway::start(config).await;

    for target in ["/publish/t", "/poll"] {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        let head = format!(
            "POST {target} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
             content-length: 100\r\n\r\n{{\"a\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let sent = Instant::now();

        // Meanwhile another client is served.
        second_client_is_served(&gateway, "a body that never comes").await;

        let answer = answer_on(&mut stream).await;
        let took = sent.elapsed();
        println!("abuse[slow body {target}]: cut after {took:?} (body_read_timeout {timeout:?})");
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert_error_in(&answer, "body_timeout", "body_read_timeout");
        assert!(took >= timeout, "cut early: {took:?}");
        assert!(took < timeout * 3, "cut late: {took:?}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_head_dripped_across_the_hand_over_to_hyper_has_one_header_timeout() {
    let timeout = Duration::from_secs(2);
    let mut config = TestGateway::quiet_config();
    config.server.header_read_timeout = timeout;
    let gateway = TestGateway::start(config).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let first_byte = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let attack = async {
        // A lean-path head (a long-lived GET), dripped for most of the timeout…
        writer
            .write_all(b"GET /sse?topics=t HTTP/1.1\r\nhost: test\r\n")
            .await?;
        while first_byte.elapsed() < timeout * 4 / 5 {
            writer.write_all(b"x-drip: a\r\n").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // …then grown past the lean path's 8 KiB, which hands it to hyper unfinished…
        let padding = format!("x-pad: {}\r\n", "a".repeat(9 * 1024));
        writer.write_all(padding.as_bytes()).await?;
        // …and dripped on, never finished.
        loop {
            writer.write_all(b"x-drip: b\r\n").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    let closed = async {
        let mut buffer = [0u8; 1024];
        while let Ok(1..) = reader.read(&mut buffer).await {}
        first_byte.elapsed()
    };
    let took = within("the dripped head to be cut", async {
        tokio::select! {
            took = closed => took,
            // Writes fail once the gateway has closed: then it is closed.
            _ = attack => first_byte.elapsed(),
        }
    })
    .await;
    println!(
        "abuse[dripped head]: closed {took:?} after its first byte (header_read_timeout {timeout:?})"
    );
    assert!(
        took >= timeout * 4 / 5,
        "cut before the hand-over: {took:?}"
    );
    assert!(
        took < timeout + Duration::from_millis(700),
        "the head had more than one header_read_timeout: {took:?}"
    );
    second_client_is_served(&gateway, "a dripped head").await;
    gateway.shutdown().await;
}

/// The answer to `head` sent on a fresh connection.
async fn answer_to(gateway: &TestGateway, head: &str) -> String {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    answer_on(&mut stream).await
}

#[tokio::test]
async fn http_1_1_without_one_host_is_400_on_both_paths() {
    for lean in [true, false] {
        let mut config = TestGateway::quiet_config();
        config.server.lean_http1 = lean;
        let gateway = TestGateway::start(config).await;
        for (head, why) in [
            ("GET /sse?topics=t HTTP/1.1\r\n\r\n", "needs a Host"),
            (
                "GET /poll?topics=t HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
                "has 2",
            ),
            ("GET /healthz HTTP/1.1\r\n\r\n", "needs a Host"),
            (
                "POST /publish/t HTTP/1.1\r\nhost: a\r\nHost: a\r\ncontent-length: 2\r\n\r\n{}",
                "has 2",
            ),
        ] {
            let answer = answer_to(&gateway, head).await;
            assert!(
                answer.starts_with("HTTP/1.1 400 "),
                "lean {lean}: {head:?}: {answer}"
            );
            assert_error_in(&answer, "bad_host", why);
        }
        // With one Host, and in HTTP/1.0 without one, the same requests are served.
        let answer = answer_to(&gateway, "GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.0 200 "), "{answer}");
        second_client_is_served(&gateway, "requests without a Host").await;
        gateway.shutdown().await;
    }
}
