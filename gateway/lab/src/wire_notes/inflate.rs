//! Inflating permessage-deflate messages (RFC 7692 §7.2.2), without I/O.

use flate2::{Decompress, FlushDecompress, Status};

/// The four bytes RFC 7692 §7.2.2 has the receiver append to a message before inflating
/// it: the sender removed them, since every flushed deflate block ends with them.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The receiving side of one direction of permessage-deflate: turns each compressed
/// message (the payloads of its frames, joined) back into what was sent.
///
/// With context takeover, the LZ77 window carries over from one message to the next, so a
/// message may copy strings out of earlier ones and inflates only after all of them
/// (RFC 7692 §7.2.3.2); with `*_no_context_takeover` every message stands alone. The
/// annotator uses it to show compressed frames inflated; any reading client can too.
#[derive(Debug)]
pub struct MessageInflater {
    decompress: Decompress,
    context_takeover: bool,
    max_message: usize,
}

impl MessageInflater {
    /// An inflater that keeps the window between messages when `context_takeover`, and
    /// refuses messages that inflate to more than `max_message` bytes (a small compressed
    /// message can inflate to a huge one).
    pub fn new(context_takeover: bool, max_message: usize) -> Self {
        Self {
            // Raw deflate: permessage-deflate has no zlib header (RFC 7692 §7.2.1).
            decompress: Decompress::new(false),
            context_takeover,
            max_message,
        }
    }

    /// Whether the window carries over from one message to the next.
    pub fn context_takeover(&self) -> bool {
        self.context_takeover
    }

    /// Inflates one whole message.
    ///
    /// # Errors
    /// A description of why the data does not inflate, or is too large once inflated. The
    /// window is reset then: nothing after a failed message can be trusted to inflate.
    pub fn inflate(&mut self, compressed: &[u8]) -> Result<Vec<u8>, String> {
        if !self.context_takeover {
            self.decompress.reset(false);
        }
        let result = self.inflate_with_tail(compressed);
        if result.is_err() {
            self.decompress.reset(false);
        }
        result
    }

    fn inflate_with_tail(&mut self, compressed: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = Vec::with_capacity(compressed.len() + DEFLATE_TAIL.len());
        input.extend_from_slice(compressed);
        input.extend_from_slice(&DEFLATE_TAIL);
        let mut out = Vec::with_capacity((compressed.len() * 4).clamp(64, 64 * 1024));
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let (before_in, before_out) = (self.decompress.total_in(), self.decompress.total_out());
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|e| e.to_string())?;
            consumed += (self.decompress.total_in() - before_in) as usize;
            let progressed = self.decompress.total_in() != before_in
                || self.decompress.total_out() != before_out;
            if out.len() > self.max_message {
                return Err(format!("inflates to more than {} bytes", self.max_message));
            }
            // Done when the input is used up and the output has room left, so nothing is
            // waiting inside the inflater.
            if matches!(status, Status::StreamEnd)
                || (consumed >= input.len() && out.len() < out.capacity())
            {
                return Ok(out);
            }
            if !progressed && out.len() < out.capacity() {
                return Err("the deflate stream stops short".to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7692_examples() {
        // §7.2.3.1 "Hello"; §7.2.3.2 the same again, referring back to the first.
        let mut kept = MessageInflater::new(true, 1 << 20);
        assert_eq!(
            kept.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
                .unwrap(),
            b"Hello"
        );
        assert_eq!(
            kept.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(),
            b"Hello"
        );
        // §7.2.3.3: a stored (uncompressed) block; §7.2.3.6: an empty message.
        let mut fresh = MessageInflater::new(false, 1 << 20);
        assert_eq!(
            fresh
                .inflate(&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00])
                .unwrap(),
            b"Hello"
        );
        assert_eq!(fresh.inflate(&[0x00]).unwrap(), b"");
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        // 1 MiB of zeros compresses to about a kilobyte.
        let zeros = vec![0u8; 1 << 20];
        let mut deflate = flate2::Compress::new(flate2::Compression::best(), false);
        let mut compressed = Vec::with_capacity(1 << 16);
        deflate
            .compress_vec(&zeros, &mut compressed, flate2::FlushCompress::Sync)
            .unwrap();
        compressed.truncate(compressed.len() - 4);
        let mut small = MessageInflater::new(false, 1000);
        assert!(small
            .inflate(&compressed)
            .unwrap_err()
            .contains("more than 1000"));
        assert!(MessageInflater::new(false, 1000)
            .inflate(&[0xff; 8])
            .is_err());
    }
}
