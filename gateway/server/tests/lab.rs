//! The teaching lab over real connections: the page and its API, which connections are
//! tapped (only those that name a tap the lab issued to them, with `lab=`), what a tap
//! records and how the inspector annotates it, the bounds of a tap, and a gateway with the
//! lab turned off (by configuration, or by listening on a public address).

mod common;

use std::time::Duration;

use common::{send, TestClient, TestGateway};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use streamgate::config::{GatewayConfig, LabSwitch};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Upper bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

fn quiet() -> GatewayConfig {
    TestGateway::quiet_config()
}

async fn get_json(gateway: &TestGateway, path: &str) -> (u16, Value) {
    let response = send(gateway, "GET", path, &[], "").await;
    (response.status, response.json())
}

async fn publish(gateway: &TestGateway, topic: &str, body: &str) -> String {
    let response = send(
        gateway,
        "POST",
        &format!("/publish/{topic}"),
        &[("content-type", "application/json")],
        body.to_owned(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_owned()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(gateway: &TestGateway, path: &str) -> Ws {
    let url = format!("ws://{}{path}", gateway.addr);
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    ws
}

/// The next text message that is an event.
async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("no error");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "event" {
                return value;
            }
        }
    }
}

/// A tap issued to this test (127.0.0.1) by `POST /lab/api/taps`.
async fn issue_tap(gateway: &TestGateway) -> String {
    let response = send(gateway, "POST", "/lab/api/taps", &[], "").await;
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_owned()
}

/// The summaries of the taps named, as their owner sees them.
async fn tap_summaries(gateway: &TestGateway, ids: &[&str]) -> Value {
    let (status, body) = get_json(gateway, &format!("/lab/api/taps?ids={}", ids.join(","))).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `GET /lab/api/taps/{id}` until `done` holds for its items (taps are written by the
/// connection's task, so the API may be a moment behind the client).
async fn items_until(
    gateway: &TestGateway,
    id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> (Value, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get_json(gateway, &format!("/lab/api/taps/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if done(&items) {
            return (body, items);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tap {id} never had the expected items: {items:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Depth-first search for a note labelled `label` in an item's notes.
fn find_note<'a>(notes: &'a Value, label: &str) -> Option<&'a Value> {
    notes.as_array()?.iter().find_map(|note| {
        if note["label"] == label {
            Some(note)
        } else {
            find_note(&note["children"], label)
        }
    })
}

#[tokio::test]
async fn the_page_and_its_api_are_served_by_default_on_loopback() {
    let gateway = TestGateway::start(quiet()).await;
    let page = send(&gateway, "GET", "/lab", &[], "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.text().contains("/lab/lab.js"),
        "the page loads its script"
    );
    for (path, content_type) in [
        ("/lab/lab.js", "text/javascript; charset=utf-8"),
        ("/lab/lab.css", "text/css; charset=utf-8"),
    ] {
        let asset = send(&gateway, "GET", path, &[], "").await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("content-type"), Some(content_type), "{path}");
        assert!(!asset.body.is_empty(), "{path}");
    }
    let (status, config) = get_json(&gateway, "/lab/api/config").await;
    assert_eq!(status, 200);
    assert_eq!(config["demo_topic"], "demo");
    assert_eq!(config["lab_topic"], "lab");
    assert_eq!(config["limits"]["records_per_connection"], 256);
    assert_eq!(config["webtransport"]["algorithm"], "sha-256");
    let put = send(&gateway, "PUT", "/lab/api/taps", &[], "").await;
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, HEAD, POST"));
    let post = send(&gateway, "POST", "/lab/lab.js", &[], "").await;
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        send(&gateway, "GET", "/lab/nothing", &[], "").await.status,
        404
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn only_connections_naming_an_issued_tap_are_tapped() {
    let gateway = TestGateway::start(quiet()).await;
    let issued = send(&gateway, "POST", "/lab/api/taps", &[], "").await;
    assert_eq!(issued.status, 201);
    let issued = issued.json();
    let ws_tap = issued["id"].as_str().unwrap().to_owned();
    assert_eq!(ws_tap.len(), 22, "128 bits in base64url: {issued}");
    assert_eq!(issued["param"], format!("lab={ws_tap}"));
    assert_eq!(issued["tap"]["transport"], Value::Null, "no connection yet");
    let poll_tap = issue_tap(&gateway).await;
    let mut plain = ws_connect(&gateway, "/ws?topics=news").await;
    let mut tapped = ws_connect(&gateway, &format!("/ws?topics=news&lab={ws_tap}")).await;
    // An id the lab did not issue is served, untapped.
    let mut chosen = ws_connect(&gateway, "/ws?topics=news&lab=t-ws").await;
    let mut client = TestClient::connect(gateway.addr).await;
    let poll = client.get("/poll?topics=news&timeout=0").await;
    assert_eq!(poll.status, 200);
    let poll = client
        .get(&format!("/poll?topics=news&timeout=0&lab={poll_tap}"))
        .await;
    assert_eq!(poll.status, 200);
    // A malformed id is not a tap request (and not an error: the parameter is the lab's).
    let poll = client.get("/poll?topics=news&timeout=0&lab=a%2Fb").await;
    assert_eq!(poll.status, 200);
    publish(&gateway, "news", r#"{"n":1}"#).await;
    next_event(&mut plain).await;
    next_event(&mut tapped).await;
    next_event(&mut chosen).await;
    let taps = tap_summaries(&gateway, &[&ws_tap, &poll_tap, "t-ws"]).await;
    assert_eq!(taps["missing"], serde_json::json!(["t-ws"]), "{taps}");
    let listed = taps["taps"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{taps}");
    let ws = listed.iter().find(|t| t["id"] == ws_tap.as_str()).unwrap();
    assert_eq!(ws["transport"], "ws");
    assert_eq!(ws["live"], 1);
    assert!(
        ws["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ws}"
    );
    assert!(ws["bytes_out"].as_u64().unwrap() > 0, "{ws}");
    let poll = listed
        .iter()
        .find(|t| t["id"] == poll_tap.as_str())
        .unwrap();
    assert_eq!(poll["transport"], "longpoll");
    // Nobody's taps are listed unasked.
    let (status, body) = get_json(&gateway, "/lab/api/taps").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["reason"].as_str().unwrap().contains("ids="),
        "{body}"
    );
    // Gone before shutdown, which would otherwise wait for their close handshakes.
    drop((plain, tapped, chosen));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_tap_is_used_and_read_only_by_the_client_it_was_issued_to() {
    let gateway = TestGateway::start(quiet()).await;
    let id = issue_tap(&gateway).await;
    let stranger: std::net::IpAddr = [127, 0, 0, 2].into();
    let mut other = TestClient::connect_from(gateway.addr, stranger).await;
    let attach = other
        .get(&format!("/poll?topics=news&timeout=0&lab={id}"))
        .await;
    assert_eq!(attach.status, 403, "{}", attach.text());
    assert_eq!(attach.json()["error"]["code"], "forbidden");
    assert!(
        attach.json()["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("issued to another client"),
        "{}",
        attach.text()
    );
    let read = other.get(&format!("/lab/api/taps/{id}")).await;
    assert_eq!(read.status, 403, "{}", read.text());
    let listed = other.get(&format!("/lab/api/taps?ids={id}")).await;
    assert_eq!(listed.json()["taps"], serde_json::json!([]));
    let deleted = other
        .request("DELETE", &format!("/lab/api/taps/{id}"), &[], "")
        .await;
    assert_eq!(deleted.status, 403);
    // Its owner still has it, and may let it go.
    let (status, body) = get_json(&gateway, &format!("/lab/api/taps/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["tap"]["connections"], 0,
        "the refused connection never attached"
    );
    let deleted = send(&gateway, "DELETE", &format!("/lab/api/taps/{id}"), &[], "").await;
    assert_eq!(deleted.status, 204);
    let (status, _) = get_json(&gateway, &format!("/lab/api/taps/{id}")).await;
    assert_eq!(status, 404);
    gateway.shutdown().await;
}

#[tokio::test]
async fn credentials_are_masked_in_recorded_heads() {
    let gateway = TestGateway::start(quiet()).await;
    let id = issue_tap(&gateway).await;
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2aWN0aW0ifQ.c2VjcmV0LXNpZ25hdHVyZQ";
    let mut client = TestClient::connect(gateway.addr).await;
    let poll = client
        .request(
            "GET",
            &format!("/poll?topics=news&timeout=0&api_key=k-query-secret&lab={id}"),
            &[
                ("x-api-key", "k-header-secret"),
                ("authorization", &format!("Bearer {jwt}")),
                ("cookie", "session=cookie-secret"),
            ],
            "",
        )
        .await;
    assert_eq!(poll.status, 200);
    let (_, items) = items_until(&gateway, &id, |items| items.len() >= 2).await;
    let head = String::from_utf8(base64_decode(&items[0]["data"])).unwrap();
    assert!(
        head.starts_with(&format!(
            "GET /poll?topics=news&timeout=0&api_key=[masked]&lab={id} HTTP/1.1\r\n"
        )),
        "{head}"
    );
    for line in [
        "x-api-key: [masked, 15 bytes]\r\n",
        "cookie: [masked, 21 bytes]\r\n",
    ] {
        assert!(head.contains(line), "{line:?} in {head}");
    }
    assert!(
        !head.contains("secret") && !head.contains(jwt),
        "a credential was recorded: {head}"
    );
    assert!(
        find_note(&items[0]["notes"], "masked").is_some(),
        "the inspector says what the marker means: {:#}",
        items[0]["notes"]
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_websocket_tap_shows_the_upgrade_and_annotated_frames() {
    let gateway = TestGateway::start(quiet()).await;
    let inspect = issue_tap(&gateway).await;
    let mut ws = ws_connect(&gateway, &format!("/ws?topics=news&lab={inspect}")).await;
    let published = publish(&gateway, "news", r#"{"headline":"hi"}"#).await;
    assert_eq!(next_event(&mut ws).await["id"], published);
    // A client frame: masked, as every client frame is.
    let message = r#"{"type":"publish","topic":"news","data":{"from":"client"},"ref":"c1"}"#;
    ws.send(Message::text(message)).await.unwrap();
    let (body, items) = items_until(&gateway, &inspect, |items| {
        items
            .iter()
            .any(|i| i["kind"] == "ws-frame" && i["direction"] == "in")
    })
    .await;
    assert_eq!(body["tap"]["transport"], "ws");

    // The upgrade: the request as hyper parsed it, the 101 as the gateway built it, and the
    // accept key computed step by step.
    let request = &items[0];
    assert_eq!(request["kind"], "http-head");
    assert_eq!(request["direction"], "in");
    assert!(
        request["title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("GET /ws?topics=news&lab={inspect} HTTP/1.1")),
        "{request}"
    );
    let response = &items[1];
    assert_eq!(response["direction"], "out");
    assert!(
        response["title"].as_str().unwrap().contains("101"),
        "{response}"
    );
    let accept = response["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["label"].as_str().unwrap().contains("Accept"))
        .unwrap_or_else(|| panic!("no accept explanation: {:#}", response["notes"]));
    assert!(
        !accept["children"].as_array().unwrap().is_empty(),
        "{accept}"
    );

    // The server's frames: unmasked text, the event among them.
    let out: Vec<&Value> = items
        .iter()
        .filter(|i| i["kind"] == "ws-frame" && i["direction"] == "out")
        .collect();
    assert!(out.len() >= 2, "subscribed and the event: {out:#?}");
    let event_frame = out
        .iter()
        .find(|i| String::from_utf8_lossy(&base64_decode(&i["data"])).contains(&published))
        .expect("the event's frame");
    assert!(find_note(&event_frame["notes"], "FIN").is_some());
    assert!(find_note(&event_frame["notes"], "opcode").unwrap()["value"]
        .as_str()
        .unwrap()
        .contains("text"));
    assert!(find_note(&event_frame["notes"], "masking key").is_none());

    // The client's frame: masked, and unmasked by the annotator.
    let client_frame = items
        .iter()
        .find(|i| i["kind"] == "ws-frame" && i["direction"] == "in")
        .unwrap();
    assert!(find_note(&client_frame["notes"], "masking key").is_some());
    let unmasked = find_note(&client_frame["notes"], "unmasked payload").unwrap();
    assert!(
        unmasked["value"].as_str().unwrap().contains("client"),
        "{unmasked}"
    );
    // Byte ranges point into the item's own bytes.
    let size = base64_decode(&client_frame["data"]).len() as u64;
    assert_eq!(
        client_frame["notes"][0]["bytes"],
        serde_json::json!([0, size])
    );

    // Paging: nothing new after the last record shown.
    let next = body["next_after"].as_u64().unwrap();
    let (_, later) = get_json(&gateway, &format!("/lab/api/taps/{inspect}?after={next}")).await;
    let again: Vec<&Value> = later["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "http-head")
        .collect();
    assert!(again.is_empty(), "heads are not sent twice: {again:#?}");
    drop(ws);
    gateway.shutdown().await;
}

fn base64_decode(value: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap())
        .unwrap()
}

#[tokio::test]
async fn sse_and_long_polling_taps_show_heads_and_bodies() {
    let gateway = TestGateway::start(quiet()).await;
    let (p, s) = (issue_tap(&gateway).await, issue_tap(&gateway).await);
    let mut client = TestClient::connect(gateway.addr).await;
    let since = publish(&gateway, "news", r#"{"n":0}"#).await;
    publish(&gateway, "news", r#"{"n":1}"#).await;
    let poll = client
        .get(&format!("/poll?topics=news&cursor={since}&lab={p}"))
        .await;
    assert_eq!(poll.status, 200);
    let (_, items) = items_until(&gateway, &p, |items| items.len() >= 3).await;
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["http-head", "http-head", "poll-body"]);
    assert!(items[1]["title"]
        .as_str()
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    let head = String::from_utf8(base64_decode(&items[1]["data"])).unwrap();
    assert!(
        head.contains(&format!("content-length: {}\r\n", poll.body.len())),
        "{head}"
    );
    assert_eq!(items[2]["size"], poll.body.len());

    // SSE: a streaming body, recorded chunk by chunk as it leaves. A raw socket, so that
    // dropping it ends the stream (and the gateway shuts down without waiting for it).
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "GET /sse?topics=news&lab={s} HTTP/1.1\r\nhost: {}\r\n\r\n",
        gateway.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (_, _) = items_until(&gateway, &s, |items| items.len() >= 3).await;
    publish(&gateway, "news", r#"{"n":2}"#).await;
    let (_, items) = items_until(&gateway, &s, |items| {
        items
            .iter()
            .any(|i| i["kind"] == "sse-chunk" && i["title"].as_str().unwrap().contains("event"))
    })
    .await;
    let head = String::from_utf8(base64_decode(&items[1]["data"])).unwrap();
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    let chunk = items
        .iter()
        .rev()
        .find(|i| i["kind"] == "sse-chunk")
        .unwrap();
    let framed = String::from_utf8(base64_decode(&chunk["data"])).unwrap();
    assert!(
        framed.contains("\r\nid: "),
        "chunk framing, then the block: {framed:?}"
    );
    drop(stream);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_tap_keeps_at_most_its_records_and_bytes() {
    let mut config = quiet();
    config.lab.records_per_connection = 4;
    config.lab.max_record_bytes = 64;
    let gateway = TestGateway::start(config).await;
    let small = issue_tap(&gateway).await;
    let mut ws = ws_connect(&gateway, &format!("/ws?topics=news&lab={small}")).await;
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(300));
    for _ in 0..6 {
        publish(&gateway, "news", &big).await;
        next_event(&mut ws).await;
    }
    let (_, body) = get_json(&gateway, &format!("/lab/api/taps/{small}")).await;
    let tap = &body["tap"];
    assert_eq!(tap["records"], 4, "{tap}");
    assert!(tap["evicted"].as_u64().unwrap() >= 5, "{tap}");
    assert!(tap["truncated"].as_u64().unwrap() >= 6, "{tap}");
    assert!(
        tap["bytes_out"].as_u64().unwrap() > 6 * 300,
        "every byte counted: {tap}"
    );
    for item in body["items"].as_array().unwrap() {
        assert!(item["kept"].as_u64().unwrap() <= 64, "{item}");
        assert!(base64_decode(&item["data"]).len() <= 64 + 16, "{item}");
    }
    // The upgrade is pinned: still shown although the ring moved on.
    assert_eq!(body["items"][0]["kind"], "http-head", "{:#}", body["items"]);
    drop(ws);
    gateway.shutdown().await;
}

#[tokio::test]
async fn unknown_taps_and_bad_queries_are_json_errors() {
    let gateway = TestGateway::start(quiet()).await;
    for path in [
        "/lab/api/taps/nope",
        "/lab/api/taps/a%2Fb",
        "/lab/api/taps/",
    ] {
        let (status, body) = get_json(&gateway, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    let known = issue_tap(&gateway).await;
    let (status, body) = get_json(&gateway, &format!("/lab/api/taps/{known}?after=x")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_query");
    gateway.shutdown().await;
}

#[tokio::test]
async fn with_the_lab_off_there_is_no_page_and_no_tap() {
    let mut config = quiet();
    config.lab.enabled = LabSwitch::Off;
    let gateway = TestGateway::start(config).await;
    for path in ["/lab", "/lab/lab.js", "/lab/api/taps", "/lab/api/config"] {
        let (status, body) = get_json(&gateway, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // lab= is ignored: the connection works, untapped.
    let mut ws = ws_connect(&gateway, "/ws?topics=news&lab=t").await;
    let id = publish(&gateway, "news", r#"{"n":1}"#).await;
    assert_eq!(next_event(&mut ws).await["id"], id);
    drop(ws);
    gateway.shutdown().await;
}

/// A request to `app` as the router gets it, without a listener.
async fn handle(app: &std::sync::Arc<streamgate::App>, path: &str) -> u16 {
    let request = http::Request::get(path)
        .body(streamgate_core::full_body(""))
        .unwrap();
    std::sync::Arc::clone(app)
        .handle(request)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn on_a_public_address_the_lab_is_off_unless_enabled() {
    let bus: std::sync::Arc<dyn streamgate_core::EventBus> =
        std::sync::Arc::new(streamgate_core::MemoryBus::new(Default::default()));
    let mut public = quiet();
    public.server.listen = "0.0.0.0:8080".parse().unwrap();
    let decision = public.lab_decision();
    assert!(!decision.on);
    assert!(decision.why.contains("0.0.0.0:8080"), "{}", decision.why);
    let app = std::sync::Arc::new(streamgate::App::new(public.clone(), bus.clone(), None));
    assert_eq!(handle(&app, "/lab").await, 404);
    assert_eq!(handle(&app, "/lab/api/config").await, 404);
    // A public HTTPS listener is enough to turn it off.
    let mut https = TestGateway::quiet_config();
    https.tls.enabled = true;
    https.tls.listen = "[::]:8443".parse().unwrap();
    assert!(!https.lab_decision().on);
    // Explicitly on, it is served there too.
    public.lab.enabled = LabSwitch::On;
    let app = std::sync::Arc::new(streamgate::App::new(public, bus, None));
    assert_eq!(handle(&app, "/lab").await, 200);
    // Loopback, IPv4 or IPv6: on by default.
    let mut local = quiet();
    local.server.listen = "[::1]:8080".parse().unwrap();
    assert!(local.lab_decision().on);
    for (text, want) in [
        ("enabled = true", LabSwitch::On),
        ("enabled = false", LabSwitch::Off),
        ("enabled = \"auto\"", LabSwitch::Auto),
        ("", LabSwitch::Auto),
    ] {
        let config =
            GatewayConfig::from_toml(&format!("[lab]\n{text}\n"), std::path::Path::new("gw.toml"))
                .unwrap();
        assert_eq!(config.lab.enabled, want, "{text}");
    }
    let err = GatewayConfig::from_toml(
        "[lab]\nenabled = \"yes\"\n",
        std::path::Path::new("gw.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("lab.enabled"), "{err}");
}

#[test]
fn lab_limits_must_be_positive_when_on() {
    let text = "[lab]\nrecords_per_connection = 0\n";
    let err = GatewayConfig::from_toml(text, std::path::Path::new("gw.toml")).unwrap_err();
    assert!(
        err.to_string().contains("lab.records_per_connection"),
        "{err}"
    );
    let off = "[lab]\nenabled = false\nrecords_per_connection = 0\n";
    assert!(GatewayConfig::from_toml(off, std::path::Path::new("gw.toml")).is_ok());
}
