//! Authentication and topic authorization, the part every transport shares.
//!
//! Sans-IO: where a token is found in a request ([`token_from_request`]), what a verified
//! token allows ([`Grant`], built from the claims' `streamgate` object with
//! [`Grant::from_claims`]), and how a refusal is answered ([`AuthError`]). Verifying the
//! signature is the job of an [`Authorizer`], which the gateway puts in the
//! [`crate::TransportContext`] when `[auth] enabled` (the server crate implements it with
//! `jsonwebtoken`).
//!
//! Topic patterns (`docs/PROTOCOL.md`, "Authentication"): an exact topic name (`demo`), a
//! prefix followed by `*` matching any suffix (`news.*` matches `news.eu`, `news.`; `ris*`
//! matches `ris` and `risx`), or `*` alone for every topic.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Response, StatusCode};
use serde::Deserialize;

use crate::event::{Topic, MAX_TOPIC_LEN};
use crate::http_message::Body;
use crate::rejection::Rejection;

/// The cookie a token is read from unless `[auth] cookie_name` says otherwise.
pub const DEFAULT_COOKIE_NAME: &str = "streamgate_token";

/// The query parameter a token is read from (browsers' `EventSource` and `WebSocket` cannot
/// set headers).
pub const TOKEN_QUERY_PARAM: &str = "token";

/// One entry of a `subscribe` or `publish` list: which topics it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicPattern {
    /// `*`: every topic.
    Any,
    /// `prefix*`: every topic starting with `prefix`.
    Prefix(String),
    /// A topic name.
    Exact(String),
}

impl TopicPattern {
    /// Parses one pattern.
    ///
    /// # Errors
    /// A reason when the pattern cannot match any valid topic name (empty, a character
    /// outside the topic alphabet, `*` anywhere but at the end, too long).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        let alphabet = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if body.is_empty() || body.len() > MAX_TOPIC_LEN || !body.chars().all(alphabet) {
            return Err(format!(
                "topic pattern {text:?} must be a topic name, a topic prefix followed by '*', \
                 or '*'"
            ));
        }
        Ok(if prefix {
            Self::Prefix(body.to_owned())
        } else {
            Self::Exact(body.to_owned())
        })
    }

    /// Whether `topic` is covered.
    pub fn matches(&self, topic: &Topic) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => topic.as_str().starts_with(prefix.as_str()),
            Self::Exact(name) => topic.as_str() == name,
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(name) => f.write_str(name),
        }
    }
}

/// The private claim `streamgate` of a token:
/// `{"subscribe": ["demo", "news.*"], "publish": ["chat"]}`. Both lists default to empty
/// (nothing allowed).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct StreamgateClaims {
    /// Topic patterns the holder may subscribe to.
    pub subscribe: Vec<String>,
    /// Topic patterns the holder may publish to.
    pub publish: Vec<String>,
}

/// What one verified token allows, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    subject: Option<String>,
    subscribe: Vec<TopicPattern>,
    publish: Vec<TopicPattern>,
    expires_at: SystemTime,
}

impl Grant {
    /// The grant of a verified token: `sub`, the `streamgate` claim and the moment the token
    /// stops being accepted (its `exp`, plus any leeway the verifier allows).
    ///
    /// # Errors
    /// [`AuthError::Invalid`] when a pattern is malformed: a token that says something the
    /// gateway cannot read is refused, never half-understood.
    pub fn from_claims(
        subject: Option<String>,
        claims: &StreamgateClaims,
        expires_at: SystemTime,
    ) -> Result<Self, AuthError> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|p| TopicPattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(AuthError::Invalid)
        };
        Ok(Self {
            subject,
            subscribe: parse(&claims.subscribe)?,
            publish: parse(&claims.publish)?,
            expires_at,
        })
    }

    /// The token's `sub`, if it had one.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Whether the holder may subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &Topic) -> bool {
        self.subscribe.iter().any(|p| p.matches(topic))
    }

    /// Whether the holder may publish to `topic`.
    pub fn may_publish(&self, topic: &Topic) -> bool {
        self.publish.iter().any(|p| p.matches(topic))
    }

    /// When the grant ends: a connection opened with it is closed then.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// Whether the grant has ended at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// `Ok` when every topic may be subscribed to.
    ///
    /// # Errors
    /// [`AuthError::Forbidden`] naming the first topic that may not.
    pub fn check_subscribe(&self, topics: &[Topic]) -> Result<(), AuthError> {
        match topics.iter().find(|t| !self.may_subscribe(t)) {
            Some(topic) => Err(AuthError::Forbidden {
                action: "subscribe",
                topic: topic.as_str().to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// `Ok` when `topic` may be published to.
    ///
    /// # Errors
    /// [`AuthError::Forbidden`].
    pub fn check_publish(&self, topic: &Topic) -> Result<(), AuthError> {
        if self.may_publish(topic) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                action: "publish",
                topic: topic.as_str().to_owned(),
            })
        }
    }
}

/// Why a request or message was refused. Reasons never contain the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token came with the request.
    #[error("a token is required: an Authorization: Bearer header, the token cookie or ?token=")]
    Missing,
    /// The token did not verify (signature, algorithm, issuer, audience, format, claims).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
    /// The token is valid but does not cover this topic.
    #[error("the token does not allow {action} on topic {topic}")]
    Forbidden {
        /// `subscribe` or `publish`.
        action: &'static str,
        /// The refused topic.
        topic: String,
    },
}

impl AuthError {
    /// The stable error code: `unauthorized` or `forbidden`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::Missing | Self::Invalid(_) | Self::Expired => "unauthorized",
        }
    }

    /// 401 or 403.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Missing | Self::Invalid(_) | Self::Expired => StatusCode::UNAUTHORIZED,
        }
    }

    /// The HTTP answer: `{"error":{"code":…,"reason":…}}`, with `WWW-Authenticate: Bearer`
    /// on a 401 (RFC 6750 §3).
    pub fn to_response(&self) -> Response<Body> {
        Rejection::from(self).into_response()
    }
}

impl From<&AuthError> for Rejection {
    fn from(e: &AuthError) -> Self {
        let rejection = Rejection::new(e.code(), e.to_string()).with_status(e.status());
        match e {
            AuthError::Forbidden { .. } => rejection,
            AuthError::Missing => rejection.challenge("Bearer"),
            AuthError::Invalid(_) | AuthError::Expired => {
                rejection.challenge("Bearer error=\"invalid_token\"")
            }
        }
    }
}

/// Verifies tokens. The gateway's implementation checks a JWT's signature, algorithm,
/// `exp`/`nbf`, `iss` and `aud` and turns its claims into a [`Grant`].
pub trait Authorizer: Send + Sync + fmt::Debug + 'static {
    /// The grant of a token, or why it is refused ([`AuthError::Invalid`] or
    /// [`AuthError::Expired`]).
    ///
    /// # Errors
    /// Any [`AuthError`] but `Missing` and `Forbidden`.
    fn verify(&self, token: &str) -> Result<Grant, AuthError>;

    /// The cookie a token may come in.
    fn cookie_name(&self) -> &str {
        DEFAULT_COOKIE_NAME
    }

    /// The grant of the token that came with a request (see [`token_from_request`]).
    ///
    /// # Errors
    /// [`AuthError::Missing`] when there is none, else what [`Authorizer::verify`] says.
    fn authenticate(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Grant, AuthError> {
        let token =
            token_from_request(headers, query, self.cookie_name()).ok_or(AuthError::Missing)?;
        self.verify(&token)
    }
}

/// The token of a request: an `Authorization: Bearer` header first, then the cookie
/// `cookie_name`, then the `token` query parameter. Empty values count as absent.
pub fn token_from_request(
    headers: &HeaderMap,
    query: Option<&str>,
    cookie_name: &str,
) -> Option<String> {
    credential_from_request(headers, query, cookie_name).map(|(token, _)| token)
}

/// Where the token of a request was found (see [`token_from_request`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    Header,
    /// The token cookie: ambient, a browser attaches it to requests other sites make.
    Cookie,
    /// The `token` query parameter.
    Query,
}

/// The token of a request and where it was found, in the order of [`token_from_request`].
pub fn credential_from_request(
    headers: &HeaderMap,
    query: Option<&str>,
    cookie_name: &str,
) -> Option<(String, TokenSource)> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim())
                .filter(|t| !t.is_empty())
        });
    if let Some(token) = bearer {
        return Some((token.to_owned(), TokenSource::Header));
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let value = value.trim().trim_matches('"');
            (name.trim() == cookie_name && !value.is_empty()).then_some(value)
        });
    if let Some(token) = cookie {
        return Some((token.to_owned(), TokenSource::Cookie));
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
        .map(|t| (percent_decode(t).into_owned(), TokenSource::Query))
}

/// `%XX` escapes decoded (a JWT needs none, but a client may escape anyway); anything that
/// is not a valid escape is kept as it is.
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A request target (or query string) with the value of every `token` parameter replaced by
/// `***`, for logs and the lab's recordings: tokens never leave the process.
pub fn mask_token_param(target: &str) -> Cow<'_, str> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (Some(path), query),
        None => (None, target),
    };
    if !query.split('&').any(|pair| pair.starts_with("token=")) {
        return Cow::Borrowed(target);
    }
    let masked: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("token=") {
                "token=***"
            } else {
                pair
            }
        })
        .collect();
    let masked = masked.join("&");
    Cow::Owned(match path {
        Some(path) => format!("{path}?{masked}"),
        None => masked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    fn grant(subscribe: &[&str], publish: &[&str]) -> Grant {
        let claims = StreamgateClaims {
            subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
            publish: publish.iter().map(|s| (*s).to_owned()).collect(),
        };
        Grant::from_claims(
            Some("alice".to_owned()),
            &claims,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
        )
        .unwrap()
    }

    #[test]
    fn patterns() {
        let any = TopicPattern::parse("*").unwrap();
        assert!(any.matches(&topic("demo")));
        let exact = TopicPattern::parse("demo").unwrap();
        assert!(exact.matches(&topic("demo")));
        assert!(!exact.matches(&topic("demo2")));
        assert!(!exact.matches(&topic("dem")));
        let prefix = TopicPattern::parse("news.*").unwrap();
        assert!(prefix.matches(&topic("news.eu")));
        assert!(prefix.matches(&topic("news.")));
        assert!(!prefix.matches(&topic("news")));
        assert!(!prefix.matches(&topic("newsx")));
        assert_eq!(prefix.to_string(), "news.*");
        for bad in ["", "**", "a*b", "*a", "a/b", "news.**", &"a".repeat(200)] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grants() {
        let g = grant(&["demo", "news.*"], &["chat"]);
        assert_eq!(g.subject(), Some("alice"));
        assert!(g.may_subscribe(&topic("demo")));
        assert!(g.may_subscribe(&topic("news.x")));
        assert!(!g.may_subscribe(&topic("chat")));
        assert!(g.may_publish(&topic("chat")));
        assert!(!g.may_publish(&topic("demo")));
        assert!(g.check_subscribe(&[topic("demo"), topic("news.a")]).is_ok());
        let err = g
            .check_subscribe(&[topic("demo"), topic("secret")])
            .unwrap_err();
        assert_eq!(err.code(), "forbidden");
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert!(err.to_string().contains("secret"), "{err}");
        assert_eq!(
            g.check_publish(&topic("news.a")).unwrap_err().code(),
            "forbidden"
        );
        // Nothing in the claim: nothing allowed.
        let none = grant(&[], &[]);
        assert!(!none.may_subscribe(&topic("demo")));
        assert!(!none.may_publish(&topic("demo")));
        let all = grant(&["*"], &["*"]);
        assert!(all.may_subscribe(&topic("x")) && all.may_publish(&topic("y")));
    }

    #[test]
    fn malformed_claims_are_refused() {
        let claims = StreamgateClaims {
            subscribe: vec!["a/b".to_owned()],
            publish: vec![],
        };
        let err = Grant::from_claims(None, &claims, SystemTime::now()).unwrap_err();
        assert!(matches!(err, AuthError::Invalid(_)), "{err:?}");
        let parsed: StreamgateClaims =
            serde_json::from_str(r#"{"subscribe":["demo"],"other":1}"#).unwrap();
        assert_eq!(parsed.subscribe, ["demo"]);
        assert!(parsed.publish.is_empty());
    }

    #[test]
    fn expiry() {
        let g = grant(&["*"], &[]);
        let exp = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(g.expires_at(), exp);
        assert_eq!(
            g.remaining(exp - Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(g.remaining(exp + Duration::from_secs(3)), Duration::ZERO);
        assert!(!g.is_expired(exp - Duration::from_millis(1)));
        assert!(g.is_expired(exp));
    }

    #[test]
    fn token_sources_in_order() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_from_request(&headers, None, "c"), None);
        assert_eq!(
            token_from_request(&headers, Some("topics=a&token=q.q.q"), "c").as_deref(),
            Some("q.q.q")
        );
        assert_eq!(
            token_from_request(&headers, Some("token=a%2Eb"), "c").as_deref(),
            Some("a.b")
        );
        assert_eq!(token_from_request(&headers, Some("token="), "c"), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; c=\"k.k.k\"; x=2"),
        );
        assert_eq!(
            token_from_request(&headers, Some("token=q"), "c").as_deref(),
            Some("k.k.k")
        );
        assert_eq!(
            token_from_request(&headers, Some("token=q"), "other-name").as_deref(),
            Some("q")
        );
        // The cookie wins over the query: such a request is cookie-authenticated (ambient).
        assert_eq!(
            credential_from_request(&headers, Some("token=q"), "c").map(|(_, s)| s),
            Some(TokenSource::Cookie)
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  h.h.h "),
        );
        assert_eq!(
            token_from_request(&headers, Some("token=q"), "c").as_deref(),
            Some("h.h.h")
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        assert_eq!(
            token_from_request(&headers, None, "c").as_deref(),
            Some("k.k.k")
        );
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("plain"), "plain");
    }

    #[test]
    fn errors_answer_401_with_a_challenge_and_403_without() {
        let response = AuthError::Missing.to_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let response = AuthError::Expired.to_response();
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        let forbidden = AuthError::Forbidden {
            action: "publish",
            topic: "x".to_owned(),
        };
        let response = forbidden.to_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn masking() {
        assert_eq!(
            mask_token_param("/sse?topics=a&token=abc.def&x=1"),
            "/sse?topics=a&token=***&x=1"
        );
        assert_eq!(mask_token_param("token=abc"), "token=***");
        assert_eq!(mask_token_param("/sse?topics=a"), "/sse?topics=a");
        assert_eq!(mask_token_param("/sse"), "/sse");
        assert_eq!(mask_token_param("/ws?mytoken=a"), "/ws?mytoken=a");
    }
}
