//! The certificate the endpoint serves, as pages see it: [`CertSource`] (what the gateway hands
//! the endpoint), [`CertHashHandle`] (the current SHA-256 and session URL, kept current across
//! rotations) and [`CertHashTransport`], `GET /wt/cert-hash` on the gateway's HTTP listener.
//! Apart from the endpoint because a page reaches it over HTTP, before any QUIC is involved.

use std::sync::{Arc, RwLock};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use streamgate_core::{
    error_response, full_body, Body, BoxFuture, HttpTransport, TransportContext,
};

/// Makes a fresh certificate: the rustls configuration serving it and its SHA-256.
pub type Regenerate =
    Arc<dyn Fn() -> Result<(Arc<rustls::ServerConfig>, [u8; 32]), String> + Send + Sync>;

/// The certificate the endpoint serves.
#[derive(Clone)]
pub struct CertSource {
    /// The gateway's rustls configuration (its ALPN is replaced by `h3` for QUIC).
    pub server_config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate.
    pub sha256: [u8; 32],
    /// For a generated certificate: how to make the next one, every
    /// [`WtConfig::cert_rotation`]. `None` for configured (PEM) certificates.
    pub regenerate: Option<Regenerate>,
}

impl std::fmt::Debug for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSource")
            .field("sha256", &hex(&self.sha256))
            .field("rotates", &self.regenerate.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct CertState {
    pub(crate) sha256: [u8; 32],
    pub(crate) generation: u64,
}

/// The current certificate hash and session URL, shared with `/wt/cert-hash`.
#[derive(Clone, Debug)]
pub struct CertHashHandle {
    pub(crate) state: Arc<RwLock<CertState>>,
    pub(crate) url: Arc<str>,
    pub(crate) self_signed: bool,
}

impl CertHashHandle {
    /// SHA-256 of the certificate served now.
    pub fn sha256(&self) -> [u8; 32] {
        self.state.read().expect("cert state lock").sha256
    }

    /// How many times the certificate was rotated.
    pub fn generation(&self) -> u64 {
        self.state.read().expect("cert state lock").generation
    }

    /// Records that the endpoint now serves a certificate with this SHA-256, replaced by its
    /// owner: a configured certificate reloaded by the gateway, which the endpoint's rustls
    /// configuration shares (its certificate resolver is asked at each handshake). Counts as
    /// one rotation in [`CertHashHandle::generation`].
    pub fn set_sha256(&self, sha256: [u8; 32]) {
        let mut state = self.state.write().expect("cert state lock");
        state.sha256 = sha256;
        state.generation += 1;
    }

    /// The session URL: `webtransport.public_url`, else `https://<bound address>/wt`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `/wt/cert-hash` document.
    pub fn to_json(&self) -> serde_json::Value {
        let (sha256, generation) = {
            let state = self.state.read().expect("cert state lock");
            (state.sha256, state.generation)
        };
        serde_json::json!({
            "algorithm": "sha-256",
            "value": sha256.to_vec(),
            "hex": hex(&sha256),
            "url": &*self.url,
            "self_signed": self.self_signed,
            "generation": generation,
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /wt/cert-hash`: what a page needs for `new WebTransport(url, {serverCertificateHashes})`.
#[derive(Clone, Debug)]
pub struct CertHashTransport {
    pub(crate) handle: CertHashHandle,
}

impl HttpTransport for CertHashTransport {
    fn name(&self) -> &'static str {
        "webtransport-cert-hash"
    }

    fn paths(&self) -> &'static [&'static str] {
        &["/wt/cert-hash"]
    }

    fn handle(
        &self,
        request: Request<Body>,
        _context: TransportContext,
    ) -> BoxFuture<'static, Response<Body>> {
        let handle = self.handle.clone();
        Box::pin(async move {
            if request.method() != Method::GET && request.method() != Method::HEAD {
                let mut response = error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return response;
            }
            let mut response = Response::new(full_body(handle.to_json().to_string()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        })
    }
}
