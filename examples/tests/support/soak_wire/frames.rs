//! WebTransport's stream framing (`docs/PROTOCOL.md` §7): on every stream, a message is a
//! `u32` big-endian length and that many bytes.

use wtransport::RecvStream;

/// Largest message accepted on a stream (the gateway's events are at most about 1.4 MiB: a
/// 1 MiB payload, base64-encoded).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Reads length-prefixed messages (`u32` big-endian length, then the message) from a stream.
///
/// # Cancel safety
///
/// [`FrameReader::next`] is cancel-safe, so it can race other branches in `tokio::select!`:
/// its only await is one `read`, which either returns bytes or takes none, and a message
/// received in pieces is kept in `self` until it is whole.
#[derive(Debug)]
pub struct FrameReader {
    stream: RecvStream,
    buffer: Vec<u8>,
}

impl FrameReader {
    /// Reads messages from `stream`.
    pub fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The next message; `None` when the stream ends cleanly between messages.
    ///
    /// # Errors
    /// A message over [`MAX_MESSAGE`], a stream that ends inside a message, a failed read.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(prefix) = self.buffer.first_chunk::<4>() {
                let len = u32::from_be_bytes(*prefix) as usize;
                if len > MAX_MESSAGE {
                    return Err(format!("a message of {len} bytes, over {MAX_MESSAGE}"));
                }
                if self.buffer.len() >= 4 + len {
                    let message = self.buffer[4..4 + len].to_vec();
                    self.buffer.drain(..4 + len);
                    return Ok(Some(message));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(Some(n)) => self.buffer.extend_from_slice(&chunk[..n]),
                Ok(None) if self.buffer.is_empty() => return Ok(None),
                Ok(None) => return Err("a stream ended inside a message".to_owned()),
                Err(e) => return Err(format!("reading a stream: {e}")),
            }
        }
    }
}
