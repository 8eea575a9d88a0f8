//! The gateway over real HTTP connections: health, publish API, topics, demo source, shutdown.

mod common;

use std::time::Duration;

use common::{send, TestGateway};
use futures_util::StreamExt;
use streamgate::config::GatewayConfig;
use streamgate::ShutdownOutcome;
use streamgate_core::{ContentType, Delivery, SubscribeRequest, Topic};

fn quiet_config() -> GatewayConfig {
    let mut config = GatewayConfig::default();
    config.demo.enabled = false;
    config
}

#[tokio::test]
async fn healthz_reports_the_bus() {
    let gateway = TestGateway::start(quiet_config()).await;
    let response = send(&gateway, "GET", "/healthz", &[], "").await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["bus"]["backend"], "memory");
    assert_eq!(body["bus"]["available"], true);
    assert!(!body["bus"]["epoch"].as_str().unwrap().is_empty());
    assert_eq!(gateway.shutdown().await, ShutdownOutcome::Drained);
}

#[tokio::test]
async fn publish_reaches_subscribers_with_the_returned_id() {
    let gateway = TestGateway::start(quiet_config()).await;
    let mut sub = gateway
        .app
        .bus
        .subscribe(SubscribeRequest::live(vec![Topic::new("news").unwrap()]))
        .await
        .unwrap();
    let response = send(
        &gateway,
        "POST",
        "/publish/news",
        &[("content-type", "application/json")],
        r#"{"headline":"hi"}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let body = response.json();
    assert_eq!(body["topic"], "news");
    assert_eq!(body["content_type"], "json");
    let Some(Delivery::Event(event)) = sub.next().await else {
        panic!("no event")
    };
    assert_eq!(event.id.to_string(), body["id"].as_str().unwrap());
    assert_eq!(event.content_type, ContentType::Json);
    assert_eq!(&event.payload[..], br#"{"headline":"hi"}"#);
    gateway.shutdown().await;
}

#[tokio::test]
async fn publish_content_type_comes_from_query_header_or_payload() {
    let gateway = TestGateway::start(quiet_config()).await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [u8], &'a str);
    let cases: [Case; 5] = [
        (
            "/publish/t",
            &[("content-type", "text/plain; charset=utf-8")],
            b"{}",
            "text",
        ),
        ("/publish/t?content_type=binary", &[], b"abc", "binary"),
        (
            "/publish/t",
            &[("content-type", "application/octet-stream")],
            b"x",
            "binary",
        ),
        ("/publish/t", &[], b"[1,2]", "json"),
        (
            "/publish/t",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"plain",
            "text",
        ),
    ];
    for (path, headers, body, expected) in cases {
        let response = send(&gateway, "POST", path, headers, body.to_vec()).await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.json()["content_type"],
            expected,
            "{path} {headers:?}"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn bad_publishes_get_clear_errors() {
    let mut config = quiet_config();
    config.bus.max_payload = 16;
    let gateway = TestGateway::start(config).await;

    let response = send(&gateway, "POST", "/publish/a%2Fb", &[], "x").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["code"], "bad_topic");

    let response = send(
        &gateway,
        "POST",
        "/publish/t",
        &[("content-type", "application/json")],
        "{nope",
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["code"], "invalid_payload");

    let response = send(&gateway, "POST", "/publish/t", &[], vec![b'x'; 17]).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["error"]["code"], "payload_too_large");

    let response = send(&gateway, "POST", "/publish/t?content_type=xml", &[], "x").await;
    assert_eq!(response.status, 400);

    let response = send(&gateway, "GET", "/publish/t", &[], "").await;
    assert_eq!(response.status, 405);
    assert_eq!(response.headers["allow"], "POST");

    let response = send(&gateway, "GET", "/nowhere", &[], "").await;
    assert_eq!(response.status, 404);

    let topics = send(&gateway, "GET", "/topics", &[], "").await.json();
    assert_eq!(
        topics["topics"],
        serde_json::json!([]),
        "nothing was stored"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn demo_source_publishes_ris_shaped_events() {
    let mut config = GatewayConfig::default();
    config.demo.rate = 200.0;
    let gateway = TestGateway::start(config).await;
    let mut sub = gateway
        .app
        .bus
        .subscribe(SubscribeRequest::live(vec![Topic::new("demo").unwrap()]))
        .await
        .unwrap();
    let mut last_seq = 0;
    for _ in 0..5 {
        let Some(Delivery::Event(event)) = sub.next().await else {
            panic!("no demo event")
        };
        assert!(event.id.seq > last_seq);
        last_seq = event.id.seq;
        let message: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(message["type"], "ris_message");
        assert!(message["data"]["path"].is_array());
    }
    let topics = send(&gateway, "GET", "/topics", &[], "").await.json();
    assert_eq!(topics["topics"][0]["topic"], "demo");
    assert!(topics["topics"][0]["published"].as_u64().unwrap() >= 5);
    assert_eq!(gateway.shutdown().await, ShutdownOutcome::Drained);
}

#[tokio::test]
async fn shutdown_ends_subscriptions_and_refuses_new_connections() {
    let gateway = TestGateway::start(quiet_config()).await;
    let addr = gateway.addr;
    let mut sub = gateway
        .app
        .bus
        .subscribe(SubscribeRequest::live(vec![Topic::new("t").unwrap()]))
        .await
        .unwrap();
    let app = std::sync::Arc::clone(&gateway.app);
    assert_eq!(gateway.shutdown().await, ShutdownOutcome::Drained);
    assert!(app.shutdown.is_cancelled());
    assert!(sub.next().await.is_none(), "subscriptions end at shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn idle_keep_alive_connection_does_not_block_shutdown() {
    let gateway = TestGateway::start(quiet_config()).await;
    // Open a connection, send nothing: hyper's graceful shutdown must close it.
    let _idle = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), gateway.shutdown())
        .await
        .expect("shutdown finished");
    assert_eq!(outcome, ShutdownOutcome::Drained);
}
