//! Helpers shared by the gateway's integration tests.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;

pub use streamgate::testkit::{TestClient, TestGateway, TestResponse as Response};

/// One request on a fresh connection; returns status, headers and body.
pub async fn send(
    gateway: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    TestClient::connect(gateway.addr)
        .await
        .request(method, path, headers, body)
        .await
}
