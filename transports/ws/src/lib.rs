//! # streamgate-transport-ws
//!
//! The bus over WebSocket (RFC 6455), on hyper 1 + hyper-tungstenite.
//!
//! - `GET /ws?topics=a,b&since=<id>&envelope=json|binary` upgrades and subscribes; a client
//!   may also `subscribe`, `unsubscribe` and `publish` with JSON messages
//!   (`docs/PROTOCOL.md` §3.2). Text frames carry JSON envelopes; `binary` events, and every
//!   event when the client asked for `envelope=binary`, go out as binary frames.
//! - `GET /ws/echo` echoes every message: the conformance (Autobahn) and lab endpoint, served
//!   only when `ws.echo` allows it (by default while the lab is on), under the same message
//!   rate as `/ws` and, with `[auth]` on, only to a client with a token.
//!
//! The handshake is checked before upgrading ([`handshake`]), so a refused client gets an
//! HTTP status with a reason instead of a WebSocket that closes at once. After the upgrade,
//! every protocol failure ends with the close code RFC 6455 §7.4.1 names for it
//! (see [`close_for_error`]).
//!
//! Each event's envelope is encoded once (shared through `Event::encoded` by every
//! subscriber of every transport); tungstenite then copies it behind a 2-to-10-byte frame
//! header into each connection's write buffer. Several ready events are written with one
//! flush, which is what keeps fan-out cheap (one `write()` for many frames).
//!
//! permessage-deflate (RFC 7692) is negotiated when the client offers it ([`deflate`]), unless
//! the URL says `compression=off` (a page cannot stop a browser from offering it). The
//! server never keeps compression context between messages, so the compressed form of an
//! event is also computed once and shared, like its envelope.
//!
//! A connection the gateway's lab asked about (`lab=<tap id>`, a [`streamgate_core::Tap`] in
//! the request's extensions) runs over [`TapIo`], which copies the bytes it reads and writes
//! to the tap; every other connection passes through it after one `Option` check.
#![warn(missing_docs)]

mod close;
mod config;
pub mod deflate;
pub mod handshake;
mod session;
mod tap;
mod transport;

pub use close::close_for_error;
pub use config::{EchoMode, OriginPolicy, WsConfig};
pub use tap::TapIo;
pub use transport::WsTransport;
