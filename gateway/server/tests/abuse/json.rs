//! Abuse: poisoned JSON. A publisher sends JSON that RFC 8259 allows but strict parsers do not
//! agree on (a lone surrogate escape, a repeated member name) or cannot take (an array nested
//! 300 deep). Embedded verbatim in every envelope, it would break subscribers' parsers, so
//! every publish path must refuse it with `invalid_payload` and a reason naming the rule.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::common::{within, Sse, TestClient, TestGateway};
use super::support::served_within;

/// (what, body, words the refusal's reason must contain).
fn poisoned_bodies() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "lone surrogate",
            r#"{"s":"\ud800"}"#.to_owned(),
            "lone surrogate escape (I-JSON, RFC 7493 §2.1) at byte",
        ),
        (
            "300-deep array",
            format!("{}{}", "[".repeat(300), "]".repeat(300)),
            "nested deeper than 64 levels at byte",
        ),
        (
            "duplicate member names",
            r#"{"a":1,"a":2}"#.to_owned(),
            "duplicate member name in one object (I-JSON, RFC 7493 §2.3) at byte",
        ),
    ]
}

fn publish_message(data: &str) -> String {
    format!(r#"{{"type":"publish","topic":"news","data":{data},"ref":"evil"}}"#)
}

#[tokio::test]
async fn poisoned_json_is_refused_on_every_publish_path() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    // The second client: subscribed before the attack, it must see only what is valid.
    let mut subscriber = Sse::open(gateway.addr, "news").await;

    // The attacker: one HTTP connection and one WebSocket.
    let mut attacker = TestClient::connect(gateway.addr).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gateway.addr))
        .await
        .unwrap();
    for (what, body, reason) in poisoned_bodies() {
        let declared = attacker
            .send("POST", "/publish/news?content_type=json", body.clone())
            .await;
        assert_eq!(declared.status, 400, "POST /publish, {what}");
        let error = &declared.json()["error"];
        assert_eq!(error["code"], "invalid_payload", "POST /publish, {what}");
        let text = error["reason"].as_str().unwrap();
        assert!(text.contains(reason), "POST /publish, {what}: {text}");
        println!("abuse[poisoned JSON]: POST /publish {what}: 400 invalid_payload: {text}");

        let header = attacker
            .request(
                "POST",
                "/publish/news",
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
        assert_eq!(header.status, 400, "POST /publish (header), {what}");

        let poll = attacker.send("POST", "/poll", publish_message(&body)).await;
        assert_eq!(poll.status, 400, "POST /poll, {what}");
        let reply = poll.json();
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["code"], "invalid_payload", "POST /poll, {what}");
        assert_eq!(reply["ref"], "evil");
        let text = reply["reason"].as_str().unwrap();
        assert!(text.contains(reason), "POST /poll, {what}: {text}");

        socket
            .send(Message::text(publish_message(&body)))
            .await
            .unwrap();
        let reply = within("the WebSocket reply", socket.next())
            .await
            .expect("the socket stays open")
            .unwrap();
        let reply: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(reply["type"], "error", "WebSocket, {what}");
        assert_eq!(reply["code"], "invalid_payload", "WebSocket, {what}");
        let text = reply["reason"].as_str().unwrap();
        assert!(text.contains(reason), "WebSocket, {what}: {text}");
        println!("abuse[poisoned JSON]: WebSocket publish {what}: invalid_payload: {text}");
    }

    // Undeclared, the same bytes are not JSON to the gateway: they are published as text,
    // which reaches subscribers as a JSON string.
    let sniffed = attacker
        .send("POST", "/publish/news", r#"{"s":"\ud800"}"#)
        .await;
    assert_eq!(sniffed.status, 200, "{}", sniffed.text());
    assert_eq!(sniffed.json()["content_type"], "text");

    // The second client publishes a valid event and its subscriber gets it.
    let (published, _) = served_within("poisoned JSON", async {
        let mut publisher = TestClient::connect(gateway.addr).await;
        let published = publisher
            .send(
                "POST",
                "/publish/news?content_type=json",
                r#"{"valid":"after the attack"}"#,
            )
            .await;
        subscriber.expect("after the attack").await;
        published
    })
    .await;
    assert_eq!(published.status, 200, "{}", published.text());

    // Exactly two events came: the sniffed text and the valid JSON; each envelope is read by
    // serde_json, which refuses lone surrogates and nesting past 128.
    assert_eq!(subscriber.events(), 2, "{}", subscriber.seen);
    let envelopes: Vec<serde_json::Value> = subscriber
        .seen
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("a strictly valid envelope"))
        .collect();
    assert_eq!(envelopes.len(), 2);
    assert_eq!(envelopes[0]["content_type"], "text");
    assert_eq!(envelopes[0]["data"], r#"{"s":"\ud800"}"#);
    assert_eq!(envelopes[1]["content_type"], "json");
    assert_eq!(envelopes[1]["data"]["valid"], "after the attack");
    let _ = socket.close(None).await;
    drop(subscriber);
    gateway.shutdown().await;
}
