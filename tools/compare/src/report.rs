//! Turning runs into rows: medians over repeats, the terminal table, JSON and the chart.

use std::path::PathBuf;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Bus, Deployment, Plan, Transport};
use crate::chart::{ChartText, LatencySeries};
use crate::run::RunReport;
use crate::stats::{format_table, latency_histogram, median, percentile_points, LatencySummary};

/// One transport at one subscriber count on one bus: the median of each figure over the
/// repeats, and the worst run for every loss counter.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The transport.
    pub transport: Transport,
    /// Subscribers.
    pub subscribers: usize,
    /// The bus and its nodes, as the table names them: `memory`, `redis×2`, ….
    pub bus: String,
    /// The bus alone.
    pub bus_backend: Bus,
    /// Gateway processes sharing the bus (publisher on node A, subscribers on the others).
    /// The gateway CPU and memory figures are summed over all of them.
    pub nodes: usize,
    /// Connection setup, median, ms.
    pub setup_p50_ms: f64,
    /// Connection setup, 99th percentile, ms.
    pub setup_p99_ms: f64,
    /// Bytes read by a client from connect to subscribed.
    pub setup_bytes_down: f64,
    /// Bytes written by a client from connect to subscribed.
    pub setup_bytes_up: f64,
    /// Publish → receive latency of the open-loop phase (from the scheduled send time, or
    /// with `--netem` from the gateway's publish timestamp).
    pub latency: LatencySummary,
    /// Gateway publish timestamp → receive.
    pub fanout_latency: LatencySummary,
    /// Delivered events per second at saturation (0 if not run).
    pub saturated_per_sec: f64,
    /// Bytes read per delivered event, framing and headers included.
    pub wire_down_per_event: f64,
    /// Bytes written per delivered event (requests, acknowledgements).
    pub wire_up_per_event: f64,
    /// Envelope bytes per event.
    pub message_bytes_per_event: f64,
    /// `ws-deflate`: whether the gateway accepted the extension.
    pub deflate_accepted: Option<bool>,
    /// Uncompressed frame bytes over wire bytes, where compression was negotiated.
    pub compression_ratio: Option<f64>,
    /// Gateway CPU per 1 000 deliveries in the open-loop phase, ms.
    pub gateway_cpu_ms_per_1k: f64,
    /// Gateway CPU per 1 000 deliveries at saturation, ms.
    pub gateway_cpu_ms_per_1k_saturated: f64,
    /// Gateway RSS per connection, KiB.
    pub gateway_rss_per_connection_kib: f64,
    /// Client CPU per 1 000 deliveries, ms.
    pub client_cpu_ms_per_1k: f64,
    /// Long polling: polls per delivered event.
    pub polls_per_event: f64,
    /// Open-loop events published per run.
    pub events: u64,
    /// Open-loop deliveries (median run).
    pub deliveries: u64,
    /// Open-loop deliveries expected (median run).
    pub expected_deliveries: u64,
    /// Worst run: open-loop deliveries missing.
    pub missing: u64,
    /// Worst run: saturation deliveries missing.
    pub saturation_missing: u64,
    /// Worst run: deliveries out of order.
    pub misordered: u64,
    /// Worst run: subscribers that saw other ids than the rest.
    pub id_mismatches: usize,
    /// Worst run: connections that ended early.
    pub dropped: usize,
    /// Worst run: subscribers that could not connect.
    pub connect_failures: usize,
    /// Worst run: `lagged` plus `gap` notices.
    pub lag_notices: u64,
    /// The furthest the open-loop publisher fell behind, ms (median run).
    pub publisher_behind_max_ms: f64,
    /// `(percentile, µs)` of the open-loop latency, all repeats merged.
    pub latency_distribution: Vec<(f64, f64)>,
    /// A broker row: its figures over the memory row's of the same transport and count,
    /// when the run had one (see [`compare_with_memory`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_memory: Option<VsMemory>,
    /// Every run.
    pub runs: Vec<RunReport>,
}

impl Row {
    /// Summarises the runs of one transport and count (at least one).
    ///
    /// # Panics
    /// If `runs` is empty.
    pub fn from_runs(runs: Vec<RunReport>, latency_from_gateway: bool) -> Self {
        let of = |f: &dyn Fn(&RunReport) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let worst = |f: &dyn Fn(&RunReport) -> u64| runs.iter().map(f).max().unwrap_or(0);
        let headline = |r: &RunReport| {
            if latency_from_gateway {
                r.open_loop.fanout_latency
            } else {
                r.open_loop.latency
            }
        };
        let latency = LatencySummary {
            samples: worst(&|r| headline(r).samples),
            p50_us: of(&|r| headline(r).p50_us),
            p90_us: of(&|r| headline(r).p90_us),
            p99_us: of(&|r| headline(r).p99_us),
            p999_us: of(&|r| headline(r).p999_us),
            max_us: of(&|r| headline(r).max_us),
        };
        let fanout_latency = LatencySummary {
            samples: worst(&|r| r.open_loop.fanout_latency.samples),
            p50_us: of(&|r| r.open_loop.fanout_latency.p50_us),
            p90_us: of(&|r| r.open_loop.fanout_latency.p90_us),
            p99_us: of(&|r| r.open_loop.fanout_latency.p99_us),
            p999_us: of(&|r| r.open_loop.fanout_latency.p999_us),
            max_us: of(&|r| r.open_loop.fanout_latency.max_us),
        };
        let mut merged: Histogram<u64> = latency_histogram();
        for run in &runs {
            if let Some([scheduled, gateway]) = &run.open_loop_histograms {
                let _ = merged.add(if latency_from_gateway {
                    gateway
                } else {
                    scheduled
                });
            }
        }
        let deflate_accepted = runs[0].deflate_accepted;
        let wire_down = of(&|r| r.open_loop.wire_down_per_event);
        let frame = of(&|r| r.open_loop.frame_bytes_per_event);
        let saturated = |f: &dyn Fn(&crate::run::PhaseReport) -> f64| {
            of(&|r| r.saturation.as_ref().map_or(0.0, f))
        };
        let deployment = Deployment {
            bus: runs[0].bus,
            nodes: runs[0].nodes,
        };
        Self {
            transport: runs[0].transport,
            subscribers: runs[0].subscribers,
            bus: deployment.label(),
            bus_backend: deployment.bus,
            nodes: deployment.nodes,
            setup_p50_ms: of(&|r| r.setup.p50_ms),
            setup_p99_ms: of(&|r| r.setup.p99_ms),
            setup_bytes_down: of(&|r| r.setup.bytes_down),
            setup_bytes_up: of(&|r| r.setup.bytes_up),
            latency,
            fanout_latency,
            saturated_per_sec: saturated(&|p| p.delivered_per_sec),
            wire_down_per_event: wire_down,
            wire_up_per_event: of(&|r| r.open_loop.wire_up_per_event),
            message_bytes_per_event: of(&|r| r.open_loop.message_bytes_per_event),
            deflate_accepted,
            compression_ratio: (deflate_accepted == Some(true) && wire_down > 0.0)
                .then(|| frame / wire_down),
            gateway_cpu_ms_per_1k: of(&|r| r.open_loop.gateway_cpu_ms_per_1k),
            gateway_cpu_ms_per_1k_saturated: saturated(&|p| p.gateway_cpu_ms_per_1k),
            gateway_rss_per_connection_kib: of(&|r| r.gateway_rss_per_connection_kib),
            client_cpu_ms_per_1k: of(&|r| r.open_loop.client_cpu_ms_per_1k),
            polls_per_event: of(&|r| r.open_loop.polls_per_event),
            events: runs[0].open_loop.events,
            deliveries: median(
                &runs
                    .iter()
                    .map(|r| r.open_loop.deliveries)
                    .collect::<Vec<_>>(),
            ),
            expected_deliveries: median(
                &runs
                    .iter()
                    .map(|r| r.open_loop.expected_deliveries)
                    .collect::<Vec<_>>(),
            ),
            missing: worst(&|r| r.open_loop.missing),
            saturation_missing: worst(&|r| r.saturation.as_ref().map_or(0, |p| p.missing)),
            misordered: worst(&|r| {
                r.open_loop.misordered + r.saturation.as_ref().map_or(0, |p| p.misordered)
            }),
            id_mismatches: worst(&|r| r.open_loop.id_mismatches as u64) as usize,
            dropped: worst(&|r| r.dropped as u64) as usize,
            connect_failures: worst(&|r| r.connect_failures as u64) as usize,
            lag_notices: worst(&|r| r.lagged + r.gaps),
            publisher_behind_max_ms: of(&|r| r.open_loop.publish.behind_max_ns as f64 / 1e6),
            latency_distribution: percentile_points(&merged),
            vs_memory: None,
            runs,
        }
    }

    /// The name in tables: the transport, the count when several are compared, the bus
    /// when it is not the memory bus and `with_bus`.
    fn label(&self, with_count: bool, with_bus: bool) -> String {
        let mut label = self.transport.name().to_owned();
        if with_count {
            label.push_str(&format!(" ×{}", self.subscribers));
        }
        if with_bus && self.bus_backend.is_broker() {
            label.push(' ');
            label.push_str(&self.bus);
        }
        label
    }
}

/// A broker row's latency and throughput over those of the memory row with the same
/// transport and count, from the same run of the tool: the price of going through the
/// broker (and, with several nodes, across processes) on the same machine.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct VsMemory {
    /// Latency p50 over memory's.
    pub p50: f64,
    /// Latency p99 over memory's.
    pub p99: f64,
    /// Latency p99.9 over memory's.
    pub p999: f64,
    /// Delivered events/s at saturation over memory's (below 1: slower).
    pub saturated_per_sec: f64,
}

/// Fills in [`Row::vs_memory`] of every broker row that has a memory row to compare with.
pub fn compare_with_memory(rows: &mut [Row]) {
    let ratio = |value: f64, memory: f64| {
        if memory > 0.0 {
            value / memory
        } else {
            f64::NAN
        }
    };
    let ratios: Vec<Option<VsMemory>> = rows
        .iter()
        .map(|row| {
            let memory = rows.iter().find(|memory| {
                !memory.bus_backend.is_broker()
                    && memory.transport == row.transport
                    && memory.subscribers == row.subscribers
            })?;
            row.bus_backend.is_broker().then(|| VsMemory {
                p50: ratio(row.latency.p50_us, memory.latency.p50_us),
                p99: ratio(row.latency.p99_us, memory.latency.p99_us),
                p999: ratio(row.latency.p999_us, memory.latency.p999_us),
                saturated_per_sec: ratio(row.saturated_per_sec, memory.saturated_per_sec),
            })
        })
        .collect();
    for (row, vs_memory) in rows.iter_mut().zip(ratios) {
        row.vs_memory = vs_memory;
    }
}

/// Whether the rows come from more than the memory bus, so tables name the bus.
fn several_buses(rows: &[Row]) -> bool {
    rows.iter().any(|row| row.bus_backend.is_broker())
}

/// The bus comparison: latency and throughput of every row, and each broker row's over
/// the memory row of the same transport and count. `None` when no row has a memory row
/// to compare with.
pub fn bus_table(rows: &[Row]) -> Option<String> {
    if rows.iter().all(|row| row.vs_memory.is_none()) {
        return None;
    }
    let with_count = rows
        .iter()
        .any(|row| row.subscribers != rows[0].subscribers);
    let header = [
        "transport",
        "bus",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "saturated ev/s",
        "p50 ×mem",
        "p99 ×mem",
        "p99.9 ×mem",
        "ev/s ×mem",
    ];
    let times = |value: Option<f64>| match value {
        Some(value) if value.is_finite() => format!("{value:.2}×"),
        _ => "-".to_owned(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let vs = row.vs_memory;
            vec![
                row.label(with_count, false),
                row.bus.clone(),
                ms(row.latency.p50_us),
                ms(row.latency.p99_us),
                ms(row.latency.p999_us),
                format!("{:.0}", row.saturated_per_sec),
                times(vs.map(|vs| vs.p50)),
                times(vs.map(|vs| vs.p99)),
                times(vs.map(|vs| vs.p999)),
                times(vs.map(|vs| vs.saturated_per_sec)),
            ]
        })
        .collect();
    Some(format_table(&header, &cells))
}

/// Milliseconds from microseconds, to 2 decimals (3 below 1 ms).
fn ms(us: f64) -> String {
    if us < 1_000.0 {
        format!("{:.3}", us / 1e3)
    } else {
        format!("{:.2}", us / 1e3)
    }
}

/// The main table.
pub fn table(rows: &[Row]) -> String {
    let with_count = rows
        .iter()
        .any(|row| row.subscribers != rows[0].subscribers);
    let with_bus = several_buses(rows);
    let mut header = vec![
        "transport",
        "setup p50/p99 ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "saturated ev/s",
        "down B/ev",
        "up B/ev",
        "compression",
        "gw CPU ms/1k open/sat",
        "gw KiB/conn",
        "lost",
    ];
    if with_bus {
        header.insert(1, "bus");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                row.label(with_count, false),
                format!("{:.2}/{:.2}", row.setup_p50_ms, row.setup_p99_ms),
                ms(row.latency.p50_us),
                ms(row.latency.p90_us),
                ms(row.latency.p99_us),
                ms(row.latency.p999_us),
                ms(row.latency.max_us),
                format!("{:.0}", row.saturated_per_sec),
                format!("{:.1}", row.wire_down_per_event),
                format!("{:.1}", row.wire_up_per_event),
                match (row.deflate_accepted, row.compression_ratio) {
                    (Some(false), _) => "declined".to_owned(),
                    (_, Some(ratio)) => format!("{ratio:.2}×"),
                    _ => "-".to_owned(),
                },
                format!(
                    "{:.1}/{:.2}",
                    row.gateway_cpu_ms_per_1k, row.gateway_cpu_ms_per_1k_saturated
                ),
                format!("{:.1}", row.gateway_rss_per_connection_kib),
                if row.transport.reliable() {
                    row.missing.to_string()
                } else {
                    format!(
                        "{} ({:.2}% sat.)",
                        row.missing,
                        loss_percent(row.saturation_missing, row)
                    )
                },
            ];
            if with_bus {
                cells.insert(1, row.bus.clone());
            }
            cells
        })
        .collect();
    format_table(&header, &cells)
}

/// Saturation loss as a percentage of what the median run expected.
fn loss_percent(missing: u64, row: &Row) -> f64 {
    let expected = row
        .runs
        .iter()
        .filter_map(|r| r.saturation.as_ref())
        .map(|p| p.expected_deliveries)
        .max()
        .unwrap_or(0);
    if expected == 0 {
        0.0
    } else {
        missing as f64 * 100.0 / expected as f64
    }
}

/// Lines that warn about anything that makes a row's figures suspect.
pub fn warnings(row: &Row) -> Vec<String> {
    let name = row.label(true, true);
    let mut notes = Vec::new();
    for run in &row.runs {
        let mut problems = Vec::new();
        if run.open_loop.missing > 0 && row.transport.reliable() {
            problems.push(format!(
                "{} of {} deliveries missing",
                run.open_loop.missing, run.open_loop.expected_deliveries
            ));
        }
        if let Some(saturation) = run.saturation.as_ref() {
            if saturation.missing > 0 && row.transport.reliable() {
                problems.push(format!(
                    "saturation: {} of {} deliveries missing",
                    saturation.missing, saturation.expected_deliveries
                ));
            }
        }
        if run.connect_failures > 0 {
            problems.push(format!(
                "{} subscribers failed to connect (first: {})",
                run.connect_failures,
                run.first_connect_error.as_deref().unwrap_or("?")
            ));
        }
        if run.setup.failures > 0 {
            problems.push(format!(
                "{} setup samples failed (first: {})",
                run.setup.failures,
                run.setup.first_failure.as_deref().unwrap_or("?")
            ));
        }
        if run.dropped > 0 {
            problems.push(format!(
                "{} connections ended early (first: {})",
                run.dropped,
                run.first_drop_reason.as_deref().unwrap_or("?")
            ));
        }
        if run.lagged + run.gaps > 0 {
            problems.push(format!(
                "{} lagged and {} gap notices (subscribers fell behind their queue or history)",
                run.lagged, run.gaps
            ));
        }
        if run.open_loop.id_mismatches > 0 {
            problems.push(format!(
                "{} subscribers saw other ids than the rest",
                run.open_loop.id_mismatches
            ));
        }
        if run.unreadable_events > 0 || run.errors > 0 || run.other_messages > 0 {
            problems.push(format!(
                "{} unreadable events, {} error and {} unexpected messages",
                run.unreadable_events, run.errors, run.other_messages
            ));
        }
        for publish in std::iter::once(&run.open_loop.publish)
            .chain(run.saturation.as_ref().map(|p| &p.publish))
        {
            if let Some(failure) = &publish.failure {
                problems.push(format!("publisher: {failure}"));
            }
            if publish.errors > 0 {
                problems.push(format!(
                    "publisher: {} error replies (first: {})",
                    publish.errors,
                    publish.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
        if run.gateway_exited_early {
            problems.push("the gateway exited during the run".to_owned());
        }
        if run.gateway_log_warnings > 0 {
            problems.push(format!(
                "the gateway logged {} warnings",
                run.gateway_log_warnings
            ));
        }
        if !problems.is_empty() {
            let logs: Vec<String> = run
                .gateway_log
                .iter()
                .chain(&run.other_node_logs)
                .map(|log| log.display().to_string())
                .collect();
            if !logs.is_empty() {
                problems.push(format!("log: {}", logs.join(", ")));
            }
        }
        if let Some(leftover) = &run.broker_leftover {
            problems.push(format!("left behind in the broker: {leftover}"));
        }
        if !problems.is_empty() {
            notes.push(format!("warning: {name}: {}", problems.join("; ")));
        }
    }
    if row.publisher_behind_max_ms > 1.0 {
        notes.push(format!(
            "note: {name}: the publisher fell up to {:.1} ms behind its schedule; the latency \
             includes that wait",
            row.publisher_behind_max_ms
        ));
    }
    notes
}

/// The chart's series: one per row.
pub fn chart_series(rows: &[Row]) -> Vec<LatencySeries> {
    let with_count = rows
        .iter()
        .any(|row| row.subscribers != rows[0].subscribers);
    let with_bus = several_buses(rows);
    rows.iter()
        .map(|row| LatencySeries {
            name: row.label(with_count, with_bus),
            points: row.latency_distribution.clone(),
            p50_us: row.latency.p50_us,
            p99_us: row.latency.p99_us,
            p999_us: row.latency.p999_us,
            max_us: row.latency.max_us,
        })
        .collect()
}

/// The chart's title and subtitle.
pub fn chart_text(plan: &Plan, machine: &str, netem: Option<&str>) -> ChartText {
    ChartText {
        title: format!(
            "streamgate: publish → receive latency, {} subscribers per transport, {} events/s, {} B",
            plan.subscribers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/"),
            plan.rate,
            plan.payload_bytes
        ),
        subtitle: match netem {
            Some(spec) => format!("{machine}; link impaired: {spec}"),
            None => machine.to_owned(),
        },
    }
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub struct Output<'a> {
    /// The command line.
    pub command: String,
    /// Cores, kernel, load.
    pub machine: String,
    /// The gateway measured.
    pub gateway: String,
    /// The plan, defaults filled in.
    pub plan: &'a Plan,
    /// `--netem`, and how it was applied.
    pub impairment: Option<String>,
    /// Whether latency is from the gateway's timestamp (impaired runs) rather than from
    /// the scheduled send time.
    pub latency_from_gateway_timestamp: bool,
    /// Load average before and after.
    pub loadavg_before: String,
    /// …
    pub loadavg_after: String,
    /// One row per transport and count.
    pub rows: &'a [Row],
    /// Where the logs of troubled runs were kept.
    pub kept_logs: Vec<PathBuf>,
    /// Rows on several nodes: what their gateway CPU and memory figures cover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_node_figures: Option<&'static str>,
}

/// What the gateway CPU and memory figures of a multi-node row cover, said under the
/// table and in the JSON.
pub const MULTI_NODE_FIGURES: &str = "gateway CPU and memory of a row on several nodes are \
     summed over its nodes (node A publishes, the others serve the subscribers); each run's \
     gateway_cpu_ms_per_1k_by_node splits the CPU";
