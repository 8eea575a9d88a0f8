//! # streamgate example clients
//!
//! Four small programs subscribe to a streamgate gateway, one per transport, and behave the
//! same way so they can be compared and scripted:
//!
//! | binary | transport | source |
//! | --- | --- | --- |
//! | `ws_client` | WebSocket, `GET /ws` | `src/bin/ws_client.rs` |
//! | `sse_client` | Server-Sent Events, `GET /sse` | `src/bin/sse_client.rs` |
//! | `poll_client` | HTTP long polling, `GET /poll` | `src/bin/poll_client.rs` |
//! | `wt_client` | WebTransport over HTTP/3, UDP | `src/bin/wt_client.rs` |
//!
//! ```text
//! cargo run -p streamgate -- serve                                    # a gateway with its demo topic
//! cargo run -p streamgate-examples --bin ws_client -- demo --count 3
//! ```
//!
//! Each binary's `//!` header explains its transport's wire usage; this library holds only
//! what the four share and what would otherwise distract from the transport:
//!
//! - [`cli`]: the common command line (`TOPICS…`, `--gateway`, `--since`, `--count`), with
//!   topic names and ids checked before anything is sent.
//! - [`EventId`]: the `epoch:seq` ids of `docs/PROTOCOL.md` §2, and the one comparison a
//!   client may make with them.
//! - [`message`]: the server→client envelope of §3 (JSON, and the binary envelope of §3.3).
//! - [`Output`]: one line per event on stdout, `<id> <topic> <data>`, notices and connection
//!   news on stderr, the last id to resume from, and `--count`.
//! - [`Backoff`]: the delay between reconnection attempts.
//! - [`http`]: a plain HTTP/1.1 connection (hyper) for the SSE, long-poll and
//!   WebTransport clients, and the gateway's JSON error bodies.
//!
//! # What every client does
//!
//! Connect, subscribe to the topics, print each event, remember the last id. When the
//! connection ends for any reason other than a refusal, wait ([`Backoff`]) and reconnect with
//! that id, so the gateway replays what was missed (the resume rule, §4) — and says so with a
//! `gap` or `reset` notice when it cannot. A refusal (an HTTP 4xx such as `bad_topic` or
//! `cursor_ahead`, or WebTransport's close code 4400) would only be refused again: the client
//! prints the gateway's reason and exits with status 1.
//!
//! Exit status: 0 after `--count` events (or when stdout is closed), 1 when the gateway
//! refused the subscription, 2 for a bad command line.

pub mod cli;
pub mod frames;
pub mod http;
pub mod message;

mod backoff;
mod id;
mod output;

pub use backoff::Backoff;
pub use id::EventId;
pub use output::{Flow, Order, Output};

use std::process::ExitCode;

/// Runs sessions until one ends the client: the loop every client shares. The [`Output`]
/// starts from the command line's `--since` and `--count`; after a session that can be
/// retried the client says so on stderr (`<ended>: <reason>; <again> in <delay>`), waits for
/// the [`Backoff`] and starts the next one, which resumes from the last id the output holds.
pub async fn run_sessions(
    client: &'static str,
    order: Order,
    common: &cli::Common,
    (ended, again): (&str, &str),
    mut session: impl AsyncFnMut(&mut Output, &mut Backoff) -> Result<(), Disconnect>,
) -> ExitCode {
    let mut output = Output::new(client, order, common.since.clone(), common.count);
    let mut backoff = Backoff::default();
    let (output, backoff) = (&mut output, &mut backoff);
    loop {
        match session(output, backoff).await {
            Ok(()) => return ExitCode::SUCCESS,
            Err(Disconnect::Fatal(reason)) => {
                output.status(format_args!("giving up: {reason}"));
                return ExitCode::FAILURE;
            }
            Err(Disconnect::Retry(reason)) => {
                let delay = backoff.next_delay();
                output.status(format_args!("{ended}: {reason}; {again} in {delay:.1?}"));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Why a session (one connection) ended without the client being done.
#[derive(Debug)]
pub enum Disconnect {
    /// Worth another attempt after a delay: the connection dropped, the gateway restarted or
    /// was shutting down, a network error. Resume from the last id.
    Retry(String),
    /// The gateway refused what we asked for; asking again would get the same answer.
    Fatal(String),
}

impl Disconnect {
    /// A retryable end, from anything printable.
    pub fn retry(reason: impl std::fmt::Display) -> Self {
        Self::Retry(reason.to_string())
    }
}
