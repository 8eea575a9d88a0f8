//! `wt_client`: subscribe to streamgate over WebTransport (HTTP/3 over QUIC, UDP).
//!
//! ```text
//! cargo run -p streamgate -- serve                                   # in another terminal
//! cargo run -p streamgate-examples --bin wt_client -- demo --count 5
//! cargo run -p streamgate-examples --bin wt_client -- demo --mode datagram
//! ```
//!
//! # How streamgate speaks WebTransport
//!
//! **Finding the endpoint.** WebTransport has its own UDP listener (default
//! `127.0.0.1:4433`), and a freshly generated, self-signed certificate that no certificate
//! authority vouches for. `GET /wt/cert-hash` on the gateway's ordinary HTTP listener answers
//!
//! ```json
//! {"algorithm":"sha-256","value":[183,12,…],"hex":"b70c…","url":"https://127.0.0.1:4433/wt",
//!  "self_signed":true,"generation":0}
//! ```
//!
//! and the client *pins* that hash instead of validating a chain — what browsers do with
//! `serverCertificateHashes`. The gateway renews the certificate every 10 days, so fetch the
//! document right before each connect, never once for good. `url` is the address the gateway
//! bound; when that is a loopback address but the gateway was reached under another name,
//! this client uses that name with the document's port.
//!
//! **Session.** `https://host:4433/wt?topics=a,b&since=<id>&mode=<mode>` (one HTTP/3
//! extended CONNECT). A bad query is accepted and then closed at once with code 4400 and the
//! reason `<error code>: <reason>`, so the client can read why.
//!
//! **The control stream.** The gateway opens one unidirectional stream as soon as the
//! session is up: the first stream the client accepts. Its first message is
//! `{"type":"subscribed","topics":[…],"epoch":"…","mode":"stream","max_datagram_size":1295}`.
//! On every stream, a message is a `u32` big-endian length and that many bytes: a JSON
//! envelope (first byte `{`) or, for `binary` events, the binary envelope (first byte `0x01`).
//!
//! **Modes** (`--mode`): where events travel.
//! - `stream` (default): events and notices in order on the control stream, like a WebSocket.
//!   Reliable and ordered; one lost packet holds back every later event (head-of-line
//!   blocking).
//! - `stream-per-event`: each event on a new unidirectional stream (one message, then FIN);
//!   notices stay on the control stream. A lost packet delays only its own event, so events
//!   can arrive out of id order.
//! - `datagram`: one event per QUIC datagram, with no length prefix. Lowest latency, but a lost
//!   datagram is never resent and no notice says so. An event too large for a datagram comes
//!   on the control stream, announced by a `datagram_fallback` notice.
//!
//! In the two unordered modes the resume point is the highest id seen, so an event still in
//! flight when the connection drops can be missed after reconnecting; only `stream` mode
//! guarantees the resume rule end to end.
//!
//! **Close codes** (QUIC application close, reason in UTF-8): `1001` shutdown, `1008` a
//! session limit, `1009` a message too large, `1013` too many sessions (try later), `4400` the
//! session URL was refused (final: this client exits). Anything but 4400 means: reconnect
//! after a delay with `since=<last id>`.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use streamgate_client::{Transport, WebTransportMode};
use streamgate_examples::cli::Common;

/// Subscribe to streamgate topics over WebTransport and print each event as
/// `<id> <topic> <data>`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: Common,

    /// Where events travel: in order on the control stream, one stream each, or datagrams.
    #[arg(long, value_enum, default_value_t = Mode::Stream)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Stream,
    StreamPerEvent,
    Datagram,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mode = match args.mode {
        Mode::Stream => WebTransportMode::Stream,
        Mode::StreamPerEvent => WebTransportMode::StreamPerEvent,
        Mode::Datagram => WebTransportMode::Datagram,
    };
    streamgate_examples::run("wt_client", Transport::WebTransport, &args.common, |b| {
        b.webtransport_mode(mode)
    })
    .await
}
