//! `GET /client/streamgate.js`: the browser client module, embedded in the binary.

mod common;

use common::{assert_refused, send, TestClient, TestGateway};

/// The file the gateway embeds, read from the source tree now.
fn module_on_disk() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../clients/js/streamgate.js"
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn served_as_a_module_with_caching_and_cors_headers() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let response = send(&gateway, "GET", "/client/streamgate.js", &[], "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(response.body, module_on_disk(), "the embedded bytes");
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert_eq!(
        response.header("cache-control"),
        Some("public, max-age=300")
    );
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    let etag = response.header("etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    // The same bytes, the same tag, on another connection.
    let again = send(&gateway, "GET", "/client/streamgate.js", &[], "").await;
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    gateway.shutdown().await;
}

#[tokio::test]
async fn if_none_match_answers_304_without_a_body() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let mut client = TestClient::connect(gateway.addr).await;
    let first = client.get("/client/streamgate.js").await;
    let etag = first.header("etag").unwrap().to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"0000\", {etag}");
    for value in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        let response = client
            .request(
                "GET",
                "/client/streamgate.js",
                &[("if-none-match", value)],
                "",
            )
            .await;
        assert_eq!(response.status, 304, "If-None-Match: {value}");
        assert!(response.body.is_empty());
        assert_eq!(response.header("etag"), Some(etag.as_str()));
        assert_eq!(
            response.header("cache-control"),
            Some("public, max-age=300")
        );
        assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    }
    // A stale tag gets the module again.
    let stale = client
        .request(
            "GET",
            "/client/streamgate.js",
            &[("if-none-match", "\"0123456789abcdef\"")],
            "",
        )
        .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, module_on_disk());
    // HEAD revalidates too.
    let head = client
        .request(
            "HEAD",
            "/client/streamgate.js",
            &[("if-none-match", etag.as_str())],
            "",
        )
        .await;
    assert_eq!(head.status, 304);
    gateway.shutdown().await;
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let get = send(&gateway, "GET", "/client/streamgate.js", &[], "").await;
    let head = send(&gateway, "HEAD", "/client/streamgate.js", &[], "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "{:?}", head.body);
    for name in [
        "content-type",
        "content-length",
        "etag",
        "cache-control",
        "access-control-allow-origin",
        "x-content-type-options",
    ] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn other_methods_are_405() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    for method in ["POST", "PUT", "DELETE"] {
        let response = send(&gateway, method, "/client/streamgate.js", &[], "x").await;
        assert_refused(&response, 405, "method_not_allowed");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{method}");
    }
    // Only the module: nothing else under /client/.
    let other = send(&gateway, "GET", "/client/other.js", &[], "").await;
    assert_refused(&other, 404, "not_found");
    gateway.shutdown().await;
}

/// Public code: served with the lab off, with `[auth]` on and no token, and with a CORS
/// allow-list that would otherwise echo listed origins (never two `Access-Control-Allow-Origin`
/// headers, which browsers refuse).
#[tokio::test]
async fn served_without_lab_without_token_and_with_one_cors_header() {
    let mut config = TestGateway::quiet_config();
    config.lab.enabled = streamgate::config::LabSwitch::Off;
    config.http.cors_origins = vec!["https://app.example".to_owned()];
    config.auth.enabled = true;
    config.auth.hs256_secret = Some("0123456789abcdef0123456789abcdef".to_owned());
    let gateway = TestGateway::start(config).await;
    assert_eq!(send(&gateway, "GET", "/lab", &[], "").await.status, 404);
    let response = send(
        &gateway,
        "GET",
        "/client/streamgate.js",
        &[("origin", "https://app.example")],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let allow: Vec<_> = response
        .headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(allow, ["*"]);
    assert_eq!(response.header("access-control-allow-credentials"), None);
    gateway.shutdown().await;
}
