//! A plain HTTP/1.1 connection to the gateway, on hyper, for the clients that speak HTTP
//! (SSE, long polling, and the WebTransport client's `GET /wt/cert-hash`).
//!
//! hyper's low-level client is used on purpose: one TCP connection, requests sent one after
//! another on it (HTTP/1.1 keep-alive), nothing hidden. A long-poll client reuses its
//! connection for every poll; an SSE client holds one response open for as long as it lasts.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::Disconnect;
use super::Gateway;

/// Longest a connect, or a short request, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest error or JSON body read into memory.
const MAX_SMALL_BODY: usize = 1 << 20;

/// One HTTP/1.1 connection to the gateway.
#[derive(Debug)]
pub struct Connection {
    authority: String,
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    /// Opens a TCP connection and does the HTTP/1.1 handshake (nothing is sent yet).
    ///
    /// # Errors
    /// [`Disconnect::Retry`]: a gateway that does not answer may be restarting.
    pub async fn open(gateway: &Gateway) -> Result<Self, Disconnect> {
        let authority = gateway.authority();
        let connect = async {
            let tcp = TcpStream::connect(&authority).await?;
            // Events are small and latency matters more than packet count.
            tcp.set_nodelay(true)?;
            hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(std::io::Error::other)
        };
        let (sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| Disconnect::retry(format!("connecting to {authority} timed out")))?
            .map_err(|e| Disconnect::retry(format!("cannot connect to {authority}: {e}")))?;
        // hyper's connection future does the actual I/O; it ends when the connection does.
        tokio::spawn(connection);
        Ok(Self { authority, sender })
    }

    /// Whether the connection is gone, for example because the last response said
    /// `Connection: close` (the gateway does when it shuts down).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `GET path_and_query` with `headers` and returns the response head; the body is
    /// read by the caller, as it arrives.
    ///
    /// # Errors
    /// [`Disconnect::Retry`] if the connection failed or no response head came within
    /// `timeout`.
    pub async fn get(
        &mut self,
        path_and_query: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Response<Incoming>, Disconnect> {
        let mut request = Request::get(path_and_query).header("host", &self.authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| Disconnect::Fatal(format!("cannot build the request: {e}")))?;
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|_| "the gateway closed the connection".to_owned())?;
            self.sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Disconnect::retry(format!("no answer to GET {path_and_query}")))?
            .map_err(|e| Disconnect::retry(format!("GET {path_and_query}: {e}")))
    }
}

/// Reads a whole (small) body and parses it as JSON.
///
/// # Errors
/// [`Disconnect::Retry`] if the body could not be read or is not JSON.
pub async fn read_json(
    response: Response<Incoming>,
    timeout: Duration,
) -> Result<Value, Disconnect> {
    let body = read_body(response, timeout).await?;
    serde_json::from_slice(&body).map_err(|e| {
        Disconnect::retry(format!(
            "the gateway answered something that is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        ))
    })
}

/// Reads a whole answer body (at most 1 MiB), within `timeout`.
///
/// # Errors
/// A retryable [`Disconnect`] if the body breaks off, is too large or comes too slowly.
pub async fn read_body(
    response: Response<Incoming>,
    timeout: Duration,
) -> Result<Bytes, Disconnect> {
    let collect = Limited::new(response.into_body(), MAX_SMALL_BODY).collect();
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) => Err(Disconnect::retry(format!("reading the answer: {e}"))),
        Err(_) => Err(Disconnect::retry(
            "the answer's body did not arrive in time",
        )),
    }
}

/// Turns an error response into the right [`Disconnect`]. The gateway's error bodies are
/// `{"error":{"code":…,"reason":…}}` (`docs/PROTOCOL.md` §6).
///
/// A 4xx means the request itself is wrong (`bad_topic`, `bad_cursor`, `cursor_ahead`, …),
/// so repeating it cannot help: [`Disconnect::Fatal`]. The exception is `429 topic_limit`,
/// which may clear up. A 5xx (`shutting_down`, `bus_unavailable`) is temporary: retry.
pub async fn refusal(response: Response<Incoming>) -> Disconnect {
    let status = response.status();
    let body = read_body(response, CONNECT_TIMEOUT)
        .await
        .unwrap_or_default();
    let reason = describe_error(status, &body);
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        Disconnect::Fatal(reason)
    } else {
        Disconnect::Retry(reason)
    }
}

/// `HTTP 400: cursor_ahead: <reason>` from an error response.
pub fn describe_error(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().map(|v| &v["error"]) {
        Some(Value::Object(error)) => format!(
            "HTTP {}: {}: {}",
            status.as_u16(),
            error.get("code").and_then(Value::as_str).unwrap_or("?"),
            error.get("reason").and_then(Value::as_str).unwrap_or("")
        ),
        _ => format!(
            "HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(body).trim()
        ),
    }
}
