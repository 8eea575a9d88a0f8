//! What the wire inspector shows: a tap's records turned into annotated items, when someone
//! asks (`GET /lab/api/taps/{id}`), never while the bytes travel.
//!
//! Most records are one item each: an HTTP head, an SSE chunk, a long-poll body, a
//! WebTransport event, stream write or datagram. WebSocket records are different: they are
//! whatever one `read()` or `write()` moved, which may hold several frames or part of one, so
//! the records of each direction of each connection are put back together into a byte stream
//! (their offsets say where each belongs) and cut into frames again.
//!
//! The ring forgets old records and cuts long ones, so that stream can have holes. After a
//! hole, parsing resumes where the frame that the hole interrupted ends (its header says how
//! long it is); when the hole swallowed a header too, it resumes at the next record that
//! starts with a plausible frame header, and says so.

use crate::wire_notes::{
    annotate_chunks, annotate_envelope, annotate_http_head, annotate_length_prefixed,
    annotate_poll_body, annotate_sse, explain_accept, Note, WsAnnotator,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Serialize;
use streamgate_client::ws_frame;
use streamgate_core::{Direction, RecordKind};

use crate::taps::Record;

/// One thing the inspector shows: a frame, a head, a chunk, an event.
#[derive(Debug, Serialize)]
pub struct Item {
    /// Stable across requests, so a page can merge what it fetches with what it has.
    pub key: String,
    /// The record it starts in.
    pub seq: u64,
    /// The record it ends in.
    pub last_seq: u64,
    /// The connection of its records.
    pub conn: u64,
    /// When its first record was made, microseconds on the lab's clock.
    pub t_us: u64,
    /// `in` (from the client) or `out` (to it).
    pub direction: &'static str,
    /// `http-head`, `ws-frame`, `ws-fragment`, `sse-chunk`, `poll-body`, `wt-session`,
    /// `wt-stream`, `wt-datagram`.
    pub kind: &'static str,
    /// One line saying what it is.
    pub title: String,
    /// How the bytes were obtained: what is exactly the wire, and what was rebuilt.
    pub captured: &'static str,
    /// Bytes it took on the wire.
    pub size: u64,
    /// Bytes shown (fewer when the tap cut them).
    pub kept: usize,
    /// The bytes shown, base64; every note's byte range is an offset into them.
    pub data: String,
    /// The annotation.
    pub notes: Vec<Note>,
}

/// The answer to one inspector request.
#[derive(Debug, Serialize)]
pub struct View {
    /// What changed since `after`, in record order.
    pub items: Vec<Item>,
    /// What to pass as `after` next time: everything up to it has been shown in full. Items
    /// that were not yet complete (a frame whose end is still on its way) come again, whole,
    /// with the same key.
    pub next_after: u64,
}

const CAPTURED_REQUEST: &str = "Rebuilt from the request as hyper parsed it: the same request line and headers, header names in lower case; credentials (Authorization, Cookie, X-Api-Key, token= and the like, a token passed as a subprotocol) were masked before they were recorded.";
const CAPTURED_RESPONSE: &str = "Rebuilt from the response the gateway handed hyper, with the framing header hyper derives from the body (content-length or transfer-encoding); hyper also adds a date header when it writes it.";
const CAPTURED_WS: &str = "Exactly the bytes that crossed the socket, read or written by the gateway under tungstenite (client frames still masked, compressed ones still compressed).";
const CAPTURED_SSE_CHUNKED: &str = "The chunk the event stream yielded, exactly; the chunked framing around it (size in hex, CRLF, data, CRLF) is what hyper writes for it over HTTP/1.1.";
const CAPTURED_SSE: &str = "The chunk the event stream yielded, exactly, as handed to hyper.";
const CAPTURED_POLL: &str = "The response body exactly as the gateway wrote it.";
const CAPTURED_WT_EVENT: &str =
    "What the WebTransport layer saw: QUIC packets are encrypted, so a tap cannot show them.";
const CAPTURED_WT_BYTES: &str = "The bytes handed to (or read from) QUIC for this stream or datagram, before QUIC framing and encryption.";

/// Annotates `records` (one tap's, in seq order) and keeps the items that end after `after`.
pub fn view(records: &[Record], after: u64) -> View {
    let mut items = Vec::new();
    let mut pending: Option<u64> = None;
    let mut streams: Vec<((u64, Direction), Vec<&Record>)> = Vec::new();
    for record in records {
        match record.kind {
            RecordKind::WsBytes { .. } => {
                let key = (record.conn, record.direction);
                match streams.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, list)) => list.push(record),
                    None => streams.push((key, vec![record])),
                }
            }
            _ => items.push(record_item(record, records)),
        }
    }
    for ((conn, direction), list) in streams {
        let takeover = direction == Direction::In && client_context_takeover(records, conn);
        if let Some(seq) = ws_stream_items(&list, takeover, &mut items) {
            pending = Some(pending.map_or(seq, |p| p.min(seq)));
        }
    }
    items.retain(|item| item.last_seq > after);
    items.sort_by(|a, b| a.seq.cmp(&b.seq).then(a.key.cmp(&b.key)));
    let last = records.last().map_or(after, |r| r.seq.max(after));
    let next_after = match pending {
        Some(seq) => last.min(seq.saturating_sub(1)).max(after),
        None => last,
    };
    View { items, next_after }
}

fn direction_name(direction: Direction) -> &'static str {
    direction.as_str()
}

/// An item covering one whole record.
fn item(record: &Record, kind: &'static str, title: String, captured: &'static str) -> Item {
    Item {
        key: format!("r{}", record.seq),
        seq: record.seq,
        last_seq: record.seq,
        conn: record.conn,
        t_us: record.at_us,
        direction: direction_name(record.direction),
        kind,
        title,
        captured,
        size: record.len as u64,
        kept: record.bytes.len(),
        data: BASE64.encode(&record.bytes),
        notes: Vec::new(),
    }
}

/// Says that the tap kept only the start of a record.
fn cut_note(kept: usize, len: u64) -> Note {
    Note::new(
        "capture",
        format!("first {kept} of {len} bytes kept"),
        "The tap keeps at most lab.max_record_bytes of each record; the rest crossed the wire but is not shown.",
    )
}

fn record_item(record: &Record, all: &[Record]) -> Item {
    let mut item = match record.kind {
        RecordKind::HttpHead => head_item(record, all),
        RecordKind::SseChunk => sse_item(record, all),
        RecordKind::PollBody => {
            let mut item = item(record, "poll-body", String::new(), CAPTURED_POLL);
            let note = annotate_poll_body(&record.bytes);
            item.title = format!("long-poll body: {}", note.value);
            item.notes.push(note);
            item
        }
        RecordKind::WtSession => wt_session_item(record),
        RecordKind::WtStream { stream_id, fin } => wt_stream_item(record, stream_id, fin),
        RecordKind::WtDatagram => {
            let mut item = item(record, "wt-datagram", String::new(), CAPTURED_WT_BYTES);
            let envelope = annotate_envelope(&record.bytes, 0);
            item.title = match &envelope {
                Some(note) => format!("datagram: {}", note.value),
                None => format!("datagram of {} bytes", record.len),
            };
            item.notes.push(
                Note::new(
                    "datagram",
                    format!("{} bytes", record.len),
                    "One QUIC DATAGRAM frame (RFC 9221) of this session: delivered whole or not at all, unordered, never retransmitted. streamgate puts one envelope in each, without a length prefix: the datagram's own size delimits it.",
                )
                .at(0, record.bytes.len())
                .with(envelope),
            );
            item
        }
        // Put back together per connection in `ws_stream_items`; other kinds are newer than
        // this inspector and shown as bytes.
        _ => item(
            record,
            record.kind.name(),
            format!("{} bytes", record.len),
            CAPTURED_WS,
        ),
    };
    if record.truncated() {
        item.notes
            .push(cut_note(record.bytes.len(), record.len as u64));
    }
    item
}

/// The latest head of `direction` on connection `conn`, at or before `seq`.
fn head_of(all: &[Record], conn: u64, direction: Direction, seq: u64) -> Option<&Record> {
    all.iter()
        .rev()
        .filter(|r| r.seq <= seq)
        .find(|r| r.conn == conn && r.kind == RecordKind::HttpHead && r.direction == direction)
}

/// The value of header `name` in a head recorded as text (names are lower case there).
fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(head)
        .ok()?
        .split("\r\n")
        .skip(1)
        .find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
}

fn head_item(record: &Record, all: &[Record]) -> Item {
    let request = record.direction == Direction::In;
    let captured = if request {
        CAPTURED_REQUEST
    } else {
        CAPTURED_RESPONSE
    };
    let first_line = String::from_utf8_lossy(&record.bytes)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut item = item(record, "http-head", first_line, captured);
    match annotate_http_head(&record.bytes) {
        Some((note, _)) => item.notes.push(note),
        None => item.notes.push(Note::new(
            "head",
            "not a complete HTTP/1.1 head",
            "The recorded bytes end before the blank line that ends a head.",
        )),
    }
    // The accept key is computed from the request's key: explain it beside the 101.
    if !request && item.title.contains(" 101") {
        let key = head_of(all, record.conn, Direction::In, record.seq)
            .and_then(|head| header_value(&head.bytes, "sec-websocket-key"));
        if let Some(key) = key {
            item.notes.push(explain_accept(key));
        }
    }
    item
}

fn sse_item(record: &Record, all: &[Record]) -> Item {
    let chunked = head_of(all, record.conn, Direction::Out, record.seq)
        .and_then(|head| header_value(&head.bytes, "transfer-encoding"))
        .is_some_and(|value| value.eq_ignore_ascii_case("chunked"));
    let (blocks, _) = annotate_sse(&record.bytes);
    let summary = blocks
        .first()
        .map(|note| format!("{}: {}", note.label, note.value))
        .unwrap_or_else(|| "no complete block".to_owned());
    let more = match blocks.len() {
        0 | 1 => String::new(),
        n => format!(" (+{} more)", n - 1),
    };
    let title = format!("{summary}{more}");
    if !chunked || record.truncated() {
        let mut item = item(record, "sse-chunk", title, CAPTURED_SSE);
        item.notes = blocks;
        return item;
    }
    // Over HTTP/1.1 hyper writes the chunk as `<size in hex>\r\n<data>\r\n`: show it so.
    let prefix = format!("{:x}\r\n", record.len);
    let mut framed = Vec::with_capacity(prefix.len() + record.bytes.len() + 2);
    framed.extend_from_slice(prefix.as_bytes());
    framed.extend_from_slice(&record.bytes);
    framed.extend_from_slice(b"\r\n");
    let (mut notes, _) = annotate_chunks(&framed);
    notes.extend(blocks.into_iter().map(|note| note.shifted(prefix.len())));
    let mut item = item(record, "sse-chunk", title, CAPTURED_SSE_CHUNKED);
    item.size = framed.len() as u64;
    item.kept = framed.len();
    item.data = BASE64.encode(&framed);
    item.notes = notes;
    item
}

/// What the two low bits of a QUIC stream id say (RFC 9000 §2.1).
fn stream_id_note(id: u64) -> Note {
    let opener = if id & 1 == 0 { "client" } else { "server" };
    let way = if id & 2 == 0 {
        "bidirectional"
    } else {
        "unidirectional"
    };
    Note::new(
        "stream id",
        format!(
            "{id} = 4 × {} + {}: {opener}-initiated, {way}",
            id >> 2,
            id & 3
        ),
        "QUIC numbers streams so that the two low bits say who opened one (bit 0: client 0, server 1) and whether it is bidirectional (bit 1 clear) or one-way (bit 1 set); the rest counts the streams of that type (RFC 9000 §2.1). HTTP/3 opens unidirectional streams of its own (its control stream first), so a session's first stream is not the first id of its type.",
    )
}

fn wt_stream_item(record: &Record, stream_id: u64, fin: bool) -> Item {
    let mut item = item(record, "wt-stream", String::new(), CAPTURED_WT_BYTES);
    let (messages, consumed) = annotate_length_prefixed(&record.bytes);
    item.title = match (messages.first(), record.len, fin) {
        (_, 0, true) => format!("stream {stream_id}: FIN"),
        (Some(first), _, _) => format!(
            "stream {stream_id}: {}{}",
            first.value,
            if fin { ", then FIN" } else { "" }
        ),
        (None, len, _) => format!("stream {stream_id}: {len} bytes"),
    };
    item.notes.push(stream_id_note(stream_id));
    item.notes.extend(messages);
    if consumed < record.bytes.len() && !record.truncated() {
        item.notes.push(Note::new(
            "rest",
            format!("{} bytes", record.bytes.len() - consumed),
            "The start of a message whose remaining bytes come in a later read: a QUIC stream is a byte stream, so message boundaries are the length prefixes', not the reads'.",
        ).at(consumed, record.bytes.len()));
    }
    if fin {
        item.notes.push(Note::new(
            "FIN",
            "stream finished",
            "The sender finished the stream after these bytes: one event per stream, so a lost packet delays only its own event (no head-of-line blocking between events).",
        ));
    }
    item
}

fn wt_session_item(record: &Record) -> Item {
    let mut item = item(record, "wt-session", String::new(), CAPTURED_WT_EVENT);
    let event: serde_json::Value = serde_json::from_slice(&record.bytes).unwrap_or_default();
    let text = |name: &str| {
        event
            .get(name)
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let (title, note) = match event.get("event").and_then(|e| e.as_str()).unwrap_or("") {
        "connect" => {
            let mut children = vec![
                Note::new(":method", "CONNECT", "An extended CONNECT (RFC 9220): it asks for a WebTransport session rather than a tunnel."),
                Note::new(":protocol", "webtransport", "What the CONNECT turns the request stream into."),
                Note::new(":authority", text("authority"), "The server the session is for."),
                Note::new(":path", text("path"), "streamgate reads the subscription (topics, since, mode) from the query, like /ws and /sse do."),
            ];
            if let Some(headers) = event.get("headers").and_then(|h| h.as_object()) {
                children.extend(headers.iter().filter(|(name, _)| !name.starts_with(':')).map(
                    |(name, value)| {
                        Note::new(name.clone(), value.as_str().unwrap_or_default(), "A request header, sent in an HTTP/3 HEADERS frame (QPACK-compressed on the wire).")
                    },
                ));
            }
            (
                format!("CONNECT {}", text("path")),
                Note::new("session request", text("path"), "The browser opens a WebTransport session with one HTTP/3 request on a new bidirectional QUIC stream; the session lives as long as that stream.").with(children),
            )
        }
        "accepted" => (
            format!("session accepted (id {})", text("session_id")),
            Note::new("session accepted", format!("status {}", text("status")), "The server answers the CONNECT with 200: the session exists.").with([
                Note::new("session id", text("session_id"), "The id of the CONNECT request's stream; every WebTransport stream and datagram of the session carries it, which is how several sessions share one QUIC connection."),
                Note::new("max datagram size", format!("{} bytes", text("max_datagram_size")), "The largest datagram payload that fits one QUIC packet on this path now; a larger event cannot go as a datagram."),
            ]),
        ),
        "uni_stream_opened" => {
            let id = event.get("stream_id").and_then(|v| v.as_u64()).unwrap_or(0);
            let purpose = text("purpose");
            let why = if purpose == "control" {
                "streamgate's control stream: the first message is subscribed, then (in stream mode) every event, in order, like a WebSocket."
            } else {
                "A stream for one event (stream-per-event mode): opened, written, finished."
            };
            (
                format!("{purpose} stream opened (id {id})"),
                Note::new("unidirectional stream opened", format!("{purpose}, id {id}"), why).with([stream_id_note(id)]),
            )
        }
        "bidi_stream_accepted" => {
            let id = event.get("stream_id").and_then(|v| v.as_u64()).unwrap_or(0);
            (
                format!("client opened bidirectional stream {id}"),
                Note::new("bidirectional stream accepted", format!("id {id}"), "The client opened a two-way stream: it sends publish messages on it, the server answers each on the same stream.").with([stream_id_note(id)]),
            )
        }
        "uni_stream_refused" => {
            let id = event.get("stream_id").and_then(|v| v.as_u64()).unwrap_or(0);
            (
                format!("client unidirectional stream {id} refused"),
                Note::new("stream refused", format!("id {id}"), "streamgate takes client messages on bidirectional streams (they get replies), so it stops this one with STOP_SENDING.").with([stream_id_note(id)]),
            )
        }
        "close" => (
            format!("close {}: {}", text("code"), text("reason")),
            Note::new("session closed by the server", format!("code {}", text("code")), "The session ends with an application error code and a reason, as a WebSocket close does (transports/webtransport/README.md lists them).").with([
                Note::new("reason", text("reason"), "UTF-8 text for people; the code is for programs."),
            ]),
        ),
        "closed" => (
            "session ended by the client or the network".to_owned(),
            Note::new("session ended", text("reason"), "The client closed the session, or the QUIC connection went away (idle timeout, network)."),
        ),
        other => (
            format!("session event {other}"),
            Note::new("event", String::from_utf8_lossy(&record.bytes).into_owned(), "A session event this inspector does not know."),
        ),
    };
    item.title = title;
    item.notes.push(note);
    item
}

/// Whether the client keeps its deflate window between messages on connection `conn`: yes
/// unless the 101 granted `client_no_context_takeover` (browsers do not ask for it). Without
/// the 101 in the tap any more, assume the browsers' way.
fn client_context_takeover(all: &[Record], conn: u64) -> bool {
    let Some(head) = head_of(all, conn, Direction::Out, u64::MAX) else {
        return true;
    };
    !header_value(&head.bytes, "sec-websocket-extensions")
        .is_some_and(|value| value.contains("client_no_context_takeover"))
}

/// Total length of the frame whose header starts `bytes`, when the header is all there.
///
/// Only to skip over a frame the tap did not keep whole; what the header means is the
/// annotator's business.
fn frame_extent(bytes: &[u8]) -> Option<u64> {
    ws_frame::parse_header(bytes)
        .ok()
        .map(|header| header.frame_len())
}

/// Whether `bytes` plausibly start a frame sent in `direction`: reserved bits 2 and 3 clear,
/// a known opcode other than continuation, masked exactly when sent by the client, and a
/// control frame whole and short. A guess, used only to resume after a hole.
fn looks_like_frame_start(bytes: &[u8], direction: Direction) -> bool {
    let Ok(header) = ws_frame::parse_header(bytes) else {
        return false;
    };
    !header.rsv2
        && !header.rsv3
        && matches!(header.opcode, 0x1 | 0x2 | 0x8 | 0x9 | 0xa)
        && header.mask.is_some() == (direction == Direction::In)
        && (!header.is_control() || (header.fin && header.payload_len <= ws_frame::MAX_SHORT_LEN))
}

fn ws_annotator(context_takeover: bool) -> WsAnnotator {
    if context_takeover {
        WsAnnotator::with_context_takeover()
    } else {
        WsAnnotator::new()
    }
}

/// The stream offset of a WebSocket record.
fn ws_offset(record: &Record) -> u64 {
    match record.kind {
        RecordKind::WsBytes { offset } => offset,
        _ => 0,
    }
}

/// The frames of one direction of one WebSocket connection, from its records (in order).
/// Returns the seq of the record where an unfinished frame starts, if the stream ends inside
/// one that may still be completed.
fn ws_stream_items(records: &[&Record], takeover: bool, items: &mut Vec<Item>) -> Option<u64> {
    let first = records.first()?;
    let (conn, direction) = (first.conn, first.direction);
    // The record holding stream offset `at`: items are dated and paged by it.
    let record_at = |at: u64| -> &Record {
        let i = records.partition_point(|r| ws_offset(r) <= at);
        records[i.saturating_sub(1)]
    };
    let make = |start: u64, end: u64, bytes: &[u8], kind: &'static str, title: String| {
        let from = record_at(start);
        Item {
            key: format!("ws{conn}{}@{start}", direction_name(direction)),
            seq: from.seq,
            last_seq: record_at(end.saturating_sub(1).max(start)).seq,
            conn,
            t_us: from.at_us,
            direction: direction_name(direction),
            kind,
            title,
            captured: CAPTURED_WS,
            size: end - start,
            kept: bytes.len(),
            data: BASE64.encode(bytes),
            notes: Vec::new(),
        }
    };

    let mut annotator = ws_annotator(takeover);
    // Bytes of an unfinished frame, and the stream offset of their first byte.
    let mut buffer: Vec<u8> = Vec::new();
    let mut buffer_at: u64 = 0;
    // Where the next frame starts, when known: at 0 on a new connection.
    let mut next_frame: Option<u64> = Some(0);
    let mut resynced = false;
    for record in records {
        let offset = ws_offset(record);
        let data = &record.bytes[..];
        if !buffer.is_empty() && offset != buffer_at + buffer.len() as u64 {
            // A hole cut the frame in the buffer: show what there is, skip to its end.
            let extent = frame_extent(&buffer);
            next_frame = extent.map(|n| buffer_at + n);
            items.push(fragment_item(&make, buffer_at, extent, &buffer));
            buffer.clear();
            // A fragmented message or a deflate window spanning the hole is lost too.
            annotator = ws_annotator(takeover);
        }
        if buffer.is_empty() {
            let end_kept = offset + data.len() as u64;
            let start = match next_frame {
                Some(at) if at >= offset && at < end_kept => (at - offset) as usize,
                // Inside a frame whose bytes were not kept: nothing to parse here.
                Some(at) if at >= end_kept => continue,
                _ if looks_like_frame_start(data, direction) => {
                    resynced = true;
                    annotator = ws_annotator(takeover);
                    0
                }
                _ => {
                    next_frame = None;
                    continue;
                }
            };
            buffer_at = offset + start as u64;
            buffer.extend_from_slice(&data[start..]);
        } else {
            buffer.extend_from_slice(data);
        }
        let frames = annotator.annotate(&buffer);
        for note in frames.frames {
            let Some((start, end)) = note.bytes else {
                continue;
            };
            let title = format!("{}: {}", note.label, note.value);
            let mut item = make(
                buffer_at + start as u64,
                buffer_at + end as u64,
                &buffer[start..end],
                "ws-frame",
                title,
            );
            item.notes.push(note.rebased(start));
            if std::mem::take(&mut resynced) {
                item.notes.push(Note::new(
                    "capture",
                    "parsing resumed here",
                    "Earlier bytes of this connection are no longer in the tap (its ring keeps the newest records), so parsing restarts at a record that looks like the start of a frame.",
                ));
            }
            items.push(item);
        }
        buffer.drain(..frames.consumed);
        buffer_at += frames.consumed as u64;
        next_frame = Some(buffer_at);
    }
    if buffer.is_empty() {
        return None;
    }
    let last = records[records.len() - 1];
    if last.truncated() {
        // The rest of this frame will never be in the tap: show what there is now.
        items.push(fragment_item(
            &make,
            buffer_at,
            frame_extent(&buffer),
            &buffer,
        ));
        return None;
    }
    Some(record_at(buffer_at).seq)
}

/// An item for the kept start of a frame whose rest the tap does not have.
fn fragment_item(
    make: &impl Fn(u64, u64, &[u8], &'static str, String) -> Item,
    at: u64,
    extent: Option<u64>,
    kept: &[u8],
) -> Item {
    let end = extent.map_or(at + kept.len() as u64, |n| at + n);
    let title = match extent {
        Some(n) => format!("frame of {n} bytes, first {} kept", kept.len()),
        None => format!("start of a frame, {} bytes kept", kept.len()),
    };
    let mut item = make(at, end, kept, "ws-fragment", title);
    let incomplete = WsAnnotator::new()
        .annotate(kept)
        .incomplete
        .unwrap_or_default();
    item.notes.push(Note::new("frame (cut)", incomplete, "The tap kept only the start of this frame (each record is cut to lab.max_record_bytes, and the ring forgets old records); the frame's header says how long it is, so parsing goes on after it."));
    item
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(
        seq: u64,
        direction: Direction,
        kind: RecordKind,
        bytes: &[u8],
        len: usize,
    ) -> Record {
        Record {
            seq,
            conn: 1,
            at_us: seq * 10,
            direction,
            kind,
            len,
            bytes: Bytes::copy_from_slice(bytes),
        }
    }

    fn ws(seq: u64, direction: Direction, offset: u64, bytes: &[u8]) -> Record {
        record(
            seq,
            direction,
            RecordKind::WsBytes { offset },
            bytes,
            bytes.len(),
        )
    }

    /// A server text frame with payload `text` (unmasked).
    fn server_frame(text: &str) -> Vec<u8> {
        let mut frame = vec![0x81, text.len() as u8];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    #[test]
    fn frames_split_and_batched_across_records_are_put_back_together() {
        let a = server_frame("hello");
        let b = server_frame("world!");
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        // One write with a frame and a half, then the rest.
        let records = vec![
            ws(1, Direction::Out, 0, &stream[..10]),
            ws(2, Direction::Out, 10, &stream[10..]),
        ];
        let view = view(&records, 0);
        let frames: Vec<_> = view.items.iter().filter(|i| i.kind == "ws-frame").collect();
        assert_eq!(frames.len(), 2, "{:#?}", view.items);
        assert_eq!((frames[0].seq, frames[0].last_seq), (1, 1));
        assert_eq!((frames[1].seq, frames[1].last_seq), (1, 2));
        assert_eq!(frames[1].size, b.len() as u64);
        assert_eq!(BASE64.decode(&frames[1].data).unwrap(), b);
        // Every byte range is an offset into the item's own bytes.
        let note = &frames[1].notes[0];
        assert_eq!(note.bytes, Some((0, b.len())));
        assert!(note.find("FIN").is_some() && note.find("opcode").is_some());
        assert_eq!(view.next_after, 2);
    }

    #[test]
    fn an_unfinished_frame_is_held_back_until_its_end_arrives() {
        let a = server_frame("hello");
        let records = vec![ws(1, Direction::Out, 0, &a[..4])];
        let view = view(&records, 0);
        assert!(view.items.is_empty());
        assert_eq!(view.next_after, 0, "record 1 must be read again");
    }

    #[test]
    fn after_a_cut_record_parsing_resumes_where_the_frame_ends() {
        let long = "x".repeat(100);
        let a = server_frame(&long);
        let b = server_frame("next");
        // Record 1 held frame a (102 bytes) but the tap kept 20; record 2 is frame b.
        let records = vec![
            record(
                1,
                Direction::Out,
                RecordKind::WsBytes { offset: 0 },
                &a[..20],
                a.len(),
            ),
            ws(2, Direction::Out, a.len() as u64, &b),
        ];
        let view = view(&records, 0);
        let kinds: Vec<&str> = view.items.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, ["ws-fragment", "ws-frame"], "{:#?}", view.items);
        assert_eq!(view.items[0].size, a.len() as u64);
        assert!(
            view.items[1].title.contains("text"),
            "{}",
            view.items[1].title
        );
    }

    #[test]
    fn when_the_ring_forgot_the_start_parsing_resumes_at_a_plausible_frame() {
        let b = server_frame("later");
        // Offsets say bytes 0..50 are gone; the first record kept starts mid-frame, the second
        // starts with a frame.
        let records = vec![
            ws(7, Direction::Out, 50, b"xxxxxxxx"),
            ws(8, Direction::Out, 58, &b),
        ];
        let view = view(&records, 0);
        assert_eq!(view.items.len(), 1, "{:#?}", view.items);
        assert_eq!(view.items[0].seq, 8);
        assert!(view.items[0]
            .notes
            .iter()
            .any(|n| n.value == "parsing resumed here"));
    }

    #[test]
    fn the_101_explains_its_accept_key_and_items_page_by_after() {
        let request = b"GET /ws?topics=demo&lab=t HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";
        let response = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let frame = server_frame("hi");
        let records = vec![
            record(
                1,
                Direction::In,
                RecordKind::HttpHead,
                request,
                request.len(),
            ),
            record(
                2,
                Direction::Out,
                RecordKind::HttpHead,
                response,
                response.len(),
            ),
            ws(3, Direction::Out, 0, &frame),
        ];
        let all = view(&records, 0);
        assert_eq!(all.items.len(), 3);
        assert!(
            all.items[1]
                .notes
                .iter()
                .any(|n| n.value.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")),
            "{:#?}",
            all.items[1].notes
        );
        let later = view(&records, 2);
        assert_eq!(later.items.len(), 1);
        assert_eq!(later.items[0].kind, "ws-frame");
    }

    #[test]
    fn sse_chunks_show_their_http1_chunk_framing() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let chunk = b"id: e:1\nevent: demo\ndata: {}\n\n";
        let records = vec![
            record(
                1,
                Direction::Out,
                RecordKind::HttpHead,
                response,
                response.len(),
            ),
            record(2, Direction::Out, RecordKind::SseChunk, chunk, chunk.len()),
        ];
        let view = view(&records, 1);
        let item = &view.items[0];
        let data = BASE64.decode(&item.data).unwrap();
        assert!(data.starts_with(format!("{:x}\r\nid: e:1", chunk.len()).as_bytes()));
        assert!(data.ends_with(b"\n\n\r\n"));
    }

    #[test]
    fn webtransport_stream_ids_are_explained() {
        let note = stream_id_note(3);
        assert!(
            note.value.contains("server-initiated, unidirectional"),
            "{}",
            note.value
        );
        let note = stream_id_note(4);
        assert!(
            note.value.contains("client-initiated, bidirectional"),
            "{}",
            note.value
        );
    }

    #[test]
    fn frame_extents() {
        assert_eq!(frame_extent(&[0x81, 0x05]), Some(7));
        assert_eq!(frame_extent(&[0x81, 0x85, 1, 2, 3, 4]), Some(11));
        // The masking key is part of the header: without it there is no header yet.
        assert_eq!(frame_extent(&[0x81, 0x85]), None);
        assert_eq!(frame_extent(&[0x81, 126, 0x01, 0x00]), Some(260));
        assert_eq!(frame_extent(&[0x81, 126, 0x01]), None);
        assert_eq!(frame_extent(&[0x81]), None);
        assert!(looks_like_frame_start(&[0x81, 0x05], Direction::Out));
        assert!(!looks_like_frame_start(&[0x81, 0x85], Direction::Out));
        assert!(looks_like_frame_start(
            &[0x81, 0x85, 1, 2, 3, 4],
            Direction::In
        ));
        assert!(!looks_like_frame_start(&[0x78, 0x78], Direction::Out));
    }
}
