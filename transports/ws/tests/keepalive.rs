//! Keepalive: the server pings a silent connection and drops a peer that does not answer.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use streamgate::config::GatewayConfig;
use streamgate_core::ContentType;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const INTERVAL: Duration = Duration::from_millis(200);
const PONG_TIMEOUT: Duration = Duration::from_millis(200);

fn config() -> GatewayConfig {
    let mut config = quiet();
    config.ws.ping_interval = INTERVAL;
    config.ws.pong_timeout = PONG_TIMEOUT;
    config
}

#[tokio::test]
async fn a_peer_that_never_answers_is_pinged_then_dropped() {
    let gateway = start(config()).await;
    let mut raw = RawClient::connect(&gateway, "/ws").await;
    let ping = raw.next_frame().await;
    let pinged_at = Instant::now();
    assert_eq!(ping.opcode, OP_PING, "{ping:?}");
    assert!(ping.fin);
    // No pong: the server must give up after `pong_timeout` and close TCP without a word
    // (a peer that does not answer pings will not answer a close frame either). Waiting for
    // the EOF itself, bounded by WAIT.
    raw.expect_eof().await;
    let waited = pinged_at.elapsed();
    assert!(
        waited >= PONG_TIMEOUT / 2,
        "dropped {waited:?} after the ping, before the pong timeout of {PONG_TIMEOUT:?}"
    );
    drop(raw);
    stop(gateway).await;
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let gateway = start(config()).await;
    let mut ws = connect(&gateway, "/ws?topics=k").await;
    expect_subscribed(&mut ws, &gateway, &["k"]).await;
    // Here a fixed wait is the point of the test: the connection must survive several ping
    // intervals (each ping answered by tungstenite while we read), and nothing but time
    // passing can show that. Bounded at a few intervals; the pings we see prove the
    // keepalive ran during it rather than being idle.
    let window = 3 * INTERVAL + PONG_TIMEOUT;
    let deadline = Instant::now() + window;
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("expected only pings while idle, got {other:?}"),
        }
    }
    assert!(
        pings >= 2,
        "saw {pings} pings in {window:?} with a ping interval of {INTERVAL:?}"
    );
    let event = publish(&gateway, "k", ContentType::Json, "\"still here\"").await;
    expect_json_event(&mut ws, &event).await;
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn a_raw_client_answering_pings_is_pinged_again_not_dropped() {
    let gateway = start(config()).await;
    let mut raw = RawClient::connect(&gateway, "/ws/echo").await;
    // Answering the first ping with a pong keeps the connection: the server pings again
    // later instead of dropping it.
    for _ in 0..2 {
        let ping = raw.next_frame().await;
        assert_eq!(ping.opcode, OP_PING, "{ping:?}");
        raw.send(&frame(true, OP_PONG, &ping.payload)).await;
    }
    raw.send(&frame(true, OP_TEXT, b"alive")).await;
    let echo = loop {
        let frame = raw.next_frame().await;
        if frame.opcode != OP_PING {
            break frame;
        }
    };
    assert_eq!(echo.opcode, OP_TEXT);
    assert_eq!(echo.text(), "alive");
    drop(raw);
    stop(gateway).await;
}
