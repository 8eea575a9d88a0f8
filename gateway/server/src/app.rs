//! The gateway's HTTP routes and the state they share.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{header, Method, Request, Response, StatusCode};
use streamgate_core::{
    credential_from_request, read_body_limited, request_scheme, tap_id_from_query, Authorizer,
    ClientPublish, ConnectionInfo, ConnectionLease, ContentType, Direction, EventBus,
    HttpTransport, PerIpLimit, PublishGate, PublishMetrics, RecordKind, Rejection, Tap,
    TapConnection, TapRegistry, TokenSource, Topic, TransportContext,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capacity::{Listener, ListenerSlots, OpenConnection};
use crate::client_limits::ClientLimits;
use crate::config::GatewayConfig;
use crate::http::{json, Body};
use crate::lab::{capture, Lab};
use crate::switches::TransportSwitches;
use crate::tls::{TlsError, TlsMaterial};
use streamgate_proto::{check_cookie_request, CorsPolicy, CsrfRequest, Preflight};

/// State shared by every connection and background task of one gateway.
#[derive(Debug)]
pub struct App {
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// The configuration the gateway started with.
    pub config: GatewayConfig,
    /// Cancelled when the gateway starts shutting down: long-lived handlers watch it to tell
    /// their clients goodbye in their own protocol.
    pub shutdown: CancellationToken,
    /// Every task that must finish before the process exits (connections, upgraded sockets,
    /// sources).
    pub tasks: TaskTracker,
    transports: Vec<Arc<dyn HttpTransport>>,
    /// Which transports are on (`[ws]`, `[sse]`, `[longpoll]`, `[webtransport]` `enabled`);
    /// the routes of those that are off answer `404` `transport_disabled`.
    switches: TransportSwitches,
    /// The HTTPS certificate, when TLS is on.
    pub tls: Option<TlsMaterial>,
    /// The teaching lab and its wire taps, when `lab.enabled` resolves to on
    /// ([`GatewayConfig::lab_decision`]).
    lab: Option<Arc<Lab>>,
    /// Token verification, when `[auth] enabled` (set at bind time, see [`App::set_auth`]).
    auth: Option<Arc<dyn Authorizer>>,
    /// The WebTransport certificate hash and URL, for the lab page.
    #[cfg(feature = "webtransport")]
    wt_cert: Option<webtransport::CertHashHandle>,
    started: Instant,
    /// The Prometheus recorder's handle, when `[metrics] enabled` (`GET /metrics`).
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The publish rate and topic budget per client IP, on every publish path, unless both
    /// are 0.
    publish_gate: Option<Arc<ClientLimits>>,
    /// `streamgate_publishes_total{transport="http"}`: the publish API's outcomes.
    publishes: PublishMetrics,
    /// The public listeners' cap, `server.max_connections` (a slot taken at accept, held by
    /// the connection's [`ConnectionLease`]).
    pub(crate) public_slots: ListenerSlots,
    /// The internal listener's own cap, `server.internal_max_connections`, when
    /// `server.internal_listen` is set.
    pub(crate) internal_slots: Option<ListenerSlots>,
    /// Open connections per client IP, `server.max_connections_per_ip` each.
    pub(crate) connections_per_ip: Arc<PerIpLimit>,
    /// `http.cors_origins`.
    cors: CorsPolicy,
    /// Origins whose pages may make cookie-authenticated `POST`s: those listed (not `"*"`) in
    /// `http.cors_origins` and `ws.origins.allow`, the operator's own sites (behind a proxy
    /// that terminates TLS, the public `https://` origin is not the gateway's own).
    csrf_trusted: Vec<String>,
}

impl App {
    /// Shared state for a gateway over `bus`.
    pub fn new(config: GatewayConfig, bus: Arc<dyn EventBus>, tls: Option<TlsMaterial>) -> Self {
        // Before the transports: they take their metric handles from the recorder.
        let metrics = if config.metrics.enabled {
            crate::prometheus::install()
        } else {
            None
        };
        let transports = enabled_transports(&config);
        let switches = TransportSwitches::new(&config);
        let off = switches.off();
        if !off.is_empty() {
            tracing::info!(
                off = %off.join(", "),
                "transports turned off: their routes answer 404 transport_disabled"
            );
        }
        let decision = config.lab_decision();
        if decision.on {
            tracing::info!(
                why = %decision.why,
                "the lab is on: /lab, /lab/api and wire taps (lab=<issued tap id>) are served"
            );
        } else {
            tracing::info!(why = %decision.why, "the lab is off: /lab answers 404");
        }
        let lab = decision.on.then(|| Arc::new(Lab::new(config.lab.clone())));
        let public_slots = ListenerSlots::new(Listener::Public, config.server.max_connections);
        let internal_slots = config.server.internal_listen.map(|_| {
            ListenerSlots::new(Listener::Internal, config.server.internal_max_connections)
        });
        let connections_per_ip = PerIpLimit::new(config.server.max_connections_per_ip);
        let publish_gate = ClientLimits::new(&config.server, Arc::clone(&bus)).map(Arc::new);
        let cors = CorsPolicy::new(&config.http.cors_origins, config.http.cors_max_age);
        #[cfg_attr(not(feature = "ws"), allow(unused_mut))]
        let mut csrf_trusted = cors.listed().to_vec();
        #[cfg(feature = "ws")]
        csrf_trusted.extend(config.ws.origins.allow.iter().cloned());
        Self {
            bus,
            config,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            transports,
            switches,
            tls,
            lab,
            auth: None,
            #[cfg(feature = "webtransport")]
            wt_cert: None,
            started: Instant::now(),
            metrics,
            public_slots,
            internal_slots,
            connections_per_ip,
            publish_gate,
            publishes: PublishMetrics::new("http"),
            cors,
            csrf_trusted,
        }
    }

    /// The cap of `listener` (the public one when there is no internal listener).
    pub(crate) fn slots(&self, listener: Listener) -> &ListenerSlots {
        match (listener, &self.internal_slots) {
            (Listener::Internal, Some(internal)) => internal,
            _ => &self.public_slots,
        }
    }

    /// A slot on `listener` for a connection just accepted, held until the guard is dropped;
    /// `None` when the listener is at its cap.
    pub(crate) fn open_connection(&self, listener: Listener) -> Option<OpenConnection> {
        self.slots(listener).try_open()
    }

    /// Connections open now on the public listeners, under `server.max_connections`: every
    /// accepted TCP connection until it ends, an upgraded WebSocket until its session ends.
    pub fn connections_open(&self) -> usize {
        self.public_slots.open()
    }

    /// Connections open now on the internal listener (0 when there is none).
    pub fn internal_connections_open(&self) -> usize {
        self.internal_slots.as_ref().map_or(0, ListenerSlots::open)
    }

    /// Connections open now from `ip` under `server.max_connections_per_ip` (0 when that is
    /// 0: nothing is counted).
    pub fn connections_open_from(&self, ip: std::net::IpAddr) -> usize {
        self.connections_per_ip.open(ip)
    }

    /// Adds a route served by a transport that is built at bind time (`/wt/cert-hash`).
    #[cfg(feature = "webtransport")]
    pub(crate) fn add_transport(&mut self, transport: Arc<dyn HttpTransport>) {
        self.transports.push(transport);
    }

    /// Turns on token verification for every route and transport.
    pub(crate) fn set_auth(&mut self, auth: Option<Arc<dyn Authorizer>>) {
        self.auth = auth;
    }

    /// The token verifier, when `[auth] enabled`.
    pub fn authorizer(&self) -> Option<&Arc<dyn Authorizer>> {
        self.auth.as_ref()
    }

    /// Tells the lab page where WebTransport listens and which certificate to pin.
    #[cfg(feature = "webtransport")]
    pub(crate) fn set_webtransport_cert(&mut self, cert: webtransport::CertHashHandle) {
        self.wt_cert = Some(cert);
    }

    /// Which transports are on, as `/healthz` lists them.
    pub(crate) fn transports_json(&self) -> serde_json::Value {
        self.switches.to_json()
    }

    /// The `/wt/cert-hash` document, when WebTransport is on.
    pub(crate) fn webtransport_cert(&self) -> Option<serde_json::Value> {
        #[cfg(feature = "webtransport")]
        return self
            .wt_cert
            .as_ref()
            .map(webtransport::CertHashHandle::to_json);
        #[cfg(not(feature = "webtransport"))]
        None
    }

    /// Reads the HTTPS certificate's PEM files (`tls.cert`, `tls.key`) again and serves the new
    /// certificate to every new handshake, HTTPS and WebTransport alike (WebTransport shares
    /// the configured certificate's rustls configuration). Connections already established
    /// keep theirs. What the SIGHUP handler of `streamgate serve` calls.
    ///
    /// Returns the SHA-256 of the new certificate, in hex.
    ///
    /// # Errors
    /// [`TlsError::NotReloadable`] when TLS is off or its certificate is generated;
    /// [`TlsError::Pem`] naming the file and the reason when the files cannot be used, in
    /// which case the current certificate stays.
    pub fn reload_tls(&self) -> Result<String, TlsError> {
        let Some(tls) = &self.tls else {
            return Err(TlsError::NotReloadable(
                "TLS is off (tls.enabled = false): no certificate to reload",
            ));
        };
        let (Some(cert), Some(key)) = (&self.config.tls.cert, &self.config.tls.key) else {
            return Err(TlsError::NotReloadable(
                "the HTTPS certificate is generated at start-up (no tls.cert and tls.key): \
                 nothing to reload",
            ));
        };
        let sha256 = tls.reload_pem_files(cert, key)?;
        #[cfg(feature = "webtransport")]
        if let Some(wt_cert) = &self.wt_cert {
            wt_cert.set_sha256(sha256);
        }
        Ok(crate::tls::sha256_hex(&sha256))
    }

    /// The lab's tap registry, for a transport with its own listener (WebTransport).
    #[cfg(feature = "webtransport")]
    pub(crate) fn tap_registry(&self) -> Option<Arc<dyn TapRegistry>> {
        // With `[auth]` on, nothing is recorded: a tap keeps message payloads, and a
        // WebSocket `auth` message or a WebTransport stream may carry a token.
        if self.auth.is_some() {
            return None;
        }
        self.lab.as_ref().map(crate::lab::registry)
    }

    /// A tap for this request when the lab is on and its URL names one this client was
    /// issued (`lab=<tap id>`); `403` when the tap belongs to another client.
    fn tap_for<B>(
        &self,
        request: &Request<B>,
        transport: &'static str,
    ) -> Result<Option<Tap>, Rejection> {
        // See `tap_registry`: no recordings while tokens are in use.
        if self.auth.is_some() {
            return Ok(None);
        }
        let Some(lab) = self.lab.as_ref() else {
            return Ok(None);
        };
        let Some(id) = request.uri().query().and_then(tap_id_from_query) else {
            return Ok(None);
        };
        let info = request.extensions().get::<ConnectionInfo>().copied();
        lab.open(
            id,
            TapConnection {
                transport,
                peer: info.map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |i| i.peer),
                conn_id: info.map_or(0, |i| i.conn_id),
            },
        )
        .map_err(|refused| Rejection::new("forbidden", refused.reason))
    }

    /// The context handed to transports with each request.
    pub fn transport_context(&self) -> TransportContext {
        TransportContext {
            bus: Arc::clone(&self.bus),
            shutdown: self.shutdown.clone(),
            tasks: self.tasks.clone(),
            auth: self.auth.clone(),
            publish_gate: self
                .publish_gate
                .clone()
                .map(|gate| gate as Arc<dyn PublishGate>),
        }
    }

    /// Whether `GET path` is a transport's long-lived request (an SSE stream, a long-poll
    /// wait), which the lean HTTP/1.1 path serves (see [`crate::h1`]).
    pub(crate) fn long_lived_get(&self, path: &str) -> bool {
        self.transports
            .iter()
            .any(|t| t.long_lived_get() && t.paths().contains(&path))
    }

    /// Routes one request. Never fails: every error becomes a response.
    ///
    /// The browser rules come first, for every route in one place: a CORS preflight is
    /// answered here, a cookie-authenticated `POST` from another site is refused (CSRF), and
    /// the response to an allowed cross-origin request gets its CORS headers.
    ///
    /// A transport's request gets the transport's own future, not one wrapped in this
    /// router's (unless it needs CORS headers): what a long-poll waiter holds while it waits
    /// is the transport's state alone.
    pub fn handle(
        self: Arc<Self>,
        request: Request<Body>,
    ) -> streamgate_core::BoxFuture<'static, Response<Body>> {
        if let Err(rejection) = self.check_listener(&request) {
            return Box::pin(std::future::ready(rejection.into_response()));
        }
        if let Some(response) = self.preflight(&request) {
            return Box::pin(std::future::ready(response));
        }
        if let Err(rejection) = self.check_csrf(&request) {
            return Box::pin(std::future::ready(rejection.into_response()));
        }
        let cors = self.cors_headers(&request);
        let response = self.dispatch(request);
        if cors.is_empty() {
            return response;
        }
        Box::pin(async move {
            let mut response = response.await;
            let headers = response.headers_mut();
            for (name, value) in cors {
                headers.append(name, value);
            }
            response
        })
    }

    /// Which routes each listener serves: the internal listener only the operator's
    /// ([`internal_route`]), never a subscriber's; the public ones everything, except the
    /// operator's routes when `server.public_admin_routes = false`. `404` otherwise, naming
    /// the listener that serves the route.
    fn check_listener<B>(&self, request: &Request<B>) -> Result<(), Rejection> {
        let listener = request
            .extensions()
            .get::<Listener>()
            .copied()
            .unwrap_or(Listener::Public);
        let path = request.uri().path();
        match listener {
            Listener::Internal if !internal_route(path) => Err(Rejection::new(
                "not_found",
                format!(
                    "{path} is not served on the internal listener (server.internal_listen), \
                     which serves /publish/{{topic}}, /healthz, /metrics, /topics and /lab/api/; \
                     subscribers connect to the public listener"
                ),
            )),
            Listener::Public if !self.config.server.public_admin_routes && admin_route(path) => {
                Err(Rejection::new(
                    "not_found",
                    format!(
                        "{path} is served on the internal listener only \
                         (server.public_admin_routes = false)"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The answer to a request on a connection over its listener's cap (see
    /// [`crate::capacity`]): `GET /healthz` gets the node's health (`503` `full` while the
    /// public listener is full), anything else `503` `connection_limit` with `Retry-After`.
    pub(crate) fn refusal_at_cap<B>(
        &self,
        request: &Request<B>,
        listener: Listener,
    ) -> Response<Body> {
        let health = request.uri().path() == "/healthz"
            && (request.method() == Method::GET || request.method() == Method::HEAD);
        if health {
            return self.healthz();
        }
        let slots = self.slots(listener);
        let setting = match listener {
            Listener::Public => "server.max_connections",
            Listener::Internal => "server.internal_max_connections",
        };
        Rejection::new(
            crate::capacity::CONNECTION_LIMIT,
            format!(
                "the gateway is full: {} of {} connections open on its {} listener ({setting}); \
                 retry later, or another node",
                slots.open(),
                slots.cap(),
                listener.name(),
            ),
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
        .retry_after(crate::capacity::FULL_RETRY_AFTER_SECS)
        .into_response()
    }

    /// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: `204` with the CORS
    /// headers for an origin in `http.cors_origins`, else `403` `cors_not_allowed`.
    fn preflight<B>(&self, request: &Request<B>) -> Option<Response<Body>> {
        if request.method() != Method::OPTIONS || !cors_applies(request) {
            return None;
        }
        let origin = request.headers().get(header::ORIGIN)?.to_str().ok()?;
        let method = request
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)?
            .to_str()
            .ok()?;
        Some(match self.cors.preflight(origin, method) {
            Preflight::Allowed(headers) => {
                let mut response = Response::new(streamgate_core::full_body(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                response.headers_mut().extend(headers);
                response
            }
            Preflight::Refused(reason) => Rejection::new("cors_not_allowed", reason)
                .with_status(StatusCode::FORBIDDEN)
                .into_response(),
        })
    }

    /// The CORS headers for the response to `request` (none without `Origin`, or for an
    /// origin the allow-list does not name).
    fn cors_headers<B>(&self, request: &Request<B>) -> Vec<(HeaderName, HeaderValue)> {
        if !self.cors.is_enabled() || !cors_applies(request) {
            return Vec::new();
        }
        request
            .headers()
            .get(header::ORIGIN)
            .and_then(|origin| origin.to_str().ok())
            .map(|origin| self.cors.response_headers(origin))
            .unwrap_or_default()
    }

    /// With `[auth]` on, a `POST` whose token is the cookie (which the browser attaches
    /// whichever site made the request) must come from the gateway's own origin or one
    /// listed in `http.cors_origins` or `ws.origins.allow` (docs/PROTOCOL.md §8): `403`
    /// `csrf` otherwise.
    fn check_csrf<B>(&self, request: &Request<B>) -> Result<(), Rejection> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        if request.method() != Method::POST {
            return Ok(());
        }
        let source =
            credential_from_request(request.headers(), request.uri().query(), auth.cookie_name())
                .map(|(_, source)| source);
        if source != Some(TokenSource::Cookie) {
            return Ok(());
        }
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let scheme = request_scheme(request);
        let host = header(header::HOST).or(request.uri().authority().map(|a| a.as_str()));
        check_cookie_request(
            CsrfRequest {
                origin: header(header::ORIGIN),
                sec_fetch_site: header(HeaderName::from_static("sec-fetch-site")),
                scheme,
                host,
            },
            &self.csrf_trusted,
        )
        .map_err(|reason| Rejection::new("csrf", reason).with_status(StatusCode::FORBIDDEN))
    }

    /// Hands the request to its transport or to the gateway's own routes.
    fn dispatch(
        self: Arc<Self>,
        request: Request<Body>,
    ) -> streamgate_core::BoxFuture<'static, Response<Body>> {
        let path = request.uri().path();
        let Some(transport) = self
            .transports
            .iter()
            .find(|t| t.paths().contains(&path))
            .cloned()
        else {
            return Box::pin(self.route(request));
        };
        let mut request = request;
        let tap = match self.tap_for(&request, transport.name()) {
            Ok(Some(tap)) => tap,
            Ok(None) => return transport.handle(request, self.transport_context()),
            Err(rejection) => return Box::pin(std::future::ready(rejection.into_response())),
        };
        let version = request.version();
        tap.record(
            Direction::In,
            RecordKind::HttpHead,
            &capture::request_head(&request),
        );
        // For transports that record bytes only they see (the upgraded WebSocket).
        request.extensions_mut().insert(tap.clone());
        let response = transport.handle(request, self.transport_context());
        Box::pin(
            async move { capture::tapped_response(response.await, version, tap, transport.name()) },
        )
    }

    /// The gateway's own routes.
    async fn route(self: Arc<Self>, request: Request<Body>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        if let Some(refusal) = self.switches.refusal(&path) {
            return refusal.into_response();
        }
        let result = match (request.method(), path.as_str()) {
            (_, crate::client_module::PATH) => Ok(crate::client_module::handle(&request)),
            (&Method::GET | &Method::HEAD, "/healthz") => Ok(self.healthz()),
            (_, "/healthz") => Err(Rejection::method_not_allowed("GET, HEAD")),
            (&Method::GET, "/topics") => Ok(self.topics().await),
            (_, "/topics") => Err(Rejection::method_not_allowed("GET")),
            (method, "/metrics") => match &self.metrics {
                Some(_) if method != Method::GET => Err(Rejection::method_not_allowed("GET")),
                Some(handle) => Ok(self.metrics(handle).await),
                None => Err(Rejection::not_found(&path)),
            },
            // Browsers ask for it on every page (the lab's included): nothing, and no 404.
            (&Method::GET | &Method::HEAD, "/favicon.ico") => Ok(no_favicon()),
            (_, p) if p == "/lab" || p.starts_with("/lab/") => match &self.lab {
                Some(lab) => Ok(lab.handle(&self, &request)),
                None => Err(Rejection::not_found(&path)),
            },
            (method, p) if p.starts_with("/publish/") => {
                if method == Method::POST {
                    self.publish(request, &p["/publish/".len()..]).await
                } else {
                    Err(Rejection::method_not_allowed("POST"))
                }
            }
            _ => Err(Rejection::not_found(&path)),
        };
        result.unwrap_or_else(Rejection::into_response)
    }

    /// `GET /healthz`: whether this node takes new subscribers. `200` `ok`; else `503` with
    /// `status` `shutting_down`, `degraded` (the bus is unavailable) or `full` (the public
    /// listeners are at `server.max_connections`: no slot for another connection, while the
    /// connections open are served), so a load balancer sends new clients elsewhere. `open`
    /// and `cap` are the public listeners' connections and cap, on every listener.
    fn healthz(&self) -> Response<Body> {
        let health = self.bus.health();
        let shutting_down = self.shutdown.is_cancelled();
        let public = &self.public_slots;
        let full = public.is_full();
        let status = if shutting_down {
            "shutting_down"
        } else if !health.available {
            "degraded"
        } else if full {
            "full"
        } else {
            "ok"
        };
        let code = if status == "ok" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let listener =
            |slots: &ListenerSlots| serde_json::json!({"open": slots.open(), "cap": slots.cap()});
        let mut response = json(
            code,
            &serde_json::json!({
                "status": status,
                "open": public.open(),
                "cap": public.cap(),
                "listeners": {
                    "public": listener(public),
                    "internal": self.internal_slots.as_ref().map(listener),
                },
                "uptime_s": self.started.elapsed().as_secs(),
                "transports": self.switches.to_json(),
                "bus": {
                    "backend": health.backend,
                    "available": health.available,
                    "epoch": health.epoch.as_str(),
                    "detail": health.detail,
                },
            }),
        );
        if status == "full" {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::capacity::FULL_RETRY_AFTER_SECS),
            );
        }
        response
    }

    /// `GET /metrics`: the Prometheus text exposition format (docs/METRICS.md).
    async fn metrics(
        &self,
        handle: &metrics_exporter_prometheus::PrometheusHandle,
    ) -> Response<Body> {
        let text = crate::prometheus::render(handle, self.bus.as_ref()).await;
        let mut response = Response::new(streamgate_core::full_body(text));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// Whether `GET /metrics` is served (for the upkeep task).
    pub(crate) fn metrics_handle(&self) -> Option<&metrics_exporter_prometheus::PrometheusHandle> {
        self.metrics.as_ref()
    }

    async fn topics(&self) -> Response<Body> {
        let epoch = self.bus.health().epoch;
        let topics: Vec<_> = self
            .bus
            .topic_stats()
            .await
            .into_iter()
            .map(|t| {
                let id = |seq: Option<u64>| seq.map(|s| format!("{epoch}:{s}"));
                serde_json::json!({
                    "topic": t.topic.as_str(),
                    "published": t.published,
                    "subscribers": t.subscribers,
                    "history": {
                        "events": t.history.len,
                        "bytes": t.history.bytes,
                        "first_id": id(t.history.first_seq),
                        "last_id": id(t.history.last_seq),
                    },
                })
            })
            .collect();
        json(StatusCode::OK, &serde_json::json!({ "topics": topics }))
    }

    /// `POST /publish/{topic}`: the body is the payload, published as one event.
    async fn publish(
        &self,
        request: Request<Body>,
        topic: &str,
    ) -> Result<Response<Body>, Rejection> {
        let client = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| info.peer.ip());
        let gate = self
            .publish_gate
            .as_deref()
            .map(|gate| gate as &dyn PublishGate);
        let publisher = ClientPublish::new(self.bus.as_ref(), gate, client, &self.publishes);
        // First of all: a flooding client costs no token check, no body read, no publish.
        publisher.admit_rate()?;
        let topic = Topic::new(topic).map_err(Rejection::from)?;
        publisher.admit_topic(&topic)?;
        // Before the body is read: an unauthorized publisher does not get to upload.
        if let Some(auth) = &self.auth {
            let allowed = auth
                .authenticate(request.headers(), request.uri().query())
                .and_then(|grant| grant.check_publish(&topic));
            if let Err(e) = allowed {
                return Err(Rejection::from(&e));
            }
        }
        let declared = declared_content_type(&request)?;
        let max = self.config.bus.max_payload;
        let too_large = |size: String| {
            Rejection::new(
                "payload_too_large",
                format!("payload is {size} bytes, the limit is {max}"),
            )
        };
        if let Some(length) = content_length(&request) {
            if length > max as u64 {
                return Err(too_large(length.to_string()));
            }
        }
        let payload = match read_body_limited(request.into_body(), max).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return Err(too_large("over".to_owned())),
            Err(e) => return Err(Rejection::body_read(&e)),
        };
        let content_type = declared.unwrap_or_else(|| sniff_content_type(&payload));
        let event = publisher.publish(topic, content_type, payload).await?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "id": event.id.to_string(),
                "topic": event.topic.as_str(),
                "timestamp_us": event.timestamp_us,
                "content_type": event.content_type.as_str(),
            }),
        ))
    }
}

/// The routes of the internal listener: publishing, health, metrics, topics and the lab's
/// API (the lab page and every transport are the public listener's).
fn internal_route(path: &str) -> bool {
    admin_route(path) || path == "/healthz" || path.starts_with("/lab/api/")
}

/// `GET /favicon.ico`: `204`, cached for a day, so a browser on the lab logs neither a
/// warning in the gateway nor a 404 in its console.
fn no_favicon() -> Response<Body> {
    let mut response = Response::new(streamgate_core::full_body(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

/// The operator's routes that `server.public_admin_routes = false` keeps off the public
/// listeners.
fn admin_route(path: &str) -> bool {
    path.starts_with("/publish/") || path == "/metrics" || path == "/topics"
}

/// Whether the CORS rules concern this request: not a WebSocket upgrade (no CORS there; the
/// handshake checks `Origin` itself), not the lab, and not the client module (public, with
/// `Access-Control-Allow-Origin: *` of its own, see [`crate::client_module`]).
fn cors_applies<B>(request: &Request<B>) -> bool {
    let path = request.uri().path();
    !(path == "/lab"
        || path.starts_with("/lab/")
        || path == "/ws"
        || path.starts_with("/ws/")
        || path == crate::client_module::PATH)
}

/// The transports `config` turns on (`[ws]`, `[longpoll]`, `[sse]` `enabled`; WebTransport's
/// `/wt/cert-hash` is added at bind time, when its listener is).
fn enabled_transports(config: &GatewayConfig) -> Vec<Arc<dyn HttpTransport>> {
    let _ = config;
    #[cfg_attr(
        not(any(feature = "ws", feature = "longpoll", feature = "sse")),
        allow(unused_mut)
    )]
    let mut transports: Vec<Arc<dyn HttpTransport>> = Vec::new();
    #[cfg(feature = "ws")]
    if config.ws.enabled {
        transports.push(Arc::new(
            ws::WsTransport::new(config.ws.clone()).with_lab(config.lab_decision().on),
        ));
    }
    #[cfg(feature = "longpoll")]
    if config.longpoll.enabled {
        transports.push(Arc::new(longpoll::LongPollTransport::new(
            config.longpoll.clone(),
        )));
    }
    #[cfg(feature = "sse")]
    if config.sse.enabled {
        transports.push(Arc::new(sse::SseTransport::new(config.sse.clone())));
    }
    transports
}

/// Records which connection a request came in on, for transports' logs and limits, and
/// gives it the connection's lease (see [`ConnectionLease`]).
pub(crate) fn tag_connection(
    request: &mut Request<Body>,
    info: ConnectionInfo,
    lease: &ConnectionLease,
    listener: Listener,
) {
    request.extensions_mut().insert(info);
    request.extensions_mut().insert(listener);
    request.extensions_mut().insert(lease.clone());
}

fn content_length(request: &Request<Body>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The content type the publisher asked for: `?content_type=` first, then the `Content-Type`
/// header. `None` means "sniff it from the payload".
fn declared_content_type(request: &Request<Body>) -> Result<Option<ContentType>, Rejection> {
    let from_query = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("content_type="))
    });
    if let Some(name) = from_query {
        return ContentType::from_name(name).map(Some).ok_or_else(|| {
            Rejection::new(
                "bad_content_type",
                format!("content_type must be text, json or binary, got {name:?}"),
            )
        });
    }
    let Some(header) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let mime = header
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(if mime == "application/json" || mime.ends_with("+json") {
        Some(ContentType::Json)
    } else if mime.starts_with("text/") {
        Some(ContentType::Text)
    } else if mime == "application/octet-stream" {
        Some(ContentType::Binary)
    } else {
        None
    })
}

/// JSON if the payload is one I-JSON value (what a declared `json` payload must be), text if
/// it is UTF-8, binary otherwise. A payload that is JSON but not I-JSON (a lone surrogate
/// escape, a repeated name, nesting past the limit) is therefore published as text: it reaches
/// subscribers as a JSON string, which every parser reads.
fn sniff_content_type(payload: &[u8]) -> ContentType {
    if ContentType::Json.validate(payload).is_ok() {
        ContentType::Json
    } else if ContentType::Text.validate(payload).is_ok() {
        ContentType::Text
    } else {
        ContentType::Binary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(sniff_content_type(br#"{"a":1}"#), ContentType::Json);
        assert_eq!(sniff_content_type(b"hello"), ContentType::Text);
        assert_eq!(sniff_content_type(b"\xff\x00"), ContentType::Binary);
        for not_i_json in [
            r#"{"s":"\ud800"}"#.to_owned(),
            r#"{"a":1,"a":2}"#.to_owned(),
            format!("{}{}", "[".repeat(300), "]".repeat(300)),
        ] {
            assert_eq!(
                sniff_content_type(not_i_json.as_bytes()),
                ContentType::Text,
                "{not_i_json}"
            );
        }
    }
}
