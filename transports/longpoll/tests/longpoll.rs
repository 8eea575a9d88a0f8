//! `GET /poll` and `POST /poll` against a real gateway over HTTP/1.1.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    get, head_cursor, publish, send, topic, wait_for_subscribers, Client, Poll, TestGateway, BOUND,
};
use streamgate::config::GatewayConfig;
use streamgate::ShutdownOutcome;
use streamgate_core::ContentType;
use streamgate_proto::json_envelope;

fn config() -> GatewayConfig {
    TestGateway::quiet_config()
}

#[tokio::test]
async fn first_poll_gets_a_cursor_for_now_and_misses_nothing_after_it() {
    let gateway = TestGateway::start(config()).await;
    publish(&gateway, "news", r#"{"old":true}"#).await;
    let response = get(gateway.addr, "/poll?topics=news&timeout=0").await;
    let first = Poll::from(&response);
    assert!(first.messages.is_empty(), "{first:?}");
    let epoch = gateway.app.bus.health().epoch;
    assert_eq!(first.cursor, format!("{epoch}:1"));
    assert_eq!(
        response.text(),
        format!(r#"{{"cursor":"{epoch}:1","messages":[]}}"#)
    );

    let event = gateway
        .app
        .bus
        .publish(
            topic("news"),
            ContentType::Json,
            Bytes::from_static(br#"{"n": 2}"#),
        )
        .await
        .unwrap();
    let response = get(
        gateway.addr,
        &format!("/poll?topics=news&cursor={}&timeout=0", first.cursor),
    )
    .await;
    // Byte-exact: the envelope every transport shares, copied verbatim.
    let envelope = json_envelope(&event);
    let expected = format!(
        r#"{{"cursor":"{}","messages":[{}]}}"#,
        event.id,
        String::from_utf8_lossy(&envelope)
    );
    assert_eq!(response.text(), expected);
    assert_eq!(
        response.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(gateway.shutdown().await, ShutdownOutcome::Drained);
}

#[tokio::test]
async fn ready_events_are_returned_at_once() {
    let gateway = TestGateway::start(config()).await;
    let cursor = head_cursor(gateway.addr, "a,b").await;
    let mut ids = Vec::new();
    for (i, name) in ["a", "c", "b", "a"].iter().enumerate() {
        let id = publish(&gateway, name, &format!(r#"{{"i":{i}}}"#)).await;
        if *name != "c" {
            ids.push(id.to_string());
        }
    }
    let started = Instant::now();
    let poll = Poll::from(
        &get(
            gateway.addr,
            &format!("/poll?topics=a,b&cursor={cursor}&timeout=30"),
        )
        .await,
    );
    assert!(started.elapsed() < Duration::from_secs(10), "was held");
    assert_eq!(poll.event_ids(), ids);
    assert_eq!(poll.cursor, ids[2]);
    assert_eq!(poll.messages[1]["topic"], "b");
    assert_eq!(poll.messages[1]["data"], serde_json::json!({"i": 2}));
    gateway.shutdown().await;
}

#[tokio::test]
async fn held_poll_wakes_on_publish() {
    let gateway = TestGateway::start(config()).await;
    let cursor = head_cursor(gateway.addr, "live").await;
    let addr = gateway.addr;
    let path = format!("/poll?topics=live&cursor={cursor}&timeout=30");
    let started = Instant::now();
    let held = tokio::spawn(async move { get(addr, &path).await });
    wait_for_subscribers(&gateway, "live", 1).await;
    assert!(
        !held.is_finished(),
        "answered before anything was published"
    );
    let id = publish(&gateway, "live", r#""wake""#).await;
    let response = tokio::time::timeout(BOUND, held)
        .await
        .expect("answered after the publish")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "waited for the timeout"
    );
    let poll = Poll::from(&response);
    assert_eq!(poll.event_ids(), vec![id.to_string()]);
    assert_eq!(poll.cursor, id.to_string());
    // The subscription ended with the request.
    wait_for_subscribers(&gateway, "live", 0).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn timeout_returns_an_empty_batch_with_the_same_cursor() {
    let gateway = TestGateway::start(config()).await;
    let cursor = head_cursor(gateway.addr, "quiet").await;
    // Other topics move the head; the cursor of this subscription stays where it was.
    publish(&gateway, "busy", "1").await;
    let started = Instant::now();
    let poll = Poll::from(
        &get(
            gateway.addr,
            &format!("/poll?topics=quiet&cursor={cursor}&timeout=0.2"),
        )
        .await,
    );
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(200), "held only {held:?}");
    assert!(poll.messages.is_empty());
    assert_eq!(poll.cursor, cursor);

    // Without a cursor, the empty batch's cursor is the head when the poll began.
    let epoch = gateway.app.bus.health().epoch;
    let poll = Poll::from(&get(gateway.addr, "/poll?topics=quiet&timeout=0.2").await);
    assert!(poll.messages.is_empty());
    assert_eq!(poll.cursor, format!("{epoch}:1"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn batches_are_bounded_by_event_count() {
    let mut config = config();
    config.longpoll.max_batch_events = 3;
    let gateway = TestGateway::start(config).await;
    let mut cursor = head_cursor(gateway.addr, "t").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(publish(&gateway, "t", &i.to_string()).await.to_string());
    }
    let mut client = Client::connect(gateway.addr).await;
    let mut sizes = Vec::new();
    let mut received = Vec::new();
    for _ in 0..3 {
        let poll = Poll::from(
            &client
                .get(&format!("/poll?topics=t&cursor={cursor}&timeout=0"))
                .await,
        );
        sizes.push(poll.messages.len());
        received.extend(poll.event_ids());
        cursor = poll.cursor;
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(received, ids);
    assert_eq!(&cursor, ids.last().unwrap());

    // A client may ask for fewer, never for more.
    let first = &ids[0];
    let poll = Poll::from(
        &client
            .get(&format!("/poll?topics=t&cursor={first}&timeout=0&limit=2"))
            .await,
    );
    assert_eq!(poll.event_ids(), ids[1..3]);
    let poll = Poll::from(
        &client
            .get(&format!("/poll?topics=t&cursor={first}&timeout=0&limit=50"))
            .await,
    );
    assert_eq!(poll.event_ids(), ids[1..4]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn batches_are_bounded_by_bytes_but_carry_at_least_one_event() {
    let mut config = config();
    let payload = format!(r#""{}""#, "x".repeat(100));
    // Probe the envelope size of such an event (same topic, same id width).
    let probe = {
        let gateway = TestGateway::start(TestGateway::quiet_config()).await;
        let event = gateway
            .app
            .bus
            .publish(topic("t"), ContentType::Json, Bytes::from(payload.clone()))
            .await
            .unwrap();
        let len = json_envelope(&event).len();
        gateway.shutdown().await;
        len
    };
    // Two envelopes and their comma fit exactly; a third does not.
    config.longpoll.max_batch_bytes = 2 * probe + 1;
    let gateway = TestGateway::start(config).await;
    let start = head_cursor(gateway.addr, "t").await;
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(
            gateway
                .app
                .bus
                .publish(topic("t"), ContentType::Json, Bytes::from(payload.clone()))
                .await
                .unwrap(),
        );
    }
    assert!(events.iter().all(|e| json_envelope(e).len() == probe));
    let response = get(
        gateway.addr,
        &format!("/poll?topics=t&cursor={start}&timeout=0"),
    )
    .await;
    let expected = format!(
        r#"{{"cursor":"{}","messages":[{},{}]}}"#,
        events[1].id,
        String::from_utf8_lossy(&json_envelope(&events[0])),
        String::from_utf8_lossy(&json_envelope(&events[1])),
    );
    assert_eq!(response.text(), expected);

    // An event larger than the limit on its own still goes out, alone.
    let big = publish(&gateway, "t", &format!(r#""{}""#, "y".repeat(4 * probe))).await;
    let cursor = events[4].id.to_string();
    let poll = Poll::from(
        &get(
            gateway.addr,
            &format!("/poll?topics=t&cursor={cursor}&timeout=0"),
        )
        .await,
    );
    assert_eq!(poll.event_ids(), vec![big.to_string()]);
    let cursor = events[2].id.to_string();
    let poll = Poll::from(
        &get(
            gateway.addr,
            &format!("/poll?topics=t&cursor={cursor}&timeout=0"),
        )
        .await,
    );
    assert_eq!(
        poll.event_ids(),
        vec![events[3].id.to_string(), events[4].id.to_string()]
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn evicted_events_are_reported_as_a_gap_in_the_batch() {
    let mut config = config();
    config.bus.history_events = 2;
    let gateway = TestGateway::start(config).await;
    let cursor = head_cursor(gateway.addr, "g").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(&gateway, "g", &i.to_string()).await.to_string());
    }
    let poll = Poll::from(
        &get(
            gateway.addr,
            &format!("/poll?topics=g&cursor={cursor}&timeout=0"),
        )
        .await,
    );
    assert_eq!(
        poll.messages[0],
        serde_json::json!({"type":"gap","topic":"g","after":cursor,"lost_through":ids[2]})
    );
    assert_eq!(poll.event_ids(), ids[3..]);
    assert_eq!(poll.cursor, ids[4]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn cursor_of_another_epoch_resets_once() {
    let gateway = TestGateway::start(config()).await;
    let epoch = gateway.app.bus.health().epoch;
    // Nothing kept for the topic: the batch is the reset alone, and its cursor is the current
    // epoch's start, so the next poll does not reset again.
    let poll = Poll::from(&get(gateway.addr, "/poll?topics=r&cursor=gone:5&timeout=0").await);
    assert_eq!(
        poll.messages,
        vec![serde_json::json!({"type":"reset","requested":"gone:5","epoch":epoch.as_str()})]
    );
    assert_eq!(poll.cursor, format!("{epoch}:0"));
    let id = publish(&gateway, "r", "1").await;
    let poll = Poll::from(
        &get(
            gateway.addr,
            &format!("/poll?topics=r&cursor={}&timeout=0", poll.cursor),
        )
        .await,
    );
    assert_eq!(poll.event_ids(), vec![id.to_string()]);
    assert_eq!(poll.messages.len(), 1);
    // With events kept, the reset comes first and the cursor is the last event.
    let poll = Poll::from(&get(gateway.addr, "/poll?topics=r&cursor=gone:5&timeout=0").await);
    assert_eq!(poll.messages[0]["type"], "reset");
    assert_eq!(poll.event_ids(), vec![id.to_string()]);
    assert_eq!(poll.cursor, id.to_string());
    gateway.shutdown().await;
}

#[tokio::test]
async fn shutdown_answers_a_held_poll_at_once() {
    let gateway = TestGateway::start(config()).await;
    let cursor = head_cursor(gateway.addr, "s").await;
    let addr = gateway.addr;
    let path = format!("/poll?topics=s&cursor={cursor}&timeout=60");
    let started = Instant::now();
    let held = tokio::spawn(async move { get(addr, &path).await });
    wait_for_subscribers(&gateway, "s", 1).await;
    let shutdown = tokio::spawn(gateway.shutdown());
    let response = tokio::time::timeout(BOUND, held)
        .await
        .expect("answered at shutdown")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    let poll = Poll::from(&response);
    assert!(poll.messages.is_empty());
    assert_eq!(poll.cursor, cursor);
    assert_eq!(shutdown.await.unwrap(), ShutdownOutcome::Drained);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let gateway = TestGateway::start(config()).await;
    let epoch = gateway.app.bus.health().epoch;
    let cases = [
        ("/poll?topics=a&cursor=12", 400, "bad_cursor"),
        ("/poll?topics=a&cursor=ab%2Fc%3A1", 400, "bad_cursor"),
        ("/poll?cursor=e:1", 400, "no_topics"),
        ("/poll", 400, "no_topics"),
        ("/poll?topics=a%2Fb", 400, "bad_topic"),
        ("/poll?topics=a,a", 400, "duplicate_topic"),
        ("/poll?topics=a&timeout=soon", 400, "bad_query"),
        ("/poll?topics=a&timeout=-1", 400, "bad_query"),
        ("/poll?topics=a&limit=0", 400, "bad_query"),
        ("/poll?topics=a&envelope=binary", 400, "bad_query"),
    ];
    for (path, status, code) in cases {
        let response = get(gateway.addr, path).await;
        assert_eq!(response.status, status, "{path}: {}", response.text());
        let body = response.json();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(!body["error"]["reason"].as_str().unwrap().is_empty());
        assert_eq!(response.header("content-type"), Some("application/json"));
    }
    let response = get(gateway.addr, "/poll?topics=a&cursor=nope").await;
    let reason = response.json()["error"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("epoch:seq"), "{reason}");

    let ahead = format!("/poll?topics=a&cursor={epoch}:99&timeout=0");
    let response = get(gateway.addr, &ahead).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["code"], "cursor_ahead");

    for method in ["PUT", "DELETE", "HEAD"] {
        let response = send(gateway.addr, method, "/poll?topics=a", Bytes::new()).await;
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET, POST"));
        if method != "HEAD" {
            assert_eq!(response.json()["error"]["code"], "method_not_allowed");
        }
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn post_publishes_and_refuses_what_needs_a_connection() {
    let mut config = config();
    config.longpoll.max_message_size = 4096;
    let gateway = TestGateway::start(config).await;
    let cursor = head_cursor(gateway.addr, "news").await;
    let mut client = Client::connect(gateway.addr).await;

    let response = client
        .send(
            "POST",
            "/poll",
            r#"{"type":"publish","topic":"news","data":{"headline":"hi"},"ref":"r1"}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let reply = response.json();
    assert_eq!(reply["type"], "published");
    assert_eq!(reply["ref"], "r1");
    let id = reply["id"].as_str().unwrap().to_owned();
    let poll = Poll::from(
        &client
            .get(&format!("/poll?topics=news&cursor={cursor}&timeout=5"))
            .await,
    );
    assert_eq!(poll.event_ids(), vec![id.clone()]);
    assert_eq!(
        poll.messages[0]["data"],
        serde_json::json!({"headline":"hi"})
    );

    let response = client
        .send(
            "POST",
            "/poll",
            r#"{"type":"publish","topic":"bin","content_type":"binary","data":"AP8B"}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["ref"], serde_json::Value::Null);

    let errors = [
        (
            r#"{"type":"subscribe","topics":["news"],"ref":"s1"}"#,
            400,
            "bad_message",
            Some("s1"),
        ),
        (
            r#"{"type":"unsubscribe","topics":["news"]}"#,
            400,
            "bad_message",
            None,
        ),
        (
            r#"{"type":"publish","topic":"a b","data":1,"ref":"p2"}"#,
            400,
            "bad_topic",
            Some("p2"),
        ),
        (
            r#"{"type":"publish","topic":"t","content_type":"text","data":1}"#,
            400,
            "invalid_payload",
            None,
        ),
        ("not json", 400, "bad_message", None),
    ];
    for (body, status, code, reference) in errors {
        let response = client.send("POST", "/poll", body).await;
        assert_eq!(response.status, status, "{body}: {}", response.text());
        let reply = response.json();
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert_eq!(reply["ref"].as_str(), reference, "{reply}");
    }
    let response = client
        .send("POST", "/poll", r#"{"type":"subscribe","topics":["news"]}"#)
        .await;
    let reason = response.json()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("stateless") && reason.contains("GET /poll"),
        "{reason}"
    );

    let big = format!(
        r#"{{"type":"publish","topic":"t","content_type":"text","data":"{}"}}"#,
        "z".repeat(5000)
    );
    let response = send(gateway.addr, "POST", "/poll", big).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["code"], "payload_too_large");
    // Nothing else was published.
    let poll = Poll::from(
        &get(
            gateway.addr,
            &format!("/poll?topics=news,t&cursor={id}&timeout=0"),
        )
        .await,
    );
    assert!(poll.messages.is_empty(), "{poll:?}");
    gateway.shutdown().await;
}
