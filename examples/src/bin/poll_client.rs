//! `poll_client`: subscribe to streamgate with HTTP long polling, `GET /poll`.
//!
//! ```text
//! cargo run -p streamgate -- serve                                     # in another terminal
//! cargo run -p streamgate-examples --bin poll_client -- demo --count 5
//! ```
//!
//! Long polling needs nothing but plain requests and responses, so it gets through proxies
//! and networks that break WebSocket and streaming responses. The price is a request per
//! batch, and a little latency when events come faster than round trips.
//!
//! # How streamgate speaks long polling
//!
//! **Request.** `GET /poll?topics=a,b&cursor=<cursor>&timeout=<seconds>&limit=<events>`
//! - `cursor`: where the previous answer said to continue. Absent on the very first poll,
//!   which means "from now on" (or give an event id to start after it, like `--since`).
//! - `timeout`: how long the gateway may hold the request when nothing is ready (default 25,
//!   at most 60; `0` answers at once).
//! - `limit`: most events wanted (at most 100; this client does not send it).
//!
//! **Answer.** As soon as anything is ready after the cursor (at once if it already is),
//! otherwise when the timeout passes:
//!
//! ```json
//! {"cursor":"k3f9x2m1q0zz:44","messages":[
//!   {"type":"gap","topic":"a","after":"k3f9x2m1q0zz:17","lost_through":"k3f9x2m1q0zz:40"},
//!   {"type":"event","topic":"a","id":"k3f9x2m1q0zz:43","ts":…,"content_type":"json","data":{"x":1}},
//!   {"type":"event","topic":"b","id":"k3f9x2m1q0zz:44","ts":…,"content_type":"text","data":"hi"}]}
//! ```
//!
//! `messages` holds events and notices in delivery order, the same JSON envelopes every
//! transport sends. An empty `messages` (the timeout passed) is normal: poll again.
//!
//! **The cursor is the client's whole state.** The gateway keeps nothing between polls, so
//! the loop is: poll with the cursor, handle the messages, keep the new `cursor`, repeat.
//! Keep the `cursor` rather than the last event's id: it also moves when no event came — on
//! the first poll to the head of the stream, and after a `reset` with nothing kept to
//! `<epoch>:0` — so no event falls between two polls and no reset is reported twice.
//!
//! **Failures.** A poll that fails (connection lost, gateway restarting, `503`) is simply
//! sent again with the same cursor after a delay: nothing is lost while the client is away,
//! as long as it is still in the gateway's history (a `gap` notice says when it is not).
//! One HTTP/1.1 connection is kept open and reused for every poll. The first poll asks for
//! `timeout=0`, so the gateway answers at once and confirms the subscription.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use streamgate_client::{Timeouts, Transport};
use streamgate_examples::cli::Common;

/// Subscribe to streamgate topics with HTTP long polling and print each event as
/// `<id> <topic> <data>`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Seconds the gateway may hold a poll when nothing is ready, 0 to 60 (`25`, `0.5`).
    #[arg(long, default_value = "25", value_name = "SECONDS", value_parser = hold_time)]
    timeout: f64,
}

fn hold_time(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.0..=60.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!("{text:?} is not a number of seconds from 0 to 60")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let hold = Duration::from_secs_f64(args.timeout);
    streamgate_examples::run("poll_client", Transport::Poll, &args.common, |b| {
        b.timeouts(Timeouts::default().with_poll_hold(hold))
    })
    .await
}
