//! WebSocket frames (RFC 6455 §5) and the opening handshake's accept key (§4.2.2).
//!
//! A frame is a 2-byte header, up to 8 more bytes of length, an optional 4-byte masking key
//! and the payload:
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! [`WsAnnotator`] reads that layout field by field and says what each field means, what a
//! frame is in its message (whole, first fragment, continuation), and which rules it breaks.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use streamgate_client::ws_frame::{parse_header, FrameHeader, HeaderError};

use super::envelope::annotate_envelope;
use super::inflate::MessageInflater;
use super::{hex_bytes, hex_preview, payload_preview, plural, quoted, Note};

/// The GUID RFC 6455 §1.3 appends to the client's key: a string no HTTP server would
/// produce by accident, so only a server that implements WebSocket answers correctly.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message the annotator reassembles or inflates for display. Bigger messages are
/// still annotated frame by frame; only the "whole message" note is left out.
const MAX_MESSAGE: usize = 16 << 20;

/// What [`annotate_ws_frames`] found at the start of its input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WsFrames {
    /// One note per complete frame, in order.
    pub frames: Vec<Note>,
    /// Bytes the complete frames take; the rest is the start of a frame still on its way.
    pub consumed: usize,
    /// When the input ends inside a frame: which frame, what its header says so far, and how
    /// many more bytes it needs.
    pub incomplete: Option<String>,
}

/// Every complete WebSocket frame at the start of `data` (either direction), one [`Note`]
/// per frame.
///
/// Each frame's children are, in wire order: `FIN`, `RSV1` (with "compressed
/// (permessage-deflate)" when set on a data frame), `RSV2`, `RSV3`, `opcode` (with its name),
/// `MASK`, `payload length` (which of the three encodings, with its header bytes), `masking
/// key`, `masked payload` (hex) and `unmasked payload` (text when UTF-8, else hex; the XOR
/// with `key[i % 4]` explained) — or just `payload` when the frame is not masked —, `close
/// code` and `close reason` for close frames, the reassembled `message` when a fragmented
/// one ends, the inflated message when it came compressed, the streamgate envelope when the
/// message is one, and a [`VIOLATION`](super::VIOLATION) note for each broken rule.
///
/// Fragmented messages are followed across the frames of one call; use a [`WsAnnotator`] to
/// follow them (and a compression context) across calls. Compressed messages are inflated on
/// their own, which is how streamgate compresses (`server_no_context_takeover`).
pub fn annotate_ws_frames(data: &[u8]) -> WsFrames {
    WsAnnotator::new().annotate(data)
}

/// Annotates the frames of one direction of one WebSocket connection, fed in pieces as they
/// arrive: it remembers a fragmented message between calls, numbers frames from the first
/// call, and keeps the permessage-deflate window when the connection does.
#[derive(Debug)]
pub struct WsAnnotator {
    frames_seen: u64,
    message: Option<PartialMessage>,
    /// Keeps the window between messages only when the connection does.
    inflater: MessageInflater,
}

/// A fragmented message between its first and last frame.
#[derive(Debug)]
struct PartialMessage {
    opcode: u8,
    compressed: bool,
    first_frame: u64,
    frames: u64,
    /// The payloads so far, unmasked; `None` once the message outgrew [`MAX_MESSAGE`].
    payload: Option<Vec<u8>>,
}

impl Default for WsAnnotator {
    fn default() -> Self {
        Self::new()
    }
}

impl WsAnnotator {
    /// An annotator that inflates every compressed message on its own: right for a direction
    /// where `*_no_context_takeover` was negotiated, such as everything streamgate sends.
    pub fn new() -> Self {
        Self {
            frames_seen: 0,
            message: None,
            inflater: MessageInflater::new(false, MAX_MESSAGE),
        }
    }

    /// An annotator that keeps the deflate window from one compressed message to the next
    /// (RFC 7692 §7.2.3.2): a later message may copy strings out of earlier ones, so it only
    /// inflates if the annotator saw every compressed message before it.
    pub fn with_context_takeover() -> Self {
        Self {
            inflater: MessageInflater::new(true, MAX_MESSAGE),
            ..Self::new()
        }
    }

    /// Every complete frame at the start of `data`. Feed the unconsumed rest again, with
    /// what arrives next, on the following call.
    pub fn annotate(&mut self, data: &[u8]) -> WsFrames {
        let mut frames = Vec::new();
        let mut at = 0;
        let incomplete = loop {
            if at == data.len() {
                break None;
            }
            match locate_frame(&data[at..]) {
                Located::Complete(layout) => {
                    self.frames_seen += 1;
                    frames.push(self.frame_note(data, at, &layout));
                    at += layout.total;
                }
                Located::Incomplete(why) => {
                    break Some(format!(
                        "frame {} at byte {at}: {why}",
                        self.frames_seen + 1
                    ));
                }
            }
        };
        WsFrames {
            frames,
            consumed: at,
            incomplete,
        }
    }

    /// The note of one complete frame, whose bytes start at `start` in `data`.
    fn frame_note(&mut self, data: &[u8], start: usize, frame: &Layout) -> Note {
        let number = self.frames_seen;
        let b0 = data[start];
        let payload_at = start + frame.header.payload_offset();
        let end = start + frame.total;
        let masked_payload = &data[payload_at..end];
        let mut payload = masked_payload.to_vec();
        frame.header.unmask(&mut payload, 0);
        let control = frame.header.is_control();
        let data_frame = matches!(frame.header.opcode, 0x1 | 0x2);

        let first_byte = format!("{b0:08b}");
        let mut fields = vec![
            Note::new(
                "FIN",
                bit(frame.header.fin),
                if frame.header.fin {
                    "Set: this frame ends its message (RFC 6455 §5.2); a message in one frame has FIN set on its only frame."
                } else {
                    "Clear: more frames of this message follow, each with opcode 0 (continuation), the last with FIN set (RFC 6455 §5.4)."
                },
            ),
            rsv1_note(frame, data_frame, control),
            rsv_note("RSV2", frame.header.rsv2),
            rsv_note("RSV3", frame.header.rsv3),
            Note::new(
                "opcode",
                format!("{:#x} ({})", frame.header.opcode, opcode_name(frame.header.opcode)),
                opcode_explain(frame.header.opcode),
            ),
        ]
        .into_iter()
        .zip([
            "The 1000 0000 bit",
            "The 0100 0000 bit",
            "The 0010 0000 bit",
            "The 0001 0000 bit",
            "The 0000 1111 bits",
        ])
        .map(|(mut note, bits)| {
            // Five fields share the first byte: say which of its bits each one is.
            note.explain = format!(
                "{bits} of the first byte, {} {}. {}",
                &first_byte[..4],
                &first_byte[4..],
                note.explain
            );
            note.at(start, start + 1)
        })
        .collect::<Vec<_>>();
        fields.push(
            Note::new(
                "MASK",
                if frame.header.mask.is_some() { "1 (masked)" } else { "0 (not masked)" },
                if frame.header.mask.is_some() {
                    "The top bit of the second byte. Set: a 4-byte masking key follows the length and the payload is XORed with it. A client masks every frame it sends (RFC 6455 §5.3), so this frame went client → server."
                } else {
                    "The top bit of the second byte. Clear: the payload is sent as is. A server never masks (RFC 6455 §5.1), so this frame went server → client; a server must close the connection on an unmasked frame from a client."
                },
            )
            .at(start + 1, start + 2),
        );
        fields.push(
            length_note(frame, &data[start..payload_at])
                .at(start + 1, start + frame.header.length_end()),
        );
        if let (Some(key), Some(key_range)) = (frame.header.mask, frame.header.mask_range()) {
            let key_at = start + key_range.start;
            fields.push(
                Note::new(
                    "masking key",
                    hex_bytes(&key),
                    "Four random bytes chosen by the client for this frame (RFC 6455 §5.3). Masking is not encryption: it stops a client from putting chosen bytes on the wire, which could poison a proxy's cache (§10.3).",
                )
                .at(key_at, key_at + 4),
            );
            fields.push(
                Note::new(
                    "masked payload",
                    if masked_payload.is_empty() {
                        "(empty)".to_owned()
                    } else {
                        hex_preview(masked_payload)
                    },
                    "The payload as it travels: unreadable until unmasked.",
                )
                .at(payload_at, end),
            );
            fields.push(
                Note::new(
                    "unmasked payload",
                    payload_preview(&payload),
                    unmask_explain(masked_payload, &key, &payload),
                )
                .at(payload_at, end),
            );
        } else {
            let explain = if frame.header.rsv1 && data_frame {
                "The payload as sent: DEFLATE-compressed data without its final 00 00 ff ff (RFC 7692 §7.2.1); the receiver appends those four bytes and inflates."
            } else if control {
                "The control frame's payload, at most 125 bytes (RFC 6455 §5.5)."
            } else {
                "The application data, sent as is (an unmasked frame)."
            };
            fields
                .push(Note::new("payload", payload_preview(&payload), explain).at(payload_at, end));
        }

        let mut notes = Vec::new();
        if frame.header.opcode == 0x8 {
            notes.extend(close_notes(&payload, payload_at));
        }
        notes.extend(layout_violations(frame, start));
        let (role, message_notes) = self.follow_message(frame, number, &payload, start, end);
        notes.extend(message_notes);
        fields.extend(notes);

        let mut summary = vec![opcode_name(frame.header.opcode).to_owned()];
        if frame.header.fin {
            summary.push("FIN".to_owned());
        }
        if frame.header.rsv1 {
            summary.push("RSV1".to_owned());
        }
        summary.push(
            if frame.header.mask.is_some() {
                "masked"
            } else {
                "unmasked"
            }
            .to_owned(),
        );
        summary.push(format!("{}-byte payload", frame.header.payload_len));
        let direction = if frame.header.mask.is_some() {
            "Masked, so sent by a client."
        } else {
            "Unmasked, so sent by a server."
        };
        Note::new(
            format!("frame {number}"),
            summary.join(", "),
            format!("{role} {direction}"),
        )
        .at(start, end)
        .with(fields)
    }

    /// Places the frame in its message: says what it is (whole message, fragment, control
    /// frame between fragments) and, when it ends a message, adds the reassembled and
    /// inflated message and its envelope. Returns the sentence and the notes.
    fn follow_message(
        &mut self,
        frame: &Layout,
        number: u64,
        payload: &[u8],
        start: usize,
        end: usize,
    ) -> (String, Vec<Note>) {
        let mut notes = Vec::new();
        match frame.header.opcode {
            0x8..=0xf => {
                let role = match frame.header.opcode {
                    0x8 => "A close frame: the sender will send nothing more; the receiver answers with a close frame of its own, then the server closes the TCP connection (RFC 6455 §5.5.1, §7).",
                    0x9 => "A ping: the receiver must answer with a pong carrying the same payload (RFC 6455 §5.5.2); it checks that the peer is still there.",
                    0xa => "A pong: the answer to a ping, echoing its payload (RFC 6455 §5.5.3); an unsolicited pong is a one-way heartbeat.",
                    _ => "A frame with a reserved control opcode: no receiver knows what it means.",
                };
                let role = if self.message.is_some() {
                    format!("{role} Control frames may come between the fragments of a message (RFC 6455 §5.4).")
                } else {
                    role.to_owned()
                };
                (role, notes)
            }
            0x0 => {
                let Some(mut message) = self.message.take() else {
                    notes.push(
                        Note::violation(
                            "continuation frame without a message",
                            "Opcode 0 continues a fragmented message, but no message was started: the receiver fails the connection (RFC 6455 §5.4, close code 1002).",
                        )
                        .at(start, end),
                    );
                    return (
                        "A continuation frame with nothing to continue.".to_owned(),
                        notes,
                    );
                };
                message.frames += 1;
                if let Some(so_far) = message.payload.as_mut() {
                    if so_far.len() + payload.len() > MAX_MESSAGE {
                        message.payload = None;
                    } else {
                        so_far.extend_from_slice(payload);
                    }
                }
                let kind = opcode_name(message.opcode);
                if !frame.header.fin {
                    let role = format!(
                        "A continuation of the {kind} message begun in frame {}; FIN is clear, so more fragments follow.",
                        message.first_frame
                    );
                    self.message = Some(message);
                    return (role, notes);
                }
                let role = format!(
                    "The last fragment of the {kind} message begun in frame {}: FIN is set, so the message is complete ({} frames).",
                    message.first_frame, message.frames
                );
                match message.payload {
                    Some(whole) => {
                        notes.push(
                            Note::new(
                                "message",
                                payload_preview(&whole),
                                format!(
                                    "The {} payloads of frames {}–{number} joined in order: what the application receives{}.",
                                    message.frames,
                                    message.first_frame,
                                    if message.compressed { ", once inflated" } else { "" }
                                ),
                            ),
                        );
                        notes.extend(self.finish_message(
                            message.opcode,
                            message.compressed,
                            &whole,
                            None,
                        ));
                    }
                    None => notes.push(Note::new(
                        "message",
                        format!("over {MAX_MESSAGE} bytes"),
                        "Too large to reassemble here; the frames above are all there is to see.",
                    )),
                }
                (role, notes)
            }
            opcode => {
                if let Some(unfinished) = self.message.take() {
                    notes.push(
                        Note::violation(
                            "new message inside a fragmented one",
                            format!(
                                "The message begun in frame {} has not ended (no FIN yet), and only control frames may interleave with its fragments: the receiver fails the connection (RFC 6455 §5.4, close code 1002).",
                                unfinished.first_frame
                            ),
                        )
                        .at(start, end),
                    );
                }
                let kind = opcode_name(opcode);
                let data_frame = matches!(opcode, 0x1 | 0x2);
                if !frame.header.fin {
                    self.message = Some(PartialMessage {
                        opcode,
                        compressed: frame.header.rsv1,
                        first_frame: number,
                        frames: 1,
                        payload: Some(payload.to_vec()),
                    });
                    return (
                        format!("The first fragment of a {kind} message: FIN is clear, so frames with opcode 0 (continuation) follow until one has FIN set (RFC 6455 §5.4)."),
                        notes,
                    );
                }
                if data_frame {
                    notes.extend(self.finish_message(
                        opcode,
                        frame.header.rsv1,
                        payload,
                        Some(start + frame.header.payload_offset()),
                    ));
                }
                (format!("A whole {kind} message in one frame."), notes)
            }
        }
    }

    /// The notes of a complete data message: inflated when compressed, checked as UTF-8 when
    /// text, and read as a streamgate envelope when it is one.
    /// `payload_at` is where the payload is in the input when it is this frame's own (not
    /// reassembled), so that a binary envelope's fields can point at their bytes.
    fn finish_message(
        &mut self,
        opcode: u8,
        compressed: bool,
        payload: &[u8],
        payload_at: Option<usize>,
    ) -> Vec<Note> {
        let mut notes = Vec::new();
        let inflated;
        let message = if compressed {
            match self.inflater.inflate(payload) {
                Ok(out) => {
                    notes.push(Note::new(
                        "inflated",
                        payload_preview(&out),
                        format!(
                            "The message after appending 00 00 ff ff and inflating (RFC 7692 §7.2.2): {} on the wire, {} once inflated.",
                            plural(payload.len() as u64, "byte"),
                            plural(out.len() as u64, "byte"),
                        ),
                    ));
                    inflated = out;
                    &inflated[..]
                }
                Err(why) => {
                    let explain = if self.inflater.context_takeover() {
                        format!("The compressed data does not inflate ({why}). With context takeover a message may refer back to earlier ones, so it only inflates if every compressed message before it was seen; otherwise the peer closes with 1007 (RFC 7692 §8).")
                    } else {
                        format!("The compressed data does not inflate on its own ({why}): either it is corrupt (the receiver closes with 1007) or it refers back to earlier messages because the sender kept its context (RFC 7692 §7.2.3.2).")
                    };
                    notes.push(Note::violation("does not inflate", explain));
                    return notes;
                }
            }
        } else {
            payload
        };
        if opcode == 0x1 && std::str::from_utf8(message).is_err() {
            notes.push(Note::violation(
                "text message that is not UTF-8",
                "A text message must be valid UTF-8 once complete (RFC 6455 §5.6, §8.1): the receiver fails the connection with close code 1007.",
            ));
        }
        // Positions make sense only when the envelope's bytes are the frame's own: not
        // inflated, not reassembled from several frames.
        match (payload_at, compressed) {
            (Some(at), false) => notes.extend(annotate_envelope(message, at)),
            _ => notes.extend(annotate_envelope(message, 0).map(strip_positions)),
        }
        notes
    }
}

/// A frame's layout, once all of it is in the buffer.
/// A complete frame at the start of a buffer: its header, and how many bytes it takes.
#[derive(Debug)]
struct Layout {
    header: FrameHeader,
    total: usize,
}

enum Located {
    Complete(Layout),
    Incomplete(String),
}

/// Reads the header at the start of `buf` and says whether the whole frame is there.
fn locate_frame(buf: &[u8]) -> Located {
    let describe = |b0: u8, b1: u8| {
        format!(
            "{}{}{}",
            opcode_name(b0 & 0x0f),
            if b0 & 0x80 != 0 { ", FIN" } else { "" },
            if b1 & 0x80 != 0 { ", masked" } else { "" }
        )
    };
    let header =
        match parse_header(buf) {
            Ok(header) => header,
            Err(HeaderError::Truncated { have: ..2, .. }) => return Located::Incomplete(
                "a frame header is at least 2 bytes; 1 is here, so at least 1 more byte is needed"
                    .to_owned(),
            ),
            Err(HeaderError::Truncated { needed, have }) => {
                return Located::Incomplete(format!(
                    "a {} frame whose header is {needed} bytes; {have} here, {} more needed",
                    describe(buf[0], buf[1]),
                    plural((needed - have) as u64, "byte")
                ))
            }
            Err(HeaderError::LengthTopBit { len }) => {
                return Located::Incomplete(format!(
                    "a {} frame declaring a {len}-byte payload, a 64-bit length with its top bit \
                 set: RFC 6455 §5.2 requires that bit 0, and no frame ends, so nothing after \
                 it can be read",
                    describe(buf[0], buf[1]),
                ))
            }
        };
    let total = header.frame_len();
    if (buf.len() as u64) < total {
        let missing = total - buf.len() as u64;
        return Located::Incomplete(format!(
            "a {} frame declaring a {}-byte payload ({total} bytes in all); {} here, {} more needed",
            describe(buf[0], buf[1]),
            header.payload_len,
            buf.len(),
            plural(missing, "byte")
        ));
    }
    Located::Complete(Layout {
        header,
        // `total` is at most `buf.len()`, so it fits.
        total: total as usize,
    })
}

fn bit(set: bool) -> &'static str {
    if set {
        "1"
    } else {
        "0"
    }
}

fn opcode_name(opcode: u8) -> &'static str {
    match opcode {
        0x0 => "continuation",
        0x1 => "text",
        0x2 => "binary",
        0x8 => "close",
        0x9 => "ping",
        0xa => "pong",
        0x3..=0x7 => "reserved data opcode",
        _ => "reserved control opcode",
    }
}

fn opcode_explain(opcode: u8) -> &'static str {
    match opcode {
        0x0 => "Continuation: this frame carries the next part of a fragmented message; the first fragment's opcode says whether it is text or binary (RFC 6455 §5.4).",
        0x1 => "Text: the message is UTF-8 text (RFC 6455 §5.6). Opcodes 0x0–0x7 are data frames, 0x8–0xF control frames.",
        0x2 => "Binary: the message is bytes the application interprets (RFC 6455 §5.6).",
        0x8 => "Close: starts or answers the closing handshake; the payload may hold a 2-byte status code and a UTF-8 reason (RFC 6455 §5.5.1).",
        0x9 => "Ping: a control frame the peer must answer with a pong (RFC 6455 §5.5.2).",
        0xa => "Pong: the answer to a ping, with the same payload (RFC 6455 §5.5.3).",
        _ => "A reserved opcode, for future extensions (RFC 6455 §5.2): a receiver that gets one fails the connection.",
    }
}

fn rsv_note(label: &str, set: bool) -> Note {
    Note::new(
        label,
        bit(set),
        if set {
            "Set, but no extension streamgate or browsers negotiate defines this bit: the receiver fails the connection (RFC 6455 §5.2, close code 1002)."
        } else {
            "Reserved for extensions; zero unless one negotiated during the handshake defines it (RFC 6455 §5.2)."
        },
    )
}

fn rsv1_note(frame: &Layout, data_frame: bool, control: bool) -> Note {
    let (value, explain) = match (frame.header.rsv1, data_frame, control) {
        (true, true, _) => (
            "1 (compressed (permessage-deflate))",
            "Set on the first frame of a data message: the message is compressed with DEFLATE (RFC 7692 §6), which the handshake must have negotiated with Sec-WebSocket-Extensions: permessage-deflate.",
        ),
        (true, false, true) => (
            "1",
            "Set on a control frame: permessage-deflate never compresses control frames (RFC 7692 §6.1).",
        ),
        (true, false, false) => (
            "1",
            "Set on a continuation frame: permessage-deflate sets RSV1 on the first frame of a message only (RFC 7692 §6.1).",
        ),
        (false, true, _) => (
            "0",
            "Clear: the message is not compressed. With permessage-deflate negotiated, RSV1 set would mean compressed; a sender may leave any message uncompressed (RFC 7692 §6).",
        ),
        (false, _, _) => (
            "0",
            "Reserved for extensions (RFC 6455 §5.2); permessage-deflate uses it on the first frame of a compressed data message.",
        ),
    };
    Note::new("RSV1", value, explain)
}

/// The payload length field, naming which of the three encodings the frame uses.
fn length_note(frame: &Layout, header: &[u8]) -> Note {
    let len = frame.header.payload_len;
    match frame.header.length_field {
        126 => Note::new(
            "payload length",
            format!("{len} (16-bit length: 126, then {})", hex_bytes(&header[2..4])),
            "The 7-bit field holds 126, so the length is the next 2 bytes, big-endian: the form for lengths 126–65535 (RFC 6455 §5.2).",
        ),
        127 => Note::new(
            "payload length",
            format!("{len} (64-bit length: 127, then {})", hex_bytes(&header[2..10])),
            "The 7-bit field holds 127, so the length is the next 8 bytes, big-endian, most significant bit 0: the form for lengths of 65536 and more (RFC 6455 §5.2).",
        ),
        _ => Note::new(
            "payload length",
            format!("{len} (7-bit length)"),
            "Lengths 0–125 fit in the low 7 bits of the second byte; 126 and 127 announce a 16-bit or 64-bit length instead (RFC 6455 §5.2).",
        ),
    }
}

/// "XOR with key[i % 4]", shown on the first bytes.
fn unmask_explain(masked: &[u8], key: &[u8; 4], plain: &[u8]) -> String {
    let worked: Vec<String> = masked
        .iter()
        .zip(plain)
        .take(4)
        .enumerate()
        .map(|(i, (m, p))| {
            let shown = if p.is_ascii_graphic() || *p == b' ' {
                format!(" '{}'", char::from(*p))
            } else {
                String::new()
            };
            format!("{m:02x} ^ {:02x} = {p:02x}{shown}", key[i % 4])
        })
        .collect();
    if worked.is_empty() {
        "Nothing to unmask: the payload is empty.".to_owned()
    } else {
        format!(
            "Byte i of the payload XOR key[i % 4] (RFC 6455 §5.3): {}{}",
            worked.join(", "),
            if masked.len() > 4 { ", …" } else { "." }
        )
    }
}

/// The status code and reason of a close frame's (unmasked) payload.
fn close_notes(payload: &[u8], payload_at: usize) -> Vec<Note> {
    let mut notes = Vec::new();
    match payload.len() {
        0 => notes.push(Note::new(
            "close code",
            "(none)",
            "An empty close frame: no status code, which the receiver reports as 1005 (no status received) without it ever being on the wire (RFC 6455 §7.1.5).",
        )),
        1 => notes.push(
            Note::violation(
                "close payload of 1 byte",
                "A close payload is empty or starts with a 2-byte status code (RFC 6455 §5.5.1); one byte is a protocol error (close code 1002).",
            )
            .at(payload_at, payload_at + 1),
        ),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let (name, allowed) = close_code(code);
            notes.push(
                Note::new(
                    "close code",
                    format!("{code} ({name})"),
                    "The first 2 payload bytes, big-endian: why the connection is closing (RFC 6455 §7.4).",
                )
                .at(payload_at, payload_at + 2),
            );
            if !allowed {
                notes.push(
                    Note::violation(
                        format!("close code {code} may not be sent"),
                        "Codes below 1000, 1004–1006, 1015 and 1016–2999 are reserved or only reported locally (RFC 6455 §7.4.1, §7.4.2): a receiver fails the connection (1002).",
                    )
                    .at(payload_at, payload_at + 2),
                );
            }
            let reason = &payload[2..];
            let reason_at = payload_at + 2;
            match std::str::from_utf8(reason) {
                Ok(text) => notes.push(
                    Note::new(
                        "close reason",
                        if text.is_empty() { "(empty)".to_owned() } else { quoted(text) },
                        "The rest of the payload: a UTF-8 reason for humans and logs, not for programs to parse (RFC 6455 §5.5.1).",
                    )
                    .at(reason_at, payload_at + payload.len()),
                ),
                Err(_) => notes.push(
                    Note::violation(
                        "close reason that is not UTF-8",
                        "The reason must be UTF-8 (RFC 6455 §5.5.1); a receiver fails the connection with 1007.",
                    )
                    .at(reason_at, payload_at + payload.len()),
                ),
            }
        }
    }
    notes
}

/// A close code's name and whether an endpoint may send it (RFC 6455 §7.4, IANA registry).
fn close_code(code: u16) -> (&'static str, bool) {
    match code {
        1000 => ("normal closure", true),
        1001 => ("going away", true),
        1002 => ("protocol error", true),
        1003 => ("unsupported data", true),
        1004 => ("reserved", false),
        1005 => ("no status received: never sent", false),
        1006 => ("abnormal closure: never sent", false),
        1007 => ("invalid payload data", true),
        1008 => ("policy violation", true),
        1009 => ("message too big", true),
        1010 => ("mandatory extension", true),
        1011 => ("internal error", true),
        1012 => ("service restart", true),
        1013 => ("try again later", true),
        1014 => ("bad gateway", true),
        1015 => ("TLS handshake failure: never sent", false),
        3000..=3999 => ("registered for libraries and frameworks", true),
        4000..=4999 => ("private use by applications", true),
        _ => ("reserved", false),
    }
}

/// Rules the frame's header breaks on its own, whatever came before it.
fn layout_violations(frame: &Layout, start: usize) -> Vec<Note> {
    let mut notes = Vec::new();
    let header = (start, start + frame.header.length_end());
    if frame.header.rsv1 && frame.header.opcode >= 0x8 {
        notes.push(
            Note::violation(
                "RSV1 on a control frame",
                "Control frames are never compressed (RFC 7692 §6.1): the receiver fails the connection with 1002.",
            )
            .at(start, start + 1),
        );
    }
    if frame.header.rsv1 && frame.header.opcode == 0x0 {
        notes.push(
            Note::violation(
                "RSV1 on a continuation frame",
                "Only the first frame of a message says whether it is compressed (RFC 7692 §6.1): the receiver fails the connection with 1002.",
            )
            .at(start, start + 1),
        );
    }
    for (set, name) in [(frame.header.rsv2, "RSV2"), (frame.header.rsv3, "RSV3")] {
        if set {
            notes.push(
                Note::violation(
                    format!("{name} set"),
                    "No negotiated extension defines this bit, so it must be 0 (RFC 6455 §5.2): the receiver fails the connection with 1002.",
                )
                .at(start, start + 1),
            );
        }
    }
    if matches!(frame.header.opcode, 0x3..=0x7 | 0xb..=0xf) {
        notes.push(
            Note::violation(
                format!("reserved opcode {:#x}", frame.header.opcode),
                "Opcodes 0x3–0x7 and 0xB–0xF are reserved (RFC 6455 §5.2): a receiver fails the connection with 1002.",
            )
            .at(start, start + 1),
        );
    }
    if frame.header.opcode >= 0x8 {
        if frame.header.payload_len > 125 {
            notes.push(
                Note::violation(
                    "control frame longer than 125 bytes",
                    "Control frames carry at most 125 bytes of payload, so they always fit the 7-bit length (RFC 6455 §5.5): the receiver fails the connection with 1002.",
                )
                .at(header.0, header.1),
            );
        }
        if !frame.header.fin {
            notes.push(
                Note::violation(
                    "fragmented control frame",
                    "Control frames must not be fragmented (FIN set, RFC 6455 §5.5), so they can be answered at once, even in the middle of a fragmented message.",
                )
                .at(start, start + 1),
            );
        }
    }
    if !frame.header.is_minimal_length() {
        notes.push(
            Note::violation(
                "non-minimal length encoding",
                format!(
                    "A length of {} fits a shorter form; \"the minimal number of bytes MUST be used to encode the length\" (RFC 6455 §5.2).",
                    frame.header.payload_len
                ),
            )
            .at(start + 1, header.1),
        );
    }
    notes
}

/// Byte ranges of an envelope decoded from a reassembled or inflated message point into that
/// message, not into the input; dropping them keeps every range in the tree honest.
fn strip_positions(mut note: Note) -> Note {
    note.bytes = None;
    note.children = note.children.into_iter().map(strip_positions).collect();
    note
}

/// `Sec-WebSocket-Accept` computed step by step (RFC 6455 §1.3, §4.2.2): the key, the GUID
/// [`WEBSOCKET_GUID`], the two concatenated, SHA-1 of that (in hex), and its base64 — the
/// note's value, which the server's 101 response must carry.
///
/// The handshake proves only that the server read this request and speaks WebSocket; it is
/// not a security check, which is why SHA-1 is good enough.
pub fn explain_accept(key: &str) -> Note {
    let key = key.trim();
    let concatenated = format!("{key}{WEBSOCKET_GUID}");
    let digest = Sha1::digest(concatenated.as_bytes());
    let accept = BASE64.encode(digest);
    let mut key_note = Note::new(
        "1. Sec-WebSocket-Key",
        key,
        "The client's nonce: 16 random bytes, base64-encoded, new for every handshake (RFC 6455 §4.1).",
    );
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        Ok(raw) => key_note.children.push(Note::violation(
            format!("key decodes to {}", plural(raw.len() as u64, "byte")),
            "The key must be 16 bytes once base64-decoded (RFC 6455 §4.1); a server refuses the handshake with 400.",
        )),
        Err(_) => key_note.children.push(Note::violation(
            "key is not base64",
            "The key must be 16 random bytes in base64 (RFC 6455 §4.1); a server refuses the handshake with 400.",
        )),
    }
    Note::new(
        "Sec-WebSocket-Accept",
        accept.clone(),
        "What the server must answer to this key: base64(SHA-1(key + GUID)). A client fails the connection unless the 101 response carries exactly this value (RFC 6455 §4.1, §4.2.2).",
    )
    .with([
        key_note,
        Note::new(
            "2. GUID",
            WEBSOCKET_GUID,
            "A constant fixed by RFC 6455 §1.3. No ordinary HTTP server would append it, so only one that implements WebSocket gets the answer right.",
        ),
        Note::new(
            "3. key + GUID",
            concatenated.clone(),
            format!(
                "The two strings joined, with nothing between them: {} of ASCII.",
                plural(concatenated.len() as u64, "byte")
            ),
        ),
        Note::new(
            "4. SHA-1",
            hex_bytes(&digest),
            "SHA-1 of those bytes: a 20-byte digest, shown in hex.",
        ),
        Note::new(
            "5. base64",
            accept,
            "The 20 digest bytes in base64 (not the hex!): the value of Sec-WebSocket-Accept.",
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::{render_text, VIOLATION};
    use super::*;

    fn only_frame(data: &[u8]) -> Note {
        let frames = annotate_ws_frames(data);
        assert_eq!(frames.consumed, data.len(), "{frames:#?}");
        assert_eq!(frames.incomplete, None);
        assert_eq!(frames.frames.len(), 1, "{frames:#?}");
        frames.frames.into_iter().next().unwrap()
    }

    fn value<'a>(note: &'a Note, label: &str) -> &'a str {
        &note
            .find(label)
            .unwrap_or_else(|| panic!("no {label} in {}", render_text(std::slice::from_ref(note))))
            .value
    }

    fn bytes(note: &Note, label: &str) -> Option<(usize, usize)> {
        note.find(label).and_then(|n| n.bytes)
    }

    #[test]
    fn rfc_6455_5_7_single_frame_unmasked_text() {
        let frame = only_frame(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(frame.bytes, Some((0, 7)));
        assert_eq!(value(&frame, "FIN"), "1");
        assert_eq!(value(&frame, "RSV1"), "0");
        assert_eq!(value(&frame, "opcode"), "0x1 (text)");
        assert_eq!(value(&frame, "MASK"), "0 (not masked)");
        assert_eq!(value(&frame, "payload length"), "5 (7-bit length)");
        assert_eq!(bytes(&frame, "payload length"), Some((1, 2)));
        assert_eq!(value(&frame, "payload"), "\"Hello\"");
        assert_eq!(bytes(&frame, "payload"), Some((2, 7)));
        assert!(frame.find("masking key").is_none());
        assert!(frame.violations().is_empty());
        assert!(
            frame.explain.contains("whole text message"),
            "{}",
            frame.explain
        );
    }

    #[test]
    fn rfc_6455_5_7_single_frame_masked_text() {
        let frame = only_frame(&[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ]);
        assert_eq!(value(&frame, "MASK"), "1 (masked)");
        assert_eq!(value(&frame, "payload length"), "5 (7-bit length)");
        assert_eq!(value(&frame, "masking key"), "37 fa 21 3d");
        assert_eq!(bytes(&frame, "masking key"), Some((2, 6)));
        assert_eq!(value(&frame, "masked payload"), "7f 9f 4d 51 58");
        assert_eq!(bytes(&frame, "masked payload"), Some((6, 11)));
        assert_eq!(value(&frame, "unmasked payload"), "\"Hello\"");
        let explain = &frame.find("unmasked payload").unwrap().explain;
        assert!(explain.contains("key[i % 4]"), "{explain}");
        assert!(explain.contains("7f ^ 37 = 48 'H'"), "{explain}");
        assert!(frame.explain.contains("client"));
        assert!(frame.violations().is_empty());
    }

    #[test]
    fn rfc_6455_5_7_fragmented_unmasked_text() {
        let data = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let frames = annotate_ws_frames(&data);
        assert_eq!(frames.consumed, 9);
        let [first, last] = &frames.frames[..] else {
            panic!("{frames:#?}")
        };
        assert_eq!(first.bytes, Some((0, 5)));
        assert_eq!(value(first, "FIN"), "0");
        assert_eq!(value(first, "opcode"), "0x1 (text)");
        assert_eq!(value(first, "payload"), "\"Hel\"");
        assert!(
            first.explain.contains("first fragment"),
            "{}",
            first.explain
        );
        assert_eq!(last.bytes, Some((5, 9)));
        assert_eq!(value(last, "FIN"), "1");
        assert_eq!(value(last, "opcode"), "0x0 (continuation)");
        assert_eq!(value(last, "payload"), "\"lo\"");
        assert_eq!(value(last, "message"), "\"Hello\"");
        assert!(last.explain.contains("frame 1"), "{}", last.explain);
        assert!(first.violations().is_empty() && last.violations().is_empty());
    }

    #[test]
    fn rfc_6455_5_7_ping_and_masked_pong() {
        let ping = only_frame(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(value(&ping, "opcode"), "0x9 (ping)");
        assert_eq!(value(&ping, "payload"), "\"Hello\"");
        assert!(ping.explain.contains("pong"));
        let pong = only_frame(&[
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ]);
        assert_eq!(value(&pong, "opcode"), "0xa (pong)");
        assert_eq!(value(&pong, "masking key"), "37 fa 21 3d");
        assert_eq!(value(&pong, "unmasked payload"), "\"Hello\"");
        assert!(ping.violations().is_empty() && pong.violations().is_empty());
    }

    #[test]
    fn rfc_6455_5_7_sixteen_bit_length() {
        let mut data = vec![0x82, 0x7e, 0x01, 0x00];
        data.extend((0..=255u8).collect::<Vec<_>>());
        let frame = only_frame(&data);
        assert_eq!(value(&frame, "opcode"), "0x2 (binary)");
        assert_eq!(
            value(&frame, "payload length"),
            "256 (16-bit length: 126, then 01 00)"
        );
        assert_eq!(bytes(&frame, "payload length"), Some((1, 4)));
        assert_eq!(bytes(&frame, "payload"), Some((4, 260)));
        assert!(value(&frame, "payload").ends_with("(+232 bytes)"));
        assert!(frame.violations().is_empty());
    }

    #[test]
    fn rfc_6455_5_7_sixty_four_bit_length() {
        let mut data = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        data.resize(10 + 65536, 0xaa);
        let frame = only_frame(&data);
        assert_eq!(
            value(&frame, "payload length"),
            "65536 (64-bit length: 127, then 00 00 00 00 00 01 00 00)"
        );
        assert_eq!(bytes(&frame, "payload length"), Some((1, 10)));
        assert_eq!(bytes(&frame, "payload"), Some((10, 65546)));
        assert!(frame.violations().is_empty());
        // The note stays small however large the payload.
        assert!(render_text(&[frame]).len() < 4096);
    }

    #[test]
    fn rfc_6455_handshake_example() {
        let accept = explain_accept("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept.label, "Sec-WebSocket-Accept");
        assert_eq!(accept.value, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(value(&accept, "2. GUID"), WEBSOCKET_GUID);
        assert_eq!(
            value(&accept, "3. key + GUID"),
            "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        );
        assert_eq!(
            value(&accept, "4. SHA-1"),
            "b3 7a 4f 2c c0 62 4f 16 90 f6 46 06 cf 38 59 45 b2 be c4 ea"
        );
        assert_eq!(value(&accept, "5. base64"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(accept.violations().is_empty());
        assert_eq!(explain_accept("short").violations().len(), 1);
    }

    #[test]
    fn partial_input_reports_what_is_missing() {
        let data = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        for cut in 1..data.len() {
            let frames = annotate_ws_frames(&data[..cut]);
            assert_eq!(frames.consumed, 0);
            assert!(frames.frames.is_empty());
            let why = frames.incomplete.expect("incomplete");
            assert!(why.starts_with("frame 1 at byte 0"), "{why}");
            if cut >= 6 {
                let missing = format!("{} more needed", plural((11 - cut) as u64, "byte"));
                assert!(why.ends_with(&missing), "{why}");
            }
        }
        // A complete frame, then half of the next one.
        let mut two = vec![0x89, 0x00];
        two.extend_from_slice(&[0x82, 0x7e, 0x01]);
        let frames = annotate_ws_frames(&two);
        assert_eq!(frames.consumed, 2);
        assert_eq!(frames.frames.len(), 1);
        let why = frames.incomplete.unwrap();
        assert!(why.starts_with("frame 2 at byte 2: a binary, FIN frame whose header is 4 bytes; 3 here, 1 byte more needed"), "{why}");
        // An empty input is no frame and nothing missing.
        assert_eq!(
            annotate_ws_frames(&[]),
            WsFrames {
                frames: vec![],
                consumed: 0,
                incomplete: None
            }
        );
    }

    #[test]
    fn feeding_in_pieces_follows_the_message() {
        let mut annotator = WsAnnotator::new();
        let first = annotator.annotate(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80]);
        assert_eq!(first.consumed, 5);
        let rest = annotator.annotate(&[0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!(rest.frames[0].label, "frame 2");
        assert_eq!(value(&rest.frames[0], "message"), "\"Hello\"");
    }

    #[test]
    fn close_frame_with_code_and_reason() {
        // Masked close 1000 "bye", as a client sends it.
        let key = [1u8, 2, 3, 4];
        let plain = [0x03, 0xe8, b'b', b'y', b'e'];
        let mut data = vec![0x88, 0x80 | plain.len() as u8];
        data.extend_from_slice(&key);
        data.extend(plain.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        let frame = only_frame(&data);
        assert_eq!(value(&frame, "opcode"), "0x8 (close)");
        assert_eq!(value(&frame, "close code"), "1000 (normal closure)");
        assert_eq!(bytes(&frame, "close code"), Some((6, 8)));
        assert_eq!(value(&frame, "close reason"), "\"bye\"");
        assert_eq!(bytes(&frame, "close reason"), Some((8, 11)));
        assert!(frame.violations().is_empty());
        // Unmasked, from a server: 1001 with an empty reason.
        let frame = only_frame(&[0x88, 0x02, 0x03, 0xe9]);
        assert_eq!(value(&frame, "close code"), "1001 (going away)");
        assert_eq!(value(&frame, "close reason"), "(empty)");
    }

    fn violations(data: &[u8]) -> Vec<String> {
        annotate_ws_frames(data)
            .frames
            .iter()
            .flat_map(|f| f.violations().into_iter().map(|v| v.value.clone()))
            .collect()
    }

    #[test]
    fn violations_are_named() {
        let mut long_ping = vec![0x89, 0x7e, 0x00, 0x7e];
        long_ping.resize(4 + 126, 0);
        assert_eq!(
            violations(&long_ping),
            ["control frame longer than 125 bytes"]
        );
        assert_eq!(violations(&[0x09, 0x00]), ["fragmented control frame"]);
        assert_eq!(violations(&[0x83, 0x00]), ["reserved opcode 0x3"]);
        assert_eq!(violations(&[0x8b, 0x00]), ["reserved opcode 0xb"]);
        let mut short_in_16 = vec![0x82, 0x7e, 0x00, 0x05];
        short_in_16.extend_from_slice(b"hello");
        assert_eq!(violations(&short_in_16), ["non-minimal length encoding"]);
        let mut short_in_64 = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
        short_in_64.resize(10 + 256, 0);
        assert_eq!(violations(&short_in_64), ["non-minimal length encoding"]);
        assert_eq!(violations(&[0xa1, 0x00]), ["RSV2 set"]);
        assert_eq!(violations(&[0x91, 0x00]), ["RSV3 set"]);
        assert_eq!(violations(&[0xc9, 0x00]), ["RSV1 on a control frame"]);
        assert_eq!(
            violations(&[0x41, 0x00, 0xc0, 0x00]),
            ["RSV1 on a continuation frame"]
        );
        assert_eq!(
            violations(&[0x80, 0x00]),
            ["continuation frame without a message"]
        );
        assert_eq!(
            violations(&[0x01, 0x01, b'a', 0x81, 0x01, b'b']),
            ["new message inside a fragmented one"]
        );
        assert_eq!(
            violations(&[0x81, 0x01, 0xff]),
            ["text message that is not UTF-8"]
        );
        assert_eq!(violations(&[0x88, 0x01, 0x03]), ["close payload of 1 byte"]);
        assert_eq!(
            violations(&[0x88, 0x02, 0x03, 0xed]),
            ["close code 1005 may not be sent"]
        );
        assert_eq!(
            violations(&[0x88, 0x03, 0x03, 0xe8, 0xff]),
            ["close reason that is not UTF-8"]
        );
        let mut top_bit = vec![0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        top_bit.extend_from_slice(&[0; 4]);
        // Declares 2^63 bytes: no frame ends, and the note says why.
        let frames = annotate_ws_frames(&top_bit);
        assert!(frames.incomplete.unwrap().contains("top bit"));
        for note in annotate_ws_frames(&[0xa1, 0x00]).frames {
            assert!(note.violations().iter().all(|v| v.label == VIOLATION));
        }
    }

    #[test]
    fn compressed_messages_inflate_like_rfc_7692_says() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, in one frame and in two fragments.
        let one = only_frame(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(value(&one, "RSV1"), "1 (compressed (permessage-deflate))");
        assert_eq!(value(&one, "inflated"), "\"Hello\"");
        assert!(one.violations().is_empty());
        let two = annotate_ws_frames(&[
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ]);
        assert_eq!(value(&two.frames[1], "inflated"), "\"Hello\"");
        // §7.2.3.2: the second message refers back to the first; only an annotator that
        // keeps the window inflates it.
        let pair = [
            0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xc1, 0x05, 0xf2, 0x00, 0x11,
            0x00, 0x00,
        ];
        let kept = WsAnnotator::with_context_takeover().annotate(&pair);
        assert_eq!(value(&kept.frames[1], "inflated"), "\"Hello\"");
        // Without the window the back-reference cannot be resolved: depending on the inflate
        // backend that is an error or bytes that are not the message, never "Hello".
        let fresh = annotate_ws_frames(&pair);
        let second = &fresh.frames[1];
        assert!(
            second.find("inflated").map(|n| n.value.as_str()) != Some("\"Hello\""),
            "{second:#?}"
        );
    }

    #[test]
    fn envelopes_in_text_frames_are_read() {
        let json = br#"{"type":"event","topic":"news","id":"k3f9:42","ts":1764213600123456,"content_type":"json","data":{"a":1}}"#;
        let mut data = vec![0x81, 0x7e];
        data.extend_from_slice(&(json.len() as u16).to_be_bytes());
        data.extend_from_slice(json);
        let frame = only_frame(&data);
        assert_eq!(value(&frame, "id"), "k3f9:42");
        assert_eq!(value(&frame, "topic"), "news");
    }
}
