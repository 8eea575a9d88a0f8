//! SSE over HTTPS with HTTP/2 chosen by ALPN: many streams share one connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use streamgate::testkit::TestGateway;
use streamgate_core::{ContentType, Topic};
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn two_sse_streams_on_one_http2_connection() {
    let mut config = TestGateway::quiet_config();
    config.tls.enabled = true;
    let gateway = TestGateway::start(config).await;
    let tls = gateway.app.tls.as_ref().expect("TLS material");

    // Trust exactly the gateway's self-signed certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls.certificate.clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gateway.tls_addr.unwrap())
        .await
        .unwrap();
    let stream = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut bodies = Vec::new();
    for topic in ["a", "b"] {
        let mut sender = sender.clone();
        let request = Request::get(format!("https://localhost/sse?topics={topic}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        bodies.push(response.into_body());
    }
    // Both streams are subscribed before publishing.
    tokio::time::timeout(WAIT, async {
        loop {
            let stats = gateway.app.bus.topic_stats().await;
            if stats.iter().filter(|t| t.subscribers == 1).count() == 2 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("two subscribers");
    for topic in ["a", "b"] {
        gateway
            .app
            .bus
            .publish(
                Topic::new(topic).unwrap(),
                ContentType::Text,
                Bytes::from(format!("hello {topic}")),
            )
            .await
            .unwrap();
    }
    for (body, topic) in bodies.iter_mut().zip(["a", "b"]) {
        let mut text = String::new();
        tokio::time::timeout(WAIT, async {
            while !text.contains("\"data\":\"hello") {
                let frame = body.frame().await.expect("open stream").unwrap();
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
        })
        .await
        .expect("event on the stream");
        assert!(text.contains(&format!("event: {topic}\n")), "{text}");
        assert!(
            text.contains(&format!("\"data\":\"hello {topic}\"")),
            "{text}"
        );
    }
    drop(bodies);
    gateway.shutdown().await;
}
