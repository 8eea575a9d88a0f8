//! The streamgate envelope (docs/PROTOCOL.md §3) inside whatever carries it: a WebSocket
//! message, an SSE `data:` line, a long-poll body, a WebTransport stream or datagram.

use serde_json::Value;

use super::{hex_bytes, payload_preview, plural, unquoted, Note};

/// A streamgate envelope: JSON (§3.1) when `bytes` is a JSON object with a `type`, binary
/// (§3.3) when it parses as one. `base` is where `bytes` start in the caller's input, so the
/// binary envelope's fields get offsets into that input. `None` when it is neither, which is
/// the normal case for application data that is not streamgate's.
pub fn annotate_envelope(bytes: &[u8], base: usize) -> Option<Note> {
    let end = base.saturating_add(bytes.len());
    if bytes.first() == Some(&b'{') {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        return json_envelope(&value).map(|note| note.at(base, end));
    }
    binary_envelope(bytes, base)
}

/// A long-poll response body: `{"cursor":…,"messages":[…]}` (docs/PROTOCOL.md §7), each
/// message read as an envelope, or an error body.
pub fn annotate_poll_body(body: &[u8]) -> Note {
    let whole = (0, body.len());
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Note::new(
            "body",
            payload_preview(body),
            "Not JSON: a long-poll answer is always a JSON object.",
        )
        .at(whole.0, whole.1)
        .with([Note::violation(
            "body is not JSON",
            "streamgate answers a poll with {\"cursor\":…,\"messages\":[…]} or an error object (docs/PROTOCOL.md §6, §7).",
        )]);
    };
    if let Some(error) = value.get("error") {
        let field = |name: &str| error.get(name).map(short_value).unwrap_or_default();
        return Note::new(
            "error body",
            format!("{}: {}", field("code"), field("reason")),
            "The request was refused; the code says why (docs/PROTOCOL.md §6). Nothing is delivered and the cursor does not move.",
        )
        .at(whole.0, whole.1);
    }
    let messages = value
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let cursor = value.get("cursor").map(short_value).unwrap_or_default();
    let events = messages
        .iter()
        .filter(|m| m.get("type").and_then(Value::as_str) == Some("event"))
        .count();
    let mut children = vec![Note::new(
        "cursor",
        cursor,
        "Where to poll from next: send it back as cursor= and the next answer starts after it. It is the last event's id, or unchanged when nothing came.",
    )];
    let mut list = Note::new(
        "messages",
        format!("{} ({})", messages.len(), plural(events as u64, "event")),
        if messages.is_empty() {
            "Nothing arrived while the server held the request: the poll timed out and the client asks again at once."
        } else {
            "Envelopes in delivery order, byte for byte what the other transports send (events and notices alike). One poll may return a batch: up to 100 events or 256 KiB."
        },
    );
    for message in messages {
        list.children
            .push(json_envelope(message).unwrap_or_else(|| {
                Note::new(
                    "message",
                    short_value(message),
                    "Not a streamgate envelope.",
                )
            }));
    }
    children.push(list);
    Note::new(
        "poll response body",
        format!("{} bytes of JSON", body.len()),
        "The body of one long-poll answer: the messages that arrived after the cursor, and the cursor to ask from next.",
    )
    .at(whole.0, whole.1)
    .with(children)
}

/// Length-prefixed messages, as on streamgate's WebTransport streams: each a `u32`
/// big-endian length, then that many bytes of envelope. Returns one note per complete
/// message and the bytes they take.
pub fn annotate_length_prefixed(data: &[u8]) -> (Vec<Note>, usize) {
    let mut notes = Vec::new();
    let mut at = 0;
    while let Some(prefix) = data.get(at..at + 4) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let body_at = at + 4;
        let Some(end) = body_at.checked_add(len).filter(|&end| end <= data.len()) else {
            break;
        };
        let body = &data[body_at..end];
        let envelope = annotate_envelope(body, body_at);
        let value = envelope.as_ref().map_or_else(
            || plural(len as u64, "byte"),
            |e| format!("{}, {}", e.value, plural(len as u64, "byte")),
        );
        let mut message = Note::new(
            format!("message {}", notes.len() + 1),
            value,
            "One message on a stream: QUIC streams are byte streams like TCP, so streamgate marks where each message ends with a length prefix.",
        )
        .at(at, end)
        .with([Note::new(
            "length prefix",
            format!("{len} ({})", hex_bytes(prefix)),
            "4 bytes, big-endian: the length of the envelope that follows (docs/PROTOCOL.md, WebTransport).",
        )
        .at(at, body_at)]);
        message.children.push(envelope.unwrap_or_else(|| {
            Note::new("payload", payload_preview(body), "The message's bytes.").at(body_at, end)
        }));
        notes.push(message);
        at = end;
    }
    (notes, at)
}

/// A JSON envelope's fields, in the order they came, each explained.
pub(crate) fn json_envelope(value: &Value) -> Option<Note> {
    let object = value.as_object()?;
    let kind = object.get("type")?.as_str()?;
    let (summary, explain) = match kind {
        "event" => (
            format!(
                "event {} on {}",
                object.get("id").map(short_value).unwrap_or_default(),
                object.get("topic").map(short_value).unwrap_or_default()
            ),
            "An event (docs/PROTOCOL.md §3.1): the same JSON on every transport, encoded once and shared by all subscribers.",
        ),
        "gap" => (
            "gap notice".to_owned(),
            "Events of this topic were evicted from history before this subscriber got them: the gateway says so instead of skipping them silently (docs/PROTOCOL.md §4).",
        ),
        "reset" => (
            "reset notice".to_owned(),
            "The resume id came from another epoch (another incarnation of the bus): delivery restarts from the oldest kept event, and the client's state is stale (docs/PROTOCOL.md §4).",
        ),
        "lagged" => (
            "lagged notice".to_owned(),
            "This subscriber read too slowly and was detached from the live stream; it is now served from history, so it loses nothing still kept (docs/PROTOCOL.md §5).",
        ),
        "subscribed" => (
            "subscribed".to_owned(),
            "The gateway confirms the subscription, and names the current epoch (docs/PROTOCOL.md §3.1).",
        ),
        "published" => (
            "published".to_owned(),
            "The answer to a publish message: the id the bus gave the event (docs/PROTOCOL.md §3.1).",
        ),
        "error" => (
            "error".to_owned(),
            "A request on this connection was refused; the code says why (docs/PROTOCOL.md §6).",
        ),
        "datagram_fallback" => (
            "datagram fallback notice".to_owned(),
            "The next event is too large for one datagram, so it comes on the control stream instead (docs/PROTOCOL.md, WebTransport).",
        ),
        other => (
            other.to_owned(),
            "A JSON message with a type streamgate does not send.",
        ),
    };
    let children = object
        .iter()
        .map(|(key, value)| {
            let shown = if key == "ts" {
                value.as_u64().map_or_else(
                    || short_value(value),
                    |us| format!("{us} ({})", utc_micros(us)),
                )
            } else {
                short_value(value)
            };
            Note::new(key.as_str(), shown, field_explain(kind, key))
        })
        .collect::<Vec<_>>();
    Some(
        Note::new(
            "streamgate envelope",
            summary,
            format!("JSON, type {kind:?}. {explain}"),
        )
        .with(children),
    )
}

fn field_explain(kind: &str, key: &str) -> &'static str {
    match (kind, key) {
        (_, "type") => "What the message is: event, a notice (gap, reset, lagged) or a reply (subscribed, published, error).",
        (_, "topic") => "The topic the event belongs to: 1 to 128 letters, digits, _, - or . (docs/PROTOCOL.md §1).",
        ("event" | "published", "id") => "The event id, epoch:seq. seq grows across the whole bus, so this one id is the resume point of a subscription to any set of topics (since=, Last-Event-ID, cursor=).",
        (_, "ts") => "Publication time on the gateway, in microseconds since the Unix epoch: receive time minus ts is the publish → receive latency.",
        (_, "content_type") => "How data is carried: json (the value itself), text (a JSON string) or binary (base64).",
        (_, "data") => "The payload as published.",
        ("gap", "after") => "The last id this subscriber had before the hole.",
        ("gap", "lost_through") => "The newest id lost: everything of this topic after `after` up to here was evicted.",
        ("reset", "requested") => "The resume id the client asked for, from an epoch that is gone.",
        (_, "epoch") => "The current epoch: ids of other epochs cannot be compared with this one's.",
        ("lagged", "last_delivered") => "The last id delivered before the subscriber fell behind; history replay continues after it.",
        (_, "topics") => "The topics now subscribed.",
        (_, "mode") => "How WebTransport carries events: stream, stream-per-event or datagram.",
        (_, "max_datagram_size") => "The largest datagram this QUIC connection carries now (it follows the path MTU).",
        (_, "ref") => "The client's own reference, echoed so it can match replies to requests.",
        (_, "code") => "A machine-readable error code (docs/PROTOCOL.md §6).",
        (_, "reason") => "A human-readable explanation.",
        (_, "size") => "The envelope's size in bytes.",
        _ => "A field this lab does not describe.",
    }
}

/// A JSON value in one short line: strings without their quotes (ids read better that
/// way), anything else as compact JSON, cut to a preview.
fn short_value(value: &Value) -> String {
    match value {
        Value::String(text) => unquoted(text),
        other => unquoted(&other.to_string()),
    }
}

/// A binary envelope (§3.3), if `bytes` is exactly one.
fn binary_envelope(bytes: &[u8], base: usize) -> Option<Note> {
    let [version, kind, content_type, topic_len, ..] = *bytes else {
        return None;
    };
    if version != 1 || kind != 1 || content_type > 2 || !(1..=128).contains(&topic_len) {
        return None;
    }
    let topic_at = 4;
    let id_len_at = topic_at + usize::from(topic_len);
    let topic = bytes.get(topic_at..id_len_at)?;
    let id_len = *bytes.get(id_len_at)?;
    if !(3..=53).contains(&id_len) || !topic.is_ascii() {
        return None;
    }
    let id_at = id_len_at + 1;
    let ts_at = id_at + usize::from(id_len);
    let id = bytes.get(id_at..ts_at)?;
    let payload_at = ts_at + 8;
    let ts = bytes.get(ts_at..payload_at)?;
    if !id.is_ascii() || !id.contains(&b':') {
        return None;
    }
    let mut ts_be = [0u8; 8];
    ts_be.copy_from_slice(ts);
    let ts = u64::from_be_bytes(ts_be);
    let topic = String::from_utf8_lossy(topic);
    let id = String::from_utf8_lossy(id);
    let kind_name = ["text", "json", "binary"][usize::from(content_type)];
    let at = |from: usize, to: usize| (base + from, base + to);
    let field = |label: &str, value: String, explain: &str, (from, to): (usize, usize)| {
        Note::new(label, value, explain).at(from, to)
    };
    Some(
        Note::new(
            "streamgate envelope",
            format!("event {id} on {topic}"),
            "Binary (docs/PROTOCOL.md §3.3): fixed fields, then the payload raw, so a binary event is not inflated by base64.",
        )
        .at(base, base + bytes.len())
        .with([
            field("version", "1".to_owned(), "Envelope format version.", at(0, 1)),
            field("kind", "1 (event)".to_owned(), "Only events travel binary; notices and replies stay JSON text.", at(1, 2)),
            field("content type", format!("{content_type} ({kind_name})"), "0 text, 1 json, 2 binary: how to read the payload.", at(2, 3)),
            field("topic length", topic_len.to_string(), "1 to 128.", at(3, 4)),
            field("topic", topic.into_owned(), "The topic, ASCII.", at(topic_at, id_len_at)),
            field("id length", id_len.to_string(), "3 to 53.", at(id_len_at, id_at)),
            field("id", id.into_owned(), "The event id, epoch:seq, ASCII.", at(id_at, ts_at)),
            field("ts", format!("{ts} ({})", utc_micros(ts)), "Publication time, microseconds since the Unix epoch, unsigned big-endian.", at(ts_at, payload_at)),
            field("payload", payload_preview(&bytes[payload_at..]), "The payload, raw, to the end of the message.", at(payload_at, bytes.len())),
        ]),
    )
}

/// Microseconds since the Unix epoch as an RFC 3339 UTC time.
fn utc_micros(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    // Howard Hinnant's civil_from_days: proleptic Gregorian date of a day count.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        micros % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            utc_micros(1_764_213_600_123_456),
            "2025-11-27T03:20:00.123456Z"
        );
        assert!(utc_micros(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn json_envelopes_explain_their_fields() {
        let note = annotate_envelope(
            br#"{"type":"gap","topic":"demo","after":"e:17","lost_through":"e:90"}"#,
            10,
        )
        .unwrap();
        assert_eq!(note.value, "gap notice");
        assert_eq!(note.bytes, Some((10, 76)));
        assert_eq!(note.find("lost_through").unwrap().value, "e:90");
        assert!(annotate_envelope(b"[1,2]", 0).is_none());
        assert!(annotate_envelope(b"{\"no\":1}", 0).is_none());
    }

    #[test]
    fn binary_envelopes_have_their_layout() {
        let mut bytes = vec![1, 1, 2, 4];
        bytes.extend_from_slice(b"news");
        bytes.push(3);
        bytes.extend_from_slice(b"e:1");
        bytes.extend_from_slice(&1_764_213_600_123_456u64.to_be_bytes());
        bytes.extend_from_slice(&[0, 255]);
        let note = annotate_envelope(&bytes, 100).unwrap();
        assert_eq!(note.value, "event e:1 on news");
        assert_eq!(note.find("topic").unwrap().bytes, Some((104, 108)));
        assert_eq!(note.find("payload").unwrap().value, "00 ff");
        bytes.truncate(10);
        assert!(annotate_envelope(&bytes, 0).is_none());
    }

    #[test]
    fn poll_bodies_list_their_messages() {
        let body = br#"{"cursor":"e:2","messages":[{"type":"event","topic":"t","id":"e:2","ts":1,"content_type":"text","data":"x"}]}"#;
        let note = annotate_poll_body(body);
        assert_eq!(note.find("cursor").unwrap().value, "e:2");
        assert_eq!(note.find("messages").unwrap().value, "1 (1 event)");
        assert_eq!(
            note.find("streamgate envelope").unwrap().value,
            "event e:2 on t"
        );
        let error = annotate_poll_body(br#"{"error":{"code":"bad_cursor","reason":"no"}}"#);
        assert_eq!(error.value, "bad_cursor: no");
        assert_eq!(annotate_poll_body(b"nope").violations().len(), 1);
    }

    #[test]
    fn length_prefixed_messages() {
        let json = br#"{"type":"subscribed","topics":["t"],"epoch":"e","mode":"stream"}"#;
        let mut data = (json.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(json);
        data.extend_from_slice(&[0, 0, 0, 9, b'x']);
        let (notes, consumed) = annotate_length_prefixed(&data);
        assert_eq!(consumed, 4 + json.len());
        assert_eq!(notes.len(), 1);
        assert_eq!(
            notes[0].find("length prefix").unwrap().value,
            format!("{} (00 00 00 {:02x})", json.len(), json.len())
        );
        assert_eq!(notes[0].find("mode").unwrap().value, "stream");
    }
}
