//! # `streamgate compare`: every transport on the same events, side by side
//!
//! A tool (`tools/compare`), not part of what ships: the gateway binary links it for its
//! `streamgate compare` subcommand (feature `compare`), and `bench/` for `fanout` and
//! `cross_node`.
//!
//! One command measures what each transport costs on the same stream: connection setup
//! time, publish → receive latency percentiles, delivered events per second at saturation,
//! bytes on the wire per event (both directions, framing and headers included, counted at
//! the client socket), and the gateway's CPU time per delivery and memory per connection.
//! It prints a table (with a progress bar while it runs), and writes JSON and a chart.
//!
//! ## How a run works
//!
//! For every transport in turn, [`run::run_once`] starts a fresh gateway as a child process
//! (this same binary, `serve`, or the one `--gateway` names), connects one WebSocket
//! publisher and N subscribers of that transport, and publishes the same sequence of
//! events: first at a fixed rate (open loop, for latency), then back to back (for
//! throughput). Each transport gets a gateway of its own so that its CPU time and memory
//! are its own; each gets the same events, the same payloads and the same schedule, so the
//! rows differ only by transport.
//!
//! The bus is a dimension of its own (`--bus memory,redis,nats`, `--nodes 2`): on a broker
//! bus a run starts `--nodes` gateways sharing one fresh namespace of the broker, connects
//! the publisher to node A and every subscriber to node B, so that each event crosses from
//! one process to the other through the broker. Such rows are compared with the memory row
//! of the same transport and count, measured in the same invocation on the same machine.
//! The modules follow the run's parts:
//!
//! - [`args`]: the options and the plan made of them;
//! - [`gateway`]: the gateway process, its config, `/proc` readings;
//! - [`broker`]: the Redis or NATS settings the nodes of a run share, and removing the
//!   run's namespace from the broker afterwards;
//! - [`publisher`]: the open-loop publisher on its own thread;
//! - [`clients`]: one subscriber per transport, and the tally of what it receives;
//! - [`wire`]: byte counting at the socket, reading events back;
//! - [`wsdeflate`]: the WebSocket client that speaks permessage-deflate;
//! - [`run`]: one run's phases; [`report`]: rows, table, JSON; [`chart`]: the SVG/PNG;
//! - `--netem` puts the gateway behind the impaired link of the crate `streamgate-impair`
//!   (`tools/impair`).
//!
//! `docs/COMPARISON.md` shows a full run and explains the differences in protocol terms;
//! `bench/README.md` says what every figure means.

pub mod args;
pub mod broker;
pub mod chart;
pub mod clients;
pub mod gateway;
pub mod progress;
pub mod publisher;
pub mod report;
pub mod run;
pub mod stats;
mod tls;
pub mod wire;
pub mod wsdeflate;

use std::io::{IsTerminal as _, Write as _};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

pub use args::{Bus, CompareArgs, Deployment, Transport};

use crate::gateway::Endpoints;
use crate::progress::RunProgress;
use crate::report::{Output, Row};
use crate::run::{GatewaySource, RunReport, RunSpec};
use streamgate_impair::{ImpairedLink, Impairment};

/// Runs a comparison as the command line asks, printing to the terminal and writing the
/// files asked for. `default_gateway` is the gateway binary when `--gateway` is not given.
///
/// # Errors
/// Bad options, a gateway that cannot start, or reliable transports that lost events (the
/// table and files are written first).
pub fn run(args: &CompareArgs, default_gateway: &Path) -> anyhow::Result<()> {
    compare(args, default_gateway)?.ensure_lossless()
}

/// What a comparison measured, once its table and files are out.
#[derive(Debug)]
pub struct Comparison {
    /// One row per transport, count and bus, in the order of the table.
    pub rows: Vec<Row>,
}

impl Comparison {
    /// Fails when a reliable transport lost events, naming the rows.
    ///
    /// # Errors
    /// If a reliable transport lost events (the warnings printed say where).
    pub fn ensure_lossless(&self) -> anyhow::Result<()> {
        let lossy: Vec<String> = self
            .rows
            .iter()
            .filter(|row| {
                row.transport.reliable() && (row.missing > 0 || row.saturation_missing > 0)
            })
            .map(|row| {
                if row.bus_backend.is_broker() {
                    format!("{} on {}", row.transport.name(), row.bus)
                } else {
                    row.transport.name().to_owned()
                }
            })
            .collect();
        anyhow::ensure!(
            lossy.is_empty(),
            "reliable transports lost events: {} (see the warnings above)",
            lossy.join(", ")
        );
        Ok(())
    }
}

/// [`run`], returning the rows instead of failing on lost events: for tools that show
/// more of them (`bench/`'s `cross_node`). Call [`Comparison::ensure_lossless`] after.
///
/// # Errors
/// Bad options, a gateway that cannot start or whose bus does not become available.
pub fn compare(args: &CompareArgs, default_gateway: &Path) -> anyhow::Result<Comparison> {
    let plan = args.plan()?;
    let WorkerRuntime {
        runtime,
        cores,
        workers,
    } = WorkerRuntime::new(args.workers)?;
    let json_to_stdout = args.json.as_deref() == Some(Path::new("-"));
    // With JSON on standard output, everything for people goes to standard error.
    let mut out: Box<dyn std::io::Write> = if json_to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();

    let temp = std::env::temp_dir().join(format!("streamgate-compare-{}", std::process::id()));
    std::fs::create_dir_all(&temp).with_context(|| format!("creating {}", temp.display()))?;
    let mut impairment_note = None;
    let mut gateway_name = String::new();
    let source = runtime.block_on(async {
        if let Some(target) = &args.target {
            let resolve = |text: &str| -> anyhow::Result<SocketAddr> {
                text.to_socket_addrs()
                    .with_context(|| format!("resolving {text}"))?
                    .next()
                    .with_context(|| format!("{text} resolves to no address"))
            };
            let http = resolve(target)?;
            let tls = args.target_tls.as_deref().map(resolve).transpose()?;
            gateway_name = format!("running gateway at {http}");
            anyhow::Ok(GatewaySource::Target {
                endpoints: Endpoints {
                    http,
                    tls,
                    wt: None,
                },
                pid: args.target_pid,
            })
        } else {
            let binary = args
                .gateway
                .clone()
                .unwrap_or_else(|| default_gateway.to_path_buf());
            anyhow::ensure!(
                binary.is_file(),
                "no gateway binary at {} (build it with `cargo build --release -p streamgate`, \
                 or pass --gateway)",
                binary.display()
            );
            gateway_name = binary.display().to_string();
            // Every run starts the same build, even if the binary is rebuilt meanwhile.
            let copy = temp.join("streamgate");
            std::fs::copy(&binary, &copy)
                .with_context(|| format!("copying {}", binary.display()))?;
            let link = match &args.netem {
                Some(spec) => {
                    let impairment: Impairment = spec
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--netem {spec:?}: {e}"))?;
                    // Its errors say what is missing (root, `ip`, netem or /dev/net/tun).
                    let link = ImpairedLink::create(&impairment).await?;
                    impairment_note = Some(link.describe());
                    Some(Arc::new(link))
                }
                None => None,
            };
            Ok(GatewaySource::Launch { binary: copy, link })
        }
    })?;

    let machine = machine_description(cores, workers);
    let loadavg_before = gateway::loadavg();
    let _ = writeln!(
        out,
        "streamgate compare: {} transports × {:?} subscribers, {} events at {}/s then {} back \
         to back, {} B payloads, {} setup samples, median of {} runs",
        plan.transports.len(),
        plan.subscribers,
        plan.events_for(),
        plan.rate,
        plan.subscribers
            .iter()
            .map(|&n| plan.saturate_events_for(n).to_string())
            .collect::<Vec<_>>()
            .join("/"),
        plan.payload_bytes,
        plan.setup_samples,
        plan.repeat,
    );
    let _ = writeln!(
        out,
        "gateway: {gateway_name}; {machine}; load {loadavg_before}"
    );
    if let Some(note) = &impairment_note {
        let _ = writeln!(out, "link: {note}");
    }
    if plan.deployments.iter().any(|d| d.bus.is_broker()) {
        let mut buses: Vec<String> = Vec::new();
        for deployment in &plan.deployments {
            buses.push(match deployment.bus {
                Bus::Memory => "memory (one gateway)".to_owned(),
                Bus::Redis => format!(
                    "{} ({}, fanout {})",
                    deployment.label(),
                    args.redis_url,
                    args.redis_fanout.name()
                ),
                Bus::Nats => format!("{} ({})", deployment.label(), args.nats_url),
            });
        }
        let _ = writeln!(
            out,
            "bus: {}; a fresh namespace per run; publisher on node A, subscribers on node B",
            buses.join(", ")
        );
    }

    let ticks_per_sec = gateway::clock_ticks_per_sec();
    // Buses vary fastest, so that the rows to compare stand next to each other and their
    // runs follow each other closely.
    let groups: Vec<(Transport, usize, Deployment)> = plan
        .transports
        .iter()
        .flat_map(|&t| plan.subscribers.iter().map(move |&n| (t, n)))
        .flat_map(|(t, n)| plan.deployments.iter().map(move |&d| (t, n, d)))
        .collect();
    let mut runs: Vec<Vec<RunReport>> = vec![Vec::new(); groups.len()];
    let mut skipped = Vec::new();
    let result =
        (|| -> anyhow::Result<()> {
            for repeat in 0..plan.repeat {
                for (slot, &(transport, subscribers, deployment)) in groups.iter().enumerate() {
                    if let GatewaySource::Target { endpoints, .. } = &source {
                        if transport == Transport::SseH2 && endpoints.tls.is_none() {
                            if repeat == 0 {
                                skipped.push("sse-h2 (no --target-tls)".to_owned());
                            }
                            continue;
                        }
                    }
                    let spec = RunSpec {
                        args,
                        plan: &plan,
                        transport,
                        subscribers,
                        deployment,
                        source: &source,
                        dir: run::run_dir(&temp, repeat, transport, subscribers, deployment),
                        ticks_per_sec,
                    };
                    let bus = if deployment.bus.is_broker() {
                        format!(" {}", deployment.label())
                    } else {
                        String::new()
                    };
                    let label = format!(
                        "{} ×{subscribers}{bus} ({}/{})",
                        transport.name(),
                        repeat + 1,
                        plan.repeat
                    );
                    let progress = RunProgress::new(&label, show_progress);
                    let report = runtime
                        .block_on(run::run_once(&spec, &progress))
                        .with_context(|| format!("running {label}"))?;
                    progress.finish();
                    eprintln!(
                    "{label:>32}: setup {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, {}/{} delivered, \
                     saturated {:.0} ev/s",
                    report.setup.p50_ms,
                    report.open_loop.latency.p50_us / 1e3,
                    report.open_loop.latency.p99_us / 1e3,
                    report.open_loop.deliveries,
                    report.open_loop.expected_deliveries,
                    report.saturation.as_ref().map_or(0.0, |p| p.delivered_per_sec),
                );
                    runs[slot].push(report);
                }
            }
            Ok(())
        })();
    let _ = std::fs::remove_file(temp.join("streamgate"));
    let _ = std::fs::remove_dir(&temp);
    if let GatewaySource::Launch {
        link: Some(link), ..
    } = source
    {
        if let Ok(link) = Arc::try_unwrap(link) {
            if let Err(e) = runtime.block_on(link.remove()) {
                eprintln!("warning: removing the impaired link: {e:#}");
            }
        }
    }
    result?;

    let latency_from_gateway = args.netem.is_some();
    let mut rows: Vec<Row> = runs
        .into_iter()
        .filter(|runs| !runs.is_empty())
        .map(|runs| Row::from_runs(runs, latency_from_gateway))
        .collect();
    report::compare_with_memory(&mut rows);
    let multi_node_figures = rows
        .iter()
        .any(|row| row.nodes > 1)
        .then_some(report::MULTI_NODE_FIGURES);
    let _ = writeln!(out);
    let _ = write!(out, "{}", report::table(&rows));
    if let Some(note) = multi_node_figures {
        let _ = writeln!(out, "{note}");
    }
    if let Some(table) = report::bus_table(&rows) {
        let _ = writeln!(
            out,
            "\nagainst the memory bus (×mem: the row's figure over the memory row's of the \
             same transport and count, this run):"
        );
        let _ = write!(out, "{table}");
    }
    if latency_from_gateway {
        let _ = writeln!(
            out,
            "latency: from the gateway's publish timestamp (the publisher's own path crosses \
             the impaired link too)"
        );
    }
    for note in &skipped {
        let _ = writeln!(out, "skipped: {note}");
    }
    for row in &rows {
        for line in report::warnings(row) {
            let _ = writeln!(out, "{line}");
        }
    }
    let loadavg_after = gateway::loadavg();
    let _ = writeln!(
        out,
        "load average before {loadavg_before}, after {loadavg_after}"
    );

    if let Some(path) = &args.json {
        let output = Output {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: machine.clone(),
            gateway: gateway_name.clone(),
            plan: &plan,
            impairment: impairment_note.clone(),
            latency_from_gateway_timestamp: latency_from_gateway,
            loadavg_before,
            loadavg_after,
            rows: &rows,
            kept_logs: rows
                .iter()
                .flat_map(|row| &row.runs)
                .flat_map(|run| run.gateway_log.iter().chain(&run.other_node_logs))
                .cloned()
                .collect(),
            multi_node_figures,
        };
        let json = serde_json::to_string_pretty(&output)?;
        if json_to_stdout {
            println!("{json}");
        } else {
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
            let _ = writeln!(out, "wrote {}", path.display());
        }
    }
    let text = report::chart_text(&plan, &machine, impairment_note.as_deref());
    let series = report::chart_series(&rows);
    if let Some(path) = &args.chart {
        std::fs::write(path, chart::latency_chart_svg(&text, &series))
            .with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(out, "wrote {}", path.display());
    }
    if let Some(path) = &args.png {
        let png = chart::latency_chart_png(&text, &series)?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(out, "wrote {}", path.display());
    }
    Ok(Comparison { rows })
}

/// The clients' multi-threaded tokio runtime, and the figures a report's header gives of it.
#[derive(Debug)]
pub struct WorkerRuntime {
    /// The runtime.
    pub runtime: tokio::runtime::Runtime,
    /// Cores this process may use.
    pub cores: usize,
    /// Its worker threads.
    pub workers: usize,
}

impl WorkerRuntime {
    /// A runtime of `workers` worker threads, one per core when `None`.
    ///
    /// # Errors
    /// When the runtime cannot be built (threads cannot be spawned).
    pub fn new(workers: Option<usize>) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = workers.unwrap_or(cores);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        Ok(Self {
            runtime,
            cores,
            workers,
        })
    }
}

/// Cores, client workers and kernel, for the report's header.
fn machine_description(cores: usize, workers: usize) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores shared by gateway and clients, {workers} client workers, Linux {kernel}")
}

/// The default gateway binary of `bench/`: the release build in the workspace.
pub fn workspace_release_gateway() -> PathBuf {
    PathBuf::from("target/release/streamgate")
}
