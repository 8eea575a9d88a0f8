//! The event model: what a publisher sends and every subscriber receives.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::{IdError, PayloadError, TopicError};

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest epoch accepted, in bytes.
pub const MAX_EPOCH_LEN: usize = 32;

/// A validated topic name: 1 to 128 ASCII letters, digits, `_`, `-` or `.`.
///
/// The alphabet is narrow on purpose: a topic appears in URL paths (`/publish/{topic}`), in
/// query strings (`?topics=a,b`), in SSE `event:` lines and in broker keys, and none of these
/// need escaping for it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `name` as a topic.
    ///
    /// # Errors
    /// [`TopicError`] if the name is empty, too long, or has a character outside the alphabet.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong {
                len: name.len(),
                max: MAX_TOPIC_LEN,
            });
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(TopicError::InvalidChar(bad));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The topic name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.0)
    }
}

/// One incarnation of a bus's history: 1 to 32 ASCII letters or digits.
///
/// A memory bus draws a fresh epoch every time it starts, so ids handed out by a gateway that
/// has since restarted are recognised as foreign instead of being compared with new ones.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Validates `token` as an epoch.
    ///
    /// # Errors
    /// [`IdError::BadEpoch`] if the token is empty, longer than 32 bytes or not alphanumeric.
    pub fn new(token: &str) -> Result<Self, IdError> {
        if token.is_empty()
            || token.len() > MAX_EPOCH_LEN
            || !token.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(IdError::BadEpoch);
        }
        Ok(Self(Arc::from(token)))
    }

    /// A fresh random epoch of 12 lowercase base-36 characters (about 62 bits).
    pub fn random() -> Self {
        const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let token: String = (0..12)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect();
        Self(Arc::from(token.as_str()))
    }

    /// The epoch token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.0)
    }
}

/// An event id, written `epoch:seq` on every wire (for example `k3f9x2m1q0zz:42`).
///
/// `seq` starts at 1 and is strictly increasing across the whole bus within one epoch.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The history incarnation this id belongs to.
    pub epoch: Epoch,
    /// Position in the bus-wide sequence, starting at 1.
    pub seq: u64,
}

impl EventId {
    /// Builds an id from its parts.
    pub fn new(epoch: Epoch, seq: u64) -> Self {
        Self { epoch, seq }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl FromStr for EventId {
    type Err = IdError;

    /// Parses `epoch:seq`. Surrounding whitespace is not accepted: ids are machine-written.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        let (epoch, seq) = s.split_once(':').ok_or(IdError::MissingSeparator)?;
        let epoch = Epoch::new(epoch)?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::BadSeq);
        }
        let seq: u64 = seq.parse().map_err(|_| IdError::BadSeq)?;
        Ok(Self { epoch, seq })
    }
}

/// How an event's payload is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// UTF-8 text.
    Text,
    /// UTF-8 text holding one JSON value.
    Json,
    /// Arbitrary bytes.
    Binary,
}

impl ContentType {
    /// The name used in envelopes: `text`, `json` or `binary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
            Self::Binary => "binary",
        }
    }

    /// Parses an envelope name (`text`, `json`, `binary`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            "binary" => Some(Self::Binary),
            _ => None,
        }
    }
}

impl ContentType {
    /// Checks that `payload` is what this content type promises: UTF-8 for `text`, one I-JSON
    /// value (RFC 7493, nested at most [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH) deep; see
    /// [`validate_json`](crate::validate_json)) for `json`, anything for `binary`. Envelopes
    /// embed `json` payloads verbatim, so every backend calls this before accepting an event.
    ///
    /// # Errors
    /// [`PayloadError`] naming what is wrong.
    pub fn validate(self, payload: &[u8]) -> Result<(), PayloadError> {
        match self {
            Self::Binary => Ok(()),
            Self::Text => utf8(payload).map(drop),
            Self::Json => Ok(crate::json::validate_json(utf8(payload)?)?),
        }
    }
}

fn utf8(payload: &[u8]) -> Result<&str, PayloadError> {
    std::str::from_utf8(payload).map_err(|e| PayloadError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number of wire formats whose encodings an [`Event`] caches.
const ENCODING_SLOTS: usize = 8;

static NEXT_WIRE_FORMAT: AtomicUsize = AtomicUsize::new(0);

/// A handle naming one wire format, under which [`Event::encoded`] caches an event's bytes.
///
/// Register each format once, at start-up, and keep the handle in a `static`:
///
/// ```
/// use std::sync::LazyLock;
/// use streamgate_core::WireFormat;
/// static SSE: LazyLock<WireFormat> = LazyLock::new(|| WireFormat::register("sse"));
/// ```
///
/// The first eight formats registered in a process are cached inside each event; any further
/// format still works but is encoded on every call.
#[derive(Clone, Copy, Debug)]
pub struct WireFormat {
    slot: usize,
    name: &'static str,
}

impl WireFormat {
    /// Registers a new wire format.
    pub fn register(name: &'static str) -> Self {
        let slot = NEXT_WIRE_FORMAT.fetch_add(1, Ordering::Relaxed);
        if slot >= ENCODING_SLOTS {
            tracing::warn!(
                format = name,
                "more than {ENCODING_SLOTS} wire formats registered; this one is not cached"
            );
        }
        Self { slot, name }
    }

    /// The name given at registration.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// One published event, shared by every subscriber as `Arc<Event>`.
pub struct Event {
    /// Topic the event was published to.
    pub topic: Topic,
    /// Id assigned by the bus.
    pub id: EventId,
    /// Server time of publication, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// How to read `payload`.
    pub content_type: ContentType,
    /// The payload, untouched.
    pub payload: Bytes,
    encodings: [OnceLock<Bytes>; ENCODING_SLOTS],
}

impl Event {
    /// Builds an event; buses call this when they assign an id.
    pub fn new(
        topic: Topic,
        id: EventId,
        timestamp_us: u64,
        content_type: ContentType,
        payload: Bytes,
    ) -> Self {
        Self {
            topic,
            id,
            timestamp_us,
            content_type,
            payload,
            encodings: Default::default(),
        }
    }

    /// This event's bytes in `format`, produced by `encode` on first use and shared afterwards.
    ///
    /// This is how a transport writes one encoding to all of its subscribers: the first
    /// subscriber task to need the bytes encodes them, every other one clones the `Bytes`
    /// (a reference-count increment).
    pub fn encoded(&self, format: WireFormat, encode: impl FnOnce(&Event) -> Bytes) -> Bytes {
        match self.encodings.get(format.slot) {
            Some(cell) => cell.get_or_init(|| encode(self)).clone(),
            None => encode(self),
        }
    }

    /// Payload length plus a fixed per-event overhead: what history byte limits count.
    pub fn accounted_size(&self) -> usize {
        self.payload.len() + self.topic.as_str().len() + 64
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("topic", &self.topic)
            .field("id", &self.id)
            .field("timestamp_us", &self.timestamp_us)
            .field("content_type", &self.content_type)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Current wall-clock time in microseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_alphabet() {
        assert!(Topic::new("demo").is_ok());
        assert!(Topic::new("ris.rrc00_v4-live").is_ok());
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert_eq!(Topic::new("a/b"), Err(TopicError::InvalidChar('/')));
        assert_eq!(Topic::new("a,b"), Err(TopicError::InvalidChar(',')));
        assert!(matches!(
            Topic::new(&"x".repeat(129)),
            Err(TopicError::TooLong { len: 129, max: 128 })
        ));
    }

    #[test]
    fn id_round_trip() {
        let id: EventId = "k3f9:42".parse().unwrap();
        assert_eq!(id.epoch.as_str(), "k3f9");
        assert_eq!(id.seq, 42);
        assert_eq!(id.to_string(), "k3f9:42");
    }

    #[test]
    fn id_rejects_malformed() {
        assert_eq!("".parse::<EventId>(), Err(IdError::Empty));
        assert_eq!("42".parse::<EventId>(), Err(IdError::MissingSeparator));
        assert_eq!(":42".parse::<EventId>(), Err(IdError::BadEpoch));
        assert_eq!("e-1:42".parse::<EventId>(), Err(IdError::BadEpoch));
        assert_eq!("e:".parse::<EventId>(), Err(IdError::BadSeq));
        assert_eq!("e:+4".parse::<EventId>(), Err(IdError::BadSeq));
        assert_eq!("e:1:2".parse::<EventId>(), Err(IdError::BadSeq));
        assert_eq!(
            "e:99999999999999999999".parse::<EventId>(),
            Err(IdError::BadSeq)
        );
    }

    #[test]
    fn payload_validation() {
        assert!(ContentType::Binary.validate(&[0xff, 0]).is_ok());
        assert!(ContentType::Text.validate("héllo".as_bytes()).is_ok());
        assert_eq!(
            ContentType::Text.validate(b"ab\xff"),
            Err(PayloadError::NotUtf8 { valid_up_to: 2 })
        );
        assert!(ContentType::Json.validate(br#"{"a":[1,2]}"#).is_ok());
        assert!(matches!(
            ContentType::Json.validate(b"{\"a\":"),
            Err(PayloadError::NotJson(_))
        ));
        assert_eq!(
            ContentType::Json
                .validate(br#"{"s":"\ud800"}"#)
                .unwrap_err()
                .to_string(),
            "payload is not I-JSON: lone surrogate escape (I-JSON, RFC 7493 \u{a7}2.1) at byte 6"
        );
        // Text that is not I-JSON is still text.
        assert!(ContentType::Text.validate(br#"{"s":"\ud800"}"#).is_ok());
        assert!(matches!(
            ContentType::Json.validate(b"1 2"),
            Err(PayloadError::NotJson(_))
        ));
    }

    #[test]
    fn random_epochs_are_valid_and_differ() {
        let a = Epoch::random();
        let b = Epoch::random();
        assert!(Epoch::new(a.as_str()).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn encoding_is_computed_once() {
        let format = WireFormat::register("test-once");
        let event = Event::new(
            Topic::new("t").unwrap(),
            EventId::new(Epoch::new("e").unwrap(), 1),
            0,
            ContentType::Text,
            Bytes::from_static(b"x"),
        );
        let mut calls = 0;
        for _ in 0..3 {
            let bytes = event.encoded(format, |e| {
                calls += 1;
                e.payload.clone()
            });
            assert_eq!(&bytes[..], b"x");
        }
        assert_eq!(calls, 1);
    }
}
