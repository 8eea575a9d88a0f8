//! What `vs_nchan` (the orchestrator), `scaleout` and `loadgen` (the subscribers) share: the
//! servers and transports, the payload that carries its scheduled send time, the summary a load
//! generator prints, the open-loop HTTP publisher, the servers' subscriber counts, `/proc`
//! readings, free ports and the package's other binaries.
//!
//! See bench/README.md (`vs_nchan`) for what the figures mean.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use streamgate_client::h1::{self, BodyFraming, ChunkedDecoder, ResponseHead};

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    /// This project's gateway.
    Streamgate,
    /// nginx + the Nchan module (bench/peers/).
    Nchan,
}

impl Server {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Streamgate => "streamgate",
            Self::Nchan => "nchan",
        }
    }
}

/// A subscriber transport both servers have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// HTTP long polling.
    Longpoll,
}

impl TransportKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Longpoll => "longpoll",
        }
    }
}

/// Wall clock, microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// When event `index` of an open-loop schedule at `rate` events/s is due: `start + index / rate`.
pub fn due_at(start: Instant, index: u64, rate: f64) -> Instant {
    start + Duration::from_secs_f64(index as f64 / rate)
}

/// Event `index`'s payload, exactly `len` bytes (≥ 64) of JSON:
/// `{"t":<due µs>,"i":<index>,"p":"xxx…"}`. Both servers deliver it verbatim (streamgate as
/// the envelope's `data`, Nchan as the message body).
pub fn payload(due_us: u64, index: u64, len: usize) -> String {
    let mut out = format!("{{\"t\":{due_us},\"i\":{index},\"p\":\"");
    let pad = len.saturating_sub(out.len() + 2);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// The first payload stamp in `bytes`: `(due µs, index, bytes left after it)`.
pub fn parse_stamp(bytes: &[u8]) -> Option<(u64, u64, usize)> {
    let at = bytes.windows(5).position(|w| w == b"{\"t\":")? + 5;
    let (t, rest) = streamgate_compare::wire::leading_u64(&bytes[at..])?;
    let rest = rest.strip_prefix(b",\"i\":")?;
    let (index, rest) = streamgate_compare::wire::leading_u64(rest)?;
    Some((t, index, rest.len()))
}

/// A histogram as `[value, count]` pairs (for JSON and merging across processes).
pub fn hist_pairs(histogram: &Histogram<u64>) -> Vec<[u64; 2]> {
    histogram
        .iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

/// A histogram of microseconds, 2 significant digits, growing as needed.
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds");
    h.auto(true);
    h
}

/// Adds `pairs` into `into`.
pub fn add_pairs(into: &mut Histogram<u64>, pairs: &[[u64; 2]]) {
    for [value, count] in pairs {
        let _ = into.record_n(*value, *count);
    }
}

/// Percentiles of a microsecond histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub samples: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Self {
            samples: histogram.len(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }
}

/// What a load generator prints on `report` and `stop` (one JSON line).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadgenSummary {
    /// Subscribers it was asked to open.
    pub connections: usize,
    /// Subscribers connected now.
    pub connected: usize,
    /// Events received by the subscribers that never stall, since `reset`.
    pub deliveries: u64,
    /// Events received by the stallable subscribers.
    pub stalled_deliveries: u64,
    /// Failed connection attempts (each retried).
    pub errors: u64,
    /// Events missing from a connection's index sequence.
    pub gaps: u64,
    /// Events received twice (or out of order).
    pub dups: u64,
    /// streamgate `lagged`/`gap` notices.
    pub notices: u64,
    /// Connections the server ended.
    pub closed_by_server: u64,
    /// Reconnections (storm or after the server closed).
    pub reconnects: u64,
    /// Subscribers that received at least one event, of any index, since `reset`: all of
    /// them once the server has registered every one (warm-up).
    #[serde(default)]
    pub fed: usize,
    /// Publish → receive latency of the never-stalled subscribers, µs pairs.
    pub latency_us: Vec<[u64; 2]>,
    /// The same for the stallable ones.
    pub latency_stalled_us: Vec<[u64; 2]>,
    /// Connection setup time (TCP + handshake, or first poll), µs pairs.
    pub connect_us: Vec<[u64; 2]>,
    /// Reconnect start → first event, µs pairs.
    pub ttfe_us: Vec<[u64; 2]>,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
}

impl LoadgenSummary {
    /// Adds another process's summary to this one.
    pub fn absorb(&mut self, other: &Self) {
        self.connections += other.connections;
        self.connected += other.connected;
        self.deliveries += other.deliveries;
        self.stalled_deliveries += other.stalled_deliveries;
        self.errors += other.errors;
        self.gaps += other.gaps;
        self.dups += other.dups;
        self.notices += other.notices;
        self.closed_by_server += other.closed_by_server;
        self.reconnects += other.reconnects;
        self.fed += other.fed;
        self.latency_us.extend_from_slice(&other.latency_us);
        self.latency_stalled_us
            .extend_from_slice(&other.latency_stalled_us);
        self.connect_us.extend_from_slice(&other.connect_us);
        self.ttfe_us.extend_from_slice(&other.ttfe_us);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// A histogram of the pairs.
    pub fn histogram(pairs: &[[u64; 2]]) -> Histogram<u64> {
        let mut h = new_histogram();
        add_pairs(&mut h, pairs);
        h
    }
}

/// What an open-loop publisher did.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct PublishReport {
    /// Requests sent.
    pub sent: u64,
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses with another status, or none.
    pub failed: u64,
    /// How far behind schedule the latest send was, worst case, µs.
    pub max_late_us: u64,
}

/// An open-loop HTTP/1.1 publisher on one keep-alive connection: requests are written at
/// their scheduled times and pipelined, a second thread reads the responses, so a slow
/// response never delays the next send (the schedule, not the server, sets the pace).
#[derive(Debug)]
pub struct Publisher {
    server: Server,
    addr: SocketAddr,
    topic: String,
    payload_bytes: usize,
    next_index: u64,
}

impl Publisher {
    /// A publisher of `topic` on `addr`; indexes start at 0.
    pub fn new(server: Server, addr: SocketAddr, topic: &str, payload_bytes: usize) -> Self {
        Self {
            server,
            addr,
            topic: topic.to_owned(),
            payload_bytes,
            next_index: 0,
        }
    }

    /// The index the next event gets.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    fn request(&self, body: &str) -> Vec<u8> {
        let path = match self.server {
            Server::Streamgate => format!("/publish/{}", self.topic),
            Server::Nchan => format!("/pub/{}", self.topic),
        };
        let headers = [("content-type", "application/json")];
        h1::request(
            "POST",
            &path,
            &self.addr.to_string(),
            &headers,
            body.as_bytes(),
        )
    }

    /// Publishes `rate` events/s for `duration` (at least one event), open loop, and waits
    /// for every response (up to 10 s more).
    ///
    /// # Errors
    /// If the connection cannot be opened or written.
    pub fn run(&mut self, rate: f64, duration: Duration) -> anyhow::Result<PublishReport> {
        let events = ((rate * duration.as_secs_f64()).round() as u64).max(1);
        let tcp = TcpStream::connect(self.addr).context("publisher connect")?;
        tcp.set_nodelay(true)?;
        let reader_tcp = tcp.try_clone()?;
        reader_tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let reader: JoinHandle<()> = {
            let ok = ok.clone();
            let failed = failed.clone();
            std::thread::spawn(move || read_responses(reader_tcp, events, &ok, &failed))
        };
        let mut writer = tcp;
        let start = Instant::now();
        let start_us = now_us();
        let mut max_late = 0u64;
        for k in 0..events {
            let due = due_at(start, k, rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                max_late = max_late.max((now - due).as_micros() as u64);
            }
            let index = self.next_index;
            self.next_index += 1;
            let body = payload(
                start_us + (due - start).as_micros() as u64,
                index,
                self.payload_bytes,
            );
            writer
                .write_all(&self.request(&body))
                .context("publish write")?;
        }
        let _ = reader.join();
        let ok = ok.load(Ordering::Relaxed);
        Ok(PublishReport {
            sent: events,
            ok,
            failed: events - ok.min(events),
            max_late_us: max_late,
        })
    }
}

/// Counts the `expected` pipelined answers as they come: heads through httparse, bodies
/// skipped by their framing.
fn read_responses(mut tcp: TcpStream, expected: u64, ok: &AtomicU64, failed: &AtomicU64) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut scratch = Vec::new();
    let mut fill = |buf: &mut Vec<u8>| {
        let mut chunk = [0u8; 16 * 1024];
        match tcp.read(&mut chunk) {
            Ok(n) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    };
    for _ in 0..expected {
        let head = loop {
            match ResponseHead::parse(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) if fill(&mut buf) => {}
                _ => return,
            }
        };
        buf.drain(..head.len);
        match head.framing() {
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                loop {
                    scratch.clear();
                    let Ok(used) = decoder.feed(&buf, &mut scratch) else {
                        return;
                    };
                    buf.drain(..used);
                    if decoder.is_done() {
                        break;
                    }
                    if !fill(&mut buf) {
                        return;
                    }
                }
            }
            BodyFraming::Length(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                while buf.len() < n {
                    if !fill(&mut buf) {
                        return;
                    }
                }
                buf.drain(..n);
            }
            BodyFraming::Empty | BodyFraming::UntilClose => {}
        }
        if (200..300).contains(&head.status) {
            ok.fetch_add(1, Ordering::Relaxed);
        } else {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Subscribers the server counts now (a fresh server has only the one topic): the sum of
/// streamgate's `GET /topics` `subscribers`, or the `subscribers:` line of Nchan's
/// `GET /nchan_status`.
///
/// # Errors
/// If the request fails or the answer has no count.
pub fn server_subscribers(server: Server, addr: SocketAddr) -> anyhow::Result<u64> {
    let path = match server {
        Server::Streamgate => "/topics",
        Server::Nchan => "/nchan_status",
    };
    let mut tcp = TcpStream::connect(addr).context("connect")?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let headers = [("connection", "close")];
    tcp.write_all(&h1::request("GET", path, &addr.to_string(), &headers, b""))?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)
        .with_context(|| format!("GET {path}"))?;
    let ok = ResponseHead::parse(&raw).ok().flatten().map(|h| h.status) == Some(200);
    let answer = String::from_utf8_lossy(&raw);
    let count = match server {
        _ if !ok => None,
        // No topic yet (nobody subscribed) is an empty list: 0.
        Server::Streamgate => answer
            .split("\"subscribers\":")
            .skip(1)
            .map(|rest| streamgate_compare::wire::leading_u64(rest.as_bytes()).map(|(n, _)| n))
            .sum::<Option<u64>>(),
        Server::Nchan => answer.lines().find_map(|line| {
            line.strip_prefix("subscribers:")
                .and_then(|n| n.trim().parse().ok())
        }),
    };
    count.with_context(|| {
        let start: String = answer.chars().take(200).collect();
        format!("GET {path} answered {start:?}")
    })
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
///
/// # Errors
/// When no loopback port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A binary of this package, next to the running one (whatever `CARGO_TARGET_DIR` is), else
/// `name` for a search of `PATH`.
pub fn sibling_bin(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| std::path::PathBuf::from(name))
}

/// CPU time of a process, in microseconds: the sum of its threads' `schedstat` run time
/// (nanosecond resolution), or user + system time from `/proc/<pid>/stat` (10 ms clock
/// ticks) where schedstat is missing.
pub fn cpu_us(pid: u32) -> u64 {
    match streamgate_compare::gateway::sched_cpu_ns(&pid.to_string()) {
        Ok(ns) if ns > 0 => ns / 1000,
        _ => stat_cpu_us(pid),
    }
}

/// User + system time of a process, in microseconds, from `/proc/<pid>/stat`.
pub fn stat_cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command (which may contain spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks: u64 = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    ticks * 1_000_000 / *TICKS.get_or_init(streamgate_compare::gateway::clock_ticks_per_sec)
}

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}

/// The children of `pid` (nginx workers of a master).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// `Slab:` of `/proc/meminfo`, KiB (kernel memory of the whole machine: both ends of every
/// loopback socket).
pub fn slab_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| {
            meminfo.lines().find_map(|line| {
                line.strip_prefix("Slab:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_exact_and_parses() {
        let p = payload(1_700_000_000_123_456, 42, 256);
        assert_eq!(p.len(), 256);
        let (t, i, _) = parse_stamp(p.as_bytes()).unwrap();
        assert_eq!((t, i), (1_700_000_000_123_456, 42));
        let envelope = format!("{{\"type\":\"event\",\"ts\":1,\"data\":{p}}}");
        assert_eq!(parse_stamp(envelope.as_bytes()).unwrap().1, 42);
        let two = format!("[{p},{}]", payload(5, 43, 256));
        let (_, _, left) = parse_stamp(two.as_bytes()).unwrap();
        let rest = &two.as_bytes()[two.len() - left..];
        assert_eq!(parse_stamp(rest).unwrap().1, 43);
    }
}
