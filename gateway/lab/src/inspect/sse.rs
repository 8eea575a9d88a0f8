//! `inspect http://…/sse`: what an `EventSource` sends and gets, one layer at a time — the
//! request, the response head, the HTTP/1.1 chunks that carry a body of unknown length, and
//! the SSE blocks inside them.

use crate::wire_notes::{annotate_chunks, annotate_sse};
use anyhow::Context as _;
use streamgate_client::h1::BodyFraming;
use tokio::io::AsyncReadExt as _;

use super::http;
use super::{Printer, Run, Side, Stop};

pub(super) async fn run(Run(target, args, stop, printer): Run<'_>) -> anyhow::Result<()> {
    // What a browser's EventSource sends, Last-Event-ID included when it resumes.
    let mut headers = vec![
        ("Accept", "text/event-stream"),
        ("Cache-Control", "no-cache"),
    ];
    if let Some(since) = &args.since {
        headers.push(("Last-Event-ID", since));
    }
    let what = [
        "the request, as an EventSource sends it",
        "the response head",
        "stopped before the server answered",
    ];
    let refused = [
        "Why the request was refused (docs/PROTOCOL.md §6).",
        "the server answered",
    ];
    let at = (&*target.authority(), &*target.path_and_query());
    let Some((mut tcp, mut raw, head)) =
        http::open_stream(at, &headers, what, (200, refused), stop, printer).await?
    else {
        return Ok(());
    };
    let chunked = head.head.framing() == BodyFraming::Chunked;
    if chunked {
        printer.say("the body is chunked: each piece the server writes comes as a chunk (size in hex, data, CR LF); the SSE text is inside");
    }

    // The SSE text taken out of the chunks, and how far into it blocks were shown.
    let mut text = Vec::new();
    let mut stopped = false;
    loop {
        let mut events = 0;
        if chunked {
            let (chunks, consumed) = annotate_chunks(&raw);
            for chunk in chunks {
                let (start, end) = chunk.bytes.unwrap_or((0, 0));
                if let Some((data_start, data_end)) = chunk.find("chunk data").and_then(|n| n.bytes)
                {
                    text.extend_from_slice(&raw[data_start..data_end]);
                }
                let last = chunk.label == "last chunk";
                printer.record(
                    Side::Server,
                    if last {
                        "the last chunk: the body ends"
                    } else {
                        "an HTTP chunk"
                    },
                    end - start,
                    &[chunk.rebased(start)],
                );
                events += show_blocks(&mut text, printer);
                if last {
                    printer.say("the server ended the stream; an EventSource would reconnect after its retry delay, sending Last-Event-ID");
                    stop.saw_events(events);
                    return Ok(());
                }
            }
            raw.drain(..consumed);
        } else if !raw.is_empty() {
            // Not chunked (an HTTP/1.0 peer, or a proxy): the body is the SSE text itself.
            printer.record(Side::Server, "body bytes", raw.len(), &[]);
            text.append(&mut raw);
            events += show_blocks(&mut text, printer);
        }
        if stop.saw_events(events) || stopped {
            printer.say("closing the TCP connection: that is how an SSE client stops (an EventSource's close())");
            return Ok(());
        }
        tokio::select! {
            why = stop.reached() => {
                printer.say(match why {
                    Stop::Deadline => "--duration reached",
                    Stop::Interrupted => "interrupted",
                });
                stopped = true;
            }
            read = tcp.read_buf(&mut raw) => {
                if read.context("reading the stream")? == 0 {
                    printer.say("the server closed the connection; an EventSource would reconnect after its retry delay, sending Last-Event-ID");
                    return Ok(());
                }
            }
        }
    }
}

/// Prints the complete SSE blocks at the start of `text` and removes them; returns how many
/// events they carried.
fn show_blocks(text: &mut Vec<u8>, printer: &mut Printer) -> u64 {
    let (blocks, consumed) = annotate_sse(text);
    let mut events = 0;
    for block in blocks {
        let start = block.bytes.map_or(0, |(start, _)| start);
        events += u64::from(block.label == "SSE event");
        printer.nested(
            "an SSE block in that data (offsets from the block's first byte):",
            &[block.rebased(start)],
        );
    }
    text.drain(..consumed);
    events
}
