//! WebTransport's stream framing (`docs/PROTOCOL.md` §7), sans-IO: on every stream, in both
//! directions, a message is a `u32` big-endian length and that many bytes. A datagram carries
//! one message, unframed.
//!
//! ```
//! use streamgate_client::frame::{encode, FrameDecoder};
//!
//! let wire = [encode(b"{\"a\":1}"), encode(b"{}")].concat();
//! let mut decoder = FrameDecoder::default();
//! decoder.feed(&wire[..5]); // chunks need not follow message boundaries
//! assert_eq!(decoder.next_frame()?, None);
//! decoder.feed(&wire[5..]);
//! assert_eq!(decoder.next_frame()?, Some(b"{\"a\":1}".to_vec()));
//! assert_eq!(decoder.next_frame()?, Some(b"{}".to_vec()));
//! # Ok::<(), streamgate_client::frame::FrameError>(())
//! ```

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Largest message accepted (the gateway's events are at most about 1.4 MiB: a 1 MiB payload,
/// base64-encoded).
pub const MAX_MESSAGE: usize = 16 << 20;

/// A length prefix over [`MAX_MESSAGE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a message of {len} bytes at stream offset {offset}, over {MAX_MESSAGE}")]
pub struct FrameError {
    /// The announced length.
    pub len: usize,
    /// Where its prefix starts in the stream.
    pub offset: u64,
}

/// `message` with its length prefix.
///
/// # Panics
/// If `message` is 4 GiB or more.
pub fn encode(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).expect("a message under 4 GiB");
    let mut out = Vec::with_capacity(PREFIX_LEN + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Splits a stream into messages.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Stream offset of `buffer[0]`.
    offset: u64,
}

impl FrameDecoder {
    /// Adds bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, if one is buffered.
    ///
    /// # Errors
    /// [`FrameError`]: a length over [`MAX_MESSAGE`]; the stream cannot be read further.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(prefix) = self.buffer.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_MESSAGE {
            return Err(FrameError {
                len,
                offset: self.offset,
            });
        }
        if self.buffer.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let message = self.buffer[PREFIX_LEN..PREFIX_LEN + len].to_vec();
        self.buffer.drain(..PREFIX_LEN + len);
        self.offset += (PREFIX_LEN + len) as u64;
        Ok(Some(message))
    }

    /// Whether bytes of an unfinished message are buffered (a stream ending now is cut short).
    pub fn is_mid_message(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Stream offset of the next message's prefix.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_by_byte_and_oversized() {
        let wire = [encode(b"one"), encode(b""), encode(b"three")].concat();
        let mut decoder = FrameDecoder::default();
        let mut got = Vec::new();
        for byte in &wire {
            decoder.feed(&[*byte]);
            while let Some(m) = decoder.next_frame().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, [b"one".to_vec(), vec![], b"three".to_vec()]);
        assert!(!decoder.is_mid_message());
        assert_eq!(decoder.offset(), wire.len() as u64);
        decoder.feed(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decoder.next_frame().unwrap_err().offset, wire.len() as u64);
    }
}
