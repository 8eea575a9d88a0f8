//! Parsing of client→server messages (`docs/PROTOCOL.md` §3.2).

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use streamgate_core::{validate_json, ContentType, EventId, JsonRule, Topic};

use streamgate_core::Rejection;

/// Longest `ref` a client may attach, in bytes.
pub const MAX_REF_LEN: usize = 64;

/// One message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Replace the subscription with these topics, optionally resuming after `since`.
    Subscribe {
        /// Topics, validated.
        topics: Vec<Topic>,
        /// Resume point.
        since: Option<EventId>,
        /// Echoed in the reply.
        reference: Option<String>,
    },
    /// Remove these topics from the subscription.
    Unsubscribe {
        /// Topics, validated.
        topics: Vec<Topic>,
        /// Echoed in the reply.
        reference: Option<String>,
    },
    /// Publish one event.
    Publish(PublishRequest),
}

/// A validated publish request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// Where to publish.
    pub topic: Topic,
    /// How to read `payload`.
    pub content_type: ContentType,
    /// The payload, decoded from the message's `data`.
    pub payload: Bytes,
    /// Echoed in the `published` or `error` reply.
    pub reference: Option<String>,
}

/// The message as sent, before validation. A flat struct rather than a serde-tagged enum:
/// tagged enums buffer their content, which `RawValue` (the verbatim `data`) cannot go through.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, rename = "ref")]
    reference: Option<String>,
}

fn missing(field: &str, kind: &str) -> Rejection {
    Rejection::new("bad_message", format!("{kind} needs the field {field:?}"))
}

impl ClientMessage {
    /// Parses and validates one message.
    ///
    /// # Errors
    /// [`Rejection`] with code `bad_message` (not a known message), `bad_ref`,
    /// `bad_topic`, `bad_cursor`, `bad_content_type` or `invalid_payload`. The error carries
    /// the `ref` when one could be read, so the reply can name the failed request.
    pub fn parse(text: &str) -> Result<Self, (Rejection, Option<String>)> {
        // The whole message is held to I-JSON before serde sees it: serde_json would stop a
        // deep `data` at its own limit with an unhelpful message, and never looks inside the
        // skipped `data` at all, which is embedded verbatim in every subscriber's envelope.
        let strict = validate_json(text);
        let parsed = serde_json::from_str::<Raw<'_>>(text);
        let raw = match (strict, parsed) {
            (Err(error), parsed) if !matches!(error.rule, JsonRule::Syntax(_)) => {
                let reference = parsed.ok().and_then(|raw| check_ref(raw.reference).ok()?);
                return Err((
                    Rejection::new(
                        "invalid_payload",
                        format!("the message is not I-JSON: {error}"),
                    ),
                    reference,
                ));
            }
            (_, Ok(raw)) => raw,
            (_, Err(e)) => {
                return Err((
                    Rejection::new("bad_message", format!("not a client message: {e}")),
                    None,
                ))
            }
        };
        let reference = check_ref(raw.reference)?;
        let fail = |e: Rejection| (e, reference.clone());
        match raw.kind.as_str() {
            "subscribe" => {
                let topics = raw
                    .topics
                    .ok_or_else(|| fail(missing("topics", "subscribe")))?;
                let topics = parse_topics(&topics).map_err(fail)?;
                let since = raw
                    .since
                    .map(|s| s.parse::<EventId>())
                    .transpose()
                    .map_err(|e| fail(e.into()))?;
                Ok(Self::Subscribe {
                    topics,
                    since,
                    reference,
                })
            }
            "unsubscribe" => {
                let topics = raw
                    .topics
                    .ok_or_else(|| fail(missing("topics", "unsubscribe")))?;
                let topics = parse_topics(&topics).map_err(fail)?;
                Ok(Self::Unsubscribe { topics, reference })
            }
            "publish" => {
                let topic = raw.topic.ok_or_else(|| fail(missing("topic", "publish")))?;
                let topic = Topic::new(&topic).map_err(|e| fail(e.into()))?;
                let content_type = match raw.content_type.as_deref() {
                    None => ContentType::Json,
                    Some(name) => ContentType::from_name(name).ok_or_else(|| {
                        fail(Rejection::new(
                            "bad_content_type",
                            format!("content_type must be text, json or binary, got {name:?}"),
                        ))
                    })?,
                };
                let data = raw.data.ok_or_else(|| fail(missing("data", "publish")))?;
                let payload = decode_data(content_type, data).map_err(fail)?;
                Ok(Self::Publish(PublishRequest {
                    topic,
                    content_type,
                    payload,
                    reference,
                }))
            }
            other => Err(fail(Rejection::new(
                "bad_message",
                format!(
                    "unknown message type {other:?}; expected subscribe, unsubscribe or publish"
                ),
            ))),
        }
    }
}

fn check_ref(reference: Option<String>) -> Result<Option<String>, (Rejection, Option<String>)> {
    match reference {
        Some(r) if r.len() > MAX_REF_LEN => Err((
            Rejection::new(
                "bad_ref",
                format!("ref is {} bytes, the limit is {MAX_REF_LEN}", r.len()),
            ),
            None,
        )),
        other => Ok(other),
    }
}

fn parse_topics(names: &[String]) -> Result<Vec<Topic>, Rejection> {
    names
        .iter()
        .map(|name| Topic::new(name).map_err(Rejection::from))
        .collect()
}

fn decode_data(content_type: ContentType, data: &RawValue) -> Result<Bytes, Rejection> {
    let not_string = || {
        Rejection::new(
            "invalid_payload",
            format!("data must be a JSON string for content_type {content_type}"),
        )
    };
    match content_type {
        ContentType::Json => Ok(Bytes::copy_from_slice(data.get().as_bytes())),
        ContentType::Text => {
            let text: String = serde_json::from_str(data.get()).map_err(|_| not_string())?;
            Ok(Bytes::from(text))
        }
        ContentType::Binary => {
            let text: String = serde_json::from_str(data.get()).map_err(|_| not_string())?;
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(Bytes::from)
                .map_err(|e| Rejection::new("invalid_payload", format!("data is not base64: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> &'static str {
        ClientMessage::parse(text).unwrap_err().0.code
    }

    #[test]
    fn subscribe() {
        let message = ClientMessage::parse(
            r#"{"type":"subscribe","topics":["a","b"],"since":"e:5","ref":"x"}"#,
        )
        .unwrap();
        let ClientMessage::Subscribe {
            topics,
            since,
            reference,
        } = message
        else {
            panic!()
        };
        assert_eq!(topics.len(), 2);
        assert_eq!(since.unwrap().seq, 5);
        assert_eq!(reference.as_deref(), Some("x"));
    }

    #[test]
    fn publish_each_content_type() {
        let parse = |text: &str| match ClientMessage::parse(text).unwrap() {
            ClientMessage::Publish(p) => (p.content_type, p.payload),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            parse(r#"{"type":"publish","topic":"t","data":{"k": 1}}"#),
            (ContentType::Json, Bytes::from_static(br#"{"k": 1}"#))
        );
        assert_eq!(
            parse(r#"{"type":"publish","topic":"t","content_type":"text","data":"hé\n"}"#),
            (ContentType::Text, Bytes::from("hé\n"))
        );
        assert_eq!(
            parse(r#"{"type":"publish","topic":"t","content_type":"binary","data":"AP8B"}"#),
            (ContentType::Binary, Bytes::from_static(&[0, 255, 1]))
        );
    }

    #[test]
    fn errors_have_codes_and_keep_the_ref() {
        assert_eq!(code("not json"), "bad_message");
        assert_eq!(code(r#"{"type":"dance"}"#), "bad_message");
        assert_eq!(
            code(r#"{"type":"subscribe","topics":["a/b"]}"#),
            "bad_topic"
        );
        assert_eq!(
            code(r#"{"type":"subscribe","topics":["a"],"since":"x"}"#),
            "bad_cursor"
        );
        assert_eq!(
            code(r#"{"type":"publish","topic":"t","content_type":"xml","data":1}"#),
            "bad_content_type"
        );
        assert_eq!(
            code(r#"{"type":"publish","topic":"t","content_type":"text","data":1}"#),
            "invalid_payload"
        );
        assert_eq!(
            code(r#"{"type":"publish","topic":"t","content_type":"binary","data":"!!"}"#),
            "invalid_payload"
        );
        let (error, reference) = ClientMessage::parse(
            r#"{"type":"publish","topic":"t","data":{"s":"\ud800"},"ref":"r1"}"#,
        )
        .unwrap_err();
        assert_eq!(error.code, "invalid_payload");
        assert!(error.reason.contains("lone surrogate"), "{}", error.reason);
        assert!(error.reason.contains("at byte 43"), "{}", error.reason);
        assert_eq!(reference.as_deref(), Some("r1"));
        let deep = format!(
            r#"{{"type":"publish","topic":"t","data":{}{}}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        let (error, _) = ClientMessage::parse(&deep).unwrap_err();
        assert_eq!(error.code, "invalid_payload");
        assert!(
            error.reason.contains("nested deeper than 64"),
            "{}",
            error.reason
        );
        assert_eq!(
            code(r#"{"type":"publish","topic":"t","data":{"a":1,"a":2}}"#),
            "invalid_payload"
        );
        // A repeated field of the message itself is refused the same way.
        assert_eq!(
            code(r#"{"type":"publish","topic":"t","topic":"u","data":1}"#),
            "invalid_payload"
        );
        let long_ref = format!(
            r#"{{"type":"unsubscribe","topics":[],"ref":"{}"}}"#,
            "r".repeat(65)
        );
        assert_eq!(code(&long_ref), "bad_ref");
        let (_, reference) =
            ClientMessage::parse(r#"{"type":"publish","topic":"a b","data":1,"ref":"r9"}"#)
                .unwrap_err();
        assert_eq!(reference.as_deref(), Some("r9"));
    }
}
