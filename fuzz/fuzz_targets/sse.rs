//! Server-Sent Events: the encoder every SSE subscriber's bytes come from, read back the way a
//! browser reads an event stream (WHATWG HTML §9.2.6), and the lab's SSE annotator.
//!
//! Properties: whatever the payload (line breaks of every kind included), one block carries
//! exactly one event whose data is the payload with `\r\n` and `\r` turned into `\n`, and its
//! id and event name unchanged; the annotator reads the whole block; a comment is one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate_lab::wire_notes::annotate_sse;
use streamgate_proto::{encode_sse_block, sse_comment};

/// One dispatched event: its id, its event name and its data.
type Dispatched = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

/// What a browser dispatches from `stream`.
fn browser_parse(stream: &[u8]) -> Vec<Dispatched> {
    let mut events = Vec::new();
    let (mut id, mut event) = (None, None);
    let mut data: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < stream.len() {
        let end = stream[at..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(stream.len(), |p| at + p);
        assert!(end < stream.len(), "the block ends with a line break");
        let line = &stream[at..end];
        at = end
            + if stream[end] == b'\r' && stream.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
        if line.is_empty() {
            if let Some(mut data) = data.take() {
                data.pop();
                events.push((id.take(), event.take(), data));
            }
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                // The spec: append the value and a line feed; drop the last one at dispatch.
                let buffer = data.get_or_insert_with(Vec::new);
                buffer.extend_from_slice(value);
                buffer.push(b'\n');
            }
            b"id" => id = Some(value.to_vec()),
            b"event" => event = Some(value.to_vec()),
            _ => {}
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let block = encode_sse_block(Some("ep:1"), Some("news"), data);
    let events = browser_parse(&block);
    assert_eq!(events.len(), 1, "one block, one event");
    let (id, event, got) = &events[0];
    let mut expected = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' {
            expected.push(b'\n');
            if data.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
        } else {
            expected.push(data[i]);
        }
        i += 1;
    }
    assert_eq!(got, &expected);
    assert_eq!(id.as_deref(), Some(&b"ep:1"[..]));
    assert_eq!(event.as_deref(), Some(&b"news"[..]));
    let (_, consumed) = annotate_sse(&block);
    assert_eq!(consumed, block.len());
    let comment = sse_comment(&String::from_utf8_lossy(data));
    assert!(comment.ends_with(b"\n\n"));
    assert!(!comment[..comment.len() - 2]
        .iter()
        .any(|&b| b == b'\n' || b == b'\r'));
});
