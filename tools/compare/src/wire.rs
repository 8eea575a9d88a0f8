//! Counting bytes at the client socket, and reading events back without a full parse.
//!
//! Every figure of bytes per event is counted where a packet capture would see it: the bytes
//! a client's socket reads and writes (TLS records included for HTTPS), or, for QUIC, the
//! UDP payload bytes quinn sent and received. Headers, framing and acknowledgements are all
//! in; only IP/TCP/UDP headers are not.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read and written on one socket, shared with whoever wants to read the counts while
/// the socket is owned elsewhere (inside a TLS stream or a hyper connection task).
#[derive(Debug, Default)]
pub struct ByteCounts {
    read: AtomicU64,
    written: AtomicU64,
}

impl ByteCounts {
    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// A TCP stream that counts every byte it reads and writes.
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    counts: Arc<ByteCounts>,
}

impl Counted {
    /// Wraps `inner`; the counts start at zero.
    pub fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    /// The shared counts.
    pub fn counts(&self) -> Arc<ByteCounts> {
        Arc::clone(&self.counts)
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.counts
                .read
                .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Words the padding of every payload is made of: text compresses the way real JSON events
/// do (about 2–3× with deflate), where a run of one letter would compress 50× and flatter any
/// compressing transport.
const PAD_WORDS: [&str; 32] = [
    "prefix",
    "origin",
    "path",
    "peer",
    "route",
    "update",
    "withdraw",
    "announce",
    "next",
    "hop",
    "community",
    "local",
    "pref",
    "med",
    "as",
    "set",
    "timestamp",
    "host",
    "rrc",
    "type",
    "message",
    "source",
    "id",
    "value",
    "ipv4",
    "ipv6",
    "unicast",
    "session",
    "state",
    "open",
    "keepalive",
    "notification",
];

/// The payload of event `index`: exactly `len` bytes of JSON (`len` ≥ 64), carrying the time
/// it was due (nanoseconds since the Unix epoch) and its index, padded with words picked by
/// a generator seeded with the index, so every run and transport gets the same bytes.
pub fn payload(out: &mut String, sent_ns: u64, index: u64, len: usize) {
    let start = out.len();
    let _ = write!(out, "{{\"t\":{sent_ns},\"i\":{index},\"pad\":\"");
    // Never cut into the fields, even when `len` is too small to hold them.
    let pad_end = (start + len.saturating_sub(2)).max(out.len());
    let mut state = index
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1);
    while out.len() < pad_end {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let word = PAD_WORDS[(state >> 59) as usize];
        out.push_str(word);
        out.push(' ');
    }
    out.truncate(pad_end);
    out.push_str("\"}");
}

/// Header bytes of an unmasked (server → client) WebSocket frame carrying `len` bytes.
pub fn frame_header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A decimal number at the start of `bytes`, and what follows it.
pub fn leading_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let value = std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()?;
    Some((value, &bytes[digits..]))
}

/// `(send ns, index)` from a payload built by [`payload`].
pub fn parse_payload(payload: &[u8]) -> Option<(u64, u64)> {
    let (sent_ns, rest) = leading_u64(payload.strip_prefix(b"{\"t\":")?)?;
    let (index, _) = leading_u64(rest.strip_prefix(b",\"i\":")?)?;
    Some((sent_ns, index))
}

/// What the clients read from an event envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFields {
    /// The gateway's publish timestamp, microseconds since the Unix epoch.
    pub ts_us: u64,
    /// When the publisher meant to send it, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
    /// The publisher's index.
    pub index: u64,
    /// The event id (`epoch:seq`).
    pub id: String,
}

/// The fields of a JSON event envelope, without a full JSON parse: the gateway writes `id`
/// and `ts` before `data` and embeds a `json` payload verbatim.
pub fn parse_json_event(text: &[u8]) -> Option<EventFields> {
    let id_at = find(text, b"\"id\":\"")? + 6;
    let id_len = text[id_at..].iter().position(|&b| b == b'"')?;
    let id = std::str::from_utf8(&text[id_at..id_at + id_len])
        .ok()?
        .to_owned();
    let ts_at = find(text, b"\"ts\":")? + 5;
    let (ts_us, _) = leading_u64(&text[ts_at..])?;
    let data_at = find(&text[ts_at..], b"\"data\":")? + ts_at + 7;
    let (sent_ns, index) = parse_payload(&text[data_at..])?;
    Some(EventFields {
        ts_us,
        sent_ns,
        index,
        id,
    })
}

/// The fields of a binary envelope (docs/PROTOCOL.md §3.3).
pub fn parse_binary_event(bytes: &[u8]) -> Option<EventFields> {
    if bytes.first() != Some(&1) || bytes.get(1) != Some(&1) {
        return None;
    }
    let id_len_at = 4 + usize::from(*bytes.get(3)?);
    let id_len = usize::from(*bytes.get(id_len_at)?);
    let id = std::str::from_utf8(bytes.get(id_len_at + 1..id_len_at + 1 + id_len)?)
        .ok()?
        .to_owned();
    let ts_at = id_len_at + 1 + id_len;
    let ts_us = u64::from_be_bytes(bytes.get(ts_at..ts_at + 8)?.try_into().ok()?);
    let (sent_ns, index) = parse_payload(bytes.get(ts_at + 8..)?)?;
    Some(EventFields {
        ts_us,
        sent_ns,
        index,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size_and_reads_back() {
        for len in [64, 256, 1000] {
            let mut out = String::new();
            payload(&mut out, 1_764_213_600_123_456_789, 12_345, len);
            assert_eq!(out.len(), len);
            serde_json::from_str::<serde_json::Value>(&out).unwrap();
            assert_eq!(
                parse_payload(out.as_bytes()),
                Some((1_764_213_600_123_456_789, 12_345))
            );
        }
    }

    #[test]
    fn json_envelope_is_read_without_a_full_parse() {
        let mut data = String::new();
        payload(&mut data, 42, 7, 64);
        let envelope = format!(
            "{{\"type\":\"event\",\"topic\":\"bench\",\"id\":\"ep:9\",\"ts\":1700000000123456,\
             \"content_type\":\"json\",\"data\":{data}}}"
        );
        let fields = parse_json_event(envelope.as_bytes()).unwrap();
        assert_eq!(
            fields,
            EventFields {
                ts_us: 1_700_000_000_123_456,
                sent_ns: 42,
                index: 7,
                id: "ep:9".to_owned()
            }
        );
        assert_eq!(parse_json_event(b"{\"type\":\"event\"}"), None);
    }

    #[test]
    fn binary_envelope_is_read() {
        let mut data = String::new();
        payload(&mut data, 42, 7, 64);
        let mut bytes = vec![1u8, 1, 1, 5];
        bytes.extend_from_slice(b"bench");
        bytes.push(4);
        bytes.extend_from_slice(b"ep:9");
        bytes.extend_from_slice(&1_700_000_000_123_456u64.to_be_bytes());
        bytes.extend_from_slice(data.as_bytes());
        let fields = parse_binary_event(&bytes).unwrap();
        assert_eq!(
            (fields.ts_us, fields.sent_ns, fields.index),
            (1_700_000_000_123_456, 42, 7)
        );
        assert_eq!(fields.id, "ep:9");
        assert_eq!(parse_binary_event(&bytes[..10]), None);
    }

    #[test]
    fn frame_headers() {
        assert_eq!(frame_header_len(125), 2);
        assert_eq!(frame_header_len(126), 4);
        assert_eq!(frame_header_len(65_536), 10);
    }
}
