//! `ws_client`: subscribe to streamgate over WebSocket (RFC 6455), `GET /ws`.
//!
//! ```text
//! cargo run -p streamgate -- serve                                   # in another terminal
//! cargo run -p streamgate-examples --bin ws_client -- demo --count 5
//! ```
//!
//! # How streamgate speaks WebSocket
//!
//! **Handshake.** An HTTP/1.1 `GET /ws?topics=a,b&since=<id>` with `Upgrade: websocket`.
//! The gateway subscribes *before* it upgrades, so a refused subscription (`bad_topic`,
//! `bad_cursor`, `cursor_ahead`) is an ordinary HTTP 400 with a JSON body, never a socket
//! that opens and closes at once. Offering the subprotocol `streamgate.v1` is optional; the
//! gateway picks it when offered, which pins the message format below. Browsers also send
//! `Origin`, which the gateway checks against `[ws.origins]`; this client sends none, which
//! the default policy allows for non-browser clients.
//!
//! **Gateway → client**, after the `101`:
//! - one text frame `{"type":"subscribed","topics":["a","b"],"epoch":"…"}`;
//! - one text frame per event, the JSON envelope
//!   `{"type":"event","topic":"a","id":"<epoch>:<seq>","ts":…,"content_type":"json","data":…}`;
//! - one **binary** frame per `binary` event, holding the binary envelope (§3.3) so the
//!   payload is not inflated by base64 (`?envelope=binary` asks for it for every event);
//! - notices as text frames: `gap`, `reset`, `lagged` (see the resume rule below).
//!
//! **Client → gateway** (this client sends nothing): JSON text frames `subscribe` (with an
//! optional `since`), `unsubscribe`, `publish`; binary frames close the connection with 1003.
//!
//! **Keepalive.** After 20 s of silence the gateway pings, and drops a peer that stays silent
//! 20 s more. tungstenite answers pings by itself — but only while the socket is being read,
//! which this client always does. In the other direction, a client that hears nothing at all
//! (not even a ping) for [`IDLE_LIMIT`] treats the connection as dead.
//!
//! **Close codes.** `1001` the gateway is shutting down; `1008` over the message rate;
//! `1009` a message too large; `1011` internal error. Whatever the code, the client's answer is
//! the same: reconnect after a delay and resume.
//!
//! # Resuming
//!
//! The client remembers the id of the last event it printed and reconnects with
//! `?since=<that id>`; the gateway replays every kept event after it, then goes live, with
//! nothing lost or repeated in between. If history no longer reaches back that far, a `gap`
//! notice says what was evicted; if the gateway restarted (a new epoch), a `reset` notice
//! comes first and everything kept is replayed. Notices are printed on stderr.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use streamgate_examples::cli::Common;
use streamgate_examples::http::describe_error;
use streamgate_examples::message::ServerMessage;
use streamgate_examples::{Backoff, Disconnect, Flow, Order, Output};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Longest the TCP connect and the upgrade may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Silence after which the connection is considered dead: the gateway pings after 20 s of
/// silence, so a live connection never stays quiet much longer than that.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// Subscribe to streamgate topics over WebSocket and print each event as `<id> <topic> <data>`.
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
    streamgate_examples::run_sessions(
        "ws_client",
        Order::Ordered,
        common,
        ("disconnected", "reconnecting"),
        async |output, backoff| session(common, output, backoff).await,
    )
    .await
}

/// One connection, from the handshake to its end. `Ok` means the client is done.
async fn session(
    common: &Common,
    output: &mut Output,
    backoff: &mut Backoff,
) -> Result<(), Disconnect> {
    let mut url = format!(
        "ws://{}/ws?topics={}",
        common.gateway.authority(),
        common.topics_param()
    );
    if let Some(since) = output.resume_from() {
        url.push_str(&format!("&since={since}"));
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Disconnect::Fatal(format!("{url}: {e}")))?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("streamgate.v1"),
    );
    let (mut socket, _response) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| Disconnect::retry("the WebSocket handshake timed out"))?
            .map_err(handshake_failure)?;
    output.status(format_args!("connected to {url}"));

    loop {
        let frame = match tokio::time::timeout(IDLE_LIMIT, socket.next()).await {
            Err(_) => return Err(Disconnect::retry("no frame, not even a ping, for 60 s")),
            Ok(None) => return Err(Disconnect::retry("the connection ended")),
            Ok(Some(Err(e))) => return Err(Disconnect::retry(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        let parsed = match &frame {
            Message::Text(text) => ServerMessage::parse(text.as_bytes()),
            // Only `binary` events come as binary frames: the §3.3 envelope.
            Message::Binary(bytes) => ServerMessage::parse(bytes),
            Message::Close(close) => {
                // tungstenite has queued our answering close frame; reading on sends it and
                // then ends the stream, which completes the closing handshake.
                let reason = describe_close(close);
                let drain = async { while let Some(Ok(_)) = socket.next().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                return Err(Disconnect::Retry(reason));
            }
            // Pings were answered by tungstenite already; pongs and raw frames say nothing.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let message = match parsed {
            Ok(message) => message,
            Err(undecodable) => {
                output.skip(&undecodable);
                continue;
            }
        };
        if matches!(message, ServerMessage::Subscribed(_)) {
            // The gateway accepted us: the next outage starts from the shortest delay again.
            backoff.reset();
        }
        if output.handle(message) == Flow::Done {
            // A polite goodbye: a close frame (1000), then the gateway's answering close.
            // Bounded, since the process is about to exit anyway.
            let goodbye = async {
                socket.close(None).await?;
                while socket.next().await.is_some() {}
                Ok::<_, WsError>(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
            return Ok(());
        }
    }
}

/// A failed handshake: the gateway's refusal (HTTP 4xx with a JSON reason) is final, anything
/// else (connection refused, 503 while shutting down) is worth another try.
fn handshake_failure(error: WsError) -> Disconnect {
    match error {
        WsError::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            let reason = describe_error(status, body);
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                Disconnect::Fatal(reason)
            } else {
                Disconnect::Retry(reason)
            }
        }
        other => Disconnect::retry(format!("cannot open the WebSocket: {other}")),
    }
}

fn describe_close(close: &Option<CloseFrame>) -> String {
    match close {
        Some(frame) => format!(
            "the gateway closed the WebSocket with {} ({})",
            u16::from(frame.code),
            frame.reason
        ),
        None => "the gateway closed the WebSocket without a code".to_owned(),
    }
}
