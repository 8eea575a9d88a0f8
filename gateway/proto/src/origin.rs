//! Who a browser request comes from: origins (RFC 6454), the same-origin check of the
//! WebSocket handshake, and the CSRF rule for requests authenticated by a cookie.
//!
//! An origin is a (scheme, host, port) triple; two origins are the same only when all three
//! are. `http://gw.example` and `https://gw.example` are different origins: a page served over
//! plain HTTP (which anyone on the path can rewrite) must not act as the HTTPS site.

use http::uri::{Authority, Uri};

/// A parsed origin: lowercase scheme and host, and the port with the scheme's default filled
/// in (`https://a.example` and `https://a.example:443` are the same origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses an `Origin` header value (`scheme://host[:port]`, no path). `None` for `null`
    /// (an opaque origin, which is never the same as any other), for a scheme without a known
    /// default port and no port given, and for anything malformed.
    pub fn parse(value: &str) -> Option<Self> {
        let uri: Uri = value.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        // An origin has no path, query or user info; `Uri` shows an empty path as "/".
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() || value.trim().ends_with('/') {
            return None;
        }
        Self::from_parts(&scheme, authority)
    }

    /// The origin a request was made to: the scheme it came in on (`http` or `https`, as the
    /// server knows from the connection) and its `Host` header (or HTTP/2 `:authority`).
    pub fn of_request(scheme: &str, host: &str) -> Option<Self> {
        let authority: Authority = host.trim().parse().ok()?;
        Self::from_parts(&scheme.to_ascii_lowercase(), &authority)
    }

    fn from_parts(scheme: &str, authority: &Authority) -> Option<Self> {
        if authority.as_str().contains('@') {
            return None;
        }
        let port = match authority.port_u16() {
            Some(port) => port,
            None => default_port(scheme)?,
        };
        Some(Self {
            scheme: scheme.to_owned(),
            host: authority.host().to_ascii_lowercase(),
            port,
        })
    }
}

/// The port a scheme implies when none is written (RFC 6454 §4): 80 for `http`/`ws`, 443 for
/// `https`/`wss`.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Whether the `Origin` header value names the origin the request was made to (`scheme` the
/// request came in on, `host` its `Host` header): scheme, host and port all equal, default
/// ports filled in.
pub fn is_same_origin(origin: &str, scheme: &str, host: &str) -> bool {
    match (Origin::parse(origin), Origin::of_request(scheme, host)) {
        (Some(origin), Some(ours)) => origin == ours,
        _ => false,
    }
}

/// Whether `origin` is one of `listed` (exact origins as browsers send them; compared as
/// origins, so case and a written default port do not matter). `"*"` entries are ignored
/// here: a wildcard never vouches for a request that carries credentials.
pub fn is_listed(origin: &str, listed: &[String]) -> bool {
    let Some(origin) = Origin::parse(origin) else {
        return false;
    };
    listed
        .iter()
        .filter(|entry| entry.as_str() != "*")
        .filter_map(|entry| Origin::parse(entry))
        .any(|entry| entry == origin)
}

/// The request facts the CSRF rule looks at.
#[derive(Debug, Clone, Copy)]
pub struct CsrfRequest<'a> {
    /// The `Origin` header, if any.
    pub origin: Option<&'a str>,
    /// The `Sec-Fetch-Site` header, if any (Fetch Metadata).
    pub sec_fetch_site: Option<&'a str>,
    /// The scheme the request came in on (`http`/`https`).
    pub scheme: &'a str,
    /// The `Host` header (or `:authority`), if any.
    pub host: Option<&'a str>,
}

/// The CSRF rule for a state-changing request (`POST`) whose credential is a cookie, which a
/// browser attaches to requests any site can make: it passes only when the browser says the
/// request comes from the gateway's own pages (`Sec-Fetch-Site: same-origin`, or `none`: typed
/// by the user), or its `Origin` is the gateway's own (scheme-exact) or one of `trusted`
/// (origins the operator listed). A request with neither header is refused too: every browser
/// that sends cookies cross-site sends one of them on a `POST`, so a request without them is
/// not from a browser, and such a client can send its token in `Authorization` instead.
///
/// Requests whose token came in a header or the query are not ambient (a page cannot make
/// the browser add them) and need no such check.
///
/// # Errors
/// The reason for a `403`.
pub fn check_cookie_request(request: CsrfRequest<'_>, trusted: &[String]) -> Result<(), String> {
    if let Some(site) = request.sec_fetch_site {
        let site = site.trim();
        if site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none") {
            return Ok(());
        }
    }
    match request.origin {
        Some(origin) => {
            let same = request
                .host
                .is_some_and(|host| is_same_origin(origin, request.scheme, host));
            if same || is_listed(origin, trusted) {
                Ok(())
            } else {
                Err(format!(
                    "cross-site request from {origin:?} authenticated by the token cookie; \
                     send the token in Authorization, or list the origin in http.cors_origins \
                     or ws.origins.allow"
                ))
            }
        }
        None => Err(match request.sec_fetch_site {
            Some(site) => format!(
                "request from another site (Sec-Fetch-Site: {site}) authenticated by the \
                 token cookie"
            ),
            None => "a request authenticated by the token cookie must carry Origin or \
                     Sec-Fetch-Site; send the token in Authorization instead"
                .to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let o = |s| Origin::parse(s);
        assert_eq!(o("https://a.example"), o("https://A.Example:443"));
        assert_eq!(o("http://a.example"), o("http://a.example:80"));
        assert_ne!(o("http://a.example"), o("https://a.example"));
        assert_ne!(o("https://a.example"), o("https://a.example:8443"));
        assert_eq!(
            o("http://[::1]:8080"),
            Origin::of_request("http", "[::1]:8080")
        );
        for bad in [
            "null",
            "",
            "a.example",
            "https://",
            "https://a.example/",
            "https://a.example/path",
            "https://a.example?x",
            "https://u@a.example",
            "ftp://a.example",
        ] {
            assert_eq!(o(bad), None, "{bad:?}");
        }
        assert!(o("ftp://a.example:21").is_some());
    }

    #[test]
    fn same_origin_is_scheme_exact() {
        assert!(is_same_origin("https://gw.example", "https", "gw.example"));
        assert!(is_same_origin(
            "https://gw.example",
            "https",
            "gw.example:443"
        ));
        assert!(is_same_origin(
            "https://gw.example:443",
            "https",
            "GW.example"
        ));
        assert!(is_same_origin("http://gw.example", "http", "gw.example:80"));
        assert!(is_same_origin("http://gw:8080", "http", "gw:8080"));
        // The scheme the request came in on decides.
        assert!(!is_same_origin("http://gw.example", "https", "gw.example"));
        assert!(!is_same_origin("https://gw.example", "http", "gw.example"));
        assert!(!is_same_origin("http://gw:8443", "https", "gw:8443"));
        // Ports and hosts.
        assert!(!is_same_origin(
            "https://gw.example",
            "https",
            "gw.example:8443"
        ));
        assert!(!is_same_origin(
            "https://gw.example",
            "https",
            "gw.example.evil"
        ));
        assert!(!is_same_origin(
            "https://evil.gw.example",
            "https",
            "gw.example"
        ));
        assert!(!is_same_origin("null", "https", "gw.example"));
        assert!(!is_same_origin("https://gw.example", "https", ""));
    }

    #[test]
    fn listed_origins() {
        let list = vec!["https://app.example".to_owned(), "*".to_owned()];
        assert!(is_listed("https://app.example", &list));
        assert!(is_listed("https://APP.example:443", &list));
        assert!(!is_listed("http://app.example", &list));
        assert!(
            !is_listed("https://other.example", &list),
            "* is not a listing"
        );
        assert!(!is_listed("null", &list));
    }

    #[test]
    fn csrf_rule() {
        let trusted = vec!["https://app.example".to_owned()];
        let check = |origin, site, scheme| {
            check_cookie_request(
                CsrfRequest {
                    origin,
                    sec_fetch_site: site,
                    scheme,
                    host: Some("gw.example"),
                },
                &trusted,
            )
        };
        assert!(check(Some("https://gw.example"), None, "https").is_ok());
        assert!(check(None, Some("same-origin"), "https").is_ok());
        assert!(check(None, Some("none"), "https").is_ok());
        assert!(check(Some("https://app.example"), Some("cross-site"), "https").is_ok());
        // Refused: another site, the same host over the other scheme, no header at all.
        let err = check(Some("https://evil.example"), Some("cross-site"), "https").unwrap_err();
        assert!(err.contains("evil.example"), "{err}");
        assert!(check(Some("http://gw.example"), None, "https").is_err());
        assert!(check(None, Some("same-site"), "https").is_err());
        assert!(check(None, Some("cross-site"), "https").is_err());
        assert!(check(Some("null"), None, "https").is_err());
        let err = check(None, None, "https").unwrap_err();
        assert!(err.contains("Authorization"), "{err}");
    }
}
