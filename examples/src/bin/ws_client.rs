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
//! which the client always does.
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

use streamgate_client::Transport;

fn main() -> ExitCode {
    streamgate_examples::main("ws_client", Transport::WebSocket, ABOUT)
}

/// What `--help` says first.
const ABOUT: &str =
    "Subscribe to streamgate topics over WebSocket and print each event as `<id> <topic> <data>`.";
