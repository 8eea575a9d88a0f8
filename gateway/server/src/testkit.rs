//! A gateway on an ephemeral port, for the integration tests of this crate and of the
//! transports. Not part of the public API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::GatewayConfig;
use crate::{App, Gateway, ShutdownOutcome};

/// A gateway running in this process on 127.0.0.1.
#[derive(Debug)]
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it listens for HTTPS, when TLS is on.
    pub tls_addr: Option<SocketAddr>,
    /// Where it listens for WebTransport (UDP), when that is on.
    pub wt_addr: Option<SocketAddr>,
    /// Where its internal listener is, when `server.internal_listen` was set.
    pub internal_addr: Option<SocketAddr>,
    /// Its shared state (bus, shutdown token).
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<ShutdownOutcome>,
}

impl TestGateway {
    /// Starts a gateway on 127.0.0.1:0 with `config` (its listen addresses are replaced; an
    /// internal listener, when `server.internal_listen` is set, goes to 127.0.0.1:0 too).
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub async fn start(mut config: GatewayConfig) -> Self {
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.tls.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        if config.server.internal_listen.is_some() {
            config.server.internal_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        #[cfg(feature = "webtransport")]
        {
            config.webtransport.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        let gateway = Gateway::bind(config).await.expect("bind 127.0.0.1:0");
        let addr = gateway.local_addr().expect("local address");
        let tls_addr = gateway.tls_local_addr();
        let internal_addr = gateway.internal_local_addr();
        #[cfg(feature = "webtransport")]
        let wt_addr = gateway.wt_local_addr();
        #[cfg(not(feature = "webtransport"))]
        let wt_addr = None;
        let app = Arc::clone(gateway.app());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(gateway.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            tls_addr,
            wt_addr,
            internal_addr,
            app,
            stop: Some(stop),
            handle,
        }
    }

    /// A configuration without the demo source or TLS.
    pub fn quiet_config() -> GatewayConfig {
        let mut config = GatewayConfig::default();
        config.demo.enabled = false;
        config.tls.enabled = false;
        config
    }

    /// Publishes one event straight on the bus (no HTTP, no client limits).
    ///
    /// # Panics
    /// If `topic` is not a valid topic name, or the bus refuses the event or does not answer
    /// within 10 s.
    pub async fn publish(
        &self,
        topic: &str,
        content_type: streamgate_core::ContentType,
        payload: impl Into<Bytes>,
    ) -> Arc<streamgate_core::Event> {
        let topic = streamgate_core::Topic::new(topic).expect("valid topic");
        let publish = self.app.bus.publish(topic, content_type, payload.into());
        tokio::time::timeout(Duration::from_secs(10), publish)
            .await
            .expect("publish within 10 s")
            .expect("publish accepted")
    }

    /// Triggers shutdown and returns how it ended.
    ///
    /// # Panics
    /// If the gateway task panicked.
    pub async fn shutdown(mut self) -> ShutdownOutcome {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle).await.expect("gateway task")
    }
}

/// A response read to its end.
#[derive(Debug)]
pub struct TestResponse {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl TestResponse {
    /// The body as JSON.
    ///
    /// # Panics
    /// If the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 connection (hyper's client), reused for every request sent through it.
#[derive(Debug)]
pub struct TestClient {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

/// Longest a test request may take before the test fails.
const REQUEST_BOUND: Duration = Duration::from_secs(80);

impl TestClient {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// If the connection or the HTTP handshake fails.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        Self::handshake(addr, stream).await
    }

    /// Connects to `addr` from the local address `from` (another loopback address such as
    /// 127.0.0.2 is another client IP to the gateway).
    ///
    /// # Panics
    /// If the address cannot be bound, or the connection or the HTTP handshake fails.
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Self {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the source address");
        let stream = socket.connect(addr).await.expect("connect");
        Self::handshake(addr, stream).await
    }

    async fn handshake(addr: SocketAddr, stream: tokio::net::TcpStream) -> Self {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Self { addr, sender }
    }

    /// Sends a request with extra headers and reads the whole response.
    ///
    /// # Panics
    /// If the request fails or takes longer than 80 s.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        self.sender.ready().await.expect("connection ready");
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body.into())).expect("valid request");
        let response = tokio::time::timeout(REQUEST_BOUND, self.sender.send_request(request))
            .await
            .expect("response within the bound")
            .expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// Sends a request and reads the whole response.
    ///
    /// # Panics
    /// See [`TestClient::request`].
    pub async fn send(&mut self, method: &str, path: &str, body: impl Into<Bytes>) -> TestResponse {
        self.request(method, path, &[], body).await
    }

    /// `GET path`.
    ///
    /// # Panics
    /// See [`TestClient::request`].
    pub async fn get(&mut self, path: &str) -> TestResponse {
        self.send("GET", path, Bytes::new()).await
    }
}
