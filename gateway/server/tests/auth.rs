//! `[auth]` end to end: JWTs on every transport and on the publish API, with the gateway in
//! this process. Tokens are HS256, signed here with the configured secret; the algorithm
//! rules (RS256/ES256, confusion, `none`) are unit-tested in `src/auth.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_refused, cert_hash_digest, hs256_token, now, send, TestGateway};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use streamgate::config::GatewayConfig;
use streamgate_core::{ContentType, Topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "integration-test-secret-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

fn config() -> GatewayConfig {
    let mut config = TestGateway::quiet_config();
    config.auth.enabled = true;
    config.auth.hs256_secret = Some(SECRET.to_owned());
    config.auth.leeway = 0;
    config
}

/// A token valid for `ttl` seconds.
fn token(subscribe: &[&str], publish: &[&str], ttl: u64) -> String {
    hs256_token(SECRET, subscribe, publish, ttl)
}

/// A token for `demo` (subscribe) and `chat` (publish), valid for a minute.
fn good() -> String {
    token(&["demo", "news.*"], &["chat"], 60)
}

async fn publish(gateway: &TestGateway, topic: &str, text: &str) -> String {
    let event = gateway
        .app
        .bus
        .publish(
            Topic::new(topic).unwrap(),
            ContentType::Text,
            text.to_owned().into(),
        )
        .await
        .unwrap();
    event.id.to_string()
}

/// An open HTTP/1.1 response stream, read incrementally (SSE).
struct Stream {
    tcp: TcpStream,
    seen: String,
}

impl Stream {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Self) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut stream = Self {
            tcp,
            seen: String::new(),
        };
        assert!(stream.read_until("\r\n\r\n").await, "no response head");
        let status = stream.seen[9..12].parse().unwrap();
        (status, stream)
    }

    /// Reads until `needle` has been seen (true) or the stream ends or stalls (false).
    async fn read_until(&mut self, needle: &str) -> bool {
        let read = async {
            let mut buffer = [0u8; 4096];
            while !self.seen.contains(needle) {
                match self.tcp.read(&mut buffer).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
                }
            }
            true
        };
        tokio::time::timeout(WAIT, read).await.unwrap_or(false)
    }
}

#[tokio::test]
async fn sse_needs_a_token_for_its_topics() {
    let gateway = TestGateway::start(config()).await;
    let addr = gateway.addr;
    // A valid subscriber first: it must keep receiving while others are refused.
    let (status, mut keeper) =
        Stream::open(addr, &format!("/sse?topics=demo&token={}", good()), &[]).await;
    assert_eq!(status, 200, "{}", keeper.seen);
    assert!(keeper.read_until("streamgate epoch").await);

    assert_refused(
        &send(&gateway, "GET", "/sse?topics=demo", &[], "").await,
        401,
        "unauthorized",
    );
    assert_refused(
        &send(
            &gateway,
            "GET",
            "/sse?topics=demo&token=not.a.token",
            &[],
            "",
        )
        .await,
        401,
        "unauthorized",
    );
    let wrong = token(&["demo"], &[], 60).replace('.', ".x");
    assert_refused(
        &send(
            &gateway,
            "GET",
            &format!("/sse?topics=demo&token={wrong}"),
            &[],
            "",
        )
        .await,
        401,
        "unauthorized",
    );
    let response = send(
        &gateway,
        "GET",
        &format!("/sse?topics=demo,secret&token={}", good()),
        &[],
        "",
    )
    .await;
    assert_refused(&response, 403, "forbidden");
    assert!(response.text().contains("secret"), "{}", response.text());

    let bearer = format!("Bearer {}", good());
    let cookie = format!("other=1; streamgate_token={}", good());
    let (s1, mut by_header) =
        Stream::open(addr, "/sse?topics=news.eu", &[("authorization", &bearer)]).await;
    let (s2, mut by_cookie) =
        Stream::open(addr, "/sse?topics=news.eu", &[("cookie", &cookie)]).await;
    assert_eq!((s1, s2), (200, 200));
    assert!(by_header.read_until("streamgate epoch").await);
    assert!(by_cookie.read_until("streamgate epoch").await);

    let demo_id = publish(&gateway, "demo", "to demo").await;
    let news_id = publish(&gateway, "news.eu", "to news").await;
    assert!(
        keeper.read_until(&format!("id: {demo_id}")).await,
        "{}",
        keeper.seen
    );
    assert!(by_header.read_until(&format!("id: {news_id}")).await);
    assert!(by_cookie.read_until(&format!("id: {news_id}")).await);
    gateway.shutdown().await;
}

#[tokio::test]
async fn sse_stream_ends_when_the_token_expires() {
    let gateway = TestGateway::start(config()).await;
    let short = token(&["demo"], &[], 2);
    let (status, mut stream) = Stream::open(
        gateway.addr,
        &format!("/sse?topics=demo&token={short}"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (_, mut keeper) = Stream::open(
        gateway.addr,
        &format!("/sse?topics=demo&token={}", good()),
        &[],
    )
    .await;
    assert!(stream.read_until("streamgate epoch").await);
    let id = publish(&gateway, "demo", "before expiry").await;
    assert!(stream.read_until(&format!("id: {id}")).await);
    let started = std::time::Instant::now();
    assert!(
        stream
            .read_until(
                "event: @expired\ndata: {\"type\":\"expired\",\"reason\":\"token expired\"}\n\n"
            )
            .await,
        "{}",
        stream.seen
    );
    assert!(started.elapsed() <= Duration::from_secs(3));
    // The end of the chunked body follows: the stream is over.
    assert!(
        stream.read_until("\r\n0\r\n\r\n").await,
        "{:?}",
        stream.seen
    );
    // Reconnecting with the same token is refused; the other subscriber is unaffected.
    assert_refused(
        &send(
            &gateway,
            "GET",
            &format!("/sse?topics=demo&token={short}"),
            &[],
            "",
        )
        .await,
        401,
        "unauthorized",
    );
    let id = publish(&gateway, "demo", "after expiry").await;
    assert!(keeper.read_until(&format!("id: {id}")).await);
    assert!(!keeper.seen.contains("@expired"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn long_polling_checks_every_poll_and_publish() {
    let gateway = TestGateway::start(config()).await;
    let poll = "/poll?topics=demo&timeout=0";
    assert_refused(
        &send(&gateway, "GET", poll, &[], "").await,
        401,
        "unauthorized",
    );
    let other = token(&["news"], &[], 60);
    assert_refused(
        &send(&gateway, "GET", &format!("{poll}&token={other}"), &[], "").await,
        403,
        "forbidden",
    );
    let bearer = format!("Bearer {}", good());
    let cookie = format!("streamgate_token={}", good());
    for (path, headers) in [
        (format!("{poll}&token={}", good()), vec![]),
        (poll.to_owned(), vec![("authorization", bearer.as_str())]),
        (poll.to_owned(), vec![("cookie", cookie.as_str())]),
    ] {
        let response = send(&gateway, "GET", &path, &headers, "").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(response.json()["cursor"].is_string());
    }

    // The token expires between polls: the next poll is a 401.
    let short = token(&["demo"], &[], 1);
    let response = send(&gateway, "GET", &format!("{poll}&token={short}"), &[], "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = send(&gateway, "GET", &format!("{poll}&token={short}"), &[], "").await;
    assert_refused(&response, 401, "unauthorized");
    assert!(response.text().contains("expired"), "{}", response.text());

    // POST /poll publishes only to granted topics.
    let message =
        r#"{"type":"publish","topic":"chat","content_type":"text","data":"hi","ref":"r1"}"#;
    let response = send(&gateway, "POST", "/poll", &[], message).await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(
        response.json()["code"],
        "unauthorized",
        "{}",
        response.text()
    );
    let reader = format!("Bearer {}", token(&["*"], &["news"], 60));
    let response = send(
        &gateway,
        "POST",
        "/poll",
        &[("authorization", &reader)],
        message,
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.json()["code"], "forbidden");
    assert_eq!(response.json()["ref"], "r1");
    let response = send(
        &gateway,
        "POST",
        "/poll",
        &[("authorization", &bearer)],
        message,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["type"], "published");
    gateway.shutdown().await;
}

#[tokio::test]
async fn publish_api_needs_publish_rights() {
    let gateway = TestGateway::start(config()).await;
    let response = send(&gateway, "POST", "/publish/chat", &[], "hi").await;
    assert_refused(&response, 401, "unauthorized");
    let reader = format!("Bearer {}", token(&["*"], &["news.*"], 60));
    let response = send(
        &gateway,
        "POST",
        "/publish/chat",
        &[("authorization", &reader)],
        "hi",
    )
    .await;
    assert_refused(&response, 403, "forbidden");
    let bearer = format!("Bearer {}", good());
    let response = send(
        &gateway,
        "POST",
        "/publish/chat",
        &[("authorization", &bearer)],
        "hi",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let response = send(
        &gateway,
        "POST",
        &format!("/publish/chat?token={}", good()),
        &[],
        "hi",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    // Nothing was published by the refused requests.
    let topics = send(&gateway, "GET", "/topics", &[], "").await.json();
    assert_eq!(topics["topics"][0]["published"], 2, "{topics}");
    gateway.shutdown().await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens `/ws…` with extra headers: the socket, or the HTTP status of the refusal.
async fn ws_connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes());
        request
            .headers_mut()
            .insert(name.unwrap(), value.parse().unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

enum Next {
    Json(Value),
    Closed(u16, String),
}

async fn ws_next(socket: &mut Ws) -> Next {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Next::Json(serde_json::from_str(&text).unwrap())
            }
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.expect("a close frame with a code");
                return Next::Closed(u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close: {other:?}"),
        }
    }
}

async fn ws_json(socket: &mut Ws) -> Value {
    match ws_next(socket).await {
        Next::Json(value) => value,
        Next::Closed(code, reason) => panic!("closed {code} {reason}"),
    }
}

async fn ws_closed(socket: &mut Ws) -> (u16, String) {
    match ws_next(socket).await {
        Next::Closed(code, reason) => (code, reason),
        Next::Json(value) => panic!("expected a close, got {value}"),
    }
}

async fn ws_send(socket: &mut Ws, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn websocket_upgrade_needs_a_token_for_its_topics() {
    let gateway = TestGateway::start(config()).await;
    let addr = gateway.addr;
    let mut keeper = ws_connect(addr, &format!("/ws?topics=demo&token={}", good()), &[])
        .await
        .unwrap();
    assert_eq!(ws_json(&mut keeper).await["type"], "subscribed");

    assert_eq!(
        ws_connect(addr, "/ws?topics=demo", &[]).await.err(),
        Some(401)
    );
    assert_eq!(
        ws_connect(addr, "/ws?topics=demo&token=garbage", &[])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        ws_connect(addr, &format!("/ws?topics=secret&token={}", good()), &[])
            .await
            .err(),
        Some(403)
    );
    let bearer = format!("Bearer {}", good());
    let cookie = format!("streamgate_token={}", good());
    let mut by_header = ws_connect(addr, "/ws?topics=demo", &[("authorization", &bearer)])
        .await
        .unwrap();
    let mut by_cookie = ws_connect(addr, "/ws?topics=demo", &[("cookie", &cookie)])
        .await
        .unwrap();
    for socket in [&mut by_header, &mut by_cookie] {
        assert_eq!(ws_json(socket).await["type"], "subscribed");
    }

    // Subscribing and publishing over the socket are checked against the grant.
    ws_send(
        &mut by_header,
        json!({"type":"subscribe","topics":["secret"],"ref":"s1"}),
    )
    .await;
    let reply = ws_json(&mut by_header).await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{reply}"
    );
    assert_eq!(reply["ref"], "s1");
    ws_send(
        &mut by_header,
        json!({"type":"publish","topic":"demo","data":1,"ref":"p1"}),
    )
    .await;
    let reply = ws_json(&mut by_header).await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    ws_send(
        &mut by_header,
        json!({"type":"publish","topic":"chat","data":1,"ref":"p2"}),
    )
    .await;
    let reply = ws_json(&mut by_header).await;
    assert_eq!(reply["type"], "published", "{reply}");

    let id = publish(&gateway, "demo", "for everyone").await;
    for socket in [&mut keeper, &mut by_header, &mut by_cookie] {
        let event = ws_json(socket).await;
        assert_eq!(event["id"], id.as_str(), "{event}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn websocket_first_message_auth() {
    let gateway = TestGateway::start(config()).await;
    let addr = gateway.addr;
    // Upgraded without a token (no topics in the URL): the first message authenticates.
    let mut socket = ws_connect(addr, "/ws", &[]).await.unwrap();
    ws_send(&mut socket, json!({"type":"auth","token": good()})).await;
    let reply = ws_json(&mut socket).await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert!(reply["expires_at"].as_u64().unwrap() >= now() + 50);
    ws_send(&mut socket, json!({"type":"subscribe","topics":["demo"]})).await;
    assert_eq!(ws_json(&mut socket).await["type"], "subscribed");
    let id = publish(&gateway, "demo", "x").await;
    assert_eq!(ws_json(&mut socket).await["id"], id.as_str());

    // Anything else first: closed with 1008.
    let mut early = ws_connect(addr, "/ws", &[]).await.unwrap();
    ws_send(&mut early, json!({"type":"subscribe","topics":["demo"]})).await;
    let (code, reason) = ws_closed(&mut early).await;
    assert_eq!(code, u16::from(CloseCode::Policy));
    assert!(reason.contains("auth"), "{reason}");
    // A bad token first: closed with 1008 and the reason.
    let mut bad = ws_connect(addr, "/ws", &[]).await.unwrap();
    ws_send(&mut bad, json!({"type":"auth","token":"nope"})).await;
    let (code, reason) = ws_closed(&mut bad).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("invalid token"), "{reason}");
    // Nothing at all: closed with 1008 after the auth timeout.
    let mut silent = ws_connect(addr, "/ws", &[]).await.unwrap();
    let (code, reason) = ws_closed(&mut silent).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("authentication required"), "{reason}");
    // The authenticated socket was not disturbed.
    let id = publish(&gateway, "demo", "y").await;
    assert_eq!(ws_json(&mut socket).await["id"], id.as_str());
    gateway.shutdown().await;
}

#[tokio::test]
async fn websocket_closes_with_1008_when_the_token_expires() {
    let gateway = TestGateway::start(config()).await;
    let short = token(&["demo"], &[], 2);
    let mut socket = ws_connect(gateway.addr, &format!("/ws?topics=demo&token={short}"), &[])
        .await
        .unwrap();
    let mut keeper = ws_connect(
        gateway.addr,
        &format!("/ws?topics=demo&token={}", good()),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(ws_json(&mut socket).await["type"], "subscribed");
    assert_eq!(ws_json(&mut keeper).await["type"], "subscribed");
    let started = std::time::Instant::now();
    assert_eq!(
        ws_closed(&mut socket).await,
        (1008, "token expired".to_owned())
    );
    assert!(started.elapsed() <= Duration::from_secs(3));
    let id = publish(&gateway, "demo", "after").await;
    assert_eq!(ws_json(&mut keeper).await["id"], id.as_str());

    // A fresh token sent before expiry extends the connection.
    let mut renewed = ws_connect(
        gateway.addr,
        &format!("/ws?topics=demo&token={}", token(&["demo"], &[], 2)),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(ws_json(&mut renewed).await["type"], "subscribed");
    ws_send(&mut renewed, json!({"type":"auth","token": good()})).await;
    assert_eq!(ws_json(&mut renewed).await["type"], "authenticated");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let id = publish(&gateway, "demo", "still here").await;
    assert_eq!(ws_json(&mut renewed).await["id"], id.as_str());
    gateway.shutdown().await;
}

mod wt {
    use super::*;
    use wtransport::endpoint::ConnectOptions;
    use wtransport::error::{ConnectingError, ConnectionError};
    use wtransport::{ClientConfig, Connection, Endpoint, RecvStream};

    /// Opens a session on `/wt{query}`, with `headers` on its CONNECT request: the session,
    /// or the application close that refused it.
    async fn session(
        gateway: &TestGateway,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Connection, (u32, String)> {
        let doc = send(gateway, "GET", "/wt/cert-hash", &[], "").await.json();
        let config = ClientConfig::builder()
            .with_bind_address(SocketAddr::from(([127, 0, 0, 1], 0)))
            .with_server_certificate_hashes([cert_hash_digest(&doc)])
            .build();
        let endpoint = Endpoint::client(config).unwrap();
        let mut options =
            ConnectOptions::builder(format!("{}{query}", doc["url"].as_str().unwrap()));
        for (name, value) in headers {
            options = options.add_header(*name, *value);
        }
        match tokio::time::timeout(WAIT, endpoint.connect(options.build()))
            .await
            .unwrap()
        {
            Ok(connection) => Ok(connection),
            Err(ConnectingError::ConnectionError(ConnectionError::ApplicationClosed(close))) => {
                Err(application_close(&close))
            }
            Err(other) => panic!("connect: {other}"),
        }
    }

    fn application_close(close: &wtransport::error::ApplicationClose) -> (u32, String) {
        (
            u32::try_from(close.code().into_inner()).unwrap(),
            String::from_utf8_lossy(close.reason()).into_owned(),
        )
    }

    async fn closed(connection: &Connection) -> (u32, String) {
        match tokio::time::timeout(WAIT, connection.closed())
            .await
            .unwrap()
        {
            ConnectionError::ApplicationClosed(close) => application_close(&close),
            other => panic!("expected an application close, got {other}"),
        }
    }

    /// The session's close when the server refuses it, whether during connect or after.
    async fn refused(
        gateway: &TestGateway,
        query: &str,
        headers: &[(&str, &str)],
    ) -> (u32, String) {
        match session(gateway, query, headers).await {
            Ok(connection) => closed(&connection).await,
            Err(close) => close,
        }
    }

    /// One length-prefixed JSON message of a stream.
    async fn read_message(stream: &mut RecvStream) -> Value {
        tokio::time::timeout(WAIT, async {
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix).await.unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
            stream.read_exact(&mut body).await.unwrap();
            serde_json::from_slice(&body).unwrap()
        })
        .await
        .expect("a message in time")
    }

    /// The control stream, and its first message.
    async fn control(connection: &Connection) -> (RecvStream, Value) {
        let mut control = tokio::time::timeout(WAIT, connection.accept_uni())
            .await
            .unwrap()
            .unwrap();
        let first = read_message(&mut control).await;
        (control, first)
    }

    /// The first message of the control stream.
    async fn subscribed(connection: &Connection) -> Value {
        control(connection).await.1
    }

    #[tokio::test]
    async fn webtransport_sessions_need_a_token() {
        let gateway = TestGateway::start(config()).await;
        let keeper = session(&gateway, &format!("?topics=demo&token={}", good()), &[])
            .await
            .unwrap();
        assert_eq!(subscribed(&keeper).await["type"], "subscribed");
        let (code, reason) = refused(&gateway, "?topics=demo", &[]).await;
        assert_eq!(code, 4401, "{reason}");
        assert!(reason.starts_with("unauthorized"), "{reason}");
        let (code, reason) =
            refused(&gateway, &format!("?topics=secret&token={}", good()), &[]).await;
        assert_eq!(code, 4403, "{reason}");
        assert!(reason.starts_with("forbidden"), "{reason}");

        let short = session(
            &gateway,
            &format!("?topics=demo&token={}", token(&["demo"], &[], 2)),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(subscribed(&short).await["type"], "subscribed");
        let started = std::time::Instant::now();
        assert_eq!(closed(&short).await, (1008, "token expired".to_owned()));
        assert!(started.elapsed() <= Duration::from_secs(3));
        let still_open = tokio::time::timeout(Duration::from_millis(300), keeper.closed()).await;
        assert!(still_open.is_err(), "the other session is still open");
        gateway.shutdown().await;
    }

    #[tokio::test]
    async fn webtransport_token_in_the_authorization_header() {
        let gateway = TestGateway::start(config()).await;
        let keeper = session(&gateway, &format!("?topics=demo&token={}", good()), &[])
            .await
            .unwrap();
        let (mut keeper_control, first) = control(&keeper).await;
        assert_eq!(first["type"], "subscribed");

        // The token in `Authorization: Bearer` on the CONNECT request, none in the URL.
        let bearer = format!("Bearer {}", good());
        let by_header = session(&gateway, "?topics=demo", &[("authorization", &bearer)])
            .await
            .unwrap();
        let (mut header_control, first) = control(&by_header).await;
        assert_eq!(first["type"], "subscribed", "{first}");

        // A wrong token there is refused with 4401, even with a good one in the URL: the
        // header is looked at first (docs/PROTOCOL.md §8).
        let wrong = format!("Bearer {}", token(&["demo"], &[], 60).replace('.', ".x"));
        let (code, reason) = refused(&gateway, "?topics=demo", &[("authorization", &wrong)]).await;
        assert_eq!(code, 4401, "{reason}");
        assert!(reason.starts_with("unauthorized"), "{reason}");
        let (code, reason) = refused(
            &gateway,
            &format!("?topics=demo&token={}", good()),
            &[("authorization", "Bearer garbage")],
        )
        .await;
        assert_eq!(code, 4401, "{reason}");
        assert!(reason.starts_with("unauthorized"), "{reason}");
        // A good header token does not grant what its claims do not: 4403.
        let (code, reason) =
            refused(&gateway, "?topics=secret", &[("authorization", &bearer)]).await;
        assert_eq!(code, 4403, "{reason}");
        assert!(reason.starts_with("forbidden"), "{reason}");

        // The sessions let in are unaffected, and receive.
        let id = publish(&gateway, "demo", "after the refusals").await;
        for control in [&mut keeper_control, &mut header_control] {
            let event = read_message(control).await;
            assert_eq!(event["id"], id.as_str(), "{event}");
        }
        gateway.shutdown().await;
    }
}
