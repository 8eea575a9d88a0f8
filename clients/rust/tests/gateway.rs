//! The client against a real gateway started in this process (`streamgate::testkit`): each
//! transport delivers live events in order, publish goes over the session or `POST /publish`,
//! a new subscription resumes on another transport from `last_id()`, and a dropped connection
//! is resumed without loss or repetition.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use streamgate::testkit::TestGateway;
use streamgate_client::{Data, Item, Subscription, Transport};
use streamgate_core::{ContentType, Topic};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);

async fn gateway() -> TestGateway {
    TestGateway::start(TestGateway::quiet_config()).await
}

async fn publish(gateway: &TestGateway, topic: &str, payload: &str) -> String {
    let topic = Topic::new(topic).unwrap();
    let event = gateway
        .app
        .bus
        .publish(topic, ContentType::Json, Bytes::from(payload.to_owned()))
        .await
        .unwrap();
    event.id.to_string()
}

/// The next item that is not an attempt's end, within [`WAIT`].
async fn next(sub: &mut Subscription) -> Item {
    loop {
        match tokio::time::timeout(WAIT, sub.recv()).await {
            Ok(Some(Item::Ended(_))) => continue,
            Ok(Some(item)) => return item,
            Ok(None) => panic!("the subscription ended; log: {:?}", sub.transport_log()),
            Err(_) => panic!("nothing within {WAIT:?}; log: {:?}", sub.transport_log()),
        }
    }
}

async fn next_event(sub: &mut Subscription) -> (String, String) {
    loop {
        if let Item::Event(event) = next(sub).await {
            return (event.id.to_string(), event.data.to_json().to_string());
        }
    }
}

/// Waits for the subscription to be carried by `transport`.
async fn subscribed(sub: &mut Subscription, transport: Transport) {
    loop {
        if let Item::Transport(change) = next(sub).await {
            assert_eq!(change.to, Some(transport), "{change}");
            return;
        }
    }
}

async fn live_events_in_order(transport: Transport) {
    let gateway = gateway().await;
    let mut sub = Subscription::builder(format!("http://{}", gateway.addr))
        .topics(["a", "b"])
        .transports([transport])
        .connect()
        .unwrap();
    subscribed(&mut sub, transport).await;
    assert_eq!(sub.transport(), Some(transport));
    let mut ids = Vec::new();
    for (topic, n) in [("a", "1"), ("c", "0"), ("b", "2"), ("a", "3")] {
        let id = publish(&gateway, topic, n).await;
        if topic != "c" {
            ids.push((id, n.to_owned()));
        }
    }
    for expected in &ids {
        assert_eq!(&next_event(&mut sub).await, expected);
    }
    assert_eq!(
        sub.last_id().map(ToString::to_string),
        Some(ids[2].0.clone())
    );
    let log = sub.transport_log();
    assert_eq!(log[0].transport, transport);
    assert!(log[0].first_event_after.is_some(), "{log:?}");
    sub.close();
    gateway.shutdown().await;
}

#[tokio::test]
async fn websocket_live_events_in_order_once() {
    live_events_in_order(Transport::WebSocket).await;
}

#[tokio::test]
async fn sse_live_events_in_order_once() {
    live_events_in_order(Transport::Sse).await;
}

#[tokio::test]
async fn poll_live_events_in_order_once() {
    live_events_in_order(Transport::Poll).await;
}

#[tokio::test]
async fn webtransport_live_events_in_order_once() {
    live_events_in_order(Transport::WebTransport).await;
}

/// JS: "publish (POST, or over the WebSocket) and resume on another transport from lastId".
#[tokio::test]
async fn publish_and_resume_on_another_transport_from_last_id() {
    let gateway = gateway().await;
    let url = format!("http://{}", gateway.addr);
    let mut ws = Subscription::builder(&url)
        .topics(["news"])
        .transports([Transport::WebSocket])
        .connect()
        .unwrap();
    subscribed(&mut ws, Transport::WebSocket).await;
    let first = ws
        .publish("news", Data::Json(serde_json::json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut ws).await,
        (first.to_string(), r#"{"n":1}"#.to_owned())
    );
    let last = ws.last_id().cloned();
    ws.close();

    // Published while nobody listens, over POST /publish (SSE cannot publish).
    let mut poll = Subscription::builder(&url)
        .topics(["news"])
        .transports([Transport::Poll])
        .since(last)
        .connect()
        .unwrap();
    let second = poll
        .publish("news", Data::Text("two".into()))
        .await
        .unwrap();
    let third = poll
        .publish("news", Data::Binary(vec![0, 255]))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut poll).await,
        (second.to_string(), r#""two""#.to_owned())
    );
    assert_eq!(
        next_event(&mut poll).await,
        (third.to_string(), r#""AP8=""#.to_owned())
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_refusal_ends_the_subscription_with_the_gateways_code() {
    let gateway = gateway().await;
    let ahead = publish(&gateway, "a", "1").await;
    let (epoch, seq) = ahead.split_once(':').unwrap();
    let ahead = format!("{epoch}:{}", seq.parse::<u64>().unwrap() + 5);
    for transport in Transport::DEFAULT_ORDER {
        let mut sub = Subscription::builder(format!("http://{}", gateway.addr))
            .topics(["a"])
            .transports([transport])
            .since(ahead.parse::<streamgate_client::EventId>().unwrap())
            .connect()
            .unwrap();
        match next(&mut sub).await {
            Item::Error(error) => assert_eq!(error.code, "cursor_ahead", "{transport}: {error}"),
            other => panic!("{transport}: {other:?}"),
        }
        assert!(tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap()
            .is_none());
    }
    gateway.shutdown().await;
}

/// A TCP proxy whose connections can be cut.
struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let task = tokio::spawn({
            let links = Arc::clone(&links);
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    links.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    }));
                }
            }
        });
        Self { addr, links, task }
    }

    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn resumes_after_a_dropped_connection(transport: Transport) {
    let gateway = gateway().await;
    let proxy = Proxy::start(gateway.addr).await;
    let mut sub = Subscription::builder(format!("http://{}", proxy.addr))
        .topics(["a"])
        .transports([transport])
        .connect()
        .unwrap();
    subscribed(&mut sub, transport).await;
    let mut expected = Vec::new();
    for n in 1..=2 {
        expected.push(publish(&gateway, "a", &n.to_string()).await);
    }
    for id in &expected[..2] {
        assert_eq!(&next_event(&mut sub).await.0, id);
    }
    proxy.cut();
    for n in 3..=4 {
        expected.push(publish(&gateway, "a", &n.to_string()).await);
    }
    for id in &expected[2..] {
        assert_eq!(&next_event(&mut sub).await.0, id);
    }
    let attempts = sub.transport_log().len();
    assert!(attempts >= 2, "{:?}", sub.transport_log());
    gateway.shutdown().await;
}

#[tokio::test]
async fn websocket_resumes_after_a_dropped_connection() {
    resumes_after_a_dropped_connection(Transport::WebSocket).await;
}

#[tokio::test]
async fn sse_resumes_after_a_dropped_connection() {
    resumes_after_a_dropped_connection(Transport::Sse).await;
}

#[tokio::test]
async fn poll_resumes_after_a_dropped_connection() {
    resumes_after_a_dropped_connection(Transport::Poll).await;
}
