//! Abuse: the lab's wire taps (issue 19, item 6). Before, the lab was on by default, listed
//! every tap with its peer's IP:port, let anyone read any recording (credentials and payloads
//! included) and let anyone attach a connection to any tap id. Now a tap id is a 128-bit
//! capability issued to one client IP: a stranger (here 127.0.0.2, another client to the
//! gateway) can neither list, read nor join the tap of its owner (127.0.0.1), recordings
//! hold no credentials, and one client gets at most `lab.taps_per_client` taps.

use std::net::IpAddr;

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use crate::common::{assert_refused_because, send, within, Sse, TestClient, TestGateway};
use crate::support::{assert_ws_refused, served_within, tcp_from};

const STRANGER: [u8; 4] = [127, 0, 0, 2];

fn stranger() -> IpAddr {
    IpAddr::from(STRANGER)
}

/// A tap issued by `POST /lab/api/taps` to `client`.
async fn issue(client: &mut TestClient) -> Value {
    let response = client.send("POST", "/lab/api/taps", "").await;
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()
}

fn reason(body: &Value) -> &str {
    body["error"]["reason"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_stranger_cannot_list_read_or_join_another_clients_tap() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let mut owner = TestClient::connect(gateway.addr).await;
    let victim_tap = issue(&mut owner).await["id"].as_str().unwrap().to_owned();

    // The owner's WebSocket carries every kind of credential the old lab recorded.
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2aWN0aW0ifQ.dmljdGltLXNpZ25hdHVyZQ";
    let url = format!(
        "ws://{}/ws?topics=news&api_key=victim-query-key&lab={victim_tap}",
        gateway.addr
    );
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("x-api-key", "victim-header-key".parse().unwrap());
    headers.insert(
        "sec-websocket-protocol",
        format!("streamgate.v1, access_token, {jwt}")
            .parse()
            .unwrap(),
    );
    let (mut victim_ws, _) = within(
        "the owner's WebSocket",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("the owner's upgrade");
    victim_ws
        .send(Message::text(
            r#"{"type":"publish","topic":"news","data":{"private":"victim payload"}}"#,
        ))
        .await
        .unwrap();

    // 1. No public list: without ids the answer is a 400 naming none, and with guessed ids
    //    nothing is listed.
    let mut attacker = TestClient::connect_from(gateway.addr, stranger()).await;
    let list = attacker.get("/lab/api/taps").await;
    assert_eq!(list.status, 400, "{}", list.text());
    assert!(reason(&list.json()).contains("ids="), "{}", list.text());
    assert!(!list.text().contains(&victim_tap) && !list.text().contains("127.0.0.1:"));
    let guessed = attacker
        .get("/lab/api/taps?ids=p1-ws,p1-sse,demo,AAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(guessed.status, 200);
    assert_eq!(
        guessed.json()["taps"],
        serde_json::json!([]),
        "{}",
        guessed.text()
    );

    // 2. Reading: an id it was not issued is a 404; the victim's own id, leaked somehow, a 403.
    let unknown = attacker.get("/lab/api/taps/AAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let read = attacker.get(&format!("/lab/api/taps/{victim_tap}")).await;
    assert_refused_because(&read, 403, "forbidden", "issued to another client");
    assert!(!read.text().contains("victim"), "{}", read.text());

    // 3. Joining: the stranger's connections naming the victim's tap are refused 403 with the
    //    reason, on every transport that goes through the router.
    let poll = attacker
        .get(&format!("/poll?topics=news&timeout=0&lab={victim_tap}"))
        .await;
    assert_eq!(poll.status, 403, "{}", poll.text());
    assert!(reason(&poll.json()).contains("issued to another client"));
    let url = format!("ws://{}/ws?topics=news&lab={victim_tap}", gateway.addr);
    let refused = tokio_tungstenite::client_async(url, tcp_from(gateway.addr, stranger()).await)
        .await
        .expect_err("the upgrade must be refused");
    assert_ws_refused(&refused, 403, "forbidden", "issued to another client");
    // An id of its own choosing is served, but records nothing anyone could read.
    let untapped = attacker
        .get("/poll?topics=news&timeout=0&lab=made-up-by-the-attacker")
        .await;
    assert_eq!(untapped.status, 200);
    assert_eq!(
        attacker
            .get("/lab/api/taps/made-up-by-the-attacker")
            .await
            .status,
        404
    );

    // The owner is still served: its tap holds its own connection only, and no credential.
    let path = format!("/lab/api/taps/{victim_tap}");
    let (tap, _) = served_within("lab tap theft", async {
        loop {
            let body = owner.get(&path).await.json();
            let frames_in = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["kind"] == "ws-frame" && i["direction"] == "in")
                .count();
            if frames_in > 0 {
                break body;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(
        tap["tap"]["connections"], 1,
        "only the owner's: {:#}",
        tap["tap"]
    );
    let opening = tap["items"][0]["data"].as_str().unwrap();
    let opening = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, opening).unwrap(),
    )
    .unwrap();
    assert!(
        opening.contains("api_key=[masked]&")
            && opening.contains("x-api-key: [masked, 17 bytes]\r\n")
            && opening
                .contains("sec-websocket-protocol: streamgate.v1, [masked, 12 bytes], [masked, ")
            && opening.contains("sec-websocket-key: "),
        "{opening}"
    );
    for secret in ["victim-query-key", "victim-header-key", jwt] {
        assert!(!tap.to_string().contains(secret), "{secret} was recorded");
    }
    println!("abuse[lab tap theft]: stranger got 400 (list), 404/403 (read), 403 (join)");
    drop(victim_ws);
    gateway.shutdown().await;
}

#[tokio::test]
async fn issuing_taps_is_capped_per_client() {
    let config = TestGateway::quiet_config();
    let per_client = config.lab.taps_per_client;
    let gateway = TestGateway::start(config).await;
    let mut attacker = TestClient::connect_from(gateway.addr, stranger()).await;
    // Each tap kept busy by a live connection, so none can be reclaimed.
    let mut streams = Vec::new();
    for _ in 0..per_client {
        let id = issue(&mut attacker).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let stream = tcp_from(gateway.addr, stranger()).await;
        streams.push(Sse::over(stream, &format!("news&lab={id}"), "").await);
    }
    let refused = attacker.send("POST", "/lab/api/taps", "").await;
    assert_refused_because(&refused, 429, "too_many_taps", "lab.taps_per_client");
    println!(
        "abuse[lab tap flood]: {per_client} taps issued to one client, the next refused 429: {}",
        reason(&refused.json())
    );

    // Another client still gets its tap, and can use it.
    let (issued, _) = served_within(
        "lab tap flood",
        send(&gateway, "POST", "/lab/api/taps", &[], ""),
    )
    .await;
    assert_eq!(issued.status, 201, "{}", issued.text());
    let id = issued.json()["id"].as_str().unwrap().to_owned();
    let poll = send(
        &gateway,
        "GET",
        &format!("/poll?topics=news&timeout=0&lab={id}"),
        &[],
        "",
    )
    .await;
    assert_eq!(poll.status, 200);

    // The attacker's next tap comes only by giving one up.
    drop(streams.pop());
    let again = within("a tap after one was given up", async {
        loop {
            let response = attacker.send("POST", "/lab/api/taps", "").await;
            if response.status == 201 {
                break response;
            }
            assert_eq!(response.status, 429);
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(again.status, 201);
    drop(streams);
    gateway.shutdown().await;
}
