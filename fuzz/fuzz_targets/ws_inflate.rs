//! permessage-deflate, inbound: the sans-IO machine every compressed WebSocket message of a
//! client goes through before tungstenite (`ws::deflate::Inbound`), the lab's
//! `MessageInflater`, and the offer parser (`negotiate_values`).
//!
//! Input layout: byte 0 picks the settings, byte 1 how the rest is cut into reads; the rest is
//! the client's byte stream. Properties: never panics; the inbound machine never buffers more
//! than a bounded multiple of `max_message`; the inflater refuses what inflates past its
//! limit; and a message compressed by the gateway's own `compress`, sent as one masked
//! frame, comes out of the inbound machine as that message, intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate_lab::wire_notes::MessageInflater;
use ws::deflate::{compress, negotiate_values, Inbound};

const MAX_MESSAGE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (settings, chunk, stream) = (data[0], usize::from(data[1]).max(1), &data[2..]);
    let no_context_takeover = settings & 1 == 1;

    // The server's inbound machine, fed in reads of `chunk` bytes, its output drained as
    // tungstenite would.
    let mut inbound = Inbound::new(MAX_MESSAGE, no_context_takeover);
    for read in stream.chunks(chunk) {
        inbound.push(read);
        // What passes through, plus at most one inflated message (and its header) per two
        // bytes read: a small message never inflates past `max_message`.
        assert!(inbound.output().len() <= read.len() + (read.len() / 2 + 1) * (MAX_MESSAGE + 14));
        let n = inbound.output().len();
        inbound.consume(n);
        if inbound.at_eof() {
            break;
        }
    }

    // The lab's inflater on the same bytes, cut into messages at every byte `fe`.
    let mut inflater = MessageInflater::new(!no_context_takeover, 4096);
    for message in stream.split(|&b| b == 0xfe) {
        if let Ok(out) = inflater.inflate(message) {
            assert!(out.len() <= 4096);
        }
    }

    // Offers as a client writes them.
    if let Ok(text) = std::str::from_utf8(stream) {
        let _ = negotiate_values(text.split('\n').map(str::as_bytes));
    }

    // Round trip: the payload compressed as one message, in one masked binary frame.
    if let Some(compressed) = compress(stream) {
        let mut frame = vec![0x80 | 0x40 | 0x02];
        let len = compressed.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= 0xffff {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [settings, data[1], 0x5a, 0xa5];
        frame.extend_from_slice(&mask);
        frame.extend(compressed.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let mut inbound = Inbound::new(MAX_MESSAGE.max(stream.len()), no_context_takeover);
        for read in frame.chunks(chunk) {
            inbound.push(read);
        }
        assert!(inbound.failure().is_none(), "{:?}", inbound.failure());
        let out = inbound.output();
        assert_eq!(out[0], 0x82, "FIN, binary, RSV1 clear");
        assert!(
            out.ends_with(stream),
            "the message inflates to what was sent"
        );
    }
});
