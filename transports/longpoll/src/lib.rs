//! # streamgate-transport-longpoll
//!
//! The bus over HTTP long polling, for clients that have neither WebSocket nor `EventSource`
//! (or sit behind proxies that break them).
//!
//! - `GET /poll?topics=a,b&cursor=<id>&timeout=<s>&limit=<n>` subscribes from `cursor`,
//!   answers at once when something is ready, else holds the request until the first delivery,
//!   the timeout or the gateway's shutdown, and answers
//!   `{"cursor":"<next cursor>","messages":[<envelope>,…]}`. The client polls again with the
//!   cursor it got; nothing is kept for it between requests.
//! - `POST /poll` takes one JSON client message; only `publish` applies, through the
//!   gateway's one publish path (`streamgate_core::ClientPublish`), its rate taken before the
//!   body is read.
//!
//! The envelopes in a batch are the encodings every transport shares (`json_envelope`,
//! cached in the event), copied verbatim into the body. The pure rules (query, limits, next
//! cursor) are in [`poll`], tested without I/O. The wire format is in this crate's README.
#![warn(missing_docs)]

mod config;
pub mod poll;
mod transport;

pub use config::LongPollConfig;
pub use transport::LongPollTransport;
