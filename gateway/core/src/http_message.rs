//! The pieces of an HTTP message the gateway and its HTTP transports share: the body type,
//! a bounded body read (and the timeout it can fail with), and header tokens.

use std::convert::Infallible;
use std::fmt;

use bytes::Bytes;
use http::header;
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// Errors a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response body type between the gateway and its transports.
pub type Body = BoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Whether `headers` contain a comma-separated token equal to `token`, case-insensitively,
/// in any instance of header `name` (`Connection: keep-alive, close`, `Upgrade: websocket`).
pub fn header_has_token(headers: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// A whole request body, or `None` as soon as it is over `limit` bytes.
///
/// Frame by frame rather than with `http_body_util::Limited`: inside an `async fn`, rustc
/// cannot prove `Limited`'s conversion of [`BoxError`] for every lifetime, and the caller's
/// future would not be `Send`.
pub async fn read_body_limited(mut body: Body, limit: usize) -> Result<Option<Bytes>, BoxError> {
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if collected.len() + data.len() > limit {
                return Ok(None);
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Some(collected.freeze()))
}

/// The error a request body fails with when it is not complete within the gateway's
/// `server.body_read_timeout` (counted from the end of the request head): a body that never
/// arrives must not hold its connection and its handler forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyReadTimeout {
    /// The time the body had.
    pub timeout: std::time::Duration,
}

impl fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body was not complete within {:?} (server.body_read_timeout)",
            self.timeout
        )
    }
}

impl std::error::Error for BodyReadTimeout {}
