//! # The teaching lab
//!
//! `GET /lab` is one page that subscribes to the same topics over all four transports side by
//! side (WebSocket, SSE, long polling, WebTransport), measures each, and shows what each one
//! really put on the wire, annotated field by field.
//!
//! The wire view comes from *taps* inside the gateway, not from the browser (which hides
//! frames and headers from pages):
//!
//! 1. The page asks the gateway for its tap ids (`POST /lab/api/taps`, one per transport):
//!    each is 128 random bits, bound to the client IP that asked. It adds `lab=<tap id>` to
//!    the URLs it opens. [`crate::App`] gives such a request a [`Tap`](streamgate_core::Tap)
//!    (in its extensions) and records its request head; every other request gets none, and
//!    costs nothing more than looking for `lab=` in its query. An id the lab did not issue
//!    records nothing (the connection is served, untapped); an id issued to another client
//!    is refused (`403`, WebTransport `4403`).
//! 2. Whoever holds the bytes records them, once, with no parsing: the gateway the response
//!    head and each chunk of a streaming body (`streamgate_lab::capture`), the WebSocket
//!    transport the bytes of the upgraded socket, the WebTransport transport its session
//!    events, stream writes and datagrams.
//! 3. Records go to a bounded ring per tap (`streamgate_lab::taps`).
//! 4. Only when the inspector asks (`GET /lab/api/taps/{id}`) are records put back together
//!    and annotated by `streamgate_lab::wire_notes` (`streamgate_lab::view`).
//!
//! This module is the gateway's side of it: the routes, which need the gateway's state; the
//! store, the views and the annotator are the `streamgate-lab` crate's.
//!
//! ## Routes
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /lab` | the page (HTML, CSS and JS embedded in the binary; no CDN, no build step) |
//! | `GET /lab/api/config` | topics, WebSocket compression, WebTransport URL and certificate hash, tap limits |
//! | `POST /lab/api/taps` | `201`: a new tap issued to the caller (`id`, and its summary); `429` over a bound |
//! | `GET /lab/api/taps?ids=<id>,<id>` | the caller's own taps among those named: transport, peer, records, bytes each way |
//! | `GET /lab/api/taps/{id}?after=<seq>` | the tap's records after `seq`, annotated (its owner only) |
//! | `DELETE /lab/api/taps/{id}` | `204`: the tap is forgotten (its owner only) |
//!
//! Errors are the gateway's JSON errors (`docs/PROTOCOL.md` §6): an unknown tap is a `404`,
//! another client's a `403`. Nothing lists taps the caller does not name. With the lab off
//! (`lab.enabled = false`, or `"auto"` on a non-loopback listener) none of this exists:
//! `/lab` is a `404` and `lab=` is ignored.

pub(crate) use streamgate_lab::capture;

use std::net::IpAddr;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use streamgate_core::{
    full_body, ConnectionInfo, Rejection, Tap, TapConnection, TapRefused, TapRegistry,
};

use crate::config::LabConfig;
use crate::http::{json, Body};
use crate::App;

use streamgate_lab::taps::{client_ip, Denied, IssueRefusal, TapLimits, Taps};
use streamgate_lab::view;

/// The topic the page's publish button publishes to (and every panel subscribes to, beside
/// the demo topic): events the page itself made, so it can tell whether a resumed connection
/// missed any.
pub(crate) const LAB_TOPIC: &str = "lab";

const INDEX_HTML: &str = include_str!("../../lab/index.html");
const LAB_CSS: &str = include_str!("../../lab/lab.css");
const LAB_JS: &str = include_str!("../../lab/lab.js");

/// The lab: its taps and its routes. One per gateway, when `[lab] enabled`.
#[derive(Debug)]
pub(crate) struct Lab {
    limits: TapLimits,
    taps: Taps,
}

impl Lab {
    /// A lab with no taps yet.
    pub(crate) fn new(config: LabConfig) -> Self {
        let limits = TapLimits {
            max_connections: config.max_connections,
            taps_per_client: config.taps_per_client,
            records_per_connection: config.records_per_connection,
            max_record_bytes: config.max_record_bytes,
        };
        Self {
            taps: Taps::new(limits),
            limits,
        }
    }

    /// Serves a request under `/lab`.
    pub(crate) fn handle(&self, app: &App, request: &Request<Body>) -> Response<Body> {
        self.route(app, request)
            .unwrap_or_else(Rejection::into_response)
    }

    fn route(&self, app: &App, request: &Request<Body>) -> Result<Response<Body>, Rejection> {
        let path = request.uri().path();
        let method = request.method();
        let caller = caller_ip(request);
        let read_only = || {
            if method == Method::GET || method == Method::HEAD {
                Ok(())
            } else {
                Err(Rejection::method_not_allowed("GET, HEAD"))
            }
        };
        match path {
            "/lab" | "/lab/" => read_only().map(|()| asset(INDEX_HTML, "text/html; charset=utf-8")),
            "/lab/lab.css" => read_only().map(|()| asset(LAB_CSS, "text/css; charset=utf-8")),
            "/lab/lab.js" => read_only().map(|()| asset(LAB_JS, "text/javascript; charset=utf-8")),
            "/lab/api/config" => read_only().map(|()| api(self.page_config(app))),
            "/lab/api/taps" => match *method {
                Method::POST => self.issue(caller),
                Method::GET | Method::HEAD => self.list(request.uri().query(), caller),
                _ => Err(Rejection::method_not_allowed("GET, HEAD, POST")),
            },
            _ => match path.strip_prefix("/lab/api/taps/") {
                Some(id) => match *method {
                    Method::GET | Method::HEAD => self.tap(id, request.uri().query(), caller),
                    Method::DELETE => self.release(id, caller),
                    _ => Err(Rejection::method_not_allowed("GET, HEAD, DELETE")),
                },
                None => Err(Rejection::not_found(path)),
            },
        }
    }

    /// `POST /lab/api/taps`: a new tap for the caller.
    fn issue(&self, caller: IpAddr) -> Result<Response<Body>, Rejection> {
        let summary = self.taps.issue(caller).map_err(|refusal| {
            let reason = match refusal {
                IssueRefusal::ClientFull { limit } => format!(
                    "{caller} already holds {limit} lab taps (lab.taps_per_client), each with \
                     a live connection: close one, or DELETE /lab/api/taps/<id> one"
                ),
                IssueRefusal::LabFull { limit } => format!(
                    "all {limit} lab taps (lab.max_connections) have live connections: try \
                     again when one ends"
                ),
            };
            Rejection::new("too_many_taps", reason).with_status(StatusCode::TOO_MANY_REQUESTS)
        })?;
        let mut response = api(serde_json::json!({
            "id": summary.id,
            "param": format!("{}={}", streamgate_core::TAP_QUERY_PARAM, summary.id),
            "tap": summary,
            "limits": self.limits(),
        }));
        *response.status_mut() = StatusCode::CREATED;
        Ok(response)
    }

    /// `GET /lab/api/taps?ids=a,b`: the caller's own taps among those it names.
    fn list(&self, query: Option<&str>, caller: IpAddr) -> Result<Response<Body>, Rejection> {
        let ids = query
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("ids="))
            .ok_or_else(|| {
                Rejection::new(
                    "bad_query",
                    "name your taps: GET /lab/api/taps?ids=<id>,<id> (the lab lists nobody's \
                     taps unasked; POST /lab/api/taps issues one)",
                )
                .with_status(StatusCode::BAD_REQUEST)
            })?;
        // A comma may come percent-encoded; ids themselves never need encoding.
        let ids = ids.replace("%2C", ",").replace("%2c", ",");
        // Bounded work per request, whatever the query holds.
        const MOST_IDS: usize = 64;
        let ids = ids.split(',').filter(|id| !id.is_empty()).take(MOST_IDS);
        let (taps, missing) = self.taps.summaries(ids, caller);
        Ok(api(serde_json::json!({
            "now_us": self.taps.now_us(),
            "limits": self.limits(),
            "taps": taps,
            "missing": missing,
        })))
    }

    /// `DELETE /lab/api/taps/{id}`.
    fn release(&self, id: &str, caller: IpAddr) -> Result<Response<Body>, Rejection> {
        self.taps.release(id, caller).map_err(tap_denied)?;
        let mut response = Response::new(full_body(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    fn limits(&self) -> serde_json::Value {
        serde_json::json!(self.limits)
    }

    fn page_config(&self, app: &App) -> serde_json::Value {
        let config = &app.config;
        #[cfg(feature = "ws")]
        let ws_compression = Some(config.ws.compression);
        #[cfg(not(feature = "ws"))]
        let ws_compression: Option<bool> = None;
        serde_json::json!({
            "demo_topic": config.demo.topic.as_str(),
            "demo_enabled": config.demo.enabled,
            "demo_rate": config.demo.rate,
            "lab_topic": LAB_TOPIC,
            // What is served: built in and not turned off in the configuration.
            "transports": app.transports_json(),
            "ws_compression": ws_compression,
            "webtransport": app.webtransport_cert(),
            "limits": self.limits(),
        })
    }

    /// `GET /lab/api/taps/{id}?after=<seq>`.
    fn tap(
        &self,
        id: &str,
        query: Option<&str>,
        caller: IpAddr,
    ) -> Result<Response<Body>, Rejection> {
        let after = parse_after(query)?;
        let snapshot = self.taps.snapshot(id, caller).map_err(tap_denied)?;
        // Annotation happens here, on the inspector's request, outside every lock.
        let view = view::view(&snapshot.records, after);
        Ok(api(serde_json::json!({
            "now_us": self.taps.now_us(),
            "tap": snapshot.summary,
            "next_after": view.next_after,
            "items": view.items,
        })))
    }
}

impl TapRegistry for Lab {
    fn open(&self, id: &str, connection: TapConnection) -> Result<Option<Tap>, TapRefused> {
        self.taps.open(id, connection)
    }
}

/// The client address of the request's connection; `0.0.0.0` for a request with none (an
/// embedder calling [`App::handle`] directly), which then owns the taps it asks for.
fn caller_ip<B>(request: &Request<B>) -> IpAddr {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| client_ip(info.peer))
}

/// The answer to a request naming a tap it may not use. The id is not echoed: it is a
/// capability, and refusals are logged.
fn tap_denied(denied: Denied) -> Rejection {
    match denied {
        Denied::Unknown => Rejection::new(
            "not_found",
            "no such tap: it was never issued, or was reclaimed; POST /lab/api/taps issues a new one",
        )
        .with_status(StatusCode::NOT_FOUND),
        Denied::Foreign => Rejection::new(
            "forbidden",
            "this tap was issued to another client: a tap is read only by the client it was \
             issued to",
        )
        .with_status(StatusCode::FORBIDDEN),
    }
}

/// `after=<seq>`: records up to `seq` were already seen. Absent means from the start.
fn parse_after(query: Option<&str>) -> Result<u64, Rejection> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="));
    match value {
        None | Some("") => Ok(0),
        Some(text) => text.parse().map_err(|_| {
            Rejection::new(
                "bad_query",
                format!("after must be a record number (0 or more), got {text:?}"),
            )
            .with_status(StatusCode::BAD_REQUEST)
        }),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full_body(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Embedded in the binary, so it changes with the gateway: revalidate rather than cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A JSON answer that describes one moment: never cached.
fn api(value: serde_json::Value) -> Response<Body> {
    let mut response = json(StatusCode::OK, &value);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A shareable handle on the lab, for a transport with its own listener (WebTransport).
#[cfg(feature = "webtransport")]
pub(crate) fn registry(lab: &std::sync::Arc<Lab>) -> std::sync::Arc<dyn TapRegistry> {
    std::sync::Arc::clone(lab) as std::sync::Arc<dyn TapRegistry>
}
