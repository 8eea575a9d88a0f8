//! Server→client messages (`docs/PROTOCOL.md` §3), as every transport delivers them.
//!
//! Transports differ in how a message travels (a WebSocket frame, an SSE block, an element of
//! a long-poll batch, a length-prefixed WebTransport message) but never in what it says, so
//! one parser serves all four clients. Two encodings exist:
//!
//! - the **JSON envelope**, a JSON object with a `type`: `event`, the notices `gap`, `reset`,
//!   `lagged` (and WebTransport's `datagram_fallback`), and replies such as `subscribed` and
//!   `error`;
//! - the **binary envelope** (§3.3), for `binary` events on WebSocket and WebTransport (and
//!   for every event when a client asks for `envelope=binary`): no base64, the payload raw.
//!
//! The first byte tells them apart: `{` for JSON, `0x01` (the binary envelope's version) for
//! binary.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde_json::value::RawValue;
use serde_json::Value;

use super::EventId;

/// A message this client cannot decode, with what could still be read of it.
///
/// The gateway refuses payloads that are not I-JSON, but a client cannot count on every
/// gateway (or an older one's history) doing so, and its own parser has limits (`serde_json`
/// stops at 128 levels of nesting). Skipping the message is the only way on: asking for it
/// again, by reconnecting or polling with the same cursor, gets the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// What is wrong with it.
    pub reason: String,
    /// Its id, when it is an event whose id could be read: the resume point moves past it.
    pub id: Option<EventId>,
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

impl From<String> for Undecodable {
    fn from(reason: String) -> Self {
        Self::new(reason)
    }
}

impl From<&str> for Undecodable {
    fn from(reason: &str) -> Self {
        Self::new(reason)
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

/// A long-poll answer, `{"cursor":…,"messages":[…]}`, read so that one message that cannot be
/// decoded does not make the whole batch (and its cursor) unreadable.
#[derive(Debug)]
pub struct PollAnswer {
    /// Where to poll from next.
    pub cursor: EventId,
    /// Each message, decoded or not.
    pub messages: Vec<Result<ServerMessage, Undecodable>>,
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
            .map(|raw| ServerMessage::parse(raw.get().as_bytes()))
            .collect();
        Ok(Self { cursor, messages })
    }
}

/// One message from the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// An event, ready to print.
    Event(Event),
    /// `gap`, `reset`, `lagged` or `datagram_fallback`: what the subscriber did not get, or
    /// did not get the usual way. Never silent; see [`describe_notice`].
    Notice(Value),
    /// `subscribed`: the subscription is open (WebSocket and WebTransport say so).
    Subscribed(Value),
    /// `error`: a refused client message or subscription.
    Error {
        /// Stable code, as in §6 (`bad_topic`, `cursor_ahead`, …).
        code: String,
        /// Human reason.
        reason: String,
    },
    /// A message type this client does not know; a newer gateway may send more.
    Other(Value),
}

/// An event, with its payload rendered for one output line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its id.
    pub id: EventId,
    /// The topic it was published to.
    pub topic: String,
    /// The payload as one line of JSON: a `json` payload compacted, a `text` payload as a JSON
    /// string, a `binary` payload as a JSON string of standard base64 — exactly the `data` of
    /// the JSON envelope, minus its line breaks.
    pub data: String,
}

impl ServerMessage {
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
            None => Err("an empty message".into()),
        }
    }

    /// Classifies one JSON envelope.
    ///
    /// # Errors
    /// An `event` with a missing or malformed field.
    pub fn from_json(value: Value) -> Result<Self, Undecodable> {
        let text = |field: &str| value[field].as_str().map(str::to_owned);
        Ok(match value["type"].as_str() {
            Some("event") => {
                let id = text("id")
                    .ok_or("an event without an id")?
                    .parse::<EventId>()?;
                let topic = text("topic").ok_or("an event without a topic")?;
                // `data` is already what we print: a JSON value for `json` events, a string
                // for `text`, a base64 string for `binary`.
                Self::Event(Event {
                    id,
                    topic,
                    data: value["data"].to_string(),
                })
            }
            Some(
                "gap" | "reset" | "lagged" | "unavailable" | "available" | "datagram_fallback",
            ) => Self::Notice(value),
            Some("subscribed") => Self::Subscribed(value),
            Some("error") => Self::Error {
                code: text("code").unwrap_or_default(),
                reason: text("reason").unwrap_or_default(),
            },
            _ => Self::Other(value),
        })
    }
}

/// First byte of a binary envelope.
pub const BINARY_ENVELOPE_VERSION: u8 = 1;

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
fn parse_binary_envelope(bytes: &[u8]) -> Result<Event, Undecodable> {
    let truncated = || format!("a binary envelope cut short ({} bytes)", bytes.len());
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let (head, tail) = rest.split_at_checked(n).ok_or_else(truncated)?;
        rest = tail;
        Ok(head)
    };
    let header = take(3)?;
    if header[1] != 1 {
        return Err(format!("a binary envelope of unknown kind {}", header[1]).into());
    }
    let content_type = header[2];
    let topic_len = usize::from(take(1)?[0]);
    let topic = String::from_utf8_lossy(take(topic_len)?).into_owned();
    let id_len = usize::from(take(1)?[0]);
    let id = String::from_utf8_lossy(take(id_len)?).parse::<EventId>()?;
    let _timestamp_us = take(8)?;
    let payload = rest;
    // Render the payload as the JSON envelope would carry it, so every transport prints the
    // same line for the same event.
    let data = match content_type {
        0 => Value::String(String::from_utf8_lossy(payload).into_owned()).to_string(),
        1 => match serde_json::from_slice::<Value>(payload) {
            Ok(value) => value.to_string(),
            Err(e) => {
                return Err(Undecodable {
                    reason: format!("a json payload that is not JSON to this client ({e})"),
                    id: Some(id),
                })
            }
        },
        2 => Value::String(base64::engine::general_purpose::STANDARD.encode(payload)).to_string(),
        other => {
            return Err(Undecodable {
                reason: format!("unknown content type {other}"),
                id: Some(id),
            })
        }
    };
    Ok(Event { id, topic, data })
}

/// A notice in words, for a person reading stderr.
pub fn describe_notice(notice: &Value) -> String {
    let field = |name: &str| match &notice[name] {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".to_owned(),
        other => other.to_string(),
    };
    match notice["type"].as_str().unwrap_or("?") {
        "gap" => format!(
            "gap: {}: events after {} through {} were evicted from history before we got them",
            field("topic"),
            field("after"),
            field("lost_through")
        ),
        "reset" => format!(
            "reset: {} is from another epoch (the gateway's history restarted); \
             replaying everything kept in epoch {}",
            field("requested"),
            field("epoch")
        ),
        "lagged" => format!(
            "lagged: we read too slowly; the gateway serves us from history after {}",
            field("last_delivered")
        ),
        "unavailable" => format!(
            "unavailable: the gateway lost its broker ({}); events resume when it is back",
            field("reason")
        ),
        "available" => "available: the gateway's broker is back".to_owned(),
        "datagram_fallback" => format!(
            "datagram_fallback: event {} ({} bytes) is over the datagram limit of {} bytes; \
             it comes on the control stream",
            field("id"),
            field("size"),
            field("max_datagram_size")
        ),
        other => format!("{other}: {notice}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message: ServerMessage) -> Event {
        match message {
            ServerMessage::Event(event) => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn json_events_render_their_data_on_one_line() {
        let parsed = ServerMessage::parse(
            br#"{"type":"event","topic":"demo","id":"ep:7","ts":5,"content_type":"json","data":{
              "x": [1, 2]}}"#,
        )
        .unwrap();
        assert_eq!(
            event(parsed),
            Event {
                id: "ep:7".parse().unwrap(),
                topic: "demo".to_owned(),
                data: r#"{"x":[1,2]}"#.to_owned(),
            }
        );
        let text = ServerMessage::parse(
            br#"{"type":"event","topic":"t","id":"ep:8","ts":5,"content_type":"text","data":"a\nb"}"#,
        )
        .unwrap();
        assert_eq!(event(text).data, r#""a\nb""#);
    }

    #[test]
    fn binary_envelopes_print_like_their_json_twins() {
        let mut bytes = vec![1, 1, 2, 1, b't', 4];
        bytes.extend_from_slice(b"ep:9");
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&[0, 255]);
        let parsed = event(ServerMessage::parse(&bytes).unwrap());
        assert_eq!(parsed.id.to_string(), "ep:9");
        assert_eq!(parsed.topic, "t");
        assert_eq!(parsed.data, r#""AP8=""#);
        bytes.truncate(10);
        assert!(ServerMessage::parse(&bytes)
            .unwrap_err()
            .reason
            .contains("cut short"));
    }

    #[test]
    fn notices_and_replies_are_classified() {
        let gap = ServerMessage::parse(
            br#"{"type":"gap","topic":"a","after":"ep:1","lost_through":"ep:5"}"#,
        )
        .unwrap();
        let ServerMessage::Notice(notice) = gap else {
            panic!("{gap:?}")
        };
        assert!(describe_notice(&notice).starts_with("gap: a: events after ep:1 through ep:5"));
        assert!(matches!(
            ServerMessage::parse(br#"{"type":"error","code":"bad_topic","reason":"r"}"#),
            Ok(ServerMessage::Error { code, .. }) if code == "bad_topic"
        ));
        assert!(ServerMessage::parse(b"").is_err());
        assert!(ServerMessage::parse(b"nope").is_err());
        assert!(ServerMessage::parse(br#"{"type":"event","topic":"t"}"#).is_err());
    }

    #[test]
    fn an_undecodable_event_still_gives_its_id() {
        let lone = br#"{"type":"event","topic":"t","id":"ep:3","ts":1,"content_type":"json","data":{"s":"\ud800"}}"#;
        let undecodable = ServerMessage::parse(lone).unwrap_err();
        assert_eq!(undecodable.id, Some("ep:3".parse().unwrap()));
        assert!(undecodable.to_string().starts_with("event ep:3: "));
        let deep = format!(
            r#"{{"type":"event","topic":"t","id":"ep:4","data":{}{}}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        let undecodable = ServerMessage::parse(deep.as_bytes()).unwrap_err();
        assert_eq!(undecodable.id, Some("ep:4".parse().unwrap()));
        // A binary envelope whose json payload does not parse.
        let mut bytes = vec![1, 1, 1, 1, b't', 4];
        bytes.extend_from_slice(b"ep:9");
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(b"[[");
        let undecodable = ServerMessage::parse(&bytes).unwrap_err();
        assert_eq!(undecodable.id, Some("ep:9".parse().unwrap()));
        // Not an event, or not even an object: no id to move to.
        assert_eq!(ServerMessage::parse(b"[1").unwrap_err().id, None);
        assert_eq!(
            ServerMessage::parse(br#"{"type":"gap","id":"ep:1","x":"\udc00"}"#)
                .unwrap_err()
                .id,
            None
        );
    }

    #[test]
    fn a_poll_answer_is_read_message_by_message() {
        let body = format!(
            r#"{{"cursor":"ep:3","messages":[{},{},{}]}}"#,
            r#"{"type":"event","topic":"t","id":"ep:1","data":1}"#,
            r#"{"type":"event","topic":"t","id":"ep:2","data":"\ud800"}"#,
            r#"{"type":"gap","topic":"t","after":"ep:2","lost_through":"ep:3"}"#
        );
        let answer = PollAnswer::parse(body.as_bytes()).unwrap();
        assert_eq!(answer.cursor.to_string(), "ep:3");
        assert_eq!(answer.messages.len(), 3);
        assert!(matches!(answer.messages[0], Ok(ServerMessage::Event(_))));
        assert_eq!(
            answer.messages[1].as_ref().unwrap_err().id,
            Some("ep:2".parse().unwrap())
        );
        assert!(matches!(answer.messages[2], Ok(ServerMessage::Notice(_))));
        assert!(PollAnswer::parse(br#"{"messages":[]}"#).is_err());
        assert!(PollAnswer::parse(b"[]").is_err());
    }
}
