//! `inspect ws://…`: a WebSocket client written out over a `TcpStream`, so that every byte
//! it sends and receives can be shown.
//!
//! It does what a browser does and no more: the opening handshake (RFC 6455 §4.1), with the
//! accept key checked; optionally the permessage-deflate offer browsers make (RFC 7692);
//! frames read and annotated as they arrive; a pong for every ping (§5.5.2); and the closing
//! handshake (§7), started by us when the run is over or answered when the server starts it.

use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use streamgate_client::h1::ResponseHead;
use streamgate_client::ws_frame;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::http;
use super::{events_in, resume_target, Printer, Run, Side};
use crate::wire_notes::{explain_accept, WsAnnotator};

/// How long the close handshake may take before we drop the connection, as a browser would.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The offer Chromium makes.
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

pub(super) async fn run(Run(target, args, stop, printer): Run<'_>) -> anyhow::Result<()> {
    let target = resume_target(target, args);
    // A fresh random key per handshake: the answer proves the server read this request,
    // not a cached one (RFC 6455 §4.1, §10.3).
    let key = BASE64.encode(rand::random::<[u8; 16]>());
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key.as_str()),
        ("Sec-WebSocket-Version", "13"),
    ];
    if args.deflate {
        headers.push(("Sec-WebSocket-Extensions", DEFLATE_OFFER));
    }
    let what = [
        "the opening handshake, an HTTP/1.1 upgrade request",
        "the handshake response head",
        "stopped before the server answered the handshake",
    ];
    let refused = [
        "Why the server refused the upgrade (docs/PROTOCOL.md §6).",
        "the server refused the upgrade:",
    ];
    let at = (&*target.authority(), &*target.path_and_query());
    let Some((tcp, mut buf, response)) =
        http::open_stream(at, &headers, what, (101, refused), stop, printer).await?
    else {
        return Ok(());
    };
    check_accept(&key, &response.head, printer)?;
    let mut inbound = inbound_annotator(&response.head, args.deflate, printer);
    let mut outbound = WsAnnotator::new();
    printer.say(
        "from here on the connection carries WebSocket frames, not HTTP; offsets below count from the start of each frame",
    );

    let mut session = Session { tcp, closing: None };
    if stop.done() {
        session
            .send_close(&mut outbound, printer, "--count reached")
            .await?;
    }
    loop {
        let frames = inbound.annotate(&buf);
        let consumed = frames.consumed;
        for note in frames.frames {
            let (start, end) = note.bytes.unwrap_or((0, 0));
            let raw = &buf[start..end];
            let (opcode, payload) = frame_parts(raw);
            let what = match opcode {
                0x1 => "a text frame",
                0x2 => "a binary frame",
                0x0 => "a continuation frame",
                0x8 => "a close frame",
                0x9 => "a ping",
                0xa => "a pong",
                _ => "a frame",
            };
            let events = events_in(&note);
            printer.record(Side::Server, what, raw.len(), &[note.rebased(start)]);
            match opcode {
                0x9 => {
                    session
                        .send_frame(
                            &mut outbound,
                            printer,
                            0xa,
                            &payload,
                            "the pong that answers the ping, same payload (RFC 6455 §5.5.3)",
                        )
                        .await?;
                }
                0x8 => {
                    if session.closing.is_some() {
                        printer.say("the server answered our close frame: the closing handshake is complete, and the server closes the TCP connection first (RFC 6455 §7.1.1)");
                    } else {
                        // Echo the status code, as RFC 6455 §5.5.1 suggests.
                        let code = payload.get(..2).unwrap_or(&[]).to_vec();
                        session
                            .send_frame(
                                &mut outbound,
                                printer,
                                0x8,
                                &code,
                                "our close frame, answering the server's (RFC 6455 §5.5.1)",
                            )
                            .await?;
                    }
                    wait_for_tcp_close(&mut session.tcp, printer).await;
                    return Ok(());
                }
                _ => {}
            }
            if stop.saw_events(events) && session.closing.is_none() {
                session
                    .send_close(&mut outbound, printer, "--count reached")
                    .await?;
            }
        }
        buf.drain(..consumed);

        let read = match session.closing {
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    printer.say("no close frame came back in time: dropping the TCP connection, as a browser would");
                    return Ok(());
                }
                read = session.tcp.read_buf(&mut buf) => read,
            },
            None => tokio::select! {
                why = stop.reached() => {
                    let reason = match why {
                        super::Stop::Deadline => "--duration reached",
                        super::Stop::Interrupted => "interrupted",
                    };
                    session.send_close(&mut outbound, printer, reason).await?;
                    continue;
                }
                read = session.tcp.read_buf(&mut buf) => read,
            },
        };
        if read.context("reading frames")? == 0 {
            printer.say(if buf.is_empty() {
                "the server closed the TCP connection without a close frame: an abnormal closure, which a browser reports as code 1006"
            } else {
                "the server closed the TCP connection in the middle of a frame"
            });
            return Ok(());
        }
    }
}

/// The connection once upgraded.
struct Session {
    tcp: TcpStream,
    /// When we sent our close frame, how long we wait for the server's.
    closing: Option<tokio::time::Instant>,
}

impl Session {
    /// Sends one masked frame and shows it.
    async fn send_frame(
        &mut self,
        annotator: &mut WsAnnotator,
        printer: &mut Printer,
        opcode: u8,
        payload: &[u8],
        what: &str,
    ) -> anyhow::Result<()> {
        let frame = masked_frame(opcode, payload);
        self.tcp
            .write_all(&frame)
            .await
            .context("sending a frame")?;
        let notes = annotator.annotate(&frame).frames;
        printer.record(Side::Client, what, frame.len(), &notes);
        Ok(())
    }

    /// Starts the closing handshake with 1000 (normal closure).
    async fn send_close(
        &mut self,
        annotator: &mut WsAnnotator,
        printer: &mut Printer,
        why: &str,
    ) -> anyhow::Result<()> {
        printer.say(&format!("{why}: closing the WebSocket the polite way"));
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"inspect done");
        self.send_frame(
            annotator,
            printer,
            0x8,
            &payload,
            "our close frame, 1000 (normal closure)",
        )
        .await?;
        self.closing = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
        Ok(())
    }
}

/// A client frame: FIN set, masked with a fresh random key (RFC 6455 §5.3). Only control
/// frames are sent, so the payload is cut to what a control frame may carry.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(ws_frame::MAX_SHORT_LEN as usize)];
    ws_frame::encode_masked(true, opcode, rand::random(), payload)
}

/// The opcode and unmasked payload of a complete frame (the annotator has cut `raw` to one).
fn frame_parts(raw: &[u8]) -> (u8, Vec<u8>) {
    let Ok(header) = ws_frame::parse_header(raw) else {
        return (0xff, Vec::new());
    };
    let mut payload = raw
        .get(header.payload_offset()..)
        .unwrap_or_default()
        .to_vec();
    header.unmask(&mut payload, 0);
    (header.opcode, payload)
}

/// Checks the 101's accept key against the one computed from our key, and says so.
fn check_accept(key: &str, response: &ResponseHead, printer: &mut Printer) -> anyhow::Result<()> {
    let expected = explain_accept(key);
    match response.header("sec-websocket-accept") {
        Some(got) if got == expected.value => {
printer.say(&format!(
                "✓ Sec-WebSocket-Accept {got} matches base64(SHA-1(our key + GUID)), computed step by step under the request above: the server read our handshake and speaks WebSocket."
            ));
            Ok(())
        }
        Some(got) => bail!(
            "Sec-WebSocket-Accept {got} is not {}: a client must fail the connection (RFC 6455 §4.1)",
            expected.value
        ),
        None => bail!("the 101 response has no Sec-WebSocket-Accept (RFC 6455 §4.1)"),
    }
}

/// The annotator for the server's frames, set up for what the handshake negotiated.
fn inbound_annotator(response: &ResponseHead, offered: bool, printer: &mut Printer) -> WsAnnotator {
    match response.header("sec-websocket-extensions") {
        Some(extensions) if extensions.starts_with("permessage-deflate") => {
            if extensions.contains("server_no_context_takeover") {
                printer.detail("permessage-deflate is on, with server_no_context_takeover: each message the server compresses stands alone; small ones (under 100 bytes) come uncompressed, RSV1 clear.");
                WsAnnotator::new()
            } else {
                printer.detail("permessage-deflate is on, with context takeover: a compressed message may refer back to earlier ones, so every one is inflated in order.");
                WsAnnotator::with_context_takeover()
            }
        }
        _ => {
            if offered {
                printer.detail(
                    "The server declined permessage-deflate: every frame comes uncompressed.",
                );
            }
            WsAnnotator::new()
        }
    }
}

/// After the close frames, the server closes TCP first (RFC 6455 §7.1.1); wait for it, boundedly.
async fn wait_for_tcp_close(tcp: &mut TcpStream, printer: &mut Printer) {
    let mut rest = Vec::new();
    match tokio::time::timeout(CLOSE_TIMEOUT, tcp.read_to_end(&mut rest)).await {
        Ok(Ok(_)) if rest.is_empty() => {
            printer.say("the server closed the TCP connection (FIN): the connection is over");
        }
        Ok(Ok(_)) => {
            printer.count(Side::Server, rest.len());
            printer.say(&format!(
                "the server sent {} more bytes after its close frame, then closed the TCP connection",
                rest.len()
            ));
        }
        Ok(Err(e)) => printer.say(&format!("the TCP connection ended with an error: {e}")),
        Err(_) => printer.say("the server kept the TCP connection open; dropping it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire_notes::annotate_ws_frames;

    #[test]
    fn our_frames_are_masked_control_frames() {
        let frame = masked_frame(0x8, &[0x03, 0xe8, b'o', b'k']);
        assert_eq!(frame[0], 0x88);
        assert_eq!(frame[1], 0x80 | 4);
        let (opcode, payload) = frame_parts(&frame);
        assert_eq!((opcode, payload), (0x8, vec![0x03, 0xe8, b'o', b'k']));
        let notes = annotate_ws_frames(&frame);
        assert_eq!(
            notes.frames[0].find("close code").unwrap().value,
            "1000 (normal closure)"
        );
        assert!(notes.frames[0].violations().is_empty());
        assert_eq!(
            frame_parts(&[0x89, 0x05, b'H', b'e', b'l', b'l', b'o']),
            (0x9, b"Hello".to_vec())
        );
    }
}
