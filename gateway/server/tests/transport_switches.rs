//! `[ws] enabled`, `[sse] enabled`, `[longpoll] enabled`, `[webtransport] enabled`: a transport
//! turned off answers `404 transport_disabled` on its routes, `/healthz` says so, and the
//! other transports keep working.

mod common;

use std::net::SocketAddr;

use common::{assert_refused_because, raw_exchange, send, within, Sse, TestGateway};
use futures_util::StreamExt;
use streamgate::config::GatewayConfig;

fn config(off: &[&str]) -> GatewayConfig {
    let mut config = TestGateway::quiet_config();
    // /ws/echo on whatever the lab says, to show [ws] enabled = false wins over it.
    config.ws.echo = ws::EchoMode::On;
    for name in off {
        match *name {
            "ws" => config.ws.enabled = false,
            "sse" => config.sse.enabled = false,
            "longpoll" => config.longpoll.enabled = false,
            "webtransport" => config.webtransport.enabled = false,
            other => panic!("no transport {other}"),
        }
    }
    config
}

/// A 404 `transport_disabled` that names the switch: `[name] enabled = false`.
fn assert_disabled(response: &common::Response, name: &str) {
    let switch = format!("[{name}] enabled = false");
    assert_refused_because(response, 404, "transport_disabled", &switch);
}

/// `/healthz`'s `transports`.
async fn healthz_transports(gateway: &TestGateway) -> serde_json::Value {
    let response = send(gateway, "GET", "/healthz", &[], "").await;
    assert_eq!(response.status, 200);
    response.json()["transports"].clone()
}

/// `/healthz` says every transport but those in `off` is on, and each of those works; then
/// the gateway shuts down.
async fn the_others_work(gateway: TestGateway, off: &[&str]) {
    let on = |name: &str| !off.contains(&name);
    assert_eq!(
        healthz_transports(&gateway).await,
        serde_json::json!({
            "ws": on("ws"), "sse": on("sse"), "longpoll": on("longpoll"),
            "webtransport": on("webtransport"),
        })
    );
    if on("ws") {
        ws_works(&gateway, "a").await;
    }
    if on("sse") {
        sse_works(&gateway, "b").await;
    }
    if on("longpoll") {
        poll_works(&gateway, "c").await;
    }
    if on("webtransport") {
        cert_hash_works(&gateway).await;
    }
    gateway.shutdown().await;
}

/// A WebSocket subscription receives an event published over HTTP.
async fn ws_works(gateway: &TestGateway, topic: &str) {
    let url = format!("ws://{}/ws?topics={topic}", gateway.addr);
    let (mut ws, _) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("a WebSocket");
    let first = within("subscribed", ws.next()).await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("subscribed"), "{first}");
    publish(gateway, topic, "over-ws").await;
    within("the event over WebSocket", async {
        loop {
            let message = ws.next().await.unwrap().unwrap();
            if message.to_text().is_ok_and(|t| t.contains("over-ws")) {
                break;
            }
        }
    })
    .await;
}

async fn sse_works(gateway: &TestGateway, topic: &str) {
    let mut sse = Sse::open(gateway.addr, topic).await;
    publish(gateway, topic, "over-sse").await;
    sse.expect("over-sse").await;
}

async fn poll_works(gateway: &TestGateway, topic: &str) {
    let first = send(
        gateway,
        "GET",
        &format!("/poll?topics={topic}&timeout=0"),
        &[],
        "",
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let cursor = first.json()["cursor"].as_str().unwrap().to_owned();
    publish(gateway, topic, "over-poll").await;
    let next = send(
        gateway,
        "GET",
        &format!("/poll?topics={topic}&cursor={cursor}&timeout=5"),
        &[],
        "",
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert!(next.text().contains("over-poll"), "{}", next.text());
}

async fn cert_hash_works(gateway: &TestGateway) {
    let response = send(gateway, "GET", "/wt/cert-hash", &[], "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["algorithm"], "sha-256");
}

async fn publish(gateway: &TestGateway, topic: &str, marker: &str) {
    let response = send(
        gateway,
        "POST",
        &format!("/publish/{topic}"),
        &[("content-type", "application/json")],
        format!(r#"{{"m":"{marker}"}}"#),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

fn upgrade_headers() -> [(&'static str, &'static str); 4] {
    [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]
}

#[tokio::test]
async fn everything_is_on_by_default() {
    let gateway = TestGateway::start(config(&[])).await;
    the_others_work(gateway, &[]).await;
}

#[tokio::test]
async fn ws_off_refuses_ws_and_echo_and_the_rest_works() {
    let gateway = TestGateway::start(config(&["ws"])).await;
    for path in ["/ws?topics=a", "/ws/echo"] {
        let response = send(&gateway, "GET", path, &upgrade_headers(), "").await;
        assert_disabled(&response, "ws");
    }
    // A real client sees the handshake refused with that status.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws?topics=a", gateway.addr))
        .await
        .expect_err("no WebSocket");
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 404);
        }
        other => panic!("{other}"),
    }
    the_others_work(gateway, &["ws"]).await;
}

#[tokio::test]
async fn sse_off_refuses_sse_and_the_rest_works() {
    let gateway = TestGateway::start(config(&["sse"])).await;
    let response = send(&gateway, "GET", "/sse?topics=a", &[], "").await;
    assert_disabled(&response, "sse");
    // Also on a raw HTTP/1.1 connection, where /sse would take the lean path.
    let raw = raw_get(gateway.addr, "/sse?topics=a").await;
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    assert!(raw.contains("transport_disabled"), "{raw}");
    the_others_work(gateway, &["sse"]).await;
}

#[tokio::test]
async fn longpoll_off_refuses_get_and_post_poll_and_the_rest_works() {
    let gateway = TestGateway::start(config(&["longpoll"])).await;
    let get = send(&gateway, "GET", "/poll?topics=a&timeout=0", &[], "").await;
    assert_disabled(&get, "longpoll");
    let post = send(
        &gateway,
        "POST",
        "/poll",
        &[("content-type", "application/json")],
        r#"{"type":"publish","topic":"a","data":1}"#,
    )
    .await;
    assert_disabled(&post, "longpoll");
    the_others_work(gateway, &["longpoll"]).await;
}

#[tokio::test]
async fn webtransport_off_refuses_cert_hash_and_the_rest_works() {
    let gateway = TestGateway::start(config(&["webtransport"])).await;
    assert!(gateway.wt_addr.is_none(), "no UDP listener");
    let response = send(&gateway, "GET", "/wt/cert-hash", &[], "").await;
    assert_disabled(&response, "webtransport");
    the_others_work(gateway, &["webtransport"]).await;
}

/// Only long polling left: what a client behind the most hostile proxy still gets.
#[tokio::test]
async fn all_but_longpoll_off() {
    let gateway = TestGateway::start(config(&["ws", "sse", "webtransport"])).await;
    for path in ["/ws", "/sse", "/wt/cert-hash"] {
        let response = send(&gateway, "GET", path, &[], "").await;
        assert_refused_because(&response, 404, "transport_disabled", "enabled = false");
    }
    // Unknown paths are still plain not_found.
    let unknown = send(&gateway, "GET", "/nowhere", &[], "").await;
    assert_refused_because(&unknown, 404, "not_found", "/nowhere");
    the_others_work(gateway, &["ws", "sse", "webtransport"]).await;
}

/// One GET on a fresh raw connection, read until the gateway has answered (the head and a
/// `Content-Length` body).
async fn raw_get(addr: SocketAddr, target: &str) -> String {
    let head = format!("GET {target} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    raw_exchange(addr, &head).await.0
}
