//! Helpers shared by the gateway's integration tests: start a gateway on an ephemeral port
//! and talk HTTP/1.1 to it with hyper's client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use streamgate::config::GatewayConfig;
use streamgate::{App, Gateway, ShutdownOutcome};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<ShutdownOutcome>,
}

impl TestGateway {
    /// Starts a gateway on 127.0.0.1:0 with `config` (its listen address is replaced).
    pub async fn start(mut config: GatewayConfig) -> Self {
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        let gateway = Gateway::bind(config).await.unwrap();
        let addr = gateway.local_addr().unwrap();
        let app = Arc::clone(gateway.app());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(gateway.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            app,
            stop: Some(stop),
            handle,
        }
    }

    /// Triggers shutdown and returns how it ended.
    pub async fn shutdown(mut self) -> ShutdownOutcome {
        let _ = self.stop.take().unwrap().send(());
        self.handle.await.unwrap()
    }

    /// One request on a fresh connection; returns status, headers and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        request(self.addr, method, path, headers, body.into()).await
    }
}

pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Response {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Response {
        status,
        headers,
        body,
    }
}
