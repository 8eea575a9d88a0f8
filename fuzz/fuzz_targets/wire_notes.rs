//! The lab's annotators (`streamgate_lab::wire_notes`): WebSocket frames, the
//! `Sec-WebSocket-Accept` computation, HTTP heads, chunked bodies, SSE, envelopes, long-poll
//! bodies and length-prefixed WebTransport messages, and the text renderer. They read bytes a
//! tap captured from any client, so they must never panic, loop or allocate without bound;
//! `fuzz_annotate` runs all of them and asserts that no annotator claims more bytes than it
//! was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    streamgate_lab::wire_notes::fuzz_annotate(data);
});
