//! The WebTransport wire, without I/O: session URL parsing, length-prefix framing, the
//! datagram-fit decision, session close codes and the transport's own JSON messages.
//!
//! Framing on every stream (both directions): a `u32` big-endian length, then that many bytes
//! of one message. A server→client message is a JSON envelope (`docs/PROTOCOL.md` §3.1) or a
//! binary envelope (§3.3); the first byte tells them apart (`{` = 0x7B for JSON, `0x01` for the
//! binary envelope's version). A datagram carries one message, unframed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::json;
use streamgate_core::Rejection;
use streamgate_core::{Epoch, Topic};
use streamgate_proto::SubscribeQuery;

/// Path of the session URL.
pub const SESSION_PATH: &str = "/wt";

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Application error codes a session is closed with (the QUIC application close code), with
/// the reason as UTF-8 text.
pub mod close_code {
    /// The client closed normally.
    pub const NORMAL: u32 = 0;
    /// The gateway is shutting down (reconnect later, with `since`).
    pub const GOING_AWAY: u32 = 1001;
    /// A limit of the session was broken: datagram rate, streams per session.
    pub const POLICY: u32 = 1008;
    /// A client message over `webtransport.max_message_size`.
    pub const TOO_BIG: u32 = 1009;
    /// The server could not serve the session (it could not open its stream).
    pub const INTERNAL: u32 = 1011;
    /// Too many sessions on the gateway: try again later.
    pub const TRY_AGAIN_LATER: u32 = 1013;
    /// The session URL was refused (`bad_topic`, `bad_cursor`, `cursor_ahead`, `bad_query`, …;
    /// the reason starts with the code of `docs/PROTOCOL.md` §6).
    pub const BAD_REQUEST: u32 = 4400;
    /// `[auth]`: no valid token came with the session request (`unauthorized`).
    pub const UNAUTHORIZED: u32 = 4401;
    /// `[auth]`: the token does not cover a topic of the session URL (`forbidden`).
    pub const FORBIDDEN: u32 = 4403;
}

/// How a session receives events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeliveryMode {
    /// One server-opened unidirectional stream carries everything, in order (like WebSocket).
    #[default]
    Stream,
    /// One new unidirectional stream per event: no head-of-line blocking between events;
    /// `subscribed` and notices stay on the control stream.
    StreamPerEvent,
    /// One datagram per event (unreliable, unordered); events that do not fit go on the
    /// control stream after a `datagram_fallback` notice.
    Datagram,
}

impl DeliveryMode {
    /// The name used in the URL and in `subscribed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::StreamPerEvent => "stream-per-event",
            Self::Datagram => "datagram",
        }
    }

    /// Parses `stream`, `stream-per-event` or `datagram`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "stream" => Some(Self::Stream),
            "stream-per-event" => Some(Self::StreamPerEvent),
            "datagram" => Some(Self::Datagram),
            _ => None,
        }
    }
}

/// A parsed session URL: `/wt?topics=a,b&since=<id>&mode=…&envelope=json|binary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// Topics, resume point and envelope format.
    pub query: SubscribeQuery,
    /// Delivery mode (default `stream`).
    pub mode: DeliveryMode,
}

/// Why a session request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Not `/wt`: answered with HTTP 404.
    NotFound,
    /// A bad query: the session is accepted and closed with [`close_code::BAD_REQUEST`].
    Bad(Rejection),
}

impl SessionParams {
    /// Parses the `:path` of an extended CONNECT request (path and query).
    ///
    /// # Errors
    /// [`SessionRefusal`].
    pub fn parse(path_and_query: &str) -> Result<Self, SessionRefusal> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if path != SESSION_PATH {
            return Err(SessionRefusal::NotFound);
        }
        let parsed = SubscribeQuery::parse(query).map_err(SessionRefusal::Bad)?;
        let mut mode = None;
        for (key, value) in form_pairs(query.unwrap_or("")) {
            if key == "mode" {
                if mode.is_some() {
                    return Err(SessionRefusal::Bad(Rejection::new(
                        "bad_query",
                        "parameter mode is given twice",
                    )));
                }
                mode = Some(DeliveryMode::from_name(&value).ok_or_else(|| {
                    SessionRefusal::Bad(Rejection::new(
                        "bad_query",
                        format!("mode must be stream, stream-per-event or datagram, got {value:?}"),
                    ))
                })?);
            }
        }
        if parsed.topics.is_empty() {
            return Err(SessionRefusal::Bad(Rejection::new(
                "no_topics",
                "a WebTransport session needs topics=…",
            )));
        }
        Ok(Self {
            query: parsed,
            mode: mode.unwrap_or_default(),
        })
    }
}

/// `key=value` pairs of a query; values of `mode` never need percent-decoding.
fn form_pairs(query: &str) -> impl Iterator<Item = (&str, String)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k, v.to_owned())
    })
}

/// `message` behind its `u32` big-endian length.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX_LEN + message.len());
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// A framed message that is too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The announced length.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

/// Splits a byte stream into length-prefixed messages, refusing any over `max` bytes before
/// buffering it.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    max: usize,
}

impl FrameDecoder {
    /// A decoder for messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, if there is one.
    ///
    /// # Errors
    /// [`FrameTooLarge`] as soon as a prefix announces more than `max` bytes.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameTooLarge> {
        if self.buffer.len() < PREFIX_LEN {
            return Ok(None);
        }
        let len =
            u32::from_be_bytes(self.buffer[..PREFIX_LEN].try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameTooLarge { len, max: self.max });
        }
        if self.buffer.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        self.buffer.advance(PREFIX_LEN);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// Bytes of an incomplete message held (non-zero at end of stream means it was cut).
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// Whether a message of `len` bytes can go in one datagram of the session, whose current
/// limit is `max_datagram_size` (`None`: the peer takes no datagrams).
pub fn fits_datagram(len: usize, max_datagram_size: Option<usize>) -> bool {
    max_datagram_size.is_some_and(|max| len <= max)
}

/// `{"type":"subscribed","topics":[…],"epoch":…,"mode":…,"max_datagram_size":…}`: the first
/// message of the control stream.
pub fn encode_subscribed(
    topics: &[Topic],
    epoch: &Epoch,
    mode: DeliveryMode,
    max_datagram_size: Option<usize>,
) -> Bytes {
    let topics: Vec<&str> = topics.iter().map(Topic::as_str).collect();
    Bytes::from(
        json!({
            "type": "subscribed",
            "topics": topics,
            "epoch": epoch.as_str(),
            "mode": mode.as_str(),
            "max_datagram_size": max_datagram_size,
        })
        .to_string(),
    )
}

/// `{"type":"datagram_fallback","id":…,"size":…,"max_datagram_size":…}`: in datagram mode,
/// the next message of the control stream is the event `id`, which did not fit a datagram.
pub fn encode_datagram_fallback(id: &str, size: usize, max_datagram_size: Option<usize>) -> Bytes {
    Bytes::from(
        json!({
            "type": "datagram_fallback",
            "id": id,
            "size": size,
            "max_datagram_size": max_datagram_size,
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_url() {
        let p = SessionParams::parse("/wt?topics=a,b&since=ep%3A3&mode=datagram").unwrap();
        assert_eq!(p.mode, DeliveryMode::Datagram);
        assert_eq!(p.query.topics.len(), 2);
        assert_eq!(p.query.since.unwrap().to_string(), "ep:3");
        assert_eq!(
            SessionParams::parse("/wt?topics=a").unwrap().mode,
            DeliveryMode::Stream
        );
        assert_eq!(
            SessionParams::parse("/wt?topics=a&mode=stream-per-event")
                .unwrap()
                .mode,
            DeliveryMode::StreamPerEvent
        );
        assert_eq!(
            SessionParams::parse("/other?topics=a"),
            Err(SessionRefusal::NotFound)
        );
        let code = |url: &str| match SessionParams::parse(url) {
            Err(SessionRefusal::Bad(e)) => e.code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code("/wt?topics=a&mode=carrier-pigeon"), "bad_query");
        assert_eq!(code("/wt?topics=a&mode=stream&mode=datagram"), "bad_query");
        assert_eq!(code("/wt?topics=a/b"), "bad_topic");
        assert_eq!(code("/wt?topics=a&since=x"), "bad_cursor");
        assert_eq!(code("/wt"), "no_topics");
    }

    #[test]
    fn framing_round_trip_in_pieces() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&frame(b"hello"));
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(b"{\"a\":1}"));
        let mut decoder = FrameDecoder::new(16);
        let mut out = Vec::new();
        for byte in wire {
            decoder.push(&[byte]);
            while let Some(message) = decoder.next_frame().unwrap() {
                out.push(message);
            }
        }
        assert_eq!(out, vec![&b"hello"[..], b"", b"{\"a\":1}"]);
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_prefix() {
        let mut decoder = FrameDecoder::new(4);
        decoder.push(&[0, 0, 0, 5]);
        assert_eq!(decoder.next_frame(), Err(FrameTooLarge { len: 5, max: 4 }));
        let mut decoder = FrameDecoder::new(4);
        decoder.push(&[0, 0, 0, 4, 1, 2]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.pending(), 6);
    }

    #[test]
    fn datagram_fit() {
        assert!(fits_datagram(1000, Some(1000)));
        assert!(!fits_datagram(1001, Some(1000)));
        assert!(!fits_datagram(1, None));
    }

    #[test]
    fn transport_messages() {
        let epoch = Epoch::new("ep").unwrap();
        let s = encode_subscribed(
            &[Topic::new("a").unwrap()],
            &epoch,
            DeliveryMode::Datagram,
            Some(1200),
        );
        let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
        assert_eq!(
            v,
            json!({"type":"subscribed","topics":["a"],"epoch":"ep","mode":"datagram","max_datagram_size":1200})
        );
        let f = encode_datagram_fallback("ep:9", 5000, Some(1200));
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v["type"], "datagram_fallback");
        assert_eq!(v["id"], "ep:9");
    }
}
