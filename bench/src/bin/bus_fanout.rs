//! `bus_fanout`: fan-out throughput and latency of the in-process memory bus.
//!
//! ```text
//! cargo run --release -p streamgate-bench --bin bus_fanout -- --subscribers 1,1000,10000
//! ```
//!
//! Each subscriber count is run `--repeat` times, interleaved (1, 1000, 10000, 1, 1000, ...)
//! so that a slow spell of the machine does not land on one row only, and every figure in the
//! table is the median of its repeats.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;
use streamgate_bench::{format_table, median, run_fanout, Pace, RunReport, Scenario, HEADER_BYTES};
use streamgate_compare::WorkerRuntime;

/// Deliveries (subscribers × events) aimed at per run when `--events` is not given.
const DELIVERY_BUDGET: u64 = 5_000_000;
/// Most events per run when `--events` is not given.
const MAX_DEFAULT_EVENTS: u64 = 1_000_000;
/// Fewest events per run when `--events` is not given: below this, percentiles are noise.
const MIN_DEFAULT_EVENTS: u64 = 100;
/// Longest open-loop schedule when `--events` is not given.
const MAX_DEFAULT_SCHEDULE_SECS: u64 = 2;

#[derive(Debug, Parser)]
#[command(about = "Fan-out throughput and latency of the streamgate in-process memory bus")]
struct Args {
    /// Subscriber counts to run, one table row each.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    subscribers: Vec<usize>,

    /// Events per run. Default: 5 000 000 / subscribers, between 100 and 1 000 000, and
    /// with --rate at most 2 s worth of events.
    #[arg(long)]
    events: Option<u64>,

    /// Events per second, open loop (latency measured from each event's scheduled time);
    /// 0 publishes as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,

    /// Payload size in bytes (the first 16 carry the send time and the event index).
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,

    /// Runs per subscriber count; the table shows the median of each figure.
    #[arg(long, default_value_t = 3)]
    repeat: usize,

    /// Per-subscriber queue in events. Default: large enough for the whole run, so nothing
    /// lags; pass 1024 (the gateway's default) to see lag under saturation.
    #[arg(long)]
    queue: Option<usize>,

    /// Saturate only: the publisher publishes in a tight loop, yielding only when `publish`
    /// spends the task's cooperative budget; see `Scenario::publisher_yields`.
    #[arg(long)]
    no_yield: bool,

    /// Tokio worker threads. Default: one per core.
    #[arg(long)]
    workers: Option<usize>,

    /// Also write every run and the medians to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    fn events_for(&self, subscribers: usize) -> u64 {
        if let Some(events) = self.events {
            return events;
        }
        let mut events = (DELIVERY_BUDGET / subscribers.max(1) as u64)
            .clamp(MIN_DEFAULT_EVENTS, MAX_DEFAULT_EVENTS);
        if let Pace::Rate(rate) = Pace::from_rate(self.rate) {
            events = events.min((rate.get() * MAX_DEFAULT_SCHEDULE_SECS).max(MIN_DEFAULT_EVENTS));
        }
        events
    }
}

/// One table row: the median of each figure over the repeats of one subscriber count.
#[derive(Debug, Serialize)]
struct Row {
    subscribers: usize,
    events: u64,
    deliveries: u64,
    expected_deliveries: u64,
    delivered_per_sec: f64,
    /// `delivered_per_sec` over the 1-subscriber row's, if there is one.
    vs_one_subscriber: Option<f64>,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Worst run.
    lagged: u64,
    /// Worst run.
    gaps: u64,
    misordered: u64,
    unfinished_subscribers: usize,
    publisher_behind_max_us: f64,
    runs: Vec<RunReport>,
}

impl Row {
    fn from_runs(events: u64, runs: Vec<RunReport>) -> Self {
        let of =
            |figure: fn(&RunReport) -> f64| median(&runs.iter().map(figure).collect::<Vec<_>>());
        let count =
            |figure: fn(&RunReport) -> u64| median(&runs.iter().map(figure).collect::<Vec<_>>());
        Self {
            subscribers: runs[0].subscribers,
            events,
            deliveries: count(|r| r.deliveries),
            expected_deliveries: count(|r| r.expected_deliveries),
            delivered_per_sec: of(|r| r.delivered_per_sec),
            vs_one_subscriber: None,
            p50_us: of(|r| r.latency.p50_us),
            p99_us: of(|r| r.latency.p99_us),
            p999_us: of(|r| r.latency.p999_us),
            max_us: of(|r| r.latency.max_us),
            // Loss and correctness counters: one bad run is one too many, so these take the
            // worst run rather than hide it behind a median.
            lagged: runs.iter().map(|r| r.lagged).max().unwrap_or(0),
            gaps: runs.iter().map(|r| r.gaps).max().unwrap_or(0),
            misordered: runs.iter().map(|r| r.misordered).max().unwrap_or(0),
            unfinished_subscribers: runs
                .iter()
                .map(|r| r.unfinished_subscribers)
                .max()
                .unwrap_or(0),
            publisher_behind_max_us: of(|r| r.publisher_behind_max_us),
            runs,
        }
    }
}

#[derive(Debug, Serialize)]
struct Output<'a> {
    cores: usize,
    workers: usize,
    mode: String,
    rate: u64,
    payload_bytes: usize,
    repeat: usize,
    queue: Option<usize>,
    publisher_yields: bool,
    rows: &'a [Row],
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.subscribers.is_empty(),
        "--subscribers needs at least one count"
    );
    anyhow::ensure!(
        args.subscribers.iter().all(|&n| n > 0),
        "subscriber counts must be positive"
    );
    anyhow::ensure!(args.repeat > 0, "--repeat must be at least 1");
    anyhow::ensure!(
        args.payload_bytes >= HEADER_BYTES,
        "--payload-bytes must be at least {HEADER_BYTES}"
    );
    let WorkerRuntime {
        runtime,
        cores,
        workers,
    } = WorkerRuntime::new(args.workers)?;

    let pace = Pace::from_rate(args.rate);
    let mode = match pace {
        Pace::Saturate if args.no_yield => {
            "saturate (publish as fast as possible, never yielding)".to_owned()
        }
        Pace::Saturate => "saturate (publish as fast as possible, yielding after each)".to_owned(),
        Pace::Rate(rate) => format!("open loop at {rate} events/s"),
    };
    println!("streamgate bus fan-out: {mode}");
    println!(
        "{cores} cores, {workers} tokio workers, payload {} B, median of {} runs, queue {}",
        args.payload_bytes,
        args.repeat,
        args.queue
            .map_or_else(|| "sized to the run".to_owned(), |q| format!("{q} events")),
    );

    let mut runs: Vec<Vec<RunReport>> = vec![Vec::new(); args.subscribers.len()];
    for _ in 0..args.repeat {
        for (slot, &subscribers) in args.subscribers.iter().enumerate() {
            let scenario = Scenario {
                payload_bytes: args.payload_bytes,
                queue_capacity: args.queue,
                drain_timeout: Duration::from_secs(60),
                publisher_yields: !args.no_yield,
                ..Scenario::new(subscribers, args.events_for(subscribers), pace)
            };
            let report = runtime
                .block_on(run_fanout(&scenario))
                .with_context(|| format!("running {subscribers} subscribers"))?;
            runs[slot].push(report);
        }
    }

    let mut rows: Vec<Row> = args
        .subscribers
        .iter()
        .zip(runs)
        .map(|(&subscribers, runs)| Row::from_runs(args.events_for(subscribers), runs))
        .collect();
    let baseline = rows
        .iter()
        .find(|row| row.subscribers == 1)
        .map(|row| row.delivered_per_sec);
    for row in &mut rows {
        row.vs_one_subscriber = baseline
            .filter(|b| *b > 0.0)
            .map(|b| row.delivered_per_sec / b);
    }

    print_table(&rows);
    if baseline.is_none() {
        println!("(no 1-subscriber row, so no ratio: add 1 to --subscribers)");
    }
    for row in &rows {
        warn_about(row);
    }

    if let Some(path) = &args.json {
        let output = Output {
            cores,
            workers,
            mode,
            rate: args.rate,
            payload_bytes: args.payload_bytes,
            repeat: args.repeat,
            queue: args.queue,
            publisher_yields: !args.no_yield,
            rows: &rows,
        };
        let json = serde_json::to_string_pretty(&output)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let header = [
        "subscribers",
        "events",
        "deliveries",
        "delivered ev/s",
        "vs 1 sub",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "lagged",
        "gaps",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.subscribers.to_string(),
                row.events.to_string(),
                row.deliveries.to_string(),
                format!("{:.0}", row.delivered_per_sec),
                row.vs_one_subscriber
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
                format!("{:.1}", row.p50_us),
                format!("{:.1}", row.p99_us),
                format!("{:.1}", row.p999_us),
                format!("{:.1}", row.max_us),
                row.lagged.to_string(),
                row.gaps.to_string(),
            ]
        })
        .collect();
    print!("{}", format_table(&header, &cells));
}

fn warn_about(row: &Row) {
    let n = row.subscribers;
    for (i, run) in row.runs.iter().enumerate() {
        if run.deliveries != run.expected_deliveries {
            println!(
                "warning: {n} subscribers, run {}: {} of {} deliveries missing \
                 ({} lagged, {} gaps)",
                i + 1,
                run.expected_deliveries - run.deliveries.min(run.expected_deliveries),
                run.expected_deliveries,
                run.lagged,
                run.gaps,
            );
        }
    }
    if row.misordered > 0 {
        println!(
            "error: {n} subscribers: {} deliveries out of order",
            row.misordered
        );
    }
    if row.unfinished_subscribers > 0 {
        println!(
            "warning: {n} subscribers: {} never saw the last event before the drain timeout",
            row.unfinished_subscribers
        );
    }
    if row.publisher_behind_max_us > 1_000.0 {
        println!(
            "note: {n} subscribers: the publisher fell up to {:.1} ms behind its schedule; \
             latencies include that wait",
            row.publisher_behind_max_us / 1_000.0
        );
    }
}
