//! A hostile WebTransport client, without credentials, against a gateway in this process: it
//! opens bidirectional streams and writes on them without reading the replies, or floods
//! datagrams. The gateway must accept no more of its bytes than its configured windows allow
//! (or close the session with a code), and serve another client meanwhile.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use streamgate_core::ContentType;
use wtransport::quinn::{TransportConfig, VarInt};
use wtransport::{ClientConfig, Connection, Endpoint};

/// The gateway's `webtransport.stream_receive_window` in these tests (its connection window is
/// four times this).
const STREAM_WINDOW: u32 = 16 * 1024;
/// Bidirectional streams the hostile client writes on (the gateway allows 16).
const STREAMS: usize = 8;
/// What the gateway's task for one client stream reads at once: taken from quinn, so no longer
/// counted against the windows, and held until the messages in it are answered.
const READ_CHUNK: usize = 16 * 1024;
/// A write that makes no progress for this long is blocked by flow control.
const STALL: Duration = Duration::from_secs(2);

/// A client that gives the gateway little credit for its replies (2 KiB a stream, 8 KiB in
/// all), from its own loopback address: the gateway's reply writes block soon after the client
/// stops reading them.
async fn stingy_client(doc: &Value, query: &str) -> Connection {
    let mut config = ClientConfig::builder()
        .with_bind_address(SocketAddr::from(([127, 0, 0, 3], 0)))
        .with_server_certificate_hashes([digest(doc)])
        .build();
    let mut transport = TransportConfig::default();
    transport.stream_receive_window(VarInt::from_u32(2 * 1024));
    transport.receive_window(VarInt::from_u32(8 * 1024));
    config
        .quic_config_mut()
        .transport_config(Arc::new(transport));
    let endpoint = Endpoint::client(config).expect("client endpoint");
    let url = format!("{}{query}", doc["url"].as_str().expect("url"));
    within("hostile connect", endpoint.connect(url))
        .await
        .expect("the hostile session opens")
}

/// Opens [`STREAMS`] streams and writes one-byte messages (`x`, each answered with an error)
/// on all of them, never reading a reply, until every write is blocked: the bytes the gateway
/// let through, which is what it granted credit for (quinn accepts a write only within the
/// peer's flow-control credit).
async fn write_until_blocked(hostile: &Connection) -> usize {
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let (mut send, recv) = within("open_bi", async {
            hostile.open_bi().await.expect("open_bi").await.expect("bi")
        })
        .await;
        writers.spawn(async move {
            let _unread_replies = recv;
            let chunk = framed(b"x").repeat(800);
            let mut accepted = 0;
            loop {
                match tokio::time::timeout(STALL, send.write(&chunk)).await {
                    Ok(Ok(n)) => accepted += n,
                    Ok(Err(e)) => panic!("the gateway failed the stream: {e}"),
                    Err(_blocked) => return (accepted, send),
                }
            }
        });
    }
    let mut total = 0;
    let mut still_open = Vec::new();
    while let Some(result) = within("every stream blocked", writers.join_next()).await {
        let (accepted, send) = result.expect("writer task");
        total += accepted;
        still_open.push(send);
    }
    total
}

/// A second client subscribes and receives an event while the hostile one is connected.
async fn another_client_is_served(gateway: &TestGateway) {
    let session = connect(gateway, "?topics=news").await;
    let mut control = control_stream(&session, "stream").await;
    let event = publish(gateway, "news", ContentType::Text, "still served").await;
    let delivered = json(&read_frame(&mut control).await.expect("event"));
    assert_eq!(delivered["id"], event.id.to_string(), "{delivered}");
    assert_eq!(delivered["data"], "still served");
}

fn windowed_gateway_config(quinn_defaults: bool) -> streamgate::config::GatewayConfig {
    let mut config = quiet();
    config.webtransport.stream_receive_window = STREAM_WINDOW;
    config.webtransport.max_message_size = 1024;
    config.webtransport.quinn_defaults = quinn_defaults;
    config
}

/// What the gateway may accept from a client that reads nothing: unread in quinn, the
/// connection window; read and unanswered, one chunk per stream; the replies the client did
/// take let through a few hundred bytes more.
const ACCEPTED_BOUND: usize = 4 * STREAM_WINDOW as usize + STREAMS * READ_CHUNK + 4 * 1024;

/// A gateway with the windows (or quinn's defaults), a stingy client that never reads a reply,
/// and the bytes the gateway took from it before every stream blocked.
async fn hostile_writes(quinn_defaults: bool) -> (TestGateway, Connection, usize) {
    let gateway = TestGateway::start(windowed_gateway_config(quinn_defaults)).await;
    let doc = cert_hash(&gateway).await;
    let hostile = stingy_client(&doc, "?topics=hostile").await;
    let accepted = write_until_blocked(&hostile).await;
    (gateway, hostile, accepted)
}

#[tokio::test]
async fn writing_without_reading_replies_is_held_to_the_windows() {
    let (gateway, hostile, accepted) = hostile_writes(false).await;
    let bound = ACCEPTED_BOUND;
    assert!(
        accepted <= bound,
        "the gateway accepted {accepted} bytes from a client that reads nothing, over {bound}"
    );
    // Blocked, not refused: the gateway did read up to its windows.
    assert!(accepted >= 4 * STREAM_WINDOW as usize, "{accepted}");

    another_client_is_served(&gateway).await;
    assert!(
        hostile.quic_connection().close_reason().is_none(),
        "a client within the windows is slowed, not closed"
    );
    gateway.shutdown().await;
}

/// The same client against quinn's own windows: the bound above is what the sizing buys.
#[tokio::test]
async fn quinn_default_windows_would_hold_far_more() {
    let (gateway, _hostile, accepted) = hostile_writes(true).await;
    assert!(accepted > 4 * ACCEPTED_BOUND, "{accepted}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_datagram_flood_is_closed_and_others_are_served() {
    let gateway = TestGateway::start(quiet()).await;
    let doc = cert_hash(&gateway).await;
    let hostile = stingy_client(&doc, "?topics=hostile").await;
    // Far over the default 50/s with a burst of 100, as fast as the socket takes them.
    for _ in 0..2_000 {
        if hostile.send_datagram(b"{\"type\":\"publish\"}").is_err() {
            break;
        }
    }
    let (code, reason) = closed_by_server(&hostile).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("datagram rate"), "{reason}");
    another_client_is_served(&gateway).await;
    gateway.shutdown().await;
}
