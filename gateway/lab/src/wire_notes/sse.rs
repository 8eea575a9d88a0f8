//! Server-Sent Events as the browser parses them (WHATWG HTML, "Server-sent events", §9.2.6
//! "Interpreting an event stream"): lines of `field: value`, a blank line dispatching what
//! was gathered.

use super::envelope::annotate_envelope;
use super::{plural, quoted, unquoted, Note};

/// Server-Sent Events text: each complete block (the lines up to a blank line) with its
/// field lines explained — `id` (and what the browser does with it: `Last-Event-ID` on
/// reconnect), `event`, `data` (with the streamgate envelope it carries), `retry`, comments
/// — and streamgate's notices `@gap`, `@reset` and `@lagged`. Returns the notes and the
/// bytes the complete blocks take; a block still missing its blank line waits for more.
pub fn annotate_sse(text: &[u8]) -> (Vec<Note>, usize) {
    let mut notes = Vec::new();
    let mut consumed = 0;
    let mut at = 0;
    if text.starts_with(b"\xef\xbb\xbf") {
        notes.push(
            Note::new(
                "byte order mark",
                "ef bb bf",
                "A UTF-8 BOM at the very start of the stream; the browser skips it.",
            )
            .at(0, 3),
        );
        at = 3;
        consumed = 3;
    }
    let mut fields = Vec::new();
    let block_start =
        |fields: &Vec<Field>, at: usize| fields.first().map_or(at, |f: &Field| f.start);
    while let Some((line_end, next)) = line_at(text, at) {
        let line = &text[at..line_end];
        if line.is_empty() {
            if !fields.is_empty() {
                let start = block_start(&fields, at);
                notes.push(block_note(std::mem::take(&mut fields), start, next));
            }
            consumed = next;
        } else {
            fields.push(field(line, at, next));
        }
        at = next;
    }
    (notes, consumed)
}

/// The end of the line starting at `at` and where the next one starts, if the line is
/// complete. CR LF, CR and LF all end a line; a CR as the last byte waits, in case its LF
/// is on the way.
fn line_at(text: &[u8], at: usize) -> Option<(usize, usize)> {
    let rest = text.get(at..)?;
    let end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
    match (rest[end], rest.get(end + 1)) {
        (b'\r', Some(b'\n')) => Some((at + end, at + end + 2)),
        (b'\r', None) => None,
        _ => Some((at + end, at + end + 1)),
    }
}

/// One field line of a block.
struct Field {
    name: String,
    value: String,
    start: usize,
    end: usize,
}

fn field(line: &[u8], start: usize, end: usize) -> Field {
    let line = String::from_utf8_lossy(line);
    let (name, value) = match line.split_once(':') {
        // "If the line starts with a colon, ignore the line": a comment.
        Some(("", comment)) => (":".to_owned(), comment.strip_prefix(' ').unwrap_or(comment)),
        Some((name, value)) => (name.to_owned(), value.strip_prefix(' ').unwrap_or(value)),
        // A line without a colon is a field name with an empty value.
        None => (line.clone().into_owned(), ""),
    };
    Field {
        name,
        value: value.to_owned(),
        start,
        end,
    }
}

/// A block: its kind (event, notice, comment, retry), what the browser does with it, and
/// each field.
fn block_note(fields: Vec<Field>, start: usize, end: usize) -> Note {
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.as_str())
    };
    let data_lines: Vec<&str> = fields
        .iter()
        .filter(|f| f.name == "data")
        .map(|f| f.value.as_str())
        .collect();
    let data = data_lines.join("\n");
    let event = get("event").filter(|e| !e.is_empty());
    let id = get("id");
    let (label, value, explain) = if !data_lines.is_empty() {
        match event {
            Some(name) if name.starts_with('@') => (
                "SSE notice",
                name.to_owned(),
                format!(
                    "A streamgate notice, dispatched as an event of type {name:?} (listen with addEventListener({name:?}, …)). It has no id: line, so the browser's last event id stays the last event's (docs/PROTOCOL.md §7)."
                ),
            ),
            _ => {
                let kind = event.unwrap_or("message");
                let listener = if event.is_some() {
                    format!("addEventListener({kind:?}, …) receives it; onmessage does not, it only sees unnamed events")
                } else {
                    "onmessage receives it".to_owned()
                };
                (
                    "SSE event",
                    match id {
                        Some(id) => format!("{kind}, id {}", unquoted(id)),
                        None => kind.to_owned(),
                    },
                    format!(
                        "The blank line dispatches a MessageEvent of type {kind:?} whose data is the data: lines joined with \\n ({}){}: {listener}.",
                        plural(data.len() as u64, "byte"),
                        match id {
                            Some(id) => format!(" and whose lastEventId is {}", quoted(id)),
                            None => String::new(),
                        }
                    ),
                )
            }
        }
    } else if fields.iter().all(|f| f.name == ":") {
        (
            "SSE comment",
            fields.first().map(|f| unquoted(&f.value)).unwrap_or_default(),
            "Comment lines start with a colon and are ignored by the browser; streamgate sends one with the epoch at the start and a heartbeat when the stream is idle, so proxies do not close it.".to_owned(),
        )
    } else if get("retry").is_some() && fields.iter().all(|f| f.name == "retry" || f.name == ":") {
        (
            "SSE retry",
            format!("{} ms", get("retry").unwrap_or_default()),
            "Sets how long the browser waits before reconnecting when the connection drops; no event is dispatched.".to_owned(),
        )
    } else {
        (
            "SSE block",
            String::new(),
            "A block without data: lines dispatches no event (an id: in it still sets the last event id).".to_owned(),
        )
    };
    let children = fields
        .iter()
        .map(|f| field_note(f, event))
        .collect::<Vec<_>>();
    let mut note = Note::new(label, value, explain)
        .at(start, end)
        .with(children);
    if data_lines.len() > 1 {
        if let Some(envelope) = annotate_envelope(data.as_bytes(), 0) {
            note.children.push(strip(envelope));
        }
    }
    note
}

fn field_note(field: &Field, event: Option<&str>) -> Note {
    let value = unquoted(&field.value);
    let note = match field.name.as_str() {
        "id" => {
            let mut note = Note::new(
                "id",
                value,
                "The event id (epoch:seq). The browser keeps it as the last event ID; when the connection drops it reconnects with a Last-Event-ID header carrying it, and streamgate resumes right after it, so nothing still in history is lost (docs/PROTOCOL.md §4).",
            );
            if field.value.contains('\0') {
                note.children.push(Note::violation(
                    "id with a NUL character",
                    "The browser ignores an id: field that contains NUL (HTML §9.2.6).",
                ));
            }
            note
        }
        "event" => {
            let explain = match event {
                Some("@gap") => "@gap: events of a topic were evicted from history before this client got them; data says which (docs/PROTOCOL.md §4).",
                Some("@reset") => "@reset: the Last-Event-ID came from another epoch; delivery restarts with the oldest kept event (docs/PROTOCOL.md §4).",
                Some("@lagged") => "@lagged: the client read too slowly and is now served from history (docs/PROTOCOL.md §5).",
                Some(name) if name.starts_with('@') => "A streamgate notice name; @ is outside the topic alphabet, so it never collides with a topic.",
                _ => "The event type: streamgate uses the topic, so a page listens with addEventListener(topic, …).",
            };
            Note::new("event", value, explain)
        }
        "data" => {
            let mut note = Note::new(
                "data",
                value,
                "One line of data; several data: lines are joined with \\n, so a payload with line breaks still arrives whole.",
            );
            if let Some(envelope) = annotate_envelope(field.value.as_bytes(), 0) {
                note.children.push(strip(envelope));
            }
            note
        }
        "retry" => {
            let mut note = Note::new(
                "retry",
                value,
                "Reconnection delay in milliseconds: after a drop the browser waits this long, then reconnects with Last-Event-ID.",
            );
            if field.value.is_empty() || !field.value.bytes().all(|b| b.is_ascii_digit()) {
                note.children.push(Note::violation(
                    "retry that is not all digits",
                    "The browser ignores a retry: field unless it is ASCII digits only (HTML §9.2.6).",
                ));
            }
            note
        }
        ":" => Note::new(
            "comment",
            value,
            if field.value.starts_with("streamgate epoch") {
                "A comment naming the bus's current epoch: ids of another epoch cannot be resumed (docs/PROTOCOL.md §2)."
            } else if field.value.starts_with("heartbeat") {
                "A heartbeat comment, sent when the stream is idle so proxies and the browser see it is alive."
            } else {
                "A comment: ignored by the browser."
            },
        ),
        other => Note::new(
            other,
            value,
            "Not a field SSE defines: the browser ignores the line (HTML §9.2.6).",
        ),
    };
    note.at(field.start, field.end)
}

/// Envelope notes from SSE text carry offsets into the data, not into the input.
fn strip(mut note: Note) -> Note {
    note.bytes = None;
    note.children = note.children.into_iter().map(strip).collect();
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What streamgate sent on a real connection (see the chunked test in http.rs).
    const STREAM: &[u8] = b"retry: 3000\n\n: streamgate epoch f0q34decj5oe\n\nid: f0q34decj5oe:2\nevent: news\ndata: {\"type\":\"event\",\"topic\":\"news\",\"id\":\"f0q34decj5oe:2\",\"ts\":1795770317780372,\"content_type\":\"json\",\"data\":{\"headline\":\"hi\"}}\n\nevent: @gap\ndata: {\"type\":\"gap\",\"topic\":\"news\",\"after\":\"f0q34decj5oe:1\",\"lost_through\":\"f0q34decj5oe:9\"}\n\nid: f0q";

    #[test]
    fn blocks_fields_and_notices() {
        let (notes, consumed) = annotate_sse(STREAM);
        assert_eq!(consumed, STREAM.len() - "id: f0q".len());
        let labels: Vec<_> = notes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(
            labels,
            ["SSE retry", "SSE comment", "SSE event", "SSE notice"]
        );
        assert_eq!(notes[0].value, "3000 ms");
        let event = &notes[2];
        assert_eq!(event.value, "news, id f0q34decj5oe:2");
        let id = event.find("id").unwrap();
        assert_eq!(id.value, "f0q34decj5oe:2");
        assert!(id.explain.contains("Last-Event-ID"));
        let (s, e) = id.bytes.unwrap();
        assert_eq!(&STREAM[s..e], b"id: f0q34decj5oe:2\n");
        assert!(event.explain.contains("addEventListener(\"news\""));
        assert_eq!(
            event.find("streamgate envelope").unwrap().value,
            "event f0q34decj5oe:2 on news"
        );
        assert_eq!(notes[3].value, "@gap");
        assert!(notes[3].find("event").unwrap().explain.contains("evicted"));
        assert!(notes.iter().all(|n| n.violations().is_empty()));
    }

    #[test]
    fn line_ends_and_multi_line_data() {
        let (notes, consumed) = annotate_sse(b"data: a\r\ndata: b\rid\r\n\r\nx");
        assert_eq!(consumed, 23);
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].explain.contains("(3 bytes)"),
            "{}",
            notes[0].explain
        );
        assert_eq!(notes[0].find("id").unwrap().value, "");
        // A CR at the end may be the first half of CR LF: wait.
        assert_eq!(annotate_sse(b"data: a\n\r").1, 0);
        assert_eq!(annotate_sse(b"data: a\n\r\n").1, 10);
        let (notes, _) = annotate_sse(b"retry: soon\n\n");
        assert_eq!(notes[0].violations().len(), 1);
    }
}
