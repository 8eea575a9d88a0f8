//! Abuse: filling the topic table. One client publishes to made-up topics, over WebSocket
//! connections (as in the issue: many connections, many `publish` messages each) and over
//! `POST /publish`, to lock every other client out of creating a topic. It is refused by its
//! own topic budget (`server.topic_create_rate`) and publish rate (`server.publish_rate`, one
//! bucket across every publish path), while a second client (another address, 127.0.0.2)
//! still creates and uses a topic, and the demo source keeps publishing. With the budget off,
//! the table still never locks: idle topics are reclaimed, and a resume on a reclaimed topic
//! is told `gap`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use streamgate::config::GatewayConfig;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::common::{within, Sse, TestClient, TestGateway};
use super::support::{served_within, tcp_from};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const SECOND: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

type Ws = WebSocketStream<TcpStream>;

async fn ws_from(addr: SocketAddr, from: IpAddr) -> Ws {
    let stream = tcp_from(addr, from).await;
    let (ws, _) = within(
        "the WebSocket handshake",
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream),
    )
    .await
    .expect("WebSocket handshake");
    ws
}

/// Sends `publish` messages to `topics`, then reads one reply per message.
async fn ws_publish_all(ws: &mut Ws, topics: &[String]) -> Vec<Value> {
    for (i, topic) in topics.iter().enumerate() {
        let message = json!({
            "type": "publish", "topic": topic, "content_type": "text",
            "data": "flood", "ref": i.to_string(),
        });
        ws.send(Message::text(message.to_string())).await.unwrap();
    }
    let mut replies = Vec::with_capacity(topics.len());
    while replies.len() < topics.len() {
        let message = within("a publish reply", ws.next())
            .await
            .expect("the connection stays open")
            .expect("a message");
        if let Message::Text(text) = message {
            replies.push(serde_json::from_str(text.as_str()).unwrap());
        }
    }
    replies
}

fn config(max_topics: usize, topic_create: (f64, u32)) -> GatewayConfig {
    let mut config = TestGateway::quiet_config();
    config.bus.max_topics = max_topics;
    config.server.topic_create_rate = topic_create.0;
    config.server.topic_create_burst = topic_create.1;
    config.demo.enabled = true;
    config.demo.rate = 50.0;
    config
}

/// The second client, from 127.0.0.2: creates a topic by publishing to it, subscribes to
/// another new topic, publishes to it and receives it. Then a subscriber of the demo topic gets a fresh event.
async fn second_client_is_served(gateway: &TestGateway, attack: &str) {
    let addr = gateway.addr;
    served_within(attack, async {
        let mut http = TestClient::connect_from(addr, SECOND).await;
        let created = http.send("POST", "/publish/second-new", "first").await;
        assert_eq!(created.status, 200, "{}", created.text());
        let mut sse = Sse::over(tcp_from(addr, SECOND).await, "second-topic", "").await;
        let published = TestClient::connect_from(addr, SECOND)
            .await
            .send("POST", "/publish/second-topic", "hello from 127.0.0.2")
            .await;
        assert_eq!(published.status, 200, "{}", published.text());
        sse.expect("hello from 127.0.0.2").await;
        let mut demo = Sse::over(tcp_from(addr, SECOND).await, "demo", "").await;
        demo.read_until(|seen| seen.contains("\nid: ")).await;
    })
    .await;
}

/// One client floods new topics: its burst of new topics is admitted, the rest refused with
/// `topic_budget` and a reason (an `error` reply on its WebSocket, which stays open; `429`
/// with `Retry-After` over HTTP), and a second client is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_flood_is_refused_by_the_clients_topic_budget() {
    let (rate, burst) = (5.0, 20);
    let gateway = TestGateway::start(config(64, (rate, burst))).await;
    let addr = gateway.addr;
    let start = Instant::now();
    // 4 connections × 50 publishes to fresh topics (within the WebSocket message burst).
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(ws_from(addr, ATTACKER).await);
    }
    let mut replies = Vec::new();
    for (c, ws) in connections.iter_mut().enumerate() {
        let topics: Vec<String> = (0..50).map(|i| format!("flood-{c}-{i}")).collect();
        replies.extend(ws_publish_all(ws, &topics).await);
    }
    let admitted = replies.iter().filter(|r| r["type"] == "published").count();
    let refused: Vec<&Value> = replies
        .iter()
        .filter(|r| r["type"] == "error" && r["code"] == "topic_budget")
        .collect();
    let allowed = burst as f64 + rate * start.elapsed().as_secs_f64() + 1.0;
    println!(
        "abuse[topic flood]: {admitted} of 200 new topics admitted, {} refused topic_budget",
        refused.len()
    );
    assert!(admitted >= burst as usize, "the burst is admitted");
    assert!((admitted as f64) <= allowed, "{admitted} admitted");
    assert_eq!(
        admitted + refused.len(),
        200,
        "every publish answered: {replies:?}"
    );
    let reason = refused[0]["reason"].as_str().unwrap();
    assert!(reason.contains("new topics"), "{reason}");
    // The connection stays: publishing to a topic that exists costs no budget.
    let again = ws_publish_all(&mut connections[0], &["flood-0-0".to_owned()]).await;
    assert_eq!(again[0]["type"], "published", "{again:?}");
    // Over HTTP, the same budget.
    let mut http = TestClient::connect_from(addr, ATTACKER).await;
    let response = http.send("POST", "/publish/flood-http", "x").await;
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "topic_budget");
    assert!(response.header("retry-after").is_some());

    second_client_is_served(&gateway, "topic flood").await;
    let usage = gateway.app.bus.history_usage().unwrap();
    assert!(usage.topics <= 64, "{usage:?}");
    gateway.shutdown().await;
}

/// The publish rate is one bucket per client across every path: after a WebSocket burst, the
/// next WebSocket publish is answered `rate_limited` (the connection stays), and so is a
/// `POST /publish` and a `POST /poll` from the same address; another address is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate_is_one_bucket_across_paths() {
    let mut config = config(64, (0.0, 0));
    config.server.publish_rate = 0.5;
    config.server.publish_burst = 10;
    let gateway = TestGateway::start(config).await;
    let addr = gateway.addr;
    let mut ws = ws_from(addr, ATTACKER).await;
    let topics: Vec<String> = (0..12).map(|_| "busy".to_owned()).collect();
    let replies = ws_publish_all(&mut ws, &topics).await;
    let kinds: Vec<&str> = replies
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[..10], ["published"; 10], "{replies:?}");
    assert_eq!(replies[10]["code"], "rate_limited", "{replies:?}");
    assert!(
        replies[10]["reason"]
            .as_str()
            .unwrap()
            .contains("publish rate"),
        "{replies:?}"
    );
    let mut http = TestClient::connect_from(addr, ATTACKER).await;
    let response = http.send("POST", "/publish/busy", "x").await;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["error"]["code"], "rate_limited");
    assert!(response.header("retry-after").is_some());
    let poll = json!({"type": "publish", "topic": "busy", "content_type": "text", "data": "x"});
    let response = http.send("POST", "/poll", poll.to_string()).await;
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.json()["code"], "rate_limited");
    assert!(response.header("retry-after").is_some());
    second_client_is_served(&gateway, "publish flood").await;
    gateway.shutdown().await;
}

/// With no topic budget at all, a client publishing to far more made-up topics than
/// `max_topics` only churns the idle ones: the table never locks, a second client still
/// creates its topic, and a client resuming on a reclaimed topic is told `gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_reclaims_idle_topics_and_reports_the_loss() {
    let gateway = TestGateway::start(config(32, (0.0, 0))).await;
    let addr = gateway.addr;
    let mut replies = Vec::new();
    for c in 0..4 {
        let mut ws = ws_from(addr, ATTACKER).await;
        let topics: Vec<String> = (0..50).map(|i| format!("churn-{c}-{i}")).collect();
        replies.extend(ws_publish_all(&mut ws, &topics).await);
    }
    assert!(
        replies.iter().all(|r| r["type"] == "published"),
        "no budget: every new topic is admitted, reclaiming idle ones"
    );
    let usage = gateway.app.bus.history_usage().unwrap();
    println!(
        "abuse[topic churn]: 200 new topics into a table of 32: {} reclaimed, {} tracked",
        usage.topics_reclaimed, usage.topics
    );
    assert!(
        usage.topics <= 32 && usage.topics_reclaimed >= 200 - 32,
        "{usage:?}"
    );
    second_client_is_served(&gateway, "topic churn").await;

    // `churn-0-0` was reclaimed long ago: resuming on it from before its event is a gap
    // through at least that event (its own tombstone, or, once more topics were reclaimed
    // than tombstones are kept, the watermark above it).
    let first_id = replies[0]["id"].as_str().unwrap();
    let (epoch, seq) = first_id.split_once(':').unwrap();
    let seq: u64 = seq.parse().unwrap();
    let mut resumed = Sse::open(addr, &format!("churn-0-0&since={epoch}:{}", seq - 1)).await;
    let gap_data = |seen: &str| {
        let rest = seen.split("event: @gap").nth(1)?;
        let data = rest.split("data: ").nth(1)?;
        data.contains('\n')
            .then(|| data.lines().next().unwrap_or_default().to_owned())
    };
    resumed.read_until(|seen| gap_data(seen).is_some()).await;
    let gap: Value = serde_json::from_str(&gap_data(&resumed.seen).unwrap()).unwrap();
    assert_eq!(gap["topic"], "churn-0-0", "{gap}");
    let lost_through = gap["lost_through"].as_str().unwrap();
    let (lost_epoch, lost_seq) = lost_through.split_once(':').unwrap();
    assert_eq!(lost_epoch, epoch);
    assert!(lost_seq.parse::<u64>().unwrap() >= seq, "{gap}");
    gateway.shutdown().await;
}
