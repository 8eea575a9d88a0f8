//! WebTransport sessions against a gateway in this process, with the wtransport client:
//! every delivery mode, publish over a bidirectional stream and over datagrams, resume, the
//! datagram size fallback, limits, shutdown and `/wt/cert-hash`.

mod common;

use std::time::Duration;

use common::*;
use streamgate::ShutdownOutcome;
use streamgate_core::ContentType;

#[tokio::test]
async fn stream_mode_delivers_and_bidi_publish_is_answered() {
    let gateway = TestGateway::start(quiet()).await;
    let session = connect(&gateway, "?topics=chat").await;
    let mut control = control_stream(&session, "stream").await;

    let (mut send, mut recv) = within("open_bi", async {
        session.open_bi().await.expect("open_bi").await.expect("bi")
    })
    .await;
    let message = br#"{"type":"publish","topic":"chat","data":{"hi":1},"ref":"r1"}"#;
    send.write_all(&framed(message)).await.expect("write");
    let reply = json(&read_frame(&mut recv).await.expect("reply"));
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["ref"], "r1");

    let event = json(&read_frame(&mut control).await.expect("event"));
    assert_eq!(event["type"], "event");
    assert_eq!(event["topic"], "chat");
    assert_eq!(event["id"], reply["id"]);
    assert_eq!(event["data"], serde_json::json!({"hi": 1}));

    // A bad message gets an error reply on the same stream, the session goes on.
    send.write_all(&framed(
        br#"{"type":"publish","topic":"a/b","data":1,"ref":"r2"}"#,
    ))
    .await
    .expect("write");
    let reply = json(&read_frame(&mut recv).await.expect("reply"));
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "bad_topic");
    assert_eq!(reply["ref"], "r2");

    // Binary events come as binary envelopes (§3.3), first byte 1.
    let binary = publish(&gateway, "chat", ContentType::Binary, vec![0u8, 255]).await;
    let frame = read_frame(&mut control).await.expect("binary event");
    assert_eq!(frame[0], 1, "binary envelope version");
    assert!(frame.ends_with(&[0, 255]));
    let id = binary.id.to_string();
    assert!(frame.windows(id.len()).any(|w| w == id.as_bytes()));
    gateway.shutdown().await;
}

#[tokio::test]
async fn resume_with_since_replays_what_followed() {
    let gateway = TestGateway::start(quiet()).await;
    let first = publish(&gateway, "news", ContentType::Text, "one").await;
    let second = publish(&gateway, "news", ContentType::Text, "two").await;
    let third = publish(&gateway, "news", ContentType::Text, "three").await;
    let session = connect(&gateway, &format!("?topics=news&since={}", first.id)).await;
    let mut control = control_stream(&session, "stream").await;
    for expected in [&second, &third] {
        let event = json(&read_frame(&mut control).await.expect("event"));
        assert_eq!(event["id"], expected.id.to_string(), "{event}");
    }
    // Resuming from another epoch is a reset notice, then the history.
    let session = connect(&gateway, "?topics=news&since=otherepoch:2").await;
    let mut control = control_stream(&session, "stream").await;
    let notice = json(&read_frame(&mut control).await.expect("notice"));
    assert_eq!(notice["type"], "reset", "{notice}");
    let event = json(&read_frame(&mut control).await.expect("event"));
    assert_eq!(event["id"], first.id.to_string());
    gateway.shutdown().await;
}

#[tokio::test]
async fn stream_per_event_opens_one_stream_per_event() {
    let gateway = TestGateway::start(quiet()).await;
    let session = connect(&gateway, "?topics=t&mode=stream-per-event").await;
    let _control = control_stream(&session, "stream-per-event").await;
    let a = publish(&gateway, "t", ContentType::Json, "1").await;
    let b = publish(&gateway, "t", ContentType::Json, "2").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let mut stream = within("event stream", session.accept_uni())
            .await
            .expect("uni");
        let event = json(&read_frame(&mut stream).await.expect("event"));
        assert!(
            read_frame(&mut stream).await.is_none(),
            "one event per stream"
        );
        seen.push(event["id"].as_str().unwrap().to_owned());
    }
    seen.sort();
    let mut expected = vec![a.id.to_string(), b.id.to_string()];
    expected.sort();
    assert_eq!(seen, expected);
    gateway.shutdown().await;
}

#[tokio::test]
async fn datagram_mode_and_fallback_for_large_events() {
    let gateway = TestGateway::start(quiet()).await;
    let session = connect(&gateway, "?topics=d&mode=datagram").await;
    let mut control = control_stream(&session, "datagram").await;
    let small = publish(&gateway, "d", ContentType::Text, "small").await;
    let datagram = within("datagram", session.receive_datagram())
        .await
        .expect("datagram");
    let event = json(&datagram.payload());
    assert_eq!(event["id"], small.id.to_string());

    let big = publish(&gateway, "d", ContentType::Text, "x".repeat(5000)).await;
    let notice = json(&read_frame(&mut control).await.expect("fallback notice"));
    assert_eq!(notice["type"], "datagram_fallback", "{notice}");
    assert_eq!(notice["id"], big.id.to_string());
    assert!(notice["max_datagram_size"].as_u64().unwrap() < 5000);
    let event = json(&read_frame(&mut control).await.expect("event on the stream"));
    assert_eq!(event["id"], big.id.to_string());
    assert_eq!(event["data"].as_str().unwrap().len(), 5000);

    // Publishing by datagram: the reply is a datagram, the event comes back as one.
    session
        .send_datagram(
            br#"{"type":"publish","topic":"d","content_type":"text","data":"dg","ref":"g1"}"#,
        )
        .expect("send datagram");
    let mut published = None;
    let mut echoed = None;
    while published.is_none() || echoed.is_none() {
        let datagram = within("datagram", session.receive_datagram())
            .await
            .expect("datagram");
        let message = json(&datagram.payload());
        match message["type"].as_str() {
            Some("published") => published = Some(message),
            Some("event") => echoed = Some(message),
            _ => panic!("unexpected {message}"),
        }
    }
    assert_eq!(published.as_ref().unwrap()["ref"], "g1");
    assert_eq!(published.unwrap()["id"], echoed.unwrap()["id"]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_going_away() {
    let gateway = TestGateway::start(quiet()).await;
    let session = connect(&gateway, "?topics=t").await;
    let _control = control_stream(&session, "stream").await;
    let outcome = within("shutdown", gateway.shutdown()).await;
    assert_eq!(outcome, ShutdownOutcome::Drained);
    assert_eq!(
        closed_by_server(&session).await,
        (1001, "server shutting down".to_owned())
    );
}

#[tokio::test]
async fn bad_url_and_limits_close_with_codes() {
    let mut config = quiet();
    config.webtransport.max_sessions = 1;
    config.webtransport.max_datagram_rate = 1.0;
    config.webtransport.datagram_burst = 2;
    config.webtransport.max_message_size = 100;
    let gateway = TestGateway::start(config).await;
    let doc = cert_hash(&gateway).await;

    let (code, reason) = refused(&doc, "?topics=a/b").await;
    assert_eq!(code, 4400);
    assert!(reason.starts_with("bad_topic"), "{reason}");

    let first = connect_with(&doc, "?topics=t").await.expect("opens");
    let _control = control_stream(&first, "stream").await;
    assert_eq!(
        refused(&doc, "?topics=t").await,
        (1013, "too many sessions (limit 1)".to_owned())
    );

    for _ in 0..5 {
        let _ = first.send_datagram(b"{}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, reason) = closed_by_server(&first).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("datagram rate"), "{reason}");
    drop(first);

    // The slot is free again; an oversized client message closes with 1009.
    let third = within("a free slot", async {
        loop {
            // A session refused with 1013 fails to open or has no control stream.
            let Ok(session) = connect_with(&doc, "?topics=t").await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if let Ok(mut control) = session.accept_uni().await {
                if read_frame(&mut control).await.is_some() {
                    break session;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (mut send, _recv) = within("open_bi", async {
        third.open_bi().await.expect("open_bi").await.expect("bi")
    })
    .await;
    send.write_all(&framed(&[b' '; 101])).await.expect("write");
    let (code, reason) = closed_by_server(&third).await;
    assert_eq!(code, 1009);
    assert!(reason.contains("limit is 100"), "{reason}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn cert_hash_endpoint_and_rotation() {
    let mut config = quiet();
    config.webtransport.cert_rotation = Duration::from_millis(300);
    let gateway = TestGateway::start(config).await;
    let doc = cert_hash(&gateway).await;
    assert_eq!(doc["algorithm"], "sha-256");
    assert_eq!(doc["hex"].as_str().unwrap().len(), 64);
    assert_eq!(
        doc["url"],
        format!("https://{}/wt", gateway.wt_addr.expect("wt address"))
    );
    assert_eq!(doc["self_signed"], true);
    let rotated = within("rotation", async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = cert_hash(&gateway).await;
            if now["generation"].as_u64() >= Some(1) {
                break now;
            }
        }
    })
    .await;
    assert_ne!(rotated["hex"], doc["hex"]);
    // A client pinning the new hash connects (the rotation period is short here, so retry if
    // another rotation slipped in between).
    let session = within("connect after rotation", async {
        loop {
            let now = cert_hash(&gateway).await;
            if let Ok(session) = connect_with(&now, "?topics=t").await {
                break session;
            }
        }
    })
    .await;
    let _control = control_stream(&session, "stream").await;
    gateway.shutdown().await;
}

/// A publish over the client's limits (one publish rate per client IP across every path, and
/// the budget for new topics) is answered with an `error` naming the limit, on the same
/// stream; the session stays open.
#[tokio::test]
async fn publishes_over_the_clients_limits_get_an_error_reply() {
    let mut config = quiet();
    config.server.publish_rate = 0.001;
    config.server.publish_burst = 3;
    config.server.topic_create_rate = 0.001;
    config.server.topic_create_burst = 1;
    let gateway = TestGateway::start(config).await;
    let session = connect(&gateway, "?topics=chat").await;
    let mut control = control_stream(&session, "stream").await;
    let (send, recv) = within("open_bi", async {
        session.open_bi().await.expect("open_bi").await.expect("bi")
    })
    .await;
    async fn exchange(
        (send, recv): &mut (wtransport::SendStream, wtransport::RecvStream),
        topic: &str,
        reference: &str,
    ) -> serde_json::Value {
        let message =
            format!(r#"{{"type":"publish","topic":"{topic}","data":1,"ref":"{reference}"}}"#);
        send.write_all(&framed(message.as_bytes()))
            .await
            .expect("write");
        json(&read_frame(recv).await.expect("reply"))
    }
    let mut bidi = (send, recv);
    // `chat` exists (the session subscribed to it): only the rate is charged.
    assert_eq!(exchange(&mut bidi, "chat", "1").await["type"], "published");
    assert_eq!(exchange(&mut bidi, "fresh", "2").await["type"], "published");
    let refused = exchange(&mut bidi, "fresher", "3").await;
    assert_eq!(refused["code"], "topic_budget", "{refused}");
    assert_eq!(refused["ref"], "3");
    let refused = exchange(&mut bidi, "chat", "4").await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(
        refused["reason"].as_str().unwrap().contains("publish rate"),
        "{refused}"
    );
    // The session stays open: events still arrive.
    let later = publish(&gateway, "chat", ContentType::Text, "later").await;
    loop {
        let event = json(&read_frame(&mut control).await.expect("an event"));
        if event["id"] == later.id.to_string() {
            break;
        }
    }
    gateway.shutdown().await;
}
