//! A full gateway still takes publishes and answers its health check (issue 24).
//!
//! The public listener is filled to its cap (`server.max_connections`) with subscribers of
//! every TCP transport (WebSocket, SSE, long polling), and WebTransport to its own cap
//! (`webtransport.max_sessions`: its sessions are not TCP connections and do not count
//! against `server.max_connections`). Then:
//!
//! - a publish through the internal listener (`server.internal_listen`) reaches every one;
//! - `/healthz` answers within 100 ms with `full`, on the public listener (over its cap) and
//!   on the internal one;
//! - the next subscriber gets `503` `connection_limit` with `Retry-After` within 1 s (a
//!   WebSocket before the upgrade; WebTransport a close `1013` with its reason);
//! - after some subscribers leave, new ones are accepted again.
//!
//! The figures are printed on lines starting `full-gateway:`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{parse, publish_json, raw_exchange, within, Response, Sse, TestClient, TestGateway};
use futures_util::StreamExt;
use streamgate::config::GatewayConfig;
use streamgate_compare::clients::{cert_hash, connect_wt, wt_endpoint, FrameReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The public listener's cap.
const CAP: usize = 40;
const WS: usize = 14;
const SSE: usize = 13;
const POLLS: usize = CAP - WS - SSE;
/// WebTransport's own cap.
const WT_CAP: usize = 3;
/// Refusals timed per kind of subscriber.
const REFUSALS: usize = 10;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn config() -> GatewayConfig {
    let mut config = TestGateway::quiet_config();
    config.server.max_connections = CAP;
    config.server.max_connections_per_ip = 0;
    config.server.internal_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.webtransport.max_sessions = WT_CAP;
    config.webtransport.max_sessions_per_ip = 0;
    config
}

async fn open_ws(addr: SocketAddr) -> Result<Ws, tungstenite::Error> {
    within(
        "a WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?topics=t")),
    )
    .await
    .map(|(ws, _)| ws)
}

/// Reads `ws` until a text message containing `marker`.
async fn ws_expect(ws: &mut Ws, marker: &str) {
    within("a WebSocket event", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.contains(marker) => return,
                Some(Ok(_)) => {}
                other => panic!("the WebSocket ended: {other:?}"),
            }
        }
    })
    .await;
}

/// A long poll waiting on its own keep-alive connection: the cursor of now, then a poll
/// from it (which holds until an event comes).
async fn start_poll(addr: SocketAddr) -> JoinHandle<(TestClient, Response)> {
    let mut client = TestClient::connect(addr).await;
    let first = client.get("/poll?topics=t&timeout=0").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let cursor = first.json()["cursor"].as_str().unwrap().to_owned();
    tokio::spawn(async move {
        let answer = client
            .get(&format!("/poll?topics=t&cursor={cursor}&timeout=30"))
            .await;
        (client, answer)
    })
}

/// `GET /healthz` on a fresh connection to `addr`, and how long the answer took.
async fn healthz(addr: SocketAddr) -> (Response, Duration) {
    let started = Instant::now();
    let response = TestClient::connect(addr).await.get("/healthz").await;
    (response, started.elapsed())
}

/// Asserts `response` is the `full` health answer of a public listener holding `open`.
fn assert_full(response: &Response, open: usize) {
    assert_eq!(response.status, 503, "{}", response.text());
    let body = response.json();
    assert_eq!(body["status"], "full", "{body}");
    assert_eq!(body["open"], open, "{body}");
    assert_eq!(body["cap"], CAP, "{body}");
    assert!(response.header("retry-after").is_some(), "{body}");
}

/// A plain `GET /sse` on a raw socket over the cap: the whole answer, until the gateway
/// closes, and how long that took.
async fn refused_sse(addr: SocketAddr) -> (String, Duration) {
    raw_exchange(addr, "GET /sse?topics=t HTTP/1.1\r\nhost: test\r\n\r\n").await
}

fn assert_refused_head(answer: &str) {
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(lower.contains("\r\nretry-after: "), "{answer}");
    assert!(lower.contains("\r\nconnection: close"), "{answer}");
    assert!(answer.contains(r#""code":"connection_limit""#), "{answer}");
    assert!(answer.contains("server.max_connections"), "{answer}");
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and max of `samples`, in ms.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "p50 {:.2} ms, max {:.2} ms (n={})",
        millis(samples[samples.len() / 2]),
        millis(samples[samples.len() - 1]),
        samples.len()
    )
}

#[tokio::test]
async fn a_full_gateway_takes_publishes_answers_health_and_refuses_quickly() {
    let gateway = TestGateway::start(config()).await;
    let app = &gateway.app;
    let internal = gateway.internal_addr.expect("an internal listener");

    // WebTransport first (its certificate hash comes over the public listener).
    let (hash, wt_url) = cert_hash(gateway.addr).await.unwrap();
    let endpoint = wt_endpoint(hash, [127, 0, 0, 1].into()).unwrap();
    let mut wt: Vec<(wtransport::Connection, FrameReader)> = Vec::new();
    for _ in 0..WT_CAP {
        wt.push(
            within(
                "a WebTransport session",
                connect_wt(&endpoint, &format!("{wt_url}?topics=t")),
            )
            .await
            .unwrap(),
        );
    }
    within("the cert-hash connection to close", async {
        while app.connections_open() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // The public listener filled to its cap, with every TCP transport.
    let mut ws = Vec::new();
    for _ in 0..WS {
        ws.push(open_ws(gateway.addr).await.expect("under the cap"));
    }
    let mut sse = Vec::new();
    for _ in 0..SSE {
        sse.push(Sse::open(gateway.addr, "t").await);
    }
    let mut polls = Vec::new();
    for _ in 0..POLLS {
        polls.push(start_poll(gateway.addr).await);
    }
    assert_eq!(app.connections_open(), CAP);

    // /healthz: `full`, on the public listener (over its cap: answered by the refusal) and on
    // the internal one, each well within 100 ms.
    let mut health_times = Vec::new();
    for _ in 0..REFUSALS {
        let (public, public_took) = healthz(gateway.addr).await;
        assert_full(&public, CAP);
        let (inside, inside_took) = healthz(internal).await;
        assert_full(&inside, CAP);
        assert_eq!(inside.json()["listeners"]["internal"]["cap"], 256);
        health_times.extend([public_took, inside_took]);
    }
    assert!(
        health_times.iter().all(|t| *t < Duration::from_millis(100)),
        "{health_times:?}"
    );
    println!(
        "full-gateway: /healthz at the cap ({CAP} of {CAP}): {}",
        summary(&mut health_times)
    );

    // The next subscriber, of any transport, is refused within 1 s with a reason.
    let mut refusal_times = Vec::new();
    for _ in 0..REFUSALS {
        let (answer, took) = refused_sse(gateway.addr).await;
        assert_refused_head(&answer);
        refusal_times.push(took);

        let started = Instant::now();
        match open_ws(gateway.addr).await {
            Err(tungstenite::Error::Http(response)) => {
                refusal_times.push(started.elapsed());
                assert_eq!(response.status(), 503);
                assert!(response.headers().contains_key("retry-after"));
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(b"")).into_owned();
                assert!(body.contains(r#""code":"connection_limit""#), "{body}");
            }
            other => panic!("a WebSocket over the cap: {other:?}"),
        }

        let started = Instant::now();
        let refused = TestClient::connect(gateway.addr)
            .await
            .get("/poll?topics=t&timeout=0")
            .await;
        refusal_times.push(started.elapsed());
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert_eq!(refused.json()["error"]["code"], "connection_limit");
        assert!(refused.header("retry-after").is_some());
    }
    assert!(
        refusal_times.iter().all(|t| *t < Duration::from_secs(1)),
        "{refusal_times:?}"
    );
    println!(
        "full-gateway: time to refuse a subscriber at the cap (SSE, WebSocket, long poll): {}",
        summary(&mut refusal_times)
    );
    let started = Instant::now();
    let over = within(
        "a WebTransport session over its cap",
        connect_wt(&endpoint, &format!("{wt_url}?topics=t")),
    )
    .await;
    let wt_refusal = started.elapsed();
    let error = match over {
        Ok(_) => panic!("a session over webtransport.max_sessions was opened"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("too many sessions"), "{error}");
    println!(
        "full-gateway: WebTransport session over its cap ({WT_CAP}) refused in {:.2} ms: {error}",
        millis(wt_refusal)
    );
    assert!(wt_refusal < Duration::from_secs(1));

    // Publishing through the public listener is refused too (no slot), through the internal
    // one it is taken and reaches every subscriber.
    let (answer, _) = raw_exchange(
        gateway.addr,
        "POST /publish/t HTTP/1.1\r\nhost: test\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert_refused_head(&answer);
    let mut publisher = TestClient::connect(internal).await;
    let started = Instant::now();
    publish_json(&mut publisher, "t", r#"{"at":"cap"}"#).await;
    let publish_took = started.elapsed();
    for stream in &mut ws {
        ws_expect(stream, r#"{"at":"cap"}"#).await;
    }
    for stream in &mut sse {
        stream.expect(r#"{"at":"cap"}"#).await;
    }
    let mut poll_clients = Vec::new();
    for poll in polls {
        let (client, answer) = within("a long poll's answer", poll).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(
            answer.text().contains(r#"{"at":"cap"}"#),
            "{}",
            answer.text()
        );
        poll_clients.push(client);
    }
    for (_, control) in &mut wt {
        within("a WebTransport event", async {
            loop {
                let message = control.next().await.unwrap().expect("the control stream");
                if String::from_utf8_lossy(&message).contains(r#"{"at":"cap"}"#) {
                    return;
                }
            }
        })
        .await;
    }
    let delivered = started.elapsed();
    println!(
        "full-gateway: publish through the internal listener at the cap: answered in {:.2} ms, \
         received by all {} subscribers ({CAP} TCP + {WT_CAP} WebTransport) within {:.2} ms",
        millis(publish_took),
        CAP + WT_CAP,
        millis(delivered)
    );
    assert_eq!(app.connections_open(), CAP, "still full, nobody dropped");

    // The internal listener serves no subscriber route, and its metrics tell the listeners
    // apart.
    within("the internal health checks' connections to close", async {
        while app.internal_connections_open() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let refused = publisher.get("/sse?topics=t").await;
    assert_eq!(refused.status, 404);
    let reason = refused.json()["error"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("internal listener"), "{reason}");
    let metrics = publisher.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let samples = parse(&metrics.text());
    let sample = |name: &str, labels: &[(&str, &str)]| {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let open = |listener| {
        sample(
            "streamgate_listener_connections_open",
            &[("listener", listener)],
        )
    };
    assert_eq!(open("public"), CAP as f64);
    assert_eq!(open("internal"), 1.0, "the scrape's own connection");
    assert_eq!(
        sample(
            "streamgate_listener_connections_max",
            &[("listener", "public")]
        ),
        CAP as f64
    );
    let refused_total = sample(
        "streamgate_listener_refused_total",
        &[("listener", "public"), ("answered", "true")],
    );
    // Healthz probes, SSE, WebSocket and long-poll subscribers, the publish.
    assert_eq!(refused_total, (REFUSALS * 4 + 1) as f64);
    assert!(
        sample(
            "streamgate_rejections_total",
            &[("reason", "connection_limit")]
        ) >= (REFUSALS * 3 + 1) as f64
    );

    // Some leave: new subscribers are accepted again, and /healthz is back to ok.
    drop(sse.drain(..4));
    for mut stream in ws.drain(..4) {
        stream.close(None).await.unwrap();
    }
    drop(poll_clients.drain(..4));
    within("12 slots freed", async {
        while app.connections_open() != CAP - 12 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let (health, _) = healthz(internal).await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");
    for _ in 0..4 {
        ws.push(open_ws(gateway.addr).await.expect("a freed slot"));
        sse.push(Sse::open(gateway.addr, "t").await);
    }
    let poll = start_poll(gateway.addr).await;
    assert_eq!(app.connections_open(), CAP - 3);
    let (closing, _) = wt.pop().unwrap();
    closing.close(0u32.into(), b"bye");
    drop(closing);
    let reopened = within("a freed WebTransport session slot", async {
        loop {
            match connect_wt(&endpoint, &format!("{wt_url}?topics=t")).await {
                Ok(session) => return session,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    wt.push(reopened);
    publish_json(&mut publisher, "t", r#"{"at":"freed"}"#).await;
    for stream in &mut ws {
        ws_expect(stream, r#"{"at":"freed"}"#).await;
    }
    for stream in &mut sse {
        stream.expect(r#"{"at":"freed"}"#).await;
    }
    let (_, answer) = within("the new long poll", poll).await.unwrap();
    assert!(
        answer.text().contains(r#"{"at":"freed"}"#),
        "{}",
        answer.text()
    );
    println!(
        "full-gateway: after 12 subscribers left, 9 new ones (WebSocket, SSE, long poll) and a \
         WebTransport session were accepted and served"
    );
    drop((ws, sse, poll_clients, wt, publisher));
    gateway.shutdown().await;
}
