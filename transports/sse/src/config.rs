//! SSE transport settings.

use std::time::Duration;

use serde::Deserialize;

/// Settings of the SSE transport (the `[sse]` table of the gateway configuration).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SseConfig {
    /// Whether the gateway serves SSE at all: with `false`, `/sse` answers `404`
    /// `transport_disabled`. The gateway acts on it, as on `webtransport.enabled`.
    /// Default: true.
    pub enabled: bool,
    /// Idle time after which a comment line is sent, so proxies and load balancers that close
    /// silent connections keep the stream. Default: 15 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub heartbeat_interval: Duration,
    /// Reconnect delay suggested to browsers with `retry:`. Default: 3 s.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub retry: Duration,
    /// End each stream after this long; `EventSource` reconnects with `Last-Event-ID` and
    /// misses nothing. Spreads long-lived clients over gateway nodes after a scale-out.
    /// `0` means never. Default: 0.
    #[serde(with = "streamgate_proto::duration_secs")]
    pub max_stream_duration: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            heartbeat_interval: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_stream_duration: Duration::ZERO,
        }
    }
}

impl SseConfig {
    /// Sets [`SseConfig::max_stream_duration`].
    pub fn max_stream_duration(mut self, duration: Duration) -> Self {
        self.max_stream_duration = duration;
        self
    }

    /// Sets [`SseConfig::retry`].
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`SseConfig::heartbeat_interval`].
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }
}
