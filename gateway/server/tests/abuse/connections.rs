//! Abuse: connections. One IP opens WebSockets (or WebTransport sessions) past the
//! connection caps. An upgraded WebSocket keeps its slots (`server.max_connections`,
//! `server.max_connections_per_ip`) for as long as it is open, so every one over a cap is
//! refused, and closing some frees their slots; a WebTransport session counts against
//! `webtransport.max_sessions_per_ip`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use streamgate::testkit::TestGateway;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::common::{cert_hash_digest, within, TestClient};
use super::support::{assert_ws_refused, served_within, tcp_from};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket handshake on `/ws?topics=t` from `from`: the socket, or the refusal.
async fn open_ws(addr: SocketAddr, from: IpAddr) -> Result<Ws, tungstenite::Error> {
    let stream = tcp_from(addr, from).await;
    let url = format!("ws://{addr}/ws?topics=t");
    within(
        "a WebSocket handshake",
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .map(|(ws, _)| ws)
}

/// Asserts `refusal` is `429` `too_many_connections`, with its reason.
fn assert_too_many(refusal: &tungstenite::Error) {
    assert_ws_refused(refusal, 429, "too_many_connections", "connections");
}

/// Closes `ws` and waits for the gateway's side of the close.
async fn close(mut ws: Ws) {
    ws.close(None).await.unwrap();
    within("the close handshake", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Waits until `count()` is `expected`: the gateway's own count of open connections, which
/// moves when a session ends.
async fn until_open(what: &str, expected: usize, count: impl Fn() -> usize) {
    within(what, async {
        while count() != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn websockets_over_the_per_ip_cap_are_refused_until_some_close() {
    const CAP: usize = 20;
    const OVER: usize = 30;
    let mut config = TestGateway::quiet_config();
    config.server.max_connections_per_ip = CAP;
    let gateway = TestGateway::start(config).await;
    let app = &gateway.app;

    let mut open = Vec::new();
    for _ in 0..CAP {
        open.push(
            open_ws(gateway.addr, ATTACKER)
                .await
                .expect("under the cap"),
        );
    }
    assert_eq!(app.connections_open_from(ATTACKER), CAP);
    let mut accepted_over = 0;
    for _ in 0..OVER {
        match open_ws(gateway.addr, ATTACKER).await {
            Ok(ws) => {
                accepted_over += 1;
                open.push(ws);
            }
            Err(refusal) => assert_too_many(&refusal),
        }
    }
    println!(
        "abuse[ws per-IP cap]: {accepted_over} of {OVER} WebSockets accepted over a cap of {CAP}"
    );
    assert_eq!(accepted_over, 0);
    assert_eq!(app.connections_open_from(ATTACKER), CAP);

    // Another address is still served, WebSocket and HTTP alike.
    let (other, _) =
        served_within("the per-IP WebSocket flood", open_ws(gateway.addr, OTHER)).await;
    let mut other = other.expect("another address has its own count");
    let mut client = TestClient::connect_from(gateway.addr, OTHER).await;
    assert_eq!(client.get("/healthz").await.status, 200);

    // The sessions still open are served: an event reaches them.
    gateway
        .app
        .bus
        .publish(
            streamgate_core::Topic::new("t").unwrap(),
            streamgate_core::ContentType::Json,
            bytes::Bytes::from_static(br#"{"n":1}"#),
        )
        .await
        .unwrap();
    for ws in [open.last_mut().unwrap(), &mut other] {
        let event = within("the event", async {
            loop {
                if let Some(Ok(Message::Text(text))) = ws.next().await {
                    if text.contains(r#"{"n":1}"#) {
                        return text;
                    }
                }
            }
        })
        .await;
        assert!(event.contains("\"t\""), "{event}");
    }

    // Closing five frees five slots, and no more.
    for ws in open.drain(..5) {
        close(ws).await;
    }
    until_open("five slots freed", CAP - 5, || {
        app.connections_open_from(ATTACKER)
    })
    .await;
    for _ in 0..5 {
        open.push(open_ws(gateway.addr, ATTACKER).await.expect("a freed slot"));
    }
    assert_too_many(&open_ws(gateway.addr, ATTACKER).await.unwrap_err());
    drop(open);
    gateway.shutdown().await;
}

#[tokio::test]
async fn websockets_past_max_connections_are_refused_503_until_one_closes() {
    const MAX: usize = 10;
    let mut config = TestGateway::quiet_config();
    config.server.max_connections = MAX;
    config.server.max_connections_per_ip = 0;
    let gateway = TestGateway::start(config).await;
    let app = &gateway.app;
    let mut open = Vec::new();
    for _ in 0..MAX {
        open.push(open_ws(gateway.addr, ATTACKER).await.unwrap());
    }
    assert_eq!(app.connections_open(), MAX);

    // The next ones are answered at once, before any upgrade: 503 with a reason and
    // Retry-After, not a wait in the accept backlog. None takes a slot.
    for from in [ATTACKER, OTHER] {
        let (refusal, took) =
            served_within("a full max_connections", open_ws(gateway.addr, from)).await;
        assert_ws_refused(
            &refusal.expect_err("over max_connections"),
            503,
            "connection_limit",
            "server.max_connections",
        );
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    assert_eq!(app.connections_open(), MAX, "accepted over the cap: 0");
    println!(
        "abuse[ws max_connections]: 0 connections accepted over a cap of {MAX}, each refused 503"
    );

    // One closes: its slot goes to the next client.
    close(open.pop().unwrap()).await;
    until_open("a freed slot", MAX - 1, || app.connections_open()).await;
    let served = open_ws(gateway.addr, OTHER)
        .await
        .expect("served once a slot is free");
    assert_eq!(app.connections_open(), MAX);
    drop((served, open));
    gateway.shutdown().await;
}

#[tokio::test]
async fn keep_alive_and_http2_count_once_per_connection() {
    let gateway = TestGateway::start(TestGateway::quiet_config()).await;
    let app = &gateway.app;
    let mut client = TestClient::connect(gateway.addr).await;
    for _ in 0..5 {
        assert_eq!(client.get("/healthz").await.status, 200);
    }
    assert_eq!(app.connections_open_from(ATTACKER), 1);

    // Three SSE streams at once on one HTTP/2 connection (prior knowledge).
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut streams = Vec::new();
    for topic in ["a", "b", "c"] {
        let request = hyper::Request::get(format!("http://test/sse?topics={topic}"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = within("an SSE response", sender.send_request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        within("the SSE preamble", body.frame())
            .await
            .unwrap()
            .unwrap();
        streams.push(body);
    }
    assert_eq!(app.connections_open_from(ATTACKER), 2);
    assert_eq!(app.connections_open(), 2);
    drop((streams, sender, client));
    until_open("both connections closed", 0, || app.connections_open()).await;
    gateway.shutdown().await;
}

mod webtransport {
    use super::*;
    use std::sync::Arc;
    use streamgate_compare::clients::any_certificate;
    use wtransport::error::ConnectingError;
    use wtransport::tls::Sha256Digest;
    use wtransport::{ClientConfig, Endpoint, VarInt};

    /// The HTTP/3 status the gateway answers a WebTransport CONNECT with, read by a bare
    /// HTTP/3 client (quinn and wtransport's own frame codec): wtransport's client reports
    /// any refusal as `SessionRejected`, without its status.
    async fn connect_status(addr: SocketAddr) -> u16 {
        use wtransport::proto::frame::Frame;
        use wtransport::proto::headers::Headers;
        use wtransport::proto::session::SessionRequest;
        use wtransport::proto::settings::Settings;
        use wtransport::proto::stream_header::StreamHeader;
        use wtransport::quinn;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            // Any certificate: the test reads a status, not a secret.
            .with_custom_certificate_verifier(any_certificate(provider))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        within("an HTTP/3 CONNECT answer", async {
            let connection = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
            let mut opening = Vec::new();
            StreamHeader::new_control().write(&mut opening).unwrap();
            let settings = Settings::builder()
                .qpack_max_table_capacity(VarInt::from_u32(0))
                .qpack_blocked_streams(VarInt::from_u32(0))
                .enable_webtransport()
                .enable_h3_datagrams()
                .webtransport_max_sessions(VarInt::from_u32(1))
                .build();
            settings.generate_frame().write(&mut opening).unwrap();
            let mut control = connection.open_uni().await.unwrap();
            control.write_all(&opening).await.unwrap();
            let mut connect = Vec::new();
            SessionRequest::new(format!("https://{addr}/wt?topics=t"))
                .unwrap()
                .headers()
                .generate_frame()
                .write(&mut connect)
                .unwrap();
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            send.write_all(&connect).await.unwrap();
            let answer = recv.read_to_end(64 * 1024).await.unwrap();
            let frame = Frame::read(&mut &answer[..])
                .unwrap()
                .expect("a HEADERS frame");
            let headers = Headers::with_frame(&frame).unwrap();
            headers.get(":status").expect(":status").parse().unwrap()
        })
        .await
    }

    /// A session on `/wt?topics=t`: the connection, or why it did not open.
    async fn session(
        gateway: &TestGateway,
        digest: &Sha256Digest,
    ) -> Result<wtransport::Connection, ConnectingError> {
        session_from(gateway, digest, ATTACKER).await
    }

    /// [`session`] from the local address `from`.
    async fn session_from(
        gateway: &TestGateway,
        digest: &Sha256Digest,
        from: IpAddr,
    ) -> Result<wtransport::Connection, ConnectingError> {
        let config = ClientConfig::builder()
            .with_bind_address(SocketAddr::new(from, 0))
            .with_server_certificate_hashes([digest.clone()])
            .build();
        let endpoint = Endpoint::client(config).unwrap();
        let url = format!("https://{}/wt?topics=t", gateway.wt_addr.unwrap());
        within("a WebTransport connect", endpoint.connect(url)).await
    }

    #[tokio::test]
    async fn sessions_over_the_per_ip_cap_are_refused_429() {
        const CAP: usize = 4;
        const OVER: usize = 6;
        let mut config = TestGateway::quiet_config();
        config.webtransport.max_sessions_per_ip = CAP;
        let gateway = TestGateway::start(config).await;
        let doc = TestClient::connect(gateway.addr)
            .await
            .get("/wt/cert-hash")
            .await
            .json();
        let digest = cert_hash_digest(&doc);

        let mut open = Vec::new();
        for _ in 0..CAP {
            open.push(session(&gateway, &digest).await.expect("under the cap"));
        }
        let mut accepted_over = 0;
        for _ in 0..OVER {
            match session(&gateway, &digest).await {
                Ok(connection) => {
                    accepted_over += 1;
                    open.push(connection);
                }
                // An error status on the CONNECT (429: `connect_status` below reads it).
                Err(ConnectingError::SessionRejected) => {}
                Err(other) => panic!("expected a refused session request, got {other}"),
            }
        }
        println!(
            "abuse[wt per-IP cap]: {accepted_over} of {OVER} sessions accepted over a cap of {CAP}"
        );
        assert_eq!(accepted_over, 0);
        // What the refusal is on the wire.
        assert_eq!(connect_status(gateway.wt_addr.unwrap()).await, 429);

        // Another address is served; HTTP from the same address is another count.
        let (other, _) = served_within(
            "the per-IP session flood",
            session_from(&gateway, &digest, OTHER),
        )
        .await;
        let other = other.expect("another address has its own count");
        let health = TestClient::connect(gateway.addr)
            .await
            .get("/healthz")
            .await;
        assert_eq!(health.status, 200);
        drop(other);

        // A closed session frees its slot.
        let closing = open.pop().unwrap();
        closing.close(0u32.into(), b"bye");
        drop(closing);
        let reopened = within("a freed session slot", async {
            loop {
                match session(&gateway, &digest).await {
                    Ok(connection) => return connection,
                    Err(ConnectingError::SessionRejected) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        })
        .await;
        drop((reopened, open));
        gateway.shutdown().await;
    }
}
