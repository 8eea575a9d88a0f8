//! The fan-out message: one appended event as it travels on the Pub/Sub channel or in the
//! `log` stream.
//!
//! ```text
//! offset  size  field
//! 0       1     format version, 1
//! 1       1     epoch length E (1..=32)
//! 2       E     epoch, ASCII
//! 2+E     8     sequence, big-endian
//! 10+E    8     timestamp in µs since the Unix epoch, big-endian
//! 18+E    1     content type: 0 text, 1 json, 2 binary
//! 19+E    1     topic length T (1..=128)
//! 20+E    T     topic, ASCII
//! 20+E+T  rest  payload, untouched
//! ```
//!
//! The message is assembled in two halves. Only the append script knows the epoch and the
//! sequence, and Lua cannot be trusted with 64-bit arithmetic beyond 2^53, so the client
//! encodes everything after them ([`encode_meta`]) and the script writes the head (sequences
//! stay far below 2^53) and appends the payload. The length prefixes make decoding a walk
//! with bounds checks, no searching; every field is validated, because anything can be
//! published on a Redis channel.

use bytes::{BufMut, Bytes};
use streamgate_core::{ContentType, Epoch, Event, EventId, Topic};

/// The version byte this crate writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// The content type's byte in a message.
pub(crate) fn content_type_code(content_type: ContentType) -> u8 {
    match content_type {
        ContentType::Text => 0,
        ContentType::Json => 1,
        ContentType::Binary => 2,
    }
}

fn content_type_from_code(code: u8) -> Option<ContentType> {
    match code {
        0 => Some(ContentType::Text),
        1 => Some(ContentType::Json),
        2 => Some(ContentType::Binary),
        _ => None,
    }
}

/// The part of a message after the sequence and before the payload: timestamp, content type
/// and topic. The append script completes it.
pub(crate) fn encode_meta(topic: &Topic, content_type: ContentType, timestamp_us: u64) -> Vec<u8> {
    let name = topic.as_str().as_bytes();
    let mut meta = Vec::with_capacity(8 + 1 + 1 + name.len());
    meta.put_u64(timestamp_us);
    meta.put_u8(content_type_code(content_type));
    // A valid topic is at most 128 bytes, so its length fits the byte.
    meta.put_u8(u8::try_from(name.len()).unwrap_or(u8::MAX));
    meta.put_slice(name);
    meta
}

/// A whole message, as the append script writes it; for tests.
#[cfg(test)]
pub(crate) fn encode(event: &Event) -> Vec<u8> {
    let epoch = event.id.epoch.as_str().as_bytes();
    let mut message = vec![FORMAT_VERSION, u8::try_from(epoch.len()).unwrap()];
    message.put_slice(epoch);
    message.put_u64(event.id.seq);
    message.extend(encode_meta(
        &event.topic,
        event.content_type,
        event.timestamp_us,
    ));
    message.put_slice(&event.payload);
    message
}

/// Decodes a message; the error says what is wrong with it.
pub(crate) fn decode(message: Bytes) -> Result<Event, &'static str> {
    let mut reader = Reader {
        bytes: &message,
        at: 0,
    };
    if reader.byte().ok_or("empty message")? != FORMAT_VERSION {
        return Err("unknown message format version");
    }
    let epoch_len = reader.byte().ok_or("truncated before the epoch")?;
    let epoch = reader
        .take(usize::from(epoch_len))
        .ok_or("truncated in the epoch")?;
    let epoch = std::str::from_utf8(epoch)
        .ok()
        .and_then(|epoch| Epoch::new(epoch).ok())
        .ok_or("invalid epoch")?;
    let seq = reader.u64().ok_or("truncated in the sequence")?;
    let timestamp_us = reader.u64().ok_or("truncated in the timestamp")?;
    let content_type = reader
        .byte()
        .and_then(content_type_from_code)
        .ok_or("invalid content type")?;
    let topic_len = reader.byte().ok_or("truncated before the topic")?;
    let topic = reader
        .take(usize::from(topic_len))
        .ok_or("truncated in the topic")?;
    let topic = std::str::from_utf8(topic)
        .ok()
        .and_then(|topic| Topic::new(topic).ok())
        .ok_or("invalid topic")?;
    let payload = message.slice(reader.at..);
    Ok(Event::new(
        topic,
        EventId::new(epoch, seq),
        timestamp_us,
        content_type,
        payload,
    ))
}

/// A cursor over a message that returns `None` instead of reading past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|bytes| bytes.try_into().ok())
            .map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::new(
            Topic::new("ris.rrc00").unwrap(),
            EventId::new(Epoch::new("k3f9x2m1q0zz").unwrap(), 42),
            1_700_000_000_123_456,
            ContentType::Binary,
            Bytes::from((0..=255u8).collect::<Vec<u8>>()),
        )
    }

    #[test]
    fn round_trip() {
        let event = sample();
        let decoded = decode(Bytes::from(encode(&event))).unwrap();
        assert_eq!(decoded.topic, event.topic);
        assert_eq!(decoded.id, event.id);
        assert_eq!(decoded.timestamp_us, event.timestamp_us);
        assert_eq!(decoded.content_type, event.content_type);
        assert_eq!(decoded.payload, event.payload);
    }

    #[test]
    fn every_content_type_round_trips() {
        for content_type in [ContentType::Text, ContentType::Json, ContentType::Binary] {
            let mut event = sample();
            event.content_type = content_type;
            event.payload = Bytes::from_static(b"1");
            let decoded = decode(Bytes::from(encode(&event))).unwrap();
            assert_eq!(decoded.content_type, content_type);
        }
    }

    #[test]
    fn empty_payload_is_fine() {
        let mut event = sample();
        event.payload = Bytes::new();
        assert!(decode(Bytes::from(encode(&event)))
            .unwrap()
            .payload
            .is_empty());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut event = sample();
        event.payload = Bytes::new();
        let message = encode(&event);
        for len in 0..message.len() {
            assert!(
                decode(Bytes::copy_from_slice(&message[..len])).is_err(),
                "a message cut at {len} bytes decoded"
            );
        }
    }

    #[test]
    fn invalid_fields_are_errors() {
        let good = encode(&sample());
        let epoch_len = usize::from(good[1]);
        let corrupt = |at: usize, byte: u8| {
            let mut message = good.clone();
            message[at] = byte;
            decode(Bytes::from(message))
        };
        assert_eq!(corrupt(0, 2).unwrap_err(), "unknown message format version");
        assert_eq!(corrupt(1, 0).unwrap_err(), "invalid epoch");
        assert_eq!(corrupt(2, b'-').unwrap_err(), "invalid epoch");
        assert_eq!(
            corrupt(18 + epoch_len, 3).unwrap_err(),
            "invalid content type"
        );
        assert_eq!(corrupt(19 + epoch_len, 0).unwrap_err(), "invalid topic");
        assert_eq!(corrupt(20 + epoch_len, b'/').unwrap_err(), "invalid topic");
        assert!(corrupt(1, 255).is_err());
    }
}
