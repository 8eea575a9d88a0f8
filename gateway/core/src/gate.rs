//! [`PublishGate`]: the per-client publish limits every transport applies, whatever path a
//! publish takes (`POST /publish`, `POST /poll`, a WebSocket or WebTransport message).
//!
//! The gateway implements it (a token bucket per client IP for the publish rate, another for
//! creating topics) and hands it to transports in [`TransportContext`]; a transport only
//! says who is publishing where, and answers a refusal in its own protocol.

use std::fmt;
use std::net::IpAddr;

use crate::event::Topic;
use crate::rejection::Rejection;
use crate::transport::TransportContext;

/// The error code of a publish over its client's publish rate.
pub const RATE_LIMITED: &str = "rate_limited";
/// The error code of a publish that would create a topic over its client's topic budget.
pub const TOPIC_BUDGET: &str = "topic_budget";

/// A publish refused by its client's limits. The client may try again after
/// `retry_after_secs`; on HTTP it is a `429` with `Retry-After`, on a WebSocket or
/// WebTransport session an `error` reply to that publish (the session stays open).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishRefusal {
    /// [`RATE_LIMITED`] or [`TOPIC_BUDGET`].
    pub code: &'static str,
    /// What limit, for people.
    pub reason: String,
    /// Seconds until the limit lets a publish through again, at least 1.
    pub retry_after_secs: u64,
}

impl PublishRefusal {
    /// A refusal with `code` (see [`RATE_LIMITED`], [`TOPIC_BUDGET`]).
    pub fn new(code: &'static str, reason: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            code,
            reason: reason.into(),
            retry_after_secs: retry_after_secs.max(1),
        }
    }
}

impl From<&PublishRefusal> for Rejection {
    /// `429` with `Retry-After` over HTTP; an `error` reply on a session, which stays open.
    fn from(refusal: &PublishRefusal) -> Self {
        Rejection::new(refusal.code, refusal.reason.clone()).retry_after(refusal.retry_after_secs)
    }
}

impl fmt::Display for PublishRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

/// Per-client limits on publishing, shared by every publish path so that a client has one
/// allowance however it publishes.
pub trait PublishGate: Send + Sync + fmt::Debug + 'static {
    /// Takes one publish from `client`'s rate. A transport whose request can only be read
    /// whole (`POST /poll`) calls it before reading, so a flood costs no body.
    ///
    /// # Errors
    /// A [`PublishRefusal`] with [`RATE_LIMITED`].
    fn admit_publish(&self, client: IpAddr) -> Result<(), PublishRefusal>;

    /// Charges `client`'s topic budget if publishing to `topic` would create it.
    ///
    /// # Errors
    /// A [`PublishRefusal`] with [`TOPIC_BUDGET`].
    fn admit_topic(&self, client: IpAddr, topic: &Topic) -> Result<(), PublishRefusal>;
}

impl TransportContext {
    /// Applies `client`'s publish limits to one publish to `topic`: its rate, then, if the
    /// topic is new, its topic budget. Always `Ok` without a gate or without a known client
    /// (an embedder calling a transport directly).
    ///
    /// # Errors
    /// The [`PublishRefusal`] to answer the publish with.
    pub fn admit_publish(
        &self,
        client: Option<IpAddr>,
        topic: &Topic,
    ) -> Result<(), PublishRefusal> {
        match (&self.publish_gate, client) {
            (Some(gate), Some(client)) => {
                gate.admit_publish(client)?;
                gate.admit_topic(client, topic)
            }
            _ => Ok(()),
        }
    }
}
