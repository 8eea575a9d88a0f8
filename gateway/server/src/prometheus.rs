//! `GET /metrics`: the process-wide Prometheus recorder and the scrape-time gauges (bus state,
//! resident memory). The metrics themselves are recorded where things happen, through the
//! `metrics` facade (see `streamgate_core::telemetry` and `docs/METRICS.md`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use streamgate_core::EventBus;

/// Events published on the bus (all topics, every publisher), read from the bus at scrape time.
pub(crate) const BUS_EVENTS_PUBLISHED: &str = "streamgate_bus_events_published_total";
/// 1 while the bus (its broker) is available, else 0.
pub(crate) const BUS_AVAILABLE: &str = "streamgate_bus_available";
/// Bytes of history the bus keeps across all topics (`bus.history_memory` bounds it).
pub(crate) const HISTORY_BYTES: &str = "streamgate_history_bytes";
/// `bus.history_memory`, bytes (0: no bound).
pub(crate) const HISTORY_LIMIT: &str = "streamgate_history_limit_bytes";
/// Events evicted to keep history under `bus.history_memory`.
pub(crate) const HISTORY_EVICTIONS: &str = "streamgate_history_memory_evictions_total";
/// Topics the bus tracks.
pub(crate) const TOPICS: &str = "streamgate_topics";
/// Topics reclaimed (least recently used, without subscribers) to make room for new ones.
pub(crate) const TOPICS_RECLAIMED: &str = "streamgate_topics_reclaimed_total";
/// Resident set size of the process, bytes (Linux only).
pub(crate) const RESIDENT_MEMORY: &str = "streamgate_process_resident_memory_bytes";

/// Buckets of the latency histograms, seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often histogram samples are folded into their buckets between scrapes.
pub(crate) const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once, and returns its handle. `None` when another
/// recorder was installed first (then `/metrics` answers 404).
pub(crate) fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .expect("buckets are not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use streamgate_core::telemetry as t;
    metrics::describe_gauge!(
        t::CONNECTIONS_OPEN,
        "Connections (sessions, pending polls) open"
    );
    metrics::describe_counter!(t::CONNECTIONS_ACCEPTED, "Connections (polls) accepted");
    metrics::describe_counter!(t::EVENTS_DELIVERED, "Events written to subscribers");
    metrics::describe_counter!(t::BYTES_WRITTEN, "Bytes of events and notices written");
    metrics::describe_counter!(t::NOTICES_DELIVERED, "Notices written, by kind");
    metrics::describe_histogram!(
        t::DELIVERY_LATENCY,
        metrics::Unit::Seconds,
        "Publish (event timestamp) to write, seconds"
    );
    metrics::describe_counter!(t::PUBLISHES, "Publishes, by transport and outcome");
    metrics::describe_counter!(t::REJECTIONS, "Refusals, by reason (error code)");
    metrics::describe_counter!(BUS_EVENTS_PUBLISHED, "Events published on the bus");
    metrics::describe_gauge!(BUS_AVAILABLE, "1 while the bus is available");
    metrics::describe_gauge!(RESIDENT_MEMORY, "Resident memory of the process, bytes");
    metrics::describe_gauge!(HISTORY_BYTES, "History kept across all topics, bytes");
    metrics::describe_gauge!(HISTORY_LIMIT, "bus.history_memory, bytes (0: no bound)");
    metrics::describe_counter!(
        HISTORY_EVICTIONS,
        "Events evicted to keep history under bus.history_memory"
    );
    metrics::describe_gauge!(TOPICS, "Topics the bus tracks");
    metrics::describe_gauge!(
        crate::capacity::LISTENER_CONNECTIONS_OPEN,
        "TCP connections open on a listener (public: server.listen and tls.listen; internal)"
    );
    metrics::describe_gauge!(
        crate::capacity::LISTENER_CONNECTIONS_MAX,
        "A listener's connection cap (server.max_connections, server.internal_max_connections)"
    );
    metrics::describe_counter!(
        crate::capacity::LISTENER_REFUSED,
        "Connections refused at a listener's cap: answered 503 (answered=true) or closed"
    );
    metrics::describe_counter!(
        TOPICS_RECLAIMED,
        "Idle topics reclaimed to make room for new ones"
    );
}

/// The text exposition of every metric, after refreshing the scrape-time gauges from `bus`.
pub(crate) async fn render(handle: &PrometheusHandle, bus: &dyn EventBus) -> String {
    let health = bus.health();
    metrics::gauge!(BUS_AVAILABLE).set(if health.available { 1.0 } else { 0.0 });
    let published: u64 = bus.topic_stats().await.iter().map(|t| t.published).sum();
    metrics::counter!(BUS_EVENTS_PUBLISHED).absolute(published);
    if let Some(usage) = bus.history_usage() {
        metrics::gauge!(HISTORY_BYTES).set(usage.bytes as f64);
        metrics::gauge!(HISTORY_LIMIT).set(usage.limit as f64);
        metrics::counter!(HISTORY_EVICTIONS).absolute(usage.memory_evictions);
        metrics::gauge!(TOPICS).set(usage.topics as f64);
        metrics::counter!(TOPICS_RECLAIMED).absolute(usage.topics_reclaimed);
    }
    if let Some(rss) = resident_memory() {
        metrics::gauge!(RESIDENT_MEMORY).set(rss as f64);
    }
    handle.render()
}

/// `VmRSS` of `/proc/self/status`, in bytes; `None` off Linux.
fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory().is_some_and(|rss| rss > 0));
        }
    }
}
