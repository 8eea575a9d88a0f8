//! [`NatsBrokerConfig`] and its validation.
//!
//! Everything that can be checked without NATS is checked up front, in
//! [`NatsBroker::new`](crate::NatsBroker::new): a typo in a stream name should stop the
//! gateway at start-up, not surface later as a retried "broker refused" loop.

use std::time::Duration;

use async_nats::ServerAddr;
use streamgate_core::BrokerError;

/// Settings of a [`NatsBroker`](crate::NatsBroker).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsBrokerConfig {
    /// NATS server URL, or several separated by commas (members of one cluster).
    /// Credentials may be given in the URL (`nats://user:pass@host:4222`).
    /// Default: `nats://127.0.0.1:4222`.
    pub url: String,
    /// Name of the JetStream stream holding the log: ASCII letters, digits, `_` and `-`.
    /// Default: `STREAMGATE`.
    pub stream: String,
    /// Subject prefix: the log uses the subjects `{prefix}.t.>`. One or more dot-separated
    /// tokens of ASCII letters, digits, `_` and `-`. Default: `streamgate`.
    pub subject_prefix: String,
    /// Most events kept per topic (the stream's `max_msgs_per_subject`). Default: 1000.
    pub history_events: usize,
    /// How long connecting may take before the call fails as unavailable. Default: 2 s.
    pub connect_timeout: Duration,
    /// How long a JetStream request (publish acknowledgement, stream or consumer
    /// management) may take. Default: 5 s.
    pub request_timeout: Duration,
    /// Interval of the idle heartbeats a feed's consumer sends, and of the client's pings.
    /// A feed that hears nothing for two intervals ends as unavailable. Default: 2 s.
    pub heartbeat: Duration,
}

impl Default for NatsBrokerConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "STREAMGATE".to_owned(),
            subject_prefix: "streamgate".to_owned(),
            history_events: 1000,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(2),
        }
    }
}

impl NatsBrokerConfig {
    /// Sets [`NatsBrokerConfig::url`].
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets [`NatsBrokerConfig::stream`].
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }

    /// Sets [`NatsBrokerConfig::subject_prefix`].
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Sets [`NatsBrokerConfig::history_events`].
    pub fn history_events(mut self, events: usize) -> Self {
        self.history_events = events;
        self
    }

    /// Sets [`NatsBrokerConfig::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`NatsBrokerConfig::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`NatsBrokerConfig::heartbeat`].
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Checks every field and parses the server list.
    pub(crate) fn validate(&self) -> Result<Vec<ServerAddr>, BrokerError> {
        let servers = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse::<ServerAddr>()
                    .map_err(|err| invalid(format!("url {url:?} is not a NATS URL: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(invalid("url is empty".to_owned()));
        }
        if !is_name(&self.stream) {
            return Err(invalid(format!(
                "stream {:?} must be 1 to 128 ASCII letters, digits, '_' or '-'",
                self.stream
            )));
        }
        if !self.subject_prefix.split('.').all(is_name) {
            return Err(invalid(format!(
                "subject_prefix {:?} must be dot-separated tokens of ASCII letters, digits, \
                 '_' or '-'",
                self.subject_prefix
            )));
        }
        if self.history_events == 0 || i64::try_from(self.history_events).is_err() {
            return Err(invalid(format!(
                "history_events must be at least 1 (got {})",
                self.history_events
            )));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("heartbeat", self.heartbeat),
        ] {
            if value.is_zero() {
                return Err(invalid(format!("{name} must be above zero")));
            }
        }
        Ok(servers)
    }
}

/// A stream name or subject token we are willing to use: narrow enough to be legal in both,
/// and never a wildcard or a reserved `$` name.
fn is_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn invalid(reason: String) -> BrokerError {
    BrokerError::Refused(format!("invalid NATS broker config: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let servers = NatsBrokerConfig::default().validate().unwrap();
        assert_eq!(servers.len(), 1);
    }

    #[test]
    fn several_urls() {
        let config = NatsBrokerConfig::default().url("nats://a:4222, nats://b:4222");
        assert_eq!(config.validate().unwrap().len(), 2);
    }

    #[test]
    fn rejects_malformed_fields() {
        let bad = [
            NatsBrokerConfig::default().url(""),
            NatsBrokerConfig::default().url("http://[::1"),
            NatsBrokerConfig::default().stream("a.b"),
            NatsBrokerConfig::default().stream(""),
            NatsBrokerConfig::default().subject_prefix("a.*"),
            NatsBrokerConfig::default().subject_prefix("a..b"),
            NatsBrokerConfig::default().subject_prefix("$JS"),
            NatsBrokerConfig::default().history_events(0),
            NatsBrokerConfig::default().heartbeat(Duration::ZERO),
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(BrokerError::Refused(_))),
                "{config:?} was accepted"
            );
        }
    }

    #[test]
    fn accepts_dotted_prefix() {
        let config = NatsBrokerConfig::default().subject_prefix("acme.prod-1.gw");
        assert!(config.validate().is_ok());
    }
}
