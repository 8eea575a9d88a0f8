//! WebSocket transport settings.

use std::time::Duration;

use serde::Deserialize;

/// Settings of the WebSocket transport (the `[ws]` table of the gateway configuration).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WsConfig {
    /// Largest message a client may send on `/ws`, in bytes; larger closes with 1009.
    /// Default: 64 KiB.
    pub max_message_size: usize,
    /// Largest message on `/ws/echo`. Default: 16 MiB (the Autobahn 9.* cases need it).
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
    /// Client messages per second allowed on `/ws` (token bucket); over it closes with 1008.
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
    /// Accept requests whose `Origin` is the gateway's own (same host and port). Default: true.
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
            max_message_size: 64 * 1024,
            echo_max_message_size: 16 * 1024 * 1024,
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
