//! Resuming on `/ws` (`docs/PROTOCOL.md` §4): `since`, gaps, resets and refused cursors.

mod common;

use common::*;
use serde_json::json;
use streamgate_core::ContentType;

#[tokio::test]
async fn reconnecting_with_since_gets_exactly_the_missed_events() {
    let gateway = start(quiet()).await;
    let mut ws = connect(&gateway, "/ws?topics=r,s").await;
    expect_subscribed(&mut ws, &gateway, &["r", "s"]).await;
    let e1 = publish(&gateway, "r", ContentType::Json, "1").await;
    let e2 = publish(&gateway, "s", ContentType::Text, "two").await;
    let e3 = publish(&gateway, "r", ContentType::Json, "3").await;
    expect_json_event(&mut ws, &e1).await;
    expect_json_event(&mut ws, &e2).await;
    expect_json_event(&mut ws, &e3).await;
    close(ws).await;

    let e4 = publish(&gateway, "r", ContentType::Json, "4").await;
    publish(&gateway, "other", ContentType::Json, "0").await;
    let e5 = publish(&gateway, "s", ContentType::Binary, [5u8, 5]).await;
    let e6 = publish(&gateway, "r", ContentType::Json, "6").await;

    let mut ws = connect(&gateway, &format!("/ws?topics=r,s&since={}", e3.id)).await;
    expect_subscribed(&mut ws, &gateway, &["r", "s"]).await;
    expect_json_event(&mut ws, &e4).await;
    expect_binary_event(&mut ws, &e5).await;
    expect_json_event(&mut ws, &e6).await;
    // Then live, with nothing repeated in between: the next message is the next event.
    let e7 = publish(&gateway, "s", ContentType::Json, "7").await;
    expect_json_event(&mut ws, &e7).await;
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn resuming_in_a_subscribe_message_replays_after_since() {
    let gateway = start(quiet()).await;
    let e1 = publish(&gateway, "m", ContentType::Json, "1").await;
    let e2 = publish(&gateway, "m", ContentType::Json, "2").await;
    let e3 = publish(&gateway, "m", ContentType::Json, "3").await;
    let mut ws = connect(&gateway, "/ws").await;
    send_json(
        &mut ws,
        &json!({"type": "subscribe", "topics": ["m"], "since": e1.id.to_string()}),
    )
    .await;
    expect_subscribed(&mut ws, &gateway, &["m"]).await;
    expect_json_event(&mut ws, &e2).await;
    expect_json_event(&mut ws, &e3).await;
    let e4 = publish(&gateway, "m", ContentType::Json, "4").await;
    expect_json_event(&mut ws, &e4).await;
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn resuming_past_the_history_start_reports_a_gap_first() {
    let mut config = quiet();
    config.bus.history_events = 3;
    let gateway = start(config).await;
    let mut ws = connect(&gateway, "/ws?topics=g").await;
    expect_subscribed(&mut ws, &gateway, &["g"]).await;
    let e1 = publish(&gateway, "g", ContentType::Json, "1").await;
    expect_json_event(&mut ws, &e1).await;
    close(ws).await;

    let mut missed = Vec::new();
    for n in 2..=6 {
        missed.push(publish(&gateway, "g", ContentType::Json, n.to_string()).await);
    }
    // History keeps the last 3 (e4..e6): e2 and e3 are gone.
    let mut ws = connect(&gateway, &format!("/ws?topics=g&since={}", e1.id)).await;
    expect_subscribed(&mut ws, &gateway, &["g"]).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({
            "type": "gap",
            "topic": "g",
            "after": e1.id.to_string(),
            "lost_through": missed[1].id.to_string(),
        })
    );
    for event in &missed[2..] {
        expect_json_event(&mut ws, event).await;
    }
    let live = publish(&gateway, "g", ContentType::Json, "7").await;
    expect_json_event(&mut ws, &live).await;
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn since_from_another_epoch_gets_a_reset_then_everything_kept() {
    let gateway = start(quiet()).await;
    assert_ne!(epoch(&gateway), "oldepoch");
    let x1 = publish(&gateway, "z", ContentType::Json, "1").await;
    publish(&gateway, "y", ContentType::Json, "0").await;
    let x2 = publish(&gateway, "z", ContentType::Text, "2").await;

    let mut ws = connect(&gateway, "/ws?topics=z&since=oldepoch:5").await;
    expect_subscribed(&mut ws, &gateway, &["z"]).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "reset", "requested": "oldepoch:5", "epoch": epoch(&gateway)})
    );
    expect_json_event(&mut ws, &x1).await;
    expect_json_event(&mut ws, &x2).await;
    let x3 = publish(&gateway, "z", ContentType::Json, "3").await;
    expect_json_event(&mut ws, &x3).await;
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn since_ahead_of_the_stream_is_refused_before_the_upgrade() {
    let gateway = start(quiet()).await;
    let event = publish(&gateway, "z", ContentType::Json, "1").await;
    let ahead = format!("{}:{}", epoch(&gateway), event.id.seq + 1);
    let response = RawClient::http(
        &gateway,
        "GET",
        &format!("/ws?topics=z&since={ahead}"),
        &upgrade_headers(gateway.addr),
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(response.error_code(), "cursor_ahead");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("sec-websocket-accept"), None);

    // The newest id itself is a fine resume point (nothing to replay).
    let mut ws = connect(&gateway, &format!("/ws?topics=z&since={}", event.id)).await;
    expect_subscribed(&mut ws, &gateway, &["z"]).await;
    let next = publish(&gateway, "z", ContentType::Json, "2").await;
    expect_json_event(&mut ws, &next).await;
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn malformed_since_is_refused_with_bad_cursor() {
    let gateway = start(quiet()).await;
    for since in ["garbage", "12", "ep:x", ":5", "ep:-1"] {
        let response = RawClient::http(
            &gateway,
            "GET",
            &format!("/ws?topics=z&since={since}"),
            &upgrade_headers(gateway.addr),
        )
        .await;
        assert_eq!(response.status, 400, "since={since}: {response:?}");
        assert_eq!(response.error_code(), "bad_cursor", "since={since}");
    }
    stop(gateway).await;
}
