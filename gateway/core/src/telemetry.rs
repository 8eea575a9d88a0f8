//! Metrics and rate-limited rejection logs, through the [`metrics`] facade.
//!
//! The gateway installs a recorder (Prometheus, rendered on `GET /metrics`); without one every
//! handle here is a no-op. Every metric is described in `docs/METRICS.md`.
//!
//! The delivery path is kept cheap: a transport builds one [`TransportMetrics`] (its handles
//! carry their labels already resolved) and clones it into each connection, so delivering an
//! event costs a few atomic increments and one histogram sample, no label allocation.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge, Histogram};

use crate::bus::{Delivery, Notice};

/// Connections (or sessions) currently open, per transport.
pub const CONNECTIONS_OPEN: &str = "streamgate_connections_open";
/// Connections (or requests, for long polling) accepted, per transport.
pub const CONNECTIONS_ACCEPTED: &str = "streamgate_connections_accepted_total";
/// Events written to subscribers, per transport.
pub const EVENTS_DELIVERED: &str = "streamgate_events_delivered_total";
/// Bytes of events and notices written to subscribers, per transport.
pub const BYTES_WRITTEN: &str = "streamgate_bytes_written_total";
/// Notices written to subscribers, per transport and kind (`lagged`, `gap`, `reset`, …).
pub const NOTICES_DELIVERED: &str = "streamgate_notices_delivered_total";
/// Publish → write latency, seconds, per transport.
pub const DELIVERY_LATENCY: &str = "streamgate_delivery_latency_seconds";
/// Publishes, per transport (`http` for `POST /publish`) and outcome (`ok` or an error code).
pub const PUBLISHES: &str = "streamgate_publishes_total";
/// Refusals, by reason (the error code).
pub const REJECTIONS: &str = "streamgate_rejections_total";

/// The metric handles of one transport, labelled `transport=<name>`. Clone it into each
/// connection (an `Arc` clone per handle).
#[derive(Clone, Debug)]
pub struct TransportMetrics {
    transport: &'static str,
    open: Gauge,
    accepted: Counter,
    events: Counter,
    bytes: Counter,
    lagged: Counter,
    gap: Counter,
    reset: Counter,
    unavailable: Counter,
    available: Counter,
    latency: Histogram,
    publishes: PublishMetrics,
}

/// The publish counter of one publish path (`streamgate_publishes_total{transport=…}`), for
/// `ClientPublish`: a transport's ([`TransportMetrics::publishes`]) or the publish
/// API's, which holds no connections to count.
#[derive(Clone, Debug)]
pub struct PublishMetrics {
    transport: &'static str,
    published: Counter,
}

impl PublishMetrics {
    /// Registers the counter of publishes through `transport` that succeed.
    pub fn new(transport: &'static str) -> Self {
        Self {
            transport,
            published: metrics::counter!(PUBLISHES, "transport" => transport, "outcome" => "ok"),
        }
    }

    /// Counts a publish: `Ok` or the error code it was refused with.
    pub fn record(&self, outcome: Result<(), &'static str>) {
        match outcome {
            Ok(()) => self.published.increment(1),
            Err(code) => metrics::counter!(
                PUBLISHES, "transport" => self.transport, "outcome" => code
            )
            .increment(1),
        }
    }
}

impl TransportMetrics {
    /// Registers the handles of `transport` with the installed recorder (no-ops without one).
    /// Call it once per transport, after the recorder is installed.
    pub fn new(transport: &'static str) -> Self {
        let notice = |kind: &'static str| metrics::counter!(NOTICES_DELIVERED, "transport" => transport, "kind" => kind);
        Self {
            transport,
            open: metrics::gauge!(CONNECTIONS_OPEN, "transport" => transport),
            accepted: metrics::counter!(CONNECTIONS_ACCEPTED, "transport" => transport),
            events: metrics::counter!(EVENTS_DELIVERED, "transport" => transport),
            bytes: metrics::counter!(BYTES_WRITTEN, "transport" => transport),
            lagged: notice("lagged"),
            gap: notice("gap"),
            reset: notice("reset"),
            unavailable: notice("unavailable"),
            available: notice("available"),
            latency: metrics::histogram!(DELIVERY_LATENCY, "transport" => transport),
            publishes: PublishMetrics::new(transport),
        }
    }

    /// The transport's name.
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// Counts an accepted connection and holds it open until the guard is dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.accepted.increment(1);
        self.open.increment(1.0);
        ConnectionGuard {
            open: self.open.clone(),
        }
    }

    /// Counts one delivery written to a subscriber in `bytes` bytes: an event (with its
    /// publish → write latency) or a notice.
    pub fn delivered(&self, delivery: &Delivery, bytes: usize) {
        match delivery {
            Delivery::Event(event) => self.event_written(event.timestamp_us, bytes),
            Delivery::Notice(notice) => self.notice_written(notice, bytes),
        }
    }

    /// Counts one event written in `bytes` bytes, published at `timestamp_us`.
    pub fn event_written(&self, timestamp_us: u64, bytes: usize) {
        self.events.increment(1);
        self.bytes.increment(bytes as u64);
        let now = now_us();
        self.latency
            .record(now.saturating_sub(timestamp_us) as f64 / 1_000_000.0);
    }

    /// Counts one notice written in `bytes` bytes.
    pub fn notice_written(&self, notice: &Notice, bytes: usize) {
        self.bytes.increment(bytes as u64);
        match notice {
            Notice::Lagged { .. } => self.lagged.increment(1),
            Notice::Gap { .. } => self.gap.increment(1),
            Notice::Reset { .. } => self.reset.increment(1),
            Notice::Unavailable { .. } => self.unavailable.increment(1),
            Notice::Available => self.available.increment(1),
        }
    }

    /// Counts a publish through this transport: `Ok` or the error code it was refused with.
    pub fn publish(&self, outcome: Result<(), &'static str>) {
        self.publishes.record(outcome);
    }

    /// The transport's publish counter, for `ClientPublish`.
    pub fn publishes(&self) -> &PublishMetrics {
        &self.publishes
    }
}

/// Keeps a connection counted in `streamgate_connections_open` until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    open: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How often one rejection reason may be logged at WARN.
pub const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

static REJECTION_LOG: LazyLock<RateLimitedLog> =
    LazyLock::new(|| RateLimitedLog::new(REJECTION_LOG_INTERVAL));

/// Counts a refusal (`streamgate_rejections_total{reason}`) and logs it at WARN to
/// `streamgate::rejection`, at most once per reason per 10 s, with how many were suppressed
/// meanwhile. `Rejection::record` calls it for every refusal; transports call it
/// for refusals in their own protocol (a WebSocket close 1008, a connection over a limit).
pub fn record_rejection(reason: &str, detail: &str) {
    metrics::counter!(REJECTIONS, "reason" => reason.to_owned()).increment(1);
    if let Some(suppressed) = REJECTION_LOG.admit(reason, Instant::now()) {
        tracing::warn!(
            target: "streamgate::rejection",
            reason,
            detail,
            suppressed,
            "rejected (at most one log per reason every {} s; `suppressed` counts the others)",
            REJECTION_LOG_INTERVAL.as_secs()
        );
    }
}

/// Lets one message per key through every `interval`, counting the ones held back.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    state: Mutex<HashMap<Arc<str>, (Instant, u64)>>,
}

/// Keys tracked at most; past it the map is cleared (keys are error codes, a small set).
const MAX_KEYS: usize = 1024;

impl RateLimitedLog {
    /// A limiter letting one message per key through every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` when a message for `key` may be logged now (`suppressed` being how
    /// many were held back since the last one), `None` when it must be held back.
    pub fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last, suppressed)) = state.get_mut(key) {
            if now.saturating_duration_since(*last) < self.interval {
                *suppressed += 1;
                return None;
            }
            let held = *suppressed;
            *last = now;
            *suppressed = 0;
            return Some(held);
        }
        if state.len() >= MAX_KEYS {
            state.clear();
        }
        state.insert(Arc::from(key), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_key_per_interval_with_the_suppressed_count() {
        let log = RateLimitedLog::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(log.admit("a", start), Some(0));
        assert_eq!(log.admit("a", start + Duration::from_secs(1)), None);
        assert_eq!(log.admit("a", start + Duration::from_secs(9)), None);
        // Another key has its own budget.
        assert_eq!(log.admit("b", start + Duration::from_secs(9)), Some(0));
        assert_eq!(log.admit("a", start + Duration::from_secs(10)), Some(2));
        assert_eq!(log.admit("a", start + Duration::from_secs(11)), None);
        assert_eq!(log.admit("a", start + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn handles_without_a_recorder_are_no_ops() {
        let metrics = TransportMetrics::new("test");
        let guard = metrics.connection();
        metrics.event_written(0, 10);
        metrics.publish(Err("bad_topic"));
        drop(guard);
        record_rejection("not_found", "no route");
    }
}
