//! The four example clients, run as real processes against a gateway in this process.
//!
//! Each client must print exactly the events of its topics, in id order, as
//! `<id> <topic> <data>` — the same line for the same event whatever the transport — resume
//! after `--since`, report `gap` and `reset` notices, reconnect and resume after losing its
//! connection, and stop with the gateway's reason when the gateway refuses it.

mod support;

use streamgate_core::{ContentType, Event};
use support::*;

/// What the four live tests publish: every content type, two topics the client wants, one it
/// does not. Returns the lines a client of topics `a` and `b` must print, in order.
async fn publish_mixed(gateway: &TestGateway) -> Vec<String> {
    let e1 = publish(
        gateway,
        "a",
        ContentType::Json,
        "{\"n\": 1,\n \"s\": \"x\"}",
    )
    .await;
    let e2 = publish(gateway, "b", ContentType::Text, "two\nlines \"quoted\"").await;
    publish(gateway, "c", ContentType::Json, "0").await;
    let e3 = publish(
        gateway,
        "a",
        ContentType::Binary,
        vec![0xfb_u8, 0xff, 0xbf, 0],
    )
    .await;
    let e4 = publish(gateway, "b", ContentType::Json, "[1, 2.5, null]").await;
    vec![
        // JSON compacted onto one line, text as a JSON string, binary as standard base64
        // (with '+', '/' and padding, which the URL-safe alphabet would spell differently).
        format!("{} a {{\"n\":1,\"s\":\"x\"}}", e1.id),
        format!("{} b \"two\\nlines \\\"quoted\\\"\"", e2.id),
        format!("{} a \"+/+/AA==\"", e3.id),
        format!("{} b [1,2.5,null]", e4.id),
    ]
}

/// `<id> <topic> <n>` for events published with a JSON number payload.
fn line(event: &Event) -> String {
    format!(
        "{} {} {}",
        event.id,
        event.topic.as_str(),
        String::from_utf8_lossy(&event.payload)
    )
}

async fn numbered(gateway: &TestGateway, topic: &str, count: usize) -> Vec<std::sync::Arc<Event>> {
    let mut events = Vec::new();
    for n in 1..=count {
        events.push(publish(gateway, topic, ContentType::Json, n.to_string()).await);
    }
    events
}

// ---------------------------------------------------------------------------------------------
// Live delivery: subscribe, then events are published.

async fn prints_live_events_in_order(binary: &str, extra: &[&str]) {
    let gateway = TestGateway::start(quiet()).await;
    let mut client = Client::start(
        binary,
        &gateway,
        &[&["a,b", "--count", "4"], extra].concat(),
    );
    client.wait_until_subscribed(&gateway, "a").await;
    let expected = publish_mixed(&gateway).await;
    client.finish().await.assert_printed(&expected);
    gateway.shutdown().await;
}

#[tokio::test]
async fn ws_client_prints_live_events_in_order() {
    prints_live_events_in_order(WS, &[]).await;
}

#[tokio::test]
async fn sse_client_prints_live_events_in_order() {
    prints_live_events_in_order(SSE, &[]).await;
}

#[tokio::test]
async fn poll_client_prints_live_events_in_order() {
    prints_live_events_in_order(POLL, &[]).await;
}

#[tokio::test]
async fn wt_client_prints_live_events_in_order_in_stream_mode() {
    prints_live_events_in_order(WT, &["--mode", "stream"]).await;
}

/// The unordered WebTransport modes may deliver out of id order: the same events, in any
/// order. Datagram mode also sends an event too large for a datagram on the control stream.
async fn wt_unordered_mode_prints_every_event(mode: &str) {
    let gateway = TestGateway::start(quiet()).await;
    let mut client = Client::start(WT, &gateway, &["a", "b", "--count", "5", "--mode", mode]);
    client.wait_until_subscribed(&gateway, "a").await;
    let mut expected = publish_mixed(&gateway).await;
    let big = publish(&gateway, "a", ContentType::Text, "x".repeat(5000)).await;
    expected.push(format!("{} a \"{}\"", big.id, "x".repeat(5000)));
    let mut finished = client.finish().await;
    assert!(finished.status.success(), "{finished:#?}");
    finished.lines.sort();
    expected.sort();
    assert_eq!(finished.lines, expected, "stderr:\n{}", finished.stderr);
    if mode == "datagram" {
        let fallback = format!("datagram_fallback: event {} (", big.id);
        assert!(finished.stderr.contains(&fallback), "{}", finished.stderr);
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn wt_client_prints_every_event_in_stream_per_event_mode() {
    wt_unordered_mode_prints_every_event("stream-per-event").await;
}

#[tokio::test]
async fn wt_client_prints_every_event_in_datagram_mode() {
    wt_unordered_mode_prints_every_event("datagram").await;
}

// ---------------------------------------------------------------------------------------------
// --since: resume after an id, from history.

async fn resumes_after_since(binary: &str) {
    let gateway = TestGateway::start(quiet()).await;
    let mut events = Vec::new();
    for n in 1..=5 {
        events.push(publish(&gateway, "a", ContentType::Json, n.to_string()).await);
        publish(&gateway, "other", ContentType::Json, "0").await;
    }
    let since = events[1].id.to_string();
    let client = Client::start(binary, &gateway, &["a", "--since", &since, "--count", "3"]);
    let expected: Vec<String> = events[2..].iter().map(|e| line(e)).collect();
    client.finish().await.assert_printed(&expected);
    gateway.shutdown().await;
}

#[tokio::test]
async fn ws_client_resumes_after_since() {
    resumes_after_since(WS).await;
}

#[tokio::test]
async fn sse_client_resumes_after_since() {
    resumes_after_since(SSE).await;
}

#[tokio::test]
async fn poll_client_resumes_after_since() {
    resumes_after_since(POLL).await;
}

#[tokio::test]
async fn wt_client_resumes_after_since() {
    resumes_after_since(WT).await;
}

// ---------------------------------------------------------------------------------------------
// Notices: a resume point evicted from history (gap), or from another epoch (reset).

async fn reports_gap_and_reset_notices(binary: &str) {
    let mut config = quiet();
    config.bus.history_events = 2;
    let gateway = TestGateway::start(config).await;
    let events = numbered(&gateway, "a", 4).await;
    let kept: Vec<String> = events[2..].iter().map(|e| line(e)).collect();

    let since = events[0].id.to_string();
    let finished = Client::start(binary, &gateway, &["a", "--since", &since, "--count", "2"])
        .finish()
        .await;
    finished.assert_printed(&kept);
    let gap = format!(
        "notice: gap: a: events after {} through {} were evicted",
        events[0].id, events[1].id
    );
    assert!(finished.stderr.contains(&gap), "{}", finished.stderr);

    let finished = Client::start(
        binary,
        &gateway,
        &["a", "--since", "oldepoch:1", "--count", "2"],
    )
    .finish()
    .await;
    finished.assert_printed(&kept);
    assert!(
        finished
            .stderr
            .contains("notice: reset: oldepoch:1 is from another epoch"),
        "{}",
        finished.stderr
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn ws_client_reports_gap_and_reset_notices() {
    reports_gap_and_reset_notices(WS).await;
}

#[tokio::test]
async fn sse_client_reports_gap_and_reset_notices() {
    reports_gap_and_reset_notices(SSE).await;
}

#[tokio::test]
async fn poll_client_reports_gap_and_reset_notices() {
    reports_gap_and_reset_notices(POLL).await;
}

#[tokio::test]
async fn wt_client_reports_gap_and_reset_notices() {
    reports_gap_and_reset_notices(WT).await;
}

// ---------------------------------------------------------------------------------------------
// Losing the connection: reconnect, resume from the last id, lose and repeat nothing.

/// The client's connection is cut after two events; two more are published while it is away
/// (its new connection is held back until then), so only resuming can deliver them.
async fn reconnects_and_resumes(binary: &str, config: streamgate::config::GatewayConfig) {
    let gateway = TestGateway::start(config).await;
    let proxy = Proxy::start(gateway.addr).await;
    let mut client = Client::spawn(binary, &proxy.url(), &["a", "--count", "4"]);
    client.wait_until_subscribed(&gateway, "a").await;
    let first = numbered(&gateway, "a", 2).await;
    for event in &first {
        assert_eq!(client.next_line().await, line(event));
    }

    proxy.cut_and_hold();
    let mut missed = Vec::new();
    for n in 3..=4 {
        missed.push(publish(&gateway, "a", ContentType::Json, n.to_string()).await);
    }
    proxy.resume();

    let finished = client.finish().await;
    let expected: Vec<String> = first.iter().chain(&missed).map(|e| line(e)).collect();
    finished.assert_printed(&expected);
    assert!(
        proxy.accepted() >= 2,
        "no reconnection: {}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("reconnecting") || finished.stderr.contains("polling again"),
        "{}",
        finished.stderr
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn ws_client_reconnects_and_resumes() {
    reconnects_and_resumes(WS, quiet()).await;
}

#[tokio::test]
async fn sse_client_reconnects_with_last_event_id() {
    let mut config = quiet();
    // The client waits the stream's `retry:` before reconnecting, as EventSource does.
    config.sse.retry = std::time::Duration::from_millis(100);
    reconnects_and_resumes(SSE, config).await;
}

#[tokio::test]
async fn poll_client_polls_again_from_its_cursor() {
    reconnects_and_resumes(POLL, quiet()).await;
}

/// Long polling's whole state is the `cursor` of the last answer: after a reset with nothing
/// kept it is `<epoch>:0`. A client that polled again with its old id instead would be told
/// about the reset again on every poll.
#[tokio::test]
async fn poll_client_keeps_the_cursor_of_each_answer() {
    let gateway = TestGateway::start(quiet()).await;
    let mut client = Client::start(
        POLL,
        &gateway,
        &[
            "a",
            "--since",
            "oldepoch:1",
            "--timeout",
            "0.1",
            "--count",
            "1",
        ],
    );
    client.wait_for_stderr("notice: reset").await;
    let event = publish(&gateway, "a", ContentType::Json, "1").await;
    let finished = client.finish().await;
    finished.assert_printed(&[line(&event)]);
    assert_eq!(
        finished.stderr.matches("notice: reset").count(),
        1,
        "{}",
        finished.stderr
    );
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Refusals and bad input: a clear reason and a non-zero status, never a panic or a retry loop.

#[tokio::test]
async fn a_refused_subscription_ends_the_client_with_the_gateways_reason() {
    let gateway = TestGateway::start(quiet()).await;
    let newest = publish(&gateway, "a", ContentType::Json, "1").await;
    let ahead = format!("{}:{}", newest.id.epoch.as_str(), newest.id.seq + 5);
    for binary in [WS, SSE, POLL, WT] {
        let finished = Client::start(binary, &gateway, &["a", "--since", &ahead])
            .finish()
            .await;
        assert_eq!(finished.status.code(), Some(1), "{binary}: {finished:#?}");
        assert!(finished.lines.is_empty(), "{binary}: {finished:#?}");
        assert!(
            finished.stderr.contains("giving up") && finished.stderr.contains("cursor_ahead"),
            "{binary}: {}",
            finished.stderr
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn bad_command_lines_are_refused_before_connecting() {
    // Nothing listens at this address: a client that tried to connect would retry forever.
    let nowhere = "http://127.0.0.1:9";
    let cases = [
        (&["a/b"][..], "not a topic name"),
        (&["a", "--since", "garbage"][..], "epoch:seq"),
        (&["a", "--count", "0"][..], "--count"),
    ];
    for binary in [WS, SSE, POLL, WT] {
        for (args, complaint) in cases {
            let finished = Client::spawn(binary, nowhere, args).finish().await;
            assert_eq!(
                finished.status.code(),
                Some(2),
                "{binary} {args:?}: {finished:#?}"
            );
            assert!(
                finished.stderr.contains(complaint),
                "{binary} {args:?}: {}",
                finished.stderr
            );
            assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
        }
    }
    let finished = Client::spawn(WS, "https://127.0.0.1:8443", &["a"])
        .finish()
        .await;
    assert_eq!(finished.status.code(), Some(2), "{finished:#?}");
    assert!(
        finished.stderr.contains("plain http://"),
        "{}",
        finished.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Events a client cannot decode. The gateway refuses payloads that are not I-JSON, so these
// tests answer from a scripted gateway: each answer holds an event whose envelope `serde_json`
// cannot read (a lone surrogate escape, an array nested 300 deep). The client must warn, move
// its resume point past the event and go on, instead of asking for the same bytes forever.

fn envelope(id: &str, data: &str) -> String {
    format!(
        r#"{{"type":"event","topic":"a","id":"{id}","ts":1,"content_type":"json","data":{data}}}"#
    )
}

fn deep_array() -> String {
    format!("{}{}", "[".repeat(300), "]".repeat(300))
}

/// A gateway that answers the n-th request (from 0) with `answer(n)`: a content type, a body,
/// and whether to close the connection after it. Each request's head is sent on `heads`.
async fn scripted_gateway(
    answer: impl Fn(usize) -> (&'static str, String, bool) + Send + Sync + 'static,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (heads_tx, heads) = tokio::sync::mpsc::unbounded_channel();
    let answer = std::sync::Arc::new(answer);
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answer, served, heads_tx) = (answer.clone(), served.clone(), heads_tx.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buffer).await {
                            Ok(n @ 1..) => pending.extend_from_slice(&buffer[..n]),
                            _ => return,
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..end + 4);
                    let _ = heads_tx.send(head);
                    let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (content_type, body, close) = answer(n);
                    let framing = if close {
                        "connection: close".to_owned()
                    } else {
                        format!("content-length: {}", body.len())
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{framing}\r\n\r\n{body}"
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (url, heads)
}

/// The next request head (or WebSocket request target) a scripted gateway saw.
async fn next_head(heads: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, heads.recv())
        .await
        .expect("a request within the bound")
        .expect("the scripted gateway runs")
}

/// Asserts the client's first request resumes from nothing and its second from `id`: `key`
/// is what carries the position (`cursor=`, `since=`, `last-event-id: `).
async fn assert_resumes_from(
    requests: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    key: &str,
    id: &str,
) {
    let first = next_head(requests).await.to_ascii_lowercase();
    assert!(!first.contains(key), "{first}");
    let second = next_head(requests).await.to_ascii_lowercase();
    assert!(second.contains(&format!("{key}{id}")), "{second}");
}

/// Asserts the client warned that it skipped each event of `ids`.
fn assert_warned_skipping(finished: &Finished, ids: &[&str]) {
    for id in ids {
        assert!(
            finished
                .stderr
                .contains(&format!("warning: skipped event {id}")),
            "{}",
            finished.stderr
        );
    }
}

#[tokio::test]
async fn poll_client_skips_an_event_it_cannot_decode_and_moves_its_cursor_past_it() {
    let (url, mut heads) = scripted_gateway(|n| {
        let body = match n {
            // The undecodable event is the last of its batch: the cursor names it.
            0 => format!(
                r#"{{"cursor":"ep:2","messages":[{},{}]}}"#,
                envelope("ep:1", "1"),
                envelope("ep:2", r#"{"s":"\ud800"}"#)
            ),
            _ => format!(
                r#"{{"cursor":"ep:4","messages":[{},{}]}}"#,
                envelope("ep:3", &deep_array()),
                envelope("ep:4", "4")
            ),
        };
        ("application/json", body, false)
    })
    .await;
    let client = Client::spawn(POLL, &url, &["a", "--count", "2", "--timeout", "0"]);
    assert_resumes_from(&mut heads, "cursor=", "ep:2").await;
    let finished = client.finish().await;
    finished.assert_printed(&["ep:1 a 1".to_owned(), "ep:4 a 4".to_owned()]);
    assert_warned_skipping(&finished, &["ep:2", "ep:3"]);
}

#[tokio::test]
async fn sse_client_skips_an_event_it_cannot_decode_and_resumes_after_it() {
    let (url, mut heads) = scripted_gateway(|n| {
        let body = match n {
            // The stream ends right after the undecodable event: the client must come back
            // after it, not before it.
            0 => format!(
                "retry: 10\n\nid: ep:1\nevent: a\ndata: {}\n\nid: ep:2\nevent: a\ndata: {}\n\n",
                envelope("ep:1", "1"),
                envelope("ep:2", &deep_array())
            ),
            _ => format!("id: ep:3\nevent: a\ndata: {}\n\n", envelope("ep:3", "3")),
        };
        ("text/event-stream", body, true)
    })
    .await;
    let client = Client::spawn(SSE, &url, &["a", "--count", "2"]);
    assert_resumes_from(&mut heads, "last-event-id: ", "ep:2").await;
    let finished = client.finish().await;
    finished.assert_printed(&["ep:1 a 1".to_owned(), "ep:3 a 3".to_owned()]);
    assert_warned_skipping(&finished, &["ep:2"]);
}

// tungstenite's handshake callback fixes the closure's error type (an HTTP response).
#[allow(clippy::result_large_err)]
#[tokio::test]
async fn ws_client_skips_an_event_it_cannot_decode_and_resumes_after_it() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (paths_tx, mut paths) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let paths_tx = paths_tx.clone();
            let record = move |request: &Request, mut response: Response| {
                let _ = paths_tx.send(request.uri().to_string());
                // The client offers `streamgate.v1` and insists on getting it back.
                response.headers_mut().insert(
                    "sec-websocket-protocol",
                    http::HeaderValue::from_static("streamgate.v1"),
                );
                Ok(response)
            };
            let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                continue;
            };
            let frames = match connection {
                // The connection ends right after the undecodable event.
                0 => vec![envelope("ep:1", "1"), envelope("ep:2", r#"{"s":"\udc00"}"#)],
                _ => vec![envelope("ep:3", "3")],
            };
            for frame in frames {
                let _ = socket.send(Message::text(frame)).await;
            }
            let _ = socket.close(None).await;
        }
    });
    let client = Client::spawn(WS, &url, &["a", "--count", "2"]);
    assert_resumes_from(&mut paths, "since=", "ep:2").await;
    let finished = client.finish().await;
    finished.assert_printed(&["ep:1 a 1".to_owned(), "ep:3 a 3".to_owned()]);
    assert_warned_skipping(&finished, &["ep:2"]);
}
