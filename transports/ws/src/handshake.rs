//! Checking an upgrade request before accepting it (RFC 6455 §4.2.1), as a pure function.
//!
//! hyper-tungstenite computes `Sec-WebSocket-Accept` and performs the upgrade; this module
//! decides *whether* to upgrade, and answers a refused client with a status and a reason it
//! can read.

use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use streamgate_core::header_has_token;
use streamgate_proto::{is_listed, is_same_origin, Origin};

use crate::config::OriginPolicy;

/// A refused handshake: the HTTP answer to send instead of `101 Switching Protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRejection {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable error code for the JSON body.
    pub code: &'static str,
    /// Human reason.
    pub reason: String,
    /// Extra headers (`Sec-WebSocket-Version: 13` with 426, `Allow` with 405).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl HandshakeRejection {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }
}

/// What an accepted handshake agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The subprotocol chosen among the client's offers, if any matched.
    pub subprotocol: Option<String>,
}

/// Checks an upgrade request; see the module documentation.
///
/// # Errors
/// A [`HandshakeRejection`]: 405 for a method other than GET, 400 for a missing or malformed
/// `Upgrade`, `Connection` or `Sec-WebSocket-Key`, 426 (with `Sec-WebSocket-Version: 13`) for
/// another protocol version, 403 for an `Origin` the policy refuses. `scheme` is the one the
/// request came in on (`https` on a TLS connection, else `http`): the gateway's own origin is
/// that scheme with the `Host` header.
pub fn check(
    method: &Method,
    headers: &HeaderMap,
    scheme: &str,
    origins: &OriginPolicy,
    subprotocols: &[String],
) -> Result<Accepted, HandshakeRejection> {
    if method != Method::GET {
        let mut rejection = HandshakeRejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "a WebSocket handshake is a GET request",
        );
        rejection
            .headers
            .push((header::ALLOW, HeaderValue::from_static("GET")));
        return Err(rejection);
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeRejection::new(
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "missing `Upgrade: websocket`: this endpoint only speaks WebSocket",
        ));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeRejection::new(
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "missing `Connection: Upgrade`",
        ));
    }
    match headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
    {
        Some(b"13") => {}
        other => {
            let mut rejection = HandshakeRejection::new(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported_version",
                match other {
                    None => {
                        "missing Sec-WebSocket-Version; only version 13 is supported".to_owned()
                    }
                    Some(v) => format!(
                        "Sec-WebSocket-Version {} is not supported; only 13 is",
                        String::from_utf8_lossy(v)
                    ),
                },
            );
            rejection.headers.push((
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            ));
            return Err(rejection);
        }
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| {
        HandshakeRejection::new(
            StatusCode::BAD_REQUEST,
            "bad_key",
            "missing Sec-WebSocket-Key",
        )
    })?;
    let decoded_len = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map(|k| k.len());
    if decoded_len != Ok(16) {
        return Err(HandshakeRejection::new(
            StatusCode::BAD_REQUEST,
            "bad_key",
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    check_origin(headers, scheme, origins)?;
    Ok(Accepted {
        subprotocol: choose_subprotocol(headers, subprotocols),
    })
}

fn check_origin(
    headers: &HeaderMap,
    scheme: &str,
    policy: &OriginPolicy,
) -> Result<(), HandshakeRejection> {
    let forbidden = |reason: String| {
        Err(HandshakeRejection::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            reason,
        ))
    };
    let Some(origin) = headers.get(header::ORIGIN) else {
        return if policy.allow_missing {
            Ok(())
        } else {
            forbidden("an Origin header is required".to_owned())
        };
    };
    let origin = origin.to_str().unwrap_or("");
    if policy.allow.iter().any(|allowed| allowed == "*") || is_listed(origin, &policy.allow) {
        return Ok(());
    }
    if policy.allow_same_origin {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if is_same_origin(origin, scheme, host) {
            return Ok(());
        }
        if Origin::parse(origin).is_some() && Origin::of_request(scheme, host).is_some() {
            return forbidden(format!(
                "origin {origin:?} is not this gateway's ({scheme}://{host}) nor allowed"
            ));
        }
    }
    forbidden(format!("origin {origin:?} is not allowed"))
}

fn choose_subprotocol(headers: &HeaderMap, supported: &[String]) -> Option<String> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    supported
        .iter()
        .find(|ours| offered.contains(&ours.as_str()))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "gw.example:8080"),
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            headers.insert(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        for (name, value) in extra {
            let name = header::HeaderName::from_bytes(name.as_bytes()).unwrap();
            if value.is_empty() {
                headers.remove(name);
            } else {
                headers.insert(name, HeaderValue::from_str(value).unwrap());
            }
        }
        headers
    }

    fn status(extra: &[(&str, &str)], policy: &OriginPolicy) -> u16 {
        status_on("http", extra, policy)
    }

    fn status_on(scheme: &str, extra: &[(&str, &str)], policy: &OriginPolicy) -> u16 {
        match check(
            &Method::GET,
            &request(extra),
            scheme,
            policy,
            &["streamgate.v1".to_owned()],
        ) {
            Ok(_) => 101,
            Err(r) => r.status.as_u16(),
        }
    }

    #[test]
    fn a_valid_request_is_accepted() {
        assert_eq!(status(&[], &OriginPolicy::default()), 101);
    }

    #[test]
    fn missing_pieces_are_400() {
        let policy = OriginPolicy::default();
        assert_eq!(status(&[("upgrade", "")], &policy), 400);
        assert_eq!(status(&[("upgrade", "h2c")], &policy), 400);
        assert_eq!(status(&[("connection", "keep-alive")], &policy), 400);
        assert_eq!(status(&[("sec-websocket-key", "")], &policy), 400);
        assert_eq!(status(&[("sec-websocket-key", "c2hvcnQ=")], &policy), 400);
    }

    #[test]
    fn other_versions_are_426_with_the_supported_one() {
        let err = check(
            &Method::GET,
            &request(&[("sec-websocket-version", "8")]),
            "http",
            &OriginPolicy::default(),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            err.headers,
            vec![(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13")
            )]
        );
    }

    #[test]
    fn post_is_405() {
        let err = check(
            &Method::POST,
            &request(&[]),
            "http",
            &OriginPolicy::default(),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn origin_policy() {
        let default = OriginPolicy::default();
        assert_eq!(
            status(&[("origin", "http://gw.example:8080")], &default),
            101
        );
        assert_eq!(
            status_on("https", &[("origin", "https://GW.example:8080")], &default),
            101
        );
        // Scheme-exact: the same host and port over the other scheme is another origin.
        assert_eq!(
            status(&[("origin", "https://gw.example:8080")], &default),
            403
        );
        assert_eq!(
            status_on("https", &[("origin", "http://gw.example:8080")], &default),
            403
        );
        // Default ports: `https://gw.example` is `gw.example:443` over TLS.
        let on_443 = |origin: &str| {
            status_on(
                "https",
                &[("host", "gw.example"), ("origin", origin)],
                &default,
            )
        };
        assert_eq!(on_443("https://gw.example"), 101);
        assert_eq!(on_443("https://gw.example:443"), 101);
        assert_eq!(on_443("http://gw.example"), 403);
        assert_eq!(on_443("https://gw.example:8443"), 403);
        assert_eq!(status(&[("origin", "https://evil.example")], &default), 403);
        assert_eq!(status(&[("origin", "null")], &default), 403);
        let listed = OriginPolicy {
            allow: vec!["https://app.example".to_owned()],
            ..OriginPolicy::default()
        };
        assert_eq!(status(&[("origin", "https://app.example")], &listed), 101);
        let strict = OriginPolicy {
            allow_missing: false,
            allow_same_origin: false,
            ..OriginPolicy::default()
        };
        assert_eq!(status(&[], &strict), 403);
        assert_eq!(
            status(&[("origin", "http://gw.example:8080")], &strict),
            403
        );
        let any = OriginPolicy {
            allow: vec!["*".to_owned()],
            ..OriginPolicy::default()
        };
        assert_eq!(status(&[("origin", "https://evil.example")], &any), 101);
    }

    #[test]
    fn subprotocol_negotiation() {
        let ours = ["streamgate.v1".to_owned()];
        let pick = |offer: &str| {
            check(
                &Method::GET,
                &request(&[("sec-websocket-protocol", offer)]),
                "http",
                &OriginPolicy::default(),
                &ours,
            )
            .unwrap()
            .subprotocol
        };
        assert_eq!(
            pick("chat, streamgate.v1"),
            Some("streamgate.v1".to_owned())
        );
        assert_eq!(pick("chat"), None);
    }
}
