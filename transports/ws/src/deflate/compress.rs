//! Compressing one outbound message (RFC 7692 §7.2.1), independently of every other.
//!
//! The server always negotiates `server_no_context_takeover`, so a message's compressed form
//! depends on nothing but the message: it is a pure function of the bytes, which is what lets
//! an event be compressed once and the result shared by every deflate subscriber (see
//! `session.rs`).
//!
//! The compressor's state (≈ 130 KiB with zlib's defaults, mostly its hash chains) is
//! reused through a thread-local, so it costs one per worker thread rather than one per
//! connection, and is reset after every message.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

use super::negotiate::SERVER_WINDOW_BITS;

/// The empty stored block a sync flush ends with; RFC 7692 §7.2.1 strips it from the wire
/// and the receiver puts it back.
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Messages shorter than this are sent as they are. Measured on the gateway's envelopes
/// (docs/WEBSOCKET_ENGINE.md): under ~100 bytes deflate saves a handful of bytes at best, for
/// a compressor call that costs more than the frame itself.
pub const MIN_COMPRESS_SIZE: usize = 100;

/// zlib level 6 (its default). Measured on the gateway's envelopes (docs/WEBSOCKET_ENGINE.md):
/// level 1 costs a third of the time but leaves BGP-like events ≈ 20 % larger; level 9 gains
/// nothing more. The cost is paid once per event, not per subscriber, so bytes win.
const LEVEL: u32 = 6;

thread_local! {
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// `message` compressed as one RFC 7692 message (raw deflate, 512-byte window, sync flush,
/// trailer stripped), or `None` when that would not make it smaller — the caller then sends
/// it uncompressed, RSV1 clear, which RFC 7692 allows message by message.
pub fn compress(message: &[u8]) -> Option<Bytes> {
    if message.len() < MIN_COMPRESS_SIZE {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = cell.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(LEVEL), false, SERVER_WINDOW_BITS)
        });
        let result = compress_with(compressor, message);
        // No context takeover: the next message must not refer to this one.
        compressor.reset();
        result
    })
}

fn compress_with(compressor: &mut Compress, message: &[u8]) -> Option<Bytes> {
    // Output as long as the input plus the trailer is already no gain: stop there.
    let limit = message.len() + TRAILER.len();
    let mut out = Vec::with_capacity(limit);
    let mut input = message;
    loop {
        let (in_before, out_before) = (compressor.total_in(), compressor.total_out());
        let status = compressor
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .ok()?;
        let consumed = usize::try_from(compressor.total_in() - in_before).ok()?;
        input = &input[consumed..];
        // A sync flush is complete when all input is taken and zlib stopped with room left.
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        if out.len() >= limit
            || status == Status::BufError
            || (consumed == 0 && compressor.total_out() == out_before)
        {
            return None;
        }
        out.reserve(limit - out.len());
    }
    if !out.ends_with(&TRAILER) {
        return None;
    }
    out.truncate(out.len() - TRAILER.len());
    (out.len() < message.len()).then(|| Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(compressed: &[u8]) -> Vec<u8> {
        let mut input = compressed.to_vec();
        input.extend_from_slice(&TRAILER);
        let mut inflater = Decompress::new(false);
        // Deflate expands at most 1032 times.
        let mut out = Vec::with_capacity(input.len() * 1032);
        inflater
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn round_trip_and_same_bytes_every_time() {
        let message = format!(
            r#"{{"type":"event","data":{{"pad":"{}"}}}}"#,
            "x".repeat(256)
        );
        let once = compress(message.as_bytes()).expect("compressible");
        assert!(once.len() < message.len() / 4, "{} bytes", once.len());
        assert_eq!(inflate(&once), message.as_bytes());
        // Independent messages: compressing it again gives the very same bytes.
        assert_eq!(compress(message.as_bytes()), Some(once));
    }

    /// Bytes deflate cannot shrink (xorshift64).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut seed = seed ^ 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn small_or_incompressible_messages_stay_plain() {
        assert_eq!(compress(b""), None);
        assert_eq!(compress(b"Hello"), None);
        assert_eq!(compress(&noise(4096, 1)), None);
    }

    #[test]
    fn large_messages_use_a_512_byte_window() {
        // Repeats 1000 bytes apart cannot be matched in a 512-byte window, repeats 200 bytes
        // apart can: the window really is small (a 32 KiB one would take both).
        let unit = noise(1000, 7);
        let far = unit.repeat(8);
        let near: Vec<u8> = unit[..200].repeat(40);
        let far_len = compress(&far).map_or(far.len(), |c| c.len());
        assert!(far_len > 7000, "{far_len}");
        // (zlib-rs below level 9 loses many matches in so small a window — 8000 bytes of a
        // 200-byte pattern take ≈ 3.3 KB at level 6, 0.3 KB at level 9 — but events are mostly
        // shorter than the window, where the levels differ by a few bytes.)
        let near_compressed = compress(&near).expect("compressible");
        assert!(near_compressed.len() < 4000, "{}", near_compressed.len());
        assert_eq!(inflate(&near_compressed), near);
        let big = "abc".repeat(2_000_000);
        assert!(inflate(&compress(big.as_bytes()).unwrap()) == big.as_bytes());
    }
}
