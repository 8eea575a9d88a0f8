//! `[auth]`: JWT verification with `jsonwebtoken`, behind the transports' [`Authorizer`].
//!
//! What a token allows, where it is looked for and how a refusal is answered are in
//! `streamgate_core` (sans-IO, shared by every transport); this module only turns a token
//! into a [`Grant`]: signature and algorithm, `exp` (required), `nbf`, `iss`, `aud`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use streamgate_core::{AuthError, Authorizer, Grant, StreamgateClaims, DEFAULT_COOKIE_NAME};

/// A signature algorithm `[auth] algorithms` may list. `none` is not one of them: an
/// unsigned token is never accepted.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256: a shared secret (`hs256_secret_file` or `hs256_secret`).
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: an RSA public key (`public_key_file`).
    RS256,
    /// ECDSA P-256 with SHA-256: an EC public key (`public_key_file`).
    ES256,
}

impl JwtAlgorithm {
    fn jsonwebtoken(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::RS256 => Algorithm::RS256,
            Self::ES256 => Algorithm::ES256,
        }
    }
}

/// `[auth]`: who may subscribe and publish. Off by default: every client may do anything.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Whether every subscribe and publish needs a token. Default: false.
    pub enabled: bool,
    /// The accepted signature algorithms, among `HS256`, `RS256` and `ES256` (one of RS256
    /// and ES256 at most: there is one public key). A token signed with another is refused.
    /// Default: `["HS256"]`.
    pub algorithms: Vec<JwtAlgorithm>,
    /// File holding the HS256 secret (its bytes, a trailing newline removed).
    pub hs256_secret_file: Option<PathBuf>,
    /// The HS256 secret inline (tests and development; prefer `hs256_secret_file`).
    pub hs256_secret: Option<String>,
    /// PEM public key for RS256 (an RSA key) or ES256 (a P-256 key).
    pub public_key_file: Option<PathBuf>,
    /// Required `iss` claim value, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim value (the token's `aud` must contain it), if set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds; a connection opened with a token
    /// is closed at `exp` plus this. Default: 30, at most 300.
    pub leeway: u64,
    /// The cookie a token may come in. Default: `streamgate_token`.
    pub cookie_name: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            algorithms: vec![JwtAlgorithm::HS256],
            hs256_secret_file: None,
            hs256_secret: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway: 30,
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
        }
    }
}

/// Longest `leeway` accepted.
pub const MAX_LEEWAY: u64 = 300;

/// The latest `exp` a grant keeps (9999-12-31T23:59:59Z): a token with a later one, up to
/// `u64::MAX` seconds, is accepted and lasts until then.
pub const MAX_EXP: u64 = 253_402_300_799;

impl AuthConfig {
    /// Checks what serde cannot. Key files are read by [`build`].
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.algorithms.is_empty() {
            return Err("auth.algorithms must list at least one of HS256, RS256, ES256".to_owned());
        }
        let has = |a| self.algorithms.contains(&a);
        let hs256 = has(JwtAlgorithm::HS256);
        let public = has(JwtAlgorithm::RS256) || has(JwtAlgorithm::ES256);
        if has(JwtAlgorithm::RS256) && has(JwtAlgorithm::ES256) {
            return Err(
                "auth.algorithms: RS256 and ES256 cannot both be on (there is one \
                 public_key_file); pick one"
                    .to_owned(),
            );
        }
        match (hs256, &self.hs256_secret, &self.hs256_secret_file) {
            (true, Some(_), Some(_)) => {
                return Err(
                    "auth.hs256_secret and auth.hs256_secret_file: give one, not both".to_owned(),
                )
            }
            (true, None, None) => {
                return Err(
                    "auth.algorithms has HS256: set auth.hs256_secret_file (or hs256_secret)"
                        .to_owned(),
                )
            }
            (true, Some(secret), None) if secret.len() < 32 => {
                return Err("auth.hs256_secret must be at least 32 bytes".to_owned())
            }
            (false, Some(_), _) | (false, _, Some(_)) => {
                return Err(
                    "auth.hs256_secret(_file) is set but auth.algorithms has no HS256".to_owned(),
                )
            }
            _ => {}
        }
        match (public, &self.public_key_file) {
            (true, None) => {
                return Err(
                    "auth.algorithms has RS256 or ES256: set auth.public_key_file (PEM)".to_owned(),
                )
            }
            (false, Some(_)) => {
                return Err(
                    "auth.public_key_file is set but auth.algorithms has neither RS256 nor ES256"
                        .to_owned(),
                )
            }
            _ => {}
        }
        if self.leeway > MAX_LEEWAY {
            return Err(format!(
                "auth.leeway must be at most {MAX_LEEWAY} seconds, got {}",
                self.leeway
            ));
        }
        let cookie_ok = !self.cookie_name.is_empty()
            && self
                .cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !cookie_ok {
            return Err(format!(
                "auth.cookie_name must be ASCII letters, digits, '_', '-' or '.', got {:?}",
                self.cookie_name
            ));
        }
        Ok(())
    }
}

/// The verifier for `[auth]`, or `None` when it is off.
///
/// # Errors
/// The configuration is invalid, or a key file cannot be read or parsed (naming the file).
pub fn build(config: &AuthConfig) -> Result<Option<Arc<dyn Authorizer>>, String> {
    if !config.enabled {
        return Ok(None);
    }
    config.validate()?;
    Ok(Some(Arc::new(JwtAuthorizer::new(config)?)))
}

/// Verifies JWTs with the configured keys.
pub struct JwtAuthorizer {
    hmac: Option<DecodingKey>,
    public: Option<(Algorithm, DecodingKey)>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    cookie_name: String,
}

impl std::fmt::Debug for JwtAuthorizer {
    // Keys are not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthorizer")
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// The claims read from a token; `exp` is required.
#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    streamgate: StreamgateClaims,
}

impl JwtAuthorizer {
    /// A verifier for `config` (assumed valid, see [`AuthConfig::validate`]).
    ///
    /// # Errors
    /// A key file cannot be read or is not a PEM key of the right kind.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let hmac = if config.algorithms.contains(&JwtAlgorithm::HS256) {
            let secret = match (&config.hs256_secret, &config.hs256_secret_file) {
                (Some(secret), _) => secret.as_bytes().to_vec(),
                (None, Some(path)) => {
                    let mut bytes = std::fs::read(path)
                        .map_err(|e| format!("auth.hs256_secret_file {}: {e}", path.display()))?;
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    if bytes.len() < 32 {
                        return Err(format!(
                            "auth.hs256_secret_file {}: the secret must be at least 32 bytes",
                            path.display()
                        ));
                    }
                    bytes
                }
                (None, None) => return Err("auth: HS256 needs a secret".to_owned()),
            };
            Some(DecodingKey::from_secret(&secret))
        } else {
            None
        };
        let public = match &config.public_key_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("auth.public_key_file {}: {e}", path.display()))?;
                let (algorithm, key) = if config.algorithms.contains(&JwtAlgorithm::RS256) {
                    (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem))
                } else {
                    (Algorithm::ES256, DecodingKey::from_ec_pem(&pem))
                };
                let key = key.map_err(|e| {
                    format!(
                        "auth.public_key_file {}: not a PEM public key for {algorithm:?}: {e}",
                        path.display()
                    )
                })?;
                Some((algorithm, key))
            }
            None => None,
        };
        Ok(Self {
            hmac,
            public,
            algorithms: config.algorithms.iter().map(|a| a.jsonwebtoken()).collect(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
            cookie_name: config.cookie_name.clone(),
        })
    }

    fn key_for(&self, algorithm: Algorithm) -> Option<&DecodingKey> {
        match algorithm {
            Algorithm::HS256 => self.hmac.as_ref(),
            other => self
                .public
                .as_ref()
                .filter(|(a, _)| *a == other)
                .map(|(_, key)| key),
        }
    }
}

impl Authorizer for JwtAuthorizer {
    fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        // Only the configured algorithms, each with its own key: an HS256 token is never
        // checked against an RSA public key used as an HMAC secret (algorithm confusion).
        let key = self
            .algorithms
            .contains(&header.alg)
            .then(|| self.key_for(header.alg))
            .flatten()
            .ok_or_else(|| {
                AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg))
            })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => {
                AuthError::Invalid("token not valid yet (nbf)".to_owned())
            }
            ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer (iss)".to_owned()),
            ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience (aud)".to_owned()),
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".to_owned()),
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::Invalid(format!("missing claim {claim}"))
            }
            _ => AuthError::Invalid(e.to_string()),
        })?;
        // `exp` is any u64: past `MAX_EXP` it is taken as `MAX_EXP`, which `SystemTime` (and
        // the transports' `Instant::now() + remaining`) can hold; `u64::MAX` would panic.
        let expires_at =
            UNIX_EPOCH + Duration::from_secs(data.claims.exp.min(MAX_EXP) + self.leeway);
        if SystemTime::now() >= expires_at {
            return Err(AuthError::Expired);
        }
        Grant::from_claims(data.claims.sub, &data.claims.streamgate, expires_at)
    }

    fn cookie_name(&self) -> &str {
        &self.cookie_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use streamgate_core::Topic;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs_config() -> AuthConfig {
        AuthConfig {
            enabled: true,
            hs256_secret: Some(SECRET.to_owned()),
            leeway: 0,
            ..AuthConfig::default()
        }
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs(claims: &serde_json::Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn authorizer(config: &AuthConfig) -> Arc<dyn Authorizer> {
        build(config).unwrap().unwrap()
    }

    fn ec_keys() -> (String, String) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        (pair.serialize_pem(), pair.public_key_pem())
    }

    fn write_temp(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "streamgate-auth-{}-{name}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn off_by_default() {
        assert!(!AuthConfig::default().enabled);
        assert!(build(&AuthConfig::default()).unwrap().is_none());
    }

    #[test]
    fn hs256_claims_become_a_grant() {
        let auth = authorizer(&hs_config());
        let token = hs(&serde_json::json!({
            "exp": now() + 60, "sub": "alice",
            "streamgate": {"subscribe": ["demo", "news.*"], "publish": ["chat"]}
        }));
        let grant = auth.verify(&token).unwrap();
        assert_eq!(grant.subject(), Some("alice"));
        assert!(grant.may_subscribe(&Topic::new("news.eu").unwrap()));
        assert!(!grant.may_subscribe(&Topic::new("chat").unwrap()));
        assert!(grant.may_publish(&Topic::new("chat").unwrap()));
        let exp = grant
            .expires_at()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(exp, now() + 60);
    }

    #[test]
    fn exp_is_required_and_enforced() {
        let auth = authorizer(&hs_config());
        let no_exp = hs(&serde_json::json!({"streamgate": {"subscribe": ["*"]}}));
        assert!(matches!(auth.verify(&no_exp), Err(AuthError::Invalid(_))));
        let expired = hs(&serde_json::json!({"exp": now() - 5}));
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        // Within the leeway it is accepted, and the grant ends at exp + leeway.
        let lenient = authorizer(&AuthConfig {
            leeway: 30,
            ..hs_config()
        });
        let grant = lenient.verify(&expired).unwrap();
        assert!(grant.remaining(SystemTime::now()) > Duration::from_secs(20));
        let future = hs(&serde_json::json!({"exp": now() + 60, "nbf": now() + 30}));
        assert!(matches!(auth.verify(&future), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn exp_beyond_what_system_time_holds_is_capped() {
        // Found by fuzz/fuzz_targets/token.rs: `UNIX_EPOCH + exp` panicked past i64::MAX
        // seconds ("overflow when adding duration to instant").
        let leeway = 30;
        let auth = authorizer(&AuthConfig {
            leeway,
            ..hs_config()
        });
        let cap = UNIX_EPOCH + Duration::from_secs(MAX_EXP + leeway);
        for exp in [
            u64::MAX,
            u64::MAX - leeway,
            i64::MAX as u64 + 1,
            MAX_EXP + 1,
        ] {
            let token = hs(&serde_json::json!({"exp": exp, "streamgate": {"subscribe": ["*"]}}));
            let grant = auth.verify(&token).unwrap();
            assert_eq!(grant.expires_at(), cap, "exp {exp}");
            assert!(grant.may_subscribe(&Topic::new("demo").unwrap()));
            // What the transports do with it.
            let _ = std::time::Instant::now() + grant.remaining(SystemTime::now());
        }
        let token = hs(&serde_json::json!({"exp": MAX_EXP - 1}));
        assert_eq!(
            auth.verify(&token).unwrap().expires_at(),
            UNIX_EPOCH + Duration::from_secs(MAX_EXP - 1 + leeway)
        );
    }

    #[test]
    fn wrong_secret_issuer_audience() {
        let auth = authorizer(&AuthConfig {
            issuer: Some("issuer-a".to_owned()),
            audience: Some("streamgate".to_owned()),
            ..hs_config()
        });
        let good = serde_json::json!({"exp": now() + 60, "iss": "issuer-a", "aud": "streamgate"});
        assert!(auth.verify(&hs(&good)).is_ok());
        let other_key = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another secret another secret 1234"),
            &good,
        );
        assert!(
            matches!(auth.verify(&other_key), Err(AuthError::Invalid(r)) if r.contains("signature"))
        );
        let wrong_iss =
            hs(&serde_json::json!({"exp": now() + 60, "iss": "b", "aud": "streamgate"}));
        assert!(matches!(auth.verify(&wrong_iss), Err(AuthError::Invalid(r)) if r.contains("iss")));
        let no_iss = hs(&serde_json::json!({"exp": now() + 60, "aud": "streamgate"}));
        assert!(auth.verify(&no_iss).is_err());
        let wrong_aud = hs(&serde_json::json!({"exp": now() + 60, "iss": "issuer-a", "aud": "x"}));
        assert!(matches!(auth.verify(&wrong_aud), Err(AuthError::Invalid(r)) if r.contains("aud")));
        assert!(matches!(
            auth.verify("not a token"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        let auth = authorizer(&hs_config());
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let claims = serde_json::json!({"exp": now() + 60, "streamgate": {"subscribe": ["*"]}});
        for alg in ["none", "None", "NONE"] {
            let token = format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": alg, "typ": "JWT"})),
                b64(&claims)
            );
            assert!(
                matches!(auth.verify(&token), Err(AuthError::Invalid(_))),
                "{alg}"
            );
        }
        // A config cannot name it either.
        let err = toml::from_str::<AuthConfig>("algorithms = [\"none\"]").unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn es256_and_algorithm_confusion() {
        let (private, public) = ec_keys();
        let public_file = write_temp("es256.pub.pem", &public);
        let auth = authorizer(&AuthConfig {
            enabled: true,
            algorithms: vec![JwtAlgorithm::ES256],
            public_key_file: Some(public_file.clone()),
            leeway: 0,
            ..AuthConfig::default()
        });
        let claims = serde_json::json!({"exp": now() + 60, "streamgate": {"subscribe": ["*"]}});
        let es = sign(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
            &claims,
        );
        assert!(auth.verify(&es).is_ok());
        // HS256 signed with the public key as the secret: the classic confusion attack.
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()),
            &claims,
        );
        assert!(
            matches!(auth.verify(&confused), Err(AuthError::Invalid(r)) if r.contains("HS256")),
        );
        // And an ES256 token means nothing to an HS256-only gateway.
        assert!(matches!(
            authorizer(&hs_config()).verify(&es),
            Err(AuthError::Invalid(_))
        ));
        let _ = std::fs::remove_file(public_file);
    }

    #[test]
    fn rs256_fixture_and_confusion() {
        let public = include_str!("../tests/fixtures/rs256.pub.pem");
        let private = include_str!("../tests/fixtures/rs256.key.pem");
        let public_file = write_temp("rs256.pub.pem", public);
        let auth = authorizer(&AuthConfig {
            enabled: true,
            algorithms: vec![JwtAlgorithm::RS256],
            public_key_file: Some(public_file.clone()),
            leeway: 0,
            ..AuthConfig::default()
        });
        let claims = serde_json::json!({"exp": now() + 60, "streamgate": {"publish": ["x"]}});
        let rs = sign(
            Algorithm::RS256,
            &EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            &claims,
        );
        assert!(auth
            .verify(&rs)
            .unwrap()
            .may_publish(&Topic::new("x").unwrap()));
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()),
            &claims,
        );
        assert!(matches!(auth.verify(&confused), Err(AuthError::Invalid(_))));
        let _ = std::fs::remove_file(public_file);
    }

    #[test]
    fn bad_key_files_are_named() {
        let missing = build(&AuthConfig {
            enabled: true,
            algorithms: vec![JwtAlgorithm::ES256],
            public_key_file: Some("/nonexistent/key.pem".into()),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(
            missing.contains("auth.public_key_file /nonexistent/key.pem"),
            "{missing}"
        );
        let garbage = write_temp("garbage.pem", "not a key");
        let err = build(&AuthConfig {
            enabled: true,
            algorithms: vec![JwtAlgorithm::RS256],
            public_key_file: Some(garbage.clone()),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(err.contains("not a PEM public key for RS256"), "{err}");
        let _ = std::fs::remove_file(garbage);
        let short = write_temp("short.secret", "short\n");
        let err = build(&AuthConfig {
            enabled: true,
            hs256_secret_file: Some(short.clone()),
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(err.contains("at least 32 bytes"), "{err}");
        let _ = std::fs::remove_file(short);
    }

    #[test]
    fn validation_messages() {
        let check = |config: AuthConfig| config.validate().unwrap_err();
        let on = AuthConfig {
            enabled: true,
            ..AuthConfig::default()
        };
        assert!(check(on.clone()).contains("hs256_secret_file"));
        assert!(check(AuthConfig {
            algorithms: vec![],
            ..on.clone()
        })
        .contains("at least one"));
        assert!(check(AuthConfig {
            algorithms: vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256],
            public_key_file: Some("k".into()),
            ..on.clone()
        })
        .contains("pick one"));
        assert!(check(AuthConfig {
            algorithms: vec![JwtAlgorithm::RS256],
            ..on.clone()
        })
        .contains("public_key_file"));
        assert!(check(AuthConfig {
            hs256_secret: Some("short".to_owned()),
            ..on.clone()
        })
        .contains("32 bytes"));
        assert!(check(AuthConfig {
            hs256_secret: Some(SECRET.to_owned()),
            leeway: 301,
            ..on.clone()
        })
        .contains("leeway"));
        assert!(check(AuthConfig {
            hs256_secret: Some(SECRET.to_owned()),
            cookie_name: "a b".to_owned(),
            ..on
        })
        .contains("cookie_name"));
    }
}
