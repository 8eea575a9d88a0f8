//! HTTP plumbing shared by the gateway's handlers: the body type, JSON responses and typed
//! rejections.

use http::{header, HeaderValue, Response, StatusCode};

pub use streamgate_core::Body;
use streamgate_core::{error_response, full_body as full};

/// A `200`-style JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A request the gateway refuses, with the status and reason the client gets (logged once,
/// at TRACE, to `streamgate::rejection`, by [`error_response`]).
#[derive(Debug)]
pub struct Rejection {
    status: StatusCode,
    code: &'static str,
    reason: String,
    allow: Option<&'static str>,
    retry_after: Option<u64>,
}

impl Rejection {
    /// A rejection with a machine-readable `code` and a human `reason`.
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
            allow: None,
            retry_after: None,
        }
    }

    /// `404 Not Found`.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )
    }

    /// `405 Method Not Allowed`, with the `Allow` header.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut rejection = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allow}"),
        );
        rejection.allow = Some(allow);
        rejection
    }

    /// `429 Too Many Requests` `rate_limited`, with `Retry-After: <seconds>`.
    pub fn rate_limited(reason: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::too_many(crate::limits::RATE_LIMITED, reason, retry_after_secs)
    }

    /// `429 Too Many Requests` with `code` and `Retry-After: <seconds>`.
    pub fn too_many(code: &'static str, reason: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut rejection = Self::new(StatusCode::TOO_MANY_REQUESTS, code, reason);
        rejection.retry_after = Some(retry_after_secs);
        rejection
    }

    /// Adds `Retry-After: <seconds>` to the answer.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Turns the rejection into its response: `{"error":{"code":…,"reason":…}}`.
    pub fn into_response(self) -> Response<Body> {
        let mut response = error_response(self.status, self.code, &self.reason);
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl Rejection {
    /// Like [`Rejection::into_response`], with the body a client-message `error`
    /// (`{"type":"error","code":…,"reason":…}`, `docs/PROTOCOL.md` §3), as a transport's own
    /// replies to client messages are (`POST /poll`).
    pub fn into_client_message_response(self) -> Response<Body> {
        let error = streamgate_proto::ProtocolError::new(self.code, self.reason.clone());
        let mut response = self.into_response();
        *response.body_mut() = full(streamgate_proto::encode_error(&error, None));
        response
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.reason)
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`; the refusal of one with none
/// or several, `400` `bad_host` (hyper does not check it), with `connection: close`. HTTP/2
/// names the authority in `:authority`, and HTTP/1.0 needs no `Host`: both pass.
pub(crate) fn host_refusal<B>(request: &http::Request<B>) -> Option<Response<Body>> {
    if request.version() != http::Version::HTTP_11 {
        return None;
    }
    let reason = match request.headers().get_all(header::HOST).iter().count() {
        1 => return None,
        0 => "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)".to_owned(),
        n => format!("an HTTP/1.1 request has one Host header, this one has {n} (RFC 9112 §3.2)"),
    };
    let mut response = Rejection::new(StatusCode::BAD_REQUEST, "bad_host", reason).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: http::Version, hosts: &[&'static str]) -> http::Request<()> {
        let mut request = http::Request::new(());
        *request.version_mut() = version;
        for host in hosts {
            request
                .headers_mut()
                .append(header::HOST, HeaderValue::from_static(host));
        }
        request
    }

    #[test]
    fn http_1_1_needs_exactly_one_host() {
        assert!(host_refusal(&request(http::Version::HTTP_11, &["a"])).is_none());
        for hosts in [&[][..], &["a", "a"], &["a", "b", "c"]] {
            let refusal = host_refusal(&request(http::Version::HTTP_11, hosts)).unwrap();
            assert_eq!(refusal.status(), StatusCode::BAD_REQUEST, "{hosts:?}");
            assert_eq!(refusal.headers()[header::CONNECTION], "close");
        }
        // HTTP/2 has :authority; HTTP/1.0 predates Host.
        assert!(host_refusal(&request(http::Version::HTTP_2, &[])).is_none());
        assert!(host_refusal(&request(http::Version::HTTP_10, &[])).is_none());
    }
}
