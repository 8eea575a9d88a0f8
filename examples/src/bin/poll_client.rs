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
//! - `limit`: most events wanted (at most 100). This client asks for no more than `--count`
//!   still needs.
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
//! One HTTP/1.1 connection is kept open and reused for every poll.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hyper::StatusCode;
use streamgate_examples::cli::Common;
use streamgate_examples::http::{read_body, refusal, Connection, CONNECT_TIMEOUT};
use streamgate_examples::message::PollAnswer;
use streamgate_examples::{Backoff, Disconnect, Flow, Order, Output};

/// The gateway's cap on events per answer.
const MAX_LIMIT: u64 = 100;

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
    let common = &args.common;
    // `--since` is simply the first cursor.
    streamgate_examples::run_sessions(
        "poll_client",
        Order::Ordered,
        common,
        ("poll failed", "polling again"),
        async |output, backoff| session(&args, output, backoff).await,
    )
    .await
}

/// Polls on one connection until it fails. `Ok` means the client is done.
async fn session(
    args: &Args,
    output: &mut Output,
    backoff: &mut Backoff,
) -> Result<(), Disconnect> {
    let common = &args.common;
    let mut connection = Connection::open(&common.gateway).await?;
    // The gateway holds a poll for up to `timeout` seconds; allow that plus the round trip.
    let answer_within = Duration::from_secs_f64(args.timeout) + CONNECT_TIMEOUT;
    output.status(format_args!(
        "polling http://{}/poll?topics={}",
        common.gateway.authority(),
        common.topics_param()
    ));
    loop {
        if connection.is_closed() {
            // HTTP/1.1: the last answer said `Connection: close` (a gateway shutting down
            // does). Not a failure: the next poll simply needs a new connection.
            connection = Connection::open(&common.gateway).await?;
        }
        let mut path = format!(
            "/poll?topics={}&timeout={}",
            common.topics_param(),
            args.timeout
        );
        if let Some(cursor) = output.resume_from() {
            path.push_str(&format!("&cursor={cursor}"));
        }
        if let Some(remaining) = output.remaining() {
            path.push_str(&format!("&limit={}", remaining.min(MAX_LIMIT)));
        }
        let response = connection.get(&path, &[], answer_within).await?;
        if response.status() != StatusCode::OK {
            return Err(refusal(response).await);
        }
        let body = read_body(response, answer_within).await?;
        // Read message by message: one this client cannot decode is skipped, and the cursor
        // still moves past it, instead of polling for the same answer forever.
        let answer = PollAnswer::parse(&body).map_err(Disconnect::retry)?;
        // A poll went through: the next outage starts from the shortest delay again.
        backoff.reset();
        for message in answer.messages {
            let message = match message {
                Ok(message) => message,
                Err(undecodable) => {
                    output.skip(&undecodable);
                    continue;
                }
            };
            if output.handle(message) == Flow::Done {
                return Ok(());
            }
        }
        output.set_resume_from(answer.cursor);
    }
}
