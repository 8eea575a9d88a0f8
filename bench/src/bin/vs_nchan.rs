//! `vs_nchan`: the same load against streamgate and nginx + Nchan, in one run, with the same
//! load generator, and a table of both with their ratio.
//!
//! ```text
//! cargo build --release -p streamgate -p streamgate-bench
//! target/release/vs_nchan --quick                     # everything, small, ≈ 25 s (CI smoke)
//! target/release/vs_nchan --json vs_nchan.json        # the full run
//! ```
//!
//! Scenarios (bench/README.md, "vs_nchan", says what each figure means):
//! `idle` (memory and CPU per idle connection), `fanout` (N subscribers × M events/s),
//! `knee` (raise M until p99 passes 100 ms), `slow` (5 % of the subscribers stop reading),
//! `storm` (every client reconnects with its last id). Every server gets a fresh process per
//! scenario, transport and point, and its CPU time and memory come from `/proc`.
//!
//! Only the measured phases (publishing, idling, stalling, the storm's spread) take a fixed
//! time; the rest waits on a signal. A measurement starts once every subscriber has received
//! a warm-up event (uncounted: its index is below the next `reset`), or for `idle`, where
//! nothing may be published, once the server counts them all; after publishing, the fleet is
//! asked until the deliveries are all in or stop coming ([`DRAIN_QUIET`]), at most as long as
//! the fixed wait this replaced, so that an overloaded point counts what it did before.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::Serialize;
use streamgate_bench::vs_nchan::{
    children, cpu_us, fd_count, free_port, rss_kib, server_subscribers, sibling_bin, slab_kib,
    LoadgenSummary, Percentiles, PublishReport, Publisher, Server, TransportKind,
};
use streamgate_compare::gateway::spawn_serve;

/// Payload size of every event.
const PAYLOAD_BYTES: usize = 256;
/// The p99 that marks the saturation knee.
const KNEE_P99_MS: f64 = 100.0;
/// A drain is over once deliveries stop growing for this long: what is missing is lost.
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// How often the fleet or the server is asked while waiting on it.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// A warm-up event is published again after this long: a subscriber the server registered
/// just after the last one (Nchan's start with the next message) gets the next.
const WARM_UP_EVERY: Duration = Duration::from_millis(100);

/// The same load against streamgate and nginx + Nchan, side by side.
#[derive(Debug, Parser)]
#[command(name = "vs_nchan")]
#[allow(clippy::struct_excessive_bools)]
struct Cli {
    /// The streamgate binary (default: $CARGO_TARGET_DIR/release/streamgate, else
    /// target/release/streamgate).
    #[arg(long)]
    streamgate_bin: Option<PathBuf>,
    /// The load generator (default: `loadgen` next to this binary).
    #[arg(long)]
    loadgen_bin: Option<PathBuf>,
    /// bench/peers/nchan.sh.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/nchan.sh"))]
    nchan_script: PathBuf,
    /// nginx worker processes.
    #[arg(long, default_value_t = 2)]
    nchan_workers: usize,
    /// Everything, small: N = 100, short phases, in about 25 s (CI smoke check).
    #[arg(long)]
    quick: bool,
    /// Also write every measurement as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Servers to run.
    #[arg(long, value_delimiter = ',', default_value = "streamgate,nchan")]
    servers: Vec<Server>,
    /// Transports to run.
    #[arg(long, value_delimiter = ',', default_value = "ws,sse,longpoll")]
    transports: Vec<TransportKind>,
    /// Scenarios to run, in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fanout,idle,storm,slow,knee"
    )]
    scenarios: Vec<Scenario>,
    /// Fan-out: subscriber counts (quick: 100).
    #[arg(long, value_delimiter = ',')]
    fanout_n: Option<Vec<usize>>,
    /// Fan-out: events per second (quick: 10).
    #[arg(long, value_delimiter = ',')]
    fanout_m: Option<Vec<f64>>,
    /// Fan-out: seconds of publishing per point (quick: 0.5).
    #[arg(long)]
    fanout_seconds: Option<f64>,
    /// Idle: connections (quick: 100).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Idle: seconds over which idle CPU is measured (quick: 0.3).
    #[arg(long)]
    idle_seconds: Option<f64>,
    /// Knee: subscribers (quick: 100).
    #[arg(long)]
    knee_n: Option<usize>,
    /// Knee: events/s steps, tried in order until p99 passes 100 ms (quick: 100 only).
    #[arg(long, value_delimiter = ',')]
    knee_m: Option<Vec<f64>>,
    /// Knee: seconds per step (quick: 0.5).
    #[arg(long)]
    knee_seconds: Option<f64>,
    /// Slow consumers: subscribers, 5 % of which stall (quick: 100).
    #[arg(long)]
    slow_n: Option<usize>,
    /// Slow consumers: events per second (100).
    #[arg(long)]
    slow_rate: Option<f64>,
    /// Slow consumers: seconds the stalled ones stop reading (8; quick: 0.5).
    #[arg(long)]
    slow_seconds: Option<f64>,
    /// Reconnect storm: clients (quick: 100).
    #[arg(long)]
    storm_clients: Option<usize>,
    /// Reconnect storm: the reconnects are spread over this many ms (quick: 200).
    #[arg(long)]
    storm_spread_ms: Option<u64>,
    /// Subscribers per load-generator process.
    #[arg(long, default_value_t = 5000)]
    per_loadgen: usize,
    /// Runs of every point, the servers alternating (streamgate, Nchan, streamgate, …); the
    /// tables show each figure's median, the JSON every run.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    Idle,
    Fanout,
    Knee,
    Slow,
    Storm,
}

impl Scenario {
    fn title(self) -> &'static str {
        match self {
            Self::Idle => "1. idle capacity",
            Self::Fanout => "2. fan-out",
            Self::Knee => "3. saturation knee",
            Self::Slow => "4. slow consumers",
            Self::Storm => "5. reconnect storm",
        }
    }
}

/// The settings of a run, quick or full, after defaults.
#[derive(Debug)]
struct Plan {
    fanout_n: Vec<usize>,
    fanout_m: Vec<f64>,
    fanout_seconds: f64,
    idle_connections: usize,
    idle_seconds: f64,
    knee_n: usize,
    knee_m: Vec<f64>,
    knee_seconds: f64,
    slow_n: usize,
    slow_rate: f64,
    slow_seconds: f64,
    /// Publishing before the stall (the healthy baseline), and after it (the resume).
    slow_baseline_s: f64,
    slow_after_s: f64,
    storm_clients: usize,
    storm_spread_ms: u64,
    /// Publishing before the storm, and after its spread (so every client gets an event
    /// after its reconnect).
    storm_lead_s: f64,
    storm_tail_s: f64,
}

impl Plan {
    /// Seconds of publishing at a fan-out point of `m` events/s: at least 3 events.
    fn fanout_seconds_at(&self, m: f64) -> f64 {
        self.fanout_seconds.max(3.0 / m)
    }

    fn new(cli: &Cli) -> Self {
        let q = cli.quick;
        Self {
            fanout_n: cli.fanout_n.clone().unwrap_or_else(|| {
                if q {
                    vec![100]
                } else {
                    vec![100, 1000, 10_000]
                }
            }),
            fanout_m: cli.fanout_m.clone().unwrap_or_else(|| {
                if q {
                    vec![10.0]
                } else {
                    vec![1.0, 10.0, 100.0]
                }
            }),
            fanout_seconds: cli.fanout_seconds.unwrap_or(if q { 0.5 } else { 5.0 }),
            idle_connections: cli.idle_connections.unwrap_or(if q { 100 } else { 10_000 }),
            idle_seconds: cli.idle_seconds.unwrap_or(if q { 0.3 } else { 5.0 }),
            knee_n: cli.knee_n.unwrap_or(if q { 100 } else { 1000 }),
            knee_m: cli.knee_m.clone().unwrap_or_else(|| {
                if q {
                    vec![100.0]
                } else {
                    vec![
                        10.0, 30.0, 100.0, 200.0, 300.0, 500.0, 700.0, 1000.0, 1500.0, 2000.0,
                        3000.0, 5000.0,
                    ]
                }
            }),
            knee_seconds: cli.knee_seconds.unwrap_or(if q { 0.5 } else { 3.0 }),
            slow_n: cli.slow_n.unwrap_or(if q { 100 } else { 1000 }),
            slow_rate: cli.slow_rate.unwrap_or(100.0),
            slow_seconds: cli.slow_seconds.unwrap_or(if q { 0.5 } else { 8.0 }),
            slow_baseline_s: if q { 0.3 } else { 3.0 },
            slow_after_s: if q { 0.3 } else { 2.0 },
            storm_clients: cli.storm_clients.unwrap_or(if q { 100 } else { 5000 }),
            storm_spread_ms: cli.storm_spread_ms.unwrap_or(if q { 200 } else { 2000 }),
            storm_lead_s: if q { 0.2 } else { 1.0 },
            storm_tail_s: if q { 0.3 } else { 3.0 },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Cleanup: every child we start is registered, and killed on exit, panic and Ctrl-C.

static CHILD_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static NCHAN_RUNDIRS: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

fn register_pid(pid: u32) {
    if let Ok(mut pids) = CHILD_PIDS.lock() {
        pids.push(pid);
    }
}

fn unregister_pid(pid: u32) {
    if let Ok(mut pids) = CHILD_PIDS.lock() {
        pids.retain(|&p| p != pid);
    }
}

fn kill_everything() {
    if let Ok(pids) = CHILD_PIDS.lock() {
        for pid in pids.iter() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
    if let Ok(dirs) = NCHAN_RUNDIRS.lock() {
        for (script, rundir) in dirs.iter() {
            let _ = Command::new("bash")
                .arg(script)
                .arg("stop")
                .arg(rundir)
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[allow(clippy::exit)] // a signal ends the run: children first, then the process
fn install_cleanup() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_everything();
        previous(info);
    }));
    // The benchmark itself is blocking code: the signals get a thread and a runtime of their own.
    let Ok(signals) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    std::thread::spawn(move || {
        if signals.block_on(interrupted()) {
            eprintln!("vs_nchan: interrupted, stopping the servers and load generators");
            kill_everything();
            std::process::exit(130);
        }
    });
}

/// Waits for Ctrl-C or SIGTERM; false at once when SIGTERM cannot be watched.
async fn interrupted() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return false;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    true
}

// ---------------------------------------------------------------------------------------
// Servers.

#[derive(Debug)]
enum ServerProc {
    Streamgate {
        child: Child,
    },
    Nchan {
        master: u32,
        script: PathBuf,
        rundir: PathBuf,
    },
}

#[derive(Debug)]
struct RunningServer {
    kind: Server,
    addr: SocketAddr,
    proc: ServerProc,
}

impl RunningServer {
    fn start(cli: &Cli, kind: Server, work: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let dir = work.join(format!("{}-{port}", kind.name()));
        std::fs::create_dir_all(&dir)?;
        match kind {
            Server::Streamgate => {
                let bin = streamgate_bin(cli);
                let config = format!(
                    "# Written by vs_nchan.\n\
                     [server]\nlisten = \"{addr}\"\nmax_connections = 50000\n\
                     max_connections_per_ip = 0\npublish_rate = 0.0\n\
                     topic_create_rate = 0.0\nshutdown_grace = 1\n\
                     [tls]\nenabled = false\n\
                     [webtransport]\nenabled = false\n\
                     [demo]\nenabled = false\n\
                     [lab]\nenabled = false\n"
                );
                let (child, log) = spawn_serve(Command::new(&bin), &dir, &config)
                    .with_context(|| format!("starting {}", bin.display()))?;
                register_pid(child.id());
                let mut server = Self {
                    kind,
                    addr,
                    proc: ServerProc::Streamgate { child },
                };
                let deadline = Instant::now() + Duration::from_secs(10);
                while TcpStream::connect(addr).is_err() {
                    if let ServerProc::Streamgate { child } = &mut server.proc {
                        if let Ok(Some(status)) = child.try_wait() {
                            let log = std::fs::read_to_string(&log).unwrap_or_default();
                            bail!("streamgate exited at start ({status}): {log}");
                        }
                    }
                    if Instant::now() > deadline {
                        bail!("streamgate did not listen on {addr} within 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(server)
            }
            Server::Nchan => {
                let rundir = dir.join("nginx");
                let out = Command::new("bash")
                    .arg(&cli.nchan_script)
                    .arg("start")
                    .arg(port.to_string())
                    .arg(&rundir)
                    .arg(cli.nchan_workers.to_string())
                    .stderr(Stdio::inherit())
                    .output()
                    .context("running nchan.sh start")?;
                if !out.status.success() {
                    bail!("nchan.sh start failed ({})", out.status);
                }
                let master: u32 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .context("nchan.sh start printed no pid")?;
                if let Ok(mut dirs) = NCHAN_RUNDIRS.lock() {
                    dirs.push((cli.nchan_script.clone(), rundir.clone()));
                }
                Ok(Self {
                    kind,
                    addr,
                    proc: ServerProc::Nchan {
                        master,
                        script: cli.nchan_script.clone(),
                        rundir,
                    },
                })
            }
        }
    }

    fn pids(&self) -> Vec<u32> {
        match &self.proc {
            ServerProc::Streamgate { child } => vec![child.id()],
            ServerProc::Nchan { master, .. } => {
                let mut pids = vec![*master];
                pids.extend(children(*master));
                pids
            }
        }
    }

    fn cpu_us(&self) -> u64 {
        self.pids().into_iter().map(cpu_us).sum()
    }

    fn rss_kib(&self) -> u64 {
        self.pids().into_iter().map(rss_kib).sum()
    }

    fn fds(&self) -> u64 {
        self.pids().into_iter().map(fd_count).sum()
    }

    fn stop(&mut self) {
        match &mut self.proc {
            ServerProc::Streamgate { child } => {
                let pid = child.id();
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
                unregister_pid(pid);
            }
            ServerProc::Nchan { script, rundir, .. } => {
                let _ = Command::new("bash")
                    .arg(&*script)
                    .arg("stop")
                    .arg(&*rundir)
                    .status();
                if let Ok(mut dirs) = NCHAN_RUNDIRS.lock() {
                    dirs.retain(|(_, d)| d != rundir);
                }
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn streamgate_bin(cli: &Cli) -> PathBuf {
    if let Some(bin) = &cli.streamgate_bin {
        return bin.clone();
    }
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        let bin = Path::new(&dir).join("release/streamgate");
        if bin.exists() {
            return bin;
        }
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/release/streamgate"
    ))
}

fn loadgen_bin(cli: &Cli) -> PathBuf {
    if let Some(bin) = &cli.loadgen_bin {
        return bin.clone();
    }
    sibling_bin("loadgen")
}

// ---------------------------------------------------------------------------------------
// Load generators.

#[derive(Debug)]
struct Loadgen {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Loadgen {
    fn line(&self, timeout: Duration) -> anyhow::Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => bail!("loadgen: no answer within {timeout:?}"),
            Err(RecvTimeoutError::Disconnected) => bail!("loadgen exited"),
        }
    }

    fn send(&mut self, command: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        Ok(())
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        unregister_pid(self.child.id());
    }
}

/// Every load generator of one measurement.
#[derive(Debug)]
struct Fleet {
    gens: Vec<Loadgen>,
    connect_s: f64,
}

/// Source addresses: each load-generator process gets 4 of its own, 127.0.0.10 and up.
fn source_ips(process: usize) -> String {
    (0..4)
        .map(|k| {
            format!(
                "127.0.{}.{}",
                1 + (process * 4 + k) / 250,
                10 + (process * 4 + k) % 240
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Fleet {
    fn spawn(
        cli: &Cli,
        server: &RunningServer,
        transport: TransportKind,
        connections: usize,
        stall_fraction: f64,
    ) -> anyhow::Result<Self> {
        let per = cli.per_loadgen.clamp(1, 9000);
        let processes = connections.div_ceil(per).max(1);
        let mut gens = Vec::new();
        let started = Instant::now();
        for p in 0..processes {
            let count = connections / processes + usize::from(p < connections % processes);
            let mut child = Command::new(loadgen_bin(cli))
                .arg("--target")
                .arg(server.kind.name())
                .arg("--url")
                .arg(format!("http://{}", server.addr))
                .arg("--transport")
                .arg(transport.name())
                .arg("--connections")
                .arg(count.to_string())
                .arg("--source-ips")
                .arg(source_ips(p))
                .arg("--stall-fraction")
                .arg(stall_fraction.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting loadgen")?;
            register_pid(child.id());
            let stdin = child.stdin.take().context("loadgen stdin")?;
            let stdout = child.stdout.take().context("loadgen stdout")?;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            gens.push(Loadgen {
                child,
                stdin,
                lines: rx,
            });
        }
        let timeout = Duration::from_secs(30 + connections as u64 / 200);
        for g in &gens {
            let line = g.line(timeout)?;
            if !line.contains("\"ready\"") {
                bail!("loadgen: expected ready, got {line}");
            }
        }
        Ok(Self {
            gens,
            connect_s: started.elapsed().as_secs_f64(),
        })
    }

    fn command(&mut self, command: &str) -> anyhow::Result<()> {
        for g in &mut self.gens {
            g.send(command)?;
        }
        for g in &self.gens {
            g.line(Duration::from_secs(30))?;
        }
        Ok(())
    }

    fn report(&mut self, command: &str) -> anyhow::Result<LoadgenSummary> {
        for g in &mut self.gens {
            g.send(command)?;
        }
        let mut total = LoadgenSummary::default();
        for g in &self.gens {
            let line = g.line(Duration::from_secs(60))?;
            let summary: LoadgenSummary =
                serde_json::from_str(&line).with_context(|| format!("loadgen said {line}"))?;
            total.absorb(&summary);
        }
        Ok(total)
    }

    /// Publishes warm-up events until each of the `n` subscribers has received one: the
    /// server has registered them all (a long poll only once its request is parsed).
    fn warm_up(&mut self, publisher: &mut Publisher, n: usize) -> anyhow::Result<()> {
        let mut sent: Option<Instant> = None;
        until_counted(n, "subscribers received a warm-up event", || {
            if sent.is_none_or(|at| at.elapsed() >= WARM_UP_EVERY) {
                publisher.run(1.0, Duration::ZERO)?;
                sent = Some(Instant::now());
            }
            Ok(self.report("report")?.fed)
        })
    }

    /// After publishing: asks the fleet until its deliveries (stalled ones included) reach
    /// `expected`, stop growing for [`DRAIN_QUIET`], or `limit` has passed, and returns the
    /// last summary.
    fn drain(&mut self, expected: u64, limit: Duration) -> anyhow::Result<LoadgenSummary> {
        let started = Instant::now();
        let mut summary = self.report("report")?;
        let mut got = summary.deliveries + summary.stalled_deliveries;
        let mut grew = Instant::now();
        while got < expected && grew.elapsed() < DRAIN_QUIET && started.elapsed() < limit {
            std::thread::sleep(POLL_EVERY.min(limit.saturating_sub(started.elapsed())));
            summary = self.report("report")?;
            let now = summary.deliveries + summary.stalled_deliveries;
            if now != got {
                got = now;
                grew = Instant::now();
            }
        }
        Ok(summary)
    }
}

/// Waits until the server counts `n` subscribers (for `idle`, where nothing is published).
fn wait_registered(srv: &RunningServer, n: usize) -> anyhow::Result<()> {
    until_counted(n, "subscribers counted by the server", || {
        Ok(usize::try_from(server_subscribers(srv.kind, srv.addr)?)?)
    })
}

/// Asks `count` every [`POLL_EVERY`] until it reaches `n`; registering `n` subscribers may
/// take 10 s + N/500 s before the measurement fails.
fn until_counted(
    n: usize,
    what: &str,
    mut count: impl FnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<()> {
    let limit = Duration::from_secs_f64(10.0 + n as f64 / 500.0);
    let started = Instant::now();
    loop {
        let counted = count()?;
        if counted >= n {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!(
                "only {counted} of {n} {what} within {:.0} s",
                limit.as_secs_f64()
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for g in &mut self.gens {
            let _ = g.send("stop");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measurements.

/// One measurement of one server: named figures.
#[derive(Debug, Clone, Serialize)]
struct Measurement {
    scenario: Scenario,
    transport: TransportKind,
    point: String,
    server: Server,
    figures: BTreeMap<String, f64>,
    notes: Vec<String>,
}

#[derive(Debug)]
struct Ctx<'a> {
    cli: &'a Cli,
    plan: Plan,
    work: PathBuf,
    results: Vec<Measurement>,
    floors: Vec<Floor>,
}

/// One `write_floor` run at a fan-out point: the CPU of one write per delivery with no
/// gateway at all, the baseline the servers' CPU per delivery is read against.
#[derive(Debug, Serialize)]
struct Floor {
    point: String,
    writer: String,
    cpu_us_per_write: f64,
}

fn sleep_s(seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

fn publish_in_background(
    mut publisher: Publisher,
    rate: f64,
    seconds: f64,
) -> std::thread::JoinHandle<(Publisher, anyhow::Result<PublishReport>)> {
    std::thread::spawn(move || {
        let report = publisher.run(rate, Duration::from_secs_f64(seconds));
        (publisher, report)
    })
}

fn latency_figures(figures: &mut BTreeMap<String, f64>, prefix: &str, pairs: &[[u64; 2]]) {
    let p = Percentiles::of(&LoadgenSummary::histogram(pairs));
    figures.insert(format!("{prefix}p50_ms"), p.p50_ms);
    figures.insert(format!("{prefix}p99_ms"), p.p99_ms);
    figures.insert(format!("{prefix}p99.9_ms"), p.p999_ms);
}

impl Ctx<'_> {
    fn push(
        &mut self,
        scenario: Scenario,
        transport: TransportKind,
        point: &str,
        server: Server,
        figures: BTreeMap<String, f64>,
        notes: Vec<String>,
    ) {
        for note in &notes {
            eprintln!(
                "  note ({} {} {point}): {note}",
                server.name(),
                transport.name()
            );
        }
        self.results.push(Measurement {
            scenario,
            transport,
            point: point.to_owned(),
            server,
            figures,
            notes,
        });
    }

    fn fanout(
        &mut self,
        server: Server,
        transport: TransportKind,
        n: usize,
        m: f64,
    ) -> anyhow::Result<()> {
        let seconds = self.plan.fanout_seconds_at(m);
        let srv = RunningServer::start(self.cli, server, &self.work)?;
        let mut fleet = Fleet::spawn(self.cli, &srv, transport, n, 0.0)?;
        let mut publisher = Publisher::new(server, srv.addr, "bench", PAYLOAD_BYTES);
        fleet.warm_up(&mut publisher, n)?;
        fleet.command(&format!("reset {}", publisher.next_index()))?;
        let cpu0 = srv.cpu_us();
        let published = publisher.run(m, Duration::from_secs_f64(seconds))?;
        let expected = published.ok * n as u64;
        let summary = fleet.drain(expected, Duration::from_secs_f64(1.0 + n as f64 / 10_000.0))?;
        let cpu = srv.cpu_us() - cpu0;
        drop(fleet);
        let mut figures = BTreeMap::new();
        figures.insert("events".to_owned(), published.ok as f64);
        figures.insert("deliveries".to_owned(), summary.deliveries as f64);
        figures.insert(
            "missing".to_owned(),
            expected.saturating_sub(summary.deliveries) as f64,
        );
        figures.insert(
            "delivered_per_s".to_owned(),
            summary.deliveries as f64 / seconds,
        );
        latency_figures(&mut figures, "", &summary.latency_us);
        figures.insert(
            "cpu_us_per_delivery".to_owned(),
            cpu as f64 / summary.deliveries.max(1) as f64,
        );
        figures.insert("connect_p99_ms".to_owned(), fleet_connect_ms(&summary));
        let mut notes = Vec::new();
        if published.failed > 0 {
            notes.push(format!("{} publishes failed", published.failed));
        }
        if published.max_late_us > 5000 {
            notes.push(format!("publisher up to {} µs late", published.max_late_us));
        }
        if summary.errors > 0 || summary.gaps > 0 {
            notes.push(format!(
                "errors {} gaps {} first error {:?}",
                summary.errors, summary.gaps, summary.first_error
            ));
        }
        let point = format!("N={n} M={m}");
        self.push(Scenario::Fanout, transport, &point, server, figures, notes);
        Ok(())
    }

    /// The write floor at a fan-out point: `write_floor` (bench/src/bin/write_floor.rs) makes
    /// the same writes (N connections, M events/s, a frame of the gateway's size) with nothing
    /// but a write loop (`blocking`) and a tokio task per connection (`tokio`).
    fn floor(&mut self, n: usize, m: f64) -> anyhow::Result<()> {
        let seconds = self.plan.fanout_seconds_at(m);
        let json = self.work.join("write_floor.json");
        let status = Command::new(sibling_bin("write_floor"))
            .args(["--connections", &n.to_string(), "--rate", &m.to_string()])
            .args(["--seconds", &seconds.to_string(), "--repeat", "1"])
            .args(["--payload-bytes", &PAYLOAD_BYTES.to_string()])
            // The io_uring floor is measured on its own (docs/PERFORMANCE.md), not per point.
            .args(["--writers", "blocking,tokio"])
            .arg("--json")
            .arg(&json)
            .stdout(Stdio::null())
            .status()
            .context("starting write_floor (cargo build --release -p streamgate-bench)")?;
        anyhow::ensure!(status.success(), "write_floor failed ({status})");
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
        for writer in ["blocking", "tokio"] {
            let cpu = doc["writers"][writer]["median_cpu_us_per_write"]
                .as_f64()
                .with_context(|| format!("write_floor JSON without {writer}"))?;
            self.floors.push(Floor {
                point: format!("N={n} M={m}"),
                writer: writer.to_owned(),
                cpu_us_per_write: cpu,
            });
        }
        Ok(())
    }

    fn idle(&mut self, server: Server, transport: TransportKind) -> anyhow::Result<()> {
        let n = self.plan.idle_connections;
        let srv = RunningServer::start(self.cli, server, &self.work)?;
        // Also before the baseline, so that the first request's one-off allocations (and the
        // count's own) are not charged to the connections.
        wait_registered(&srv, 0)?;
        let rss0 = srv.rss_kib();
        let slab0 = slab_kib();
        let fleet = Fleet::spawn(self.cli, &srv, transport, n, 0.0)?;
        wait_registered(&srv, n)?;
        let rss1 = srv.rss_kib();
        let slab1 = slab_kib();
        let cpu0 = srv.cpu_us();
        let started = Instant::now();
        sleep_s(self.plan.idle_seconds);
        let cpu = srv.cpu_us() - cpu0;
        let elapsed = started.elapsed().as_secs_f64();
        let connect_s = fleet.connect_s;
        drop(fleet);
        let mut figures = BTreeMap::new();
        figures.insert("connections".to_owned(), n as f64);
        figures.insert(
            "rss_kib_per_conn".to_owned(),
            rss1.saturating_sub(rss0) as f64 / n as f64,
        );
        figures.insert("rss_total_mib".to_owned(), rss1 as f64 / 1024.0);
        figures.insert(
            "slab_kib_per_conn_both_ends".to_owned(),
            slab1.saturating_sub(slab0) as f64 / n as f64,
        );
        figures.insert(
            "idle_cpu_ms_per_s".to_owned(),
            cpu as f64 / 1000.0 / elapsed,
        );
        figures.insert("connect_all_s".to_owned(), connect_s);
        self.push(
            Scenario::Idle,
            transport,
            &format!("N={n}"),
            server,
            figures,
            Vec::new(),
        );
        Ok(())
    }

    fn storm(&mut self, server: Server, transport: TransportKind) -> anyhow::Result<()> {
        let n = self.plan.storm_clients;
        let spread = self.plan.storm_spread_ms;
        let rate = 20.0;
        let srv = RunningServer::start(self.cli, server, &self.work)?;
        let mut fleet = Fleet::spawn(self.cli, &srv, transport, n, 0.0)?;
        let mut publisher = Publisher::new(server, srv.addr, "bench", PAYLOAD_BYTES);
        // Also gives every client a last id to resume from.
        fleet.warm_up(&mut publisher, n)?;
        fleet.command(&format!("reset {}", publisher.next_index()))?;
        let lead_s = self.plan.storm_lead_s;
        let publish_s = lead_s + spread as f64 / 1000.0 + self.plan.storm_tail_s;
        let handle = publish_in_background(publisher, rate, publish_s);
        sleep_s(lead_s);
        let cpu0 = srv.cpu_us();
        fleet.command(&format!("reconnect {spread}"))?;
        let (_, published) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))?;
        let published = published?;
        let expected = published.ok * n as u64;
        let summary = fleet.drain(expected, Duration::from_secs_f64(1.5 + n as f64 / 5000.0))?;
        let cpu = srv.cpu_us() - cpu0;
        drop(fleet);
        let ttfe = Percentiles::of(&LoadgenSummary::histogram(&summary.ttfe_us));
        let mut figures = BTreeMap::new();
        figures.insert("clients".to_owned(), n as f64);
        figures.insert("reconnected".to_owned(), ttfe.samples as f64);
        figures.insert("ttfe_p50_ms".to_owned(), ttfe.p50_ms);
        figures.insert("ttfe_p99_ms".to_owned(), ttfe.p99_ms);
        figures.insert("ttfe_max_ms".to_owned(), ttfe.max_ms);
        figures.insert("errors".to_owned(), summary.errors as f64);
        figures.insert(
            "lost".to_owned(),
            expected.saturating_sub(summary.deliveries) as f64,
        );
        figures.insert("duplicates".to_owned(), summary.dups as f64);
        figures.insert("storm_cpu_ms".to_owned(), cpu as f64 / 1000.0);
        let mut notes = Vec::new();
        if let Some(e) = &summary.first_error {
            notes.push(format!("first error: {e}"));
        }
        self.push(
            Scenario::Storm,
            transport,
            &format!("C={n} spread={spread}ms"),
            server,
            figures,
            notes,
        );
        Ok(())
    }

    fn slow(&mut self, server: Server, transport: TransportKind) -> anyhow::Result<()> {
        let n = self.plan.slow_n;
        let rate = self.plan.slow_rate;
        let stall_s = self.plan.slow_seconds;
        let stalled = (n as f64 * 0.05).ceil() as u64;
        let srv = RunningServer::start(self.cli, server, &self.work)?;
        let mut fleet = Fleet::spawn(self.cli, &srv, transport, n, 0.05)?;
        let mut publisher = Publisher::new(server, srv.addr, "bench", PAYLOAD_BYTES);
        fleet.warm_up(&mut publisher, n)?;
        // Baseline: everybody reads.
        fleet.command(&format!("reset {}", publisher.next_index()))?;
        let published_base =
            publisher.run(rate, Duration::from_secs_f64(self.plan.slow_baseline_s))?;
        let baseline = fleet.drain(published_base.ok * n as u64, Duration::from_millis(500))?;
        let rss_base = srv.rss_kib();
        // The stall's publisher holds a connection of its own (one per `run`) that is not
        // open now: counted in, so that the 50th cut shows while publishing goes on.
        let fds_base = srv.fds() + 1;
        // Stall 5 %, keep publishing.
        fleet.command(&format!("reset {}", publisher.next_index()))?;
        fleet.command("stall")?;
        let stall_start = Instant::now();
        let handle = publish_in_background(publisher, rate, stall_s);
        let mut rss_max = rss_base;
        let mut cut_at: Option<f64> = None;
        let mut min_fds = fds_base;
        while stall_start.elapsed().as_secs_f64() < stall_s {
            std::thread::sleep(Duration::from_millis(100));
            rss_max = rss_max.max(srv.rss_kib());
            let fds = srv.fds();
            if handle.is_finished() {
                continue; // its connection is gone too: not a cut
            }
            min_fds = min_fds.min(fds);
            if cut_at.is_none() && fds_base.saturating_sub(fds) >= stalled {
                cut_at = Some(stall_start.elapsed().as_secs_f64());
            }
        }
        let (publisher, published) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))?;
        let published = published?;
        let during = fleet.report("report")?;
        // Resume reading; those cut off reconnect with their last id.
        fleet.command("unstall")?;
        let mut publisher = publisher;
        let published_after =
            publisher.run(rate, Duration::from_secs_f64(self.plan.slow_after_s))?;
        let after = fleet.drain(
            (published.ok + published_after.ok) * n as u64,
            Duration::from_secs(1),
        )?;
        drop(fleet);
        let base_p99 = Percentiles::of(&LoadgenSummary::histogram(&baseline.latency_us)).p99_ms;
        let during_p = Percentiles::of(&LoadgenSummary::histogram(&during.latency_us));
        let healthy_expected = published.ok * (n as u64 - stalled);
        let mut figures = BTreeMap::new();
        figures.insert("healthy_p99_before_ms".to_owned(), base_p99);
        figures.insert("healthy_p99_stalled_ms".to_owned(), during_p.p99_ms);
        figures.insert(
            "healthy_p99_change_pct".to_owned(),
            (during_p.p99_ms / base_p99.max(0.001) - 1.0) * 100.0,
        );
        figures.insert(
            "healthy_missing".to_owned(),
            healthy_expected.saturating_sub(during.deliveries) as f64,
        );
        figures.insert(
            "rss_growth_mib".to_owned(),
            rss_max.saturating_sub(rss_base) as f64 / 1024.0,
        );
        figures.insert("stalled".to_owned(), stalled as f64);
        figures.insert(
            "cut_off".to_owned(),
            fds_base.saturating_sub(min_fds).min(stalled) as f64,
        );
        figures.insert("cut_off_after_s".to_owned(), cut_at.unwrap_or(f64::NAN));
        figures.insert("resumed".to_owned(), after.closed_by_server as f64);
        figures.insert("lost_after_resume".to_owned(), after.gaps as f64);
        figures.insert(
            "notices".to_owned(),
            (during.notices + after.notices) as f64,
        );
        let mut notes = Vec::new();
        if cut_at.is_none() {
            notes.push(format!(
                "stalled connections were not cut off within {stall_s} s ({} of {stalled} closed)",
                fds_base.saturating_sub(min_fds).min(stalled)
            ));
        }
        self.push(
            Scenario::Slow,
            transport,
            &format!("N={n} M={rate} stall={stall_s}s"),
            server,
            figures,
            notes,
        );
        Ok(())
    }

    fn knee(&mut self, server: Server, transport: TransportKind) -> anyhow::Result<()> {
        let n = self.plan.knee_n;
        let step_s = self.plan.knee_seconds;
        let srv = RunningServer::start(self.cli, server, &self.work)?;
        // Two processes, so the client side is not one core's worth.
        let per = n.div_ceil(2).max(1);
        let cli_per = self.cli.per_loadgen;
        let mut fleet = {
            let cli = Cli {
                per_loadgen: per.min(cli_per),
                ..clone_cli(self.cli)
            };
            Fleet::spawn(&cli, &srv, transport, n, 0.0)?
        };
        let mut publisher = Publisher::new(server, srv.addr, "bench", PAYLOAD_BYTES);
        fleet.warm_up(&mut publisher, n)?;
        let mut knee_rate = 0.0;
        let mut knee_deliveries = 0.0;
        let mut past: Option<(f64, f64, f64)> = None;
        let mut steps = Vec::new();
        for &m in &self.plan.knee_m.clone() {
            fleet.command(&format!("reset {}", publisher.next_index()))?;
            let cpu0 = srv.cpu_us();
            let published = publisher.run(m, Duration::from_secs_f64(step_s))?;
            let expected = published.ok * n as u64;
            let summary = fleet.drain(expected, Duration::from_secs(1))?;
            let cpu = srv.cpu_us() - cpu0;
            let p = Percentiles::of(&LoadgenSummary::histogram(&summary.latency_us));
            let per_s = summary.deliveries as f64 / step_s;
            let complete = summary.deliveries * 100 >= expected * 99;
            steps.push(format!(
                "M={m}: {per_s:.0}/s p99 {:.1} ms, {:.1} µs/delivery{}",
                p.p99_ms,
                cpu as f64 / summary.deliveries.max(1) as f64,
                if complete { "" } else { ", incomplete" }
            ));
            eprintln!(
                "  knee {} {} {}",
                server.name(),
                transport.name(),
                steps[steps.len() - 1]
            );
            if p.p99_ms > KNEE_P99_MS || !complete {
                past = Some((m, per_s, p.p99_ms));
                break;
            }
            knee_rate = m;
            knee_deliveries = per_s;
        }
        drop(fleet);
        let mut figures = BTreeMap::new();
        figures.insert("knee_events_per_s".to_owned(), knee_rate);
        figures.insert("knee_deliveries_per_s".to_owned(), knee_deliveries);
        if let Some((m, per_s, p99)) = past {
            figures.insert("past_knee_events_per_s".to_owned(), m);
            figures.insert("past_knee_deliveries_per_s".to_owned(), per_s);
            figures.insert("past_knee_p99_ms".to_owned(), p99);
        }
        let mut notes = steps;
        if past.is_none() {
            notes.push(
                "p99 stayed under 100 ms at every step: the knee is above the last".to_owned(),
            );
        }
        self.push(
            Scenario::Knee,
            transport,
            &format!("N={n}"),
            server,
            figures,
            notes,
        );
        Ok(())
    }
}

fn fleet_connect_ms(summary: &LoadgenSummary) -> f64 {
    Percentiles::of(&LoadgenSummary::histogram(&summary.connect_us)).p99_ms
}

fn clone_cli(cli: &Cli) -> Cli {
    Cli {
        streamgate_bin: Some(streamgate_bin(cli)),
        loadgen_bin: Some(loadgen_bin(cli)),
        nchan_script: cli.nchan_script.clone(),
        nchan_workers: cli.nchan_workers,
        quick: cli.quick,
        json: None,
        servers: cli.servers.clone(),
        transports: cli.transports.clone(),
        scenarios: cli.scenarios.clone(),
        fanout_n: None,
        fanout_m: None,
        fanout_seconds: None,
        idle_connections: None,
        idle_seconds: None,
        knee_n: None,
        knee_m: None,
        knee_seconds: None,
        slow_n: None,
        slow_rate: None,
        slow_seconds: None,
        storm_clients: None,
        storm_spread_ms: None,
        per_loadgen: cli.per_loadgen,
        repeat: cli.repeat,
    }
}

// ---------------------------------------------------------------------------------------
// Output.

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn print_tables(results: &[Measurement]) {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for r in results {
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario);
        }
    }
    for scenario in scenarios {
        println!("\n## {}\n", scenario.title());
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut keys: Vec<(TransportKind, String)> = Vec::new();
        for r in results.iter().filter(|r| r.scenario == scenario) {
            let key = (r.transport, r.point.clone());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        for (transport, point) in keys {
            let point_name = &point;
            let runs = |server: Server| {
                results.iter().filter(move |r| {
                    r.scenario == scenario
                        && r.transport == transport
                        && r.point == *point_name
                        && r.server == server
                })
            };
            // With --repeat, every figure is the median of its runs.
            let median = |server: Server, name: &str| {
                median_of(runs(server).filter_map(|r| r.figures.get(name).copied()))
            };
            let names: Vec<String> = runs(Server::Streamgate)
                .chain(runs(Server::Nchan))
                .next()
                .map(|r| r.figures.keys().cloned().collect())
                .unwrap_or_default();
            for name in names {
                let a = median(Server::Streamgate, &name);
                let b = median(Server::Nchan, &name);
                rows.push(vec![
                    transport.name().to_owned(),
                    point.clone(),
                    name,
                    cell(a),
                    cell(b),
                    ratio_cell(a, b),
                ]);
            }
        }
        print!(
            "{}",
            streamgate_compare::stats::format_table(
                &[
                    "transport",
                    "point",
                    "figure",
                    "streamgate",
                    "nchan",
                    "sg/nchan"
                ],
                &rows
            )
        );
    }
}

/// A table cell: the value, or `-` where there is none.
fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), fmt_value)
}

/// A table cell holding `a / b`, or `-` where either is missing or the ratio is undefined.
fn ratio_cell(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && !a.is_nan() && !b.is_nan() => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

/// The median of the values that are numbers, if any.
fn median_of(values: impl Iterator<Item = f64>) -> Option<f64> {
    let values: Vec<f64> = values.filter(|v| !v.is_nan()).collect();
    (!values.is_empty()).then(|| streamgate_compare::stats::median(&values))
}

/// The servers' CPU per delivery beside the write floor at the same fan-out points.
fn print_floor_table(results: &[Measurement], floors: &[Floor]) {
    if floors.is_empty() {
        return;
    }
    println!("\n## 2. fan-out: CPU µs per delivery against the write floor\n");
    let mut points: Vec<&str> = Vec::new();
    for floor in floors {
        if !points.contains(&floor.point.as_str()) {
            points.push(&floor.point);
        }
    }
    let mut transports: Vec<TransportKind> = Vec::new();
    for r in results.iter().filter(|r| r.scenario == Scenario::Fanout) {
        if !transports.contains(&r.transport) {
            transports.push(r.transport);
        }
    }
    let mut rows = Vec::new();
    for point in points {
        let floor = |writer: &str| {
            median_of(
                floors
                    .iter()
                    .filter(|f| f.point == point && f.writer == writer)
                    .map(|f| f.cpu_us_per_write),
            )
        };
        let (blocking, tokio) = (floor("blocking"), floor("tokio"));
        for &transport in &transports {
            let server_cpu = |server: Server| {
                median_of(
                    results
                        .iter()
                        .filter(|r| {
                            r.scenario == Scenario::Fanout
                                && r.transport == transport
                                && r.point == point
                                && r.server == server
                        })
                        .filter_map(|r| r.figures.get("cpu_us_per_delivery").copied()),
                )
            };
            let sg = server_cpu(Server::Streamgate);
            rows.push(vec![
                transport.name().to_owned(),
                point.to_owned(),
                cell(blocking),
                cell(tokio),
                cell(sg),
                cell(server_cpu(Server::Nchan)),
                ratio_cell(sg, tokio),
            ]);
        }
    }
    print!(
        "{}",
        streamgate_compare::stats::format_table(
            &[
                "transport",
                "point",
                "floor: write loop",
                "floor: tokio task",
                "streamgate",
                "nchan",
                "sg/tokio floor"
            ],
            &rows
        )
    );
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let plan = Plan::new(cli);
    let bin = streamgate_bin(cli);
    anyhow::ensure!(
        !cli.servers.contains(&Server::Streamgate) || bin.exists(),
        "no streamgate binary at {} (cargo build --release -p streamgate, or --streamgate-bin)",
        bin.display()
    );
    let loadgen = loadgen_bin(cli);
    anyhow::ensure!(
        loadgen.exists(),
        "no loadgen at {} (cargo build --release -p streamgate-bench)",
        loadgen.display()
    );
    if cli.servers.contains(&Server::Nchan) {
        let status = Command::new("bash")
            .arg(&cli.nchan_script)
            .arg("install")
            .status()
            .context("nchan.sh install")?;
        anyhow::ensure!(status.success(), "nchan.sh install failed");
    }
    let work = std::env::temp_dir().join(format!("vs_nchan-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let started = Instant::now();
    let mut ctx = Ctx {
        cli,
        plan,
        work: work.clone(),
        results: Vec::new(),
        floors: Vec::new(),
    };
    eprintln!(
        "vs_nchan: streamgate {}, loadgen {}, {} cores, load {}",
        bin.display(),
        loadgen.display(),
        std::thread::available_parallelism().map_or(0, usize::from),
        streamgate_compare::gateway::loadavg()
    );
    let mut failures = Vec::new();
    for &scenario in &cli.scenarios {
        eprintln!(
            "vs_nchan: {} ({:.0} s in)",
            scenario.title(),
            started.elapsed().as_secs_f64()
        );
        for &transport in &cli.transports {
            let points: Vec<(usize, f64)> = match scenario {
                Scenario::Fanout => ctx
                    .plan
                    .fanout_n
                    .iter()
                    .flat_map(|&n| ctx.plan.fanout_m.iter().map(move |&m| (n, m)))
                    .collect(),
                _ => vec![(0, 0.0)],
            };
            for (n, m) in points {
                for server in (0..cli.repeat.max(1)).flat_map(|_| cli.servers.iter().copied()) {
                    let result = match scenario {
                        Scenario::Fanout => ctx.fanout(server, transport, n, m),
                        Scenario::Idle => ctx.idle(server, transport),
                        Scenario::Storm => ctx.storm(server, transport),
                        Scenario::Slow => ctx.slow(server, transport),
                        Scenario::Knee => ctx.knee(server, transport),
                    };
                    if let Err(e) = result {
                        let what = format!(
                            "{} {} {}: {e:#}",
                            scenario.title(),
                            server.name(),
                            transport.name()
                        );
                        eprintln!("vs_nchan: FAILED {what}");
                        failures.push(what);
                    }
                }
                // The floor does not depend on the transport: once per point.
                if scenario == Scenario::Fanout && Some(&transport) == cli.transports.first() {
                    for _ in 0..cli.repeat.max(1) {
                        if let Err(e) = ctx.floor(n, m) {
                            eprintln!("vs_nchan: FAILED write floor N={n} M={m}: {e:#}");
                            failures.push(format!("write floor N={n} M={m}: {e:#}"));
                        }
                    }
                }
            }
        }
    }
    print_tables(&ctx.results);
    print_floor_table(&ctx.results, &ctx.floors);
    println!(
        "\n(ratio = streamgate / nchan; {}; {:.0} s in all)",
        if cli.repeat > 1 {
            format!("medians of {} runs each", cli.repeat)
        } else {
            "one run each".to_owned()
        },
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &cli.json {
        let json = serde_json::json!({
            "quick": cli.quick,
            "repeat": cli.repeat,
            "cores": std::thread::available_parallelism().map_or(0, usize::from),
            "results": ctx.results,
            "write_floor": ctx.floors,
            "failures": failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let _ = std::fs::remove_dir_all(&work);
    anyhow::ensure!(
        failures.is_empty(),
        "{} measurements failed",
        failures.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_cleanup();
    let result = run(&cli);
    kill_everything();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vs_nchan: {e:#}");
            ExitCode::FAILURE
        }
    }
}
