//! The command line every client shares.
//!
//! ```text
//! <client> [TOPICS]... [--gateway URL] [--since ID] [--count N]
//! ```
//!
//! Topic names and ids are checked here, before anything is sent, so a typo is a clear
//! message rather than a round trip to the gateway.

use std::fmt;
use std::str::FromStr;

use streamgate_client::{check_topic, EventId, Gateway};

/// Options of every client. Each binary flattens this into its own `clap` parser and adds its
/// transport's options.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Topics to subscribe to, separated by spaces or commas.
    #[arg(default_value = "demo", value_delimiter = ',')]
    pub topics: Vec<Topic>,

    /// The gateway's HTTP address (plain http://; the WebTransport client learns its UDP
    /// address from this gateway's /wt/cert-hash).
    #[arg(
        long,
        env = "STREAMGATE_GATEWAY",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway: Gateway,

    /// Resume after this event id (epoch:seq): the gateway replays every kept event of the
    /// topics that came after it, then goes live.
    #[arg(long, value_name = "ID")]
    pub since: Option<EventId>,

    /// Exit (status 0) after printing this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

impl Common {
    /// The topic names.
    pub fn topic_names(&self) -> Vec<String> {
        self.topics.iter().map(|t| t.0.clone()).collect()
    }
}

/// A topic name: 1 to 128 ASCII letters, digits, `_`, `-` or `.` (`docs/PROTOCOL.md` §1),
/// checked by the client crate's [`check_topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic(String);

impl FromStr for Topic {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        check_topic(name).map_err(|e| e.to_string())?;
        Ok(Self(name.to_owned()))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!("ris.rrc00".parse::<Topic>().is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(bad.parse::<Topic>().is_err(), "{bad:?}");
        }
    }
}
