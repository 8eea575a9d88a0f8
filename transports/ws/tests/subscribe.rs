//! `/ws` as a subscriber and publisher: query subscriptions, envelopes, control messages.

mod common;

use common::*;
use serde_json::json;
use streamgate_core::ContentType;

#[tokio::test]
async fn query_subscription_delivers_events_in_order_with_the_bus_ids() {
    let gateway = start(quiet()).await;
    let mut ws = connect(&gateway, "/ws?topics=a,b").await;
    expect_subscribed(&mut ws, &gateway, &["a", "b"]).await;

    let e1 = publish(&gateway, "a", ContentType::Json, r#"{"n":1,"s":"x"}"#).await;
    // A topic nobody on this connection subscribed to: must not show up between e1 and e2.
    publish(&gateway, "c", ContentType::Json, "1").await;
    let e2 = publish(&gateway, "b", ContentType::Text, "h\u{e9}llo \"q\"\n").await;
    let e3 = publish(&gateway, "a", ContentType::Binary, [0u8, 1, 2, 0xff, 0xfe]).await;
    let e4 = publish(&gateway, "b", ContentType::Json, "[1,2,3]").await;

    // json and text events: text frames with the JSON envelope.
    expect_json_event(&mut ws, &e1).await;
    expect_json_event(&mut ws, &e2).await;
    // binary events: binary frames with the binary envelope, payload raw.
    expect_binary_event(&mut ws, &e3).await;
    expect_json_event(&mut ws, &e4).await;
    assert!(e1.id.seq < e2.id.seq && e2.id.seq < e3.id.seq && e3.id.seq < e4.id.seq);
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn envelope_binary_sends_every_event_as_a_binary_frame() {
    let gateway = start(quiet()).await;
    let mut ws = connect(&gateway, "/ws?topics=a&envelope=binary").await;
    // Replies stay JSON text even with binary envelopes.
    expect_subscribed(&mut ws, &gateway, &["a"]).await;

    let json_event = publish(&gateway, "a", ContentType::Json, r#"{"k":[true,null]}"#).await;
    let text_event = publish(&gateway, "a", ContentType::Text, "plain \u{2603}").await;
    let binary_event = publish(&gateway, "a", ContentType::Binary, [9u8; 300]).await;

    let first = next_binary(&mut ws).await;
    assert_binary_event(&first, &json_event);
    assert_eq!(parse_binary_envelope(&first).content_type, 1);
    let second = next_binary(&mut ws).await;
    assert_binary_event(&second, &text_event);
    assert_eq!(parse_binary_envelope(&second).content_type, 0);
    let third = next_binary(&mut ws).await;
    assert_binary_event(&third, &binary_event);
    assert_eq!(parse_binary_envelope(&third).content_type, 2);
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_messages_change_what_arrives() {
    let gateway = start(quiet()).await;
    let mut ws = connect(&gateway, "/ws").await;

    send_json(&mut ws, &json!({"type": "subscribe", "topics": ["a"]})).await;
    expect_subscribed(&mut ws, &gateway, &["a"]).await;
    let e1 = publish(&gateway, "a", ContentType::Json, "1").await;
    publish(&gateway, "b", ContentType::Json, "2").await;
    let e3 = publish(&gateway, "a", ContentType::Json, "3").await;
    expect_json_event(&mut ws, &e1).await;
    expect_json_event(&mut ws, &e3).await;

    send_json(&mut ws, &json!({"type": "subscribe", "topics": ["a", "b"]})).await;
    expect_subscribed(&mut ws, &gateway, &["a", "b"]).await;
    let e4 = publish(&gateway, "b", ContentType::Json, "4").await;
    let e5 = publish(&gateway, "a", ContentType::Json, "5").await;
    expect_json_event(&mut ws, &e4).await;
    expect_json_event(&mut ws, &e5).await;

    send_json(&mut ws, &json!({"type": "unsubscribe", "topics": ["a"]})).await;
    expect_subscribed(&mut ws, &gateway, &["b"]).await;
    publish(&gateway, "a", ContentType::Json, "6").await;
    let e7 = publish(&gateway, "b", ContentType::Json, "7").await;
    expect_json_event(&mut ws, &e7).await;

    send_json(&mut ws, &json!({"type": "unsubscribe", "topics": ["b"]})).await;
    expect_subscribed(&mut ws, &gateway, &[]).await;
    publish(&gateway, "b", ContentType::Json, "8").await;
    send_json(&mut ws, &json!({"type": "subscribe", "topics": ["c"]})).await;
    expect_subscribed(&mut ws, &gateway, &["c"]).await;
    let e9 = publish(&gateway, "c", ContentType::Json, "9").await;
    expect_json_event(&mut ws, &e9).await;
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn publish_message_is_acknowledged_and_reaches_other_subscribers() {
    let gateway = start(quiet()).await;
    let mut subscriber = connect(&gateway, "/ws?topics=news").await;
    expect_subscribed(&mut subscriber, &gateway, &["news"]).await;
    let mut publisher = connect(&gateway, "/ws").await;

    // json (the default content type), with a ref.
    let data = json!({"headline": "hi", "n": [1, 2.5, null]});
    send_json(
        &mut publisher,
        &json!({"type": "publish", "topic": "news", "data": data, "ref": "c-17"}),
    )
    .await;
    let reply = next_json(&mut publisher).await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["ref"], "c-17");
    let id = reply["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with(&format!("{}:", epoch(&gateway))), "{id}");
    let event = next_json(&mut subscriber).await;
    assert_eq!(event["type"], "event");
    assert_eq!(event["topic"], "news");
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["content_type"], "json");
    assert_eq!(event["data"], data);

    // text, with another ref.
    send_json(
        &mut publisher,
        &json!({"type": "publish", "topic": "news", "content_type": "text", "data": "plain", "ref": "c-18"}),
    )
    .await;
    let reply = next_json(&mut publisher).await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["ref"], "c-18");
    let event = next_json(&mut subscriber).await;
    assert_eq!(event["id"], reply["id"]);
    assert_eq!(event["content_type"], "text");
    assert_eq!(event["data"], "plain");

    // binary (base64 in), without a ref: the subscriber gets a binary frame, payload raw.
    send_json(
        &mut publisher,
        &json!({"type": "publish", "topic": "news", "content_type": "binary", "data": "AAEC/w=="}),
    )
    .await;
    let reply = next_json(&mut publisher).await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["ref"], serde_json::Value::Null);
    let envelope = parse_binary_envelope(&next_binary(&mut subscriber).await);
    assert_eq!(envelope.id, reply["id"].as_str().expect("id"));
    assert_eq!(envelope.topic, "news");
    assert_eq!(envelope.content_type, 2);
    assert_eq!(envelope.payload, vec![0, 1, 2, 0xff]);
    drop((subscriber, publisher));
    stop(gateway).await;
}

#[tokio::test]
async fn malformed_messages_get_error_replies_and_the_connection_stays_open() {
    let gateway = start(quiet()).await;
    let mut ws = connect(&gateway, "/ws?topics=keep").await;
    expect_subscribed(&mut ws, &gateway, &["keep"]).await;
    let long_ref = "r".repeat(65);
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("not json".to_owned(), "bad_message", None),
        (r#"{"type":"dance"}"#.to_owned(), "bad_message", None),
        (r#"{"topics":["a"]}"#.to_owned(), "bad_message", None),
        (
            r#"{"type":"subscribe","ref":"r0"}"#.to_owned(),
            "bad_message",
            Some("r0"),
        ),
        (
            r#"{"type":"subscribe","topics":["a/b"],"ref":"r1"}"#.to_owned(),
            "bad_topic",
            Some("r1"),
        ),
        (
            r#"{"type":"subscribe","topics":["a"],"since":"nope","ref":"r2"}"#.to_owned(),
            "bad_cursor",
            Some("r2"),
        ),
        (
            r#"{"type":"publish","topic":"t","content_type":"xml","data":1,"ref":"r3"}"#.to_owned(),
            "bad_content_type",
            Some("r3"),
        ),
        (
            r#"{"type":"publish","topic":"t","content_type":"text","data":5,"ref":"r4"}"#
                .to_owned(),
            "invalid_payload",
            Some("r4"),
        ),
        (
            r#"{"type":"publish","topic":"t","content_type":"binary","data":"!!!","ref":"r5"}"#
                .to_owned(),
            "invalid_payload",
            Some("r5"),
        ),
        (
            r#"{"type":"publish","topic":"t","data":1,"ref":"r6"}"#.replace("r6", &long_ref),
            "bad_ref",
            None,
        ),
        (
            r#"{"type":"publish","topic":"bad topic","data":1,"ref":"r7"}"#.to_owned(),
            "bad_topic",
            Some("r7"),
        ),
        (
            r#"{"type":"publish","topic":"t","ref":"r8"}"#.to_owned(),
            "bad_message",
            Some("r8"),
        ),
    ];
    for (message, code, reference) in &cases {
        send_text(&mut ws, message).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["type"], "error", "reply to {message}: {reply}");
        assert_eq!(reply["code"], *code, "reply to {message}: {reply}");
        assert_eq!(
            reply["ref"],
            reference.map_or(serde_json::Value::Null, |r| json!(r)),
            "reply to {message}: {reply}"
        );
        assert!(
            reply["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "reply to {message}: {reply}"
        );
    }
    // Still open, still subscribed, still able to publish.
    let event = publish(&gateway, "keep", ContentType::Json, "true").await;
    expect_json_event(&mut ws, &event).await;
    send_json(
        &mut ws,
        &json!({"type": "publish", "topic": "keep", "data": 2, "ref": "ok"}),
    )
    .await;
    // The ack and the event of our own publish may come in either order.
    let mut replies = [next_json(&mut ws).await, next_json(&mut ws).await];
    replies.sort_by_key(|r| r["type"].as_str().unwrap_or_default().to_owned());
    assert_eq!(replies[0]["type"], "event", "{replies:?}");
    assert_eq!(replies[0]["data"], 2);
    assert_eq!(replies[1]["type"], "published", "{replies:?}");
    assert_eq!(replies[1]["ref"], "ok");
    assert_eq!(replies[0]["id"], replies[1]["id"]);
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn subscribe_refused_by_the_bus_is_an_error_reply() {
    let gateway = start(quiet()).await;
    let mut ws = connect(&gateway, "/ws").await;
    let ahead = format!("{}:999", epoch(&gateway));
    for (message, code) in [
        (
            json!({"type": "subscribe", "topics": ["a", "a"], "ref": "d"}),
            "duplicate_topic",
        ),
        (
            json!({"type": "subscribe", "topics": ["a"], "since": ahead, "ref": "d"}),
            "cursor_ahead",
        ),
    ] {
        send_json(&mut ws, &message).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["type"], "error", "reply to {message}: {reply}");
        assert_eq!(reply["code"], code, "reply to {message}: {reply}");
        assert_eq!(reply["ref"], "d", "reply to {message}: {reply}");
    }
    // The connection is still usable.
    send_json(&mut ws, &json!({"type": "subscribe", "topics": ["a"]})).await;
    expect_subscribed(&mut ws, &gateway, &["a"]).await;
    let event = publish(&gateway, "a", ContentType::Text, "x").await;
    expect_json_event(&mut ws, &event).await;
    drop(ws);
    stop(gateway).await;
}

/// A `subscribe` the bus refuses must leave the subscription the connection already had:
/// the client got an `error`, not a `subscribed`, so it has every reason to believe nothing
/// changed.
#[tokio::test]
async fn a_refused_subscribe_keeps_the_previous_subscription() {
    let gateway = start(quiet()).await;
    let mut ws = connect(&gateway, "/ws?topics=a").await;
    expect_subscribed(&mut ws, &gateway, &["a"]).await;
    let first = publish(&gateway, "a", ContentType::Json, "1").await;
    expect_json_event(&mut ws, &first).await;
    let ahead = format!("{}:999", epoch(&gateway));
    send_json(
        &mut ws,
        &json!({"type": "subscribe", "topics": ["a", "b"], "since": ahead, "ref": "x"}),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["code"], "cursor_ahead", "{reply}");
    let second = publish(&gateway, "a", ContentType::Json, "2").await;
    expect_json_event(&mut ws, &second).await;
    drop(ws);
    stop(gateway).await;
}
