//! Long-polling transport settings.

use std::time::Duration;

use serde::Deserialize;

/// Settings of the long-polling transport (the `[longpoll]` table of the gateway
/// configuration).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LongPollConfig {
    /// Whether the gateway serves long polling at all: with `false`, `GET` and `POST /poll`
    /// answer `404` `transport_disabled`. The gateway acts on it, as on
    /// `webtransport.enabled`. Default: true.
    pub enabled: bool,
    /// How long a poll is held when nothing is ready and the client names no `timeout`.
    /// Default: 25 s (below the 30 s idle timeout of many proxies).
    #[serde(with = "streamgate_proto::duration_secs")]
    pub default_timeout: Duration,
    /// Longest hold a client may ask for with `timeout=`; longer requests are clamped.
    /// Default: 60 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub max_timeout: Duration,
    /// Most events in one response (a client may ask for fewer with `limit=`). Notices do not
    /// count. Default: 100.
    pub max_batch_events: usize,
    /// Most bytes of envelopes in one response. A response always carries at least one event
    /// when one is ready, however large. Default: 256 KiB.
    pub max_batch_bytes: usize,
    /// Largest `POST /poll` body, in bytes; larger is refused with 413. Room for a `publish`
    /// of a 1 MiB binary payload in base64 and its envelope. Default: 1.5 MiB.
    pub max_message_size: usize,
}

impl Default for LongPollConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_timeout: Duration::from_secs(25),
            max_timeout: Duration::from_secs(60),
            max_batch_events: 100,
            max_batch_bytes: 256 * 1024,
            max_message_size: 1024 * 1024 * 3 / 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_tables() {
        let config: LongPollConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, LongPollConfig::default());
        let config: LongPollConfig =
            serde_json::from_str(r#"{"default_timeout": 2.5, "max_batch_events": 7}"#).unwrap();
        assert_eq!(config.default_timeout, Duration::from_millis(2500));
        assert_eq!(config.max_batch_events, 7);
        assert_eq!(config.max_timeout, Duration::from_secs(60));
        assert!(serde_json::from_str::<LongPollConfig>(r#"{"timeout": 1}"#).is_err());
        assert!(serde_json::from_str::<LongPollConfig>(r#"{"max_timeout": -1}"#).is_err());
    }
}
