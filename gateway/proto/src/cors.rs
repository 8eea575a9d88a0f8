//! CORS (the Fetch standard's cross-origin resource sharing) for the gateway's HTTP routes,
//! as pure decisions: which headers a response to a cross-origin request gets, and how a
//! preflight is answered. The gateway applies them in one place.
//!
//! The allow-list holds exact origins (`https://app.example`) and/or `"*"`. A listed origin
//! is echoed back with `Access-Control-Allow-Credentials: true`, so its pages can send the
//! token cookie; `"*"` lets any page read responses but never with credentials (browsers
//! refuse `*` with credentials anyway, and a wildcard must not vouch for a cookie).

use http::header::{self, HeaderName, HeaderValue};
use http::Method;

use crate::origin::{is_listed, Origin};

/// Methods a preflight may ask for.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// Request headers a cross-origin page may send: the token (`Authorization`), a publish's
/// `Content-Type`, and SSE's `Last-Event-ID` (a `fetch`-based EventSource sets it itself).
pub const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// Response headers a cross-origin page may read besides the CORS-safelisted ones.
pub const EXPOSED_HEADERS: &str = "Retry-After";

/// The gateway's CORS allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    listed: Vec<String>,
    any: bool,
    max_age: u32,
}

/// How a preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// `204 No Content` with these headers.
    Allowed(Vec<(HeaderName, HeaderValue)>),
    /// `403` with this reason, and no CORS headers (the browser then blocks the request).
    Refused(String),
}

impl CorsPolicy {
    /// A policy from the configured list (`"*"` or exact origins); `max_age` is how long a
    /// browser may cache a preflight's answer, in seconds.
    pub fn new(origins: &[String], max_age: u32) -> Self {
        Self {
            listed: origins.iter().filter(|o| *o != "*").cloned().collect(),
            any: origins.iter().any(|o| o == "*"),
            max_age,
        }
    }

    /// Whether any origin is allowed at all (an empty list sends no CORS headers).
    pub fn is_enabled(&self) -> bool {
        self.any || !self.listed.is_empty()
    }

    /// The origins listed explicitly (trusted with credentials).
    pub fn listed(&self) -> &[String] {
        &self.listed
    }

    /// Checks every entry is an origin a browser could send; the reason names the first that
    /// is not.
    ///
    /// # Errors
    /// A description of the bad entry.
    pub fn validate(origins: &[String]) -> Result<(), String> {
        match origins
            .iter()
            .find(|o| *o != "*" && Origin::parse(o).is_none())
        {
            Some(bad) => Err(format!(
                "{bad:?} is not an origin (scheme://host[:port], no path) nor \"*\""
            )),
            None => Ok(()),
        }
    }

    /// The headers of a response to a request carrying `Origin: origin`, or none when the
    /// origin is not allowed (the browser then hides the response from the page).
    pub fn response_headers(&self, origin: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        if !self.is_enabled() {
            return headers;
        }
        let Ok(value) = HeaderValue::from_str(origin) else {
            return headers;
        };
        // The answer depends on the request's Origin whenever some origins are named.
        if !self.listed.is_empty() {
            headers.push((header::VARY, HeaderValue::from_static("Origin")));
        }
        if is_listed(origin, &self.listed) {
            headers.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, value));
            headers.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        } else if self.any {
            headers.push((
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ));
        } else {
            return headers;
        }
        headers.push((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        ));
        headers
    }

    /// The answer to a preflight from `origin` asking for `method`.
    pub fn preflight(&self, origin: &str, method: &str) -> Preflight {
        let allowed_method = [Method::GET, Method::HEAD, Method::POST]
            .iter()
            .any(|m| m.as_str() == method.trim());
        if !allowed_method {
            return Preflight::Refused(format!(
                "method {method:?} is not allowed cross-origin (allowed: {ALLOWED_METHODS})"
            ));
        }
        let mut headers = self.response_headers(origin);
        if !headers
            .iter()
            .any(|(name, _)| name == header::ACCESS_CONTROL_ALLOW_ORIGIN)
        {
            return Preflight::Refused(format!("origin {origin:?} is not in http.cors_origins"));
        }
        headers.retain(|(name, _)| name != header::ACCESS_CONTROL_EXPOSE_HEADERS);
        headers.push((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        ));
        headers.push((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        ));
        headers.push((
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age),
        ));
        Preflight::Allowed(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    fn policy(origins: &[&str]) -> CorsPolicy {
        let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
        CorsPolicy::new(&origins, 600)
    }

    #[test]
    fn empty_list_sends_nothing() {
        let none = policy(&[]);
        assert!(!none.is_enabled());
        assert!(none.response_headers("https://app.example").is_empty());
        assert!(matches!(
            none.preflight("https://app.example", "GET"),
            Preflight::Refused(_)
        ));
    }

    #[test]
    fn listed_origin_gets_credentials() {
        let p = policy(&["https://app.example"]);
        let h = p.response_headers("https://app.example");
        assert_eq!(
            get(&h, &header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example")
        );
        assert_eq!(
            get(&h, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        assert_eq!(get(&h, &header::VARY), Some("Origin"));
        // Another origin, or the same host over http: no allow header (Vary still).
        for other in ["https://evil.example", "http://app.example", "null"] {
            let h = p.response_headers(other);
            assert_eq!(
                get(&h, &header::ACCESS_CONTROL_ALLOW_ORIGIN),
                None,
                "{other}"
            );
            assert_eq!(get(&h, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        }
    }

    #[test]
    fn wildcard_never_with_credentials() {
        let p = policy(&["*"]);
        let h = p.response_headers("https://anyone.example");
        assert_eq!(get(&h, &header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&h, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert_eq!(get(&h, &header::VARY), None);
        // Listed and wildcard together: the listed one is echoed with credentials.
        let both = policy(&["*", "https://app.example"]);
        let h = both.response_headers("https://app.example");
        assert_eq!(
            get(&h, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        let h = both.response_headers("https://other.example");
        assert_eq!(get(&h, &header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&h, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    }

    #[test]
    fn preflight() {
        let p = policy(&["https://app.example"]);
        let Preflight::Allowed(h) = p.preflight("https://app.example", "POST") else {
            panic!("refused");
        };
        assert_eq!(get(&h, &header::ACCESS_CONTROL_MAX_AGE), Some("600"));
        let allowed = get(&h, &header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap();
        for name in ["Last-Event-ID", "Authorization", "Content-Type"] {
            assert!(allowed.contains(name), "{allowed}");
        }
        assert!(get(&h, &header::ACCESS_CONTROL_ALLOW_METHODS)
            .unwrap()
            .contains("POST"));
        assert_eq!(
            get(&h, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        assert!(matches!(
            p.preflight("https://evil.example", "GET"),
            Preflight::Refused(r) if r.contains("evil.example")
        ));
        assert!(matches!(
            p.preflight("https://app.example", "DELETE"),
            Preflight::Refused(r) if r.contains("DELETE")
        ));
    }

    #[test]
    fn validation() {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(CorsPolicy::validate(&list(&["*", "https://a.example:8443"])).is_ok());
        assert!(CorsPolicy::validate(&list(&["https://a.example/"])).is_err());
        assert!(CorsPolicy::validate(&list(&["a.example"])).is_err());
    }
}
