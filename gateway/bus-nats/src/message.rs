//! One event as a NATS message, and back.
//!
//! The payload is the event's payload, untouched. Everything else travels in headers, so
//! that the payload never needs an envelope and NATS tooling shows it as it is:
//!
//! | header                    | value                                      |
//! |---------------------------|--------------------------------------------|
//! | `Streamgate-Topic`        | the exact topic name                        |
//! | `Streamgate-Content-Type` | `text`, `json` or `binary`                  |
//! | `Streamgate-Timestamp-Us` | publication time, microseconds since 1970  |
//!
//! The id is not stored: it is the stream sequence, which the delivery's reply subject
//! carries. Reading is defensive because anyone allowed to publish on the log's subjects
//! can put anything there: a missing header falls back to what is known anyway (the topic
//! from the subject, the JetStream storage time, `binary`), and a message that still is not
//! a valid event is rejected rather than passed on (a `json` event with a payload that is
//! not JSON would corrupt every envelope that embeds it); the feed skips it.

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use streamgate_core::{ContentType, Epoch, Event, EventId, Topic};

use crate::subject::Subjects;

pub(crate) const TOPIC_HEADER: &str = "Streamgate-Topic";
pub(crate) const CONTENT_TYPE_HEADER: &str = "Streamgate-Content-Type";
pub(crate) const TIMESTAMP_HEADER: &str = "Streamgate-Timestamp-Us";

/// The headers of a new event's message.
pub(crate) fn event_headers(
    topic: &Topic,
    content_type: ContentType,
    timestamp_us: u64,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(TOPIC_HEADER, topic.as_str());
    headers.insert(CONTENT_TYPE_HEADER, content_type.as_str());
    headers.insert(TIMESTAMP_HEADER, timestamp_us.to_string().as_str());
    headers
}

/// Where a JetStream delivery sits, read from its `$JS.ACK...` reply subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The message's stream sequence: the event's sequence.
    pub(crate) stream_seq: u64,
    /// The delivery's number in this consumer, counting from 1 without gaps.
    pub(crate) consumer_seq: u64,
    /// When JetStream stored the message, in nanoseconds since 1970.
    pub(crate) stored_unix_nanos: u64,
}

impl Delivery {
    /// Parses the reply subject of a delivery:
    /// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>`, or the longer
    /// form with a domain and an account hash after `$JS.ACK` (and possibly a trailing token).
    pub(crate) fn from_reply(reply: &str) -> Option<Self> {
        let tokens: Vec<&str> = reply.split('.').collect();
        let numbers = match tokens.len() {
            9 => &tokens[4..9],
            n if n >= 11 => &tokens[6..11],
            _ => return None,
        };
        if tokens[0] != "$JS" || tokens[1] != "ACK" {
            return None;
        }
        Some(Self {
            stream_seq: numbers[1].parse().ok()?,
            consumer_seq: numbers[2].parse().ok()?,
            stored_unix_nanos: numbers[3].parse().ok()?,
        })
    }
}

/// Builds the event stored in `message`, with id `epoch:{delivery.stream_seq}`.
///
/// # Errors
/// A description of what makes the message an invalid event.
pub(crate) fn decode_event(
    message: &Message,
    delivery: Delivery,
    epoch: &Epoch,
    subjects: &Subjects,
) -> Result<Event, String> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str())
    };
    let topic = match header(TOPIC_HEADER) {
        Some(name) => {
            Topic::new(name).map_err(|err| format!("header {TOPIC_HEADER} {name:?}: {err}"))?
        }
        None => subjects.topic_of(message.subject.as_str()).ok_or_else(|| {
            format!(
                "no {TOPIC_HEADER} header, and subject {:?} names no topic",
                message.subject.as_str()
            )
        })?,
    };
    let content_type = match header(CONTENT_TYPE_HEADER) {
        Some(name) => ContentType::from_name(name).ok_or_else(|| {
            format!("header {CONTENT_TYPE_HEADER} {name:?} is not a content type")
        })?,
        None => ContentType::Binary,
    };
    let timestamp_us = match header(TIMESTAMP_HEADER) {
        Some(value) => value
            .parse::<u64>()
            .map_err(|_| format!("header {TIMESTAMP_HEADER} {value:?} is not a number"))?,
        None => delivery.stored_unix_nanos / 1000,
    };
    let payload: Bytes = message.payload.clone();
    content_type
        .validate(&payload)
        .map_err(|err| format!("payload is not valid {content_type}: {err}"))?;
    Ok(Event::new(
        topic,
        EventId::new(epoch.clone(), delivery.stream_seq),
        timestamp_us,
        content_type,
        payload,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_reply_subject_forms() {
        let short = Delivery::from_reply("$JS.ACK.LOG.c1.1.42.7.1700000000123456789.0").unwrap();
        assert_eq!(
            short,
            Delivery {
                stream_seq: 42,
                consumer_seq: 7,
                stored_unix_nanos: 1_700_000_000_123_456_789
            }
        );
        let long =
            Delivery::from_reply("$JS.ACK.hub.ACCHASH.LOG.c1.1.42.7.1700000000123456789.0.tok")
                .unwrap();
        assert_eq!(long, short);
    }

    #[test]
    fn rejects_other_reply_subjects() {
        for reply in [
            "_INBOX.abc",
            "$JS.ACK.LOG.c1.1.x.7.1.0",
            "$JS.NAK.LOG.c1.1.42.7.1.0",
            "$JS.ACK.LOG.c1.1.42.7.1",
        ] {
            assert_eq!(Delivery::from_reply(reply), None, "{reply}");
        }
    }

    fn message(subject: &str, headers: Option<HeaderMap>, payload: &'static [u8]) -> Message {
        Message {
            subject: subject.into(),
            reply: None,
            payload: Bytes::from_static(payload),
            headers,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    const DELIVERY: Delivery = Delivery {
        stream_seq: 9,
        consumer_seq: 1,
        stored_unix_nanos: 5_000_000,
    };

    #[test]
    fn decodes_what_append_writes() {
        let epoch = Epoch::new("e1").unwrap();
        let subjects = Subjects::new("sg");
        let topic = Topic::new("a.b").unwrap();
        let headers = event_headers(&topic, ContentType::Json, 77);
        let message = message(&subjects.of_topic(&topic), Some(headers), b"{\"x\":1}");
        let event = decode_event(&message, DELIVERY, &epoch, &subjects).unwrap();
        assert_eq!(event.topic, topic);
        assert_eq!(event.id, EventId::new(epoch, 9));
        assert_eq!(event.timestamp_us, 77);
        assert_eq!(event.content_type, ContentType::Json);
        assert_eq!(&event.payload[..], b"{\"x\":1}");
    }

    #[test]
    fn falls_back_when_headers_are_missing() {
        let epoch = Epoch::new("e1").unwrap();
        let subjects = Subjects::new("sg");
        let message = message("sg.t.x_2Ey", None, b"\xff");
        let event = decode_event(&message, DELIVERY, &epoch, &subjects).unwrap();
        assert_eq!(event.topic.as_str(), "x.y");
        assert_eq!(event.content_type, ContentType::Binary);
        assert_eq!(event.timestamp_us, 5_000);
    }

    #[test]
    fn refuses_invalid_events() {
        let epoch = Epoch::new("e1").unwrap();
        let subjects = Subjects::new("sg");
        let with = |name: &str, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, value);
            Some(headers)
        };
        let cases = [
            message("other.subject", None, b"x"),
            message("sg.t.a", with(TOPIC_HEADER, "a/b"), b"x"),
            message("sg.t.a", with(CONTENT_TYPE_HEADER, "xml"), b"x"),
            message("sg.t.a", with(CONTENT_TYPE_HEADER, "json"), b"{"),
            message("sg.t.a", with(CONTENT_TYPE_HEADER, "text"), b"\xff"),
            message("sg.t.a", with(TIMESTAMP_HEADER, "-1"), b"x"),
        ];
        for message in cases {
            assert!(
                decode_event(&message, DELIVERY, &epoch, &subjects).is_err(),
                "{message:?}"
            );
        }
    }
}
