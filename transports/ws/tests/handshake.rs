//! The opening handshake over real connections: refusals are HTTP answers with a JSON reason,
//! accepted upgrades honour the Origin policy and negotiate the subprotocol.

mod common;

use common::*;

async fn refused(
    gateway: &TestGateway,
    method: &str,
    headers: Vec<(&'static str, String)>,
) -> HttpResponse {
    let response = RawClient::http(gateway, method, "/ws?topics=a", &headers).await;
    assert_ne!(response.status, 101, "upgrade was accepted: {response:?}");
    assert_eq!(response.header("sec-websocket-accept"), None);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    response
}

#[tokio::test]
async fn another_version_is_426_naming_version_13() {
    let gateway = start(quiet()).await;
    for headers in [
        with_header(upgrade_headers(gateway.addr), "Sec-WebSocket-Version", "8"),
        without_header(upgrade_headers(gateway.addr), "Sec-WebSocket-Version"),
    ] {
        let response = refused(&gateway, "GET", headers).await;
        assert_eq!(response.status, 426);
        assert_eq!(response.header("sec-websocket-version"), Some("13"));
        assert_eq!(response.error_code(), "unsupported_version");
    }
    stop(gateway).await;
}

#[tokio::test]
async fn missing_or_bad_key_is_400() {
    let gateway = start(quiet()).await;
    for headers in [
        without_header(upgrade_headers(gateway.addr), "Sec-WebSocket-Key"),
        // base64 of 5 bytes, not 16.
        with_header(
            upgrade_headers(gateway.addr),
            "Sec-WebSocket-Key",
            "c2hvcnQ=",
        ),
    ] {
        let response = refused(&gateway, "GET", headers).await;
        assert_eq!(response.status, 400);
        assert_eq!(response.error_code(), "bad_key");
    }
    stop(gateway).await;
}

#[tokio::test]
async fn missing_upgrade_is_400() {
    let gateway = start(quiet()).await;
    for headers in [
        without_header(upgrade_headers(gateway.addr), "Upgrade"),
        with_header(upgrade_headers(gateway.addr), "Upgrade", "h2c"),
        with_header(upgrade_headers(gateway.addr), "Connection", "keep-alive"),
    ] {
        let response = refused(&gateway, "GET", headers).await;
        assert_eq!(response.status, 400);
        assert_eq!(response.error_code(), "not_websocket");
    }
    stop(gateway).await;
}

#[tokio::test]
async fn post_is_405_allowing_get() {
    let gateway = start(quiet()).await;
    let response = refused(&gateway, "POST", upgrade_headers(gateway.addr)).await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET"));
    assert_eq!(response.error_code(), "method_not_allowed");
    stop(gateway).await;
}

#[tokio::test]
async fn a_foreign_origin_is_403_by_default() {
    let gateway = start(quiet()).await;
    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let headers = with_header(upgrade_headers(gateway.addr), "Origin", origin);
        let response = refused(&gateway, "GET", headers).await;
        assert_eq!(response.status, 403, "origin {origin}");
        assert_eq!(response.error_code(), "origin_not_allowed");
    }
    stop(gateway).await;
}

#[tokio::test]
async fn same_origin_and_no_origin_are_allowed_by_default() {
    let gateway = start(quiet()).await;
    let origin = format!("http://{}", gateway.addr);
    let (mut ws, _) = connect_with(&gateway, "/ws?topics=a", &[("origin", &origin)]).await;
    expect_subscribed(&mut ws, &gateway, &["a"]).await;
    // The raw client sends no Origin at all.
    let mut raw = RawClient::connect(&gateway, "/ws?topics=a").await;
    let reply = raw.next_frame().await;
    assert_eq!(reply.opcode, OP_TEXT);
    assert!(reply.text().contains("\"subscribed\""), "{}", reply.text());
    drop((ws, raw));
    stop(gateway).await;
}

#[tokio::test]
async fn an_allowed_origin_list_is_honoured() {
    let mut config = quiet();
    config.ws.origins.allow = vec!["https://app.example".to_owned()];
    config.ws.origins.allow_missing = false;
    let gateway = start(config).await;
    let (ws, _) = connect_with(&gateway, "/ws", &[("origin", "https://app.example")]).await;
    let response = refused(&gateway, "GET", upgrade_headers(gateway.addr)).await;
    assert_eq!(
        response.status, 403,
        "no Origin while allow_missing = false"
    );
    drop(ws);
    stop(gateway).await;
}

#[tokio::test]
async fn subprotocol_is_negotiated_when_offered() {
    let gateway = start(quiet()).await;
    let (offered, response) = connect_with(
        &gateway,
        "/ws",
        &[("sec-websocket-protocol", "chat, streamgate.v1")],
    )
    .await;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().expect("ASCII")),
        Some("streamgate.v1")
    );
    // Nothing we speak offered: the upgrade still succeeds, without a subprotocol (RFC 6455
    // leaves it to the client to go on or not; tungstenite would refuse, hence the raw client).
    let (other, response) = RawClient::request(
        gateway.addr,
        "GET",
        "/ws",
        &with_header(
            upgrade_headers(gateway.addr),
            "Sec-WebSocket-Protocol",
            "chat",
        ),
    )
    .await;
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.header("sec-websocket-protocol"), None);
    let (none, response) = connect_with(&gateway, "/ws", &[]).await;
    assert_eq!(response.headers().get("sec-websocket-protocol"), None);
    drop((offered, other, none));
    stop(gateway).await;
}

#[tokio::test]
async fn a_bad_subscription_query_is_refused_before_the_upgrade() {
    let gateway = start(quiet()).await;
    for (query, code) in [
        ("topics=a/b", "bad_topic"),
        ("topics=a,a", "duplicate_topic"),
        ("since=ep:1", "no_topics"),
        ("topics=a&envelope=xml", "bad_query"),
    ] {
        let response = RawClient::http(
            &gateway,
            "GET",
            &format!("/ws?{query}"),
            &upgrade_headers(gateway.addr),
        )
        .await;
        assert_eq!(response.status, 400, "{query}: {response:?}");
        assert_eq!(response.error_code(), code, "{query}");
    }
    stop(gateway).await;
}
