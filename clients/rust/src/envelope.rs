//! Server→client messages (`docs/PROTOCOL.md` §3) as every transport delivers them, and the
//! client→server messages (§3.2).
//!
//! Transports differ in how a message travels (a WebSocket frame, an SSE block, an element of
//! a long-poll batch, a length-prefixed WebTransport message) but never in what it says, so
//! one decoder serves all four. Two encodings exist, told apart by the first byte: the **JSON
//! envelope** (`{`), and the **binary envelope** of §3.3 (`0x01`, its version), which carries
//! a payload raw instead of in base64.
//!
//! ```
//! use streamgate_client::{Data, Message};
//!
//! let m = Message::parse(br#"{"type":"event","topic":"demo","id":"ep:7","ts":5,"content_type":"json","data":{"x":1}}"#)?;
//! let Message::Event(event) = m else { panic!() };
//! assert_eq!((event.id.to_string(), event.topic.as_str()), ("ep:7".to_owned(), "demo"));
//! assert_eq!(event.data, Data::Json(serde_json::json!({"x": 1})));
//!
//! // The same event as a binary envelope: version, kind, content type, topic, id, ts, payload.
//! let mut bytes = vec![1, 1, 1, 4];
//! bytes.extend_from_slice(b"demo");
//! bytes.push(4);
//! bytes.extend_from_slice(b"ep:7");
//! bytes.extend_from_slice(&5u64.to_be_bytes());
//! bytes.extend_from_slice(br#"{"x":1}"#);
//! assert_eq!(Message::parse(&bytes)?, Message::Event(event));
//! # Ok::<(), streamgate_client::Undecodable>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::EventId;

/// First byte of a binary envelope (its version).
pub const BINARY_ENVELOPE_VERSION: u8 = 1;

/// How an event's payload is to be read (§3.1 `content_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// One I-JSON value.
    Json,
    /// UTF-8 text.
    Text,
    /// Bytes.
    Binary,
}

impl ContentType {
    /// `json`, `text` or `binary`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "text",
            Self::Binary => "binary",
        }
    }
}

/// An event's payload, decoded according to its content type.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A `json` payload.
    Json(Value),
    /// A `text` payload.
    Text(String),
    /// A `binary` payload, decoded from base64 (JSON envelope) or raw (binary envelope).
    Binary(Vec<u8>),
}

impl Data {
    /// Its content type.
    pub fn content_type(&self) -> ContentType {
        match self {
            Self::Json(_) => ContentType::Json,
            Self::Text(_) => ContentType::Text,
            Self::Binary(_) => ContentType::Binary,
        }
    }

    /// The payload as the JSON envelope's `data` carries it: the value for `json`, a string for
    /// `text`, standard base64 with padding for `binary`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Json(value) => value.clone(),
            Self::Text(text) => Value::String(text.clone()),
            Self::Binary(bytes) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

impl From<Value> for Data {
    fn from(value: Value) -> Self {
        Self::Json(value)
    }
}

impl From<&str> for Data {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for Data {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(bytes)
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its id (§2).
    pub id: EventId,
    /// The topic it was published to.
    pub topic: String,
    /// Server time of publication, microseconds since the Unix epoch.
    pub ts: Option<u64>,
    /// The payload.
    pub data: Data,
}

/// What a subscriber did not get, or did not get the usual way (§3.1 notices). Never silent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// Events of `topic` after `after` through `lost_through` were evicted before delivery.
    Gap {
        /// The topic.
        topic: String,
        /// The last id before the loss.
        after: String,
        /// The last id lost.
        lost_through: String,
    },
    /// The resume id was from another epoch; delivery restarts in `epoch`.
    Reset {
        /// The id asked for.
        requested: String,
        /// The current epoch.
        epoch: String,
        /// Set by the client when events of a new epoch came without the gateway's `reset`.
        implicit: bool,
    },
    /// The subscriber read too slowly and is served from history after `last_delivered`.
    Lagged {
        /// The last id delivered before, if any.
        last_delivered: Option<String>,
    },
    /// The gateway lost its broker; nothing is lost, `Available` follows.
    Unavailable {
        /// For people, not for parsing.
        reason: String,
    },
    /// The gateway's broker is back.
    Available,
    /// The token expired (SSE's `@expired`); the stream ends.
    Expired {
        /// Why.
        reason: String,
    },
    /// WebTransport `datagram` mode: an event too large for a datagram comes on the control
    /// stream.
    DatagramFallback {
        /// The event's id.
        id: String,
        /// Its size in bytes.
        size: u64,
        /// The session's datagram limit.
        max_datagram_size: u64,
    },
    /// From the client: a message it could not decode, skipped with the resume point moved
    /// past it (§3.1: asking again would get the same bytes).
    Undecodable(Undecodable),
}

impl Notice {
    /// The notice's `type`: `gap`, `reset`, … (`undecodable` for the client's own).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gap { .. } => "gap",
            Self::Reset { .. } => "reset",
            Self::Lagged { .. } => "lagged",
            Self::Unavailable { .. } => "unavailable",
            Self::Available => "available",
            Self::Expired { .. } => "expired",
            Self::DatagramFallback { .. } => "datagram_fallback",
            Self::Undecodable(_) => "undecodable",
        }
    }

    fn from_json(kind: &str, value: &Value) -> Option<Self> {
        let text = |field: &str| match &value[field] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Some(match kind {
            "gap" => Self::Gap {
                topic: text("topic"),
                after: text("after"),
                lost_through: text("lost_through"),
            },
            "reset" => Self::Reset {
                requested: text("requested"),
                epoch: text("epoch"),
                implicit: false,
            },
            "lagged" => Self::Lagged {
                last_delivered: value["last_delivered"].as_str().map(str::to_owned),
            },
            "unavailable" => Self::Unavailable {
                reason: text("reason"),
            },
            "available" => Self::Available,
            "expired" => Self::Expired {
                reason: text("reason"),
            },
            "datagram_fallback" => Self::DatagramFallback {
                id: text("id"),
                size: value["size"].as_u64().unwrap_or_default(),
                max_datagram_size: value["max_datagram_size"].as_u64().unwrap_or_default(),
            },
            _ => return None,
        })
    }
}

/// A notice in words, for a person reading a log.
impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gap {
                topic,
                after,
                lost_through,
            } => write!(
                f,
                "gap: {topic}: events after {after} through {lost_through} were evicted from \
                 history before we got them"
            ),
            Self::Reset {
                requested,
                epoch,
                implicit,
            } => write!(
                f,
                "reset: {requested} is from another epoch (the gateway's history restarted); \
                 {} epoch {epoch}",
                if *implicit {
                    "events now come from"
                } else {
                    "replaying everything kept in"
                }
            ),
            Self::Lagged { last_delivered } => write!(
                f,
                "lagged: we read too slowly; the gateway serves us from history after {}",
                last_delivered.as_deref().unwrap_or("(none)")
            ),
            Self::Unavailable { reason } => write!(
                f,
                "unavailable: the gateway lost its broker ({reason}); events resume when it is back"
            ),
            Self::Available => f.write_str("available: the gateway's broker is back"),
            Self::Expired { reason } => write!(f, "expired: {reason}"),
            Self::DatagramFallback {
                id,
                size,
                max_datagram_size,
            } => write!(
                f,
                "datagram_fallback: event {id} ({size} bytes) is over the datagram limit of \
                 {max_datagram_size} bytes; it comes on the control stream"
            ),
            Self::Undecodable(undecodable) => write!(f, "undecodable: {undecodable}"),
        }
    }
}

/// A message this client cannot decode, with what could still be read of it.
///
/// The gateway refuses payloads that are not I-JSON, but a client cannot count on every
/// gateway doing so, and its own parser has limits (`serde_json` stops at 128 levels of
/// nesting). Skipping the message is the only way on: asking again gets the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Undecodable {
    /// Its id, when it is an event whose id could be read: the resume point moves past it.
    pub id: Option<EventId>,
    /// What is wrong with it.
    pub reason: String,
}

impl Undecodable {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            id: None,
        }
    }
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "event {id}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// One server→client message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// An event.
    Event(Event),
    /// A notice.
    Notice(Notice),
    /// `subscribed`: the subscription is open (WebSocket and WebTransport say so). The whole
    /// message, since WebTransport adds `mode` and `max_datagram_size`.
    Subscribed(Value),
    /// `published`: the reply to a `publish` message.
    Published {
        /// The publish's `ref`.
        reference: Option<String>,
        /// The event's id.
        id: EventId,
    },
    /// `error`: a refused client message or subscription.
    Error {
        /// Stable code, as in §6 (`bad_topic`, `rate_limited`, …).
        code: String,
        /// Human reason.
        reason: String,
        /// The refused message's `ref`, if any.
        reference: Option<String>,
    },
    /// A message type this client does not know (`authenticated`, or one a newer gateway
    /// sends).
    Other(Value),
}

impl Message {
    /// Parses one message, JSON or binary envelope.
    ///
    /// # Errors
    /// [`Undecodable`]: what is wrong with it, and the event's id if it could be read.
    pub fn parse(bytes: &[u8]) -> Result<Self, Undecodable> {
        match bytes.first() {
            Some(&BINARY_ENVELOPE_VERSION) => parse_binary_envelope(bytes).map(Self::Event),
            Some(_) => {
                let value: Value = serde_json::from_slice(bytes).map_err(|e| Undecodable {
                    reason: format!("a message that is not JSON to this client ({e})"),
                    id: peek_event_id(bytes),
                })?;
                Self::from_json(value)
            }
            None => Err(Undecodable::new("an empty message")),
        }
    }

    /// Classifies one JSON envelope.
    ///
    /// # Errors
    /// An `event` with a missing or malformed field.
    pub fn from_json(value: Value) -> Result<Self, Undecodable> {
        let text = |field: &str| value[field].as_str().map(str::to_owned);
        let kind = value["type"].as_str().unwrap_or_default();
        if let Some(notice) = Notice::from_json(kind, &value) {
            return Ok(Self::Notice(notice));
        }
        Ok(match kind {
            "event" => {
                let id = text("id")
                    .ok_or_else(|| Undecodable::new("an event without an id"))?
                    .parse::<EventId>()
                    .map_err(|e| Undecodable::new(e.to_string()))?;
                let bad = |reason: String| Undecodable {
                    reason,
                    id: Some(id.clone()),
                };
                let topic = text("topic").ok_or_else(|| bad("an event without a topic".into()))?;
                let data = match value["content_type"].as_str().unwrap_or("json") {
                    "json" => Data::Json(value["data"].clone()),
                    "text" => Data::Text(
                        text("data")
                            .ok_or_else(|| bad("a text event whose data is not a string".into()))?,
                    ),
                    "binary" => Data::Binary(
                        value["data"]
                            .as_str()
                            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                            .ok_or_else(|| bad("a binary event whose data is not base64".into()))?,
                    ),
                    other => return Err(bad(format!("unknown content type {other:?}"))),
                };
                Self::Event(Event {
                    id,
                    topic,
                    ts: value["ts"].as_u64(),
                    data,
                })
            }
            "subscribed" => Self::Subscribed(value),
            "published" => match text("id").and_then(|id| id.parse().ok()) {
                Some(id) => Self::Published {
                    reference: text("ref"),
                    id,
                },
                None => Self::Other(value),
            },
            "error" => Self::Error {
                code: text("code").unwrap_or_default(),
                reason: text("reason").unwrap_or_default(),
                reference: text("ref"),
            },
            _ => Self::Other(value),
        })
    }
}

/// The id of an event envelope that does not parse as a whole. Each field is read as raw
/// JSON, which `serde_json` checks only for its shape (no nesting limit, no look inside
/// `\u` escapes), so the id is found even when the payload is what broke the parse.
fn peek_event_id(bytes: &[u8]) -> Option<EventId> {
    let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(bytes).ok()?;
    let field = |name: &str| serde_json::from_str::<String>(fields.get(name)?.get()).ok();
    if field("type")? != "event" {
        return None;
    }
    field("id")?.parse().ok()
}

/// Decodes the binary envelope of §3.3:
///
/// ```text
/// offset  size  field
/// 0       1     version = 1
/// 1       1     kind: 1 = event
/// 2       1     content type: 0 = text, 1 = json, 2 = binary
/// 3       1     topic length T (1..=128)
/// 4       T     topic (ASCII)
/// 4+T     1     id length I (3..=53)
/// 5+T     I     id (ASCII, epoch:seq)
/// 5+T+I   8     ts, microseconds since the Unix epoch, unsigned big-endian
/// 13+T+I  ...   payload, raw, to the end of the message
/// ```
///
/// # Errors
/// A message cut short, of an unknown kind or content type, or whose payload does not decode
/// (with the id, when it could be read).
pub fn parse_binary_envelope(bytes: &[u8]) -> Result<Event, Undecodable> {
    let truncated = || format!("a binary envelope cut short ({} bytes)", bytes.len());
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let (head, tail) = rest.split_at_checked(n).ok_or_else(truncated)?;
        rest = tail;
        Ok(head)
    };
    let header = take(3).map_err(Undecodable::new)?;
    if header[1] != 1 {
        return Err(Undecodable::new(format!(
            "a binary envelope of unknown kind {}",
            header[1]
        )));
    }
    let content_type = header[2];
    let topic_len = usize::from(take(1).map_err(Undecodable::new)?[0]);
    let topic = String::from_utf8_lossy(take(topic_len).map_err(Undecodable::new)?).into_owned();
    let id_len = usize::from(take(1).map_err(Undecodable::new)?[0]);
    let id = String::from_utf8_lossy(take(id_len).map_err(Undecodable::new)?)
        .parse::<EventId>()
        .map_err(|e| Undecodable::new(e.to_string()))?;
    let ts = take(8).map_err(|reason| Undecodable {
        reason,
        id: Some(id.clone()),
    })?;
    let ts = u64::from_be_bytes(ts.try_into().unwrap_or_default());
    let payload = rest;
    let bad = |reason: String| Undecodable {
        reason,
        id: Some(id.clone()),
    };
    let data = match content_type {
        0 => Data::Text(
            String::from_utf8(payload.to_vec())
                .map_err(|_| bad("a text payload that is not UTF-8".to_owned()))?,
        ),
        1 => Data::Json(serde_json::from_slice(payload).map_err(|e| {
            bad(format!(
                "a json payload that is not JSON to this client ({e})"
            ))
        })?),
        2 => Data::Binary(payload.to_vec()),
        other => return Err(bad(format!("unknown content type {other}"))),
    };
    Ok(Event {
        id,
        topic,
        ts: Some(ts),
        data,
    })
}

/// A long-poll answer, `{"cursor":…,"messages":[…]}`, read so that one message that cannot be
/// decoded does not make the whole batch (and its cursor) unreadable.
#[derive(Debug)]
pub struct PollAnswer {
    /// Where to poll from next.
    pub cursor: EventId,
    /// Each message, decoded or not.
    pub messages: Vec<Result<Message, Undecodable>>,
}

impl PollAnswer {
    /// Parses a `GET /poll` answer body.
    ///
    /// # Errors
    /// A human description, when the body is not a long-poll answer at all.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body)
            .map_err(|e| format!("an answer that is not a JSON object ({e})"))?;
        let cursor = fields
            .get("cursor")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .ok_or("an answer without a cursor")?
            .parse::<EventId>()
            .map_err(|e| format!("the answer's cursor: {e}"))?;
        let messages: Vec<Box<RawValue>> = fields
            .get("messages")
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .ok_or("an answer without messages")?;
        let messages = messages
            .iter()
            .map(|raw| Message::parse(raw.get().as_bytes()))
            .collect();
        Ok(Self { cursor, messages })
    }
}

/// The client→server `publish` message (§3.2), with an optional `ref`.
pub fn publish_message(topic: &str, data: &Data, reference: Option<&str>) -> String {
    let mut message = json!({
        "type": "publish",
        "topic": topic,
        "content_type": data.content_type().as_str(),
        "data": data.to_json(),
    });
    if let Some(reference) = reference {
        message["ref"] = Value::String(reference.to_owned());
    }
    message.to_string()
}

/// `HTTP 400 cursor_ahead: <reason>` from an error answer's status and body
/// (`{"error":{"code":…,"reason":…}}`, §6), and the code.
pub fn describe_http_error(status: u16, body: &[u8]) -> (String, Option<String>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| {
        if v["error"].is_object() {
            &v["error"]
        } else {
            v
        }
    });
    match error.and_then(|e| Some((e["code"].as_str()?, e["reason"].as_str().unwrap_or("")))) {
        Some((code, reason)) => (
            format!("HTTP {status} {code}: {reason}"),
            Some(code.to_owned()),
        ),
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                (format!("HTTP {status}"), None)
            } else {
                (format!("HTTP {status}: {text}"), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message: Message) -> Event {
        match message {
            Message::Event(event) => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn json_events_of_each_content_type() {
        let parsed = Message::parse(
            br#"{"type":"event","topic":"demo","id":"ep:7","ts":5,"content_type":"json","data":{
              "x": [1, 2]}}"#,
        )
        .unwrap();
        let parsed = event(parsed);
        assert_eq!(parsed.data.to_json().to_string(), r#"{"x":[1,2]}"#);
        assert_eq!(parsed.ts, Some(5));
        let text = Message::parse(
            br#"{"type":"event","topic":"t","id":"ep:8","ts":5,"content_type":"text","data":"a\nb"}"#,
        )
        .unwrap();
        assert_eq!(event(text).data, Data::Text("a\nb".into()));
        let binary = Message::parse(
            br#"{"type":"event","topic":"t","id":"ep:9","content_type":"binary","data":"AAEC/w=="}"#,
        )
        .unwrap();
        assert_eq!(event(binary).data, Data::Binary(vec![0, 1, 2, 255]));
    }

    #[test]
    fn binary_envelopes_decode_like_their_json_twins() {
        let mut bytes = vec![1, 1, 2, 1, b't', 4];
        bytes.extend_from_slice(b"ep:9");
        bytes.extend_from_slice(&42u64.to_be_bytes());
        bytes.extend_from_slice(&[0, 255]);
        let parsed = event(Message::parse(&bytes).unwrap());
        assert_eq!(parsed.id.to_string(), "ep:9");
        assert_eq!(parsed.topic, "t");
        assert_eq!(parsed.ts, Some(42));
        assert_eq!(parsed.data.to_json(), json!("AP8="));
        bytes.truncate(10);
        assert!(Message::parse(&bytes)
            .unwrap_err()
            .reason
            .contains("cut short"));
    }

    #[test]
    fn notices_and_replies_are_classified() {
        let gap =
            Message::parse(br#"{"type":"gap","topic":"a","after":"ep:1","lost_through":"ep:5"}"#)
                .unwrap();
        let Message::Notice(notice) = gap else {
            panic!("{gap:?}")
        };
        assert!(notice
            .to_string()
            .starts_with("gap: a: events after ep:1 through ep:5"));
        assert!(matches!(
            Message::parse(br#"{"type":"error","code":"bad_topic","reason":"r","ref":"c-1"}"#),
            Ok(Message::Error { code, reference: Some(r), .. }) if code == "bad_topic" && r == "c-1"
        ));
        assert!(matches!(
            Message::parse(br#"{"type":"published","ref":"c-1","id":"e:3"}"#),
            Ok(Message::Published { id, .. }) if id.seq() == 3
        ));
        assert!(Message::parse(b"").is_err());
        assert!(Message::parse(b"nope").is_err());
        assert!(Message::parse(br#"{"type":"event","topic":"t"}"#).is_err());
    }

    #[test]
    fn an_undecodable_event_still_gives_its_id() {
        let lone = br#"{"type":"event","topic":"t","id":"ep:3","ts":1,"content_type":"json","data":{"s":"\ud800"}}"#;
        let undecodable = Message::parse(lone).unwrap_err();
        assert_eq!(undecodable.id, Some("ep:3".parse().unwrap()));
        assert!(undecodable.to_string().starts_with("event ep:3: "));
        let deep = format!(
            r#"{{"type":"event","topic":"t","id":"ep:4","data":{}{}}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        let undecodable = Message::parse(deep.as_bytes()).unwrap_err();
        assert_eq!(undecodable.id, Some("ep:4".parse().unwrap()));
        let mut bytes = vec![1, 1, 1, 1, b't', 4];
        bytes.extend_from_slice(b"ep:9");
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(b"[[");
        assert_eq!(
            Message::parse(&bytes).unwrap_err().id,
            Some("ep:9".parse().unwrap())
        );
        assert_eq!(Message::parse(b"[1").unwrap_err().id, None);
    }

    #[test]
    fn poll_answers_keep_their_cursor_past_an_undecodable_message() {
        let body = br#"{"cursor":"ep:2","messages":[{"type":"event","topic":"a","id":"ep:1","content_type":"json","data":1},{"type":"event","topic":"a","id":"ep:2","content_type":"json","data":{"s":"\ud800"}}]}"#;
        let answer = PollAnswer::parse(body).unwrap();
        assert_eq!(answer.cursor.to_string(), "ep:2");
        assert!(answer.messages[0].is_ok());
        assert_eq!(
            answer.messages[1].as_ref().unwrap_err().id,
            Some("ep:2".parse().unwrap())
        );
        assert!(PollAnswer::parse(b"[]").is_err());
    }

    #[test]
    fn publish_messages_and_http_errors() {
        assert_eq!(
            publish_message("news", &Data::Binary(vec![1, 2]), Some("c-1")),
            r#"{"type":"publish","topic":"news","content_type":"binary","data":"AQI=","ref":"c-1"}"#
        );
        assert_eq!(
            describe_http_error(
                429,
                br#"{"error":{"code":"rate_limited","reason":"slow down"}}"#
            ),
            (
                "HTTP 429 rate_limited: slow down".to_owned(),
                Some("rate_limited".to_owned())
            )
        );
        assert_eq!(describe_http_error(404, b"").0, "HTTP 404");
    }
}
