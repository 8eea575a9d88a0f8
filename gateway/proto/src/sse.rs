//! Server-Sent Events framing (WHATWG HTML, "Server-sent events"), as pure functions.
//!
//! A block is a few `field: value` lines and a blank line. `data` may not contain a line
//! break, so a multi-line payload becomes several `data:` lines, which the browser joins with
//! `\n`. Any of `\r\n`, `\r` and `\n` ends a line in the stream, so all three are split on.

use std::sync::LazyLock;

use bytes::{BufMut, Bytes, BytesMut};
use streamgate_core::{Event, EventId, Notice, WireFormat};

use crate::envelope::{encode_notice, json_envelope};
use streamgate_core::Rejection;

static SSE_EVENT: LazyLock<WireFormat> = LazyLock::new(|| WireFormat::register("sse"));

/// `event:` names of notices. `@` is outside the topic alphabet, so a notice can never be
/// mistaken for an event of a topic with the same name.
pub const SSE_NOTICE_PREFIX: char = '@';

/// One SSE block: optional `id:` and `event:` lines, then `data` split into `data:` lines.
pub fn encode_sse_block(id: Option<&str>, event: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 64);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// An event as an SSE block: `id:` the event id, `event:` the topic, `data:` the JSON
/// envelope. Encoded once per event and shared by every SSE subscriber.
pub fn sse_event(event: &Event) -> Bytes {
    event.encoded(*SSE_EVENT, |event| {
        encode_sse_block(
            Some(&event.id.to_string()),
            Some(event.topic.as_str()),
            &json_envelope(event),
        )
    })
}

/// A notice as an SSE block, `event: @gap` (or `@reset`, `@lagged`), without an `id:` line
/// so the browser's last event id stays the last event's.
pub fn sse_notice(notice: &Notice) -> Bytes {
    let name = match notice {
        Notice::Gap { .. } => "@gap",
        Notice::Reset { .. } => "@reset",
        Notice::Lagged { .. } => "@lagged",
        Notice::Unavailable { .. } => "@unavailable",
        Notice::Available => "@available",
        _ => "@notice",
    };
    encode_sse_block(None, Some(name), &encode_notice(notice))
}

/// A comment line (ignored by clients; keeps idle proxies from closing the stream).
pub fn sse_comment(text: &str) -> Bytes {
    let text: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    Bytes::from(format!(": {text}\n\n"))
}

/// The `retry:` field: how long the browser waits before reconnecting, in milliseconds.
pub fn sse_retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// Parses a `Last-Event-ID` header value. An empty value means "no id" (browsers send the
/// header only when they have one, but proxies may pass an empty one).
///
/// # Errors
/// `bad_cursor` when the value is not an `epoch:seq` id.
pub fn parse_last_event_id(value: &[u8]) -> Result<Option<EventId>, Rejection> {
    let text = std::str::from_utf8(value)
        .map_err(|_| Rejection::new("bad_cursor", "Last-Event-ID is not UTF-8"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<EventId>()
        .map(Some)
        .map_err(|e| Rejection::new("bad_cursor", format!("Last-Event-ID: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_core::{ContentType, Epoch, Topic};

    #[test]
    fn single_line() {
        assert_eq!(
            &encode_sse_block(Some("e:1"), Some("demo"), b"{\"a\":1}")[..],
            b"id: e:1\nevent: demo\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn every_line_break_splits_data() {
        assert_eq!(
            &encode_sse_block(None, None, b"a\nb\r\nc\rd")[..],
            b"data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(&encode_sse_block(None, None, b"")[..], b"data: \n\n");
        assert_eq!(
            &encode_sse_block(None, None, b"trailing\n")[..],
            b"data: trailing\ndata: \n\n"
        );
    }

    #[test]
    fn event_block_carries_id_topic_and_envelope() {
        let event = Event::new(
            Topic::new("demo").unwrap(),
            EventId::new(Epoch::new("ep").unwrap(), 7),
            5,
            ContentType::Json,
            Bytes::from_static(b"{\n  \"x\": 1\n}"),
        );
        assert_eq!(
            &sse_event(&event)[..],
            &b"id: ep:7\nevent: demo\ndata: {\"type\":\"event\",\"topic\":\"demo\",\"id\":\"ep:7\",\"ts\":5,\"content_type\":\"json\",\"data\":{\ndata:   \"x\": 1\ndata: }}\n\n"[..]
        );
    }

    #[test]
    fn notices_have_no_id() {
        let block = sse_notice(&Notice::Lagged {
            last_delivered: None,
        });
        assert!(block.starts_with(b"event: @lagged\ndata: {"));
    }

    #[test]
    fn comments_and_retry() {
        assert_eq!(&sse_comment("hb\nx")[..], b": hbx\n\n");
        assert_eq!(&sse_retry(3000)[..], b"retry: 3000\n\n");
    }

    #[test]
    fn last_event_id() {
        assert_eq!(parse_last_event_id(b"ep:9").unwrap().unwrap().seq, 9);
        assert_eq!(parse_last_event_id(b" ").unwrap(), None);
        assert_eq!(parse_last_event_id(b"nope").unwrap_err().code, "bad_cursor");
        assert_eq!(parse_last_event_id(b"\xff").unwrap_err().code, "bad_cursor");
    }
}
