//! HTTP plumbing shared by the gateway's handlers: the body type, JSON responses and the
//! `Host` rule. Refusals are [`streamgate_core::Rejection`]s.

use http::{header, HeaderValue, Response, StatusCode};

use streamgate_core::full_body as full;
pub use streamgate_core::Body;

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
    Some(
        streamgate_core::Rejection::new("bad_host", reason)
            .close_connection()
            .into_response(),
    )
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
