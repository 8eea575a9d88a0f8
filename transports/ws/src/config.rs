//! WebSocket transport settings.

use std::time::Duration;

use serde::Deserialize;

/// Settings of the WebSocket transport (the `[ws]` table of the gateway configuration).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WsConfig {
    /// Whether the gateway serves WebSocket at all: with `false`, `/ws` and `/ws/echo` (whatever
    /// `echo` says) answer `404` `transport_disabled` and no upgrade is ever accepted. The
    /// gateway acts on it, as on `webtransport.enabled`. Default: true.
    pub enabled: bool,
    /// Largest message a client may send on `/ws`, in bytes; larger closes with 1009.
    /// Default: 64 KiB.
    pub max_message_size: usize,
    /// Whether `/ws/echo` (a conformance endpoint that sends every message back) is served:
    /// `"lab"` serves it only while the teaching lab (`[lab] enabled`) is on, `true` always,
    /// `false` never (404). It answers with as many bytes as it is sent, so a public gateway
    /// should not offer it. Default: `"lab"`.
    pub echo: EchoMode,
    /// Largest message on `/ws/echo`, inflated size for a compressed one; larger closes with
    /// 1009. Autobahn's 9.* cases need 16 MiB and raise it in their own configuration.
    /// Default: 64 KiB (as `max_message_size`).
    pub echo_max_message_size: usize,
    /// Silence after which the server pings. Default: 20 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub ping_interval: Duration,
    /// Time a pinged peer has to show it is alive before the connection is dropped.
    /// Default: 20 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub pong_timeout: Duration,
    /// Time the peer has to answer our close frame before the TCP connection is dropped.
    /// Default: 5 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub close_timeout: Duration,
    /// Time a write may stay blocked (a client that stopped reading) before the connection is
    /// dropped; the client can resume from its last id. Default: 5 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub write_timeout: Duration,
    /// Which `Origin`s may open a WebSocket. Default: same origin, plus clients that send no
    /// `Origin` (non-browser clients).
    pub origins: OriginPolicy,
    /// Subprotocols offered, in order of preference. Default: `["streamgate.v1"]`.
    pub subprotocols: Vec<String>,
    /// Client messages per second allowed on `/ws` and `/ws/echo` (token bucket); over it
    /// closes with 1008.
    /// Default: 50.
    pub message_rate: f64,
    /// Burst of client messages allowed. Default: 100.
    pub message_burst: u32,
    /// Read buffer per connection, bytes: how much tungstenite reserves before each read.
    /// tungstenite's default (128 KiB) would dominate the memory of an idle connection, and
    /// subscribers seldom send anything, so it is small: a larger client message is still
    /// read whole, in more reads. 1 KiB against 4 KiB took an idle connection from 11.6 to
    /// 7.4 KiB of gateway RSS (docs/PERFORMANCE.md). Default: 1 KiB.
    pub read_buffer_size: usize,
    /// Bytes buffered before a write is forced. Default: 16 KiB.
    pub write_buffer_size: usize,
    /// Accept permessage-deflate (RFC 7692) when a client offers it, as browsers do.
    /// Default: true.
    ///
    /// Outbound it costs no memory per connection: each event is compressed once and the
    /// compressed bytes are shared by every compressing subscriber (and kept with the event
    /// in history, next to its plain envelope). Inbound, a client that compresses what it
    /// sends makes the server hold an inflater with a 32 KiB window (measured: 19 KiB
    /// resident after a few small messages, up to ≈ 40 KiB) from its first compressed
    /// message on, or only while each message arrives if it offered
    /// `client_no_context_takeover`. docs/WEBSOCKET_ENGINE.md has the measured CPU, bytes and
    /// memory.
    pub compression: bool,
}

/// When `/ws/echo` is served (`ws.echo`): `"lab"`, `true` or `false` in the configuration.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "EchoSetting")]
#[non_exhaustive]
pub enum EchoMode {
    /// Served while the lab is on (`"lab"`).
    Lab,
    /// Always served (`true`).
    On,
    /// Never served (`false`).
    Off,
}

impl EchoMode {
    /// Whether `/ws/echo` is served, given whether the lab is on.
    pub fn enabled(self, lab_enabled: bool) -> bool {
        match self {
            Self::Lab => lab_enabled,
            Self::On => true,
            Self::Off => false,
        }
    }
}

/// What the configuration file may say for [`EchoMode`].
#[derive(Deserialize)]
#[serde(untagged)]
enum EchoSetting {
    Flag(bool),
    Word(String),
}

impl TryFrom<EchoSetting> for EchoMode {
    type Error = String;

    fn try_from(setting: EchoSetting) -> Result<Self, String> {
        match setting {
            EchoSetting::Flag(true) => Ok(Self::On),
            EchoSetting::Flag(false) => Ok(Self::Off),
            EchoSetting::Word(word) if word == "lab" => Ok(Self::Lab),
            EchoSetting::Word(word) => Err(format!(
                "ws.echo must be \"lab\", true or false, got {word:?}"
            )),
        }
    }
}

/// Which `Origin` headers are accepted on the upgrade request.
///
/// Browsers always send `Origin` on a WebSocket handshake and, unlike `fetch`, WebSocket has
/// no CORS preflight: checking it is the defence against cross-site WebSocket hijacking.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OriginPolicy {
    /// Extra origins allowed besides the gateway's own, exactly as browsers send them
    /// (`https://app.example.com`); `"*"` allows every origin. Default: none.
    pub allow: Vec<String>,
    /// Accept requests whose `Origin` is the gateway's own: the same scheme (`https` on the
    /// TLS listener, `http` on the plain one), host and port. Default: true.
    pub allow_same_origin: bool,
    /// Accept requests without `Origin` (non-browser clients). Default: true.
    pub allow_missing: bool,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            allow_same_origin: true,
            allow_missing: true,
        }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_message_size: 64 * 1024,
            echo: EchoMode::Lab,
            echo_max_message_size: 64 * 1024,
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            origins: OriginPolicy::default(),
            subprotocols: vec!["streamgate.v1".to_owned()],
            message_rate: 50.0,
            message_burst: 100,
            read_buffer_size: 1024,
            write_buffer_size: 16 * 1024,
            compression: true,
        }
    }
}
