//! WebSocket frame headers (RFC 6455 §5.2), sans-IO and byte-exact: every field of a header
//! with the byte range it occupies, so that a tool can point at the bytes it explains.
//!
//! ```text
//!  byte 0           byte 1           bytes 2..       then         then
//! +-+-+-+-+-------+-+-------------+ - - - - - - - + - - - - - - + - - - - - -
//! |F|R|R|R| opcode|M| length (7)  | extended length | masking key | payload …
//! |I|S|S|S|  (4)  |A|             | 0, 2 or 8 bytes | 0 or 4      |
//! |N|V|V|V|       |S|             | (126 / 127)     |             |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - + - - - - - - + - - - - - -
//! ```
//!
//! Hand-written on purpose: tungstenite parses frames (and the adapters use it to do so), but
//! its frame header hides where each field sits in the input, and the lab's annotator and
//! `streamgate inspect` show exactly that. The parser only reads the header; what a frame
//! means (fragmentation, close codes, compression) is the reader's business.
//!
//! ```
//! use streamgate_client::ws_frame::{parse_header, LengthForm};
//!
//! // RFC 6455 §5.7: a single-frame masked text message, "Hello".
//! let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
//! let header = parse_header(&frame)?;
//! assert!(header.fin && header.opcode == 0x1);
//! assert_eq!((header.payload_len, header.length_form), (5, LengthForm::Short));
//! assert_eq!(header.mask_range(), Some(2..6));
//! assert_eq!(header.payload_offset(), 6);
//! let mut payload = frame[6..].to_vec();
//! header.unmask(&mut payload, 0);
//! assert_eq!(payload, b"Hello");
//! # Ok::<(), streamgate_client::ws_frame::HeaderError>(())
//! ```

use std::ops::Range;

/// The longest header: 2 bytes, an 8-byte length, a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload that fits the 7-bit length field.
pub const MAX_SHORT_LEN: u64 = 125;

/// How the payload length is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthForm {
    /// In the low 7 bits of byte 1 (0–125).
    Short,
    /// 126 in the 7-bit field, then 2 bytes, big-endian.
    U16,
    /// 127 in the 7-bit field, then 8 bytes, big-endian, top bit 0.
    U64,
}

impl LengthForm {
    /// Bytes of the extended length after byte 1: 0, 2 or 8.
    pub fn extended_len(self) -> usize {
        match self {
            Self::Short => 0,
            Self::U16 => 2,
            Self::U64 => 8,
        }
    }

    /// The shortest form for `len`, which RFC 6455 §5.2 requires a sender to use.
    pub fn minimal_for(len: u64) -> Self {
        match len {
            0..=MAX_SHORT_LEN => Self::Short,
            126..=0xffff => Self::U16,
            _ => Self::U64,
        }
    }
}

/// One parsed frame header. Byte ranges are offsets from the first byte of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN (bit 7 of byte 0): the last frame of its message.
    pub fin: bool,
    /// RSV1 (bit 6): a compressed message under permessage-deflate (RFC 7692).
    pub rsv1: bool,
    /// RSV2 (bit 5): defined by no extension streamgate knows.
    pub rsv2: bool,
    /// RSV3 (bit 4): likewise.
    pub rsv3: bool,
    /// The opcode (low 4 bits of byte 0), reserved values included.
    pub opcode: u8,
    /// The low 7 bits of byte 1: the length, or 126 / 127 for the extended forms.
    pub length_field: u8,
    /// How the length is written.
    pub length_form: LengthForm,
    /// The payload length the header declares.
    pub payload_len: u64,
    /// The masking key (MASK bit, bit 7 of byte 1, set): client-to-server frames carry one.
    pub mask: Option<[u8; 4]>,
}

/// Why no header could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The input ends inside the header.
    #[error("a frame header of {needed} bytes, {have} here: {} more needed", needed - have)]
    Truncated {
        /// Bytes the header takes (2 when even byte 1 is missing).
        needed: usize,
        /// Bytes there are.
        have: usize,
    },
    /// A 64-bit length with its most significant bit set (RFC 6455 §5.2 requires it 0).
    #[error("a 64-bit payload length with its top bit set ({len}): no frame is that long")]
    LengthTopBit {
        /// The length as written.
        len: u64,
    },
}

/// Reads the frame header at the start of `frame` (which may hold more: the payload, further
/// frames). The payload need not be there.
pub fn parse_header(frame: &[u8]) -> Result<FrameHeader, HeaderError> {
    let (b0, b1) = match frame {
        [b0, b1, ..] => (*b0, *b1),
        _ => {
            return Err(HeaderError::Truncated {
                needed: 2,
                have: frame.len(),
            })
        }
    };
    let length_field = b1 & 0x7f;
    let length_form = match length_field {
        126 => LengthForm::U16,
        127 => LengthForm::U64,
        _ => LengthForm::Short,
    };
    let masked = b1 & 0x80 != 0;
    let length_end = 2 + length_form.extended_len();
    let needed = length_end + if masked { 4 } else { 0 };
    if frame.len() < needed {
        return Err(HeaderError::Truncated {
            needed,
            have: frame.len(),
        });
    }
    let extended = &frame[2..length_end];
    let payload_len = match length_form {
        LengthForm::Short => u64::from(length_field),
        LengthForm::U16 => u64::from(u16::from_be_bytes([extended[0], extended[1]])),
        LengthForm::U64 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(extended);
            u64::from_be_bytes(be)
        }
    };
    if payload_len >> 63 != 0 {
        return Err(HeaderError::LengthTopBit { len: payload_len });
    }
    let mask = masked.then(|| {
        let mut key = [0u8; 4];
        key.copy_from_slice(&frame[length_end..needed]);
        key
    });
    let first_byte_bit = |bit: u8| b0 & (0x80 >> bit) != 0;
    Ok(FrameHeader {
        fin: first_byte_bit(0),
        rsv1: first_byte_bit(1),
        rsv2: first_byte_bit(2),
        rsv3: first_byte_bit(3),
        opcode: b0 & 0x0f,
        length_field,
        length_form,
        payload_len,
        mask,
    })
}

impl FrameHeader {
    /// Byte 0: FIN, RSV1–3 and the opcode.
    pub const FIRST_BYTE: Range<usize> = 0..1;
    /// Byte 1: the MASK bit and the 7-bit length.
    pub const SECOND_BYTE: Range<usize> = 1..2;

    /// The extended length (empty for [`LengthForm::Short`]).
    pub fn extended_length_range(&self) -> Range<usize> {
        2..self.length_end()
    }

    /// Where the length ends: 2, 4 or 10.
    pub fn length_end(&self) -> usize {
        2 + self.length_form.extended_len()
    }

    /// The masking key, when there is one.
    pub fn mask_range(&self) -> Option<Range<usize>> {
        let at = self.length_end();
        self.mask.map(|_| at..at + 4)
    }

    /// Bytes of the header: where the payload starts.
    pub fn payload_offset(&self) -> usize {
        self.length_end() + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Bytes of the whole frame, header and payload (a `u64`: the length is the sender's
    /// claim).
    pub fn frame_len(&self) -> u64 {
        // The top bit of `payload_len` is 0, so this cannot overflow.
        self.payload_offset() as u64 + self.payload_len
    }

    /// Close (0x8), ping (0x9), pong (0xA) and the reserved 0xB–0xF.
    pub fn is_control(&self) -> bool {
        self.opcode >= 0x8
    }

    /// Whether the length is written in its shortest form, as a sender must.
    pub fn is_minimal_length(&self) -> bool {
        self.length_form == LengthForm::minimal_for(self.payload_len)
    }

    /// Unmasks (or masks: the same XOR) `payload` in place, whose first byte is byte
    /// `payload_at` of the payload (for a payload read in pieces). Without a key, nothing.
    pub fn unmask(&self, payload: &mut [u8], payload_at: u64) {
        if let Some(key) = self.mask {
            apply_mask(key, payload, payload_at);
        }
    }
}

/// XORs `data`, which starts at byte `offset` of a payload, with `key` (RFC 6455 §5.3).
pub fn apply_mask(key: [u8; 4], data: &mut [u8], offset: u64) {
    let start = (offset % 4) as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(start + i) % 4];
    }
}

/// A frame header with FIN set to `fin`, no RSV bit, and the length in its shortest form.
/// Apply the same `mask` to the payload ([`apply_mask`]) before sending it.
pub fn encode_header(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload_len: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(MAX_HEADER_LEN);
    header.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match LengthForm::minimal_for(payload_len) {
        LengthForm::Short => header.push(mask_bit | payload_len as u8),
        LengthForm::U16 => {
            header.push(mask_bit | 126);
            header.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        LengthForm::U64 => {
            header.push(mask_bit | 127);
            header.extend_from_slice(&payload_len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        header.extend_from_slice(&key);
    }
    header
}

/// A whole client frame (RFC 6455 §5.3): FIN set to `fin`, the header of [`encode_header`] with
/// `key`, and `payload` masked with it.
pub fn encode_masked(fin: bool, opcode: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut frame = encode_header(fin, opcode, Some(key), payload.len() as u64);
    let payload_at = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(key, &mut frame[payload_at..], 0);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_frame_is_the_rfc_6455_5_7_example() {
        // "A single-frame masked text message containing "Hello"".
        let frame = encode_masked(true, 0x1, [0x37, 0xfa, 0x21, 0x3d], b"Hello");
        assert_eq!(
            frame,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn rfc_6455_5_7_examples() {
        let unmasked = parse_header(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']).unwrap();
        assert!(unmasked.fin && !unmasked.rsv1 && unmasked.mask.is_none());
        assert_eq!((unmasked.opcode, unmasked.payload_len), (1, 5));
        assert_eq!(unmasked.payload_offset(), 2);
        assert_eq!(unmasked.mask_range(), None);
        assert_eq!(unmasked.frame_len(), 7);

        let first_fragment = parse_header(&[0x01, 0x03, b'H', b'e', b'l']).unwrap();
        assert!(!first_fragment.fin);
        let ping = parse_header(&[0x89, 0x05]).unwrap();
        assert!(ping.is_control() && ping.opcode == 0x9);

        let masked_pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let header = parse_header(&masked_pong).unwrap();
        assert_eq!(header.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(header.mask_range(), Some(2..6));
        let mut payload = masked_pong[6..].to_vec();
        header.unmask(&mut payload, 0);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn the_three_length_forms_and_their_offsets() {
        let short = parse_header(&[0x82, 0x7d]).unwrap();
        assert_eq!(
            (short.length_form, short.payload_len),
            (LengthForm::Short, 125)
        );
        assert_eq!(short.extended_length_range(), 2..2);

        // RFC 6455 §5.7: 256 bytes in the 16-bit form.
        let medium = parse_header(&[0x82, 0x7e, 0x01, 0x00]).unwrap();
        assert_eq!(
            (medium.length_form, medium.payload_len),
            (LengthForm::U16, 256)
        );
        assert_eq!(medium.extended_length_range(), 2..4);
        assert_eq!(medium.payload_offset(), 4);

        // And 64 KiB in the 64-bit form, masked.
        let long = parse_header(&[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]).unwrap();
        assert_eq!(
            (long.length_form, long.payload_len),
            (LengthForm::U64, 65536)
        );
        assert_eq!(long.extended_length_range(), 2..10);
        assert_eq!(long.mask_range(), Some(10..14));
        assert_eq!(long.payload_offset(), MAX_HEADER_LEN);
        assert_eq!(long.frame_len(), 65536 + 14);
        assert!(short.is_minimal_length() && medium.is_minimal_length());
        assert!(long.is_minimal_length());
    }

    #[test]
    fn non_minimal_lengths_parse_and_are_flagged() {
        let five_in_16 = parse_header(&[0x82, 0x7e, 0x00, 0x05]).unwrap();
        assert_eq!(five_in_16.payload_len, 5);
        assert!(!five_in_16.is_minimal_length());
        let small_in_64 = parse_header(&[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff]).unwrap();
        assert!(!small_in_64.is_minimal_length());
    }

    #[test]
    fn rsv_bits_and_reserved_opcodes_are_reported_as_read() {
        let header = parse_header(&[0xf3, 0x00]).unwrap();
        assert!(header.rsv1 && header.rsv2 && header.rsv3);
        assert_eq!(header.opcode, 0x3);
    }

    #[test]
    fn truncated_headers_say_how_much_is_missing() {
        assert_eq!(
            parse_header(&[]),
            Err(HeaderError::Truncated { needed: 2, have: 0 })
        );
        assert_eq!(
            parse_header(&[0x81]),
            Err(HeaderError::Truncated { needed: 2, have: 1 })
        );
        assert_eq!(
            parse_header(&[0x82, 0x7e, 0x01]),
            Err(HeaderError::Truncated { needed: 4, have: 3 })
        );
        let error = parse_header(&[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1]).unwrap_err();
        assert_eq!(
            error,
            HeaderError::Truncated {
                needed: 14,
                have: 11
            }
        );
        assert_eq!(
            error.to_string(),
            "a frame header of 14 bytes, 11 here: 3 more needed"
        );
    }

    #[test]
    fn a_64_bit_length_with_its_top_bit_set_is_refused() {
        let error = parse_header(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(error, HeaderError::LengthTopBit { len: 1 << 63 });
    }

    #[test]
    fn masking_follows_the_payload_offset() {
        let key = [1, 2, 3, 4];
        let mut whole = *b"streamgate";
        apply_mask(key, &mut whole, 0);
        let mut pieces = *b"streamgate";
        let (head, tail) = pieces.split_at_mut(3);
        apply_mask(key, head, 0);
        apply_mask(key, tail, 3);
        assert_eq!(whole, pieces);
        apply_mask(key, &mut whole, 0);
        assert_eq!(&whole, b"streamgate");
    }

    #[test]
    fn encoded_headers_parse_back() {
        for len in [0, 125, 126, 0xffff, 0x1_0000] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let bytes = encode_header(true, 0x2, mask, len);
                let header = parse_header(&bytes).unwrap();
                assert_eq!(bytes.len(), header.payload_offset());
                assert_eq!((header.payload_len, header.mask), (len, mask));
                assert!(header.fin && header.is_minimal_length());
            }
        }
    }
}
