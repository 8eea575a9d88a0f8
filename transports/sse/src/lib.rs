//! # streamgate-transport-sse
//!
//! The bus as Server-Sent Events: `GET /sse?topics=a,b` answers `text/event-stream`, one
//! block per event (`id:` the event id, `event:` the topic, `data:` the JSON envelope of
//! `docs/PROTOCOL.md`), notices as `event: @gap` / `@reset` / `@lagged`, a `retry:` hint
//! first and a comment heartbeat while idle.
//!
//! Resume: a browser's `EventSource` reconnects on its own and sends the last `id:` it saw
//! as `Last-Event-ID`; because ids are ordered across topics, that one id resumes the whole
//! multi-topic stream. `?since=` does the same for the first connection. The header wins when
//! both are present: it is newer than the URL.
//!
//! SSE is UTF-8 text only: `binary` events travel base64 inside the JSON envelope, with
//! `content_type: "binary"` saying so.
//!
//! Over HTTP/1.1 a browser opens at most 6 connections per origin, and each `EventSource`
//! holds one: a page with more streams must share one subscription to several topics, or
//! reach the gateway over HTTP/2 (TLS), where every stream is multiplexed on one connection.
#![warn(missing_docs)]

mod body;
mod config;
mod transport;

pub use config::SseConfig;
pub use transport::SseTransport;
