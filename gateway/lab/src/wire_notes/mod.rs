//! # Wire notes: what the bytes of an exchange mean
//!
//! The teaching lab (`GET /lab` and `streamgate inspect`) shows the protocols at work on the
//! wire: not "a message arrived" but "these two bytes are a frame header, this bit says the
//! frame is the last of its message, these four bytes are the masking key". This module
//! turns captured bytes into that explanation, a tree of [`Note`]s, each naming a byte range
//! of the input, what is in it, and why it is there.
//!
//! It does no I/O: it is handed bytes someone else captured (a tap in the gateway, a client
//! in the CLI, a hex string typed by a learner) and returns notes. It never panics, whatever the bytes: wire data is hostile by nature, and a
//! teaching tool that crashes on a malformed frame would hide exactly the case worth seeing.
//! Malformed input is explained too, as notes labelled [`VIOLATION`].
//!
//! | input | function |
//! | --- | --- |
//! | WebSocket frames (RFC 6455 §5), either direction | [`annotate_ws_frames`], or [`WsAnnotator`] across calls |
//! | the `Sec-WebSocket-Accept` computation (RFC 6455 §4.2.2) | [`explain_accept`] |
//! | an HTTP/1.1 request or response head (RFC 9112) | [`annotate_http_head`] |
//! | a chunked body (RFC 9112 §7.1) | [`annotate_chunks`] |
//! | Server-Sent Events text (WHATWG HTML) | [`annotate_sse`] |
//! | a streamgate envelope, JSON or binary (docs/PROTOCOL.md §3) | [`annotate_envelope`] |
//! | a long-poll response body | [`annotate_poll_body`] |
//! | length-prefixed messages of a WebTransport stream | [`annotate_length_prefixed`] |
//!
//! [`render_text`] draws notes as an aligned tree for a terminal:
//!
//! ```
//! use streamgate_lab::wire_notes::{annotate_ws_frames, render_text};
//!
//! // RFC 6455 §5.7: a single-frame masked text message, "Hello".
//! let frames = annotate_ws_frames(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
//! assert_eq!(frames.consumed, 11);
//! let text = render_text(&frames.frames);
//! assert!(text.contains("masking key") && text.contains("\"Hello\""));
//! ```

mod envelope;
mod http;
mod inflate;
mod render;
mod sse;
mod ws;

pub use envelope::{annotate_envelope, annotate_length_prefixed, annotate_poll_body};
pub use http::{annotate_chunks, annotate_http_head};
pub use inflate::MessageInflater;
pub use render::{render_text, render_text_brief, wrap};
pub use sse::annotate_sse;
pub use ws::{annotate_ws_frames, explain_accept, WsAnnotator, WsFrames, WEBSOCKET_GUID};

/// The label of every note that reports a protocol violation, so that a page can colour
/// them and a test can find them.
pub const VIOLATION: &str = "violation";

/// One annotated piece of a wire exchange: what a byte range is, its value, and what it means.
///
/// Notes form a tree: a WebSocket frame is a note whose children are its header fields and
/// payload. Every `bytes` range, children's included, is an offset into the input of the
/// function that made the note (not into the parent's range), so a page can highlight any
/// note in the one hex dump of the input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    /// What the piece is: `FIN`, `opcode`, `payload length`, `Sec-WebSocket-Accept`, …
    pub label: String,
    /// Its value as a reader wants to see it: `1`, `0x1 (text)`, `37 fa 21 3d`, …
    pub value: String,
    /// One plain sentence that teaches why the piece is there, citing the RFC where useful.
    pub explain: String,
    /// `[start, end)` offsets into the input this note describes, when it has a place there
    /// (a computed value such as a SHA-1 digest has none).
    pub bytes: Option<(usize, usize)>,
    /// The parts of this piece, in wire order.
    pub children: Vec<Note>,
}

impl Note {
    /// A note without a byte range or children.
    pub fn new(
        label: impl Into<String>,
        value: impl Into<String>,
        explain: impl Into<String>,
    ) -> Self {
        Self {
            label: label.into(),
            value: value.into(),
            explain: explain.into(),
            bytes: None,
            children: Vec::new(),
        }
    }

    /// A note reporting a protocol violation (label [`VIOLATION`]).
    pub fn violation(what: impl Into<String>, explain: impl Into<String>) -> Self {
        Self::new(VIOLATION, what, explain)
    }

    /// This note, describing input bytes `start..end`.
    #[must_use]
    pub fn at(mut self, start: usize, end: usize) -> Self {
        self.bytes = Some((start, end));
        self
    }

    /// This note and its children with every byte range moved `by` bytes later: for notes
    /// made from a slice that starts `by` bytes into a larger buffer.
    #[must_use]
    pub fn shifted(self, by: usize) -> Self {
        self.map_ranges(&|offset| offset + by)
    }

    /// This note and its children with every byte range moved `by` bytes earlier (never
    /// below 0): offsets into a larger input become offsets into the record at `by`, the way
    /// the RFCs draw a frame from its first byte.
    #[must_use]
    pub fn rebased(self, by: usize) -> Self {
        self.map_ranges(&|offset| offset.saturating_sub(by))
    }

    fn map_ranges(mut self, map: &impl Fn(usize) -> usize) -> Self {
        self.bytes = self.bytes.map(|(start, end)| (map(start), map(end)));
        self.children = self
            .children
            .into_iter()
            .map(|child| child.map_ranges(map))
            .collect();
        self
    }

    /// This note with `children` added after the ones it has.
    #[must_use]
    pub fn with(mut self, children: impl IntoIterator<Item = Note>) -> Self {
        self.children.extend(children);
        self
    }

    /// The first note labelled `label` in this note's subtree (itself included), depth first.
    pub fn find(&self, label: &str) -> Option<&Note> {
        if self.label == label {
            return Some(self);
        }
        self.children.iter().find_map(|child| child.find(label))
    }

    /// Every violation in this note's subtree, depth first.
    pub fn violations(&self) -> Vec<&Note> {
        let mut found = Vec::new();
        self.collect_violations(&mut found);
        found
    }

    fn collect_violations<'a>(&'a self, found: &mut Vec<&'a Note>) {
        if self.label == VIOLATION {
            found.push(self);
        }
        for child in &self.children {
            child.collect_violations(found);
        }
    }
}

/// Runs every annotator, and the renderer, on `data`: the body of a fuzz target. None of
/// them may panic, loop forever or allocate without bound, whatever `data` is; the unit tests
/// run it over random and mutated input, and a `cargo fuzz` target only needs to call it.
pub fn fuzz_annotate(data: &[u8]) {
    let frames = annotate_ws_frames(data);
    assert!(frames.consumed <= data.len());
    let _ = render_text(&frames.frames);
    let mut keeping_context = WsAnnotator::with_context_takeover();
    // Split the input in two so that state carried between calls is exercised too.
    let half = data.len() / 2;
    let first = keeping_context.annotate(&data[..half]);
    let _ = keeping_context.annotate(&data[first.consumed..]);
    let key = String::from_utf8_lossy(data);
    let _ = render_text(&[explain_accept(&key)]);
    if let Some((head, consumed)) = annotate_http_head(data) {
        assert!(consumed <= data.len());
        let _ = render_text(&[head]);
    }
    let (chunks, consumed) = annotate_chunks(data);
    assert!(consumed <= data.len());
    let _ = render_text(&chunks);
    let (blocks, consumed) = annotate_sse(data);
    assert!(consumed <= data.len());
    let _ = render_text(&blocks);
    let (messages, consumed) = annotate_length_prefixed(data);
    assert!(consumed <= data.len());
    let _ = render_text(&messages);
    if let Some(envelope) = annotate_envelope(data, 0) {
        let _ = render_text(&[envelope]);
    }
    let _ = render_text(&[annotate_poll_body(data)]);
}

/// How many payload bytes a note shows before it says how many more there are.
const PREVIEW_BYTES: usize = 24;
/// How many characters of text a note shows.
const PREVIEW_CHARS: usize = 100;

/// Bytes as lowercase hex pairs separated by spaces, the way the RFCs write them.
pub(crate) fn hex_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The first [`PREVIEW_BYTES`] of `bytes` in hex, and how many were left out.
pub(crate) fn hex_preview(bytes: &[u8]) -> String {
    if bytes.len() <= PREVIEW_BYTES {
        return hex_bytes(bytes);
    }
    format!(
        "{} … (+{} bytes)",
        hex_bytes(&bytes[..PREVIEW_BYTES]),
        bytes.len() - PREVIEW_BYTES
    )
}

/// Text in double quotes, control characters escaped, cut after [`PREVIEW_CHARS`]
/// characters. Quotes inside are left alone: a JSON payload stays readable.
pub(crate) fn quoted(text: &str) -> String {
    match escape_cut(text) {
        (shown, 0) => format!("\"{shown}\""),
        (shown, left) => format!("\"{shown}\" … (+{left} bytes)"),
    }
}

/// Like [`quoted`], without the quotes: for values that are plainly text, such as ids.
pub(crate) fn unquoted(text: &str) -> String {
    match escape_cut(text) {
        (shown, 0) => shown,
        (shown, left) => format!("{shown} … (+{left} bytes)"),
    }
}

/// The first [`PREVIEW_CHARS`] characters of `text` with control characters escaped, and
/// how many bytes were left out.
fn escape_cut(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len().min(PREVIEW_CHARS * 2));
    for (shown, (at, ch)) in text.char_indices().enumerate() {
        if shown == PREVIEW_CHARS {
            return (out, text.len() - at);
        }
        match ch {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    (out, 0)
}

/// A payload as a reader wants it: quoted text if it is UTF-8 that reads as text, hex
/// otherwise. Zero bytes and other control characters (except tab, CR and LF) are valid UTF-8
/// but make binary data, not text: `00 00 00` rather than `"\u{0}\u{0}\u{0}"`.
pub(crate) fn payload_preview(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".to_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(text)
            if !text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) =>
        {
            quoted(text)
        }
        _ => hex_preview(bytes),
    }
}

/// `n` with its unit, singular when it is one: `1 byte`, `5 bytes`.
pub fn plural<N: std::fmt::Display + PartialEq + From<u8>>(n: N, unit: &str) -> String {
    if n == N::from(1) {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_payloads_are_shown_in_hex_even_when_they_are_utf8() {
        assert_eq!(payload_preview(b"Hello"), quoted("Hello"));
        assert_eq!(payload_preview(b"a\tb\n"), quoted("a\tb\n"));
        assert_eq!(payload_preview(&[0, 0, 0]), hex_preview(&[0, 0, 0]));
        assert_eq!(payload_preview(b"ab\x01"), hex_preview(b"ab\x01"));
        assert_eq!(payload_preview(&[0xc3, 0x28]), hex_preview(&[0xc3, 0x28]));
    }

    #[test]
    fn byte_ranges_move_with_their_children() {
        let note = Note::new("a", "", "")
            .at(10, 20)
            .with([Note::new("b", "", "").at(12, 14), Note::new("c", "", "")]);
        let rebased = note.clone().rebased(10);
        assert_eq!(rebased.bytes, Some((0, 10)));
        assert_eq!(rebased.children[0].bytes, Some((2, 4)));
        assert_eq!(rebased.children[1].bytes, None);
        assert_eq!(
            note.clone().rebased(15).bytes,
            Some((0, 5)),
            "never below 0"
        );
        let shifted = note.shifted(5);
        assert_eq!(shifted.bytes, Some((15, 25)));
        assert_eq!(shifted.children[0].bytes, Some((17, 19)));
    }

    #[test]
    fn previews_cut_long_input_and_say_how_much_is_left() {
        assert_eq!(hex_bytes(&[0x37, 0xfa, 0x21, 0x3d]), "37 fa 21 3d");
        let long = [0xabu8; 30];
        assert!(
            hex_preview(&long).ends_with("… (+6 bytes)"),
            "{}",
            hex_preview(&long)
        );
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        let text = "é".repeat(150);
        let preview = quoted(&text);
        assert!(preview.ends_with("\" … (+100 bytes)"), "{preview}");
        assert_eq!(unquoted("e:1"), "e:1");
        assert_eq!(payload_preview(b""), "(empty)");
        assert_eq!(payload_preview(&[0xff, 0x00]), "ff 00");
        assert_eq!(plural(1u8, "byte"), "1 byte");
        assert_eq!(plural(2u8, "byte"), "2 bytes");
    }

    /// A small xorshift generator: random enough to find panics, and the same sequence on
    /// every run, so a failure reproduces.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn no_input_makes_an_annotator_panic() {
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        for round in 0..3000 {
            let len = (rng.next() % 300) as usize;
            let data = rng.bytes(len);
            fuzz_annotate(&data);
            // Random bytes rarely look like a protocol; start from real messages and flip a
            // few bytes so that the deeper paths run too.
            let seeds: [&[u8]; 6] = [
                &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58],
                &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
                b"GET /ws?topics=a HTTP/1.1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n\r\n",
                b"5\r\nhello\r\n0\r\nx: y\r\n\r\n",
                b"id: e:1\nevent: news\ndata: {\"type\":\"event\",\"id\":\"e:1\",\"ts\":1}\nretry: 10\n\n: hi\n\n",
                b"\x00\x00\x00\x05\x01\x01\x02\x01t",
            ];
            let mut data = seeds[round % seeds.len()].to_vec();
            for _ in 0..(rng.next() % 4) {
                let at = (rng.next() as usize) % data.len();
                data[at] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(3) {
                data.truncate((rng.next() as usize) % (data.len() + 1));
            }
            fuzz_annotate(&data);
        }
    }
}
