//! Upstream ingest against a local WebSocket feed: subscribe message, republish, reconnect.
#![cfg(feature = "upstream")]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use streamgate::config::SourceConfig;
use streamgate_core::{ContentType, Delivery, EventBus, MemoryBus, SubscribeRequest, Topic};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A feed that, on each connection, reports the first message it gets, sends `messages`,
/// then closes.
async fn start_feed(messages: Vec<Message>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let (subscribed, subscriptions) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
            let Some(Ok(Message::Text(first))) = socket.next().await else {
                continue;
            };
            let _ = subscribed.send(first.to_string());
            for message in &messages {
                socket.send(message.clone()).await.unwrap();
            }
            let _ = socket.close(None).await;
        }
    });
    (url, subscriptions)
}

#[tokio::test]
async fn republishes_feed_messages_and_reconnects() {
    let (url, mut subscriptions) = start_feed(vec![
        Message::text(r#"{"type":"ris_message","n":1}"#),
        Message::text("plain words"),
        Message::binary(vec![0u8, 159, 146, 150]),
    ])
    .await;
    let bus = Arc::new(MemoryBus::new(Default::default()));
    let topic = Topic::new("ris").unwrap();
    let mut sub = bus
        .subscribe(SubscribeRequest::live(vec![topic.clone()]))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let source = SourceConfig::new(url, topic)
        .subscribe_message(r#"{"type":"ris_subscribe"}"#)
        .reconnect(Duration::from_millis(5), Duration::from_millis(20));
    let task = tokio::spawn(streamgate::run_upstream_source(
        bus.clone() as Arc<dyn EventBus>,
        source,
        shutdown.clone(),
    ));

    // Two connections: the feed closes after each batch and the source comes back.
    for _round in 0..2 {
        assert_eq!(
            subscriptions.recv().await.unwrap(),
            r#"{"type":"ris_subscribe"}"#
        );
        let mut got = Vec::new();
        for _ in 0..3 {
            let Some(Delivery::Event(event)) = sub.next().await else {
                panic!("no event")
            };
            got.push((event.content_type, event.payload.to_vec()));
        }
        assert_eq!(
            got,
            vec![
                (
                    ContentType::Json,
                    br#"{"type":"ris_message","n":1}"#.to_vec()
                ),
                (ContentType::Text, b"plain words".to_vec()),
                (ContentType::Binary, vec![0u8, 159, 146, 150]),
            ]
        );
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("source stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn keeps_retrying_an_unreachable_feed_until_shutdown() {
    // Bind then drop, so the port refuses connections.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    drop(listener);
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Default::default()));
    let shutdown = CancellationToken::new();
    let source = SourceConfig::new(url, Topic::new("x").unwrap())
        .reconnect(Duration::from_millis(5), Duration::from_millis(10));
    let task = tokio::spawn(streamgate::run_upstream_source(
        bus,
        source,
        shutdown.clone(),
    ));
    tokio::task::yield_now().await;
    assert!(
        !task.is_finished(),
        "a refused connect is retried, not fatal"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("source stops on shutdown")
        .unwrap();
}
