//! HTTP/1.1, sans-IO: response heads through `httparse` with the byte range of every part,
//! the body's framing, a chunked-body decoder and a request writer. Enough for the gateway's
//! SSE stream, long polls, `POST /publish` and `GET /wt/cert-hash`, and byte-exact for tools
//! that show what came on the wire.
//!
//! ```
//! use streamgate_client::h1::{BodyFraming, ChunkedDecoder, ResponseHead};
//!
//! let wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
//! let head = ResponseHead::parse(wire)?.expect("a whole head");
//! assert_eq!((head.status, head.header("content-type")), (200, Some("text/event-stream")));
//! assert_eq!(head.headers[0].value_at, 31..48); // where the value sits in `wire`
//! assert_eq!(head.framing(), BodyFraming::Chunked);
//! let mut body = Vec::new();
//! let mut chunked = ChunkedDecoder::default();
//! chunked.feed(&wire[head.len..], &mut body)?;
//! assert_eq!((body.as_slice(), chunked.is_done()), (&b"hello"[..], true));
//! # Ok::<(), streamgate_client::h1::H1Error>(())
//! ```

use std::ops::Range;

/// Most headers a response head may have.
pub const MAX_HEADERS: usize = 64;

/// Longest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// A malformed response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum H1Error {
    /// The head does not parse (httparse's reason).
    #[error("a malformed HTTP/1.1 response head: {0}")]
    Head(String),
    /// The head is over [`MAX_HEAD`] bytes.
    #[error("an HTTP/1.1 response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// A malformed chunk of a chunked body, at this offset of the body.
    #[error("a malformed chunked body at byte {0}")]
    Chunk(u64),
}

/// One header, with where its name and value sit in the parsed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name, lowercased.
    pub name: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Byte range of the name.
    pub name_at: Range<usize>,
    /// Byte range of the value.
    pub value_at: Range<usize>,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers, in order.
    pub headers: Vec<Header>,
    /// Length of the head, through the blank line: the body starts at this offset.
    pub len: usize,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (1xx, 204, 304).
    Empty,
    /// `content-length` bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the connection closes.
    UntilClose,
}

impl ResponseHead {
    /// Parses a head from the start of `bytes`: `None` while it is incomplete.
    ///
    /// # Errors
    /// [`H1Error`]: the bytes are not an HTTP/1.x response head, or it is too large.
    pub fn parse(bytes: &[u8]) -> Result<Option<Self>, H1Error> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if bytes.len() > MAX_HEAD => {
                return Err(H1Error::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(H1Error::Head(e.to_string())),
        };
        let base = bytes.as_ptr() as usize;
        let at = |part: &[u8]| {
            let start = part.as_ptr() as usize - base;
            start..start + part.len()
        };
        Ok(Some(Self {
            version: response.version.unwrap_or(1),
            status: response.code.unwrap_or_default(),
            reason: response.reason.unwrap_or_default().to_owned(),
            headers: response
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.to_ascii_lowercase(),
                    value: h.value.to_vec(),
                    name_at: at(h.name.as_bytes()),
                    value_at: at(h.value),
                })
                .collect(),
            len,
        }))
    }

    /// The first header called `name` (lowercase), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| std::str::from_utf8(&h.value).ok())
            .map(str::trim)
    }

    /// How the body ends (RFC 9112 §6.3), for a response to a request other than HEAD.
    pub fn framing(&self) -> BodyFraming {
        if self.status < 200 || self.status == 204 || self.status == 304 {
            return BodyFraming::Empty;
        }
        let chunked = self.header("transfer-encoding").is_some_and(|te| {
            te.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        });
        if chunked {
            return BodyFraming::Chunked;
        }
        match self.header("content-length").and_then(|n| n.parse().ok()) {
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::UntilClose,
        }
    }

    /// Whether the connection can carry another request after this response.
    pub fn keeps_alive(&self) -> bool {
        let close = self
            .header("connection")
            .is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        !close && self.version == 1 && self.framing() != BodyFraming::UntilClose
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the size line (hex digits, then extensions to the line's end).
    #[default]
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, until an empty one.
    Trailers,
    /// The body is complete.
    Done,
}

/// Decodes a `transfer-encoding: chunked` body (RFC 9112 §7.1), in pieces of any size.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
    size: Option<u64>,
    /// Body bytes consumed so far.
    offset: u64,
}

impl ChunkedDecoder {
    /// Decodes `input`, appending the data to `out`; returns the bytes of `input` consumed
    /// (less than all only when the body ended: what follows is the next response).
    ///
    /// # Errors
    /// [`H1Error::Chunk`]: a malformed size line or a missing CRLF.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, H1Error> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.offset += n as u64;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailers => {
                    let byte = input[i];
                    i += 1;
                    self.offset += 1;
                    if byte != b'\n' {
                        if self.line.len() > 4096 {
                            return Err(H1Error::Chunk(self.offset));
                        }
                        self.line.push(byte);
                        continue;
                    }
                    // The line buffer is kept, not taken: a long stream of small chunks (an
                    // SSE body) costs no allocation per chunk.
                    let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                    self.state = match self.state {
                        ChunkState::Size => {
                            let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                            let size = std::str::from_utf8(digits)
                                .ok()
                                .and_then(|d| u64::from_str_radix(d.trim(), 16).ok());
                            self.line.clear();
                            let size = size.ok_or(H1Error::Chunk(self.offset))?;
                            self.size = Some(size);
                            if size == 0 {
                                ChunkState::Trailers
                            } else {
                                ChunkState::Data(size)
                            }
                        }
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err(H1Error::Chunk(self.offset)),
                        _ if line.is_empty() => ChunkState::Done,
                        other => other,
                    };
                    self.line.clear();
                }
            }
        }
        Ok(i)
    }

    /// Whether the last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// Writes a request: `method target HTTP/1.1`, `host`, the headers, `content-length` when
/// there is a body, the blank line and the body.
pub fn request(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: {host}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Percent-encodes a query parameter value: everything but unreserved characters and `:` and
/// `,`, which a query may hold as they are (RFC 3986 §3.4) and which ids (`epoch:seq`) and
/// topic lists (`a,b`) are made of.
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':' | b',') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_partial_complete_and_framing() {
        let wire =
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\nconnection: close\r\n\r\nhello";
        for cut in 0..wire.len() - 5 {
            assert_eq!(ResponseHead::parse(&wire[..cut]).unwrap(), None, "{cut}");
        }
        let head = ResponseHead::parse(wire).unwrap().unwrap();
        assert_eq!((head.status, head.reason.as_str()), (400, "Bad Request"));
        assert_eq!(head.len, wire.len() - 5);
        assert_eq!(head.framing(), BodyFraming::Length(5));
        assert!(!head.keeps_alive());
        assert_eq!(&wire[head.headers[0].name_at.clone()], b"Content-Length");
        assert_eq!(head.headers[0].name, "content-length");
        let sse = ResponseHead::parse(b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(sse.framing(), BodyFraming::UntilClose);
        assert!(ResponseHead::parse(b"NOT HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_in_any_pieces() {
        let wire =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let mut decoder = ChunkedDecoder::default();
            let mut out = Vec::new();
            let mut used = 0;
            for piece in wire.chunks(step) {
                used += decoder.feed(piece, &mut out).unwrap();
                if decoder.is_done() {
                    break;
                }
            }
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
            assert!(decoder.is_done());
            assert_eq!(used, wire.len() - 4, "{step}");
        }
        let mut decoder = ChunkedDecoder::default();
        assert!(decoder.feed(b"zz\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn requests_and_query_values() {
        assert_eq!(
            request("POST", "/publish/a", "h:1", &[("x", "y")], b"{}"),
            b"POST /publish/a HTTP/1.1\r\nhost: h:1\r\nx: y\r\ncontent-length: 2\r\n\r\n{}"
        );
        assert_eq!(encode_query_value("e:4,a b&"), "e:4,a%20b%26");
    }
}
