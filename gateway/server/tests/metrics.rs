//! `GET /metrics`: valid Prometheus text, and counters that move by exactly what happened.
//!
//! The recorder is process-wide, so this file holds one test: nothing else in this process
//! touches the counters it checks.

mod common;

use std::time::Duration;

use common::{scrape, send, within, Sse, TestGateway};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn metrics_parse_and_count_exactly_what_was_delivered() {
    let mut config = TestGateway::quiet_config();
    config.bus.max_payload = 1024;
    let gateway = TestGateway::start(config).await;
    let before = scrape(&gateway).await;
    assert_eq!(before.get("streamgate_bus_available", &[]), 1.0);
    assert!(before.get("streamgate_process_resident_memory_bytes", &[]) > 0.0);

    // One subscriber per HTTP transport.
    let (mut ws, _) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/ws?topics=m", gateway.addr)),
    )
    .await
    .unwrap();
    let subscribed = within("subscribed", ws.next()).await.unwrap().unwrap();
    assert!(subscribed.to_text().unwrap().contains("subscribed"));
    let mut sse = Sse::open(gateway.addr, "m").await;
    let first_poll = send(&gateway, "GET", "/poll?topics=m&timeout=0", &[], "").await;
    assert_eq!(first_poll.status, 200);
    let cursor = first_poll.json()["cursor"].as_str().unwrap().to_owned();

    const N: usize = 5;
    for i in 0..N {
        let response = send(
            &gateway,
            "POST",
            "/publish/m",
            &[],
            format!("{{\"n\":{i}}}"),
        )
        .await;
        assert_eq!(response.status, 200);
    }
    let mut ws_events = 0;
    while ws_events < N {
        let message = within("a WebSocket event", ws.next())
            .await
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            assert!(text.contains("\"type\":\"event\""), "{text}");
            ws_events += 1;
        }
    }
    sse.read_until(|seen| seen.matches("\nid: ").count() >= N)
        .await;
    assert_eq!(sse.events(), N);
    let poll = send(
        &gateway,
        "GET",
        &format!("/poll?topics=m&timeout=0&cursor={cursor}"),
        &[],
        "",
    )
    .await;
    assert_eq!(poll.status, 200);
    let polled = poll.json()["messages"].as_array().unwrap().len();
    assert_eq!(polled, N);

    // Refusals: 404, 400 and 413.
    assert_eq!(send(&gateway, "GET", "/nowhere", &[], "").await.status, 404);
    assert_eq!(send(&gateway, "GET", "/sse", &[], "").await.status, 400);
    let big = vec![b'x'; 2048];
    assert_eq!(
        send(&gateway, "POST", "/publish/m", &[], big).await.status,
        413
    );

    let after = scrape(&gateway).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    for transport in ["ws", "sse", "longpoll"] {
        let t = [("transport", transport)];
        assert_eq!(
            delta("streamgate_events_delivered_total", &t),
            N as f64,
            "{transport}"
        );
        assert_eq!(
            delta("streamgate_delivery_latency_seconds_count", &t),
            N as f64,
            "{transport}"
        );
        assert!(
            delta("streamgate_bytes_written_total", &t) > 0.0,
            "{transport}"
        );
        assert!(
            delta("streamgate_connections_accepted_total", &t) >= 1.0,
            "{transport}"
        );
    }
    assert_eq!(
        after.get("streamgate_connections_open", &[("transport", "ws")]),
        1.0
    );
    assert_eq!(
        after.get("streamgate_connections_open", &[("transport", "sse")]),
        1.0
    );
    assert_eq!(
        after.get("streamgate_connections_open", &[("transport", "longpoll")]),
        0.0
    );
    assert_eq!(
        delta(
            "streamgate_publishes_total",
            &[("transport", "http"), ("outcome", "ok")]
        ),
        N as f64
    );
    assert_eq!(
        after.get("streamgate_bus_events_published_total", &[]),
        N as f64
    );
    for reason in ["not_found", "no_topics", "payload_too_large"] {
        assert_eq!(
            delta("streamgate_rejections_total", &[("reason", reason)]),
            1.0,
            "{reason}"
        );
    }

    // A WebSocket client over its message size is closed with 1009, and counted.
    let (mut big_ws, _) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gateway.addr)),
    )
    .await
    .unwrap();
    futures_util::SinkExt::send(&mut big_ws, Message::text("x".repeat(70 * 1024)))
        .await
        .unwrap();
    let close = within("the close", async {
        loop {
            match big_ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1009));
    drop(big_ws);
    drop(ws);
    drop(sse);
    let closed = within("the connections to be counted closed", async {
        loop {
            let scrape = scrape(&gateway).await;
            let open = scrape.get("streamgate_connections_open", &[]);
            if open == 0.0 {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        closed.get(
            "streamgate_rejections_total",
            &[("reason", "ws_message_too_big")]
        ) - before.get(
            "streamgate_rejections_total",
            &[("reason", "ws_message_too_big")]
        ),
        1.0
    );
    gateway.shutdown().await;

    // With `[metrics] enabled = false`, there is no /metrics.
    let mut config = TestGateway::quiet_config();
    config.metrics.enabled = false;
    let gateway = TestGateway::start(config).await;
    assert_eq!(send(&gateway, "GET", "/metrics", &[], "").await.status, 404);
    gateway.shutdown().await;
}
