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
//! send the request again with `Last-Event-ID` (this client waits its own backoff instead). The gateway replays what came after it, with a
//! `@gap` or `@reset` notice first when it cannot replay everything. A connection that shows
//! nothing, not even a heartbeat, for 45 s is treated as dead.

use std::process::ExitCode;

use streamgate_client::Transport;

fn main() -> ExitCode {
    streamgate_examples::main("sse_client", Transport::Sse, ABOUT)
}

/// What `--help` says first.
const ABOUT: &str = "Subscribe to streamgate topics over Server-Sent Events and print each event as `<id> <topic> <data>`.";
