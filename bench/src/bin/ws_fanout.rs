//! `ws_fanout`: WebSocket fan-out through a real `streamgate` process.
//!
//! ```text
//! cargo build --release -p streamgate -p streamgate-bench
//! target/release/ws_fanout --subscribers 100,1000,10000
//! ```
//!
//! Every run starts a fresh gateway as its own process (`serve --no-demo` on a free loopback
//! port, with a generated config file), connects one publisher and N subscribers to it over
//! WebSocket, publishes M events on an open-loop schedule, times every delivery from its
//! scheduled send time, reads the gateway's memory and CPU time from `/proc`, and stops the
//! gateway. Subscriber counts are interleaved across repeats (100, 1000, 10000, 100, ...) so
//! a slow spell of the machine does not land on one row only; the table shows medians.
//! `bench/README.md` says what every figure means.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use streamgate_bench::{format_table, latency_histogram, median, LatencySummary};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The topic every run publishes to and subscribes to.
const TOPIC: &str = "bench";
/// Smallest payload: `{"t":<19 digits>,"i":<index>,"pad":""}` must fit.
const MIN_PAYLOAD_BYTES: usize = 64;
/// Open loop: length of the schedule when `--events` is not given.
const DEFAULT_SCHEDULE_SECS: u64 = 5;
/// Saturate: deliveries (subscribers × events) aimed at per run when `--events` is not given.
const SATURATE_DELIVERY_BUDGET: u64 = 2_000_000;
/// Fewest events per run when `--events` is not given: below this, percentiles are noise.
const MIN_DEFAULT_EVENTS: u64 = 100;
/// Most events per run when `--events` is not given.
const MAX_DEFAULT_EVENTS: u64 = 20_000;
/// Connections the gateway may hold beyond the subscribers (the publisher, a margin).
const EXTRA_CONNECTIONS: usize = 64;
/// How long the gateway has to start listening.
const GATEWAY_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the gateway has to exit after SIGTERM before it is killed.
const GATEWAY_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer of each client connection. tungstenite's default (128 KiB) would cost 1.3 GB
/// for 10 000 clients; events are a few hundred bytes, so 8 KiB still takes many per read.
const CLIENT_READ_BUFFER: usize = 8 * 1024;
/// "No deadline" for a `sleep_until` in a `select!` (far beyond any run).
const WT_FOREVER: Duration = Duration::from_secs(86_400);
/// WebTransport subscribers share this many client endpoints (UDP sockets), round robin.
const WT_CLIENT_ENDPOINTS: usize = 8;

#[derive(Debug, Parser)]
#[command(
    about = "WebSocket fan-out through a streamgate gateway process: latency, throughput, \
                   memory and CPU per subscriber count"
)]
struct Args {
    /// The gateway binary, started once per run as a separate process.
    #[arg(long, default_value = "target/release/streamgate")]
    gateway: PathBuf,

    /// Transports the subscribers use, one row group each (the publisher is always one
    /// WebSocket connection): ws, sse, longpoll, wt-stream, wt-stream-per-event, wt-datagram.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ws")]
    transport: Vec<Transport>,

    /// Long polling: the `timeout=` of each poll, in seconds.
    #[arg(long, default_value_t = 25.0)]
    poll_timeout: f64,

    /// WebTransport rows: sequential connection setups timed per protocol (ws://, wss://,
    /// WebTransport) before the subscribers connect; 0 skips the measurement.
    #[arg(long, default_value_t = 20)]
    setup_samples: usize,

    /// Subscriber counts to run, one table row each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    subscribers: Vec<usize>,

    /// Events per run. Default: with --rate, 5 s of schedule but at least 100 events; with
    /// --rate 0, 2 000 000 deliveries' worth (between 100 and 20 000 events).
    #[arg(long)]
    events: Option<u64>,

    /// Events per second, open loop: event i is due at i / rate and its latency counts from
    /// then. 0 publishes as fast as the publisher connection takes them. The default keeps
    /// 10 000 subscribers (100 000 messages/s) within what 2 shared cores deliver.
    #[arg(long, default_value_t = 10)]
    rate: u64,

    /// Event payload in bytes: a JSON object `{"t":<send ns>,"i":<index>,"pad":"xx…"}`.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,

    /// Runs per subscriber count; the table shows the median of each figure.
    #[arg(long, default_value_t = 3)]
    repeat: usize,

    /// The gateway's per-subscriber queue (`bus.subscriber_queue`), in events. Default: large
    /// enough for the whole run (at least 1024, the gateway's default), so nothing lags.
    #[arg(long)]
    queue: Option<usize>,

    /// How subscribers ask for events: JSON text envelopes or binary envelopes.
    #[arg(long, value_enum, default_value_t = Envelope::Json)]
    envelope: Envelope,

    /// Connections opened in parallel while connecting subscribers. Keep it under the
    /// gateway's listen backlog (128): beyond it the kernel drops handshakes and the clients
    /// wait out a 1 s SYN retransmission, which the connect time then measures.
    #[arg(long, default_value_t = 100)]
    connect_parallel: usize,

    /// Seconds one subscriber has to connect and receive its `subscribed` reply.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,

    /// Seconds all subscribers of a run have to connect; the run goes on with those that did.
    #[arg(long, default_value_t = 60.0)]
    connect_deadline: f64,

    /// Seconds to wait for deliveries after the last event is published (and for each
    /// publish to be written); the run then ends and reports what is missing.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,

    /// Tokio worker threads of the benchmark's clients. Default: one per core.
    #[arg(long)]
    workers: Option<usize>,

    /// Also write every run and the medians to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Keep each run's gateway config and log (they are kept anyway when a run lost events
    /// or the gateway logged warnings).
    #[arg(long)]
    keep_logs: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Envelope {
    /// `/ws?topics=bench`: JSON text frames (docs/PROTOCOL.md §3.1).
    Json,
    /// `/ws?topics=bench&envelope=binary`: binary frames (docs/PROTOCOL.md §3.3).
    Binary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Transport {
    /// `GET /ws?topics=bench`.
    Ws,
    /// `GET /sse?topics=bench`, one HTTP/1.1 stream per subscriber.
    Sse,
    /// `GET /poll?topics=bench&cursor=…` in a loop, one keep-alive connection per subscriber.
    Longpoll,
    /// WebTransport, `mode=stream`: every event on the control stream.
    WtStream,
    /// WebTransport, `mode=stream-per-event`: one unidirectional stream per event.
    WtStreamPerEvent,
    /// WebTransport, `mode=datagram`: one datagram per event.
    WtDatagram,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Longpoll => "longpoll",
            Self::WtStream => "wt-stream",
            Self::WtStreamPerEvent => "wt-stream-per-event",
            Self::WtDatagram => "wt-datagram",
        }
    }

    fn wt_mode(self) -> Option<&'static str> {
        match self {
            Self::WtStream => Some("stream"),
            Self::WtStreamPerEvent => Some("stream-per-event"),
            Self::WtDatagram => Some("datagram"),
            _ => None,
        }
    }

    /// Whether events arrive in id order (else the subscriber waits for the count).
    fn ordered(self) -> bool {
        !matches!(self, Self::WtStreamPerEvent | Self::WtDatagram)
    }
}

impl Args {
    fn events_for(&self, subscribers: usize) -> u64 {
        if let Some(events) = self.events {
            return events;
        }
        if self.rate > 0 {
            (self.rate * DEFAULT_SCHEDULE_SECS).max(MIN_DEFAULT_EVENTS)
        } else {
            (SATURATE_DELIVERY_BUDGET / subscribers.max(1) as u64)
                .clamp(MIN_DEFAULT_EVENTS, MAX_DEFAULT_EVENTS)
        }
    }

    fn queue_for(&self, events: u64) -> usize {
        self.queue
            .unwrap_or_else(|| usize::try_from(events).unwrap_or(usize::MAX).max(1024))
    }
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// Nanoseconds since the Unix epoch: the one clock the benchmark and the gateway share.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------

/// One `streamgate serve` child process; killed on drop if still running.
#[derive(Debug)]
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    exited: bool,
}

impl GatewayProcess {
    /// Writes the config into `dir`, starts the gateway on a free port and waits until it
    /// accepts connections.
    async fn start(binary: &Path, dir: &Path, config: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config_path = dir.join("streamgate.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log = dir.join("gateway.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // The port is free when we look; another process could take it before the gateway
        // binds, in which case the gateway exits and the error below says so.
        let addr = StdTcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free port")?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--no-demo")
            .env(
                "RUST_LOG",
                "streamgate=info,streamgate_core=info,streamgate_transport_ws=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut gateway = Self {
            child,
            addr,
            log,
            exited: false,
        };
        let deadline = Instant::now() + GATEWAY_START_TIMEOUT;
        loop {
            if let Some(status) = gateway.child.try_wait()? {
                gateway.exited = true;
                bail!(
                    "the gateway exited at start ({status}); its log ({}):\n{}",
                    gateway.log.display(),
                    gateway.log_tail(20)
                );
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(gateway);
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateway did not listen on {addr} within {GATEWAY_START_TIMEOUT:?}; \
                     its log ({}):\n{}",
                    gateway.log.display(),
                    gateway.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (it should not before [`GatewayProcess::stop`]).
    fn has_exited(&mut self) -> bool {
        self.exited = self.exited || !matches!(self.child.try_wait(), Ok(None));
        self.exited
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`GATEWAY_STOP_TIMEOUT`].
    async fn stop(&mut self) {
        if self.has_exited() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + GATEWAY_STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.has_exited() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The config each run's gateway starts with: limits raised so they do not shape the result.
///
/// `secure`: also the HTTPS listener and WebTransport, on these loopback ports (TLS, UDP).
fn gateway_config(
    subscribers: usize,
    queue: usize,
    payload_bytes: usize,
    secure: Option<(SocketAddr, SocketAddr)>,
) -> String {
    let mut config = format!(
        "# Written by ws_fanout for one run.\n\
         [server]\n\
         max_connections = {max_connections}\n\
         shutdown_grace = 2\n\
         \n\
         [bus]\n\
         subscriber_queue = {queue}\n\
         max_payload = {max_payload}\n\
         \n\
         [ws]\n\
         # One publisher connection sends every event: lift the per-client message limit.\n\
         message_rate = 1000000000.0\n\
         message_burst = 4000000000\n\
         max_message_size = {max_message}\n",
        max_connections = subscribers + EXTRA_CONNECTIONS,
        max_payload = (1 << 20).max(payload_bytes + 1024),
        max_message = (64 * 1024).max(2 * payload_bytes + 1024),
    );
    match secure {
        // Only the plain HTTP listener: the others would bind fixed ports.
        None => config.push_str("\n[tls]\nenabled = false\n\n[webtransport]\nenabled = false\n"),
        Some((tls, wt)) => {
            let _ = write!(
                config,
                "\n[tls]\nenabled = true\nlisten = \"{tls}\"\n\n\
                 [webtransport]\nenabled = true\nlisten = \"{wt}\"\n\
                 max_sessions = {sessions}\nidle_timeout = 120\n",
                sessions = subscribers + EXTRA_CONNECTIONS,
            );
        }
    }
    config
}

/// A loopback UDP port that is free when we look (the gateway binds it a moment later).
fn free_udp_port() -> anyhow::Result<SocketAddr> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .context("finding a free UDP port")
}

/// A loopback TCP port that is free when we look.
fn free_tcp_port() -> anyhow::Result<SocketAddr> {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("finding a free TCP port")
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// `utime + stime` of a process (every thread), in clock ticks.
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after its ')' start at 3.
    let after = &stat[stat.rfind(')').context("malformed /proc/<pid>/stat")? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .context("short /proc/<pid>/stat")?
            .parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// CPU time of a process's live threads in nanoseconds, from `/proc/<pid>/task/*/schedstat`:
/// finer than [`cpu_ticks`] (clock ticks are 10 ms), but blind to threads that have exited.
fn sched_cpu_ns(pid: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between listing and reading.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------------------
// Subscribers
// ---------------------------------------------------------------------------------------

/// A TCP stream that counts the bytes read from it: the WebSocket bytes on the wire.
#[derive(Debug)]
struct Counted {
    inner: TcpStream,
    read: u64,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.read += (buf.filled().len() - before) as u64;
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

type Socket = WebSocketStream<Counted>;

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(CLIENT_READ_BUFFER)
        .write_buffer_size(0)
}

/// What every subscriber of a run shares.
struct SubscriberSetup {
    transport: Transport,
    addr: SocketAddr,
    /// WebSocket: the `ws://` URL; SSE and long polling: the request target (`/sse?…`);
    /// WebTransport: the session URL.
    url: String,
    /// WebTransport: client endpoints, shared round robin by the subscribers.
    wt_endpoints: Vec<wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>>,
    /// Long polling: `timeout=` of each poll, seconds.
    poll_timeout: f64,
    /// Events of the run; a subscriber is done once it has the one with index `events - 1`.
    events: u64,
    connect_slots: Semaphore,
    connect_timeout: Duration,
}

/// What one subscriber saw.
#[derive(Debug)]
struct Tally {
    /// Scheduled send time → receive, nanoseconds.
    latency: Histogram<u32>,
    /// Gateway publish time (`ts`) → receive, nanoseconds (from microseconds).
    fanout: Histogram<u32>,
    deliveries: u64,
    lagged: u64,
    gaps: u64,
    errors: u64,
    other_messages: u64,
    unreadable_events: u64,
    misordered: u64,
    /// Bytes of the event messages (envelopes) received.
    message_bytes: u64,
    /// `message_bytes` plus the WebSocket frame header each message came with.
    frame_bytes: u64,
    /// Bytes read from the socket after the `subscribed` reply (long polling: the requests
    /// written too; WebTransport: stream and datagram payload bytes, not QUIC's).
    wire_bytes: u64,
    /// Long polling: polls answered after the first.
    polls: u64,
    /// Events of the run, and whether they arrive in id order: an unordered subscriber is
    /// finished when it has them all, an ordered one when it has the last.
    events: u64,
    ordered: bool,
    saw_last: bool,
    last_receive_ns: u64,
    /// Whether the subscriber got its `subscribed` reply.
    connected: bool,
    /// Whether it received the last event.
    finished: bool,
    /// Why the connection ended before the last event, if it did.
    dropped: Option<String>,
    previous: Option<u64>,
}

impl Tally {
    fn new(events: u64, ordered: bool) -> Self {
        Self {
            latency: latency_histogram(),
            fanout: latency_histogram(),
            deliveries: 0,
            lagged: 0,
            gaps: 0,
            errors: 0,
            other_messages: 0,
            unreadable_events: 0,
            misordered: 0,
            message_bytes: 0,
            frame_bytes: 0,
            wire_bytes: 0,
            polls: 0,
            events,
            ordered,
            saw_last: false,
            last_receive_ns: 0,
            connected: false,
            finished: false,
            dropped: None,
            previous: None,
        }
    }

    fn on_event(&mut self, (ts_us, sent_ns, index): (u64, u64, u64), len: usize, now_ns: u64) {
        // A u32 counter saturates rather than wrapping; no run records 4 billion samples.
        let _ = self.latency.record(now_ns.saturating_sub(sent_ns));
        let _ = self
            .fanout
            .record(now_ns.saturating_sub(ts_us.saturating_mul(1_000)));
        self.deliveries += 1;
        self.message_bytes += len as u64;
        self.frame_bytes += (len + frame_header_len(len)) as u64;
        self.last_receive_ns = now_ns;
        if self.previous.is_some_and(|previous| index <= previous) {
            self.misordered += 1;
        }
        self.previous = Some(index);
        self.saw_last |= index + 1 >= self.events;
        self.finished = if self.ordered {
            self.saw_last
        } else {
            self.deliveries >= self.events
        };
    }

    fn on_text(&mut self, text: &[u8], now_ns: u64) {
        if text.starts_with(b"{\"type\":\"event\"") {
            match parse_json_event(text) {
                Some(event) => self.on_event(event, text.len(), now_ns),
                None => self.unreadable_events += 1,
            }
            return;
        }
        let kind = serde_json::from_slice::<serde_json::Value>(text)
            .ok()
            .and_then(|value| value.get("type")?.as_str().map(str::to_owned));
        match kind.as_deref() {
            Some("lagged") => self.lagged += 1,
            Some("gap") => self.gaps += 1,
            Some("error") => self.errors += 1,
            // SSE's first block, WebTransport's first control message.
            Some("subscribed") => {}
            _ => self.other_messages += 1,
        }
    }

    fn on_binary(&mut self, bytes: &[u8], now_ns: u64) {
        match parse_binary_event(bytes) {
            Some(event) => self.on_event(event, bytes.len(), now_ns),
            None => self.unreadable_events += 1,
        }
    }

    /// A WebTransport message: a JSON envelope or (first byte 1) a binary one.
    fn on_message(&mut self, bytes: &[u8], now_ns: u64) {
        if bytes.first() == Some(&1) {
            self.on_binary(bytes, now_ns);
        } else {
            self.on_text(bytes, now_ns);
        }
    }
}

/// Header bytes of an unmasked (server → client) WebSocket frame carrying `len` bytes.
fn frame_header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A decimal number at the start of `bytes`, and what follows it.
fn leading_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let value = std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()?;
    Some((value, &bytes[digits..]))
}

/// `(send ns, index)` from a payload built by [`payload`].
fn parse_payload(payload: &[u8]) -> Option<(u64, u64)> {
    let (sent_ns, rest) = leading_u64(payload.strip_prefix(b"{\"t\":")?)?;
    let (index, _) = leading_u64(rest.strip_prefix(b",\"i\":")?)?;
    Some((sent_ns, index))
}

/// `(ts µs, send ns, index)` from a JSON event envelope, without a full JSON parse: the
/// gateway writes `ts` before `data` and embeds a `json` payload verbatim.
fn parse_json_event(text: &[u8]) -> Option<(u64, u64, u64)> {
    let ts_at = find(text, b"\"ts\":")? + 5;
    let (ts_us, _) = leading_u64(&text[ts_at..])?;
    let data_at = find(&text[ts_at..], b"\"data\":")? + ts_at + 7;
    let (sent_ns, index) = parse_payload(&text[data_at..])?;
    Some((ts_us, sent_ns, index))
}

/// `(ts µs, send ns, index)` from a binary envelope (docs/PROTOCOL.md §3.3).
fn parse_binary_event(bytes: &[u8]) -> Option<(u64, u64, u64)> {
    if bytes.first() != Some(&1) || bytes.get(1) != Some(&1) {
        return None;
    }
    let id_len_at = 4 + usize::from(*bytes.get(3)?);
    let ts_at = id_len_at + 1 + usize::from(*bytes.get(id_len_at)?);
    let ts_us = u64::from_be_bytes(bytes.get(ts_at..ts_at + 8)?.try_into().ok()?);
    let (sent_ns, index) = parse_payload(bytes.get(ts_at + 8..)?)?;
    Some((ts_us, sent_ns, index))
}

/// Connects, upgrades and waits for the `subscribed` reply.
async fn connect_subscriber(setup: &SubscriberSetup) -> anyhow::Result<Socket> {
    let tcp = TcpStream::connect(setup.addr)
        .await
        .context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let stream = Counted {
        inner: tcp,
        read: 0,
    };
    let (mut socket, _response) = tokio_tungstenite::client_async_with_config(
        setup.url.as_str(),
        stream,
        Some(client_config()),
    )
    .await
    .context("WebSocket handshake")?;
    wait_subscribed(&mut socket).await?;
    Ok(socket)
}

/// Reads a WebSocket until its `subscribed` reply.
async fn wait_subscribed<S>(socket: &mut WebSocketStream<S>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text)))
                if text.as_str().starts_with("{\"type\":\"subscribed\"") =>
            {
                return Ok(())
            }
            Some(Ok(Message::Text(text))) => bail!("unexpected first message {}", text.as_str()),
            Some(Ok(Message::Close(frame))) => bail!("closed before subscribing: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading the subscribed reply"),
            None => bail!("connection ended before the subscribed reply"),
        }
    }
}

/// An HTTP/1.1 client connection that counts every byte read and written, for SSE and long
/// polling. Hand-written so the counts are exactly the bytes on the socket (headers and
/// chunked framing included) and reading is cancel-safe (all state is in the struct).
#[derive(Debug)]
struct HttpConn {
    tcp: TcpStream,
    buf: Vec<u8>,
    read: u64,
    written: u64,
}

/// The parts of an HTTP response head the clients need.
#[derive(Debug)]
struct Head {
    status: u16,
    chunked: bool,
    content_length: Option<usize>,
}

impl HttpConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
        tcp.set_nodelay(true)?;
        Ok(Self {
            tcp,
            buf: Vec::with_capacity(CLIENT_READ_BUFFER),
            read: 0,
            written: 0,
        })
    }

    async fn get(&mut self, target: &str, addr: SocketAddr) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        self.tcp.write_all(request.as_bytes()).await?;
        self.written += request.len() as u64;
        Ok(())
    }

    /// Reads more into `buf`; an error at the end of the connection.
    async fn fill(&mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncReadExt as _;
        self.buf.reserve(CLIENT_READ_BUFFER);
        let n = self.tcp.read_buf(&mut self.buf).await?;
        if n == 0 {
            bail!("connection ended");
        }
        self.read += n as u64;
        Ok(())
    }

    async fn head(&mut self) -> anyhow::Result<Head> {
        let end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let status = text
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .context("no HTTP status")?;
        let mut head = Head {
            status,
            chunked: false,
            content_length: None,
        };
        for line in text.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                head.content_length = value.parse().ok();
            }
        }
        Ok(head)
    }

    /// The next piece of a chunked body appended to `out`; `false` at its last chunk.
    async fn chunk(&mut self, out: &mut Vec<u8>) -> anyhow::Result<bool> {
        let line_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let size_text = String::from_utf8_lossy(&self.buf[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_hex:?}"))?;
        while self.buf.len() < line_end + 2 + size + 2 {
            self.fill().await?;
        }
        out.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
        self.buf.drain(..line_end + 2 + size + 2);
        Ok(size > 0)
    }

    /// A whole response body (chunked or with a length).
    async fn body(&mut self, head: &Head) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        if head.chunked {
            while self.chunk(&mut out).await? {}
        } else {
            let len = head.content_length.context("no body length")?;
            while self.buf.len() < len {
                self.fill().await?;
            }
            out.extend(self.buf.drain(..len));
        }
        Ok(out)
    }
}

/// A long-polling response.
#[derive(serde::Deserialize)]
struct PollResponse<'a> {
    cursor: String,
    #[serde(borrow)]
    messages: Vec<&'a serde_json::value::RawValue>,
}

/// One poll: its cursor and the messages' bytes.
async fn poll_once(
    conn: &mut HttpConn,
    setup: &SubscriberSetup,
    cursor: &str,
    timeout: f64,
) -> anyhow::Result<Vec<u8>> {
    let target = format!("{}&cursor={cursor}&timeout={timeout}", setup.url);
    conn.get(&target, setup.addr).await?;
    let head = conn.head().await?;
    let body = conn.body(&head).await?;
    if head.status != 200 {
        bail!(
            "poll answered {}: {}",
            head.status,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// A WebTransport stream read as length-prefixed messages, cancel-safe (state in the struct).
struct FrameReader {
    stream: wtransport::RecvStream,
    buf: Vec<u8>,
    chunk: Box<[u8]>,
}

impl FrameReader {
    fn new(stream: wtransport::RecvStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            chunk: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    /// The next message (without its prefix); `None` at the end of the stream.
    async fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() >= 4 + len {
                    let message = self.buf[4..4 + len].to_vec();
                    self.buf.drain(..4 + len);
                    return Ok(Some(message));
                }
            }
            match self.stream.read(&mut self.chunk).await? {
                Some(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                None if self.buf.is_empty() => return Ok(None),
                None => bail!("stream ended inside a message"),
            }
        }
    }
}

impl std::fmt::Debug for SubscriberSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberSetup")
            .field("transport", &self.transport)
            .field("url", &self.url)
            .field("wt_endpoints", &self.wt_endpoints.len())
            .finish_non_exhaustive()
    }
}

/// A connected subscriber of any transport.
enum Conn {
    Ws(Box<Socket>),
    Sse(HttpConn),
    Poll(HttpConn, String),
    Wt(wtransport::Connection, FrameReader),
}

/// Whatever must stay open until every subscriber is done.
type Keep = Box<dyn Send>;

/// Opens a WebTransport session and reads its control stream's `subscribed` message.
async fn connect_wt(
    endpoint: &wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    url: &str,
) -> anyhow::Result<(wtransport::Connection, FrameReader)> {
    let connection = endpoint
        .connect(url)
        .await
        .context("WebTransport connect")?;
    let control = connection.accept_uni().await.context("control stream")?;
    let mut control = FrameReader::new(control);
    let first = control
        .next()
        .await?
        .context("control stream ended at once")?;
    if !first.starts_with(b"{\"type\":\"subscribed\"") {
        bail!(
            "unexpected first message {}",
            String::from_utf8_lossy(&first)
        );
    }
    Ok((connection, control))
}

async fn connect_any(setup: &SubscriberSetup, slot: usize) -> anyhow::Result<Conn> {
    match setup.transport {
        Transport::Ws => Ok(Conn::Ws(Box::new(connect_subscriber(setup).await?))),
        Transport::Sse => {
            let mut conn = HttpConn::connect(setup.addr).await?;
            conn.get(&setup.url, setup.addr).await?;
            let head = conn.head().await?;
            if head.status != 200 || !head.chunked {
                bail!(
                    "SSE answered {} (chunked: {}), expected a chunked 200",
                    head.status,
                    head.chunked
                );
            }
            Ok(Conn::Sse(conn))
        }
        Transport::Longpoll => {
            let mut conn = HttpConn::connect(setup.addr).await?;
            // A first poll that answers at once: its cursor is the newest id.
            let body = poll_once(&mut conn, setup, "", 0.0).await?;
            let response: PollResponse<'_> =
                serde_json::from_slice(&body).context("the first poll's answer")?;
            let cursor = response.cursor;
            Ok(Conn::Poll(conn, cursor))
        }
        Transport::WtStream | Transport::WtStreamPerEvent | Transport::WtDatagram => {
            let endpoint = &setup.wt_endpoints[slot % setup.wt_endpoints.len()];
            let (connection, control) = connect_wt(endpoint, &setup.url).await?;
            Ok(Conn::Wt(connection, control))
        }
    }
}

/// One subscriber: connect (reporting on `ready`), then read until the last event, a stop
/// signal or the end of the connection. Returns the connection too, so that it stays open
/// until every subscriber is done: closing it early would add teardown work to the
/// measurement.
async fn subscriber(
    setup: Arc<SubscriberSetup>,
    slot: usize,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    mut abort_connect: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) -> (Tally, Option<Keep>) {
    let mut tally = Tally::new(setup.events, setup.transport.ordered());
    let connect = async {
        let _slot = setup.connect_slots.acquire().await?;
        tokio::time::timeout(setup.connect_timeout, connect_any(&setup, slot))
            .await
            .map_err(|_| {
                anyhow::anyhow!("no subscribed reply within {:?}", setup.connect_timeout)
            })?
    };
    let connected = tokio::select! {
        connected = connect => connected,
        _ = abort_connect.wait_for(|abort| *abort) => Err(anyhow::anyhow!("connect deadline passed")),
    };
    let conn = match connected {
        Ok(conn) => conn,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return (tally, None);
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    tally.connected = true;
    let keep: Keep = match conn {
        Conn::Ws(socket) => Box::new(read_ws(*socket, &mut tally, stop).await),
        Conn::Sse(conn) => Box::new(read_sse(conn, &mut tally, stop).await),
        Conn::Poll(conn, cursor) => {
            Box::new(read_poll(conn, cursor, &setup, &mut tally, stop).await)
        }
        Conn::Wt(connection, control) => {
            Box::new(read_wt(connection, control, setup.transport, &mut tally, stop).await)
        }
    };
    (tally, Some(keep))
}

async fn read_ws(mut socket: Socket, tally: &mut Tally, mut stop: watch::Receiver<bool>) -> Socket {
    let read_at_ready = socket.get_ref().read;
    while !tally.finished {
        let message = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            message = socket.next() => message,
        };
        let now_ns = wall_ns();
        match message {
            Some(Ok(Message::Text(text))) => tally.on_text(text.as_bytes(), now_ns),
            Some(Ok(Message::Binary(bytes))) => tally.on_binary(&bytes, now_ns),
            Some(Ok(Message::Close(frame))) => {
                tally.dropped = Some(format!("closed by the gateway: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tally.dropped = Some(format!("read error: {e}"));
                break;
            }
            None => {
                tally.dropped = Some("connection ended".to_owned());
                break;
            }
        }
    }
    tally.wire_bytes = socket.get_ref().read - read_at_ready;
    socket
}

/// SSE: chunks of the `text/event-stream` body, split into blocks at blank lines; each
/// block's `data:` lines are the envelope.
async fn read_sse(
    mut conn: HttpConn,
    tally: &mut Tally,
    mut stop: watch::Receiver<bool>,
) -> HttpConn {
    let read_at_ready = conn.read;
    let mut text = Vec::new();
    let mut data = Vec::new();
    while !tally.finished {
        let more = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            more = conn.chunk(&mut text) => more,
        };
        let now_ns = wall_ns();
        match more {
            Ok(true) => {}
            Ok(false) => {
                tally.dropped = Some("the stream ended".to_owned());
                break;
            }
            Err(e) => {
                tally.dropped = Some(format!("read error: {e:#}"));
                break;
            }
        }
        let mut start = 0;
        while let Some(end) = find(&text[start..], b"\n\n") {
            data.clear();
            for line in text[start..start + end].split(|&b| b == b'\n') {
                if let Some(rest) = line.strip_prefix(b"data:") {
                    if !data.is_empty() {
                        data.push(b'\n');
                    }
                    data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
                }
            }
            if !data.is_empty() {
                tally.on_text(&data, now_ns);
            }
            start += end + 2;
        }
        text.drain(..start);
    }
    tally.wire_bytes = conn.read - read_at_ready;
    conn
}

/// Long polling: `GET /poll` with the last cursor until the last event.
async fn read_poll(
    mut conn: HttpConn,
    mut cursor: String,
    setup: &SubscriberSetup,
    tally: &mut Tally,
    mut stop: watch::Receiver<bool>,
) -> HttpConn {
    let bytes_at_ready = conn.read + conn.written;
    while !tally.finished {
        let answer = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            answer = poll_once(&mut conn, setup, &cursor, setup.poll_timeout) => answer,
        };
        let now_ns = wall_ns();
        let body = match answer {
            Ok(body) => body,
            Err(e) => {
                tally.dropped = Some(format!("poll failed: {e:#}"));
                break;
            }
        };
        tally.polls += 1;
        match serde_json::from_slice::<PollResponse<'_>>(&body) {
            Ok(response) => {
                for message in &response.messages {
                    tally.on_text(message.get().as_bytes(), now_ns);
                }
                cursor = response.cursor;
            }
            Err(_) => tally.unreadable_events += 1,
        }
    }
    tally.wire_bytes = conn.read + conn.written - bytes_at_ready;
    conn
}

/// WebTransport: the control stream, plus per-event streams or datagrams by mode.
async fn read_wt(
    connection: wtransport::Connection,
    mut control: FrameReader,
    transport: Transport,
    tally: &mut Tally,
    mut stop: watch::Receiver<bool>,
) -> wtransport::Connection {
    // Unordered modes: once the last event is in, stragglers have this long to arrive.
    let grace = Duration::from_secs(1);
    let mut give_up: Option<tokio::time::Instant> = None;
    let mut bytes = 0u64;
    let mut per_event = futures_util::stream::FuturesUnordered::new();
    while !tally.finished {
        let give_up_at = give_up.unwrap_or_else(|| tokio::time::Instant::now() + WT_FOREVER);
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep_until(give_up_at) => break,
            message = control.next() => match message {
                Ok(Some(message)) => {
                    bytes += 4 + message.len() as u64;
                    tally.on_message(&message, wall_ns());
                }
                Ok(None) => {
                    tally.dropped = Some("the control stream ended".to_owned());
                    break;
                }
                Err(e) => {
                    tally.dropped = Some(format!("control stream: {e:#}"));
                    break;
                }
            },
            stream = connection.accept_uni(), if transport == Transport::WtStreamPerEvent => {
                match stream {
                    Ok(stream) => per_event.push(async move {
                        let mut reader = FrameReader::new(stream);
                        reader.next().await
                    }),
                    Err(e) => {
                        tally.dropped = Some(format!("session: {e}"));
                        break;
                    }
                }
            }
            Some(message) = per_event.next(), if !per_event.is_empty() => {
                match message {
                    Ok(Some(message)) => {
                        bytes += 4 + message.len() as u64;
                        tally.on_message(&message, wall_ns());
                    }
                    Ok(None) => tally.other_messages += 1,
                    Err(_) => tally.unreadable_events += 1,
                }
            }
            datagram = connection.receive_datagram(), if transport == Transport::WtDatagram => {
                match datagram {
                    Ok(datagram) => {
                        bytes += datagram.len() as u64;
                        tally.on_message(&datagram, wall_ns());
                    }
                    Err(e) => {
                        tally.dropped = Some(format!("session: {e}"));
                        break;
                    }
                }
            }
        }
        if tally.saw_last && give_up.is_none() {
            give_up = Some(tokio::time::Instant::now() + grace);
        }
    }
    tally.wire_bytes = bytes;
    connection
}

// ---------------------------------------------------------------------------------------
// The publisher
// ---------------------------------------------------------------------------------------

/// What the publisher is to do.
#[derive(Clone, Debug)]
struct PublishPlan {
    addr: SocketAddr,
    events: u64,
    rate: u64,
    payload_bytes: usize,
    connect_timeout: Duration,
    /// Bound on each send and on waiting for the last `published` reply.
    timeout: Duration,
}

/// What the publisher did.
#[derive(Clone, Debug, Default, Serialize)]
struct PublishReport {
    sent: u64,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    /// Why the publisher stopped early, if it did.
    failure: Option<String>,
    /// Wall-clock time (ns since the Unix epoch) event 0 was due.
    start_ns: u64,
    /// When the last event was written.
    end_ns: u64,
    /// Open loop: the furthest a send fell behind its schedule, in nanoseconds.
    behind_max_ns: u64,
}

/// The payload of event `index`: exactly `len` bytes of JSON (`len` ≥ [`MIN_PAYLOAD_BYTES`]).
fn payload(out: &mut String, sent_ns: u64, index: u64, len: usize) {
    let start = out.len();
    let _ = write!(out, "{{\"t\":{sent_ns},\"i\":{index},\"pad\":\"");
    let used = out.len() - start + 2;
    out.extend(std::iter::repeat_n('x', len.saturating_sub(used)));
    out.push_str("\"}");
}

/// The publisher runs on its own OS thread with its own single-threaded runtime, so that it
/// can wait for each scheduled send time with `thread::sleep` (precise to tens of µs, where
/// tokio's timer has 1 ms ticks) without blocking a worker the subscribers need, and
/// without spinning on a core the gateway needs.
#[derive(Debug)]
struct Publisher {
    go: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<PublishReport>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    /// Starts the thread and waits until its connection is open.
    async fn connect(plan: PublishPlan) -> anyhow::Result<Self> {
        let (connected_tx, connected_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("publisher".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = connected_tx.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                runtime.block_on(publisher(plan, connected_tx, go_rx, done_tx));
            })
            .context("starting the publisher thread")?;
        let publisher = Self {
            go: Some(go_tx),
            done: done_rx,
            thread: Some(thread),
        };
        connected_rx
            .await
            .context("the publisher thread ended")?
            .context("connecting the publisher")?;
        Ok(publisher)
    }

    fn go(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }

    async fn finish(mut self) -> PublishReport {
        let report = (&mut self.done).await.unwrap_or_else(|_| PublishReport {
            failure: Some("the publisher thread panicked".to_owned()),
            ..PublishReport::default()
        });
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        report
    }
}

async fn publisher(
    plan: PublishPlan,
    connected: oneshot::Sender<anyhow::Result<()>>,
    go: oneshot::Receiver<()>,
    done: oneshot::Sender<PublishReport>,
) {
    let connect = async {
        let tcp = TcpStream::connect(plan.addr).await?;
        tcp.set_nodelay(true)?;
        let url = format!("ws://{}/ws", plan.addr);
        let (socket, _) = tokio_tungstenite::client_async(url, tcp).await?;
        anyhow::Ok(socket)
    };
    let socket = match tokio::time::timeout(plan.connect_timeout, connect).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(e)) => {
            let _ = connected.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = connected.send(Err(anyhow::anyhow!("timed out")));
            return;
        }
    };
    let _ = connected.send(Ok(()));
    if go.await.is_err() {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (first_error_tx, mut first_error_rx) = mpsc::channel::<String>(1);
    let reader = {
        let acked = Arc::clone(&acked);
        let errors = Arc::clone(&errors);
        let events = plan.events;
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if text.as_str().starts_with("{\"type\":\"published\"") {
                    if acked.fetch_add(1, Ordering::Relaxed) + 1 >= events {
                        break;
                    }
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    let _ = first_error_tx.try_send(text.as_str().to_owned());
                }
            }
        })
    };

    let mut report = PublishReport::default();
    let start = Instant::now();
    report.start_ns = wall_ns();
    let mut message = String::new();
    for index in 0..plan.events {
        let sent_ns = if plan.rate == 0 {
            wall_ns()
        } else {
            let offset_ns =
                u64::try_from(u128::from(index) * 1_000_000_000 / u128::from(plan.rate))
                    .unwrap_or(u64::MAX);
            let due = start + Duration::from_nanos(offset_ns);
            loop {
                let now = Instant::now();
                let Some(left) = due.checked_duration_since(now).filter(|d| !d.is_zero()) else {
                    break;
                };
                if left > Duration::from_millis(3) {
                    // The runtime's timer lets the reply reader run meanwhile; it wakes up
                    // to a millisecond late, so stop it 2 ms short.
                    tokio::time::sleep(left - Duration::from_millis(2)).await;
                } else {
                    std::thread::sleep(left);
                }
            }
            let behind = Instant::now().saturating_duration_since(due);
            report.behind_max_ns = report
                .behind_max_ns
                .max(u64::try_from(behind.as_nanos()).unwrap_or(u64::MAX));
            // The due time, not the actual one: a late send is the publisher's delay and
            // belongs in the latency it causes (no coordinated omission).
            report.start_ns + offset_ns
        };
        message.clear();
        message.push_str("{\"type\":\"publish\",\"topic\":\"");
        message.push_str(TOPIC);
        message.push_str("\",\"content_type\":\"json\",\"data\":");
        payload(&mut message, sent_ns, index, plan.payload_bytes);
        message.push('}');
        match tokio::time::timeout(plan.timeout, sink.send(Message::text(message.as_str()))).await {
            Ok(Ok(())) => report.sent += 1,
            Ok(Err(e)) => {
                report.failure = Some(format!("sending event {index}: {e}"));
                break;
            }
            Err(_) => {
                report.failure = Some(format!(
                    "sending event {index}: blocked for {:?}",
                    plan.timeout
                ));
                break;
            }
        }
        // Lets the reply reader empty the socket, so the gateway never blocks writing
        // `published` replies to us.
        tokio::task::yield_now().await;
    }
    report.end_ns = wall_ns();
    if report.failure.is_none() {
        let _ = tokio::time::timeout(plan.timeout, reader).await;
    } else {
        reader.abort();
    }
    report.acked = acked.load(Ordering::Relaxed);
    report.errors = errors.load(Ordering::Relaxed);
    report.first_error = first_error_rx.try_recv().ok();
    let _ = sink.close().await;
    let _ = done.send(report);
}

// ---------------------------------------------------------------------------------------
// WebTransport and TLS clients, connection setup time
// ---------------------------------------------------------------------------------------

/// `GET /wt/cert-hash`: the certificate's SHA-256 and the session URL.
async fn cert_hash(addr: SocketAddr) -> anyhow::Result<([u8; 32], String)> {
    let fetch = async {
        let mut conn = HttpConn::connect(addr).await?;
        conn.get("/wt/cert-hash", addr).await?;
        let head = conn.head().await?;
        let body = conn.body(&head).await?;
        anyhow::ensure!(head.status == 200, "/wt/cert-hash answered {}", head.status);
        let doc: serde_json::Value = serde_json::from_slice(&body)?;
        let bytes: Vec<u8> = doc["value"]
            .as_array()
            .context("no value array")?
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        let hash: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("hash not 32 bytes"))?;
        let url = doc["url"].as_str().context("no url")?.to_owned();
        anyhow::Ok((hash, url))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .context("/wt/cert-hash timed out")?
}

/// A WebTransport client endpoint pinning the gateway's certificate hash.
fn wt_endpoint(
    hash: [u8; 32],
) -> anyhow::Result<wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>> {
    let config = wtransport::ClientConfig::builder()
        .with_bind_address(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .max_idle_timeout(Some(Duration::from_secs(120)))
        .context("idle timeout")?
        .build();
    wtransport::Endpoint::client(config).context("WebTransport client endpoint")
}

/// Accepts exactly the server certificate whose SHA-256 is the one `/wt/cert-hash` gave
/// (the gateway's self-signed certificate). Bench code only.
#[derive(Debug)]
struct PinnedCert {
    hash: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest as _;
        if sha2::Sha256::digest(end_entity.as_ref())[..] == self.hash {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the certificate of /wt/cert-hash".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_connector(hash: [u8; 32]) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { hash, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Connection setup, from nothing to the `subscribed` message, median and max over the
/// samples, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
struct SetupTimes {
    samples: usize,
    /// TCP + WebSocket upgrade + `subscribed`.
    ws_p50_ms: f64,
    ws_max_ms: f64,
    /// TCP + TLS 1.3 + WebSocket upgrade + `subscribed`.
    wss_p50_ms: f64,
    wss_max_ms: f64,
    /// QUIC (TLS 1.3 inside) + HTTP/3 SETTINGS + CONNECT + control stream `subscribed`.
    wt_p50_ms: f64,
    wt_max_ms: f64,
}

/// Times `samples` sequential setups of each: ws://, wss://, WebTransport (alternating,
/// each connection closed before the next). The WebTransport client endpoint is reused.
async fn measure_setup(
    addr: SocketAddr,
    tls_addr: SocketAddr,
    hash: [u8; 32],
    endpoint: &wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    wt_url: &str,
    samples: usize,
    timeout: Duration,
) -> anyhow::Result<SetupTimes> {
    let connector = tls_connector(hash)?;
    let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let (mut ws, mut wss, mut wt) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        let start = Instant::now();
        let once = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let url = format!("ws://{addr}/ws?topics={TOPIC}");
            let (mut socket, _) = tokio_tungstenite::client_async(url, tcp).await?;
            wait_subscribed(&mut socket).await?;
            anyhow::Ok(socket)
        };
        let socket = tokio::time::timeout(timeout, once)
            .await
            .context("ws:// setup timed out")??;
        ws.push(start.elapsed().as_secs_f64() * 1e3);
        drop(socket);

        let start = Instant::now();
        let once = async {
            let tcp = TcpStream::connect(tls_addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name.clone(), tcp).await?;
            let url = format!("wss://{tls_addr}/ws?topics={TOPIC}");
            let (mut socket, _) = tokio_tungstenite::client_async(url, tls).await?;
            wait_subscribed(&mut socket).await?;
            anyhow::Ok(socket)
        };
        let socket = tokio::time::timeout(timeout, once)
            .await
            .context("wss:// setup timed out")??;
        wss.push(start.elapsed().as_secs_f64() * 1e3);
        drop(socket);

        let start = Instant::now();
        let (connection, _control) = tokio::time::timeout(timeout, connect_wt(endpoint, wt_url))
            .await
            .context("WebTransport setup timed out")??;
        wt.push(start.elapsed().as_secs_f64() * 1e3);
        connection.close(0u32.into(), b"");
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Ok(SetupTimes {
        samples,
        ws_p50_ms: median(&ws),
        ws_max_ms: max(&ws),
        wss_p50_ms: median(&wss),
        wss_max_ms: max(&wss),
        wt_p50_ms: median(&wt),
        wt_max_ms: max(&wt),
    })
}

// ---------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
struct RunReport {
    transport: Transport,
    /// WebTransport runs: sequential connection setup times, ws:// vs wss:// vs WebTransport.
    setup_times: Option<SetupTimes>,
    /// Long polling: polls answered per delivery.
    polls_per_event: f64,
    subscribers: usize,
    events: u64,
    queue: usize,
    connected: usize,
    connect_failures: usize,
    first_connect_error: Option<String>,
    /// From the first connect to the last `subscribed` reply.
    connect_secs: f64,
    deliveries: u64,
    expected_deliveries: u64,
    missing: u64,
    lagged: u64,
    gaps: u64,
    errors: u64,
    other_messages: u64,
    unreadable_events: u64,
    misordered: u64,
    /// Subscribers whose connection ended before the last event.
    dropped: usize,
    first_drop_reason: Option<String>,
    /// Subscribers still waiting for the last event when the drain timeout ran out.
    unfinished: usize,
    /// From event 0's scheduled time to the last delivery.
    elapsed_secs: f64,
    delivered_per_sec: f64,
    /// Scheduled send time → receive.
    latency: LatencySummary,
    /// Gateway publish timestamp (`ts`, µs) → receive: the fan-out leg alone.
    fanout_latency: LatencySummary,
    /// Event message (envelope) bytes per delivery.
    message_bytes_per_event: f64,
    /// Envelope plus WebSocket frame header, per delivery.
    frame_bytes_per_event: f64,
    /// Bytes read from the client sockets during the events, per delivery.
    wire_bytes_per_event: f64,
    gateway_rss_before_kib: u64,
    gateway_rss_connected_kib: u64,
    gateway_rss_after_kib: u64,
    /// `(connected - before) / connected subscribers`.
    gateway_rss_per_connection_kib: f64,
    /// Gateway `utime + stime` from the first publish to the end of the drain.
    gateway_cpu_secs: f64,
    gateway_cpu_ms_per_1k: f64,
    /// The same from the threads' `schedstat` (nanosecond resolution).
    gateway_sched_cpu_secs: f64,
    gateway_sched_cpu_ms_per_1k: f64,
    /// The same for the benchmark process (subscribers and publisher), from utime + stime.
    client_cpu_ms_per_1k: f64,
    publish: PublishReport,
    /// Lines of the gateway log at WARN or ERROR level.
    gateway_log_warnings: usize,
    /// Gateway log lines about dropping a client connection.
    gateway_log_dropped_clients: usize,
    gateway_exited_early: bool,
    /// Kept when something went wrong (or with --keep-logs).
    gateway_log: Option<PathBuf>,
}

#[derive(Debug)]
struct RunSpec<'a> {
    args: &'a Args,
    transport: Transport,
    /// The copy of `args.gateway` every run starts.
    gateway: &'a Path,
    subscribers: usize,
    events: u64,
    dir: PathBuf,
    ticks_per_sec: u64,
}

async fn run_once(spec: &RunSpec<'_>) -> anyhow::Result<RunReport> {
    let args = spec.args;
    let n = spec.subscribers;
    let transport = spec.transport;
    let queue = args.queue_for(spec.events);
    let secure = match transport.wt_mode() {
        Some(_) => Some((free_tcp_port()?, free_udp_port()?)),
        None => None,
    };
    let mut gateway = GatewayProcess::start(
        spec.gateway,
        &spec.dir,
        &gateway_config(n, queue, args.payload_bytes, secure),
    )
    .await?;
    let pid = gateway.pid().to_string();
    let connect_timeout = secs(args.connect_timeout);
    let mut publisher = Publisher::connect(PublishPlan {
        addr: gateway.addr,
        events: spec.events,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        connect_timeout,
        timeout: secs(args.drain_timeout),
    })
    .await?;
    // Let the gateway settle after its start and the publisher's connect.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_kib(&pid)?;

    // WebTransport: the certificate hash, the session URL, the setup-time comparison.
    let query = match args.envelope {
        Envelope::Json => format!("topics={TOPIC}"),
        Envelope::Binary => format!("topics={TOPIC}&envelope=binary"),
    };
    let mut wt_endpoints = Vec::new();
    let mut setup_times = None;
    let url = match (transport, secure) {
        (Transport::Ws, _) => format!("ws://{}/ws?{query}", gateway.addr),
        (Transport::Sse, _) => format!("/sse?{query}"),
        (Transport::Longpoll, _) => format!("/poll?{query}"),
        (_, Some((tls_addr, _))) => {
            let (hash, wt_url) = cert_hash(gateway.addr).await?;
            for _ in 0..WT_CLIENT_ENDPOINTS {
                wt_endpoints.push(wt_endpoint(hash)?);
            }
            let mode = transport.wt_mode().unwrap_or("stream");
            let url = format!("{wt_url}?{query}&mode={mode}");
            if args.setup_samples > 0 {
                let times = measure_setup(
                    gateway.addr,
                    tls_addr,
                    hash,
                    &wt_endpoints[0],
                    &url,
                    args.setup_samples,
                    connect_timeout,
                )
                .await
                .context("timing connection setup")?;
                setup_times = Some(times);
            }
            url
        }
        (_, None) => unreachable!("WebTransport runs have a secure config"),
    };

    // Connect every subscriber, `connect_parallel` at a time.
    let setup = Arc::new(SubscriberSetup {
        transport,
        addr: gateway.addr,
        url,
        wt_endpoints,
        poll_timeout: args.poll_timeout,
        events: spec.events,
        connect_slots: Semaphore::new(args.connect_parallel.max(1)),
        connect_timeout,
    });
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (abort_connect_tx, abort_connect_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect_start = Instant::now();
    let mut tasks = JoinSet::new();
    for slot in 0..n {
        tasks.spawn(subscriber(
            Arc::clone(&setup),
            slot,
            ready_tx.clone(),
            abort_connect_rx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(ready_tx);
    let mut connected = 0;
    let mut connect_failures = 0;
    let mut first_connect_error = None;
    let connect_deadline = tokio::time::Instant::now() + secs(args.connect_deadline);
    let mut connect_secs = 0.0;
    while connected + connect_failures < n {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {
                connected += 1;
                connect_secs = connect_start.elapsed().as_secs_f64();
            }
            Ok(Some(Err(e))) => {
                connect_failures += 1;
                first_connect_error.get_or_insert(e);
            }
            Ok(None) => break,
            Err(_) => {
                // Those still connecting give up and report, so the counts add up.
                let _ = abort_connect_tx.send(true);
                while let Some(result) = ready_rx.recv().await {
                    match result {
                        Ok(()) => connected += 1,
                        Err(e) => {
                            connect_failures += 1;
                            first_connect_error.get_or_insert(e);
                        }
                    }
                    if connected + connect_failures == n {
                        break;
                    }
                }
                connect_secs = connect_start.elapsed().as_secs_f64();
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_connected = rss_kib(&pid).context("the gateway's memory after connecting")?;

    // Publish and drain.
    let gateway_cpu_start = cpu_ticks(&pid)?;
    let gateway_sched_start = sched_cpu_ns(&pid)?;
    let client_cpu_start = cpu_ticks("self")?;
    publisher.go();
    let publish = publisher.finish().await;
    let drain_deadline = tokio::time::Instant::now() + secs(args.drain_timeout);
    let mut tallies = Vec::with_capacity(n);
    let mut sockets = Vec::with_capacity(n);
    let mut stopped = false;
    loop {
        let joined = if stopped {
            tasks.join_next().await
        } else {
            match tokio::time::timeout_at(drain_deadline, tasks.join_next()).await {
                Ok(joined) => joined,
                Err(_) => {
                    let _ = stop_tx.send(true);
                    stopped = true;
                    continue;
                }
            }
        };
        let Some(joined) = joined else { break };
        let (tally, socket) = joined.context("subscriber task")?;
        tallies.push(tally);
        sockets.extend(socket);
    }
    // A gateway that died mid-run has no figures left to read; the run still reports.
    let gateway_exited_early = gateway.has_exited();
    let gateway_cpu = cpu_ticks(&pid)
        .unwrap_or(gateway_cpu_start)
        .saturating_sub(gateway_cpu_start);
    let gateway_sched = sched_cpu_ns(&pid)
        .unwrap_or(gateway_sched_start)
        .saturating_sub(gateway_sched_start);
    let client_cpu = cpu_ticks("self")?.saturating_sub(client_cpu_start);
    let rss_after = rss_kib(&pid).unwrap_or(0);

    // Tear down: clients first, so the gateway shuts down with nothing to drain.
    drop(sockets);
    drop(setup);
    tokio::time::sleep(Duration::from_millis(100)).await;
    gateway.stop().await;

    let mut latency: Histogram<u64> = latency_histogram();
    let mut fanout: Histogram<u64> = latency_histogram();
    let mut report = RunReport {
        transport,
        setup_times,
        polls_per_event: 0.0,
        subscribers: n,
        events: spec.events,
        queue,
        connected,
        connect_failures: n - connected,
        first_connect_error,
        connect_secs,
        deliveries: 0,
        expected_deliveries: n as u64 * spec.events,
        missing: 0,
        lagged: 0,
        gaps: 0,
        errors: 0,
        other_messages: 0,
        unreadable_events: 0,
        misordered: 0,
        dropped: 0,
        first_drop_reason: None,
        unfinished: 0,
        elapsed_secs: 0.0,
        delivered_per_sec: 0.0,
        latency: LatencySummary::default(),
        fanout_latency: LatencySummary::default(),
        message_bytes_per_event: 0.0,
        frame_bytes_per_event: 0.0,
        wire_bytes_per_event: 0.0,
        gateway_rss_before_kib: rss_before,
        gateway_rss_connected_kib: rss_connected,
        gateway_rss_after_kib: rss_after,
        gateway_rss_per_connection_kib: 0.0,
        gateway_cpu_secs: gateway_cpu as f64 / spec.ticks_per_sec as f64,
        gateway_cpu_ms_per_1k: 0.0,
        gateway_sched_cpu_secs: gateway_sched as f64 / 1e9,
        gateway_sched_cpu_ms_per_1k: 0.0,
        client_cpu_ms_per_1k: 0.0,
        publish,
        gateway_log_warnings: 0,
        gateway_log_dropped_clients: 0,
        gateway_exited_early,
        gateway_log: None,
    };
    let (mut message_bytes, mut frame_bytes, mut wire_bytes, mut last_receive_ns) = (0, 0, 0, 0);
    let mut polls = 0;
    for tally in &tallies {
        merge(&mut latency, &tally.latency)?;
        merge(&mut fanout, &tally.fanout)?;
        report.deliveries += tally.deliveries;
        report.lagged += tally.lagged;
        report.gaps += tally.gaps;
        report.errors += tally.errors;
        report.other_messages += tally.other_messages;
        report.unreadable_events += tally.unreadable_events;
        report.misordered += tally.misordered;
        message_bytes += tally.message_bytes;
        frame_bytes += tally.frame_bytes;
        wire_bytes += tally.wire_bytes;
        polls += tally.polls;
        last_receive_ns = last_receive_ns.max(tally.last_receive_ns);
        if let Some(reason) = &tally.dropped {
            report.dropped += 1;
            report
                .first_drop_reason
                .get_or_insert_with(|| reason.clone());
        } else if tally.connected && !tally.finished {
            report.unfinished += 1;
        }
    }
    report.missing = report.expected_deliveries.saturating_sub(report.deliveries);
    report.latency = LatencySummary::from_nanos(&latency);
    report.fanout_latency = LatencySummary::from_nanos(&fanout);
    let per_delivery = |bytes: u64| {
        if report.deliveries > 0 {
            bytes as f64 / report.deliveries as f64
        } else {
            0.0
        }
    };
    report.message_bytes_per_event = per_delivery(message_bytes);
    report.frame_bytes_per_event = per_delivery(frame_bytes);
    report.wire_bytes_per_event = per_delivery(wire_bytes);
    report.polls_per_event = per_delivery(polls);
    report.elapsed_secs = last_receive_ns.saturating_sub(report.publish.start_ns) as f64 / 1e9;
    if report.elapsed_secs > 0.0 {
        report.delivered_per_sec = report.deliveries as f64 / report.elapsed_secs;
    }
    if connected > 0 {
        report.gateway_rss_per_connection_kib =
            rss_connected.saturating_sub(rss_before) as f64 / connected as f64;
    }
    if report.deliveries > 0 {
        let per_1k = |ticks: u64| {
            ticks as f64 / spec.ticks_per_sec as f64 * 1e3 / report.deliveries as f64 * 1e3
        };
        report.gateway_cpu_ms_per_1k = per_1k(gateway_cpu);
        report.gateway_sched_cpu_ms_per_1k =
            gateway_sched as f64 / 1e6 / report.deliveries as f64 * 1e3;
        report.client_cpu_ms_per_1k = per_1k(client_cpu);
    }
    let log = std::fs::read_to_string(&gateway.log).unwrap_or_default();
    report.gateway_log_warnings = log
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .count();
    report.gateway_log_dropped_clients = log
        .lines()
        .filter(|line| line.contains("dropping the connection"))
        .count();
    let troubled = report.missing > 0
        || report.gateway_log_warnings > 0
        || report.gateway_log_dropped_clients > 0
        || gateway_exited_early;
    if troubled || args.keep_logs {
        report.gateway_log = Some(gateway.log.clone());
    } else {
        let _ = std::fs::remove_dir_all(&spec.dir);
    }
    Ok(report)
}

/// Adds a `u32`-counter histogram into a `u64` one (hdrhistogram only adds equal types).
fn merge(into: &mut Histogram<u64>, from: &Histogram<u32>) -> anyhow::Result<()> {
    for value in from.iter_recorded() {
        into.record_n(value.value_iterated_to(), u64::from(value.count_at_value()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

/// One table row: the median of each figure over the repeats of one subscriber count, and
/// the worst run for the loss counters.
#[derive(Debug, Serialize)]
struct Row {
    transport: Transport,
    subscribers: usize,
    events: u64,
    connect_secs: f64,
    deliveries: u64,
    expected_deliveries: u64,
    /// Worst run.
    missing: u64,
    /// Worst run.
    lagged: u64,
    /// Worst run.
    gaps: u64,
    /// Worst run.
    connect_failures: usize,
    /// Worst run.
    dropped: usize,
    /// Worst run.
    unfinished: usize,
    /// Worst run.
    misordered: u64,
    delivered_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    fanout_p50_us: f64,
    fanout_p99_us: f64,
    message_bytes_per_event: f64,
    wire_bytes_per_event: f64,
    gateway_rss_per_connection_kib: f64,
    gateway_cpu_ms_per_1k: f64,
    gateway_sched_cpu_ms_per_1k: f64,
    client_cpu_ms_per_1k: f64,
    publisher_behind_max_us: f64,
    polls_per_event: f64,
    setup_ws_p50_ms: Option<f64>,
    setup_wss_p50_ms: Option<f64>,
    setup_wt_p50_ms: Option<f64>,
    runs: Vec<RunReport>,
}

impl Row {
    fn from_runs(runs: Vec<RunReport>) -> Self {
        let of =
            |figure: fn(&RunReport) -> f64| median(&runs.iter().map(figure).collect::<Vec<_>>());
        let worst = |figure: fn(&RunReport) -> u64| runs.iter().map(figure).max().unwrap_or(0);
        let setup = |figure: fn(&SetupTimes) -> f64| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.setup_times.as_ref().map(figure))
                .collect();
            (!values.is_empty()).then(|| median(&values))
        };
        Self {
            transport: runs[0].transport,
            polls_per_event: of(|r| r.polls_per_event),
            setup_ws_p50_ms: setup(|t| t.ws_p50_ms),
            setup_wss_p50_ms: setup(|t| t.wss_p50_ms),
            setup_wt_p50_ms: setup(|t| t.wt_p50_ms),
            subscribers: runs[0].subscribers,
            events: runs[0].events,
            connect_secs: of(|r| r.connect_secs),
            deliveries: median(&runs.iter().map(|r| r.deliveries).collect::<Vec<_>>()),
            expected_deliveries: runs[0].expected_deliveries,
            missing: worst(|r| r.missing),
            lagged: worst(|r| r.lagged),
            gaps: worst(|r| r.gaps),
            connect_failures: worst(|r| r.connect_failures as u64) as usize,
            dropped: worst(|r| r.dropped as u64) as usize,
            unfinished: worst(|r| r.unfinished as u64) as usize,
            misordered: worst(|r| r.misordered),
            delivered_per_sec: of(|r| r.delivered_per_sec),
            p50_us: of(|r| r.latency.p50_us),
            p99_us: of(|r| r.latency.p99_us),
            p999_us: of(|r| r.latency.p999_us),
            max_us: of(|r| r.latency.max_us),
            fanout_p50_us: of(|r| r.fanout_latency.p50_us),
            fanout_p99_us: of(|r| r.fanout_latency.p99_us),
            message_bytes_per_event: of(|r| r.message_bytes_per_event),
            wire_bytes_per_event: of(|r| r.wire_bytes_per_event),
            gateway_rss_per_connection_kib: of(|r| r.gateway_rss_per_connection_kib),
            gateway_cpu_ms_per_1k: of(|r| r.gateway_cpu_ms_per_1k),
            gateway_sched_cpu_ms_per_1k: of(|r| r.gateway_sched_cpu_ms_per_1k),
            client_cpu_ms_per_1k: of(|r| r.client_cpu_ms_per_1k),
            publisher_behind_max_us: of(|r| r.publish.behind_max_ns as f64 / 1e3),
            runs,
        }
    }
}

#[derive(Debug, Serialize)]
struct Output<'a> {
    cores: usize,
    workers: usize,
    gateway: &'a Path,
    mode: &'a str,
    transports: &'a [Transport],
    rate: u64,
    payload_bytes: usize,
    envelope: Envelope,
    repeat: usize,
    queue: Option<usize>,
    loadavg_before: String,
    loadavg_after: String,
    rows: &'a [Row],
}

fn print_table(rows: &[Row]) {
    let header = [
        "transport",
        "subs",
        "events",
        "connect ms",
        "deliveries",
        "missing",
        "lagged",
        "gaps",
        "deliv msg/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "wire B/ev",
        "gw RSS KiB/conn",
        "gw CPU ms/1k",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.transport.name().to_owned(),
                row.subscribers.to_string(),
                row.events.to_string(),
                format!("{:.0}", row.connect_secs * 1e3),
                row.deliveries.to_string(),
                row.missing.to_string(),
                row.lagged.to_string(),
                row.gaps.to_string(),
                format!("{:.0}", row.delivered_per_sec),
                format!("{:.0}", row.p50_us),
                format!("{:.0}", row.p99_us),
                format!("{:.0}", row.p999_us),
                format!("{:.0}", row.max_us),
                format!("{:.1}", row.wire_bytes_per_event),
                format!("{:.1}", row.gateway_rss_per_connection_kib),
                format!("{:.2}", row.gateway_cpu_ms_per_1k),
            ]
        })
        .collect();
    print!("{}", format_table(&header, &cells));
}

fn print_detail(rows: &[Row]) {
    let header = [
        "transport",
        "subs",
        "fan-out p50 µs",
        "fan-out p99 µs",
        "envelope B",
        "gw CPU ms/1k (schedstat)",
        "client CPU ms/1k",
        "publisher late µs",
        "polls/ev",
        "setup ms ws/wss/wt",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
            vec![
                row.transport.name().to_owned(),
                row.subscribers.to_string(),
                format!("{:.0}", row.fanout_p50_us),
                format!("{:.0}", row.fanout_p99_us),
                format!("{:.1}", row.message_bytes_per_event),
                format!("{:.2}", row.gateway_sched_cpu_ms_per_1k),
                format!("{:.2}", row.client_cpu_ms_per_1k),
                format!("{:.0}", row.publisher_behind_max_us),
                if row.transport == Transport::Longpoll {
                    format!("{:.3}", row.polls_per_event)
                } else {
                    "-".to_owned()
                },
                if row.setup_wt_p50_ms.is_some() {
                    format!(
                        "{}/{}/{}",
                        ms(row.setup_ws_p50_ms),
                        ms(row.setup_wss_p50_ms),
                        ms(row.setup_wt_p50_ms)
                    )
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    print!("{}", format_table(&header, &cells));
}

fn warn_about(row: &Row) {
    let n = format!("{} {}", row.transport.name(), row.subscribers);
    for run in &row.runs {
        let mut notes = Vec::new();
        if run.missing > 0 {
            notes.push(format!(
                "{} of {} deliveries missing",
                run.missing, run.expected_deliveries
            ));
        }
        if run.connect_failures > 0 {
            notes.push(format!(
                "{} subscribers failed to connect (first: {})",
                run.connect_failures,
                run.first_connect_error.as_deref().unwrap_or("?")
            ));
        }
        if run.dropped > 0 {
            notes.push(format!(
                "{} connections ended early (first: {})",
                run.dropped,
                run.first_drop_reason.as_deref().unwrap_or("?")
            ));
        }
        if run.unfinished > 0 {
            notes.push(format!(
                "{} subscribers still waiting at the drain timeout",
                run.unfinished
            ));
        }
        if run.misordered > 0 {
            notes.push(format!("{} deliveries out of order", run.misordered));
        }
        if run.unreadable_events > 0 || run.errors > 0 || run.other_messages > 0 {
            notes.push(format!(
                "{} unreadable events, {} error and {} unexpected messages",
                run.unreadable_events, run.errors, run.other_messages
            ));
        }
        let publish = &run.publish;
        if publish.sent < run.events || publish.acked < publish.sent || publish.errors > 0 {
            notes.push(format!(
                "publisher sent {} of {} events, {} acknowledged, {} errors{}{}",
                publish.sent,
                run.events,
                publish.acked,
                publish.errors,
                publish
                    .failure
                    .as_deref()
                    .map(|f| format!("; {f}"))
                    .unwrap_or_default(),
                publish
                    .first_error
                    .as_deref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default(),
            ));
        }
        if run.gateway_exited_early {
            notes.push("the gateway exited during the run".to_owned());
        }
        if run.gateway_log_warnings > 0 || run.gateway_log_dropped_clients > 0 {
            notes.push(format!(
                "gateway logged {} warnings and dropped {} clients",
                run.gateway_log_warnings, run.gateway_log_dropped_clients
            ));
        }
        if let (false, Some(log)) = (notes.is_empty(), &run.gateway_log) {
            notes.push(format!("log: {}", log.display()));
        }
        if !notes.is_empty() {
            println!("warning: {n} subscribers: {}", notes.join("; "));
        }
    }
    if row.publisher_behind_max_us > 1_000.0 {
        println!(
            "note: {n} subscribers: the publisher fell up to {:.1} ms behind its schedule \
             (median run); latencies include that wait",
            row.publisher_behind_max_us / 1_000.0
        );
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.subscribers.is_empty() && args.subscribers.iter().all(|&n| n > 0),
        "--subscribers needs positive counts"
    );
    anyhow::ensure!(args.repeat > 0, "--repeat must be at least 1");
    anyhow::ensure!(!args.transport.is_empty(), "--transport needs a transport");
    anyhow::ensure!(
        args.envelope == Envelope::Json
            || !args
                .transport
                .iter()
                .any(|t| matches!(t, Transport::Sse | Transport::Longpoll)),
        "--envelope binary is for ws and WebTransport only (SSE and long polling are UTF-8)"
    );
    anyhow::ensure!(
        args.payload_bytes >= MIN_PAYLOAD_BYTES,
        "--payload-bytes must be at least {MIN_PAYLOAD_BYTES}"
    );
    anyhow::ensure!(
        args.events.is_none_or(|events| events > 0),
        "--events must be positive"
    );
    anyhow::ensure!(
        args.gateway.is_file(),
        "no gateway binary at {} (build it with `cargo build --release -p streamgate`, or \
         pass --gateway)",
        args.gateway.display()
    );
    let max_subscribers = args.subscribers.iter().copied().max().unwrap_or(0);
    if max_subscribers > 19_000 {
        println!(
            "note: {max_subscribers} subscribers need as many sockets in this process; \
             check `ulimit -n`"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.unwrap_or(cores);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let ticks_per_sec = clock_ticks_per_sec();
    let mode = if args.rate == 0 {
        "saturate (publish as fast as the connection takes them)".to_owned()
    } else {
        format!("open loop at {} events/s", args.rate)
    };
    let loadavg_before = loadavg();
    let transports: Vec<&str> = args.transport.iter().map(|t| t.name()).collect();
    println!(
        "streamgate fan-out ({} subscribers, one WebSocket publisher): {mode}",
        transports.join(", ")
    );
    println!(
        "gateway {} (separate process), {cores} cores shared by gateway and clients, \
         {workers} client workers, payload {} B, {} envelopes, median of {} runs, load {}",
        args.gateway.display(),
        args.payload_bytes,
        match args.envelope {
            Envelope::Json => "JSON",
            Envelope::Binary => "binary",
        },
        args.repeat,
        loadavg_before,
    );

    let temp = std::env::temp_dir().join(format!("ws_fanout-{}", std::process::id()));
    // Every run starts the same build, even if the binary is rebuilt meanwhile.
    std::fs::create_dir_all(&temp).with_context(|| format!("creating {}", temp.display()))?;
    let gateway_copy = temp.join("streamgate");
    std::fs::copy(&args.gateway, &gateway_copy)
        .with_context(|| format!("copying {}", args.gateway.display()))?;
    let groups: Vec<(Transport, usize)> = args
        .transport
        .iter()
        .flat_map(|&t| args.subscribers.iter().map(move |&n| (t, n)))
        .collect();
    let mut runs: Vec<Vec<RunReport>> = vec![Vec::new(); groups.len()];
    let mut run_all = || -> anyhow::Result<()> {
        for repeat in 0..args.repeat {
            for (slot, &(transport, subscribers)) in groups.iter().enumerate() {
                let spec = RunSpec {
                    args: &args,
                    transport,
                    gateway: &gateway_copy,
                    subscribers,
                    events: args.events_for(subscribers),
                    dir: temp.join(format!(
                        "run{}-{}-{subscribers}",
                        repeat + 1,
                        transport.name()
                    )),
                    ticks_per_sec,
                };
                let report = runtime.block_on(run_once(&spec)).with_context(|| {
                    format!("running {} {subscribers} subscribers", transport.name())
                })?;
                eprintln!(
                    "run {}/{} {:>19} {subscribers:>6} subscribers: connected {} in {:.2} s, \
                     {}/{} deliveries, {:.0} msg/s, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
                    repeat + 1,
                    args.repeat,
                    transport.name(),
                    report.connected,
                    report.connect_secs,
                    report.deliveries,
                    report.expected_deliveries,
                    report.delivered_per_sec,
                    report.latency.p50_us,
                    report.latency.p99_us,
                    report.latency.max_us,
                );
                runs[slot].push(report);
            }
        }
        Ok(())
    };
    let result = run_all();
    // The copy goes whatever happened; only empty directories are left if every run went
    // well (the logs of troubled runs stay).
    let _ = std::fs::remove_file(&gateway_copy);
    let _ = std::fs::remove_dir(&temp);
    result?;
    let loadavg_after = loadavg();

    let rows: Vec<Row> = runs.into_iter().map(Row::from_runs).collect();
    print_table(&rows);
    println!();
    print_detail(&rows);
    for row in &rows {
        warn_about(row);
    }
    println!("load average before {loadavg_before}, after {loadavg_after}");

    if let Some(path) = &args.json {
        let output = Output {
            cores,
            workers,
            gateway: &args.gateway,
            mode: &mode,
            transports: &args.transport,
            rate: args.rate,
            payload_bytes: args.payload_bytes,
            envelope: args.envelope,
            repeat: args.repeat,
            queue: args.queue,
            loadavg_before,
            loadavg_after,
            rows: &rows,
        };
        let json = serde_json::to_string_pretty(&output)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size_and_reads_back() {
        for len in [64, 256, 1000] {
            let mut out = String::new();
            payload(&mut out, 1_764_213_600_123_456_789, 12_345, len);
            assert_eq!(out.len(), len);
            serde_json::from_str::<serde_json::Value>(&out).unwrap();
            assert_eq!(
                parse_payload(out.as_bytes()),
                Some((1_764_213_600_123_456_789, 12_345))
            );
        }
    }

    #[test]
    fn json_envelope_is_read_without_a_full_parse() {
        let mut data = String::new();
        payload(&mut data, 42, 7, 64);
        let envelope = format!(
            "{{\"type\":\"event\",\"topic\":\"bench\",\"id\":\"ep:9\",\"ts\":1700000000123456,\
             \"content_type\":\"json\",\"data\":{data}}}"
        );
        assert_eq!(
            parse_json_event(envelope.as_bytes()),
            Some((1_700_000_000_123_456, 42, 7))
        );
        assert_eq!(parse_json_event(b"{\"type\":\"event\"}"), None);
    }

    #[test]
    fn binary_envelope_is_read() {
        let mut data = String::new();
        payload(&mut data, 42, 7, 64);
        let mut bytes = vec![1u8, 1, 1, 5];
        bytes.extend_from_slice(b"bench");
        bytes.push(4);
        bytes.extend_from_slice(b"ep:9");
        bytes.extend_from_slice(&1_700_000_000_123_456u64.to_be_bytes());
        bytes.extend_from_slice(data.as_bytes());
        assert_eq!(
            parse_binary_event(&bytes),
            Some((1_700_000_000_123_456, 42, 7))
        );
        assert_eq!(parse_binary_event(&bytes[..10]), None);
    }

    #[test]
    fn frame_headers() {
        assert_eq!(frame_header_len(125), 2);
        assert_eq!(frame_header_len(126), 4);
        assert_eq!(frame_header_len(65_536), 10);
    }

    #[test]
    fn the_gateway_accepts_the_generated_config() {
        let text = gateway_config(10_000, 2048, 100_000, None);
        let config = streamgate::config::GatewayConfig::from_toml(&text, Path::new("run.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.server.max_connections, 10_000 + EXTRA_CONNECTIONS);
        assert_eq!(config.bus.subscriber_queue, 2048);
        assert!(config.bus.max_payload >= 100_000);
        assert!(config.ws.max_message_size >= 200_000);
        assert!(config.ws.message_rate >= 1e9);
        assert!(!config.tls.enabled);
        assert!(!config.webtransport.enabled);
        let tls = SocketAddr::from(([127, 0, 0, 1], 18443));
        let wt = SocketAddr::from(([127, 0, 0, 1], 14433));
        let text = gateway_config(100, 1024, 256, Some((tls, wt)));
        let config = streamgate::config::GatewayConfig::from_toml(&text, Path::new("run.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(config.tls.enabled);
        assert!(config.webtransport.enabled);
    }
}
