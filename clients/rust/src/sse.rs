//! An incremental `text/event-stream` decoder (WHATWG HTML, "Server-sent events"), sans-IO:
//! feed it bytes as they arrive, in chunks of any size, and it returns what completed.
//!
//! ```
//! use streamgate_client::sse::{SseDecoder, SseItem};
//!
//! let mut decoder = SseDecoder::default();
//! assert_eq!(decoder.feed(b"retry: 3000\n\n: streamgate epoch e\n\nid: e:1\nevent: de").len(), 2);
//! let items = decoder.feed(b"mo\ndata: {\"type\":\"event\"}\n\n");
//! let SseItem::Block(block) = &items[0] else { panic!() };
//! assert_eq!((block.event.as_str(), block.id.as_deref()), ("demo", Some("e:1")));
//! assert_eq!(block.data.as_deref(), Some("{\"type\":\"event\"}"));
//! ```
//!
//! How streamgate uses SSE (`docs/PROTOCOL.md` §7): `id:` is the event id, `event:` the topic
//! (or `@gap`, `@reset`, … for notices), `data:` the JSON envelope. The stream starts with a
//! `retry:` line and a `: streamgate epoch` comment, and sends `: heartbeat` after 15 s of
//! silence: comments are the liveness signal, so the decoder reports them.

use std::time::Duration;

/// One dispatched SSE block.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseBlock {
    /// `event:`, or `message` when the block has none.
    pub event: String,
    /// The joined `data:` lines; `None` when the block had none (only `retry:`, `id:`, …).
    pub data: Option<String>,
    /// A valid `retry:` in this block.
    pub retry: Option<Duration>,
    /// The block's `id:`, if any.
    pub id: Option<String>,
}

/// What the decoder completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A block, ended by a blank line.
    Block(SseBlock),
    /// A comment line (`: heartbeat`), without the colon and the space after it.
    Comment(String),
}

/// The decoder's state between chunks.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The line being read.
    line: Vec<u8>,
    /// The previous byte was `\r`: a `\n` right after it belongs to the same line break.
    after_cr: bool,
    /// The block being read.
    block: SseBlock,
    /// Bytes fed so far.
    offset: u64,
}

impl SseDecoder {
    /// Feeds bytes; returns the blocks and comments they completed. Lines end with `\n`,
    /// `\r\n` or `\r`, which may be split across chunks.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseItem> {
        let mut items = Vec::new();
        self.offset += bytes.len() as u64;
        for &byte in bytes {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if line.is_empty() {
                        items.extend(self.dispatch().map(SseItem::Block));
                    } else if let Some(comment) = line.strip_prefix(b":") {
                        let comment = comment.strip_prefix(b" ").unwrap_or(comment);
                        items.push(SseItem::Comment(
                            String::from_utf8_lossy(comment).into_owned(),
                        ));
                    } else {
                        self.field(&String::from_utf8_lossy(&line));
                    }
                }
                _ => self.line.push(byte),
            }
        }
        items
    }

    /// Bytes fed so far: where the next byte sits in the stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn field(&mut self, line: &str) {
        // `name: value`; the first space after the colon is not part of the value. A line
        // without ':' is a field with no value.
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "event" => value.clone_into(&mut self.block.event),
            "data" => match &mut self.block.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.block.data = Some(value.to_owned()),
            },
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.block.retry = value.parse().ok().map(Duration::from_millis);
            }
            // WHATWG ignores an id with a NUL.
            "id" if !value.contains('\0') => self.block.id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseBlock> {
        let mut block = std::mem::take(&mut self.block);
        if block.event.is_empty() {
            "message".clone_into(&mut block.event);
        }
        (block.data.is_some() || block.retry.is_some()).then_some(block)
    }
}

/// One complete block in a buffer, borrowed: what [`next_block`] finds. No allocation, and
/// every part is a slice of the buffer, so a tool can show where each field sits and a load
/// generator can read a stream of blocks without allocating per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawBlock<'a> {
    /// The block's lines, without the blank line that ends it; they start the buffer given
    /// to [`next_block`].
    pub bytes: &'a [u8],
}

/// One line of a [`RawBlock`]: a field, or a comment (`name` empty, `value` the text after
/// the colon and the space after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawField<'a> {
    /// The field name; empty for a comment.
    pub name: &'a [u8],
    /// The value, without the one space after the colon.
    pub value: &'a [u8],
    /// Offset of the line in the block's `bytes`.
    pub at: usize,
}

/// Finds the first complete block at the start of `buffer`: the block and how many bytes it
/// took with its blank line (drop them, then look again). `None` while no blank line has come.
/// Lines end with `\n`, `\r\n` or `\r`; a `\r` at the very end of `buffer` waits for the next
/// byte, which may be its `\n`. A blank line alone gives a block with no bytes.
///
/// ```
/// use streamgate_client::sse::next_block;
///
/// let mut wire = &b": hi\n\nid: e:1\nevent: demo\ndata: {}\n\nid: e:2"[..];
/// let mut ids = Vec::new();
/// while let Some((block, used)) = next_block(wire) {
///     ids.extend(block.field(b"id"));
///     wire = &wire[used..];
/// }
/// assert_eq!((ids, wire), (vec![&b"e:1"[..]], &b"id: e:2"[..]));
/// ```
pub fn next_block(buffer: &[u8]) -> Option<(RawBlock<'_>, usize)> {
    let mut line_start = 0;
    let mut i = 0;
    while i < buffer.len() {
        let end_len = match buffer[i] {
            b'\n' => 1,
            b'\r' => match buffer.get(i + 1) {
                Some(b'\n') => 2,
                Some(_) => 1,
                None => return None,
            },
            _ => {
                i += 1;
                continue;
            }
        };
        if i == line_start {
            let block = RawBlock {
                bytes: &buffer[..line_start],
            };
            return Some((block, i + end_len));
        }
        i += end_len;
        line_start = i;
    }
    None
}

impl<'a> RawBlock<'a> {
    /// The block's lines, as fields and comments.
    pub fn fields(&self) -> impl Iterator<Item = RawField<'a>> + 'a {
        let bytes = self.bytes;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= bytes.len() {
                return None;
            }
            let rest = &bytes[at..];
            let len = rest
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .unwrap_or(rest.len());
            let line = &rest[..len];
            let line_at = at;
            at += len;
            if bytes[at..].starts_with(b"\r\n") {
                at += 2;
            } else if at < bytes.len() {
                at += 1;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => (&line[..colon], &line[colon + 1..]),
                None => (line, &line[len..]),
            };
            let value = value.strip_prefix(b" ").unwrap_or(value);
            Some(RawField {
                name,
                value,
                at: line_at,
            })
        })
    }

    /// The value of the last field called `name` (as `id:` and `event:` count), if any.
    pub fn field(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.fields()
            .filter(|f| f.name == name)
            .last()
            .map(|f| f.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_at_any_byte_and_any_line_ending() {
        let stream = b"retry: 3000\r\n\r\n: comment\n\nid: e:1\nevent: demo\ndata: a\rdata:b\r\n\n";
        let expected = vec![
            SseItem::Block(SseBlock {
                event: "message".to_owned(),
                data: None,
                retry: Some(Duration::from_secs(3)),
                id: None,
            }),
            SseItem::Comment("comment".to_owned()),
            SseItem::Block(SseBlock {
                event: "demo".to_owned(),
                data: Some("a\nb".to_owned()),
                retry: None,
                id: Some("e:1".to_owned()),
            }),
        ];
        assert_eq!(SseDecoder::default().feed(stream), expected);
        let mut bytewise = SseDecoder::default();
        let items: Vec<SseItem> = stream.iter().flat_map(|b| bytewise.feed(&[*b])).collect();
        assert_eq!(items, expected);
        assert_eq!(bytewise.offset(), stream.len() as u64);
    }

    #[test]
    fn an_unfinished_block_waits_for_its_blank_line() {
        let mut decoder = SseDecoder::default();
        assert!(decoder.feed(b"event: @gap\ndata: {}\n").is_empty());
        let items = decoder.feed(b"\n");
        assert!(matches!(&items[0], SseItem::Block(b) if b.event == "@gap"));
    }

    #[test]
    fn raw_blocks_match_the_decoder_and_wait_for_their_blank_line() {
        let stream = b"retry: 3000\r\n\r\n: comment\n\nid: e:1\nevent: demo\ndata: a\rdata:b\r\n\n";
        let mut rest = &stream[..];
        let mut blocks = Vec::new();
        while let Some((block, used)) = next_block(rest) {
            blocks.push(block.bytes);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(blocks.len(), 3);
        let block = RawBlock { bytes: blocks[2] };
        assert_eq!(block.field(b"event"), Some(&b"demo"[..]));
        let data: Vec<&[u8]> = block
            .fields()
            .filter(|f| f.name == b"data")
            .map(|f| f.value)
            .collect();
        assert_eq!(data, [&b"a"[..], b"b"]);
        let comment = RawBlock { bytes: blocks[1] };
        let field = comment.fields().next().unwrap();
        assert_eq!((field.name, field.value), (&b""[..], &b"comment"[..]));
        // Every cut before the final blank line leaves the last block waiting.
        for cut in 0..stream.len() - 1 {
            let mut count = 0;
            let mut rest = &stream[..cut];
            while let Some((_, used)) = next_block(rest) {
                count += 1;
                rest = &rest[used..];
            }
            assert!(count < 3, "{cut}");
        }
    }
}
