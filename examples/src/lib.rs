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
//! Each is a thin binary over the `streamgate-client` crate (`clients/rust`), which does the
//! wire work (handshakes, framing, envelopes, resume, reconnection, backoff) the same way for
//! every transport; each binary's `//!` header explains how its transport looks on the wire.
//! This library holds only what the four share:
//!
//! - [`cli`]: the common command line (`TOPICS…`, `--gateway`, `--since`, `--count`), with
//!   topic names and ids checked before anything is sent.
//! - [`run`]: one subscription limited to the binary's transport, printed one line per event
//!   on stdout, `<id> <topic> <data>`, and notices and connection news on stderr.
//! - [`main`]: the whole `main` of a client with no options of its own (`ws_client`,
//!   `sse_client`).
//!
//! # What every client does
//!
//! Connect, subscribe to the topics, print each event, remember the last id. When the
//! connection ends for any reason other than a refusal, reconnect (at once the first time,
//! then after a growing delay) with that id, so the gateway replays what was missed (the
//! resume rule, §4) — and says so with a `gap` or `reset` notice when it cannot. A refusal (an
//! HTTP 400/401/403 such as `bad_topic` or `cursor_ahead`, or WebTransport's close code 4400)
//! would only be refused again: the client prints the gateway's reason and exits with status 1.
//!
//! Exit status: 0 after `--count` events (or when stdout is closed), 1 when the gateway
//! refused the subscription, 2 for a bad command line.

pub mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use streamgate_client::{Item, Notice, Outcome, Subscription, SubscriptionBuilder, Transport};

/// The command line of a client with no options of its own.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct CommonOnly {
    #[command(flatten)]
    common: cli::Common,
}

/// The `main` of a client with no options of its own: the common command line, with `about`
/// as its help text, then [`run`] on a single-threaded runtime.
pub fn main(client: &'static str, transport: Transport, about: &'static str) -> ExitCode {
    let matches = CommonOnly::command().about(about).get_matches();
    let args = CommonOnly::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{client}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(client, transport, &args.common, |b| b))
}

/// Runs one subscription over `transport` until `--count` events were printed, stdout closed,
/// or the gateway refused it. `configure` adds the transport's own options to the builder.
pub async fn run(
    client: &'static str,
    transport: Transport,
    common: &cli::Common,
    configure: impl FnOnce(SubscriptionBuilder) -> SubscriptionBuilder,
) -> ExitCode {
    let status = |message: std::fmt::Arguments<'_>| eprintln!("{client}: {message}");
    let builder = Subscription::builder(common.gateway.to_string())
        .topics(common.topic_names())
        .transports([transport])
        .since(common.since.clone());
    let mut sub = match configure(builder).connect() {
        Ok(sub) => sub,
        Err(e) => {
            status(format_args!("{e}"));
            return ExitCode::from(2);
        }
    };
    let mut printed = 0;
    let mut last_error = None;
    while let Some(item) = sub.recv().await {
        match item {
            Item::Event(event) => {
                let line = writeln!(
                    std::io::stdout(),
                    "{} {} {}",
                    event.id,
                    event.topic,
                    event.data.to_json()
                );
                printed += 1;
                // Stdout closed (`| head -3`): nobody is listening; end quietly.
                if line.is_err() || common.count.is_some_and(|count| printed >= count) {
                    sub.close();
                    return ExitCode::SUCCESS;
                }
            }
            Item::Notice(Notice::Undecodable(undecodable)) => {
                status(format_args!("warning: skipped {undecodable}"));
            }
            Item::Notice(notice) => status(format_args!("notice: {notice}")),
            Item::Transport(change) => match change.to {
                Some(to) => status(format_args!("subscribed over {to} ({})", change.reason)),
                None => status(format_args!("{}", change.reason)),
            },
            Item::Ended(entry) => {
                let ended = if entry.outcome == Outcome::Closed {
                    "disconnected"
                } else {
                    "connection failed"
                };
                status(format_args!("{ended}: {}; reconnecting", entry.reason));
            }
            Item::Error(error) => {
                status(format_args!("error from the gateway: {error}"));
                last_error = Some(error);
            }
            _ => {}
        }
    }
    let reason = last_error.map_or("the subscription ended".to_owned(), |e| e.to_string());
    status(format_args!("giving up: {reason}"));
    ExitCode::FAILURE
}
