//! Untrusted authentication input (`[auth]`, docs/PROTOCOL.md section 8): where a request's
//! token is found (`token_from_request`: the `Authorization: Bearer` header, the token cookie,
//! `?token=` and its percent-decoding; `Authorizer::authenticate`), how the gateway verifies
//! it (the server's `JwtAuthorizer`, built by `streamgate::auth::build` from three fixed
//! configurations: HS256; HS256 + RS256 with `iss`, `aud` and another cookie; ES256), what
//! a verified token's claims allow (`Grant::from_claims`, `TopicPattern::parse`), and
//! `mask_token_param`, which hides `?token=` in logs and the lab.
//!
//! Input: lines (`\n`). Line 1 is `Authorization` header values and line 2 `Cookie` header
//! values (raw bytes, several values split at `\r`), line 3 a query string, line 4 the
//! claims and line 5 the header of a JWT that the target signs with the fixed HS256 secret
//! (`{"alg":"HS256","typ":"JWT"}` without a line 5), so that tokens pass the signature check
//! and their claims (`exp`, `nbf`, `iss`, `aud`, `sub`, topic patterns) are read; it also
//! signs these claims with `exp` set to a number derived from the whole input. Every line is
//! also verified as a token as it is.
//!
//! Properties: never panics; `authenticate` is `Missing` exactly when `token_from_request`
//! finds no token, else what `verify` says of that token; a token found is not empty; a
//! refused request is answered 401 with a `WWW-Authenticate` challenge; `verify` gives a
//! grant that has not expired, or `Invalid` or `Expired` with a reason that does not contain
//! the token; a grant has the claims' `sub`, every topic pattern of its claims parses, shows
//! as itself and allows the topics it names; a masked request target keeps no `token=` value
//! but `***`.
#![no_main]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use streamgate::auth::{build, AuthConfig};
use streamgate_core::{
    mask_token_param, token_from_request, AuthError, Authorizer, Grant, StreamgateClaims, Topic,
    TopicPattern,
};

/// The HS256 secret of every configuration (and of the seed tokens in `corpus/token/`).
const SECRET: &str = "streamgate-fuzz-secret-0123456789abcdef";
/// The RS256 public key of the server's tests (`gateway/server/tests/fixtures/`).
const RS256_PUBLIC: &str = include_str!("../../gateway/server/tests/fixtures/rs256.pub.pem");
/// A P-256 public key made for this target (its private key signed the ES256 seeds and was
/// not kept).
const ES256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpJWzG0uJAkXQIqgkoncx9DiLXQSQ
qSkSpFlM92JQL0mEDjNih4XNhZolDBRl6mfB0/HCvQVxOiA7sKNNOURgnA==
-----END PUBLIC KEY-----
";
const DEFAULT_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// `[auth]` as the gateway reads it; a public key (name, PEM) is written to a temporary file,
/// read by `build` and removed.
fn authorizer(
    mut config: serde_json::Value,
    public_key: Option<(&str, &str)>,
) -> Arc<dyn Authorizer> {
    let key_file = public_key.map(|(name, pem)| {
        let path = std::env::temp_dir().join(format!(
            "streamgate-fuzz-token-{}-{name}.pem",
            std::process::id()
        ));
        std::fs::write(&path, pem).expect("write the public key");
        config["public_key_file"] = path.to_str().expect("UTF-8 temp dir").into();
        path
    });
    let config: AuthConfig = serde_json::from_value(config).expect("a valid [auth]");
    let built = build(&config);
    if let Some(path) = key_file {
        let _ = std::fs::remove_file(path);
    }
    built.expect("the key is good").expect("auth is enabled")
}

static AUTHORIZERS: LazyLock<[Arc<dyn Authorizer>; 3]> = LazyLock::new(|| {
    [
        authorizer(
            serde_json::json!({"enabled": true, "hs256_secret": SECRET}),
            None,
        ),
        authorizer(
            serde_json::json!({
                "enabled": true, "algorithms": ["HS256", "RS256"], "hs256_secret": SECRET,
                "issuer": "fuzz-issuer", "audience": "streamgate", "leeway": 0,
                "cookie_name": "sg",
            }),
            Some(("rs256", RS256_PUBLIC)),
        ),
        authorizer(
            serde_json::json!({"enabled": true, "algorithms": ["ES256"], "leeway": 300}),
            Some(("es256", ES256_PUBLIC)),
        ),
    ]
});

/// `verify`, and what must hold of its answer.
fn verify(auth: &dyn Authorizer, token: &str) -> Option<Grant> {
    let before = SystemTime::now();
    match auth.verify(token) {
        Ok(grant) => {
            assert!(grant.expires_at() > before, "an expired grant: {grant:?}");
            Some(grant)
        }
        Err(e) => {
            assert!(
                matches!(e, AuthError::Invalid(_) | AuthError::Expired),
                "verify answers only Invalid or Expired: {e:?}"
            );
            assert_eq!(e.code(), "unauthorized");
            let reason = e.to_string();
            // Any string might be part of a message ("malformed token: InvalidToken" is);
            // a token of JWT shape (two dots), not too short, never is.
            if token.len() >= 16 && token.matches('.').count() >= 2 {
                assert!(
                    !reason.contains(token),
                    "the reason shows the token: {reason}"
                );
            }
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
            None
        }
    }
}

/// The claims as the server reads them (`exp` aside): invalid UTF-8 or a lone surrogate in a
/// claim it ignores does not make a token invalid, so they are not read as a `Value`.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    streamgate: StreamgateClaims,
}

/// What a grant must say about the claims it was made from.
fn check_grant(grant: &Grant, claims: &[u8]) {
    let claims: Claims = serde_json::from_slice(claims).expect("verified claims parse");
    assert_eq!(grant.subject(), claims.sub.as_deref());
    for (list, patterns, allows) in [
        (
            "subscribe",
            &claims.streamgate.subscribe,
            Grant::may_subscribe as fn(&Grant, &Topic) -> bool,
        ),
        ("publish", &claims.streamgate.publish, Grant::may_publish),
    ] {
        for text in patterns {
            let parsed = TopicPattern::parse(text).expect("verified patterns parse");
            assert_eq!(&parsed.to_string(), text);
            let named = match &parsed {
                TopicPattern::Any => "any-topic",
                TopicPattern::Prefix(prefix) | TopicPattern::Exact(prefix) => prefix,
            };
            let topic = Topic::new(named).expect("a pattern's name is a topic");
            assert!(parsed.matches(&topic));
            assert!(
                allows(grant, &topic),
                "{list} {text:?} does not allow {named}"
            );
        }
    }
}

/// An `exp` for the input, from a hash of it: anywhere in the 64-bit range, and as often at
/// its edges: within 8 years of now, of `i64::MAX` (the limit of `SystemTime`), or below
/// `u64::MAX`.
fn any_exp(data: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    data.hash(&mut hasher);
    let hash = hasher.finish();
    let near = |to: u64| to.saturating_add(hash >> 35).saturating_sub(1 << 28);
    match hash % 4 {
        0 => hash,
        1 => near(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_secs(),
        ),
        2 => near(i64::MAX as u64),
        _ => u64::MAX - (hash >> 35),
    }
}

/// `b64(header).b64(claims).signature`, signed with the HS256 secret whatever the header says.
fn signed(header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HMAC");
    format!("{message}.{signature}")
}

fn check_mask(query: &str) {
    let target = format!("/sse?{query}");
    let masked = mask_token_param(&target);
    let (path, masked_query) = masked.split_once('?').expect("the '?' is kept");
    assert_eq!(path, "/sse");
    for pair in masked_query.split('&') {
        assert!(
            !pair.starts_with("token=") || pair == "token=***",
            "a token is left in {masked:?}"
        );
    }
    // A query without a '?' of its own masks the same alone as in a target.
    if !query.contains('?') {
        assert_eq!(mask_token_param(query), masked_query);
    }
}

fuzz_target!(|data: &[u8]| {
    let authorizers = &*AUTHORIZERS;
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();

    // The token of a request, and what each authorizer makes of it.
    let mut headers = HeaderMap::new();
    for (name, line) in [header::AUTHORIZATION, header::COOKIE]
        .into_iter()
        .zip(&lines)
    {
        for value in line.split(|b| *b == b'\r') {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(name.clone(), value);
            }
        }
    }
    let query = lines.get(2).map(|q| String::from_utf8_lossy(q));
    if let Some(query) = &query {
        check_mask(query);
    }
    for auth in authorizers {
        let found = token_from_request(&headers, query.as_deref(), auth.cookie_name());
        if let Some(token) = &found {
            assert!(!token.is_empty());
        }
        let answer = auth.authenticate(&headers, query.as_deref());
        // The gateway's answer to a refused request (built here only: it is most of the
        // cost of a refusal).
        if let Err(e) = &answer {
            let response = e.to_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        }
        match (answer, found) {
            (Err(AuthError::Missing), None) => {}
            (Err(AuthError::Missing), Some(token)) => panic!("a token, {token:?}, is Missing"),
            (answer, None) => panic!("no token, but {answer:?}"),
            (answer, Some(token)) => match (answer, auth.verify(&token)) {
                (Ok(answer), Ok(again)) if answer == again => {}
                // The same refusal; the reason may differ (which of several missing claims
                // `jsonwebtoken` names first is not fixed).
                (Err(answer), Err(again))
                    if std::mem::discriminant(&answer) == std::mem::discriminant(&again) => {}
                // The token's `exp` passed between the two calls.
                (Ok(_), Err(AuthError::Expired)) => {}
                (answer, again) => panic!("authenticate: {answer:?}, verify: {again:?}"),
            },
        }
    }

    // Every line as a token (a token never holds a line break).
    for text in lines.iter().filter_map(|t| std::str::from_utf8(t).ok()) {
        for auth in authorizers {
            verify(&**auth, text);
        }
    }

    // Well-signed tokens: lines 4 (claims) and 5 (header), and the same claims with any
    // `exp` (see `any_exp`), which mutating the digits of line 4 seldom reaches.
    let Some(claims) = lines.get(3) else {
        return;
    };
    let header = lines.get(4).copied().unwrap_or(DEFAULT_HEADER);
    let mut tokens = vec![(signed(header, claims), claims.to_vec())];
    if let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(claims) {
        object.insert("exp".to_owned(), any_exp(data).into());
        let claims = serde_json::to_vec(&object).expect("JSON");
        tokens.push((signed(header, &claims), claims));
    }
    for (token, claims) in &tokens {
        for auth in authorizers {
            if let Some(grant) = verify(&**auth, token) {
                check_grant(&grant, claims);
            }
        }
    }
});
