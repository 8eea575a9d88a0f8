//! # streamgate-transport-webtransport
//!
//! The bus over WebTransport (HTTP/3 over QUIC), on wtransport. Unlike the HTTP transports it
//! owns a listener: a UDP socket (default `127.0.0.1:4433`) served by [`WtServer`].
//!
//! - A session to `https://host:4433/wt?topics=a,b&since=<id>&mode=stream|stream-per-event|datagram`
//!   (`&envelope=binary` optional) subscribes. The server opens one unidirectional *control
//!   stream* first; its first message is `subscribed` (with `mode` and `max_datagram_size`).
//! - Every stream carries length-prefixed messages: a `u32` big-endian length, then a JSON
//!   envelope (`docs/PROTOCOL.md` §3.1), or the binary envelope (§3.3) for `binary` events and
//!   for every event with `envelope=binary` (first byte `{` or `0x01` tells which).
//! - `stream`: events and notices in order on the control stream. `stream-per-event`: each
//!   event on its own new unidirectional stream (one message, then FIN); notices on the
//!   control stream. `datagram`: each event in one datagram (the envelope, unframed); an
//!   event that does not fit `max_datagram_size` goes on the control stream as a
//!   `datagram_fallback` notice followed by the event.
//! - Client → server: `publish` messages, length-prefixed, on a client-opened bidirectional
//!   stream (one length-prefixed JSON reply each, on the same stream), or one per datagram
//!   (the reply is a datagram).
//! - Close codes: see [`wire::close_code`].
//!
//! `GET /wt/cert-hash` on the HTTP listener ([`CertHashTransport`]) gives the certificate's
//! SHA-256 and the session URL for `serverCertificateHashes`.
//!
//! A session whose URL carries `lab=<tap id>` is recorded by the gateway's lab when it has
//! one ([`WtServer::set_taps`]): QUIC packets are encrypted, so the tap gets what this layer
//! sees — the session request and its acceptance, each stream opened with its id and the
//! bytes handed to it, each datagram, the close.
#![warn(missing_docs)]

mod cert;
mod client_messages;
mod config;
mod delivery;
mod handshake;
mod server;
mod session;
mod tap;
pub mod wire;

pub use cert::{CertHashHandle, CertHashTransport, CertSource, Regenerate};
pub use config::WtConfig;
pub use server::WtServer;
