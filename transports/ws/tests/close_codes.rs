//! How connections end (RFC 6455 §7.4.1): each protocol failure with its close code, the
//! closing handshake, and shutdown. The malformed frames come from the raw client.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use streamgate::config::GatewayConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Short close timeout: after a protocol error the server waits at most this long for our
/// close reply, so a test that does not answer is not slowed down.
fn config() -> GatewayConfig {
    let mut config = quiet();
    config.ws.close_timeout = Duration::from_secs(1);
    config
}

/// Sends `bytes` on a fresh `/ws` connection and expects the server to close with `code`,
/// then to end the TCP connection once the close is answered.
async fn expect_close_after(gateway: &TestGateway, path: &str, bytes: &[u8], code: u16) -> String {
    let mut raw = RawClient::connect(gateway, path).await;
    raw.send(bytes).await;
    let reason = raw.expect_close(code).await;
    raw.finish_close(code).await;
    reason
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_is_1007() {
    let gateway = start(config()).await;
    let bad = frame(true, OP_TEXT, b"{\"type\":\"\xff\xfe\"}");
    expect_close_after(&gateway, "/ws", &bad, 1007).await;
    // Also when the invalid sequence is split across fragments on /ws/echo.
    let mut split = frame(false, OP_TEXT, b"caf\xc3");
    split.extend(frame(true, OP_CONTINUATION, b"\x28"));
    expect_close_after(&gateway, "/ws/echo", &split, 1007).await;
    stop(gateway).await;
}

#[tokio::test]
async fn a_message_over_max_message_size_is_1009() {
    let mut config = config();
    config.ws.max_message_size = 1024;
    let gateway = start(config).await;
    // One frame over the limit: refused from its header, so send only the header.
    let oversized = frame(true, OP_TEXT, &[b' '; 2000]);
    expect_close_after(&gateway, "/ws", &oversized[..8], 1009).await;
    // Fragments each under the limit, together over it.
    let mut fragments = frame(false, OP_TEXT, &[b' '; 600]);
    fragments.extend(frame(true, OP_CONTINUATION, &[b' '; 600]));
    expect_close_after(&gateway, "/ws", &fragments, 1009).await;
    // At the limit is fine: a 1024-byte JSON message gets its (error) reply.
    let mut raw = RawClient::connect(&gateway, "/ws").await;
    let mut message = b"{\"type\":\"dance\"}".to_vec();
    message.resize(1024, b' ');
    raw.send(&frame(true, OP_TEXT, &message)).await;
    let reply = raw.next_frame().await;
    assert_eq!(reply.opcode, OP_TEXT);
    assert!(reply.text().contains("bad_message"), "{}", reply.text());
    drop(raw);
    stop(gateway).await;
}

#[tokio::test]
async fn an_unmasked_client_frame_is_1002() {
    let gateway = start(config()).await;
    let unmasked = encode_frame(0x80 | OP_TEXT, b"{}", None);
    expect_close_after(&gateway, "/ws", &unmasked, 1002).await;
    stop(gateway).await;
}

#[tokio::test]
async fn a_reserved_opcode_is_1002() {
    let gateway = start(config()).await;
    for opcode in [0x3, 0xB] {
        expect_close_after(&gateway, "/ws", &frame(true, opcode, b""), 1002).await;
    }
    stop(gateway).await;
}

#[tokio::test]
async fn a_reserved_bit_without_extension_is_1002() {
    let gateway = start(config()).await;
    let rsv1 = encode_frame(0x80 | 0x40 | OP_TEXT, b"{}", Some(MASK));
    expect_close_after(&gateway, "/ws", &rsv1, 1002).await;
    stop(gateway).await;
}

#[tokio::test]
async fn a_fragmented_control_frame_is_1002() {
    let gateway = start(config()).await;
    let ping_without_fin = frame(false, OP_PING, b"p");
    expect_close_after(&gateway, "/ws", &ping_without_fin, 1002).await;
    stop(gateway).await;
}

#[tokio::test]
async fn a_control_frame_over_125_bytes_is_1002() {
    let gateway = start(config()).await;
    let big_ping = frame(true, OP_PING, &[b'p'; 126]);
    expect_close_after(&gateway, "/ws", &big_ping, 1002).await;
    stop(gateway).await;
}

#[tokio::test]
async fn a_continuation_without_a_message_is_1002() {
    let gateway = start(config()).await;
    let orphan = frame(true, OP_CONTINUATION, b"x");
    expect_close_after(&gateway, "/ws", &orphan, 1002).await;
    stop(gateway).await;
}

#[tokio::test]
async fn a_binary_message_on_ws_is_1003() {
    let gateway = start(config()).await;
    let binary = frame(true, OP_BINARY, b"{\"type\":\"subscribe\"}");
    let reason = expect_close_after(&gateway, "/ws", &binary, 1003).await;
    assert!(!reason.is_empty());
    stop(gateway).await;
}

#[tokio::test]
async fn messages_over_the_rate_limit_are_1008() {
    let mut config = config();
    config.ws.message_rate = 0.5;
    config.ws.message_burst = 2;
    let gateway = start(config).await;
    let mut raw = RawClient::connect(&gateway, "/ws").await;
    let message = frame(true, OP_TEXT, br#"{"type":"subscribe","topics":["x"]}"#);
    // Three messages in one write: the burst allows two, the third is over the rate.
    raw.send(&[message.clone(), message.clone(), message].concat())
        .await;
    for _ in 0..2 {
        let reply = raw.next_frame().await;
        assert_eq!(reply.opcode, OP_TEXT);
        assert!(reply.text().contains("\"subscribed\""), "{}", reply.text());
    }
    raw.expect_close(1008).await;
    raw.finish_close(1008).await;
    stop(gateway).await;
}

#[tokio::test]
async fn gateway_shutdown_closes_with_1001() {
    let gateway = start(config()).await;
    let mut ws = connect(&gateway, "/ws?topics=a").await;
    expect_subscribed(&mut ws, &gateway, &["a"]).await;
    let mut idle = connect(&gateway, "/ws").await;
    let shutdown = tokio::spawn(gateway.shutdown());
    for client in [&mut ws, &mut idle] {
        match next_message(client).await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close frame with 1001, got {other:?}"),
        }
        // Reading on sends tungstenite's close reply; the server then ends the connection.
        within("the end of the connection", async {
            while let Some(Ok(_)) = client.next().await {}
        })
        .await;
    }
    let outcome = within("the gateway shutdown", shutdown)
        .await
        .expect("gateway task");
    assert_eq!(outcome, streamgate::ShutdownOutcome::Drained);
}

#[tokio::test]
async fn a_ping_between_fragments_is_answered_then_the_message_is_echoed() {
    let gateway = start(config()).await;
    let mut raw = RawClient::connect(&gateway, "/ws/echo").await;
    raw.send(&frame(false, OP_TEXT, b"Hel")).await;
    raw.send(&frame(true, OP_PING, b"p1")).await;
    // The pong comes while the text message is still incomplete.
    let pong = raw.next_frame().await;
    assert_eq!(
        pong,
        RawFrame {
            fin: true,
            rsv: 0,
            opcode: OP_PONG,
            payload: b"p1".to_vec()
        }
    );
    raw.send(&frame(true, OP_CONTINUATION, b"lo, world")).await;
    let echo = raw.next_frame().await;
    assert_eq!(echo.opcode, OP_TEXT);
    assert!(echo.fin);
    assert_eq!(echo.text(), "Hello, world");
    drop(raw);
    stop(gateway).await;
}

#[tokio::test]
async fn echo_returns_binary_and_fragmented_binary() {
    let gateway = start(config()).await;
    let mut raw = RawClient::connect(&gateway, "/ws/echo").await;
    let mut fragments = frame(false, OP_BINARY, &[0, 1]);
    fragments.extend(frame(false, OP_CONTINUATION, &[]));
    fragments.extend(frame(true, OP_CONTINUATION, &[0xff; 200]));
    raw.send(&fragments).await;
    let echo = raw.next_frame().await;
    assert_eq!(echo.opcode, OP_BINARY);
    assert_eq!(echo.payload, [&[0u8, 1][..], &[0xff; 200]].concat());
    drop(raw);
    stop(gateway).await;
}

#[tokio::test]
async fn a_client_close_is_echoed_and_the_server_closes_tcp() {
    let mut config = config();
    // Far above WAIT: the server must close TCP because the handshake is complete, not because
    // it gave up waiting.
    config.ws.close_timeout = Duration::from_secs(60);
    let gateway = start(config).await;
    for path in ["/ws?topics=a", "/ws/echo"] {
        let mut raw = RawClient::connect(&gateway, path).await;
        if path.starts_with("/ws?") {
            let subscribed = raw.next_frame().await;
            assert_eq!(subscribed.opcode, OP_TEXT);
        }
        raw.send(&frame(true, OP_CLOSE, &close_payload(4001, "bye")))
            .await;
        raw.expect_close(4001).await;
        raw.expect_eof().await;
    }
    stop(gateway).await;
}
