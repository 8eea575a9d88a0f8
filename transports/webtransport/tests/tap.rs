//! The lab's tap on WebTransport sessions: a session whose URL carries `lab=<tap id>` is
//! recorded at the WebTransport layer (QUIC itself is encrypted): the CONNECT, the acceptance,
//! the control stream and what was written on it, datagrams; a session without it is not.

mod common;

use common::*;
use serde_json::Value;
use streamgate_core::ContentType;

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
    let untapped = connect(&gateway, "?topics=t").await;
    let mut plain_control = control_stream(&untapped, "stream").await;
    let session = connect(&gateway, "?topics=t&lab=wt-tap").await;
    let mut control = control_stream(&session, "stream").await;
    let datagrams = connect(&gateway, "?topics=t&mode=datagram&lab=wt-dgram").await;
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
    let items = tap_items(&gateway, "wt-tap", 5).await;
    let titles: Vec<&str> = items.iter().map(|i| i["title"].as_str().unwrap()).collect();
    assert!(
        titles[0].starts_with("CONNECT /wt?topics=t&lab=wt-tap"),
        "{titles:?}"
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

    let items = tap_items(&gateway, "wt-dgram", 5).await;
    let datagram = items
        .iter()
        .find(|i| i["kind"] == "wt-datagram")
        .unwrap_or_else(|| panic!("no datagram item: {items:#?}"));
    assert!(datagram["title"]
        .as_str()
        .unwrap()
        .contains(&event.id.to_string()));

    // Only the sessions that asked are listed.
    let (_, taps) = http_get(gateway.addr, "/lab/api/taps").await;
    let taps: Value = serde_json::from_str(&taps).unwrap();
    let mut ids: Vec<&str> = taps["taps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["wt-dgram", "wt-tap"]);
    assert!(taps["taps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["transport"] == "webtransport"));
    drop((untapped, session, datagrams));
    gateway.shutdown().await;
}

async fn start_gateway() -> TestGateway {
    TestGateway::start(quiet()).await
}
