//! `sse_client`: subscribe to streamgate with Server-Sent Events, `GET /sse`.
//!
//! ```text
//! cargo run -p streamgate -- serve                                    # in another terminal
//! cargo run -p streamgate-examples --bin sse_client -- demo --count 5
//! ```
//!
//! SSE is what a browser's `EventSource` speaks: one long HTTP response of type
//! `text/event-stream`, read as it arrives. This client does by hand what `EventSource` does,
//! so every step is visible.
//!
//! # How streamgate speaks SSE
//!
//! **Request.** `GET /sse?topics=a,b` with `Accept: text/event-stream`. To resume, send the
//! last event id in the `Last-Event-ID` header (it wins over a `?since=` parameter). A refused
//! subscription is an HTTP 400 with a JSON body, before any stream starts.
//!
//! **Stream.** Blocks of `field: value` lines, each block ended by a blank line:
//!
//! ```text
//! retry: 3000                            how long to wait before reconnecting, ms
//!
//! : streamgate epoch k3f9x2m1q0zz        a comment (lines starting with ':' are ignored)
//!
//! id: k3f9x2m1q0zz:42                    the event id: remember it, send it back to resume
//! event: demo                            the topic
//! data: {"type":"event","topic":"demo","id":"k3f9x2m1q0zz:42",…}    the JSON envelope
//!
//! event: @gap                            a notice: '@' is outside the topic alphabet
//! data: {"type":"gap","topic":"demo","after":"…","lost_through":"…"}
//!
//! : heartbeat                            after 15 s without events
//! ```
//!
//! - Lines end with `\n`, `\r\n` or `\r`. A `data:` value with line breaks is split over
//!   several `data:` lines, which the reader joins back with `\n`.
//! - Notices (`@gap`, `@reset`, `@lagged`) carry no `id:`, so the last event id stays the last
//!   event's.
//! - SSE is text only: `binary` events arrive base64-encoded inside the envelope.
//!
//! **End of stream.** The gateway ends the stream when it shuts down (and, if configured, after
//! `sse.max_stream_duration`). That is SSE's way of saying "reconnect": wait `retry`, then
//! send the request again with `Last-Event-ID`. The gateway replays what came after it, with a
//! `@gap` or `@reset` notice first when it cannot replay everything. A connection that shows
//! nothing, not even a heartbeat, for [`IDLE_LIMIT`] is treated as dead.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use http_body_util::BodyExt;
use hyper::StatusCode;
use streamgate_examples::cli::Common;
use streamgate_examples::http::{refusal, Connection, CONNECT_TIMEOUT};
use streamgate_examples::message::ServerMessage;
use streamgate_examples::{Backoff, Disconnect, Flow, Order, Output};

/// Silence after which the stream is considered dead: the gateway sends a heartbeat comment
/// after 15 s without events, so this is three missed heartbeats.
const IDLE_LIMIT: Duration = Duration::from_secs(45);

/// Subscribe to streamgate topics over Server-Sent Events and print each event as
/// `<id> <topic> <data>`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: Common,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let common = &args.common;
    // The first delay is replaced by the stream's `retry:` once one arrives.
    streamgate_examples::run_sessions(
        "sse_client",
        Order::Ordered,
        common,
        ("disconnected", "reconnecting"),
        async |output, backoff| session(common, output, backoff).await,
    )
    .await
}

/// One stream, from the request to its end. `Ok` means the client is done.
async fn session(
    common: &Common,
    output: &mut Output,
    backoff: &mut Backoff,
) -> Result<(), Disconnect> {
    let path = format!("/sse?topics={}", common.topics_param());
    let last_event_id = output.resume_from().map(ToString::to_string);
    let mut headers = vec![("accept", "text/event-stream")];
    if let Some(id) = &last_event_id {
        headers.push(("last-event-id", id));
    }
    let mut connection = Connection::open(&common.gateway).await?;
    let response = connection.get(&path, &headers, CONNECT_TIMEOUT).await?;
    if response.status() != StatusCode::OK {
        return Err(refusal(response).await);
    }
    let is_event_stream = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_event_stream {
        return Err(Disconnect::Fatal(format!(
            "{path} did not answer with text/event-stream: is this a streamgate gateway?"
        )));
    }
    output.status(format_args!(
        "streaming {path}{}",
        last_event_id.map_or(String::new(), |id| format!(" after Last-Event-ID {id}"))
    ));
    // The gateway accepted us: the next outage starts from the shortest delay again.
    backoff.reset();

    let mut body = response.into_body();
    let mut parser = SseParser::default();
    loop {
        let frame = match tokio::time::timeout(IDLE_LIMIT, body.frame()).await {
            Err(_) => return Err(Disconnect::retry("nothing, not even a heartbeat, for 45 s")),
            Ok(None) => return Err(Disconnect::retry("the gateway ended the stream")),
            Ok(Some(Err(e))) => return Err(Disconnect::retry(format!("the stream broke: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers: nothing for us
        };
        for block in parser.feed(&chunk) {
            if let Some(retry) = block.retry {
                // The server's `retry:` is the delay before reconnecting after the stream ends.
                backoff.set_first(retry);
            }
            let Some(data) = block.data else { continue };
            let message = match ServerMessage::parse(data.as_bytes()) {
                Ok(message) => message,
                Err(mut undecodable) => {
                    // The block's `id:` line names the event even when its data is unreadable.
                    if undecodable.id.is_none() {
                        undecodable.id = block.id.as_deref().and_then(|id| id.parse().ok());
                    }
                    output.skip(&undecodable);
                    continue;
                }
            };
            if output.handle(message) == Flow::Done {
                return Ok(());
            }
        }
    }
}

/// One dispatched SSE block.
#[derive(Debug, Default, PartialEq, Eq)]
struct Block {
    /// `event:`, or `message` when the block has none. For streamgate, the topic of an event or
    /// `@gap` / `@reset` / `@lagged` for a notice.
    event: String,
    /// The joined `data:` lines; `None` when the block had none (only `retry:`, `id:`, …).
    data: Option<String>,
    /// A valid `retry:` in this block.
    retry: Option<Duration>,
    /// The block's `id:`, if any.
    id: Option<String>,
}

/// An incremental `text/event-stream` parser (WHATWG HTML, "Server-sent events"): feed it
/// bytes as they arrive, in chunks of any size, and it returns the completed blocks.
#[derive(Debug, Default)]
struct SseParser {
    /// The line being read.
    line: Vec<u8>,
    /// The previous byte was `\r`: a `\n` right after it belongs to the same line break.
    after_cr: bool,
    /// The block being read.
    block: Block,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Block> {
        let mut blocks = Vec::new();
        for &byte in bytes {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if line.is_empty() {
                        blocks.extend(self.dispatch());
                    } else {
                        self.field(&String::from_utf8_lossy(&line));
                    }
                }
                _ => self.line.push(byte),
            }
        }
        blocks
    }

    fn field(&mut self, line: &str) {
        // `name: value`; the first space after the colon is not part of the value. A line
        // starting with ':' is a comment, and a line without ':' is a field with no value.
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "" => {} // comment
            "event" => value.clone_into(&mut self.block.event),
            "data" => match &mut self.block.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.block.data = Some(value.to_owned()),
            },
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.block.retry = value.parse().ok().map(Duration::from_millis);
            }
            // `id:` is the Last-Event-ID a browser keeps. Each streamgate event carries the
            // same id in its envelope, which is where `Output` takes it from; the line's copy
            // serves when the envelope cannot be decoded. WHATWG ignores an id with a NUL.
            "id" if !value.contains('\0') => self.block.id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<Block> {
        let mut block = std::mem::take(&mut self.block);
        if block.event.is_empty() {
            "message".clone_into(&mut block.event);
        }
        (block.data.is_some() || block.retry.is_some()).then_some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_at_any_byte_and_any_line_ending() {
        let stream = b"retry: 3000\r\n\r\n: comment\n\nid: e:1\nevent: demo\ndata: a\rdata:b\r\n\n";
        let mut whole = SseParser::default();
        let expected = vec![
            Block {
                event: "message".to_owned(),
                data: None,
                retry: Some(Duration::from_secs(3)),
                id: None,
            },
            Block {
                event: "demo".to_owned(),
                data: Some("a\nb".to_owned()),
                retry: None,
                id: Some("e:1".to_owned()),
            },
        ];
        assert_eq!(whole.feed(stream), expected);
        let mut bytewise = SseParser::default();
        let blocks: Vec<Block> = stream.iter().flat_map(|b| bytewise.feed(&[*b])).collect();
        assert_eq!(blocks, expected);
    }

    #[test]
    fn an_unfinished_block_waits_for_its_blank_line() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"event: @gap\ndata: {}\n").is_empty());
        assert_eq!(parser.feed(b"\n")[0].event, "@gap");
    }
}
