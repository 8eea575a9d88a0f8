//! The SSE transport over real HTTP/1.1 connections.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use streamgate::testkit::TestGateway;
use streamgate_core::{ContentType, Topic};

const WAIT: Duration = Duration::from_secs(10);

/// An open event stream, read as text.
struct Stream {
    body: Incoming,
    buffer: BytesMut,
    status: u16,
    headers: hyper::HeaderMap,
}

impl Stream {
    async fn open(gateway: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Self {
        let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::get(path).header("host", "gw");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.into_body(),
            buffer: BytesMut::new(),
        }
    }

    /// Reads until the text received so far contains `needle` `count` times; returns it all.
    async fn until(&mut self, needle: &str, count: usize) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                let text = String::from_utf8_lossy(&self.buffer).into_owned();
                if text.matches(needle).count() >= count {
                    return text;
                }
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            self.buffer.extend_from_slice(data);
                        }
                    }
                    _ => return String::from_utf8_lossy(&self.buffer).into_owned(),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {count} × {needle:?}"))
    }

    /// Reads to the end of the stream.
    async fn read_to_end(&mut self) -> String {
        tokio::time::timeout(WAIT, async {
            while let Some(Ok(frame)) = self.body.frame().await {
                if let Some(data) = frame.data_ref() {
                    self.buffer.extend_from_slice(data);
                }
            }
        })
        .await
        .expect("stream ends");
        String::from_utf8_lossy(&self.buffer).into_owned()
    }
}

fn publish(gateway: &TestGateway, topic: &str, content_type: ContentType, payload: &str) -> String {
    let bus = gateway.app.bus.clone();
    let topic = Topic::new(topic).unwrap();
    let payload = Bytes::from(payload.to_owned());
    futures_executor_block(async move { bus.publish(topic, content_type, payload).await })
        .unwrap()
        .id
        .to_string()
}

/// The memory bus publishes synchronously; polling its future once completes it.
fn futures_executor_block<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("publish did not complete at once"),
    }
}

/// Waits until `n` subscribers are attached to `topic`.
async fn subscribers(gateway: &TestGateway, topic: &str, n: usize) {
    tokio::time::timeout(WAIT, async {
        loop {
            let stats = gateway.app.bus.topic_stats().await;
            if stats
                .iter()
                .any(|t| t.topic.as_str() == topic && t.subscribers == n)
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("subscriber attached");
}

#[tokio::test]
async fn stream_headers_retry_and_event_framing() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let mut stream = Stream::open(&gateway, "/sse?topics=a", &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-cache");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    assert!(stream.headers.get("content-encoding").is_none());
    let head = stream.until("retry: 3000\n\n", 1).await;
    assert!(head.starts_with("retry: 3000\n\n"), "{head}");

    subscribers(&gateway, "a", 1).await;
    let id = publish(&gateway, "a", ContentType::Json, "{\n\"k\": [1,\r\n2]\n}");
    let text = stream.until("\n\n", 3).await;
    let block = text.split("\n\n").nth(2).unwrap();
    let lines: Vec<&str> = block.lines().collect();
    assert_eq!(lines[0], format!("id: {id}"));
    assert_eq!(lines[1], "event: a");
    assert!(
        lines[2..].iter().all(|l| l.starts_with("data: ")),
        "{block}"
    );
    // Joined back as EventSource does, the data lines are the JSON envelope.
    let data: Vec<&str> = lines[2..].iter().map(|l| &l["data: ".len()..]).collect();
    let envelope: serde_json::Value = serde_json::from_str(&data.join("\n")).unwrap();
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["data"]["k"], serde_json::json!([1, 2]));
    gateway.shutdown().await;
}

#[tokio::test]
async fn binary_events_are_base64_in_the_envelope() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let mut stream = Stream::open(&gateway, "/sse?topics=b", &[]).await;
    subscribers(&gateway, "b", 1).await;
    let bus = gateway.app.bus.clone();
    futures_executor_block(bus.publish(
        Topic::new("b").unwrap(),
        ContentType::Binary,
        Bytes::from_static(&[0, 255]),
    ))
    .unwrap();
    let text = stream.until("\"data\":\"AP8=\"", 1).await;
    assert!(text.contains("\"content_type\":\"binary\""));
    gateway.shutdown().await;
}

#[tokio::test]
async fn heartbeat_comment_when_idle() {
    let mut config = TestGateway::quiet_config();
    config.sse = config.sse.heartbeat_interval(Duration::from_millis(50));
    let gateway = TestGateway::start(config).await;
    let mut stream = Stream::open(&gateway, "/sse?topics=a", &[]).await;
    let text = stream.until(": heartbeat\n\n", 2).await;
    assert!(text.contains(": heartbeat\n\n"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn resume_with_last_event_id_wins_over_since() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let ids: Vec<String> = (0..5)
        .map(|i| publish(&gateway, "a", ContentType::Text, &format!("m{i}")))
        .collect();
    // The URL says resume after the first, the header after the third: the header wins.
    let path = format!("/sse?topics=a&since={}", ids[0]);
    let mut stream = Stream::open(&gateway, &path, &[("last-event-id", &ids[2])]).await;
    let text = stream.until("id: ", 2).await;
    let got: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(got, [ids[3].as_str(), ids[4].as_str()]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn resume_past_history_is_reported_as_a_gap_event() {
    let mut config = TestGateway::quiet_config();
    config.bus.history_events = 2;
    let gateway = TestGateway::start(config).await;
    let ids: Vec<String> = (0..6)
        .map(|i| publish(&gateway, "a", ContentType::Text, &format!("m{i}")))
        .collect();
    let mut stream = Stream::open(&gateway, "/sse?topics=a", &[("last-event-id", &ids[0])]).await;
    let text = stream.until("id: ", 2).await;
    let gap = text.find("event: @gap\n").expect("a gap event");
    let first_event = text.find("id: ").unwrap();
    assert!(gap < first_event, "the gap comes before the replay: {text}");
    assert!(
        text.contains(&format!("\"lost_through\":\"{}\"", ids[3])),
        "{text}"
    );
    let got: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[5].as_str()]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_reasons() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let stream = Stream::open(&gateway, "/sse?topics=a", &[("last-event-id", "garbage")]).await;
    assert_eq!(stream.status, 400);
    let stream = Stream::open(&gateway, "/sse", &[]).await;
    assert_eq!(stream.status, 400);
    let stream = Stream::open(&gateway, "/sse?topics=a&since=zz:99", &[]).await;
    assert_eq!(stream.status, 200, "another epoch is a reset, not an error");
    let publish_first = publish(&gateway, "a", ContentType::Text, "x");
    let ahead = format!("/sse?topics=a&since={}", publish_first.replace(":1", ":99"));
    let stream = Stream::open(&gateway, &ahead, &[]).await;
    assert_eq!(stream.status, 400);
    gateway.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_the_stream() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let mut stream = Stream::open(&gateway, "/sse?topics=a", &[]).await;
    stream.until("retry:", 1).await;
    let (outcome, text) = tokio::join!(gateway.shutdown(), stream.read_to_end());
    assert_eq!(outcome, streamgate::ShutdownOutcome::Drained);
    assert!(text.ends_with(": server shutting down\n\n"), "{text}");
}

#[tokio::test]
async fn stream_ends_at_its_duration_limit_and_resumes_with_last_event_id() {
    let mut config = TestGateway::quiet_config();
    config.sse = config.sse.max_stream_duration(Duration::from_millis(200));
    let gateway = TestGateway::start(config).await;
    let first = publish(&gateway, "a", ContentType::Text, "before");
    let mut stream = Stream::open(&gateway, &format!("/sse?topics=a&since={first}"), &[]).await;
    let text = stream.read_to_end().await;
    assert!(text.ends_with(": stream duration limit reached; reconnect with Last-Event-ID\n\n"));
    let second = publish(&gateway, "a", ContentType::Text, "between");
    let mut again = Stream::open(&gateway, "/sse?topics=a", &[("last-event-id", &first)]).await;
    let text = again.until("id: ", 1).await;
    assert!(text.contains(&format!("id: {second}\n")), "{text}");
    gateway.shutdown().await;
}
