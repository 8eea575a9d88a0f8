//! Helpers for the long-poll integration tests: a gateway on an ephemeral port, a minimal
//! HTTP/1.1 client on hyper, and waits on the bus instead of sleeps.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

pub use streamgate::testkit::TestGateway;
use streamgate_core::{ContentType, EventId, Topic};

/// Longest any single wait in these tests may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(20);

pub use streamgate::testkit::{TestClient as Client, TestResponse as Response};

/// One request on a fresh connection.
pub async fn send(addr: SocketAddr, method: &str, path: &str, body: impl Into<Bytes>) -> Response {
    Client::connect(addr).await.send(method, path, body).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    send(addr, "GET", path, Bytes::new()).await
}

/// A parsed `GET /poll` answer.
#[derive(Debug)]
pub struct Poll {
    pub cursor: String,
    pub messages: Vec<serde_json::Value>,
}

impl Poll {
    pub fn from(response: &Response) -> Self {
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header("cache-control"), Some("no-store"));
        let body = response.json();
        let object = body.as_object().expect("an object");
        assert_eq!(object.len(), 2, "only cursor and messages: {body}");
        Self {
            cursor: body["cursor"].as_str().expect("cursor").to_owned(),
            messages: body["messages"].as_array().expect("messages").clone(),
        }
    }

    /// Ids of the events in the batch, in order.
    pub fn event_ids(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m["type"] == "event")
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

pub fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

pub async fn publish(gateway: &TestGateway, topic_name: &str, payload: &str) -> EventId {
    gateway
        .app
        .bus
        .publish(
            topic(topic_name),
            ContentType::Json,
            Bytes::from(payload.to_owned()),
        )
        .await
        .unwrap()
        .id
        .clone()
}

/// Waits until `topic` has exactly `count` subscribers: a held poll is subscribed.
pub async fn wait_for_subscribers(gateway: &TestGateway, topic_name: &str, count: usize) {
    let wanted = topic(topic_name);
    tokio::time::timeout(BOUND, async {
        loop {
            let stats = gateway.app.bus.topic_stats().await;
            let now = stats
                .iter()
                .find(|t| t.topic == wanted)
                .map_or(0, |t| t.subscribers);
            if now == count {
                return;
            }
            // No notification exists for a subscriber count; look again shortly.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{topic_name} never had {count} subscribers"));
}

/// The gateway's current head, as a cursor: a poll with `timeout=0` and no cursor.
pub async fn head_cursor(addr: SocketAddr, topics: &str) -> String {
    let poll = Poll::from(&get(addr, &format!("/poll?topics={topics}&timeout=0")).await);
    assert!(poll.messages.is_empty());
    poll.cursor
}
