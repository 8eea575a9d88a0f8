//! The read side of permessage-deflate, as a sans-IO state machine: client bytes in,
//! bytes for tungstenite out.
//!
//! tungstenite 0.30 fails any frame with RSV1 set (`NonZeroReservedBits`), so compressed
//! messages never reach it. This machine sits between the socket and tungstenite and rewrites
//! the byte stream frame by frame:
//!
//! - a frame without RSV1 (control frames, uncompressed messages and their fragments, and
//!   every malformed frame) passes through **byte for byte**: tungstenite keeps all of its
//!   RFC 6455 checks and close codes;
//! - a compressed message (first frame with RSV1) is taken out of the stream: each fragment
//!   is unmasked and fed to the inflater as it arrives, and at its final fragment the
//!   machine appends the `00 00 ff ff` the sender stripped (RFC 7692 §7.2.2) and emits **one**
//!   frame in its place: FIN, the original opcode, RSV1 clear, masked with the key `00 00 00
//!   00` (a legal key that leaves the payload as it is). Control frames that arrive between
//!   the fragments pass through in order, so a ping is still answered at once.
//!
//! Whatever the machine must refuse it turns into a frame that makes tungstenite fail the
//! connection with the right close code, so every failure still goes through the one path
//! that sends close frames (`close.rs`):
//!
//! | failure | emitted | tungstenite's error | close |
//! | --- | --- | --- | --- |
//! | RSV1 on a control or continuation frame, a new message inside a fragmented one, an unmasked compressed frame | an empty frame with RSV2 set | `NonZeroReservedBits` | 1002 |
//! | compressed data that does not inflate | a text frame holding the byte `ff` | invalid UTF-8 | 1007 |
//! | inflated message over `max_message_size` | a frame header announcing 2^63−1 bytes | `MessageTooLong` | 1009 |
//!
//! UTF-8 validation of an inflated text message stays tungstenite's (1007), as for any
//! other text message. The [`Failure`] also carries a precise reason, which the session uses
//! in the close frame instead of tungstenite's generic one.

use flate2::{Decompress, FlushDecompress, Status};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::compress::TRAILER;

/// Why the machine failed the connection: the close code and the reason to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The close code tungstenite will fail with (so the session can tell it is ours).
    pub code: CloseCode,
    /// What went wrong, for the close frame.
    pub reason: String,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Bytes of a compressed message allowed per byte of `max_message_size`, beyond it.
/// Deflate expands incompressible data by 5 bytes per 64 KiB stored block; a fixed-Huffman
/// encoder at worst by 1/8. More than that is not compressed data but padding.
const COMPRESSED_SLACK_DIVISOR: usize = 8;

/// The inbound half of one connection's permessage-deflate.
#[derive(Debug)]
pub struct Inbound {
    max_message: usize,
    /// The client promised `client_no_context_takeover`: no message refers to an earlier
    /// one, so the inflater (and its 32 KiB window) is dropped after every message.
    no_context_takeover: bool,
    header: [u8; MAX_HEADER],
    header_len: usize,
    state: State,
    /// The compressed message being received, if any.
    message: Option<Message>,
    /// An uncompressed message is fragmented and unfinished (tungstenite is assembling it).
    plain_fragmented: bool,
    /// Created on the first compressed message; kept between messages for context takeover.
    inflater: Option<Box<Decompress>>,
    /// Bytes ready for tungstenite, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    failure: Option<Failure>,
    /// Failed in a way after which tungstenite can read nothing more: report end of stream.
    eof: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a frame header in `header`.
    Header,
    /// Copying `remaining` payload bytes through.
    Pass { remaining: u64 },
    /// Unmasking and inflating `remaining` payload bytes of a compressed message.
    Inflate {
        remaining: u64,
        mask: [u8; 4],
        /// Position in the payload, for the mask.
        at: usize,
        fin: bool,
    },
    /// Dropping `remaining` payload bytes (after a failure).
    Skip { remaining: u64 },
}

#[derive(Debug)]
struct Message {
    opcode: u8,
    inflated: Vec<u8>,
    compressed_len: usize,
    /// The sender ended the deflate stream (a block with BFINAL set, RFC 7692 §7.2.3.3):
    /// whatever follows in the message means nothing and is ignored.
    ended: bool,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    rsv1: bool,
    rsv23: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

impl Inbound {
    /// A machine for a connection whose messages may inflate to `max_message` bytes.
    pub fn new(max_message: usize, no_context_takeover: bool) -> Self {
        Self {
            max_message,
            no_context_takeover,
            header: [0; MAX_HEADER],
            header_len: 0,
            state: State::Header,
            message: None,
            plain_fragmented: false,
            inflater: None,
            out: Vec::new(),
            out_at: 0,
            failure: None,
            eof: false,
        }
    }

    /// Bytes ready for tungstenite.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_at..]
    }

    /// Marks `n` bytes of [`output`](Self::output) as delivered.
    pub fn consume(&mut self, n: usize) {
        self.out_at = (self.out_at + n).min(self.out.len());
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
            // A large inflated message should not pin its buffer for the connection's life.
            if self.out.capacity() > 64 * 1024 {
                self.out = Vec::new();
            }
        }
    }

    /// After some failures tungstenite must see the end of the stream once it has read the
    /// output (it is waiting for a payload that will never come).
    pub fn at_eof(&self) -> bool {
        self.eof && self.output().is_empty()
    }

    /// Why the machine failed the connection, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether an inflater (and its window) is currently held: for memory accounting.
    pub fn holds_inflater(&self) -> bool {
        self.inflater.is_some()
    }

    /// Takes bytes read from the client; all of `input` is consumed.
    pub fn push(&mut self, mut input: &[u8]) {
        'frames: while !input.is_empty() && !self.eof {
            match self.state {
                State::Header => {
                    let taken = self.take_header_bytes(input);
                    input = &input[taken..];
                }
                State::Pass { remaining } => {
                    let n = clamp(remaining, input.len());
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = next(State::Pass {
                        remaining: remaining - n as u64,
                    });
                }
                State::Skip { remaining } => {
                    let n = clamp(remaining, input.len());
                    input = &input[n..];
                    self.state = next(State::Skip {
                        remaining: remaining - n as u64,
                    });
                }
                State::Inflate {
                    remaining,
                    mask,
                    at,
                    fin,
                } => {
                    let n = clamp(remaining, input.len());
                    let mut chunk = [0u8; 1024];
                    let mut done = 0;
                    while done < n {
                        let len = (n - done).min(chunk.len());
                        for (i, (dst, src)) in chunk[..len]
                            .iter_mut()
                            .zip(&input[done..done + len])
                            .enumerate()
                        {
                            *dst = src ^ mask[(at + done + i) % 4];
                        }
                        if let Err(failure) = self.inflate(&chunk[..len], FlushDecompress::None) {
                            let left = remaining - (done + len) as u64;
                            self.fail(failure, left);
                            input = &input[done + len..];
                            continue 'frames;
                        }
                        done += len;
                    }
                    input = &input[n..];
                    let remaining = remaining - n as u64;
                    self.state = State::Inflate {
                        remaining,
                        mask,
                        at: at + n,
                        fin,
                    };
                    if remaining == 0 {
                        self.state = State::Header;
                        if fin {
                            self.finish_message();
                        }
                    }
                }
            }
        }
    }

    /// Copies header bytes until the header is complete, then acts on it. Returns how many
    /// bytes of `input` were taken.
    fn take_header_bytes(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            let need = header_len(&self.header[..self.header_len]);
            if self.header_len >= need {
                break;
            }
            let Some(&b) = input.get(taken) else {
                return taken;
            };
            self.header[self.header_len] = b;
            self.header_len += 1;
            taken += 1;
        }
        let raw_len = self.header_len;
        self.header_len = 0;
        let header = parse_header(&self.header[..raw_len]);
        self.on_header(header, raw_len);
        taken
    }

    fn on_header(&mut self, header: Header, raw_len: usize) {
        if self.failure.is_some() {
            // After a failure only control frames still matter: the client's close frame
            // completes the closing handshake. Everything else is dropped.
            if is_control(header.opcode) && !header.rsv1 {
                self.pass(header, raw_len);
            } else {
                self.state = next(State::Skip {
                    remaining: header.len,
                });
            }
            return;
        }
        // Reserved bits other than RSV1 and reserved opcodes mean nothing to us: tungstenite
        // fails them (1002) wherever they appear.
        if header.rsv23 || !matches!(header.opcode, 0x0..=0x2 | 0x8..=0xA) {
            return self.pass(header, raw_len);
        }
        if is_control(header.opcode) {
            if header.rsv1 {
                return self.protocol_error("RSV1 set on a control frame", header.len);
            }
            return self.pass(header, raw_len);
        }
        if header.opcode == OP_CONTINUATION {
            if header.rsv1 {
                return self.protocol_error("RSV1 set on a continuation frame", header.len);
            }
            if self.message.is_some() {
                return self.compressed_frame(header);
            }
            if header.fin {
                self.plain_fragmented = false;
            }
            return self.pass(header, raw_len);
        }
        // A text or binary frame: the first of a message.
        if self.message.is_some() {
            return self.protocol_error(
                "a new message began inside a fragmented compressed message",
                header.len,
            );
        }
        if !header.rsv1 {
            self.plain_fragmented = !header.fin;
            return self.pass(header, raw_len);
        }
        if self.plain_fragmented {
            return self.protocol_error(
                "a compressed message began inside a fragmented message",
                header.len,
            );
        }
        self.message = Some(Message {
            opcode: header.opcode,
            inflated: Vec::new(),
            compressed_len: 0,
            ended: false,
        });
        self.compressed_frame(header);
    }

    /// Passes a frame header on; its payload follows.
    fn pass(&mut self, header: Header, raw_len: usize) {
        self.out.extend_from_slice(&self.header[..raw_len]);
        self.state = next(State::Pass {
            remaining: header.len,
        });
    }

    /// A frame of the compressed message in progress.
    fn compressed_frame(&mut self, header: Header) {
        let Some(mask) = header.mask else {
            return self.protocol_error("unmasked client frame", header.len);
        };
        let Some(message) = self.message.as_mut() else {
            return;
        };
        let limit = self.max_message + self.max_message / COMPRESSED_SLACK_DIVISOR + 64;
        let total = u64::try_from(message.compressed_len)
            .unwrap_or(u64::MAX)
            .saturating_add(header.len);
        if total > limit as u64 {
            let reason = format!(
                "compressed message over {limit} bytes (limit {} inflated)",
                self.max_message
            );
            return self.fail(too_big(reason), header.len);
        }
        message.compressed_len = total as usize;
        self.state = State::Inflate {
            remaining: header.len,
            mask,
            at: 0,
            fin: header.fin,
        };
        if header.len == 0 {
            self.state = State::Header;
            if header.fin {
                self.finish_message();
            }
        }
    }

    /// Feeds deflate data of the current message to the inflater, appending what it
    /// produces to the message, within `max_message`.
    fn inflate(&mut self, mut input: &[u8], flush: FlushDecompress) -> Result<(), Failure> {
        let Some(message) = self.message.as_mut() else {
            return Ok(());
        };
        let inflater = self
            .inflater
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, 15)));
        let mut scratch = [0u8; 8192];
        loop {
            if message.ended {
                return Ok(());
            }
            // Room for one byte over the limit, which is how going over is noticed.
            let room = (self.max_message - message.inflated.len() + 1).min(scratch.len());
            let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(input, &mut scratch[..room], flush)
                .map_err(|_| corrupt("compressed data is corrupt"))?;
            let consumed = (inflater.total_in() - in_before) as usize;
            let produced = (inflater.total_out() - out_before) as usize;
            input = &input[consumed..];
            message.inflated.extend_from_slice(&scratch[..produced]);
            if message.inflated.len() > self.max_message {
                return Err(too_big(format!(
                    "inflated message over the limit of {} bytes",
                    self.max_message
                )));
            }
            match status {
                Status::StreamEnd => message.ended = true,
                Status::Ok | Status::BufError => {
                    // Done when all input is taken and the inflater stopped with room left.
                    if input.is_empty() && produced < room {
                        return Ok(());
                    }
                    if consumed == 0 && produced == 0 {
                        return Err(corrupt("compressed data is corrupt"));
                    }
                }
            }
        }
    }

    /// The final fragment is in: restore the trailer, emit the inflated message as one frame.
    fn finish_message(&mut self) {
        if let Err(failure) = self.inflate(&TRAILER, FlushDecompress::Sync) {
            return self.fail(failure, 0);
        }
        let Some(message) = self.message.take() else {
            return;
        };
        if message.ended || self.no_context_takeover {
            // Without context takeover the next message starts from an empty window; after
            // the end of a deflate stream zlib can only start a new one.
            self.inflater = None;
        }
        let len = message.inflated.len();
        self.out.push(0x80 | message.opcode);
        if len < 126 {
            self.out.push(0x80 | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            self.out.push(0x80 | 126);
            self.out.extend_from_slice(&len.to_be_bytes());
        } else {
            self.out.push(0x80 | 127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // Mask key 0: the payload is sent as it is and tungstenite, which insists client
        // frames be masked, unmasks it to itself.
        self.out.extend_from_slice(&[0; 4]);
        self.out.extend_from_slice(&message.inflated);
    }

    fn protocol_error(&mut self, reason: &str, payload_left: u64) {
        self.fail(
            Failure {
                code: CloseCode::Protocol,
                reason: format!("permessage-deflate: {reason}"),
            },
            payload_left,
        );
    }

    /// Emits the frame that makes tungstenite fail with `failure.code`, and drops the rest of
    /// the current frame's payload.
    fn fail(&mut self, failure: Failure, payload_left: u64) {
        self.message = None;
        self.inflater = None;
        match failure.code {
            CloseCode::Invalid => {
                // FIN text, masked (key 0), one byte that is never UTF-8.
                self.out
                    .extend_from_slice(&[0x80 | OP_TEXT, 0x81, 0, 0, 0, 0, 0xff]);
            }
            CloseCode::Size => {
                // A header announcing 2^63−1 bytes: over any frame limit. tungstenite then
                // waits for that payload forever, so after it the stream ends.
                self.out.extend_from_slice(&[0x80 | OP_BINARY, 0xff]);
                self.out.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
                self.out.extend_from_slice(&[0; 4]);
                self.eof = true;
            }
            _ => {
                // FIN, RSV2, text, masked, empty.
                self.out
                    .extend_from_slice(&[0x80 | 0x20 | OP_TEXT, 0x80, 0, 0, 0, 0]);
            }
        }
        self.failure = Some(failure);
        self.state = next(State::Skip {
            remaining: payload_left,
        });
    }
}

fn corrupt(reason: &str) -> Failure {
    Failure {
        code: CloseCode::Invalid,
        reason: format!("permessage-deflate: {reason}"),
    }
}

fn too_big(reason: String) -> Failure {
    Failure {
        code: CloseCode::Size,
        reason,
    }
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x8 != 0
}

/// `remaining` clamped to `available` (`remaining` may exceed `usize` on 32-bit targets).
fn clamp(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// A payload state that is already over goes back to reading headers.
fn next(state: State) -> State {
    match state {
        State::Pass { remaining: 0 } | State::Skip { remaining: 0 } => State::Header,
        other => other,
    }
}

/// How long the header starting with `bytes` is (2 until the second byte is known).
fn header_len(bytes: &[u8]) -> usize {
    let Some(&second) = bytes.get(1) else {
        return 2;
    };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

fn parse_header(bytes: &[u8]) -> Header {
    let (first, second) = (bytes[0], bytes[1]);
    let (len, mask_at) = match second & 0x7f {
        126 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 => {
            let mut len = [0; 8];
            len.copy_from_slice(&bytes[2..10]);
            (u64::from_be_bytes(len), 10)
        }
        len => (u64::from(len), 2),
    };
    let mask = (second & 0x80 != 0).then(|| {
        let mut mask = [0; 4];
        mask.copy_from_slice(&bytes[mask_at..mask_at + 4]);
        mask
    });
    Header {
        fin: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        rsv23: first & 0x30 != 0,
        opcode: first & 0x0f,
        mask,
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame; `first` holds FIN, RSV and the opcode.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    /// What tungstenite receives for one inflated message: key-0 masked, FIN, RSV1 clear.
    fn emitted(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload);
        out
    }

    /// A client compressor with context takeover (as most clients run).
    struct Client(Compress);

    impl Client {
        fn new() -> Self {
            Self(Compress::new(Compression::default(), false))
        }

        fn compress(&mut self, message: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(message.len() + 64);
            self.0
                .compress_vec(message, &mut out, FlushCompress::Sync)
                .unwrap();
            assert!(out.ends_with(&TRAILER));
            out.truncate(out.len() - 4);
            out
        }
    }

    /// Runs `input` through a fresh machine, byte by byte and all at once, and checks both
    /// give the same output; returns it and the machine.
    fn run(input: &[u8], max: usize, no_context_takeover: bool) -> (Vec<u8>, Inbound) {
        let mut whole = Inbound::new(max, no_context_takeover);
        whole.push(input);
        let out = whole.output().to_vec();
        let mut bytewise = Inbound::new(max, no_context_takeover);
        let mut out_bytewise = Vec::new();
        for b in input {
            bytewise.push(std::slice::from_ref(b));
            out_bytewise.extend_from_slice(bytewise.output());
            let n = bytewise.output().len();
            bytewise.consume(n);
        }
        assert_eq!(out, out_bytewise, "whole vs byte by byte");
        assert_eq!(whole.failure(), bytewise.failure());
        (out, whole)
    }

    #[test]
    fn rfc7692_hello_example() {
        // RFC 7692 §7.2.3.1: "Hello" compressed is f2 48 cd c9 c9 07 00, sent (unmasked, from
        // a server) as c1 07 f2 48 cd c9 c9 07 00. The same bytes, masked, from a client:
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let input = frame(0xc1, &hello);
        assert_eq!(&input[..2], &[0xc1, 0x87]);
        let (out, machine) = run(&input, 1024, false);
        assert_eq!(out, emitted(OP_TEXT, b"Hello"));
        assert_eq!(machine.failure(), None);
        // Unmasked, exactly as the RFC prints it, is refused: clients must mask.
        let (out, machine) = run(
            &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            1024,
            false,
        );
        assert_eq!(out, [0xa1, 0x80, 0, 0, 0, 0]);
        assert_eq!(machine.failure().unwrap().code, CloseCode::Protocol);
    }

    #[test]
    fn rfc7692_fragmented_hello_with_a_ping_between() {
        // §7.2.3.1's second example: "Hello" compressed and split in two frames.
        let mut input = frame(0x41, &[0xf2, 0x48, 0xcd]);
        input.extend(frame(0x89, b"ping"));
        input.extend(frame(0x80, &[0xc9, 0xc9, 0x07, 0x00]));
        let (out, _) = run(&input, 1024, false);
        let mut expected = frame(0x89, b"ping");
        expected.extend(emitted(OP_TEXT, b"Hello"));
        assert_eq!(out, expected);
    }

    #[test]
    fn rfc7692_no_compression_block_and_bfinal() {
        // §7.2.3.2: "Hello" in a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        let (out, _) = run(&frame(0xc1, &stored), 1024, false);
        assert_eq!(out, emitted(OP_TEXT, b"Hello"));
        // §7.2.3.3: a block with BFINAL set; the appended trailer is then ignored, and the
        // next message starts a new stream.
        let mut input = frame(0xc1, &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        input.extend(frame(0xc1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]));
        // Bytes after the final block mean nothing and are ignored.
        input.extend(frame(
            0xc1,
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
        ));
        let (out, machine) = run(&input, 1024, false);
        assert_eq!(out, emitted(OP_TEXT, b"Hello").repeat(3));
        assert_eq!(machine.failure(), None);
        // §7.2.3.6: an empty message is the single byte 00.
        let (out, _) = run(&frame(0xc2, &[0x00]), 1024, false);
        assert_eq!(out, emitted(OP_BINARY, b""));
    }

    #[test]
    fn uncompressed_frames_pass_byte_for_byte() {
        let mut input = frame(0x81, b"plain");
        input.extend(frame(0x01, b"fra"));
        input.extend(frame(0x8a, b""));
        input.extend(frame(0x80, b"gment"));
        input.extend(frame(0x88, &[0x03, 0xe8]));
        let big = vec![b'x'; 70_000];
        input.extend(frame(0x82, &big));
        let (out, machine) = run(&input, 1 << 20, false);
        assert_eq!(out, input);
        assert!(!machine.holds_inflater());
    }

    #[test]
    fn context_takeover_across_messages() {
        let mut client = Client::new();
        let first = br#"{"type":"publish","topic":"news","data":{"headline":"hello"}}"#;
        let second = br#"{"type":"publish","topic":"news","data":{"headline":"hello again"}}"#;
        let c1 = client.compress(first);
        let c2 = client.compress(second);
        // The second refers back to the first: much shorter than it would be alone.
        assert!(c2.len() < Client::new().compress(second).len() / 2);
        let mut input = frame(0xc1, &c1);
        input.extend(frame(0xc1, &c2));
        let (out, machine) = run(&input, 1024, false);
        assert_eq!(
            out,
            [emitted(OP_TEXT, first), emitted(OP_TEXT, second)].concat()
        );
        assert!(
            machine.holds_inflater(),
            "the window is kept for the next message"
        );
    }

    #[test]
    fn no_context_takeover_resets_between_messages() {
        // A client that keeps its context although it promised not to: the second message
        // refers to a window the server has dropped, and fails to inflate.
        let mut client = Client::new();
        let message = b"the same words, the same words, the same words";
        let c1 = client.compress(message);
        let c2 = client.compress(message);
        let mut input = frame(0xc1, &c1);
        input.extend(frame(0xc1, &c2));
        let (out, machine) = run(&input, 1024, true);
        assert!(out.starts_with(&emitted(OP_TEXT, message)));
        assert_eq!(machine.failure().unwrap().code, CloseCode::Invalid);
        // Honest clients compress each message alone, and the inflater is not kept.
        let c = Client::new().compress(message);
        let (out, machine) = run(&[frame(0xc1, &c), frame(0xc1, &c)].concat(), 1024, true);
        assert_eq!(
            out,
            [emitted(OP_TEXT, message), emitted(OP_TEXT, message)].concat()
        );
        assert!(!machine.holds_inflater());
    }

    #[test]
    fn a_fragmented_compressed_message_with_pings_and_empty_fragments() {
        let message = "fragmented and compressed ".repeat(40);
        let compressed = Client::new().compress(message.as_bytes());
        let (a, rest) = compressed.split_at(5);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut input = frame(0x41, a);
        input.extend(frame(0x89, b"1"));
        input.extend(frame(0x00, b));
        input.extend(frame(0x00, b""));
        input.extend(frame(0x8a, b"2"));
        input.extend(frame(0x80, c));
        let (out, machine) = run(&input, 4096, false);
        let expected = [
            frame(0x89, b"1"),
            frame(0x8a, b"2"),
            emitted(OP_TEXT, message.as_bytes()),
        ]
        .concat();
        assert_eq!(out, expected);
        assert_eq!(machine.failure(), None);
    }

    fn failure_of(input: &[u8], max: usize) -> (Vec<u8>, Failure) {
        let (out, machine) = run(input, max, false);
        let failure = machine.failure().cloned().expect("a failure");
        (out, failure)
    }

    #[test]
    fn rsv1_where_it_does_not_belong_is_1002() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        for (input, why) in [
            (frame(0xc9, b"ping"), "control"),
            (
                [frame(0x41, &hello[..3]), frame(0x40, &hello[3..])].concat(),
                "continuation",
            ),
            (
                [frame(0x41, &hello[..3]), frame(0xc1, &hello)].concat(),
                "new message",
            ),
            (
                [frame(0x01, b"plain "), frame(0xc1, &hello)].concat(),
                "compressed inside plain",
            ),
        ] {
            let (out, failure) = failure_of(&input, 1024);
            assert_eq!(failure.code, CloseCode::Protocol, "{why}");
            assert!(out.ends_with(&[0xa1, 0x80, 0, 0, 0, 0]), "{why}: {out:x?}");
        }
    }

    #[test]
    fn corrupt_data_is_1007() {
        let (out, failure) = failure_of(&frame(0xc1, &[0xff, 0xff, 0xff, 0xff]), 1024);
        assert_eq!(failure.code, CloseCode::Invalid);
        assert_eq!(out, [0x81, 0x81, 0, 0, 0, 0, 0xff]);
        // Corrupt in the middle of a fragmented message: the rest of it is dropped.
        // (0x06: a block of the reserved type 3.)
        let mut input = frame(0x41, &[0x06, 0x00, 0x00]);
        input.extend(frame(0x80, &[0xff; 300]));
        input.extend(frame(0x89, b"after"));
        let (out, failure) = failure_of(&input, 1024);
        assert_eq!(failure.code, CloseCode::Invalid);
        assert_eq!(
            out,
            [vec![0x81, 0x81, 0, 0, 0, 0, 0xff], frame(0x89, b"after")].concat()
        );
    }

    #[test]
    fn oversize_is_1009_then_end_of_stream() {
        let message = vec![b'a'; 5000];
        let compressed = Client::new().compress(&message);
        assert!(compressed.len() < 100);
        // At the limit: fine.
        let (out, _) = run(&frame(0xc2, &compressed), 5000, false);
        assert_eq!(out, emitted(OP_BINARY, &message));
        // One byte under the message: a deflate bomb as far as we are concerned.
        let mut machine = Inbound::new(4999, false);
        machine.push(&frame(0xc2, &compressed));
        let mut expected = vec![0x82, 0xff];
        expected.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        expected.extend_from_slice(&[0; 4]);
        assert_eq!(machine.output(), expected);
        assert_eq!(machine.failure().unwrap().code, CloseCode::Size);
        assert!(!machine.at_eof(), "output first");
        machine.consume(expected.len());
        assert!(machine.at_eof());
        // Compressed bytes alone over the bound are refused from the frame header.
        let (out, failure) = failure_of(&frame(0xc2, &[0; 200])[..8], 100);
        assert_eq!(failure.code, CloseCode::Size);
        assert_eq!(out, expected);
    }

    #[test]
    fn after_a_failure_only_control_frames_pass() {
        let mut input = frame(0xc9, b"bad");
        input.extend(frame(0x81, b"dropped"));
        input.extend(frame(0x88, &[0x03, 0xea]));
        let (out, _) = run(&input, 1024, false);
        assert_eq!(
            out,
            [vec![0xa1, 0x80, 0, 0, 0, 0], frame(0x88, &[0x03, 0xea])].concat()
        );
    }

    #[test]
    fn malformed_frames_are_tungstenites_to_refuse() {
        // RSV2, reserved opcodes, unmasked plain frames: passed through unchanged.
        for input in [
            frame(0xa1, b"x"),
            frame(0x83, b"x"),
            frame(0x8b, b""),
            vec![0x81, 0x01, b'x'],
        ] {
            let (out, machine) = run(&input, 1024, false);
            assert_eq!(out, input);
            assert_eq!(machine.failure(), None);
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A poor man's fuzzer: deterministic noise, frames cut at every length.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect()
        };
        for round in 0..300 {
            let mut input = noise(round % 97 + 1);
            // Make many of them look like compressed frames.
            if round % 2 == 0 {
                input = frame(0xc1 | (input[0] & 0x3e), &input);
            }
            let mut machine = Inbound::new(64, round % 3 == 0);
            for piece in input.chunks(round % 7 + 1) {
                machine.push(piece);
                let n = machine.output().len();
                machine.consume(n);
            }
        }
    }
}
