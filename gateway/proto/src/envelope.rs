//! Encoding of server→client messages, as `docs/PROTOCOL.md` §3 defines them.
//!
//! Event envelopes are written by hand rather than through a serde struct: the `data` of a
//! `json` event is the published JSON embedded verbatim (already validated at publish), and
//! topics and ids come from alphabets that never need escaping, so the only escaping left is
//! for `text` payloads. This is the hot path of every fan-out, run once per event per format.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;
use std::sync::{Arc, LazyLock};

use streamgate_core::{ContentType, Epoch, Event, EventId, Notice, Topic, WireFormat};

use streamgate_core::Rejection;

use crate::query::EnvelopeFormat;

/// First byte of every binary envelope.
pub const BINARY_ENVELOPE_VERSION: u8 = 1;

static JSON_ENVELOPE: LazyLock<WireFormat> =
    LazyLock::new(|| WireFormat::register("json-envelope"));
static BINARY_ENVELOPE: LazyLock<WireFormat> =
    LazyLock::new(|| WireFormat::register("binary-envelope"));

/// The JSON envelope of `event`, encoded on first use and shared by every subscriber of every
/// transport afterwards.
pub fn json_envelope(event: &Event) -> Bytes {
    event.encoded(*JSON_ENVELOPE, encode_event_json)
}

/// The binary envelope of `event`, encoded once and shared like [`json_envelope`].
pub fn binary_envelope(event: &Event) -> Bytes {
    event.encoded(*BINARY_ENVELOPE, encode_event_binary)
}

/// The JSON envelope of an event: `{"type":"event","topic":…,"id":…,"ts":…,"content_type":…,"data":…}`.
pub fn encode_event_json(event: &Event) -> Bytes {
    let payload = &event.payload;
    let mut out = BytesMut::with_capacity(96 + payload.len() * 4 / 3);
    out.put_slice(b"{\"type\":\"event\",\"topic\":\"");
    out.put_slice(event.topic.as_str().as_bytes());
    out.put_slice(b"\",\"id\":\"");
    out.put_slice(event.id.to_string().as_bytes());
    out.put_slice(b"\",\"ts\":");
    out.put_slice(event.timestamp_us.to_string().as_bytes());
    out.put_slice(b",\"content_type\":\"");
    out.put_slice(event.content_type.as_str().as_bytes());
    out.put_slice(b"\",\"data\":");
    match event.content_type {
        ContentType::Json => out.put_slice(payload),
        ContentType::Text => {
            let text = String::from_utf8_lossy(payload);
            let escaped = serde_json::to_string(text.as_ref()).unwrap_or_default();
            out.put_slice(escaped.as_bytes());
        }
        ContentType::Binary => {
            out.put_u8(b'"');
            out.put_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(payload)
                    .as_bytes(),
            );
            out.put_u8(b'"');
        }
    }
    out.put_u8(b'}');
    out.freeze()
}

/// The binary envelope of an event (`docs/PROTOCOL.md` §3.3).
pub fn encode_event_binary(event: &Event) -> Bytes {
    let topic = event.topic.as_str().as_bytes();
    let id = event.id.to_string();
    let mut out = BytesMut::with_capacity(13 + topic.len() + id.len() + event.payload.len());
    out.put_u8(BINARY_ENVELOPE_VERSION);
    out.put_u8(1);
    out.put_u8(match event.content_type {
        ContentType::Text => 0,
        ContentType::Json => 1,
        ContentType::Binary => 2,
    });
    // Topics are at most 128 bytes and ids at most 53 (32 + ':' + 20 digits): both fit a u8.
    out.put_u8(topic.len() as u8);
    out.put_slice(topic);
    out.put_u8(id.len() as u8);
    out.put_slice(id.as_bytes());
    out.put_u64(event.timestamp_us);
    out.put_slice(&event.payload);
    out.freeze()
}

/// A notice (`gap`, `reset`, `lagged`, `unavailable` or `available`) as a JSON message.
pub fn encode_notice(notice: &Notice) -> Bytes {
    let value = match notice {
        Notice::Gap {
            topic,
            after,
            lost_through,
        } => json!({
            "type": "gap",
            "topic": topic.as_str(),
            "after": after.to_string(),
            "lost_through": lost_through.to_string(),
        }),
        Notice::Reset { requested, epoch } => json!({
            "type": "reset",
            "requested": requested.to_string(),
            "epoch": epoch.as_str(),
        }),
        Notice::Lagged { last_delivered } => json!({
            "type": "lagged",
            "last_delivered": last_delivered.as_ref().map(EventId::to_string),
        }),
        Notice::Unavailable { reason } => json!({
            "type": "unavailable",
            "reason": reason,
        }),
        Notice::Available => json!({ "type": "available" }),
        other => json!({ "type": "notice", "detail": format!("{other:?}") }),
    };
    Bytes::from(value.to_string())
}

/// `{"type":"subscribed","topics":[…],"epoch":…}`.
pub fn encode_subscribed(topics: &[Topic], epoch: &Epoch) -> Bytes {
    let topics: Vec<&str> = topics.iter().map(Topic::as_str).collect();
    Bytes::from(
        json!({"type": "subscribed", "topics": topics, "epoch": epoch.as_str()}).to_string(),
    )
}

/// `{"type":"published","ref":…,"id":…}`.
pub fn encode_published(reference: Option<&str>, id: &EventId) -> Bytes {
    Bytes::from(json!({"type": "published", "ref": reference, "id": id.to_string()}).to_string())
}

/// `{"type":"error","code":…,"reason":…,"ref":…}`.
pub fn encode_error(error: &Rejection, reference: Option<&str>) -> Bytes {
    Bytes::from(
        json!({"type": "error", "code": error.code, "reason": error.reason, "ref": reference})
            .to_string(),
    )
}

/// The `error` reply to a client message, the refusal recorded ([`Rejection::record`]).
pub fn error_reply(error: &Rejection, reference: Option<&str>) -> Bytes {
    error.record();
    encode_error(error, reference)
}

/// The reply to a client's `publish` ([`streamgate_core::ClientPublish`]): `published` with
/// the event's id, or the recorded `error` it was refused with.
pub fn publish_reply(reference: Option<&str>, outcome: &Result<Arc<Event>, Rejection>) -> Bytes {
    match outcome {
        Ok(event) => encode_published(reference, &event.id),
        Err(error) => error_reply(error, reference),
    }
}

impl EnvelopeFormat {
    /// The envelope `event` travels in, on a binary-capable transport, to a subscriber who
    /// asked for `self`: binary when asked, and for a `binary` event always, so its payload
    /// is not inflated by base64 (`docs/PROTOCOL.md` §3.3).
    pub fn for_event(self, event: &Event) -> EnvelopeFormat {
        if self == EnvelopeFormat::Binary || event.content_type == ContentType::Binary {
            EnvelopeFormat::Binary
        } else {
            EnvelopeFormat::Json
        }
    }

    /// `event` in this envelope, encoded once per event and shared ([`json_envelope`],
    /// [`binary_envelope`]).
    pub fn envelope(self, event: &Event) -> Bytes {
        match self {
            EnvelopeFormat::Json => json_envelope(event),
            EnvelopeFormat::Binary => binary_envelope(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(content_type: ContentType, payload: &'static [u8]) -> Event {
        Event::new(
            Topic::new("demo").unwrap(),
            EventId::new(Epoch::new("ep").unwrap(), 42),
            1_700_000_000_123_456,
            content_type,
            Bytes::from_static(payload),
        )
    }

    #[test]
    fn json_event_embeds_the_payload_verbatim() {
        let bytes = encode_event_json(&event(ContentType::Json, br#"{"a": [1, 2]}"#));
        assert_eq!(
            &bytes[..],
            br#"{"type":"event","topic":"demo","id":"ep:42","ts":1700000000123456,"content_type":"json","data":{"a": [1, 2]}}"#
        );
    }

    #[test]
    fn text_event_is_escaped() {
        let bytes = encode_event_json(&event(ContentType::Text, b"line 1\n\"q\" \\ \x01"));
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["data"], "line 1\n\"q\" \\ \u{1}");
        assert_eq!(value["content_type"], "text");
    }

    #[test]
    fn binary_event_is_base64() {
        let bytes = encode_event_json(&event(ContentType::Binary, &[0, 255, 1]));
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["data"], "AP8B");
    }

    #[test]
    fn binary_envelope_layout() {
        let bytes = encode_event_binary(&event(ContentType::Binary, &[9, 8]));
        let mut expected = vec![1u8, 1, 2, 4];
        expected.extend_from_slice(b"demo");
        expected.push(5);
        expected.extend_from_slice(b"ep:42");
        expected.extend_from_slice(&1_700_000_000_123_456u64.to_be_bytes());
        expected.extend_from_slice(&[9, 8]);
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn envelope_follows_the_request_and_binary_events_stay_binary() {
        use EnvelopeFormat::{Binary, Json};
        for (asked, content_type, chosen) in [
            (Json, ContentType::Json, Json),
            (Json, ContentType::Text, Json),
            (Json, ContentType::Binary, Binary),
            (Binary, ContentType::Json, Binary),
            (Binary, ContentType::Text, Binary),
            (Binary, ContentType::Binary, Binary),
        ] {
            let event = event(content_type, b"1");
            assert_eq!(
                asked.for_event(&event),
                chosen,
                "{asked:?} {content_type:?}"
            );
            let expected = match chosen {
                Json => encode_event_json(&event),
                Binary => encode_event_binary(&event),
            };
            assert_eq!(chosen.envelope(&event), expected);
        }
    }

    #[test]
    fn notices_and_replies() {
        let epoch = Epoch::new("ep").unwrap();
        let gap = encode_notice(&Notice::Gap {
            topic: Topic::new("t").unwrap(),
            after: EventId::new(epoch.clone(), 1),
            lost_through: EventId::new(epoch.clone(), 9),
        });
        let value: serde_json::Value = serde_json::from_slice(&gap).unwrap();
        assert_eq!(
            value,
            json!({"type":"gap","topic":"t","after":"ep:1","lost_through":"ep:9"})
        );
        let lagged = encode_notice(&Notice::Lagged {
            last_delivered: None,
        });
        assert_eq!(&lagged[..], br#"{"type":"lagged","last_delivered":null}"#);
        let error = encode_error(&Rejection::new("bad_topic", "no"), Some("r1"));
        let value: serde_json::Value = serde_json::from_slice(&error).unwrap();
        assert_eq!(
            value,
            json!({"type":"error","code":"bad_topic","reason":"no","ref":"r1"})
        );
    }
}
