//! The four transports, and the deadlines of each.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A transport the client can subscribe over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// WebTransport over HTTP/3 (UDP), `mode=stream` unless told otherwise.
    WebTransport,
    /// WebSocket, `GET /ws`.
    WebSocket,
    /// Server-Sent Events, `GET /sse`.
    Sse,
    /// HTTP long polling, `GET /poll`.
    Poll,
}

impl Transport {
    /// The default order of preference: the JavaScript client's.
    pub const DEFAULT_ORDER: [Transport; 4] = [
        Transport::WebTransport,
        Transport::WebSocket,
        Transport::Sse,
        Transport::Poll,
    ];

    /// `webtransport`, `websocket`, `sse` or `poll`: the names of the JavaScript client.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebTransport => "webtransport",
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
            Self::Poll => "poll",
        }
    }

    /// Why an attempt that timed out most likely did, for the log.
    pub(crate) fn timeout_hint(self) -> &'static str {
        match self {
            Self::WebTransport => " (UDP blocked?)",
            Self::Sse => ", not even the stream preamble (a buffering proxy?)",
            Self::WebSocket | Self::Poll => "",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a transport: webtransport, websocket, sse or poll")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(name: &str) -> Result<Self, UnknownTransport> {
        Ok(match name {
            "webtransport" => Self::WebTransport,
            "websocket" => Self::WebSocket,
            "sse" => Self::Sse,
            "poll" => Self::Poll,
            other => return Err(UnknownTransport(other.to_owned())),
        })
    }
}

/// Deadlines, the JavaScript client's `DEFAULT_TIMEOUTS`.
///
/// The four transport deadlines bound how long an attempt may take to be confirmed by the
/// gateway (`subscribed`, SSE's first bytes, the first poll's answer). The gateway's SSE stream
/// starts with a `retry:` line and a comment at once and sends a `: heartbeat` comment after
/// 15 s of silence, so `sse` only waits for those first bytes and `sse_idle` (3 heartbeats)
/// declares a stream dead. `poll_hold` is the long-poll hold asked of the gateway. `catch_up`
/// bounds how long a better transport that already subscribed waits to catch up before it
/// takes over anyway. A connection that drops within `stable` of opening counts as a quick
/// drop: repeated quick drops back off instead of reconnecting at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// WebTransport: session and `subscribed` (default 4 s).
    pub webtransport: Duration,
    /// WebSocket: upgrade and `subscribed` (default 4 s).
    pub websocket: Duration,
    /// SSE: the stream's first bytes (default 4 s).
    pub sse: Duration,
    /// Long polling: the first answer, and each poll beyond its hold (default 8 s).
    pub poll: Duration,
    /// SSE: silence after which the stream is dead (default 45 s).
    pub sse_idle: Duration,
    /// Long polling: the hold asked of the gateway (default 25 s).
    pub poll_hold: Duration,
    /// A subscribed probe takes over at the latest this long after it subscribed (default 5 s).
    pub catch_up: Duration,
    /// A drop within this long of opening is a quick drop (default 1 s).
    pub stable: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            webtransport: Duration::from_secs(4),
            websocket: Duration::from_secs(4),
            sse: Duration::from_secs(4),
            poll: Duration::from_secs(8),
            sse_idle: Duration::from_secs(45),
            poll_hold: Duration::from_secs(25),
            catch_up: Duration::from_secs(5),
            stable: Duration::from_secs(1),
        }
    }
}

impl Timeouts {
    /// How long an attempt at `transport` may take to be confirmed.
    pub fn connect(&self, transport: Transport) -> Duration {
        match transport {
            Transport::WebTransport => self.webtransport,
            Transport::WebSocket => self.websocket,
            Transport::Sse => self.sse,
            Transport::Poll => self.poll,
        }
    }

    /// Sets the long-poll hold.
    pub fn with_poll_hold(mut self, hold: Duration) -> Self {
        self.poll_hold = hold;
        self
    }

    /// Sets the confirmation deadline of one transport.
    pub fn with_connect(mut self, transport: Transport, deadline: Duration) -> Self {
        match transport {
            Transport::WebTransport => self.webtransport = deadline,
            Transport::WebSocket => self.websocket = deadline,
            Transport::Sse => self.sse = deadline,
            Transport::Poll => self.poll = deadline,
        }
        self
    }

    /// Sets the catch-up deadline of a probe.
    pub fn with_catch_up(mut self, catch_up: Duration) -> Self {
        self.catch_up = catch_up;
        self
    }
}
