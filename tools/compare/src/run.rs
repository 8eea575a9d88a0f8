//! One run: one transport, a fresh gateway (or `--nodes` of them sharing a broker: the
//! publisher on node A, the subscribers on node B), N subscribers, two phases of the same
//! events.
//!
//! 1. **Setup**: sequential connections, each timed from nothing to "subscribed" and closed
//!    before the next, for the setup p50/p99 and the bytes a handshake costs.
//! 2. **Connect** the N subscribers, a bounded number at a time; read the gateway's RSS
//!    before and after, for the memory per connection.
//! 3. **Open loop**: events at a fixed rate, each timed from its *scheduled* send time, so
//!    that a publisher falling behind is charged for it (no coordinated omission). Latency,
//!    bytes per event and gateway CPU per delivery come from this phase.
//! 4. **Saturation**: events back to back, for delivered events per second.
//!
//! Every subscriber checks order and tallies an order-independent digest of `(index, id)`,
//! so the run can tell whether every client saw the same ids.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::args::{Bus, CompareArgs, Deployment, Envelope, Plan, Transport};
use crate::broker::BusSettings;
use crate::clients::{self, ClientSetup, Feed, PhaseBounds, Tally};
use crate::gateway::{self, Endpoints, GatewayProcess, BUS_READY_TIMEOUT};
use crate::progress::RunProgress;
use crate::publisher::{PublishOrder, PublishReport, Publisher, PublisherSetup};
use crate::stats::{latency_histogram, merge, quantile, LatencySummary};
use streamgate_impair::ImpairedLink;

/// The topic every run publishes to and subscribes to.
pub const TOPIC: &str = "compare";
/// WebTransport subscribers share this many client endpoints (UDP sockets), round robin.
const WT_CLIENT_ENDPOINTS: usize = 8;
/// Unreliable transports: a phase ends once no delivery has arrived for this long after
/// its last publish (lost datagrams never arrive, so waiting for the count would not end).
const UNRELIABLE_IDLE: Duration = Duration::from_secs(1);

/// Where the gateway under test comes from.
#[derive(Debug)]
pub enum GatewaySource {
    /// Start this binary per run, in the namespace behind `link` if there is one.
    Launch {
        /// The gateway binary.
        binary: PathBuf,
        /// The impaired link, for `--netem`.
        link: Option<Arc<ImpairedLink>>,
    },
    /// A gateway that is already running.
    Target {
        /// Where it listens.
        endpoints: Endpoints,
        /// Its process id, to read CPU time and memory, if known.
        pid: Option<u32>,
    },
}

impl GatewaySource {
    /// The address clients bind to: the near end of the impaired link, else any.
    fn client_ip(&self) -> IpAddr {
        match self {
            Self::Launch {
                link: Some(link), ..
            } => link.client_ip(),
            _ => IpAddr::from([0, 0, 0, 0]),
        }
    }
}

/// One run's parameters.
#[derive(Debug)]
pub struct RunSpec<'a> {
    /// The command line.
    pub args: &'a CompareArgs,
    /// The plan made of it.
    pub plan: &'a Plan,
    /// The transport.
    pub transport: Transport,
    /// Subscribers.
    pub subscribers: usize,
    /// The bus, and how many gateway processes share it.
    pub deployment: Deployment,
    /// The gateway.
    pub source: &'a GatewaySource,
    /// Where its config and log go.
    pub dir: PathBuf,
    /// `CLK_TCK`.
    pub ticks_per_sec: u64,
}

/// Connection setup times and sizes, over the sequential samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SetupReport {
    /// Setups timed.
    pub samples: usize,
    /// Setups that failed.
    pub failures: usize,
    /// The first failure.
    pub first_failure: Option<String>,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Bytes read by the client until subscribed (median).
    pub bytes_down: f64,
    /// Bytes written by the client until subscribed (median).
    pub bytes_up: f64,
}

/// One phase's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    /// Events published.
    pub events: u64,
    /// Events per second asked for; 0 = back to back.
    pub rate: u64,
    /// Events received, summed over subscribers.
    pub deliveries: u64,
    /// `connected subscribers × events`.
    pub expected_deliveries: u64,
    /// `expected - deliveries`.
    pub missing: u64,
    /// Deliveries out of order (ordered transports only count).
    pub misordered: u64,
    /// Subscribers that received every event but saw other ids than the majority.
    pub id_mismatches: usize,
    /// From the first event's scheduled time to the last delivery, seconds.
    pub elapsed_secs: f64,
    /// `deliveries / elapsed_secs`.
    pub delivered_per_sec: f64,
    /// Scheduled send time → receive.
    pub latency: LatencySummary,
    /// Gateway publish timestamp → receive (the fan-out leg alone; µs resolution).
    pub fanout_latency: LatencySummary,
    /// Envelope bytes per delivery.
    pub message_bytes_per_event: f64,
    /// Envelope plus the framing the client sees (WebSocket header, length prefix).
    pub frame_bytes_per_event: f64,
    /// Bytes the client sockets read during the phase, per delivery.
    pub wire_down_per_event: f64,
    /// Bytes the client sockets wrote during the phase, per delivery (requests, ACKs).
    pub wire_up_per_event: f64,
    /// Long polling: polls answered per delivery.
    pub polls_per_event: f64,
    /// Gateway CPU time over the phase (threads' schedstat), ms per 1 000 deliveries;
    /// summed over the nodes when there are several.
    pub gateway_cpu_ms_per_1k: f64,
    /// Several nodes: each one's share of `gateway_cpu_ms_per_1k`, node A first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_cpu_ms_per_1k_by_node: Vec<f64>,
    /// Gateway `utime + stime` over the phase, seconds (10 ms resolution), every node.
    pub gateway_cpu_secs: f64,
    /// The clients' (this process's) CPU over the phase, ms per 1 000 deliveries.
    pub client_cpu_ms_per_1k: f64,
    /// The publisher's account.
    pub publish: PublishReport,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The transport.
    pub transport: Transport,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// The bus.
    pub bus: Bus,
    /// Gateway processes sharing it: the publisher's node A, the subscribers' B, ….
    pub nodes: usize,
    /// `ws-deflate`: whether the gateway accepted `permessage-deflate`.
    pub deflate_accepted: Option<bool>,
    /// Sequential connection setups.
    pub setup: SetupReport,
    /// Subscribers connected.
    pub connected: usize,
    /// Subscribers that failed to connect.
    pub connect_failures: usize,
    /// The first connect failure.
    pub first_connect_error: Option<String>,
    /// From the first connect to the last `subscribed`, seconds.
    pub connect_secs: f64,
    /// The open-loop phase.
    pub open_loop: PhaseReport,
    /// The saturation phase, if run.
    pub saturation: Option<PhaseReport>,
    /// `lagged` notices.
    pub lagged: u64,
    /// `gap` notices.
    pub gaps: u64,
    /// `error` messages.
    pub errors: u64,
    /// Unexpected messages.
    pub other_messages: u64,
    /// Events that could not be read.
    pub unreadable_events: u64,
    /// Subscribers whose connection ended early.
    pub dropped: usize,
    /// Why the first one did.
    pub first_drop_reason: Option<String>,
    /// Gateway RSS before the subscribers connected, KiB (every node's, summed).
    pub gateway_rss_before_kib: u64,
    /// … once they had, KiB.
    pub gateway_rss_connected_kib: u64,
    /// `(connected - before) / connected`, KiB.
    pub gateway_rss_per_connection_kib: f64,
    /// Gateway log lines at WARN or ERROR, up to the moment it was asked to stop: what a
    /// node logs while it closes (a broker connection it ends, say) says nothing about the
    /// figures.
    pub gateway_log_warnings: usize,
    /// Whether the gateway died during the run.
    pub gateway_exited_early: bool,
    /// Its log, kept when something went wrong (or with `--keep-logs`); node A's when
    /// there are several.
    pub gateway_log: Option<PathBuf>,
    /// The logs of nodes B, …, kept like `gateway_log`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_node_logs: Vec<PathBuf>,
    /// Why the run's namespace could not be removed from the broker, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_leftover: Option<String>,
    /// The open-loop latency histograms (ns) from the scheduled send time and from the
    /// gateway's timestamp, for charts; not serialised.
    #[serde(skip)]
    pub open_loop_histograms: Option<[Histogram<u64>; 2]>,
}

/// Shared between the run and its subscribers.
#[derive(Debug, Default)]
struct Signals {
    /// Subscribers that are through with each phase (done, closed or dropped).
    through: [AtomicUsize; 2],
    /// Deliveries so far, all phases.
    deliveries: AtomicU64,
    changed: Notify,
}

/// Runs one transport once, on gateways of its own (on a namespace of its own in the
/// broker, removed afterwards).
///
/// # Errors
/// If a gateway or the publisher cannot start, or a gateway's broker bus does not become
/// available; what goes wrong with subscribers is counted in the report instead.
pub async fn run_once(spec: &RunSpec<'_>, progress: &RunProgress) -> anyhow::Result<RunReport> {
    let bus = match spec.source {
        GatewaySource::Launch { .. } => BusSettings::fresh(spec.deployment.bus, spec.args),
        // Its bus is its own business: nothing to configure, nothing to remove.
        GatewaySource::Target { .. } => BusSettings::Memory,
    };
    let result = run_on_bus(spec, &bus, progress).await;
    // Every node has exited by now (stopped, or killed when dropped on an error), so none
    // can create the namespace again.
    let removal = bus.remove_namespace().await;
    match (result, removal) {
        (Ok(mut report), Err(e)) => {
            report.broker_leftover = Some(format!("{e:#}"));
            Ok(report)
        }
        (result, _) => result,
    }
}

/// [`run_once`] on `bus`.
async fn run_on_bus(
    spec: &RunSpec<'_>,
    bus: &BusSettings,
    progress: &RunProgress,
) -> anyhow::Result<RunReport> {
    let plan = spec.plan;
    let args = spec.args;
    let n = spec.subscribers;
    let transport = spec.transport;
    let events = plan.events_for();
    let saturate = plan.saturate_events_for(n);
    let queue = args.queue.unwrap_or_else(|| {
        usize::try_from(events + saturate)
            .unwrap_or(usize::MAX)
            .max(1024)
    });
    let connect_timeout = CompareArgs::secs(args.connect_timeout);

    progress.stage("starting the gateway");
    let deployment = spec.deployment;
    // The gateway processes this run started, node A first; none with `--target`.
    let mut nodes: Vec<GatewayProcess> = Vec::new();
    let (endpoints, pids): (Vec<Endpoints>, Vec<String>) = match spec.source {
        GatewaySource::Launch { binary, link } => {
            for node in 0..deployment.nodes {
                // `--netem` runs one node only (`CompareArgs::plan`): its namespace's
                // fixed ports have room for one.
                let (endpoints, command) = match link {
                    Some(link) => (
                        Endpoints::in_namespace(link.gateway_ip()),
                        link.command(binary),
                    ),
                    None => (Endpoints::free_loopback()?, Command::new(binary)),
                };
                let config = gateway::gateway_config_with_bus(
                    n,
                    queue,
                    events + saturate,
                    plan.payload_bytes,
                    &endpoints,
                    bus,
                );
                let dir = node_dir(&spec.dir, node, deployment.nodes);
                let process = GatewayProcess::start(command, &dir, &config, endpoints)
                    .await
                    .with_context(|| format!("starting node {}", node_name(node)))?;
                nodes.push(process);
            }
            if bus.is_broker() {
                progress.stage("waiting for the bus");
                for (node, process) in nodes.iter_mut().enumerate() {
                    process
                        .wait_bus_available(BUS_READY_TIMEOUT)
                        .await
                        .with_context(|| {
                            format!(
                                "node {} ({}) on {}",
                                node_name(node),
                                process.endpoints.http,
                                bus.describe()
                            )
                        })?;
                }
            }
            (
                nodes.iter().map(|process| process.endpoints).collect(),
                nodes
                    .iter()
                    .map(|process| process.measured_pid().to_string())
                    .collect(),
            )
        }
        GatewaySource::Target { endpoints, pid } => {
            (vec![*endpoints], pid.iter().map(u32::to_string).collect())
        }
    };
    let publisher = Publisher::connect(PublisherSetup {
        addr: endpoints[0].http,
        topic: TOPIC.to_owned(),
        payload_bytes: plan.payload_bytes,
        connect_timeout,
        timeout: CompareArgs::secs(args.drain_timeout),
    })
    .await?;

    // One client setup per node that subscribers connect to, in node order.
    let subscriber_nodes = deployment.subscriber_nodes();
    let mut setups = Vec::with_capacity(subscriber_nodes.len());
    for node in subscriber_nodes.clone() {
        setups.push(Arc::new(client_setup(spec, endpoints[node]).await?));
    }

    // Memory before any client connects: setup samples come and go before the subscribers
    // connect, and the allocator keeps what they freed for the subscribers to reuse.
    let rss = || -> u64 {
        pids.iter()
            .filter_map(|pid| gateway::rss_kib(pid).ok())
            .sum()
    };
    let rss_before = rss();
    progress.stage("timing connection setup");
    let setup_report = measure_setup(&setups[0], plan.setup_samples, connect_timeout).await;

    // Connect every subscriber, `connect_parallel` at a time.
    progress.connecting(n);
    let bounds = vec![
        PhaseBounds { first: 0, events },
        PhaseBounds {
            first: events,
            events: saturate,
        },
    ];
    let signals = Arc::new(Signals::default());
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = watch::channel(0usize);
    let slots = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let connect_start = Instant::now();
    let mut tasks = JoinSet::new();
    for slot in 0..n {
        let node = deployment.subscriber_node(slot);
        tasks.spawn(subscriber(SubscriberTask {
            setup: Arc::clone(&setups[node - subscriber_nodes.start]),
            slot,
            bounds: bounds.clone(),
            slots: Arc::clone(&slots),
            connect_timeout,
            ready: ready_tx.clone(),
            close: close_rx.clone(),
            signals: Arc::clone(&signals),
        }));
    }
    drop(ready_tx);
    let (mut connected, mut connect_failures) = (0, 0);
    let mut first_connect_error = None;
    let mut deflate_accepted = None;
    let connect_deadline = tokio::time::Instant::now() + CompareArgs::secs(args.connect_deadline);
    let mut connect_secs = 0.0;
    while connected + connect_failures < n {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(Ok(accepted))) => {
                connected += 1;
                connect_secs = connect_start.elapsed().as_secs_f64();
                if transport == Transport::WsDeflate {
                    deflate_accepted = Some(accepted);
                }
                progress.connected(connected);
            }
            Ok(Some(Err(e))) => {
                connect_failures += 1;
                first_connect_error.get_or_insert(e);
            }
            Ok(None) => break,
            Err(_) => {
                // Those still connecting give up: closing every phase ends their tasks.
                let _ = close_tx.send(bounds.len() + 1);
                break;
            }
        }
    }
    let rss_connected = rss();

    // The phases.
    let mut reports = Vec::new();
    for (phase, bound) in bounds.iter().enumerate() {
        if bound.events == 0 || connected == 0 {
            let _ = close_tx.send(phase + 1);
            continue;
        }
        let rate = if phase == 0 { plan.rate } else { 0 };
        progress.publishing(
            if phase == 0 {
                "open loop"
            } else {
                "saturation"
            },
            connected as u64 * bound.events,
            signals.deliveries.load(Ordering::Relaxed),
        );
        let cpu_start = read_nodes(&pids, gateway::sched_cpu_ns);
        let ticks_start = read_nodes(&pids, gateway::cpu_ticks);
        let client_start = gateway::cpu_ticks("self").ok();
        let order = PublishOrder {
            first: bound.first,
            events: bound.events,
            rate,
        };
        let publish = {
            let publishing = publisher.publish(order);
            tokio::pin!(publishing);
            loop {
                tokio::select! {
                    report = &mut publishing => break report,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        progress.delivered(signals.deliveries.load(Ordering::Relaxed));
                    }
                }
            }
        };
        wait_through(
            &signals,
            phase,
            connected,
            transport.reliable(),
            CompareArgs::secs(args.drain_timeout),
            progress,
        )
        .await;
        let _ = close_tx.send(phase + 1);
        let cpu_ns = since(&cpu_start, &read_nodes(&pids, gateway::sched_cpu_ns));
        let ticks: Option<u64> = since(&ticks_start, &read_nodes(&pids, gateway::cpu_ticks))
            .into_iter()
            .sum();
        let client_ticks = client_start
            .and_then(|start| Some(gateway::cpu_ticks("self").ok()?.saturating_sub(start)));
        reports.push((phase, publish, cpu_ns, ticks, client_ticks, rate));
    }
    let _ = close_tx.send(bounds.len() + 1);

    let mut tallies = Vec::with_capacity(n);
    let mut feeds = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        let (tally, feed) = joined.context("subscriber task")?;
        tallies.push(tally);
        feeds.extend(feed);
    }
    let gateway_exited_early = nodes.iter_mut().any(GatewayProcess::has_exited);
    // Clients first, so the gateway shuts down with nothing to drain.
    drop(feeds);
    publisher.close().await;
    let gateway_log_warnings = nodes
        .iter()
        .map(|process| {
            std::fs::read_to_string(&process.log)
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
                .count()
        })
        .sum();
    futures_util::future::join_all(nodes.iter_mut().map(GatewayProcess::stop)).await;
    let mut logs = nodes.iter().map(|process| process.log.clone());
    let gateway_log = logs.next();
    let other_node_logs: Vec<PathBuf> = logs.collect();

    let mut report = RunReport {
        transport,
        subscribers: n,
        bus: deployment.bus,
        nodes: deployment.nodes,
        deflate_accepted,
        setup: setup_report,
        connected,
        connect_failures,
        first_connect_error,
        connect_secs,
        open_loop: PhaseReport::default(),
        saturation: None,
        lagged: tallies.iter().map(|t| t.lagged).sum(),
        gaps: tallies.iter().map(|t| t.gaps).sum(),
        errors: tallies.iter().map(|t| t.errors).sum(),
        other_messages: tallies.iter().map(|t| t.other_messages).sum(),
        unreadable_events: tallies.iter().map(|t| t.unreadable_events).sum(),
        dropped: tallies.iter().filter(|t| t.dropped.is_some()).count(),
        first_drop_reason: tallies.iter().find_map(|t| t.dropped.clone()),
        gateway_rss_before_kib: rss_before,
        gateway_rss_connected_kib: rss_connected,
        gateway_rss_per_connection_kib: if connected > 0 {
            rss_connected.saturating_sub(rss_before) as f64 / connected as f64
        } else {
            0.0
        },
        gateway_log_warnings,
        gateway_exited_early,
        gateway_log: None,
        other_node_logs: Vec::new(),
        broker_leftover: None,
        open_loop_histograms: None,
    };
    for (phase, publish, cpu_ns, ticks, client_ticks, rate) in reports {
        let (phase_report, histogram) = phase_report(
            &tallies,
            phase,
            bounds[phase].events,
            connected,
            rate,
            publish,
        )?;
        let mut phase_report = phase_report;
        if phase_report.deliveries > 0 {
            let per_1k = 1e3 / phase_report.deliveries as f64;
            let tick_secs = 1.0 / spec.ticks_per_sec as f64;
            let ms_per_1k = |ns: Option<u64>| ns.map_or(0.0, |ns| ns as f64 / 1e6 * per_1k);
            phase_report.gateway_cpu_ms_per_1k =
                ms_per_1k(cpu_ns.iter().copied().sum::<Option<u64>>());
            if cpu_ns.len() > 1 {
                phase_report.gateway_cpu_ms_per_1k_by_node =
                    cpu_ns.iter().map(|&ns| ms_per_1k(ns)).collect();
            }
            phase_report.gateway_cpu_secs = ticks.map_or(0.0, |t| t as f64 * tick_secs);
            phase_report.client_cpu_ms_per_1k =
                client_ticks.map_or(0.0, |t| t as f64 * tick_secs * 1e3 * per_1k);
        }
        if phase == 0 {
            report.open_loop = phase_report;
            report.open_loop_histograms = Some(histogram);
        } else {
            report.saturation = Some(phase_report);
        }
    }
    let troubled = report.open_loop.missing > 0 && transport.reliable()
        || report.dropped > 0
        || report.connect_failures > 0
        || gateway_log_warnings > 0
        || gateway_exited_early;
    if troubled || args.keep_logs {
        report.gateway_log = gateway_log;
        report.other_node_logs = other_node_logs;
    } else if !nodes.is_empty() {
        let _ = std::fs::remove_dir_all(&spec.dir);
    }
    Ok(report)
}

/// How subscribers of `spec` reach the gateway at `endpoints`.
async fn client_setup(spec: &RunSpec<'_>, endpoints: Endpoints) -> anyhow::Result<ClientSetup> {
    let transport = spec.transport;
    let mut query = format!("topics={TOPIC}");
    if spec.plan.envelope_for(transport) == Envelope::Binary {
        query.push_str("&envelope=binary");
    }
    let mut wt_url = None;
    let mut wt_endpoints = Vec::new();
    if let Some(mode) = transport.wt_mode() {
        let (hash, url) = clients::cert_hash(endpoints.http).await?;
        for _ in 0..WT_CLIENT_ENDPOINTS {
            wt_endpoints.push(clients::wt_endpoint(hash, spec.source.client_ip())?);
        }
        wt_url = Some(format!("{url}?{query}&mode={mode}"));
    }
    Ok(ClientSetup {
        transport,
        http: endpoints.http,
        tls: endpoints.tls,
        query,
        wt_url,
        wt_endpoints,
        tls_h2: match transport {
            Transport::SseH2 => Some(clients::tls_connector(b"h2")?),
            _ => None,
        },
        poll_timeout: spec.args.poll_timeout,
    })
}

/// A `/proc` reading of every node (`None` where it failed).
fn read_nodes(pids: &[String], read: fn(&str) -> anyhow::Result<u64>) -> Vec<Option<u64>> {
    pids.iter().map(|pid| read(pid).ok()).collect()
}

/// Each node's growth from `start` to `end` (`None` where either reading failed).
fn since(start: &[Option<u64>], end: &[Option<u64>]) -> Vec<Option<u64>> {
    start
        .iter()
        .zip(end)
        .map(|(start, end)| Some(end.as_ref()?.saturating_sub(*start.as_ref()?)))
        .collect()
}

/// Waits until every connected subscriber is through with `phase`, or (unreliable
/// transports) deliveries have stopped for [`UNRELIABLE_IDLE`], or `drain` has passed.
async fn wait_through(
    signals: &Signals,
    phase: usize,
    connected: usize,
    reliable: bool,
    drain: Duration,
    progress: &RunProgress,
) {
    let deadline = tokio::time::Instant::now() + drain;
    let mut last_deliveries = signals.deliveries.load(Ordering::Relaxed);
    let mut last_change = tokio::time::Instant::now();
    loop {
        let changed = signals.changed.notified();
        if signals.through[phase].load(Ordering::Relaxed) >= connected {
            return;
        }
        let deliveries = signals.deliveries.load(Ordering::Relaxed);
        progress.delivered(deliveries);
        let now = tokio::time::Instant::now();
        if deliveries != last_deliveries {
            last_deliveries = deliveries;
            last_change = now;
        }
        if now >= deadline || (!reliable && now >= last_change + UNRELIABLE_IDLE) {
            return;
        }
        // Woken by every subscriber that gets through, and at least every 100 ms to see
        // whether deliveries have stopped.
        let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
    }
}

/// Times `samples` sequential setups of `setup.transport`.
async fn measure_setup(setup: &ClientSetup, samples: usize, timeout: Duration) -> SetupReport {
    let mut report = SetupReport {
        samples,
        ..SetupReport::default()
    };
    let (mut times, mut down, mut up) = (Vec::new(), Vec::new(), Vec::new());
    for slot in 0..samples {
        let start = Instant::now();
        match tokio::time::timeout(timeout, clients::connect(setup, slot)).await {
            Ok(Ok(connected)) => {
                times.push(start.elapsed().as_secs_f64() * 1e3);
                let (read, written) = connected.feed.bytes();
                down.push(read as f64);
                up.push(written as f64);
                if let Feed::Wt { connection, .. } = &connected.feed {
                    connection.close(0u32.into(), b"");
                }
            }
            Ok(Err(e)) => {
                report.failures += 1;
                report.first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(_) => {
                report.failures += 1;
                report
                    .first_failure
                    .get_or_insert_with(|| format!("no setup within {timeout:?}"));
            }
        }
    }
    report.p50_ms = quantile(&times, 0.5);
    report.p99_ms = quantile(&times, 0.99);
    report.max_ms = times.iter().copied().fold(0.0, f64::max);
    report.bytes_down = quantile(&down, 0.5);
    report.bytes_up = quantile(&up, 0.5);
    report
}

/// Sums one phase over the subscribers.
fn phase_report(
    tallies: &[Tally],
    phase: usize,
    events: u64,
    connected: usize,
    rate: u64,
    publish: PublishReport,
) -> anyhow::Result<(PhaseReport, [Histogram<u64>; 2])> {
    let mut latency: Histogram<u64> = latency_histogram();
    let mut fanout: Histogram<u64> = latency_histogram();
    let mut report = PhaseReport {
        events,
        rate,
        expected_deliveries: connected as u64 * events,
        ..PhaseReport::default()
    };
    let (mut message, mut frame, mut down, mut up, mut polls, mut last_ns) = (0, 0, 0, 0, 0, 0);
    let mut digests: Vec<u64> = Vec::new();
    for tally in tallies.iter().filter(|t| t.connected) {
        let this = &tally.phases[phase];
        merge(&mut latency, &this.latency)?;
        merge(&mut fanout, &this.fanout)?;
        report.deliveries += this.deliveries;
        report.misordered += this.misordered;
        message += this.message_bytes;
        frame += this.frame_bytes;
        last_ns = last_ns.max(this.last_receive_ns);
        // Bytes between the end of the previous phase (or the subscription) and this one's.
        let start = if phase == 0 {
            tally.bytes_at_ready
        } else {
            tally.phases[phase - 1].bytes_at_end
        };
        if this.done && this.bytes_at_end.0 >= start.0 {
            down += this.bytes_at_end.0 - start.0;
            up += this.bytes_at_end.1.saturating_sub(start.1);
        }
        if this.deliveries == events {
            digests.push(this.id_digest);
        }
        if phase == 0 {
            polls += tally.polls;
        }
    }
    // The ids most complete subscribers saw are the reference; any other set is a mismatch.
    digests.sort_unstable();
    let majority = digests
        .chunk_by(|a, b| a == b)
        .max_by_key(|run| run.len())
        .map(|run| run[0]);
    report.id_mismatches = digests.iter().filter(|&&d| Some(d) != majority).count();
    report.missing = report.expected_deliveries.saturating_sub(report.deliveries);
    report.latency = LatencySummary::from_nanos(&latency);
    report.fanout_latency = LatencySummary::from_nanos(&fanout);
    let per_delivery = |value: u64| {
        if report.deliveries > 0 {
            value as f64 / report.deliveries as f64
        } else {
            0.0
        }
    };
    report.message_bytes_per_event = per_delivery(message);
    report.frame_bytes_per_event = per_delivery(frame);
    report.wire_down_per_event = per_delivery(down);
    report.wire_up_per_event = per_delivery(up);
    report.polls_per_event = per_delivery(polls);
    report.elapsed_secs = last_ns.saturating_sub(publish.start_ns) as f64 / 1e9;
    if report.elapsed_secs > 0.0 {
        report.delivered_per_sec = report.deliveries as f64 / report.elapsed_secs;
    }
    report.publish = publish;
    Ok((report, [latency, fanout]))
}

/// One subscriber's inputs.
struct SubscriberTask {
    setup: Arc<ClientSetup>,
    slot: usize,
    bounds: Vec<PhaseBounds>,
    slots: Arc<Semaphore>,
    connect_timeout: Duration,
    /// `Ok(deflate accepted)` once subscribed, or why not.
    ready: mpsc::UnboundedSender<Result<bool, String>>,
    /// How many phases the run has closed.
    close: watch::Receiver<usize>,
    signals: Arc<Signals>,
}

/// One subscriber: connect, then read until every phase is over. Returns its connection
/// too, so that it stays open until every subscriber is done: closing early would add
/// teardown work to the measurement.
async fn subscriber(task: SubscriberTask) -> (Tally, Option<Feed>) {
    let SubscriberTask {
        setup,
        slot,
        bounds,
        slots,
        connect_timeout,
        ready,
        mut close,
        signals,
    } = task;
    let phases = bounds.len();
    let mut tally = Tally::new(bounds, setup.transport.ordered());
    let connect = async {
        let _slot = slots.acquire().await?;
        tokio::time::timeout(connect_timeout, clients::connect(&setup, slot))
            .await
            .map_err(|_| anyhow::anyhow!("not subscribed within {connect_timeout:?}"))?
    };
    let connected = tokio::select! {
        connected = connect => connected,
        _ = close.wait_for(|&closed| closed > phases) => Err(anyhow::anyhow!("connect deadline passed")),
    };
    let mut feed = match connected {
        Ok(connected) => {
            let _ = ready.send(Ok(connected.deflate_accepted));
            connected.feed
        }
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return (tally, None);
        }
    };
    drop(ready);
    tally.connected = true;
    tally.bytes_at_ready = feed.bytes();
    let mut reported = vec![false; phases];
    loop {
        let closed = *close.borrow_and_update();
        for phase in 0..closed.min(phases) {
            tally.phases[phase].done = true;
        }
        let deliveries_before: u64 = tally.phases.iter().map(|p| p.deliveries).sum();
        report_through(&mut tally, &mut reported, &feed, &signals);
        if tally.finished() || closed > phases {
            break;
        }
        let first_open = tally.phases.iter().position(|p| !p.done).unwrap_or(phases);
        tokio::select! {
            biased;
            // Only a close that concerns this subscriber interrupts a read: a long poll cut
            // off mid-response must reconnect.
            _ = close.wait_for(|&closed| closed > first_open) => {}
            more = feed.next(&mut tally) => match more {
                Ok(true) => {}
                Ok(false) => {
                    tally.dropped = Some("the stream ended".to_owned());
                }
                Err(e) => tally.dropped = Some(format!("{e:#}")),
            },
        }
        let deliveries_after: u64 = tally.phases.iter().map(|p| p.deliveries).sum();
        if deliveries_after > deliveries_before {
            signals
                .deliveries
                .fetch_add(deliveries_after - deliveries_before, Ordering::Relaxed);
        }
        if tally.dropped.is_some() {
            // Through with everything, as far as the run's waiting is concerned.
            for phase in &mut tally.phases {
                phase.done = true;
            }
            report_through(&mut tally, &mut reported, &feed, &signals);
            break;
        }
    }
    (tally, Some(feed))
}

/// Tells the run about phases this subscriber has newly got through, noting the socket
/// bytes at that moment.
fn report_through(tally: &mut Tally, reported: &mut [bool], feed: &Feed, signals: &Signals) {
    let mut any = false;
    for (phase, reported) in reported.iter_mut().enumerate() {
        if tally.phases[phase].done && !*reported {
            *reported = true;
            tally.phases[phase].bytes_at_end = feed.bytes();
            if let Some(through) = signals.through.get(phase) {
                through.fetch_add(1, Ordering::Relaxed);
            }
            any = true;
        }
    }
    if any {
        signals.changed.notify_waiters();
    }
}

/// The directory of run `repeat` of `transport` with `subscribers` subscribers on
/// `deployment`.
pub fn run_dir(
    base: &Path,
    repeat: usize,
    transport: Transport,
    subscribers: usize,
    deployment: Deployment,
) -> PathBuf {
    let mut name = format!("run{}-{}-{subscribers}", repeat + 1, transport.name());
    if deployment.bus.is_broker() {
        name.push_str(&format!("-{}-x{}", deployment.bus.name(), deployment.nodes));
    }
    base.join(name)
}

/// The letter a node goes by: A for the publisher's, B for the (first) subscribers'.
pub fn node_name(node: usize) -> char {
    (b'A'..=b'Z').nth(node).map_or('?', char::from)
}

/// Where node `node` of `nodes` keeps its config and log: the run's directory itself when
/// it is the only one.
fn node_dir(run: &Path, node: usize, nodes: usize) -> PathBuf {
    if nodes == 1 {
        run.to_path_buf()
    } else {
        run.join(format!("node-{}", node_name(node).to_ascii_lowercase()))
    }
}
