//! # `streamgate explain-frame` and `streamgate inspect`: the protocols on the wire
//!
//! The command-line half of the teaching lab. Both print trees of
//! [`Note`]s from [`crate::wire_notes`]: every field of every
//! message, its bytes, its value and why it is there.
//!
//! - `explain-frame` decodes WebSocket frames typed as hex, for instance the examples of
//!   RFC 6455 §5.7.
//! - `inspect <url>` connects to a gateway as a client and prints the exchange as that client
//!   sees it, both directions, in order, with timestamps and sizes. The clients are written
//!   here by hand over a `TcpStream` on purpose: a library would hide the bytes this command
//!   exists to show. WebTransport is the exception: QUIC encrypts every packet, so there is no
//!   plaintext to show below the streams and datagrams, and `inspect` says so.
//!
//! | URL | what is shown |
//! | --- | --- |
//! | `ws://host:port/ws?topics=…` | upgrade request, 101 response and the accept-key check, every frame both ways (pings answered, close handshake) |
//! | `http://host:port/sse?topics=…` | request, response head, each chunk of the chunked body, each SSE block |
//! | `http://host:port/poll?topics=…` | each poll: request, how long the server held it, response head, body, cursor |
//! | `wt`, `wt://…` or `https://host:4433/wt?…` | certificate hash, session, each stream and datagram, decoded |

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::wire_notes::{annotate_ws_frames, render_text, render_text_brief, Note};
use clap::Args;
use tokio_util::sync::CancellationToken;

mod http;
mod poll;
mod sse;
mod url;
mod ws;
#[cfg(feature = "webtransport")]
mod wt;

pub use url::{Target, Transport};

/// `streamgate explain-frame`.
#[derive(Debug, Args)]
pub struct ExplainFrameArgs {
    /// One or more WebSocket frames in hex, e.g. `81 85 37 fa 21 3d 7f 9f 4d 51 58`
    /// (spaces, colons and `0x` prefixes are allowed; several arguments are joined).
    #[arg(required = true, value_name = "HEX")]
    pub hex: Vec<String>,
    /// Print the notes as JSON instead of a tree.
    #[arg(long)]
    pub json: bool,
    /// Leave out the explanations: one line per field.
    #[arg(long)]
    pub brief: bool,
}

/// `streamgate inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// What to connect to: `ws://host:port/ws?topics=…`, `http://host:port/sse?topics=…`,
    /// `http://host:port/poll?topics=…`, or WebTransport as `https://host:4433/wt?topics=…`,
    /// `wt://host:4433/wt?topics=…` or just `wt?topics=…` (the URL then comes from
    /// `/wt/cert-hash`).
    #[arg(value_name = "URL")]
    pub url: String,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds (without `--count` or `--duration`, Ctrl-C stops).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Resume after this event id: `since=` for WebSocket and WebTransport, a
    /// `Last-Event-ID` header for SSE, the first `cursor=` for long polling.
    #[arg(long, value_name = "ID")]
    pub since: Option<String>,
    /// WebSocket: offer permessage-deflate (RFC 7692), as browsers do, and show the
    /// compressed frames and what they inflate to.
    #[arg(long)]
    pub deflate: bool,
    /// Long polling: the `timeout=` to ask for, in seconds (the server holds a poll at most
    /// that long when nothing is ready).
    #[arg(long, value_name = "SECS")]
    pub poll_timeout: Option<u64>,
    /// WebTransport: the gateway's HTTP address, where `/wt/cert-hash` gives the
    /// certificate hash to pin (default: the WebTransport host, port 8080).
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Leave out the explanations: one line per field.
    #[arg(long)]
    pub brief: bool,
}

/// Runs `explain-frame`: exit 0 when the input is whole frames, 1 when it ends inside a
/// frame (the tree shows the complete ones and says how many bytes the next one lacks), 2
/// when it is not hex.
pub fn explain_frame(args: &ExplainFrameArgs) -> ExitCode {
    let bytes = match parse_hex(&args.hex.join(" ")) {
        Ok(bytes) => bytes,
        Err(message) => {
            eprintln!("streamgate explain-frame: {message}");
            return ExitCode::from(2);
        }
    };
    let frames = annotate_ws_frames(&bytes);
    let mut out = String::new();
    if args.json {
        match serde_json::to_string_pretty(&frames) {
            Ok(json) => out.push_str(&json),
            Err(e) => {
                eprintln!("streamgate explain-frame: {e}");
                return ExitCode::FAILURE;
            }
        }
        out.push('\n');
    } else {
        let _ = writeln!(
            out,
            "{} of input, {}:\n",
            plural(bytes.len(), "byte"),
            plural(frames.frames.len(), "complete frame")
        );
        out.push_str(&if args.brief {
            render_text_brief(&frames.frames)
        } else {
            render_text(&frames.frames)
        });
        if let Some(why) = &frames.incomplete {
            let _ = writeln!(out, "\nincomplete: {why}");
        }
    }
    print_out(&out);
    if frames.incomplete.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Hex as people paste it: `81 85`, `81:85`, `0x81 0x85`, `8185`, `0x8185`.
///
/// # Errors
/// A message naming the first character that is not a hex digit, or an odd digit count.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let mut digits = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || c == ':' || c == ',') {
        let word = word
            .strip_prefix("0x")
            .or_else(|| word.strip_prefix("0X"))
            .unwrap_or(word);
        for ch in word.chars() {
            let Some(digit) = ch.to_digit(16) else {
                return Err(format!(
                    "bad hex: {ch:?} is not a hex digit (write bytes like `81 85 37 fa`; spaces, colons and 0x prefixes are allowed)"
                ));
            };
            digits.push(digit as u8);
        }
    }
    if digits.is_empty() {
        return Err("bad hex: no bytes given".to_owned());
    }
    if digits.len() % 2 == 1 {
        return Err(format!(
            "bad hex: {} hex digits is an odd number; every byte is two digits",
            digits.len()
        ));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair[1])
        .collect())
}

/// Runs `inspect`: exit 0 after a clean run, 1 when the connection failed or the server
/// refused, 2 for a URL it cannot inspect.
pub fn run(args: &InspectArgs) -> ExitCode {
    let target = match Target::parse(&args.url) {
        Ok(target) => target,
        Err(message) => {
            eprintln!("streamgate inspect: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("streamgate inspect: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut printer = Printer::new(args.brief);
    let stop = StopWhen::new(args);
    let outcome = runtime.block_on(async {
        stop.listen_for_interrupt();
        let run = Run(&target, args, &stop, &mut printer);
        match target.transport {
            Transport::WebSocket => ws::run(run).await,
            Transport::Sse => sse::run(run).await,
            Transport::Poll => poll::run(run).await,
            #[cfg(feature = "webtransport")]
            Transport::WebTransport => wt::run(run).await,
            #[cfg(not(feature = "webtransport"))]
            Transport::WebTransport => Err(anyhow::anyhow!(
                "this streamgate was built without the `webtransport` feature: it has no \
                 WebTransport client (rebuild with `--features webtransport`)"
            )),
        }
    });
    printer.summary(stop.events_seen());
    // Background tasks (a WebTransport endpoint's driver) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamgate inspect: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One run of `inspect`, as each transport's `run` takes it: what to connect to, how (the
/// arguments), when to stop, and where to print.
#[derive(Debug)]
pub(crate) struct Run<'a>(
    pub(crate) &'a Target,
    pub(crate) &'a InspectArgs,
    pub(crate) &'a StopWhen,
    pub(crate) &'a mut Printer,
);

/// The target with `since=` when `--since` is given: how WebSocket and WebTransport resume.
pub(crate) fn resume_target(target: &Target, args: &InspectArgs) -> Target {
    let mut target = target.clone();
    if let Some(since) = &args.since {
        target.set_param("since", since);
    }
    target
}

/// When to stop: after `--count` events, at `--duration`, or on Ctrl-C.
#[derive(Debug)]
pub(crate) struct StopWhen {
    count: Option<u64>,
    deadline: Option<tokio::time::Instant>,
    seen: std::sync::atomic::AtomicU64,
    /// Cancelled on Ctrl-C, by one listener for the whole run, so that no Ctrl-C falls
    /// between two waits.
    interrupted: CancellationToken,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Deadline,
    Interrupted,
}

impl StopWhen {
    fn new(args: &InspectArgs) -> Self {
        let deadline = args
            .duration
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(|secs| tokio::time::Instant::now() + Duration::from_secs_f64(secs.min(1e9)));
        Self {
            count: args.count,
            deadline,
            seen: 0.into(),
            interrupted: CancellationToken::new(),
        }
    }

    /// Counts `events` more; true once `--count` is reached.
    pub(crate) fn saw_events(&self, events: u64) -> bool {
        use std::sync::atomic::Ordering;
        let seen = self.seen.fetch_add(events, Ordering::Relaxed) + events;
        self.count.is_some_and(|count| seen >= count)
    }

    /// Whether `--duration` has passed.
    pub(crate) fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|at| tokio::time::Instant::now() >= at)
    }

    /// Whether `--count` is already reached (for `--count 0`).
    pub(crate) fn done(&self) -> bool {
        self.saw_events(0)
    }

    fn events_seen(&self) -> u64 {
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts listening for Ctrl-C (inside the runtime). After it the run stops politely: a
    /// close handshake, bounded, instead of the process dying mid-frame.
    fn listen_for_interrupt(&self) {
        let interrupted = self.interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.cancel();
            }
        });
    }

    /// Resolves at the deadline or on Ctrl-C; never otherwise.
    pub(crate) async fn reached(&self) -> Stop {
        let deadline = async {
            match self.deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => Stop::Deadline,
            () = self.interrupted.cancelled() => Stop::Interrupted,
        }
    }
}

/// Who sent the bytes of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// Writes the run to stdout: a timestamped header per record, its notes indented below.
#[derive(Debug)]
pub(crate) struct Printer {
    started: Instant,
    brief: bool,
    sent: u64,
    received: u64,
}

impl Printer {
    fn new(brief: bool) -> Self {
        Self {
            started: Instant::now(),
            brief,
            sent: 0,
            received: 0,
        }
    }

    fn stamp(&self) -> String {
        format!("[+{:.3}s]", self.started.elapsed().as_secs_f64())
    }

    /// A line of narration: what happens, not bytes.
    pub(crate) fn say(&mut self, text: &str) {
        let stamp = self.stamp();
        let mut out = String::new();
        for (i, line) in wrap(text, WIDTH - stamp.len() - 1).iter().enumerate() {
            let margin = if i == 0 { stamp.as_str() } else { "" };
            let _ = writeln!(out, "{margin:>width$} {line}", width = stamp.len());
        }
        print_out(&out);
    }

    /// An explanation below the last line, indented, without a timestamp; left out with
    /// `--brief`, like the explanations in the trees.
    pub(crate) fn detail(&mut self, text: &str) {
        if self.brief {
            return;
        }
        let mut out = String::new();
        for line in wrap(text, WIDTH - 4) {
            let _ = writeln!(out, "    {line}");
        }
        print_out(&out);
    }

    /// `wire_bytes` sent by `side`, described as `what`, and their notes.
    pub(crate) fn record(&mut self, side: Side, what: &str, wire_bytes: usize, notes: &[Note]) {
        let arrow = match side {
            Side::Client => {
                self.sent += wire_bytes as u64;
                "→ client"
            }
            Side::Server => {
                self.received += wire_bytes as u64;
                "← server"
            }
        };
        let mut out = format!(
            "\n{} {arrow}: {what} ({})\n",
            self.stamp(),
            plural(wire_bytes, "byte")
        );
        let tree = if self.brief {
            render_text_brief(notes)
        } else {
            render_text(notes)
        };
        for line in tree.lines() {
            let _ = writeln!(out, "    {line}");
        }
        print_out(&out);
    }

    /// Notes found inside the last record (SSE blocks in a chunk), under a title, indented
    /// one level deeper.
    pub(crate) fn nested(&mut self, title: &str, notes: &[Note]) {
        let tree = if self.brief {
            render_text_brief(notes)
        } else {
            render_text(notes)
        };
        let mut out = format!("    {title}\n");
        for line in tree.lines() {
            let _ = writeln!(out, "        {line}");
        }
        print_out(&out);
    }

    /// Counts bytes that were not shown as a record (QUIC payloads, a discarded body).
    pub(crate) fn count(&mut self, side: Side, bytes: usize) {
        match side {
            Side::Client => self.sent += bytes as u64,
            Side::Server => self.received += bytes as u64,
        }
    }

    fn summary(&mut self, events: u64) {
        let text = format!(
            "done after {:.3}s: {}, {} sent, {} received",
            self.started.elapsed().as_secs_f64(),
            plural(events as usize, "event"),
            plural(self.sent as usize, "byte"),
            plural(self.received as usize, "byte"),
        );
        print_out(&format!("\n{text}\n"));
    }
}

/// How many streamgate events a tree of notes carries.
pub(crate) fn events_in(note: &Note) -> u64 {
    let own = u64::from(note.label == "streamgate envelope" && note.value.starts_with("event "));
    own + note.children.iter().map(events_in).sum::<u64>()
}

/// Narration is wrapped to this many columns (the trees wrap their explanations too).
const WIDTH: usize = 100;

/// Writes to stdout, ignoring a closed pipe (`inspect … | head` must not panic).
fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

pub(crate) use crate::wire_notes::plural;
use crate::wire_notes::wrap;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_as_people_paste_it() {
        assert_eq!(parse_hex("81 85").unwrap(), [0x81, 0x85]);
        assert_eq!(parse_hex("81:85").unwrap(), [0x81, 0x85]);
        assert_eq!(parse_hex("0x81 0X85").unwrap(), [0x81, 0x85]);
        assert_eq!(parse_hex("0x8185\n").unwrap(), [0x81, 0x85]);
        assert!(parse_hex("8").unwrap_err().contains("odd"));
        assert!(parse_hex("zz").unwrap_err().contains("'z'"));
        assert!(parse_hex("  ").unwrap_err().contains("no bytes"));
    }
}
