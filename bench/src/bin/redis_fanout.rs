//! `redis_fanout`: the Redis broker's two fan-out modes, Pub/Sub and Xread, side by side.
//!
//! ```text
//! cargo run --release -p streamgate-bench --bin redis_fanout
//! cargo run --release -p streamgate-bench --bin redis_fanout -- --help
//! ```
//!
//! Each run works under a fresh key prefix of one Redis (`--url`, or `REDIS_URL`), with
//! `--followers` feeds, each from a broker of its own as a gateway node would hold it, and
//! one appending broker:
//!
//! 1. **Open loop**: `--rate` appends per second for `--seconds`, each sent at its scheduled
//!    time by a task of its own, so a slow acknowledgement never delays the next append. Both
//!    latencies are measured from the scheduled time (the payload carries it): the append's
//!    acknowledgement, and the event's arrival in every feed.
//! 2. **Saturation**, once every feed has the open-loop events: `--appenders` tasks append
//!    `--saturate-events` events back to back. Appends/s is that count over the time from
//!    the start to the last acknowledgement; events/s per follower is that count over the
//!    time from the start to the follower's last arrival (the median follower is shown).
//!
//! The modes alternate (pubsub, xread, pubsub, ...) `--repeat` times, so a slow spell of the
//! machine does not land on one mode only, and every figure is the median of its runs. The
//! gateway, the followers and Redis share the machine: on few cores the figures include
//! their competition for it, for both modes alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use streamgate_bench::{
    decode_payload, encode_payload, format_table, join_by_deadline, latency_histogram, median,
    nanos_since, wait_until, LatencySummary, HEADER_BYTES,
};
use streamgate_bus_redis::{Fanout, RedisBroker, RedisBrokerConfig};
use streamgate_core::{Broker, ContentType, Epoch, Feed, Topic};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long followers may take to receive a phase's events once it is sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(
    about = "Fan-out latency and throughput of the streamgate Redis broker, Pub/Sub vs Xread"
)]
struct Args {
    /// Redis server.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    url: String,

    /// Fan-out modes to compare.
    #[arg(long, value_delimiter = ',', default_value = "pubsub,xread")]
    modes: Vec<String>,

    /// Feeds, each from its own broker (a gateway node each).
    #[arg(long, default_value_t = 3)]
    followers: usize,

    /// Open loop: appends per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,

    /// Open loop: seconds of appends.
    #[arg(long, default_value_t = 3)]
    seconds: u64,

    /// Saturation: concurrent appending tasks.
    #[arg(long, default_value_t = 8)]
    appenders: usize,

    /// Saturation: events appended in all.
    #[arg(long, default_value_t = 40_000)]
    saturate_events: u64,

    /// Topics the events are spread over, round robin.
    #[arg(long, default_value_t = 4)]
    topics: usize,

    /// Payload size in bytes (the first 16 carry the send time and the event index).
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,

    /// Events kept per topic.
    #[arg(long, default_value_t = 1000)]
    history_events: usize,

    /// Runs per mode; the table shows the median of each figure.
    #[arg(long, default_value_t = 3)]
    repeat: usize,

    /// Also write every run and the medians to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
struct RunReport {
    mode: &'static str,
    open_loop_events: u64,
    /// Open loop: scheduled time to acknowledgement.
    ack: LatencySummary,
    /// Open loop: scheduled time to arrival, every follower.
    feed: LatencySummary,
    /// Open loop: the furthest the appender fell behind its schedule, in microseconds.
    appender_behind_max_us: f64,
    /// Saturation: acknowledged appends per second.
    appends_per_sec: f64,
    /// Saturation: events per second the median follower received.
    follower_events_per_sec: f64,
    /// Events some follower never received, over both phases and all followers.
    missing: u64,
    /// Events received out of append order (never expected).
    misordered: u64,
    /// Feed errors (never expected).
    feed_errors: u64,
}

/// The medians of one mode's runs.
#[derive(Debug, Serialize)]
struct Row {
    mode: &'static str,
    ack_p50_us: f64,
    ack_p99_us: f64,
    feed_p50_us: f64,
    feed_p99_us: f64,
    feed_p999_us: f64,
    appends_per_sec: f64,
    follower_events_per_sec: f64,
    /// Worst run.
    missing: u64,
    /// Worst run.
    misordered: u64,
    /// Worst run.
    feed_errors: u64,
    runs: Vec<RunReport>,
}

impl Row {
    fn from_runs(runs: Vec<RunReport>) -> Self {
        let of =
            |figure: fn(&RunReport) -> f64| median(&runs.iter().map(figure).collect::<Vec<_>>());
        let worst = |figure: fn(&RunReport) -> u64| runs.iter().map(figure).max().unwrap_or(0);
        Self {
            mode: runs[0].mode,
            ack_p50_us: of(|r| r.ack.p50_us),
            ack_p99_us: of(|r| r.ack.p99_us),
            feed_p50_us: of(|r| r.feed.p50_us),
            feed_p99_us: of(|r| r.feed.p99_us),
            feed_p999_us: of(|r| r.feed.p999_us),
            appends_per_sec: of(|r| r.appends_per_sec),
            follower_events_per_sec: of(|r| r.follower_events_per_sec),
            missing: worst(|r| r.missing),
            misordered: worst(|r| r.misordered),
            feed_errors: worst(|r| r.feed_errors),
            runs,
        }
    }

    fn figures(&self) -> [f64; 7] {
        [
            self.ack_p50_us,
            self.ack_p99_us,
            self.feed_p50_us,
            self.feed_p99_us,
            self.feed_p999_us,
            self.appends_per_sec,
            self.follower_events_per_sec,
        ]
    }
}

#[derive(Debug, Serialize)]
struct Output<'a> {
    cores: usize,
    url: String,
    followers: usize,
    rate: u64,
    seconds: u64,
    appenders: usize,
    saturate_events: u64,
    topics: usize,
    payload_bytes: usize,
    repeat: usize,
    rows: &'a [Row],
}

fn parse_mode(name: &str) -> anyhow::Result<Fanout> {
    match name {
        "pubsub" => Ok(Fanout::PubSub),
        "xread" => Ok(Fanout::Xread),
        other => anyhow::bail!("unknown mode {other:?}: use pubsub or xread"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let modes = args
        .modes
        .iter()
        .map(|name| parse_mode(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!modes.is_empty(), "--modes needs at least one mode");
    anyhow::ensure!(args.followers > 0, "--followers must be at least 1");
    anyhow::ensure!(
        args.rate > 0 && args.seconds > 0,
        "--rate and --seconds must be positive"
    );
    anyhow::ensure!(args.appenders > 0, "--appenders must be at least 1");
    anyhow::ensure!(args.topics > 0, "--topics must be at least 1");
    anyhow::ensure!(args.repeat > 0, "--repeat must be at least 1");
    anyhow::ensure!(
        args.payload_bytes >= HEADER_BYTES,
        "--payload-bytes must be at least {HEADER_BYTES}"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;

    println!(
        "streamgate Redis fan-out: {} followers; open loop {} appends/s for {} s; \
         saturation {} events from {} appenders",
        args.followers, args.rate, args.seconds, args.saturate_events, args.appenders
    );
    println!(
        "{cores} cores, {} topics, payload {} B, median of {} runs, Redis at {}",
        args.topics,
        args.payload_bytes,
        args.repeat,
        RedisBroker::new(RedisBrokerConfig::new(args.url.as_str()))
            .map(|broker| broker.endpoint())
            .unwrap_or_else(|_| "(invalid URL)".to_owned()),
    );

    let mut runs: Vec<Vec<RunReport>> = vec![Vec::new(); modes.len()];
    for round in 0..args.repeat {
        for (slot, &mode) in modes.iter().enumerate() {
            let report = runtime
                .block_on(run(&args, mode))
                .with_context(|| format!("{} run {}", mode.name(), round + 1))?;
            runs[slot].push(report);
        }
    }
    let rows: Vec<Row> = runs.into_iter().map(Row::from_runs).collect();
    print_table(&rows);
    for row in &rows {
        warn_about(row);
    }

    if let Some(path) = &args.json {
        let output = Output {
            cores,
            url: RedisBroker::new(RedisBrokerConfig::new(args.url.as_str()))
                .map(|broker| broker.endpoint())
                .unwrap_or_default(),
            followers: args.followers,
            rate: args.rate,
            seconds: args.seconds,
            appenders: args.appenders,
            saturate_events: args.saturate_events,
            topics: args.topics,
            payload_bytes: args.payload_bytes,
            repeat: args.repeat,
            rows: &rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&output)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let header = [
        "mode",
        "ack p50 µs",
        "ack p99 µs",
        "feed p50 µs",
        "feed p99 µs",
        "feed p99.9 µs",
        "appends/s",
        "ev/s per follower",
    ];
    let cell = |value: f64, column: usize| {
        if column >= 5 {
            format!("{value:.0}")
        } else {
            format!("{value:.1}")
        }
    };
    let mut cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            std::iter::once(row.mode.to_owned())
                .chain(
                    row.figures()
                        .iter()
                        .enumerate()
                        .map(|(column, &value)| cell(value, column)),
                )
                .collect()
        })
        .collect();
    let find = |mode: &str| rows.iter().find(|row| row.mode == mode);
    if let (Some(pubsub), Some(xread)) = (find("pubsub"), find("xread")) {
        cells.push(
            std::iter::once("xread/pubsub".to_owned())
                .chain(xread.figures().iter().zip(pubsub.figures()).map(|(x, p)| {
                    if p > 0.0 {
                        format!("{:.2}x", x / p)
                    } else {
                        "-".to_owned()
                    }
                }))
                .collect(),
        );
    }
    print!("{}", format_table(&header, &cells));
}

fn warn_about(row: &Row) {
    if row.missing > 0 {
        println!(
            "warning: {}: up to {} events never reached a follower",
            row.mode, row.missing
        );
    }
    if row.misordered > 0 {
        println!(
            "error: {}: {} events arrived out of order",
            row.mode, row.misordered
        );
    }
    if row.feed_errors > 0 {
        println!("warning: {}: {} feed errors", row.mode, row.feed_errors);
    }
    for (i, run) in row.runs.iter().enumerate() {
        if run.appender_behind_max_us > 1_000.0 {
            println!(
                "note: {} run {}: the appender fell up to {:.1} ms behind its schedule; \
                 latencies include that wait",
                row.mode,
                i + 1,
                run.appender_behind_max_us / 1_000.0
            );
        }
    }
}

/// One run of both phases on a fresh prefix.
async fn run(args: &Args, fanout: Fanout) -> anyhow::Result<RunReport> {
    let config = RedisBrokerConfig::new(args.url.as_str())
        .prefix(format!("sgbench-{}", Epoch::random()))
        .history_events(args.history_events)
        .fanout(fanout);
    let appender = Arc::new(RedisBroker::new(config.clone())?);
    let result = measure(args, &config, &appender).await;
    appender
        .delete_keys()
        .await
        .context("deleting the run's keys")?;
    result
}

async fn measure(
    args: &Args,
    config: &RedisBrokerConfig,
    appender: &Arc<RedisBroker>,
) -> anyhow::Result<RunReport> {
    let topics: Vec<Topic> = (0..args.topics)
        .map(|i| Topic::new(&format!("bench.{i}")))
        .collect::<Result<_, _>>()?;
    let open_loop = args.rate * args.seconds;
    let saturate = args.saturate_events;
    let base = Instant::now();

    // Followers first, so each is owed every event.
    let open_loop_done = Arc::new(Semaphore::new(0));
    let (stop, stopped) = watch::channel(false);
    let mut followers = JoinSet::new();
    for _ in 0..args.followers {
        let node = RedisBroker::new(config.clone())?;
        let feed = node.follow(None).await.context("opening a feed")?;
        followers.spawn(follow_loop(
            node,
            feed,
            open_loop,
            open_loop + saturate,
            base,
            Arc::clone(&open_loop_done),
            stopped.clone(),
        ));
    }

    // Phase 1: open loop.
    let start_ns = nanos_since(base);
    let mut behind_max_ns = 0;
    let mut acks = JoinSet::new();
    for index in 0..open_loop {
        let due_ns = start_ns + index * 1_000_000_000 / args.rate;
        wait_until(base, due_ns).await;
        behind_max_ns = behind_max_ns.max(nanos_since(base).saturating_sub(due_ns));
        let payload = encode_payload(due_ns, index, args.payload_bytes);
        let topic = topics[index as usize % topics.len()].clone();
        let appender = Arc::clone(appender);
        acks.spawn(async move {
            appender
                .append(&topic, ContentType::Binary, payload, 0)
                .await
                .map(|_| nanos_since(base).saturating_sub(due_ns))
        });
    }
    let mut ack: Histogram<u64> = latency_histogram();
    while let Some(joined) = acks.join_next().await {
        ack.record(joined?.context("an open-loop append failed")?)?;
    }
    let followers_count = u32::try_from(args.followers)?;
    let drained =
        tokio::time::timeout(DRAIN_TIMEOUT, open_loop_done.acquire_many(followers_count)).await;
    if drained.is_err() {
        println!(
            "warning: the followers did not receive the open-loop events within {DRAIN_TIMEOUT:?}"
        );
    }

    // Phase 2: saturation.
    let saturate_start_ns = nanos_since(base);
    let mut appenders = JoinSet::new();
    for task in 0..args.appenders as u64 {
        let appender = Arc::clone(appender);
        let topics = topics.clone();
        let tasks = args.appenders as u64;
        let payload_bytes = args.payload_bytes;
        appenders.spawn(async move {
            let mut index = open_loop + task;
            while index < open_loop + saturate {
                let payload = encode_payload(nanos_since(base), index, payload_bytes);
                let topic = &topics[index as usize % topics.len()];
                appender
                    .append(topic, ContentType::Binary, payload, 0)
                    .await?;
                index += tasks;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = appenders.join_next().await {
        joined?.context("a saturating append failed")?;
    }
    let saturate_secs = (nanos_since(base) - saturate_start_ns) as f64 / 1e9;

    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let tallies = join_by_deadline(&mut followers, deadline, || {
        let _ = stop.send(true);
    })
    .await?;

    let mut feed: Histogram<u64> = latency_histogram();
    let mut rates = Vec::new();
    let (mut missing, mut misordered, mut feed_errors) = (0, 0, 0);
    for tally in &tallies {
        feed.add(&tally.latency)?;
        missing += (open_loop + saturate).saturating_sub(tally.received);
        misordered += tally.misordered;
        feed_errors += tally.errors;
        let secs = tally.last_receive_ns.saturating_sub(saturate_start_ns) as f64 / 1e9;
        rates.push(if secs > 0.0 {
            saturate as f64 / secs
        } else {
            0.0
        });
    }
    Ok(RunReport {
        mode: config.fanout.name(),
        open_loop_events: open_loop,
        ack: LatencySummary::from_nanos(&ack),
        feed: LatencySummary::from_nanos(&feed),
        appender_behind_max_us: behind_max_ns as f64 / 1_000.0,
        appends_per_sec: if saturate_secs > 0.0 {
            saturate as f64 / saturate_secs
        } else {
            0.0
        },
        follower_events_per_sec: if rates.is_empty() {
            0.0
        } else {
            median(&rates)
        },
        missing,
        misordered,
        feed_errors,
    })
}

/// What one follower saw.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    received: u64,
    misordered: u64,
    errors: u64,
    last_receive_ns: u64,
}

async fn follow_loop(
    // Kept alive with its feed, as a node holds its broker.
    _node: RedisBroker,
    mut feed: Feed,
    open_loop: u64,
    total: u64,
    base: Instant,
    open_loop_done: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally {
        latency: latency_histogram(),
        received: 0,
        misordered: 0,
        errors: 0,
        last_receive_ns: 0,
    };
    let mut previous_seq = 0;
    while tally.received < total {
        let item = tokio::select! {
            item = feed.events.next() => item,
            _ = stop.changed() => break,
        };
        let event = match item {
            Some(Ok(event)) => event,
            Some(Err(error)) => {
                eprintln!("feed error: {error}");
                tally.errors += 1;
                break;
            }
            None => break,
        };
        let now_ns = nanos_since(base);
        let Some((send_ns, index)) = decode_payload(&event.payload) else {
            continue;
        };
        if event.id.seq <= previous_seq {
            tally.misordered += 1;
        }
        previous_seq = event.id.seq;
        tally.received += 1;
        tally.last_receive_ns = now_ns;
        if index < open_loop {
            let _ = tally.latency.record(now_ns.saturating_sub(send_ns));
        }
        if tally.received == open_loop {
            open_loop_done.add_permits(1);
        }
    }
    tally
}
