//! # streamgate-client
//!
//! Subscribe to a [streamgate] gateway over WebTransport, WebSocket, Server-Sent Events or
//! HTTP long polling, with the same semantics as the JavaScript client (`clients/js`,
//! `docs/CLIENTS.md`): one subscription that uses the best transport that works, falls back
//! when a network blocks one, moves back when the better one works again, and never loses or
//! repeats an event across a switch or a reconnect — the protocol's one id scheme and one
//! resume rule (`docs/PROTOCOL.md` §2, §4) make that possible.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use streamgate_client::{Item, Subscription, Transport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut sub = Subscription::builder("http://127.0.0.1:8080")
//!     .topics(["demo", "news"])
//!     .transports([Transport::WebSocket, Transport::Sse, Transport::Poll])
//!     .connect()?;
//! while let Some(item) = sub.next().await {
//!     match item {
//!         Item::Event(event) => println!("{} {} {}", event.id, event.topic, event.data.to_json()),
//!         Item::Notice(notice) => eprintln!("notice: {notice}"),
//!         Item::Transport(change) => eprintln!("transport: {change}"),
//!         _ => {}
//!     }
//! }
//! let resume_from = sub.last_id(); // give it to `.since()` next time
//! # Ok(()) }
//! ```
//!
//! # Layers
//!
//! - **Wire pieces, sans-IO and byte-exact** (always built, no runtime): [`EventId`] and
//!   topic names; the envelope decoder ([`Message`], JSON and the binary envelope of §3.3);
//!   the [`sse`] block decoder; HTTP/1.1 response heads with byte offsets and chunked bodies
//!   ([`h1`], through `httparse`); the WebTransport length prefix ([`frame`]); WebSocket frame headers with the byte range of
//!   every field ([`ws_frame`]), for tools that show every byte.
//! - **The logic, sans-IO**: the [`Cursor`] (dedupe by id, in order, epochs, notices), the
//!   [`Backoff`] schedule, and the [`controller`], the fallback-and-switch-back state machine
//!   with an injected clock. Each mirrors the JavaScript client's piece of the same name and
//!   is tested with the same test list.
//! - **Async adapters on tokio**, one per transport, behind the features `ws`, `sse`, `poll`
//!   and `webtransport` (all on by default): a tool that needs only SSE does not compile
//!   quinn. A transport whose feature is off is skipped as unsupported.
//! - **[`Subscription`]**, the public face: a [`Stream`](futures_core::Stream) of [`Item`]s,
//!   with `last_id()`, `transport()`, `transport_log()`, `publish()` and `close()`.
//!
//! WebSocket framing is tungstenite's and QUIC/HTTP/3 is wtransport's; the adapters wrap them.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod backoff;
pub mod controller;
mod cursor;
mod envelope;
pub mod frame;
pub mod h1;
mod id;
pub mod sse;
mod transport;
pub mod ws_frame;

#[cfg(feature = "io")]
mod io;

pub use backoff::Backoff;
pub use controller::{CloseFlags, ErrorReport, Incoming, LogEntry, Outcome, Role, TransportChange};
pub use cursor::Cursor;
pub use envelope::{
    describe_http_error, parse_binary_envelope, publish_message, ContentType, Data, Event, Message,
    Notice, PollAnswer, Undecodable, BINARY_ENVELOPE_VERSION,
};
pub use id::{check_topic, EventId, InvalidId, InvalidTopic};
pub use transport::{Timeouts, Transport, UnknownTransport};

/// A plain HTTP/1.1 connection on tokio over the [`h1`] pieces (feature `io`).
#[cfg(feature = "io")]
pub use io::http;
#[cfg(feature = "io")]
pub use io::{
    BuildError, Gateway, InvalidGateway, Item, PublishError, Subscription, SubscriptionBuilder,
    WebTransportMode,
};
