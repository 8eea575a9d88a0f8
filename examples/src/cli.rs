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

use crate::EventId;

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
    /// The topics as the gateway's query parameter wants them: `a,b`.
    pub fn topics_param(&self) -> String {
        let names: Vec<&str> = self.topics.iter().map(|t| t.0.as_str()).collect();
        names.join(",")
    }
}

/// A topic name: 1 to 128 ASCII letters, digits, `_`, `-` or `.` (`docs/PROTOCOL.md` §1). The
/// alphabet needs no escaping anywhere, which is why the clients can put names in a URL as
/// they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic(String);

impl FromStr for Topic {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
        if name.is_empty() || name.len() > 128 || !name.bytes().all(allowed) {
            return Err(format!(
                "{name:?} is not a topic name: use 1 to 128 ASCII letters, digits, '_', '-' or '.'"
            ));
        }
        Ok(Self(name.to_owned()))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the gateway's HTTP listener is: `http://host:port`, or `host:port` for short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    host: String,
    port: u16,
}

impl Gateway {
    /// `host:port`, for the `Host` header and for connecting.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host name or address, without brackets or port.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl FromStr for Gateway {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let uri: http::Uri = with_scheme
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "{text:?}: these examples speak plain http:// to the gateway's HTTP listener \
                 (default 127.0.0.1:8080), not its HTTPS one"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{text:?}: give only the gateway's address, http://host:port; \
                 the clients add the paths themselves"
            ));
        }
        let host = uri.host().ok_or_else(|| format!("{text:?} has no host"))?;
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_owned(),
            port: uri.port_u16().unwrap_or(80),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_addresses() {
        let gateway: Gateway = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(gateway.authority(), "127.0.0.1:8080");
        assert_eq!(
            "localhost:9".parse::<Gateway>().unwrap().authority(),
            "localhost:9"
        );
        assert_eq!("http://[::1]:80/".parse::<Gateway>().unwrap().host(), "::1");
        assert_eq!(
            "http://[::1]:80/".parse::<Gateway>().unwrap().authority(),
            "[::1]:80"
        );
        for bad in [
            "https://h:8443",
            "ws://h:1",
            "http://h:1/ws",
            "http://h:1/?x",
            "::",
        ] {
            assert!(bad.parse::<Gateway>().is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_names() {
        assert!("ris.rrc00".parse::<Topic>().is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(bad.parse::<Topic>().is_err(), "{bad:?}");
        }
    }
}
