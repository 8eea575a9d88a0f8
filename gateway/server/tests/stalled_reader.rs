//! A client that stops reading is cut by `server.write_timeout` even while everything the
//! gateway wrote to it still fits in the socket's send buffer (no write of the gateway ever
//! blocks), and it resumes from its last id without losing an event.

mod common;

use std::time::Duration;

use common::{read_until_closed, scrape, send, within, Sse, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Events published while the reader is stalled: more than its receive window takes, far
/// less than the gateway's send buffer (16 KiB at the least) holds.
const STALLED_EVENTS: usize = 12;
const PAYLOAD_BYTES: usize = 1000;

/// A connection whose receive window is as small as the kernel allows, so it closes after a
/// few events once the client stops reading.
async fn small_window_connection(gateway: &TestGateway) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(gateway.addr).await.unwrap()
}

async fn publish_marked(gateway: &TestGateway, topic: &str, marker: usize) {
    let body = format!("\"{marker:04}{}\"", "x".repeat(PAYLOAD_BYTES));
    let response = send(gateway, "POST", &format!("/publish/{topic}"), &[], body).await;
    assert_eq!(response.status, 200, "{}", response.text());
}

/// Waits until the gateway has no connection of `transport` open any more.
async fn until_cut(gateway: &TestGateway, transport: &str) {
    within("the gateway to cut the stalled reader", async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            let open = scrape(gateway)
                .await
                .get("streamgate_connections_open", &[("transport", transport)]);
            if open == 0.0 {
                return;
            }
        }
    })
    .await;
}

fn stalled_config() -> streamgate::config::GatewayConfig {
    let mut config = TestGateway::quiet_config();
    config.server.write_timeout = Duration::from_secs(1);
    config
}

#[tokio::test]
async fn a_stalled_sse_reader_is_cut_and_resumes_from_its_last_id() {
    let gateway = TestGateway::start(stalled_config()).await;
    let mut reader = Sse::over(small_window_connection(&gateway).await, "slow", "").await;

    // The client stops reading here.
    for marker in 0..STALLED_EVENTS {
        publish_marked(&gateway, "slow", marker).await;
    }
    until_cut(&gateway, "sse").await;

    reader.read_until_closed().await;
    let seen = &reader.seen;
    // The cut can fall inside an event: only whole ones count as received.
    let whole = &seen[..seen.rfind("\n\n").map_or(0, |end| end + 2)];
    let ids: Vec<&str> = whole
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    let received = ids.len();
    assert!(
        received < STALLED_EVENTS,
        "the stalled reader got all {received} events: nothing was held back"
    );

    // Back, with the last id it has: the rest, and nothing twice.
    let last_event_id = ids
        .last()
        .map(|id| format!("last-event-id: {id}\r\n"))
        .unwrap_or_default();
    let mut resumed = Sse::over(
        small_window_connection(&gateway).await,
        "slow",
        &last_event_id,
    )
    .await;
    resumed.expect(&format!("{:04}", STALLED_EVENTS - 1)).await;
    assert_eq!(
        received + resumed.events(),
        STALLED_EVENTS,
        "every event exactly once across the cut"
    );
}

#[tokio::test]
async fn a_stalled_websocket_reader_is_cut() {
    let gateway = TestGateway::start(stalled_config()).await;
    let mut stream = small_window_connection(&gateway).await;
    stream
        .write_all(
            b"GET /ws?topics=slow HTTP/1.1\r\nhost: test\r\nupgrade: websocket\r\n\
              connection: upgrade\r\nsec-websocket-version: 13\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    within("the 101 answer", async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.unwrap();
            assert!(n > 0, "closed in the handshake");
            head.push(byte[0]);
        }
    })
    .await;
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    // The WebSocket transport's own write timeout (5 s) is not what ends it: the kernel's is.
    for marker in 0..STALLED_EVENTS {
        publish_marked(&gateway, "slow", marker).await;
    }
    until_cut(&gateway, "ws").await;
    read_until_closed(&mut stream).await;
}
