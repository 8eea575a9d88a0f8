//! Wire taps: how the gateway's lab sees what a transport really sends and receives on one
//! connection.
//!
//! A tap is opt-in per connection. The gateway hands one only to a connection whose URL
//! carries `lab=<tap id>`, an id the lab issued to that same client (the lab page asks for
//! its ids, then adds them to its own URLs); every other connection carries `None`, so an
//! ordinary client pays one `Option` check per read, write or body chunk and nothing else.
//!
//! A transport records bytes where it already holds them — what it read from or wrote to the
//! socket, a body chunk it yields, a message it hands to a QUIC stream — and never parses or
//! encodes anything for the tap. Making sense of the bytes (frame headers, SSE lines, …) is
//! the lab's job, done when someone looks at them, not on the path events travel.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use streamgate_core::{Direction, RecordKind, Tap, TapSink};
//!
//! /// A sink that keeps how many bytes went each way.
//! #[derive(Debug, Default)]
//! struct Counter(Mutex<[usize; 2]>);
//!
//! impl TapSink for Counter {
//!     fn record(&self, direction: Direction, _kind: RecordKind, bytes: &[u8]) {
//!         self.0.lock().unwrap()[direction as usize] += bytes.len();
//!     }
//! }
//!
//! let counter = Arc::new(Counter::default());
//! let tap: Option<Tap> = Some(Tap::new(counter.clone()));
//! // In a transport: the whole cost for an untapped connection is this `if let`.
//! if let Some(tap) = &tap {
//!     tap.record(Direction::Out, RecordKind::SseChunk, b"data: hi\n\n");
//! }
//! assert_eq!(*counter.0.lock().unwrap(), [0, 10]);
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The query parameter that asks for a tap: `?lab=<tap id>`.
pub const TAP_QUERY_PARAM: &str = "lab";

/// Longest tap id, in bytes.
pub const MAX_TAP_ID_LEN: usize = 64;

/// Which way bytes travelled, seen from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the gateway.
    In = 0,
    /// From the gateway to the client.
    Out = 1,
}

impl Direction {
    /// `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// What a recorded piece of bytes is, and where it sits in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// An HTTP request or response head (request line or status line, then the headers).
    /// hyper parses the request head and writes the response head itself, so the gateway
    /// records both rebuilt from their parsed parts, in HTTP/1.1 text form.
    HttpHead,
    /// Bytes read from or written to an upgraded WebSocket connection, exactly as they
    /// crossed the socket. `offset` counts the bytes that went the same way on this
    /// connection before these, so a reader can tell whether records are contiguous.
    WsBytes {
        /// Bytes of this direction before this record.
        offset: u64,
    },
    /// One chunk of a `text/event-stream` body, as the stream yielded it (before HTTP/1.1
    /// chunked framing or HTTP/2 DATA framing).
    SseChunk,
    /// A long-poll response body.
    PollBody,
    /// A WebTransport session event (session request, acceptance, a stream opened, the
    /// close), as a small JSON object: QUIC packets are encrypted, so the tap sees what the
    /// WebTransport layer sees.
    WtSession,
    /// Bytes handed to (or read from) one WebTransport stream.
    WtStream {
        /// The QUIC stream id.
        stream_id: u64,
        /// Whether the stream was finished (FIN) after these bytes.
        fin: bool,
    },
    /// One WebTransport datagram's payload.
    WtDatagram,
}

impl RecordKind {
    /// A short stable name: `http-head`, `ws-bytes`, `sse-chunk`, `poll-body`, `wt-session`,
    /// `wt-stream`, `wt-datagram`.
    pub fn name(self) -> &'static str {
        match self {
            Self::HttpHead => "http-head",
            Self::WsBytes { .. } => "ws-bytes",
            Self::SseChunk => "sse-chunk",
            Self::PollBody => "poll-body",
            Self::WtSession => "wt-session",
            Self::WtStream { .. } => "wt-stream",
            Self::WtDatagram => "wt-datagram",
        }
    }
}

/// Where a tap's records go. The gateway's lab implements it with a bounded ring.
///
/// `record` is called on the connection's own task, in the order the bytes crossed the
/// wire; it must be quick and must not block (a short lock is fine).
pub trait TapSink: Send + Sync + fmt::Debug + 'static {
    /// Keeps a copy of `bytes` (or what the sink's bounds allow of them).
    fn record(&self, direction: Direction, kind: RecordKind, bytes: &[u8]);
}

/// A connection's handle on its tap. Cheap to clone; the gateway puts one in the request's
/// extensions of a tapped HTTP request.
#[derive(Clone, Debug)]
pub struct Tap {
    sink: Arc<dyn TapSink>,
}

impl Tap {
    /// A tap writing to `sink`.
    pub fn new(sink: Arc<dyn TapSink>) -> Self {
        Self { sink }
    }

    /// Records `bytes` travelling `direction`.
    pub fn record(&self, direction: Direction, kind: RecordKind, bytes: &[u8]) {
        self.sink.record(direction, kind, bytes);
    }
}

/// Who is asking for a tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapConnection {
    /// The transport's short name (`ws`, `sse`, `longpoll`, `webtransport`).
    pub transport: &'static str,
    /// The client's address.
    pub peer: SocketAddr,
    /// A number naming the connection (or session) within the gateway process.
    pub conn_id: u64,
}

/// Why a connection may not use the tap it named: the tap was issued to another client.
/// The transport refuses the connection (HTTP `403`, WebTransport close `4403`) with
/// [`TapRefused::reason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapRefused {
    /// Says why, for the client (never the tap's records or its owner's address).
    pub reason: String,
}

impl fmt::Display for TapRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Hands out taps. The gateway's lab implements it; a transport with its own listener
/// (WebTransport) is given one and asks it for each session whose URL carries `lab=`.
///
/// Tap ids are capabilities the lab issues to one client: an id it never issued (or has
/// since reclaimed) gives `Ok(None)`, and the connection runs untapped; an id issued to
/// another client gives [`TapRefused`].
pub trait TapRegistry: Send + Sync + fmt::Debug + 'static {
    /// A tap for `connection`, recording under `id`.
    ///
    /// # Errors
    /// [`TapRefused`] when `id` belongs to another client.
    fn open(&self, id: &str, connection: TapConnection) -> Result<Option<Tap>, TapRefused>;
}

/// Whether `id` may name a tap: 1 to [`MAX_TAP_ID_LEN`] ASCII letters, digits, `_`, `-` or
/// `.`, so that it needs no escaping in a URL or a log line.
pub fn is_valid_tap_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TAP_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The tap id a raw query string asks for (`…&lab=<id>&…`), if it names a valid one.
///
/// Valid ids contain nothing that percent-encoding changes, so the raw query is searched
/// without decoding it: this runs for every request while the lab is on.
pub fn tap_id_from_query(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(TAP_QUERY_PARAM)?.strip_prefix('='))
        .filter(|id| is_valid_tap_id(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_ids_come_from_the_lab_parameter_only() {
        assert_eq!(tap_id_from_query("topics=demo&lab=p1-ws"), Some("p1-ws"));
        assert_eq!(tap_id_from_query("lab=a.b_c"), Some("a.b_c"));
        assert_eq!(tap_id_from_query("topics=demo"), None);
        assert_eq!(tap_id_from_query("label=x"), None);
        assert_eq!(tap_id_from_query("lab="), None);
        assert_eq!(tap_id_from_query("lab=a%2Fb"), None);
        assert_eq!(tap_id_from_query(&format!("lab={}", "x".repeat(65))), None);
    }
}
