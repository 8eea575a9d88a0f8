//! # streamgate-proto
//!
//! The protocol logic streamgate owns, written without I/O so that it is unit-tested and
//! fuzzed directly: the envelope of `docs/PROTOCOL.md` (JSON and binary), client messages,
//! subscription query strings, and the clocks of a connection (keepalive and rate limits)
//! as state machines that are handed the current time instead of reading it.
//!
//! Nothing here opens a socket, spawns a task or reads a clock; transports do that and call
//! in. (The split follows quinn-proto / quinn.)
//!
//! The choice of envelope for one subscriber ([`EnvelopeFormat::for_event`]) and the replies
//! to client messages ([`publish_reply`], [`error_reply`]) live here once for every
//! transport. Refusals of client input are [`Rejection`]s, the one refusal type of
//! `streamgate-core`.
//!
//! What these bytes look like to a learner (the lab's annotator) is `streamgate-lab`'s.
#![warn(missing_docs)]

mod client;
mod cors;
pub mod duration_secs;
mod envelope;
mod keepalive;
mod origin;
mod query;
mod rate;
mod sse;

pub use client::{ClientMessage, PublishRequest, MAX_REF_LEN};
pub use cors::{CorsPolicy, Preflight, ALLOWED_HEADERS, ALLOWED_METHODS, EXPOSED_HEADERS};
pub use envelope::{
    binary_envelope, encode_error, encode_event_binary, encode_event_json, encode_notice,
    encode_published, encode_subscribed, error_reply, json_envelope, publish_reply,
    BINARY_ENVELOPE_VERSION,
};
pub use keepalive::{Keepalive, KeepaliveAction};
pub use origin::{
    check_cookie_request, default_port, is_listed, is_same_origin, CsrfRequest, Origin,
};
pub use query::{EnvelopeFormat, SubscribeQuery};
pub use rate::TokenBucket;
pub use sse::{
    encode_sse_block, parse_last_event_id, sse_comment, sse_event, sse_notice, sse_retry,
    SSE_NOTICE_PREFIX,
};
/// The refusals of client input are [`streamgate_core::Rejection`]s, like every refusal.
pub use streamgate_core::Rejection;
