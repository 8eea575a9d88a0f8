//! The subscription part of a URL query: `?topics=a,b&since=<id>&envelope=json|binary`.

use streamgate_core::{EventId, Topic};

use streamgate_core::Rejection;

/// How events are framed for a client that can take either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EnvelopeFormat {
    /// JSON text envelopes; `binary` events base64 inside (the default).
    #[default]
    Json,
    /// The binary envelope of `docs/PROTOCOL.md` §3.3 for every event.
    Binary,
}

/// A parsed subscription query. Parameters it does not know are left to the transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeQuery {
    /// `topics=a,b`: may be empty (a bidirectional client can subscribe later).
    pub topics: Vec<Topic>,
    /// `since=<id>` (also accepted as `cursor=`, `last_event_id=`).
    pub since: Option<EventId>,
    /// `envelope=json|binary`.
    pub envelope: EnvelopeFormat,
}

impl SubscribeQuery {
    /// Parses a raw (percent-encoded) query string.
    ///
    /// # Errors
    /// `bad_topic`, `bad_cursor` or `bad_query` (a repeated or malformed parameter).
    pub fn parse(query: Option<&str>) -> Result<Self, Rejection> {
        let mut parsed = Self::default();
        let mut seen_topics = false;
        let mut seen_since = false;
        let mut seen_envelope = false;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let once = |seen: &mut bool| {
                if std::mem::replace(seen, true) {
                    Err(Rejection::new(
                        "bad_query",
                        format!("parameter {key} is given twice"),
                    ))
                } else {
                    Ok(())
                }
            };
            match key.as_ref() {
                "topics" | "topic" => {
                    once(&mut seen_topics)?;
                    parsed.topics = value
                        .split(',')
                        .filter(|name| !name.is_empty())
                        .map(|name| Topic::new(name).map_err(Rejection::from))
                        .collect::<Result<_, _>>()?;
                }
                "since" | "cursor" | "last_event_id" => {
                    once(&mut seen_since)?;
                    if !value.is_empty() {
                        parsed.since = Some(value.parse::<EventId>()?);
                    }
                }
                "envelope" => {
                    once(&mut seen_envelope)?;
                    parsed.envelope = match value.as_ref() {
                        "json" => EnvelopeFormat::Json,
                        "binary" => EnvelopeFormat::Binary,
                        other => {
                            return Err(Rejection::new(
                                "bad_query",
                                format!("envelope must be json or binary, got {other:?}"),
                            ))
                        }
                    };
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_topics_since_and_envelope() {
        let q = SubscribeQuery::parse(Some("topics=a,b&since=ep%3A7&envelope=binary&x=1")).unwrap();
        assert_eq!(
            q.topics,
            vec![Topic::new("a").unwrap(), Topic::new("b").unwrap()]
        );
        assert_eq!(q.since.unwrap().to_string(), "ep:7");
        assert_eq!(q.envelope, EnvelopeFormat::Binary);
        assert_eq!(
            SubscribeQuery::parse(None).unwrap(),
            SubscribeQuery::default()
        );
        assert_eq!(SubscribeQuery::parse(Some("since=")).unwrap().since, None);
    }

    #[test]
    fn rejects_bad_values() {
        let code = |q: &str| SubscribeQuery::parse(Some(q)).unwrap_err().code;
        assert_eq!(code("topics=a/b"), "bad_topic");
        assert_eq!(code("since=12"), "bad_cursor");
        assert_eq!(code("topics=a&topics=b"), "bad_query");
        assert_eq!(code("envelope=xml"), "bad_query");
    }
}
