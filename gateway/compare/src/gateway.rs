//! The gateway under test: a child process started per run (or one already running), its
//! config, and what `/proc` says about its CPU time and memory.
//!
//! A child process rather than a gateway inside this process, because the figures per
//! connection (RSS, CPU time per delivery) must not include the clients' own.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::net::TcpStream;

/// How long a gateway has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a gateway has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections a gateway may hold beyond the subscribers: the publisher, setup samples, a
/// margin.
pub const EXTRA_CONNECTIONS: usize = 64;

/// Where a gateway listens.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    /// Plain HTTP: WebSocket, SSE, long polling, `/wt/cert-hash`, the publisher.
    pub http: SocketAddr,
    /// HTTPS (HTTP/1.1 and HTTP/2), if any.
    pub tls: Option<SocketAddr>,
    /// WebTransport (UDP), if any.
    pub wt: Option<SocketAddr>,
}

impl Endpoints {
    /// Free loopback ports for all three listeners (free when we look: the gateway binds
    /// them a moment later, and says so in its log if another process was faster).
    ///
    /// # Errors
    /// If no port can be bound.
    pub fn free_loopback() -> anyhow::Result<Self> {
        let tcp = || {
            StdTcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .context("finding a free TCP port")
        };
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .context("finding a free UDP port")?;
        Ok(Self {
            http: tcp()?,
            tls: Some(tcp()?),
            wt: Some(udp),
        })
    }

    /// Fixed ports on `ip`: for a network namespace of our own, where every port is free.
    pub fn in_namespace(ip: IpAddr) -> Self {
        Self {
            http: SocketAddr::new(ip, 8080),
            tls: Some(SocketAddr::new(ip, 8443)),
            wt: Some(SocketAddr::new(ip, 4433)),
        }
    }
}

/// The config of a gateway started for one run: limits raised so they do not shape the
/// result, every listener of `endpoints` on.
///
/// History holds every event of the run (`events`): a long-polling client is stateless
/// between polls and reads from history, so with the default 1 000 events a burst longer
/// than that would leave slow pollers a gap, and the row would measure the history size
/// rather than the transport.
pub fn gateway_config(
    subscribers: usize,
    queue: usize,
    events: u64,
    payload_bytes: usize,
    endpoints: &Endpoints,
) -> String {
    let history_events = events.max(1000);
    // Envelope overhead per event is well under 256 bytes.
    let history_bytes = history_events.saturating_mul(payload_bytes as u64 + 256);
    let connections = subscribers + EXTRA_CONNECTIONS;
    let mut config = format!(
        "# Written by streamgate compare for one run.\n\
         [server]\n\
         listen = \"{http}\"\n\
         max_connections = {connections}\n\
         shutdown_grace = 2\n\
         \n\
         [bus]\n\
         subscriber_queue = {queue}\n\
         max_payload = {max_payload}\n\
         history_events = {history_events}\n\
         history_bytes = {history_bytes}\n\
         \n\
         [demo]\n\
         enabled = false\n\
         \n\
         [ws]\n\
         # One publisher connection sends every event: lift the per-client message limit.\n\
         message_rate = 1000000000.0\n\
         message_burst = 4000000000\n\
         max_message_size = {max_message}\n",
        http = endpoints.http,
        max_payload = (1 << 20).max(payload_bytes + 1024),
        max_message = (64 * 1024).max(2 * payload_bytes + 1024),
    );
    match endpoints.tls {
        Some(tls) => {
            let _ = write!(config, "\n[tls]\nenabled = true\nlisten = \"{tls}\"\n");
        }
        None => config.push_str("\n[tls]\nenabled = false\n"),
    }
    match endpoints.wt {
        Some(wt) => {
            let _ = write!(
                config,
                "\n[webtransport]\nenabled = true\nlisten = \"{wt}\"\n\
                 max_sessions = {connections}\nidle_timeout = 120\n"
            );
        }
        None => config.push_str("\n[webtransport]\nenabled = false\n"),
    }
    config
}

/// One `streamgate serve` child process; killed on drop if still running.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// Where it listens.
    pub endpoints: Endpoints,
    /// Its log (standard error).
    pub log: PathBuf,
    exited: bool,
}

impl GatewayProcess {
    /// Writes `config` into `dir` and starts `command` (a gateway binary, possibly wrapped,
    /// e.g. in `ip netns exec`) as `serve --config …`, then waits until it accepts
    /// connections on `endpoints.http`.
    ///
    /// # Errors
    /// If the process cannot start, exits, or does not listen in time; the error carries
    /// the tail of its log.
    pub async fn start(
        mut command: Command,
        dir: &Path,
        config: &str,
        endpoints: Endpoints,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config_path = dir.join("streamgate.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log = dir.join("gateway.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting the gateway")?;
        let mut gateway = Self {
            child,
            endpoints,
            log,
            exited: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = gateway.child.try_wait()? {
                gateway.exited = true;
                bail!(
                    "the gateway exited at start ({status}); its log ({}):\n{}",
                    gateway.log.display(),
                    gateway.log_tail(20)
                );
            }
            if TcpStream::connect(endpoints.http).await.is_ok() {
                return Ok(gateway);
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateway did not listen on {} within {START_TIMEOUT:?}; its log ({}):\n{}",
                    endpoints.http,
                    gateway.log.display(),
                    gateway.log_tail(20)
                );
            }
            // Polling: a child process gives no readiness signal we could wait on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id (of the wrapper, when wrapped: see [`GatewayProcess::measured_pid`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The id of the process that really is the gateway: `ip netns exec` execs the gateway
    /// in place, so it is the child itself.
    pub fn measured_pid(&self) -> u32 {
        self.pid()
    }

    /// Whether the process has exited (it should not before [`GatewayProcess::stop`]).
    pub fn has_exited(&mut self) -> bool {
        self.exited = self.exited || !matches!(self.child.try_wait(), Ok(None));
        self.exited
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_TIMEOUT`].
    pub async fn stop(&mut self) {
        if self.has_exited() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
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

/// `VmRSS` of a process, in KiB.
///
/// # Errors
/// If the process is gone.
pub fn rss_kib(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// `utime + stime` of a process (every thread, live or exited), in clock ticks.
///
/// # Errors
/// If the process is gone.
pub fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
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
/// finer than [`cpu_ticks`] (clock ticks are 10 ms), and the gateway's worker threads live
/// as long as it does.
///
/// # Errors
/// If the process is gone.
pub fn sched_cpu_ns(pid: &str) -> anyhow::Result<u64> {
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
pub fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
