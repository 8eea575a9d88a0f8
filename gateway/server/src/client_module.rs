//! `GET /client/streamgate.js`: the browser client module (`clients/js/streamgate.js`),
//! embedded in the binary at build time, so any page can
//! `import { subscribe } from "https://gateway.example/client/streamgate.js"` from the
//! gateway it talks to, and the module always matches that gateway's version.
//!
//! Served whatever `[lab]` and `[auth]` say (it is public code, the same for everyone), with:
//!
//! - `Content-Type: text/javascript; charset=utf-8` and `X-Content-Type-Options: nosniff`
//!   (browsers refuse a module script served with any other type);
//! - a strong `ETag`, the first 128 bits of the file's SHA-256 computed once, and `304 Not
//!   Modified` for a matching `If-None-Match`;
//! - `Cache-Control: public, max-age=300`: the URL carries no version and the bytes change only
//!   with the gateway binary, so a browser (or a CDN) reuses the module for 5 minutes without
//!   asking, then revalidates with the `ETag` (a bodiless `304` while the gateway is the
//!   same). Five minutes bounds how long a page may keep an older module after an upgrade; the
//!   wire protocol it speaks (`streamgate.v1`) does not change under it.
//! - `Access-Control-Allow-Origin: *`: a module script is fetched in CORS mode, so a page on
//!   another origin can import it only with this header. The response carries nothing
//!   private, and a module import sends no cookies cross-origin unless the page asks for
//!   `crossorigin="use-credentials"` (which `*` then refuses, as it must: docs/SECURITY.md).
//!   The route is therefore outside the `http.cors_origins` layer ([`crate::App::handle`]),
//!   whose listed origins would add a second, credentialed `Access-Control-Allow-Origin`.

use std::sync::LazyLock;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use streamgate_core::full_body;

use crate::http::Body;
use streamgate_core::Rejection;

/// The route.
pub(crate) const PATH: &str = "/client/streamgate.js";

/// The module, as it was when the gateway was built.
const SOURCE: &str = include_str!("../../../clients/js/streamgate.js");

const CONTENT_TYPE: &str = "text/javascript; charset=utf-8";
const CACHE_CONTROL: &str = "public, max-age=300";

/// `"<32 hex digits>"`: the first 16 bytes of the SHA-256 of [`SOURCE`].
static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = Sha256::digest(SOURCE.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex digits are a valid header value")
});

/// Serves [`PATH`]: `GET` and `HEAD`, `405` otherwise.
pub(crate) fn handle<B>(request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Rejection::method_not_allowed("GET, HEAD").into_response();
    }
    let fresh = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|value| matches_etag(value.as_bytes(), ETAG.as_bytes()));
    let mut response = if fresh {
        let mut response = Response::new(full_body(""));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        // For HEAD, hyper sends the head alone, with this body's length.
        let mut response = Response::new(full_body(SOURCE));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, ETAG.clone());
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether an `If-None-Match` value (`*`, or a list of entity tags) matches `etag`, by the
/// weak comparison RFC 9110 §13.1.2 prescribes for it (`W/"x"` matches `"x"`).
fn matches_etag(value: &[u8], etag: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let Ok(etag) = std::str::from_utf8(etag) else {
        return false;
    };
    value.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag.trim_start_matches("W/")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let etag = br#""abc""#;
        for value in [
            r#""abc""#,
            r#"W/"abc""#,
            "*",
            r#""zzz", "abc""#,
            r#""zzz",W/"abc""#,
        ] {
            assert!(matches_etag(value.as_bytes(), etag), "{value}");
        }
        for value in [r#""abd""#, "abc", r#""abc"x"#, "", r#""ab", "c""#] {
            assert!(!matches_etag(value.as_bytes(), etag), "{value}");
        }
    }

    #[test]
    fn etag_is_quoted_hex_of_the_embedded_bytes() {
        let etag = ETAG.to_str().unwrap();
        assert_eq!(etag.len(), 34, "{etag}");
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert!(etag[1..33].bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
