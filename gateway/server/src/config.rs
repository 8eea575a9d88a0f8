//! Gateway configuration: a TOML file, overridden by command-line flags.
//!
//! Every field has a default, so an empty file (or no file) is a complete configuration.
//! Unknown fields are errors: a typo must not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use streamgate_core::{ContentType, HistoryConfig, MemoryBusConfig, Topic};

/// The whole gateway configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// HTTP listener settings.
    pub server: ServerConfig,
    /// What the HTTP routes tell browsers: the CORS allow-list.
    pub http: HttpConfig,
    /// The HTTPS listener (HTTP/2 and HTTP/1.1).
    pub tls: TlsConfig,
    /// Event bus settings.
    pub bus: BusConfig,
    /// The synthetic demo source.
    pub demo: DemoConfig,
    /// Upstream WebSocket feeds to republish.
    pub sources: Vec<SourceConfig>,
    /// The teaching lab (`GET /lab`) and the wire taps behind it.
    pub lab: LabConfig,
    /// Prometheus metrics on `GET /metrics` (docs/METRICS.md).
    pub metrics: MetricsConfig,
    /// JWT authentication and topic authorization (off by default).
    pub auth: crate::auth::AuthConfig,
    /// The WebSocket transport.
    #[cfg(feature = "ws")]
    pub ws: ws::WsConfig,
    /// The long-polling transport.
    #[cfg(feature = "longpoll")]
    pub longpoll: longpoll::LongPollConfig,
    /// The Server-Sent Events transport.
    #[cfg(feature = "sse")]
    pub sse: sse::SseConfig,
    /// The WebTransport transport (its own UDP listener).
    #[cfg(feature = "webtransport")]
    pub webtransport: webtransport::WtConfig,
}

/// HTTP listener settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address of the HTTP listener. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Most simultaneous connections on the public listeners (`listen` and `tls.listen`
    /// together). An upgraded WebSocket holds its slot until its session ends (here and per
    /// IP). A connection over it is still accepted and answered at once, then closed: `503`
    /// `connection_limit` with `Retry-After` (a WebSocket upgrade is refused the same way,
    /// before the upgrade), and `GET /healthz` answers `503` `"status":"full"`, so a load
    /// balancer sends new clients elsewhere. Default: 10 000.
    pub max_connections: usize,
    /// Address of the internal listener (plain HTTP): `POST /publish/{topic}`, `GET /healthz`,
    /// `GET /metrics`, `GET /topics` and the lab's API (`/lab/api/…`, when the lab is on), with
    /// a connection cap of its own (`internal_max_connections`), so that a gateway whose
    /// public listener is full still takes publishes and answers its health check. It serves
    /// no subscriber route (`404` naming the public listener). Bind it to loopback or a
    /// private network only: it is meant for publishers, health checks and scrapers, not for
    /// clients. Default: none (off).
    pub internal_listen: Option<SocketAddr>,
    /// Most simultaneous connections on the internal listener, never shared with the public
    /// ones; over it, `503` `connection_limit` as on the public listener. No per-IP limit
    /// applies there. Default: 256.
    pub internal_max_connections: usize,
    /// Whether the public listeners also serve the operator's routes (`POST /publish/{topic}`,
    /// `GET /metrics`, `GET /topics`). `false` answers them `404` there (naming the internal
    /// listener), and needs `internal_listen`. `/healthz` is served on every listener.
    /// Default: true.
    pub public_admin_routes: bool,
    /// Most simultaneous connections from one IP address, on top of `max_connections`; 0 means
    /// no such limit. A plain HTTP connection over it is answered at once with `429`
    /// `too_many_connections` and closed; a TLS one is closed right after accept. Loopback is
    /// not exempt: behind a reverse proxy every client has the proxy's address, so raise it
    /// (or set 0) there. Default: 256.
    pub max_connections_per_ip: usize,
    /// Accept backlog of the listeners (the kernel caps it at `net.core.somaxconn`).
    /// Default: 4096.
    pub backlog: u32,
    /// Time a client has to send its request head (slowloris defence): the first bytes within
    /// it of the accept, then the whole head within it of its first byte, also when the lean
    /// HTTP/1.1 path hands an unfinished head to hyper. Default: 10 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub header_read_timeout: Duration,
    /// Time a request body has to arrive whole, from the end of its head (`POST /publish`,
    /// `POST /poll`); a body not complete by then is answered `408` `body_timeout` and the
    /// connection closed. 0 means no limit. Default: 10 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub body_read_timeout: Duration,
    /// How long shutdown waits for connections to finish before exiting. Default: 10 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub shutdown_grace: Duration,
    /// A connection with no request in progress and no open response stream (an SSE stream,
    /// a long poll) is closed after this long: an HTTP/2 connection with a `GOAWAY`, an
    /// HTTP/1.1 one between two requests (an HTTP/1.1 connection waiting for its next
    /// request is also held no longer than `header_read_timeout`). 0 means no such limit.
    /// Default: 60 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub idle_timeout: Duration,
    /// HTTP/2: silence from the client after which the server sends a `PING`, so that a dead
    /// peer is found even while it has streams open. 0 turns the pings off. Default: 20 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub http2_ping_interval: Duration,
    /// HTTP/2: time a pinged client has to acknowledge before the connection is closed.
    /// Default: 20 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub http2_ping_timeout: Duration,
    /// Publishes per second allowed per client IP, one token bucket across every publish path
    /// (`POST /publish/{topic}`, `POST /poll`, WebSocket and WebTransport `publish`
    /// messages). Over it, HTTP answers `429` `rate_limited` with `Retry-After`; a WebSocket or
    /// WebTransport session gets an `error` reply with code `rate_limited` to that publish
    /// and stays open. Behind a reverse proxy every client has the proxy's address: raise it
    /// (or set 0) there. 0 means no limit. Default: 1000.
    pub publish_rate: f64,
    /// Burst of publishes allowed per client IP. Default: 2000.
    pub publish_burst: u32,
    /// Publishes per second per client IP that may create a topic that does not exist yet
    /// (a second token bucket, taken on top of `publish_rate`). Over it the publish is
    /// refused like one over the rate, with code `topic_budget`. It keeps one client making
    /// up topic names from churning the topic table (`bus.max_topics`) that others use.
    /// 0 means no limit. Default: 10.
    pub topic_create_rate: f64,
    /// Burst of new topics allowed per client IP. Default: 100.
    pub topic_create_burst: u32,
    /// Serve the long-lived `GET`s (`/sse`, `GET /poll`) over HTTP/1.1 on the gateway's own
    /// lean path, whose idle cost per connection is a fraction of hyper's; `false` leaves
    /// every request to hyper (for comparison, or should a client disagree with the lean
    /// path). HTTP/2 is always hyper's. Default: true.
    pub lean_http1: bool,
    /// A client that takes nothing the gateway sends for this long (it stopped reading, or it
    /// is gone) is cut; it resumes from its last id when it reconnects. It holds for every
    /// TCP connection (as `TCP_USER_TIMEOUT`: data written and not acknowledged for this long
    /// ends the connection, however much the send buffer could still hold) and for writes on
    /// the lean HTTP/1.1 path that make no progress. 0 means never. Default: 4 s, so that a
    /// stalled reader is gone within 5 s of stopping.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub write_timeout: Duration,
    /// Set `TCP_NODELAY` on every accepted connection, so each write leaves at once.
    /// `false` leaves Nagle's algorithm on: a small write waits while an earlier one is
    /// unacknowledged and then goes out with whatever joined it, fewer packets for less CPU
    /// per event at the price of latency. Default: true.
    pub tcp_nodelay: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 10_000,
            internal_listen: None,
            internal_max_connections: 256,
            public_admin_routes: true,
            max_connections_per_ip: 256,
            backlog: 4096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_ping_interval: Duration::from_secs(20),
            http2_ping_timeout: Duration::from_secs(20),
            publish_rate: 1000.0,
            publish_burst: 2000,
            topic_create_rate: 10.0,
            topic_create_burst: 100,
            lean_http1: true,
            write_timeout: Duration::from_secs(4),
            tcp_nodelay: true,
        }
    }
}

/// Browser-facing rules of the HTTP routes (`/sse`, `/poll`, `/publish/*`, `/wt/cert-hash`,
/// `/healthz`, `/topics`, `/metrics`; not the WebSocket upgrades, which `[ws.origins]`
/// governs, nor the lab).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Origins whose pages may read the gateway's HTTP responses (CORS): exact origins as
    /// browsers send them (`https://app.example.com`, answered with
    /// `Access-Control-Allow-Credentials: true`, so their pages may send the token cookie,
    /// and trusted by the cookie CSRF rule), and/or `"*"` (any page, never with credentials).
    /// Preflight `OPTIONS` requests are answered `204` for these, `403` `cors_not_allowed`
    /// for others. Default: empty, no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer (`Access-Control-Max-Age`), in
    /// seconds. Default: 600.
    pub cors_max_age: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            cors_max_age: 600,
        }
    }
}

/// The HTTPS listener: the same routes as the HTTP listener, over TLS, with HTTP/2 chosen by
/// ALPN (so a browser multiplexes many SSE streams over one connection).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Whether to serve HTTPS. Default: true.
    pub enabled: bool,
    /// Address of the HTTPS listener. Default: `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// PEM certificate chain. Default: none, which generates a self-signed development
    /// certificate (ECDSA P-256, valid one year) at start-up.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            cert: None,
            key: None,
        }
    }
}

/// Event bus settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BusConfig {
    /// Backend: `memory` (one process), `redis` or `nats` (many nodes sharing a broker).
    /// Default: `memory`.
    pub backend: BusBackend,
    /// The Redis backend (used when `backend = "redis"`).
    pub redis: RedisSettings,
    /// The NATS JetStream backend (used when `backend = "nats"`).
    pub nats: NatsSettings,
    /// Events kept per topic for resume. Default: 1000.
    pub history_events: usize,
    /// Bytes kept per topic for resume. Default: 4 MiB.
    pub history_bytes: usize,
    /// Events queued per subscriber before it counts as lagging. Default: 1024.
    pub subscriber_queue: usize,
    /// Largest event payload accepted, in bytes. Default: 1 MiB.
    pub max_payload: usize,
    /// Most topics tracked. When the table is full, a new topic replaces the least recently
    /// used topic without subscribers (a client resuming on that one is told `gap`); only
    /// when every topic has subscribers is a new one refused (`429` `topic_limit`).
    /// Default: 10 000.
    pub max_topics: usize,
    /// Most bytes of history kept across all topics; over it the oldest events of the whole
    /// bus are evicted first, and resuming clients are told `gap`. 0 means no bound (then
    /// `max_topics × history_bytes` is the only one). Default: 256 MiB.
    pub history_memory: usize,
    /// Most topics per subscription. Default: 64.
    pub max_topics_per_subscription: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        let memory = MemoryBusConfig::default();
        Self {
            backend: BusBackend::Memory,
            redis: RedisSettings::default(),
            nats: NatsSettings::default(),
            history_events: memory.history.max_events,
            history_bytes: memory.history.max_bytes,
            subscriber_queue: memory.subscriber_queue,
            max_payload: memory.max_payload,
            max_topics: memory.max_topics,
            history_memory: memory.history_memory,
            max_topics_per_subscription: memory.max_topics_per_subscription,
        }
    }
}

impl BusConfig {
    /// The in-memory bus settings these values describe.
    pub fn memory(&self) -> MemoryBusConfig {
        MemoryBusConfig::default()
            .history(
                HistoryConfig::default()
                    .max_events(self.history_events)
                    .max_bytes(self.history_bytes),
            )
            .subscriber_queue(self.subscriber_queue)
            .max_payload(self.max_payload)
            .max_topics(self.max_topics)
            .history_memory(self.history_memory)
            .max_topics_per_subscription(self.max_topics_per_subscription)
    }
}

/// Bus backends.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BusBackend {
    /// The embedded in-memory bus (one process).
    Memory,
    /// Redis Streams hold ids and history; every node mirrors them (see `docs/SCALE_OUT.md`).
    Redis,
    /// A NATS JetStream stream holds ids and history; every node mirrors it.
    Nats,
}

impl BusBackend {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
    }
}

/// Where the Redis backend keeps the shared log.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSettings {
    /// Server URL (`redis://[user:password@]host:port[/db]`). Default: `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key, so several gateways (or tests) can share one Redis.
    /// Default: `streamgate`.
    pub prefix: String,
    /// How events travel to the nodes: `pubsub` or `xread`. Default: `pubsub`.
    pub fanout: RedisFanout,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "streamgate".to_owned(),
            fanout: RedisFanout::PubSub,
        }
    }
}

/// How the Redis backend carries events to the nodes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RedisFanout {
    /// Redis Pub/Sub (the append script publishes each event).
    PubSub,
    /// A blocking `XREAD` on one stream of all events.
    Xread,
}

/// Where the NATS backend keeps the shared log.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsSettings {
    /// Server URL. Default: `nats://127.0.0.1:4222`.
    pub url: String,
    /// JetStream stream name. Default: `STREAMGATE`.
    pub stream: String,
    /// Subject prefix of the stream's subjects. Default: `streamgate`.
    pub subject_prefix: String,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "STREAMGATE".to_owned(),
            subject_prefix: "streamgate".to_owned(),
        }
    }
}

/// The synthetic demo source: BGP-update-like events in the shape of RIS Live messages.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DemoConfig {
    /// Whether the demo source runs. Default: true.
    pub enabled: bool,
    /// Topic it publishes to. Default: `demo`.
    #[serde(deserialize_with = "de_topic")]
    pub topic: Topic,
    /// Events per second. Default: 5.
    pub rate: f64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: Topic::new("demo").expect("valid topic"),
            rate: 5.0,
        }
    }
}

/// The teaching lab: `GET /lab`, its JSON API under `/lab/api/`, and the wire taps that
/// record what connections which ask for it (`lab=<tap id>` in their URL) send and receive.
///
/// Tap ids are capabilities the lab issues (`POST /lab/api/taps`) to one client IP: only that
/// client can attach a connection to a tap or read it, and nobody can list taps they do not
/// name. Only connections that ask are tapped: an ordinary client pays one `Option` check per
/// read, write or body chunk. Memory is bounded by
/// `max_connections × records_per_connection × max_record_bytes` (64 MiB with the defaults,
/// a bound seldom approached: most records are one event's bytes, well under 4 KiB).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LabConfig {
    /// Whether `/lab`, `/lab/api/*` and the taps exist: `true`, `false`, or `"auto"`, which
    /// turns the lab on only when every HTTP listener (`server.listen`, and `tls.listen`
    /// when TLS is on) is a loopback address, so that a gateway on a public address does not
    /// serve it unless told to. When off, `lab=` is ignored and `/lab` answers 404.
    /// Default: `"auto"`.
    pub enabled: LabSwitch,
    /// Most taps issued at once, all clients together. Asking for another reclaims the least
    /// recently active tap whose connections have all ended; when every tap has a live
    /// connection, `POST /lab/api/taps` is refused with `429`. Default: 64.
    pub max_connections: usize,
    /// Most taps issued at once to one client IP (the lab page takes one per transport, 4).
    /// Asking for another reclaims that client's least recently active idle tap; when each
    /// of its taps has a live connection, the answer is `429`. Default: 8.
    pub taps_per_client: usize,
    /// Records kept per tap, a ring: the oldest go first. Default: 256.
    pub records_per_connection: usize,
    /// Bytes kept of one record (one read, write, body chunk or message); the rest is cut and
    /// its full length remembered. Default: 4096.
    pub max_record_bytes: usize,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            enabled: LabSwitch::Auto,
            max_connections: 64,
            taps_per_client: 8,
            records_per_connection: 256,
            max_record_bytes: 4096,
        }
    }
}

/// `lab.enabled`: on, off, or on only behind loopback listeners.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabSwitch {
    /// `"auto"`: on when every HTTP listener is a loopback address, else off.
    #[default]
    Auto,
    /// `true`: on, whatever the listeners.
    On,
    /// `false`: off.
    Off,
}

impl From<bool> for LabSwitch {
    fn from(on: bool) -> Self {
        if on {
            Self::On
        } else {
            Self::Off
        }
    }
}

impl<'de> Deserialize<'de> for LabSwitch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bool(on) => Ok(on.into()),
            Raw::Text(text) if text == "auto" => Ok(Self::Auto),
            Raw::Text(text) => Err(serde::de::Error::custom(format!(
                "lab.enabled must be true, false or \"auto\", got {text:?}"
            ))),
        }
    }
}

/// Whether the lab is served, and why: what the gateway logs at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabDecision {
    /// Whether `/lab` and the taps exist.
    pub on: bool,
    /// Why, in words for the log.
    pub why: String,
}

impl GatewayConfig {
    /// Resolves `lab.enabled` against the listeners the lab would be served on.
    pub fn lab_decision(&self) -> LabDecision {
        let mut listeners = vec![("server.listen", self.server.listen)];
        if let Some(internal) = self.server.internal_listen {
            listeners.push(("server.internal_listen", internal));
        }
        if self.tls.enabled {
            listeners.push(("tls.listen", self.tls.listen));
        }
        match self.lab.enabled {
            LabSwitch::On => LabDecision {
                on: true,
                why: "lab.enabled = true".to_owned(),
            },
            LabSwitch::Off => LabDecision {
                on: false,
                why: "lab.enabled = false".to_owned(),
            },
            LabSwitch::Auto => match listeners
                .iter()
                .find(|(_, addr)| !addr.ip().to_canonical().is_loopback())
            {
                None => LabDecision {
                    on: true,
                    why: "lab.enabled = \"auto\" and every HTTP listener is loopback".to_owned(),
                },
                Some((name, addr)) => LabDecision {
                    on: false,
                    why: format!(
                        "lab.enabled = \"auto\" and {name} ({addr}) is not loopback; set \
                         lab.enabled = true to serve the lab there"
                    ),
                },
            },
        }
    }
}

/// Prometheus metrics, rendered in the text exposition format on `GET /metrics` of the
/// gateway's listeners. Every metric is described in `docs/METRICS.md`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Whether metrics are recorded and `GET /metrics` exists (404 when off). The recorder is
    /// process-wide: once a gateway of the process turned it on, it stays on. Default: true.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// One upstream WebSocket feed whose messages are republished to a topic.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SourceConfig {
    /// `ws://` or `wss://` URL of the feed.
    pub url: String,
    /// Topic to publish to. Default: `upstream`.
    #[serde(default = "default_source_topic", deserialize_with = "de_topic")]
    pub topic: Topic,
    /// Text message sent after each connect (for example a subscribe request). Default: none.
    #[serde(default)]
    pub subscribe_message: Option<String>,
    /// Content type of text messages: `auto` (JSON if it parses, else text), `json` or `text`.
    /// Binary messages are always `binary`. Default: `auto`.
    #[serde(default)]
    pub content_type: SourceContentType,
    /// First reconnect delay; doubles up to `reconnect_max`. Default: 0.5 s.
    #[serde(
        default = "default_reconnect_min",
        with = "streamgate_proto::duration_secs"
    )]
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default: 30 s.
    #[serde(
        default = "default_reconnect_max",
        with = "streamgate_proto::duration_secs"
    )]
    pub reconnect_max: Duration,
}

impl SourceConfig {
    /// A source with default settings.
    pub fn new(url: impl Into<String>, topic: Topic) -> Self {
        Self {
            url: url.into(),
            topic,
            subscribe_message: None,
            content_type: SourceContentType::Auto,
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
        }
    }

    /// Sets [`SourceConfig::subscribe_message`].
    pub fn subscribe_message(mut self, message: impl Into<String>) -> Self {
        self.subscribe_message = Some(message.into());
        self
    }

    /// Sets both reconnect delays.
    pub fn reconnect(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }
}

/// How a source labels text messages.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceContentType {
    /// JSON if the message is I-JSON (as a declared `json` publish must be), text otherwise.
    #[default]
    Auto,
    /// Always JSON (messages that are not I-JSON are dropped and counted).
    Json,
    /// Always text.
    Text,
}

impl SourceContentType {
    /// The content type to publish a text message with.
    pub fn classify(self, text: &str) -> ContentType {
        match self {
            Self::Json => ContentType::Json,
            Self::Text => ContentType::Text,
            Self::Auto if ContentType::Json.validate(text.as_bytes()).is_ok() => ContentType::Json,
            Self::Auto => ContentType::Text,
        }
    }
}

fn default_source_topic() -> Topic {
    Topic::new("upstream").expect("valid topic")
}

fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}

fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

fn de_topic<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Topic, D::Error> {
    let name = String::deserialize(deserializer)?;
    Topic::new(&name).map_err(serde::de::Error::custom)
}

/// A configuration file could not be used. Fatal at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a field has a wrong value.
    #[error("{path}:{line}:{column}: {field}{message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// `field `a.b`: ` when the error is about a known field, empty otherwise.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("{path}: {message}")]
    Inconsistent {
        /// The file (or `<flags>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl GatewayConfig {
    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line, column and field.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` is only used in error messages.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line, column and field.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |error: &toml::de::Error, field: String| {
            let (line, column) = error
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                field,
                message: error.message().trim_end().replace('\n', " "),
            }
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| invalid(&e, String::new()))?;
        let config: Self = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." {
                String::new()
            } else {
                format!("field `{field}`: ")
            };
            invalid(e.inner(), field)
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and relations between fields.
    ///
    /// # Errors
    /// [`ConfigError::Inconsistent`].
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let fail = |message: String| {
            Err(ConfigError::Inconsistent {
                path: path.to_owned(),
                message,
            })
        };
        if self.server.max_connections == 0 {
            return fail("server.max_connections must be at least 1".to_owned());
        }
        match self.server.internal_listen {
            Some(_) if self.server.internal_max_connections == 0 => {
                return fail("server.internal_max_connections must be at least 1".to_owned());
            }
            Some(internal) if internal == self.server.listen && internal.port() != 0 => {
                return fail(format!(
                    "server.internal_listen ({internal}) must differ from server.listen"
                ));
            }
            None if !self.server.public_admin_routes => {
                return fail(
                    "server.public_admin_routes = false needs server.internal_listen: \
                     publishes, /metrics and /topics would be served nowhere"
                        .to_owned(),
                );
            }
            _ => {}
        }
        for (name, rate, burst) in [
            (
                "publish",
                self.server.publish_rate,
                self.server.publish_burst,
            ),
            (
                "topic_create",
                self.server.topic_create_rate,
                self.server.topic_create_burst,
            ),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return fail(format!(
                    "server.{name}_rate must be 0 (no limit) or a positive number per second, \
                     got {rate}"
                ));
            }
            if rate > 0.0 && burst == 0 {
                return fail(format!("server.{name}_burst must be at least 1"));
            }
        }
        if !self.server.http2_ping_interval.is_zero() && self.server.http2_ping_timeout.is_zero() {
            return fail(
                "server.http2_ping_timeout must be above 0 while server.http2_ping_interval is on"
                    .to_owned(),
            );
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return fail("tls.cert and tls.key go together: give both or neither".to_owned());
        }
        let name_ok = |name: &str, extra: &[char]| {
            !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c)
                })
        };
        if !name_ok(&self.bus.redis.prefix, &[':', '.']) {
            return fail(
                "bus.redis.prefix must be 1 to 64 ASCII letters, digits, '_', '-', ':' or '.'"
                    .to_owned(),
            );
        }
        if !name_ok(&self.bus.nats.stream, &[]) {
            return fail(
                "bus.nats.stream must be 1 to 64 ASCII letters, digits, '_' or '-'".to_owned(),
            );
        }
        if !name_ok(&self.bus.nats.subject_prefix, &[]) {
            return fail(
                "bus.nats.subject_prefix must be 1 to 64 ASCII letters, digits, '_' or '-'"
                    .to_owned(),
            );
        }
        if self.bus.subscriber_queue == 0 {
            return fail("bus.subscriber_queue must be at least 1".to_owned());
        }
        if let Err(message) = self.auth.validate() {
            return fail(message);
        }
        if let Err(message) = streamgate_proto::CorsPolicy::validate(&self.http.cors_origins) {
            return fail(format!("http.cors_origins: {message}"));
        }
        #[cfg(feature = "webtransport")]
        if let Some(url) = &self.webtransport.public_url {
            if !url.starts_with("https://") {
                return fail(format!(
                    "webtransport.public_url must be an https:// URL, got {url:?}"
                ));
            }
        }
        if !(self.demo.rate.is_finite() && self.demo.rate > 0.0 && self.demo.rate <= 100_000.0) {
            return fail(format!(
                "demo.rate must be above 0 and at most 100000 events/s, got {}",
                self.demo.rate
            ));
        }
        if self.lab.enabled != LabSwitch::Off
            && (self.lab.max_connections == 0
                || self.lab.taps_per_client == 0
                || self.lab.records_per_connection == 0
                || self.lab.max_record_bytes == 0)
        {
            return fail(
                "lab.max_connections, lab.taps_per_client, lab.records_per_connection and \
                 lab.max_record_bytes must be at least 1 (or turn the lab off with \
                 lab.enabled = false)"
                    .to_owned(),
            );
        }
        for (i, source) in self.sources.iter().enumerate() {
            if !(source.url.starts_with("ws://") || source.url.starts_with("wss://")) {
                return fail(format!(
                    "sources[{i}].url must start with ws:// or wss://, got {:?}",
                    source.url
                ));
            }
            if source.reconnect_min.is_zero() || source.reconnect_min > source.reconnect_max {
                return fail(format!(
                    "sources[{i}]: need 0 < reconnect_min <= reconnect_max"
                ));
            }
        }
        if cfg!(not(feature = "upstream")) && !self.sources.is_empty() {
            return fail(
                "sources (upstream ingest) need a gateway built with the `upstream` feature"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use streamgate_core::ContentType;

    #[test]
    fn auto_source_content_type_falls_back_to_text_for_non_i_json() {
        let auto = super::SourceContentType::Auto;
        assert_eq!(auto.classify(r#"{"a":1}"#), ContentType::Json);
        assert_eq!(auto.classify(r#"{"s":"\ud800"}"#), ContentType::Text);
        assert_eq!(auto.classify(r#"{"a":1,"a":2}"#), ContentType::Text);
        assert_eq!(auto.classify(&"[".repeat(300)), ContentType::Text);
    }

    use super::*;

    #[cfg(not(feature = "upstream"))]
    #[test]
    fn sources_need_the_upstream_feature() {
        let error = parse("[[sources]]\nurl = \"ws://127.0.0.1:9000/feed\"\n").unwrap_err();
        assert!(error.contains("`upstream` feature"), "{error}");
    }

    fn parse(text: &str) -> Result<GatewayConfig, String> {
        GatewayConfig::from_toml(text, Path::new("gw.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), GatewayConfig::default());
    }

    #[test]
    fn echo_cors_and_public_url_settings() {
        use ws::EchoMode;
        assert_eq!(GatewayConfig::default().ws.echo, EchoMode::Lab);
        for (text, mode) in [
            ("echo = \"lab\"", EchoMode::Lab),
            ("echo = true", EchoMode::On),
            ("echo = false", EchoMode::Off),
        ] {
            assert_eq!(parse(&format!("[ws]\n{text}")).unwrap().ws.echo, mode);
        }
        let err = parse("[ws]\necho = \"yes\"").unwrap_err();
        assert!(err.contains("ws.echo"), "{err}");
        let config = parse("[http]\ncors_origins = [\"*\", \"https://app.example\"]").unwrap();
        assert_eq!(config.http.cors_origins.len(), 2);
        let err = parse("[http]\ncors_origins = [\"https://app.example/\"]").unwrap_err();
        assert!(err.contains("http.cors_origins"), "{err}");
        let err = parse("[webtransport]\npublic_url = \"wt.example:4433\"").unwrap_err();
        assert!(err.contains("public_url"), "{err}");
        assert!(parse("[webtransport]\npublic_url = \"https://wt.example:4433/wt\"").is_ok());
    }

    #[test]
    fn transport_switches() {
        let config = GatewayConfig::default();
        assert!(
            config.ws.enabled
                && config.sse.enabled
                && config.longpoll.enabled
                && config.webtransport.enabled
        );
        let config = parse(
            "[ws]\nenabled = false\n[sse]\nenabled = false\n[longpoll]\nenabled = false\n\
             [webtransport]\nenabled = false\n",
        )
        .unwrap();
        assert!(
            !(config.ws.enabled
                || config.sse.enabled
                || config.longpoll.enabled
                || config.webtransport.enabled)
        );
        let err = parse("[sse]\nenabled = \"no\"\n").unwrap_err();
        assert!(err.contains("field `sse.enabled`"), "{err}");
    }

    #[test]
    fn example_file_lists_the_defaults() {
        let text = include_str!("../../../streamgate.example.toml");
        assert_eq!(parse(text).unwrap(), GatewayConfig::default());
    }

    #[test]
    fn full_file_parses() {
        let config = parse(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            header_read_timeout = 2.5
            tcp_nodelay = false
            [bus]
            history_events = 50
            [demo]
            topic = "bgp"
            rate = 20
            [[sources]]
            url = "ws://127.0.0.1:1/feed"
            topic = "ris"
            subscribe_message = '{"type":"ris_subscribe"}'
            "#,
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9000);
        assert!(!config.server.tcp_nodelay);
        assert_eq!(
            config.server.header_read_timeout,
            Duration::from_millis(2500)
        );
        assert_eq!(config.bus.memory().history.max_events, 50);
        assert_eq!(config.demo.topic.as_str(), "bgp");
        assert_eq!(config.sources[0].topic.as_str(), "ris");
        assert_eq!(config.sources[0].reconnect_min, Duration::from_millis(500));
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(
            err.starts_with("gw.toml:3:1: field `server.lisen`: unknown field `lisen`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse("[bus]\nhistory_events = \"many\"\n").unwrap_err();
        assert!(
            err.starts_with("gw.toml:2:18: field `bus.history_events`: "),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn bad_topic_and_bad_address() {
        let err = parse("[demo]\ntopic = \"a/b\"\n").unwrap_err();
        assert!(err.contains("field `demo.topic`"), "{err}");
        let err = parse("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(err.contains("field `server.listen`"), "{err}");
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("[server\n").unwrap_err();
        assert!(err.starts_with("gw.toml:1:"), "{err}");
    }

    #[test]
    fn inconsistent_values() {
        assert!(parse("[demo]\nrate = 0\n")
            .unwrap_err()
            .contains("demo.rate"));
        assert!(parse("[[sources]]\nurl = \"http://x\"\n")
            .unwrap_err()
            .contains("sources[0].url"));
        assert!(parse("[server]\npublish_rate = -1\n")
            .unwrap_err()
            .contains("server.publish_rate"));
        assert!(parse("[server]\npublish_rate = 10\npublish_burst = 0\n")
            .unwrap_err()
            .contains("server.publish_burst"));
        // 0 turns the limit off, and the burst is then irrelevant.
        assert!(parse("[server]\npublish_rate = 0\npublish_burst = 0\n").is_ok());
        assert!(parse("[server]\npublic_admin_routes = false\n")
            .unwrap_err()
            .contains("server.internal_listen"));
        let internal =
            parse("[server]\ninternal_listen = \"127.0.0.1:9090\"\npublic_admin_routes = false\n")
                .unwrap();
        assert_eq!(
            internal.server.internal_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        assert_eq!(internal.server.internal_max_connections, 256);
        assert!(parse(
            "[server]\ninternal_listen = \"127.0.0.1:9090\"\ninternal_max_connections = 0\n"
        )
        .unwrap_err()
        .contains("server.internal_max_connections"));
        assert!(parse(
            "[server]\nlisten = \"127.0.0.1:9090\"\ninternal_listen = \"127.0.0.1:9090\"\n"
        )
        .unwrap_err()
        .contains("must differ"));
        assert!(
            parse("[server]\ntopic_create_rate = 5\ntopic_create_burst = 0\n")
                .unwrap_err()
                .contains("server.topic_create_burst")
        );
    }
}
