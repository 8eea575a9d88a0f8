//! The soak test's own wire code: what the example clients used before they moved onto
//! `streamgate-client` (issue 21). It stays here only until the soak test moves onto the
//! client crate too (the next step of issue 21); nothing else uses it.
#![allow(dead_code, unreachable_pub)]

pub mod frames;
pub mod http;
mod id;
pub mod message;

pub use id::EventId;

/// Where the gateway's HTTP listener is.
pub use streamgate_client::Gateway;

/// Why a session ended without the client being done.
#[derive(Debug)]
pub enum Disconnect {
    /// Worth another attempt after a delay.
    Retry(String),
    /// The gateway refused what we asked for.
    Fatal(String),
}

impl Disconnect {
    /// A retryable end, from anything printable.
    pub fn retry(reason: impl std::fmt::Display) -> Self {
        Self::Retry(reason.to_string())
    }
}
