//! The teaching lab over real connections: the page and its API, which connections are
//! tapped (only those that ask, with `lab=`), what a tap records and how the inspector
//! annotates it, the bounds of a tap, and a gateway with the lab turned off.

mod common;

use std::time::Duration;

use common::{send, TestClient, TestGateway};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use streamgate::config::GatewayConfig;
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

/// The ids of the taps the gateway lists.
async fn tap_ids(gateway: &TestGateway) -> Vec<String> {
    let (status, body) = get_json(gateway, "/lab/api/taps").await;
    assert_eq!(status, 200);
    let mut ids: Vec<String> = body["taps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
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
async fn the_page_and_its_api_are_served_by_default() {
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
    let post = send(&gateway, "POST", "/lab/api/taps", &[], "").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        send(&gateway, "GET", "/lab/nothing", &[], "").await.status,
        404
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn only_connections_that_ask_are_tapped() {
    let gateway = TestGateway::start(quiet()).await;
    let mut plain = ws_connect(&gateway, "/ws?topics=news").await;
    let mut tapped = ws_connect(&gateway, "/ws?topics=news&lab=t-ws").await;
    let mut client = TestClient::connect(gateway.addr).await;
    let poll = client.get("/poll?topics=news&timeout=0").await;
    assert_eq!(poll.status, 200);
    let poll = client.get("/poll?topics=news&timeout=0&lab=t-poll").await;
    assert_eq!(poll.status, 200);
    // A malformed id is not a tap request (and not an error: the parameter is the lab's).
    let poll = client.get("/poll?topics=news&timeout=0&lab=a%2Fb").await;
    assert_eq!(poll.status, 200);
    publish(&gateway, "news", r#"{"n":1}"#).await;
    next_event(&mut plain).await;
    next_event(&mut tapped).await;
    assert_eq!(tap_ids(&gateway).await, ["t-poll", "t-ws"]);
    let (_, taps) = get_json(&gateway, "/lab/api/taps").await;
    let ws = taps["taps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "t-ws")
        .unwrap();
    assert_eq!(ws["transport"], "ws");
    assert_eq!(ws["live"], 1);
    assert!(ws["bytes_out"].as_u64().unwrap() > 0, "{ws}");
    // Gone before shutdown, which would otherwise wait for their close handshakes.
    drop((plain, tapped));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_websocket_tap_shows_the_upgrade_and_annotated_frames() {
    let gateway = TestGateway::start(quiet()).await;
    let mut ws = ws_connect(&gateway, "/ws?topics=news&lab=inspect").await;
    let published = publish(&gateway, "news", r#"{"headline":"hi"}"#).await;
    assert_eq!(next_event(&mut ws).await["id"], published);
    // A client frame: masked, as every client frame is.
    let message = r#"{"type":"publish","topic":"news","data":{"from":"client"},"ref":"c1"}"#;
    ws.send(Message::text(message)).await.unwrap();
    let (body, items) = items_until(&gateway, "inspect", |items| {
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
            .starts_with("GET /ws?topics=news&lab=inspect HTTP/1.1"),
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
    let (_, later) = get_json(&gateway, &format!("/lab/api/taps/inspect?after={next}")).await;
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
    let mut client = TestClient::connect(gateway.addr).await;
    let since = publish(&gateway, "news", r#"{"n":0}"#).await;
    publish(&gateway, "news", r#"{"n":1}"#).await;
    let poll = client
        .get(&format!("/poll?topics=news&cursor={since}&lab=p"))
        .await;
    assert_eq!(poll.status, 200);
    let (_, items) = items_until(&gateway, "p", |items| items.len() >= 3).await;
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
        "GET /sse?topics=news&lab=s HTTP/1.1\r\nhost: {}\r\n\r\n",
        gateway.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (_, _) = items_until(&gateway, "s", |items| items.len() >= 3).await;
    publish(&gateway, "news", r#"{"n":2}"#).await;
    let (_, items) = items_until(&gateway, "s", |items| {
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
    let mut ws = ws_connect(&gateway, "/ws?topics=news&lab=small").await;
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(300));
    for _ in 0..6 {
        publish(&gateway, "news", &big).await;
        next_event(&mut ws).await;
    }
    let (_, body) = get_json(&gateway, "/lab/api/taps/small").await;
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
    let ws = ws_connect(&gateway, "/ws?topics=news&lab=known").await;
    let (status, body) = get_json(&gateway, "/lab/api/taps/known?after=x").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_query");
    drop(ws);
    gateway.shutdown().await;
}

#[tokio::test]
async fn with_the_lab_off_there_is_no_page_and_no_tap() {
    let mut config = quiet();
    config.lab.enabled = false;
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
