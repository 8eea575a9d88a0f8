//! # streamgate-bus-nats
//!
//! The NATS JetStream backend of the [`Broker`](streamgate_core::Broker) trait: many gateway
//! nodes share one log of events kept by NATS.
//!
//! ## How the log maps onto JetStream
//!
//! - **One stream is the log.** It captures the subjects `{prefix}.t.>`, one subject per
//!   topic (module `subject` explains the escaping), keeps at most `history_events`
//!   messages per subject (discarding the oldest), stores them on disk and has no other
//!   limit.
//! - **The stream sequence is the event sequence.** JetStream numbers every message of a
//!   stream with one counter, which is exactly the bus-wide sequence an [`EventId`] needs:
//!   the same on every node, strictly increasing across topics. An append is a JetStream
//!   publish; the sequence in its acknowledgement is the event's id.
//! - **The stream's creation time is the epoch** (module `epoch`). Restarting the server
//!   keeps the stream, its messages and its creation time, so ids stay valid; deleting and
//!   recreating the stream starts a new epoch, and nodes holding old ids are told their
//!   history reset.
//! - **A feed is an ordered push consumer** (module `feed`): ephemeral, no acks, flow
//!   control and idle heartbeats, starting after the node's last sequence. Anything that
//!   could break the order (a missed delivery, a lost connection, a deleted stream) ends the
//!   feed with an error instead of being repaired silently; the caller reopens it from the
//!   last sequence it holds, which is always correct.
//! - **`Feed::evicted` errs on the side of a loss** (module `evicted`): NATS does not say
//!   which messages it trimmed, so a topic that may have been trimmed reports its first
//!   retained sequence minus one.
//!
//! The whole design, with its limits, is described in `docs/SCALE_OUT.md` ("NATS JetStream backend").
//!
//! ## Availability
//!
//! [`NatsBroker::new`] never talks to NATS: a gateway starts while NATS is down and its
//! broker bus keeps retrying. The connection is opened on first use with a short timeout,
//! then re-established by the client in the background; while it is down every call fails
//! fast with [`BrokerError::Unavailable`](streamgate_core::BrokerError::Unavailable).
//!
//! [`EventId`]: streamgate_core::EventId
#![warn(missing_docs)]

mod broker;
mod config;
mod connection;
mod epoch;
mod errors;
mod evicted;
mod feed;
mod message;
mod stream_setup;
mod subject;

pub use broker::NatsBroker;
pub use config::NatsBrokerConfig;
