//! Abuse: origins, CSRF and CORS (issue 19, item 7).
//!
//! Before the fix: the WebSocket same-origin check ignored the scheme (`http://host` was
//! accepted on the `https://host` listener), a cross-site `POST /publish` or `POST /poll`
//! carrying the token cookie was accepted, and no CORS headers existed at all.

use serde_json::json;
use streamgate::config::GatewayConfig;
use tokio::net::TcpStream;

use super::common::{assert_refused, hs256_token, send, tls_connect, Sse, TestGateway};
use super::echo::RawWs;
use super::support::served_within;

const SECRET: &str = "abuse-origin-secret-0123456789abcdef";

fn auth_config() -> GatewayConfig {
    let mut config = TestGateway::quiet_config();
    config.auth.enabled = true;
    config.auth.hs256_secret = Some(SECRET.to_owned());
    config
}

/// A token that may publish to and subscribe to `chat`, valid for a minute.
fn token() -> String {
    hs256_token(SECRET, &["chat"], &["chat"], 60)
}

/// The head, lowercased, of the answer to an SSE request on `/sse?topics=demo` with this
/// `Origin`.
async fn sse_head(gateway: &TestGateway, origin: &str) -> String {
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    let sse = Sse::over(stream, "demo", &format!("origin: {origin}\r\n")).await;
    sse.seen
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase()
}

#[tokio::test]
async fn an_http_origin_on_the_https_listener_is_refused_403() {
    let mut config = TestGateway::quiet_config();
    config.tls.enabled = true;
    let gateway = TestGateway::start(config).await;
    let tls_addr = gateway.tls_addr.unwrap();
    let host = format!("localhost:{}", tls_addr.port());
    let upgrade = |origin: String| {
        let gateway = &gateway;
        let host = host.clone();
        async move {
            let stream = tls_connect(gateway, b"http/1.1").await;
            let (_, answer) =
                RawWs::upgrade(stream, &host, "/ws", &format!("origin: {origin}\r\n")).await;
            answer
        }
    };

    // The same host and port, over plain HTTP: another origin (a page anyone on the path
    // can rewrite).
    let answer = upgrade(format!("http://{host}")).await;
    println!("abuse[origin scheme]: {} {}", answer.status, answer.body);
    assert_eq!(answer.status, 403, "{}", answer.head);
    assert!(
        answer.body.contains("origin_not_allowed"),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains(&format!("http://{host}")),
        "{}",
        answer.body
    );

    // The gateway's own origin is served, and so is a second client.
    let (answer, _) = served_within(
        "an http:// Origin on https",
        upgrade(format!("https://{host}")),
    )
    .await;
    assert_eq!(answer.status, 101, "{}", answer.head);

    // On the plain listener it is the other way round.
    let plain = gateway.addr.to_string();
    for (origin, status) in [
        (format!("http://{plain}"), 101),
        (format!("https://{plain}"), 403),
    ] {
        let stream = TcpStream::connect(gateway.addr).await.unwrap();
        let (_, answer) =
            RawWs::upgrade(stream, &plain, "/ws", &format!("origin: {origin}\r\n")).await;
        assert_eq!(answer.status, status, "{origin}: {}", answer.head);
    }
}

#[tokio::test]
async fn a_cross_site_cookie_post_is_refused_403_csrf() {
    let mut config = auth_config();
    // The operator's other site (or its public https:// origin behind a TLS proxy).
    config.ws.origins.allow = vec!["https://app.example".to_owned()];
    let gateway = TestGateway::start(config).await;
    let cookie = format!("streamgate_token={}", token());
    let own = format!("http://{}", gateway.addr);
    let publish =
        json!({"type":"publish","topic":"chat","content_type":"text","data":"hi"}).to_string();

    // A page on another site makes the browser POST with the cookie: refused, both routes.
    for (path, body) in [
        ("/publish/chat", "hi".to_owned()),
        ("/poll", publish.clone()),
    ] {
        let response = send(
            &gateway,
            "POST",
            path,
            &[
                ("cookie", &cookie),
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            body.clone(),
        )
        .await;
        println!(
            "abuse[csrf]: POST {path} from evil.example: {} {}",
            response.status,
            response.text()
        );
        assert_refused(&response, 403, "csrf");
        assert!(
            response.text().contains("evil.example"),
            "{}",
            response.text()
        );
        // The same host over the other scheme is another site too.
        let response = send(
            &gateway,
            "POST",
            path,
            &[
                ("cookie", &cookie),
                ("origin", &format!("https://{}", gateway.addr)),
            ],
            body.clone(),
        )
        .await;
        assert_refused(&response, 403, "csrf");
        // A cookie and neither Origin nor Sec-Fetch-Site: not a browser, which can use a header.
        let response = send(&gateway, "POST", path, &[("cookie", &cookie)], body.clone()).await;
        assert_refused(&response, 403, "csrf");
    }

    // The gateway's own pages, by Origin or by Fetch Metadata, a listed origin, and a token
    // that is not ambient (a header) from anywhere: served.
    let bearer = format!("Bearer {}", token());
    for headers in [
        vec![("cookie", cookie.as_str()), ("origin", own.as_str())],
        vec![
            ("cookie", cookie.as_str()),
            ("origin", "https://app.example"),
        ],
        vec![
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        vec![
            ("authorization", bearer.as_str()),
            ("origin", "https://evil.example"),
        ],
    ] {
        let (response, _) = served_within(
            "a cross-site cookie POST",
            send(&gateway, "POST", "/publish/chat", &headers, "hi"),
        )
        .await;
        assert_eq!(response.status, 200, "{headers:?}: {}", response.text());
        let response = send(&gateway, "POST", "/poll", &headers, publish.clone()).await;
        assert_eq!(response.status, 200, "{headers:?}: {}", response.text());
    }
}

#[tokio::test]
async fn cors_allows_the_listed_origin_only() {
    let mut config = TestGateway::quiet_config();
    config.http.cors_origins = vec!["https://app.example".to_owned()];
    config.webtransport.public_url = Some("https://wt.example.com:4433/wt".to_owned());
    let gateway = TestGateway::start(config).await;

    // Preflight of a publish with its headers, from the listed origin.
    let preflight = |origin: &'static str| {
        let gateway = &gateway;
        async move {
            send(
                gateway,
                "OPTIONS",
                "/publish/chat",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                "",
            )
            .await
        }
    };
    let response = preflight("https://app.example").await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    let allowed = response.header("access-control-allow-headers").unwrap();
    for name in ["Last-Event-ID", "Authorization", "Content-Type"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(response
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert!(response.header("access-control-max-age").is_some());

    let response = preflight("https://evil.example").await;
    println!(
        "abuse[cors]: preflight from evil.example: {} {}",
        response.status,
        response.text()
    );
    assert_refused(&response, 403, "cors_not_allowed");
    assert_eq!(response.header("access-control-allow-origin"), None);

    // A fetch-like GET /sse (the lean HTTP/1.1 path) from the listed origin, and another.
    let head = sse_head(&gateway, "https://app.example").await;
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-credentials: true"),
        "{head}"
    );
    assert!(head.contains("vary: origin"), "{head}");
    let head = sse_head(&gateway, "https://evil.example").await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");

    // GET /poll (lean path too) and /wt/cert-hash, which reports the configured public URL.
    let listed = [("origin", "https://app.example")];
    let response = send(&gateway, "GET", "/poll?topics=demo&timeout=0", &listed, "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let (response, _) = served_within(
        "CORS requests",
        send(&gateway, "GET", "/wt/cert-hash", &listed, ""),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(response.json()["url"], "https://wt.example.com:4433/wt");
    // Without Origin (not a cross-origin fetch): no CORS headers.
    let response = send(&gateway, "GET", "/healthz", &[], "").await;
    assert_eq!(response.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_cors_wildcard_never_allows_credentials() {
    let mut config = TestGateway::quiet_config();
    config.http.cors_origins = vec!["*".to_owned()];
    let gateway = TestGateway::start(config).await;
    let response = send(
        &gateway,
        "GET",
        "/poll?topics=demo&timeout=0",
        &[("origin", "https://anyone.example")],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(response.header("access-control-allow-credentials"), None);
    // No CORS configured (the default): nothing, and a preflight is refused.
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let response = send(
        &gateway,
        "GET",
        "/healthz",
        &[("origin", "https://anyone.example")],
        "",
    )
    .await;
    assert_eq!(response.header("access-control-allow-origin"), None);
    let (response, _) = served_within(
        "a preflight without CORS",
        send(
            &gateway,
            "OPTIONS",
            "/sse",
            &[
                ("origin", "https://anyone.example"),
                ("access-control-request-method", "GET"),
            ],
            "",
        ),
    )
    .await;
    assert_refused(&response, 403, "cors_not_allowed");
}
