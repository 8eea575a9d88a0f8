//! The lab's tap on WebTransport sessions: a session whose URL carries `lab=<tap id>`, an id
//! the lab issued to the same client, is recorded at the WebTransport layer (QUIC itself is
//! encrypted): the CONNECT (credentials masked), the acceptance, the control stream and what
//! was written on it, datagrams; a session without it is not, and another client's session
//! naming it is closed `4403`.

mod common;

use common::*;
use serde_json::Value;
use streamgate_core::ContentType;

/// A tap issued by the lab to this test's address (127.0.0.1).
async fn issue_tap(gateway: &TestGateway) -> String {
    let (status, body) = http_request(gateway.addr, "POST", "/lab/api/taps").await;
    assert_eq!(status, 201, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    body["id"].as_str().expect("id").to_owned()
}

/// `GET /lab/api/taps/{id}` until it has `n` items: (status, items).
async fn tap_items(gateway: &TestGateway, id: &str, n: usize) -> Vec<Value> {
    within("the tap's items", async {
        loop {
            let (status, body) = http_get(gateway.addr, &format!("/lab/api/taps/{id}")).await;
            if status == 200 {
                let body: Value = serde_json::from_str(&body).expect("JSON");
                let items = body["items"].as_array().expect("items").clone();
                if items.len() >= n {
                    return items;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_tapped_session_records_what_the_webtransport_layer_sees() {
    let gateway = start_gateway().await;
    let (wt_tap, wt_dgram) = (issue_tap(&gateway).await, issue_tap(&gateway).await);
    let untapped = connect(&gateway, "?topics=t").await;
    let mut plain_control = control_stream(&untapped, "stream").await;
    let session = connect(
        &gateway,
        &format!("?topics=t&token=secret-jwt&lab={wt_tap}"),
    )
    .await;
    let mut control = control_stream(&session, "stream").await;
    let datagrams = connect(&gateway, &format!("?topics=t&mode=datagram&lab={wt_dgram}")).await;
    let _datagram_control = control_stream(&datagrams, "datagram").await;

    let event = publish(&gateway, "t", ContentType::Json, r#"{"n":1}"#).await;
    for stream in [&mut plain_control, &mut control] {
        let message = json(&read_frame(stream).await.expect("the event"));
        assert_eq!(message["id"], event.id.to_string());
    }
    let datagram = within("a datagram", datagrams.receive_datagram())
        .await
        .expect("datagram");
    assert_eq!(
        json(datagram.payload().as_ref())["id"],
        event.id.to_string()
    );

    // connect, accepted, control stream opened, subscribed, the event.
    let items = tap_items(&gateway, &wt_tap, 5).await;
    let titles: Vec<&str> = items.iter().map(|i| i["title"].as_str().unwrap()).collect();
    assert!(
        titles[0].starts_with(&format!("CONNECT /wt?topics=t&token=[masked]&lab={wt_tap}")),
        "{titles:?}"
    );
    assert!(
        !items[0].to_string().contains("secret-jwt"),
        "{:#}",
        items[0]
    );
    assert!(titles[1].starts_with("session accepted"), "{titles:?}");
    assert!(titles[2].starts_with("control stream opened"), "{titles:?}");
    let stream_items: Vec<&Value> = items.iter().filter(|i| i["kind"] == "wt-stream").collect();
    assert_eq!(
        stream_items.len(),
        2,
        "subscribed and the event: {titles:?}"
    );
    let notes = stream_items[1]["notes"].to_string();
    assert!(
        notes.contains("server-initiated, unidirectional"),
        "{notes}"
    );
    assert!(notes.contains("length prefix"), "{notes}");
    assert!(notes.contains(&event.id.to_string()), "{notes}");

    let items = tap_items(&gateway, &wt_dgram, 5).await;
    let datagram = items
        .iter()
        .find(|i| i["kind"] == "wt-datagram")
        .unwrap_or_else(|| panic!("no datagram item: {items:#?}"));
    assert!(datagram["title"]
        .as_str()
        .unwrap()
        .contains(&event.id.to_string()));

    // Both taps recorded a WebTransport session.
    let (_, taps) = http_get(
        gateway.addr,
        &format!("/lab/api/taps?ids={wt_tap},{wt_dgram}"),
    )
    .await;
    let taps: Value = serde_json::from_str(&taps).unwrap();
    let taps = taps["taps"].as_array().unwrap();
    assert_eq!(taps.len(), 2, "{taps:#?}");
    assert!(taps.iter().all(|t| t["transport"] == "webtransport"));
    drop((untapped, session, datagrams));
    gateway.shutdown().await;
}

#[tokio::test]
async fn another_clients_session_cannot_join_a_tap() {
    let gateway = start_gateway().await;
    let id = issue_tap(&gateway).await;
    let doc = cert_hash(&gateway).await;
    let (code, reason) = refused_from(&doc, &format!("?topics=t&lab={id}"), [127, 0, 0, 2]).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("issued to another client"), "{reason}");
    // An id the lab never issued: served, and nothing is recorded under it.
    let session = connect(&gateway, "?topics=t&lab=chosen-by-the-client").await;
    let _control = control_stream(&session, "stream").await;
    let (status, _) = http_get(gateway.addr, "/lab/api/taps/chosen-by-the-client").await;
    assert_eq!(status, 404);
    let (status, body) = http_get(gateway.addr, &format!("/lab/api/taps/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["tap"]["connections"], 0, "{body}");
    drop(session);
    gateway.shutdown().await;
}

async fn start_gateway() -> TestGateway {
    TestGateway::start(quiet()).await
}
