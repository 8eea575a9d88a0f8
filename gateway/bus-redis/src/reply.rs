//! Reading Redis replies without trusting them.
//!
//! Everything under the prefix could have been written by someone else, and a server may
//! speak RESP2 or RESP3 (where a hash arrives as a map, not a flat array), so each reply is
//! taken apart by hand: any shape or value this crate did not write becomes an error naming
//! what was wrong, which the caller reports as [`BrokerError::Refused`](streamgate_core::BrokerError).

use bytes::Bytes;
use redis::Value;
use streamgate_core::{ContentType, Epoch, Event, EventId, Topic};

/// What went wrong with a reply, for the error message.
pub(crate) type Problem = String;

/// The log's state as the snapshot script read it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) epoch: Epoch,
    pub(crate) head: u64,
    pub(crate) topics: Vec<Topic>,
    /// Per topic, the highest sequence trimmed from its stream, sorted by topic.
    pub(crate) evicted: Vec<(Topic, u64)>,
}

/// Parses the snapshot script's `{epoch, head, topics, evicted pairs}`.
pub(crate) fn snapshot(value: Value) -> Result<Snapshot, Problem> {
    let [epoch, head, topics, evicted] = fixed::<4>(value, "snapshot")?;
    let epoch = epoch_of(epoch)?;
    let head = number(head).ok_or("the sequence counter is not a number")?;
    let topics = items(topics)
        .ok_or("the topic set is not a set")?
        .into_iter()
        .map(topic_of)
        .collect::<Result<Vec<_>, _>>()?;
    let mut evicted = pairs(evicted)
        .ok_or("the evicted hash is not a hash")?
        .into_iter()
        .map(|(topic, seq)| {
            let topic = topic_of(topic)?;
            let seq = number(seq).ok_or_else(|| format!("evicted[{topic}] is not a number"))?;
            Ok((topic, seq))
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    evicted.retain(|(_, seq)| *seq > 0);
    evicted.sort();
    Ok(Snapshot {
        epoch,
        head,
        topics,
        evicted,
    })
}

/// Parses the append script's `{epoch, seq}`.
pub(crate) fn appended(value: Value) -> Result<EventId, Problem> {
    let [epoch, seq] = fixed::<2>(value, "append")?;
    let epoch = epoch_of(epoch)?;
    let seq = number(seq)
        .filter(|seq| *seq > 0)
        .ok_or("the sequence is not a positive number")?;
    Ok(EventId::new(epoch, seq))
}

/// Parses an `XRANGE` reply on `topic`'s stream into events of `epoch`.
pub(crate) fn stream_events(
    value: Value,
    topic: &Topic,
    epoch: &Epoch,
) -> Result<Vec<Event>, Problem> {
    items(value)
        .ok_or_else(|| format!("XRANGE on {topic} did not return a list"))?
        .into_iter()
        .map(|entry| stream_event(entry, topic, epoch))
        .collect()
}

fn stream_event(entry: Value, topic: &Topic, epoch: &Epoch) -> Result<Event, Problem> {
    let [id, fields] = fixed::<2>(entry, "stream entry")?;
    let seq = bytes(id)
        .as_deref()
        .and_then(seq_of_entry_id)
        .ok_or_else(|| format!("an entry of {topic} has an id that is not <seq>-0"))?;
    let (mut content_type, mut timestamp_us, mut payload) = (None, None, None);
    for (name, value) in pairs(fields).ok_or_else(|| format!("{topic}/{seq} has no fields"))? {
        match bytes(name).as_deref() {
            Some(b"ct") => {
                content_type = string(value).as_deref().and_then(ContentType::from_name);
            }
            Some(b"ts") => timestamp_us = number(value),
            Some(b"p") => payload = bytes(value),
            // Fields a later version may add are no reason to fail.
            _ => {}
        }
    }
    let missing = |field: &str| format!("{topic}/{seq} lacks a valid {field} field");
    Ok(Event::new(
        topic.clone(),
        EventId::new(epoch.clone(), seq),
        timestamp_us.ok_or_else(|| missing("ts"))?,
        content_type.ok_or_else(|| missing("ct"))?,
        Bytes::from(payload.ok_or_else(|| missing("p"))?),
    ))
}

/// Parses an `XREAD` reply on the log stream into its messages, oldest first. `Nil` (the
/// block timed out) is no messages.
pub(crate) fn log_messages(value: Value) -> Result<Vec<(u64, Bytes)>, Problem> {
    if value == Value::Nil {
        return Ok(Vec::new());
    }
    // RESP2: [[key, entries]]; RESP3: {key: entries}. One stream was asked for.
    let entries = match value {
        Value::Map(streams) => match <[(Value, Value); 1]>::try_from(streams) {
            Ok([(_, entries)]) => entries,
            Err(_) => return Err("XREAD did not return one stream".to_owned()),
        },
        other => {
            let [stream] = fixed::<1>(other, "XREAD")?;
            let [_, entries] = fixed::<2>(stream, "XREAD stream")?;
            entries
        }
    };
    items(entries)
        .ok_or("XREAD did not return a list of entries")?
        .into_iter()
        .map(|entry| {
            let [id, fields] = fixed::<2>(entry, "log entry")?;
            let seq = bytes(id)
                .as_deref()
                .and_then(seq_of_entry_id)
                .ok_or("a log entry id is not <seq>-0")?;
            let message = pairs(fields)
                .and_then(|fields| {
                    fields
                        .into_iter()
                        .find(|(name, _)| matches!(name, Value::BulkString(name) if name == b"e"))
                })
                .and_then(|(_, message)| bytes(message))
                .ok_or_else(|| format!("log entry {seq} has no e field"))?;
            Ok((seq, Bytes::from(message)))
        })
        .collect()
}

/// Parses a `SCAN` reply: the next cursor (0 when done) and the keys of this page.
pub(crate) fn scan_page(value: Value) -> Result<(u64, Vec<Vec<u8>>), Problem> {
    let [cursor, keys] = fixed::<2>(value, "SCAN")?;
    let cursor = number(cursor).ok_or("the SCAN cursor is not a number")?;
    let keys = items(keys)
        .ok_or("the SCAN keys are not a list")?
        .into_iter()
        .map(|key| bytes(key).ok_or_else(|| "a SCAN key is not a string".to_owned()))
        .collect::<Result<_, _>>()?;
    Ok((cursor, keys))
}

/// The sequence in a stream id `<seq>-0`.
pub(crate) fn seq_of_entry_id(id: &[u8]) -> Option<u64> {
    let id = std::str::from_utf8(id).ok()?;
    let (seq, zero) = id.split_once('-')?;
    if zero != "0" || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

fn epoch_of(value: Value) -> Result<Epoch, Problem> {
    string(value)
        .and_then(|epoch| Epoch::new(&epoch).ok())
        .ok_or_else(|| "the epoch is not 1 to 32 ASCII letters or digits".to_owned())
}

fn topic_of(value: Value) -> Result<Topic, Problem> {
    let name = string(value).ok_or("a topic name is not a string")?;
    Topic::new(&name).map_err(|e| format!("topic {name:?}: {e}"))
}

/// A list of exactly `N` values.
fn fixed<const N: usize>(value: Value, what: &str) -> Result<[Value; N], Problem> {
    items(value)
        .and_then(|items| <[Value; N]>::try_from(items).ok())
        .ok_or_else(|| format!("the {what} reply is not a list of {N}"))
}

/// The elements of an array or set; `Nil` counts as empty.
pub(crate) fn items(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// Field/value pairs, from a RESP3 map or a flat RESP2 array of even length.
fn pairs(value: Value) -> Option<Vec<(Value, Value)>> {
    match value {
        Value::Map(pairs) => Some(pairs),
        other => {
            let items = items(other)?;
            if items.len() % 2 != 0 {
                return None;
            }
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                pairs.push((name, value));
            }
            Some(pairs)
        }
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

fn string(value: Value) -> Option<String> {
    bytes(value).and_then(|bytes| String::from_utf8(bytes).ok())
}

/// A non-negative integer, sent as an integer or as a decimal string; `Nil` (an absent key
/// or field) is 0.
pub(crate) fn number(value: Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(n).ok(),
        Value::Nil => Some(0),
        other => {
            let text = string(other)?;
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &[u8]) -> Value {
        Value::BulkString(text.to_vec())
    }

    #[test]
    fn entry_ids() {
        assert_eq!(seq_of_entry_id(b"42-0"), Some(42));
        assert_eq!(seq_of_entry_id(b"42-1"), None);
        assert_eq!(seq_of_entry_id(b"42"), None);
        assert_eq!(seq_of_entry_id(b"-0"), None);
        assert_eq!(seq_of_entry_id(b"+4-0"), None);
        assert_eq!(seq_of_entry_id(b"99999999999999999999-0"), None);
    }

    #[test]
    fn stream_entries_are_read_and_checked() {
        let topic = Topic::new("t").unwrap();
        let epoch = Epoch::new("e").unwrap();
        let entry =
            |id: &[u8], fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
        let good = Value::Array(vec![entry(
            b"7-0",
            vec![
                bulk(b"ct"),
                bulk(b"json"),
                bulk(b"ts"),
                bulk(b"12"),
                bulk(b"p"),
                bulk(b"{}"),
                bulk(b"new"),
                bulk(b"x"),
            ],
        )]);
        let events = stream_events(good, &topic, &epoch).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.seq, 7);
        assert_eq!(events[0].content_type, ContentType::Json);
        assert_eq!(events[0].timestamp_us, 12);
        assert_eq!(&events[0].payload[..], b"{}");

        let missing_payload = Value::Array(vec![entry(
            b"7-0",
            vec![bulk(b"ct"), bulk(b"json"), bulk(b"ts"), bulk(b"12")],
        )]);
        assert!(stream_events(missing_payload, &topic, &epoch).is_err());
        let bad_type = Value::Array(vec![entry(
            b"7-0",
            vec![
                bulk(b"ct"),
                bulk(b"xml"),
                bulk(b"ts"),
                bulk(b"1"),
                bulk(b"p"),
                bulk(b""),
            ],
        )]);
        assert!(stream_events(bad_type, &topic, &epoch).is_err());
        let foreign_id = Value::Array(vec![entry(b"1700000000000-3", vec![])]);
        assert!(stream_events(foreign_id, &topic, &epoch).is_err());
        assert!(stream_events(Value::Int(3), &topic, &epoch).is_err());
        assert!(stream_events(Value::Array(vec![Value::Int(3)]), &topic, &epoch).is_err());
    }

    #[test]
    fn snapshots_accept_both_protocols() {
        let resp2 = Value::Array(vec![
            bulk(b"abc"),
            bulk(b"12"),
            Value::Array(vec![bulk(b"b"), bulk(b"a")]),
            Value::Array(vec![bulk(b"b"), bulk(b"3"), bulk(b"a"), bulk(b"0")]),
        ]);
        let parsed = snapshot(resp2).unwrap();
        assert_eq!(parsed.epoch.as_str(), "abc");
        assert_eq!(parsed.head, 12);
        assert_eq!(parsed.topics.len(), 2);
        assert_eq!(parsed.evicted, vec![(Topic::new("b").unwrap(), 3)]);

        let resp3 = Value::Array(vec![
            bulk(b"abc"),
            bulk(b"0"),
            Value::Set(vec![]),
            Value::Map(vec![(bulk(b"a"), bulk(b"9"))]),
        ]);
        assert_eq!(snapshot(resp3).unwrap().evicted.len(), 1);
    }

    #[test]
    fn bad_snapshots_are_errors() {
        let with = |epoch: &[u8], head: &[u8], topic: &[u8]| {
            snapshot(Value::Array(vec![
                bulk(epoch),
                bulk(head),
                Value::Array(vec![bulk(topic)]),
                Value::Array(vec![]),
            ]))
        };
        assert!(with(b"abc", b"1", b"t").is_ok());
        assert!(with(b"a-c", b"1", b"t").is_err());
        assert!(with(b"abc", b"-1", b"t").is_err());
        assert!(with(b"abc", b"1", b"a/b").is_err());
        assert!(snapshot(Value::Okay).is_err());
        assert!(snapshot(Value::Array(vec![bulk(b"abc")])).is_err());
    }

    #[test]
    fn append_replies() {
        let id = appended(Value::Array(vec![bulk(b"abc"), Value::Int(5)])).unwrap();
        assert_eq!(id.to_string(), "abc:5");
        assert!(appended(Value::Array(vec![bulk(b"abc"), Value::Int(0)])).is_err());
        assert!(appended(Value::Array(vec![bulk(b"abc"), Value::Int(-5)])).is_err());
        assert!(appended(Value::Int(5)).is_err());
    }

    #[test]
    fn log_replies() {
        assert!(log_messages(Value::Nil).unwrap().is_empty());
        let entries = Value::Array(vec![Value::Array(vec![
            bulk(b"3-0"),
            Value::Array(vec![bulk(b"e"), bulk(b"msg")]),
        ])]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk(b"log"), entries.clone()])]);
        assert_eq!(
            log_messages(resp2).unwrap(),
            vec![(3, Bytes::from_static(b"msg"))]
        );
        let resp3 = Value::Map(vec![(bulk(b"log"), entries)]);
        assert_eq!(log_messages(resp3).unwrap().len(), 1);
        assert!(log_messages(Value::Int(1)).is_err());
        let no_field = Value::Array(vec![Value::Array(vec![
            bulk(b"log"),
            Value::Array(vec![Value::Array(vec![bulk(b"3-0"), Value::Array(vec![])])]),
        ])]);
        assert!(log_messages(no_field).is_err());
    }
}
