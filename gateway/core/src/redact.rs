//! Credentials out of the lab's recordings.
//!
//! A tap records request heads and session URLs, and a recording is read later by whoever
//! holds its tap id. Whatever authenticates a client (a header, a query parameter, a token
//! smuggled into `Sec-WebSocket-Protocol`) is replaced before it is stored, so a recording
//! never holds one: `[masked, N bytes]` in a header, `[masked]` in a query. The marker is
//! plain text on purpose: the inspector shows it as the header's value and explains it.

use std::borrow::Cow;

/// What replaces a credential in a query string.
pub const MASKED: &str = "[masked]";

/// Words that make a header or a query parameter a credential when its name contains them.
const CREDENTIAL_WORDS: [&str; 5] = ["token", "secret", "key", "auth", "password"];

/// Query parameters that are credentials although their names are short or generic.
const CREDENTIAL_PARAMS: [&str; 9] = [
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "password",
    "auth",
    "jwt",
];

/// Whether `haystack` contains `needle`, ASCII case-insensitively.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether a header carries credentials, which a recording must not keep: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, `Set-Cookie`, and every header whose name contains
/// `token`, `secret`, `key`, `auth` or `password` (`X-Api-Key`, `X-Auth-Token`, …).
///
/// Three such names are not credentials and stay readable, because the lab explains them:
/// `Sec-WebSocket-Key` is a random nonce that only proves the server read the handshake
/// (RFC 6455 §10.3), and `WWW-Authenticate` / `Proxy-Authenticate` are the server's
/// challenge (which scheme it wants), not an answer to it.
pub fn is_credential_header(name: &str) -> bool {
    const NOT_CREDENTIALS: [&str; 3] = [
        "sec-websocket-key",
        "www-authenticate",
        "proxy-authenticate",
    ];
    if NOT_CREDENTIALS
        .iter()
        .any(|safe| name.eq_ignore_ascii_case(safe))
    {
        return false;
    }
    ["cookie", "set-cookie"]
        .iter()
        .any(|cookie| name.eq_ignore_ascii_case(cookie))
        || CREDENTIAL_WORDS
            .iter()
            .any(|word| contains_ignore_case(name, word))
}

/// Whether a query parameter (its name, already percent-decoded) is a credential: one of
/// `token`, `access_token`, `api_key`, `apikey`, `key`, `secret`, `password`, `auth`, `jwt`,
/// or any name containing `token`, `secret` or `password` (`refresh_token`, `client_secret`).
pub fn is_credential_param(name: &str) -> bool {
    CREDENTIAL_PARAMS
        .iter()
        .any(|param| name.eq_ignore_ascii_case(param))
        || ["token", "secret", "password"]
            .iter()
            .any(|word| contains_ignore_case(name, word))
}

/// A query parameter's name as a server would read it: `api%5Fkey` is `api_key`.
fn decoded_name(name: &str) -> Cow<'_, str> {
    if !name.contains(['%', '+']) {
        return Cow::Borrowed(name);
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A request target (or a bare query string) with the value of every credential parameter
/// ([`is_credential_param`]) replaced by [`MASKED`]. The rest is left byte for byte.
pub fn mask_credential_params(target: &str) -> Cow<'_, str> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (Some(path), query),
        None if target.starts_with('/') => return Cow::Borrowed(target),
        None => (None, target),
    };
    let is_secret = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(name, _)| is_credential_param(&decoded_name(name)))
    };
    if !query.split('&').any(is_secret) {
        return Cow::Borrowed(target);
    }
    let masked: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(pair) => Cow::Owned(format!("{name}={MASKED}")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    let masked = masked.join("&");
    Cow::Owned(match path {
        Some(path) => format!("{path}?{masked}"),
        None => masked,
    })
}

/// What a masked header value is recorded as: the marker and how long the value was.
pub fn masked_value(len: usize) -> String {
    format!("[masked, {len} bytes]")
}

/// A `Sec-WebSocket-Protocol` value with the entries that may carry a token masked.
///
/// Browsers cannot set headers on a WebSocket, so applications pass tokens as subprotocols
/// (`new WebSocket(url, ["access_token", token])`, Kubernetes'
/// `base64url.bearer.authorization.k8s.io.<token>`). Real subprotocol names are short words
/// (`streamgate.v1`, `graphql-transport-ws`, `mqtt`), so an entry is kept only when it is at
/// most 32 bytes, names no credential word (`token`, `secret`, `key`, `auth`, `password`,
/// `bearer`, `jwt`), and does not follow one that does (the token after its marker).
pub fn mask_websocket_protocols(value: &str) -> Cow<'_, str> {
    const LONGEST_NAME: usize = 32;
    let marker = |entry: &str| {
        CREDENTIAL_WORDS
            .iter()
            .chain(&["bearer", "jwt"])
            .any(|word| contains_ignore_case(entry, word))
    };
    let mut previous_was_marker = false;
    let mut changed = false;
    let entries: Vec<Cow<'_, str>> = value
        .split(',')
        .map(|raw| {
            let entry = raw.trim();
            let secret = entry.len() > LONGEST_NAME || marker(entry) || previous_was_marker;
            previous_was_marker = marker(entry);
            if secret && !entry.is_empty() {
                changed = true;
                Cow::Owned(masked_value(entry.len()))
            } else {
                Cow::Borrowed(entry)
            }
        })
        .collect();
    if changed {
        Cow::Owned(entries.join(", "))
    } else {
        Cow::Borrowed(value)
    }
}

/// The value a recording keeps for header `name`: `None` when `value` may be kept as it is.
pub fn mask_header_value(name: &str, value: &[u8]) -> Option<String> {
    if is_credential_header(name) {
        return Some(masked_value(value.len()));
    }
    if name.eq_ignore_ascii_case("sec-websocket-protocol") {
        let text = String::from_utf8_lossy(value);
        if let Cow::Owned(masked) = mask_websocket_protocols(&text) {
            return Some(masked);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "Set-Cookie",
            "X-Api-Key",
            "x-auth-token",
            "X-CSRF-Token",
            "x-client-secret",
            "X-Password",
            "authentication-info",
        ] {
            assert!(is_credential_header(name), "{name}");
        }
        for name in [
            "Sec-WebSocket-Key",
            "sec-websocket-accept",
            "WWW-Authenticate",
            "Proxy-Authenticate",
            "host",
            "keep-alive",
            "sec-websocket-protocol",
        ] {
            assert!(!is_credential_header(name), "{name}");
        }
    }

    #[test]
    fn credential_query_parameters_are_masked_and_the_rest_kept() {
        assert_eq!(
            mask_credential_params(
                "/sse?topics=a&token=eyJ.x.y&API_KEY=k1&apikey=k2&key=k3&secret=s&password=p\
                 &auth=a&jwt=j&access_token=t&refresh_token=r&since=e:1&lab=id"
            ),
            "/sse?topics=a&token=[masked]&API_KEY=[masked]&apikey=[masked]&key=[masked]\
             &secret=[masked]&password=[masked]&auth=[masked]&jwt=[masked]\
             &access_token=[masked]&refresh_token=[masked]&since=e:1&lab=id"
        );
        // A percent-encoded name is still the name the server reads.
        assert_eq!(
            mask_credential_params("/ws?api%5Fkey=k&monkey=banana"),
            "/ws?api%5Fkey=[masked]&monkey=banana"
        );
        assert_eq!(mask_credential_params("token=abc"), "token=[masked]");
        assert_eq!(mask_credential_params("/sse?topics=a"), "/sse?topics=a");
        assert_eq!(mask_credential_params("/sse"), "/sse");
        assert_eq!(mask_credential_params("/ws?token"), "/ws?token");
        assert_eq!(mask_credential_params("/ws?%=1&%4=2"), "/ws?%=1&%4=2");
    }

    #[test]
    fn tokens_passed_as_subprotocols_are_masked() {
        assert_eq!(
            mask_websocket_protocols("streamgate.v1"),
            Cow::Borrowed("streamgate.v1")
        );
        assert_eq!(
            mask_websocket_protocols("chat, superchat"),
            Cow::Borrowed("chat, superchat")
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        assert_eq!(
            mask_websocket_protocols(&format!("streamgate.v1, access_token, {jwt}")),
            format!(
                "streamgate.v1, [masked, 12 bytes], [masked, {} bytes]",
                jwt.len()
            )
        );
        assert_eq!(
            mask_websocket_protocols("Bearer, abc123"),
            "[masked, 6 bytes], [masked, 6 bytes]"
        );
        assert_eq!(
            mask_websocket_protocols("base64url.bearer.authorization.k8s.io.dG9rZW4"),
            "[masked, 45 bytes]"
        );
        assert_eq!(
            mask_header_value("Sec-WebSocket-Protocol", b"streamgate.v1"),
            None
        );
        assert_eq!(
            mask_header_value("x-api-key", b"0123456789"),
            Some("[masked, 10 bytes]".to_owned())
        );
        assert_eq!(mask_header_value("sec-websocket-key", b"abc"), None);
    }
}
