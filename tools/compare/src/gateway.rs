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

pub use crate::broker::BusSettings;
use crate::clients::HttpConn;

/// How long a gateway has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a gateway on a broker bus has to connect to the broker once it listens.
pub const BUS_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `/healthz` is asked while waiting for the bus.
const HEALTH_POLL: Duration = Duration::from_millis(50);
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
    gateway_config_with_bus(
        subscribers,
        queue,
        events,
        payload_bytes,
        endpoints,
        &BusSettings::Memory,
    )
}

/// [`gateway_config`] on the bus `bus`: every node of a multi-node run gets the same
/// settings, so they share one log.
pub fn gateway_config_with_bus(
    subscribers: usize,
    queue: usize,
    events: u64,
    payload_bytes: usize,
    endpoints: &Endpoints,
    bus: &BusSettings,
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
         max_connections_per_ip = 0\n\
         # Every publish comes from this one machine, at saturation in the throughput phase.\n\
         publish_rate = 0.0\n\
         topic_create_rate = 0.0\n\
         shutdown_grace = 2\n\
         \n\
         [bus]\n\
         subscriber_queue = {queue}\n\
         max_payload = {max_payload}\n\
         history_events = {history_events}\n\
         history_bytes = {history_bytes}\n\
         # The run's events stay resumable, whatever their total size.\n\
         history_memory = 0\n",
        http = endpoints.http,
        max_payload = (1 << 20).max(payload_bytes + 1024),
    );
    bus.append_toml(&mut config);
    let _ = write!(
        config,
        "\n\
         [demo]\n\
         enabled = false\n\
         \n\
         [ws]\n\
         # One publisher connection sends every event: lift the per-client message limit.\n\
         message_rate = 1000000000.0\n\
         message_burst = 4000000000\n\
         max_message_size = {max_message}\n",
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

/// Writes `config` into `dir` and starts `command` (a gateway binary, possibly wrapped) as
/// `serve --config …`, its standard error going to `dir/gateway.log`: the child and the log.
/// [`GatewayProcess::start`] then waits for it to listen; `bench/`'s `vs_nchan` does the same
/// on its own thread.
///
/// # Errors
/// If `dir` or its files cannot be written, or the process cannot start.
pub fn spawn_serve(
    mut command: Command,
    dir: &Path,
    config: &str,
) -> anyhow::Result<(Child, PathBuf)> {
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
    Ok((child, log))
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
        command: Command,
        dir: &Path,
        config: &str,
        endpoints: Endpoints,
    ) -> anyhow::Result<Self> {
        let (child, log) = spawn_serve(command, dir, config)?;
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

    /// Waits until `GET /healthz` answers 200: a gateway on a broker bus listens before it
    /// has connected to the broker (it keeps retrying in the background), and until then
    /// it could neither publish nor hear what other nodes publish.
    ///
    /// # Errors
    /// If the process exits, or `timeout` passes first: the error carries what `/healthz`
    /// last said about the bus (`bus.detail`, e.g. why the broker is unreachable) and the
    /// tail of the log.
    pub async fn wait_bus_available(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match bus_health(self.endpoints.http).await {
                Ok(health) if health.status == 200 => return Ok(()),
                Ok(health) => format!(
                    "/healthz answered {}: {}",
                    health.status,
                    health.detail.as_deref().unwrap_or("(no detail)")
                ),
                Err(e) => format!("/healthz: {e:#}"),
            };
            if self.has_exited() {
                bail!(
                    "the gateway exited while connecting to its bus; its log ({}):\n{}",
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            if Instant::now() + HEALTH_POLL > deadline {
                bail!(
                    "its bus was not available within {timeout:?}; {last}; its log ({}):\n{}",
                    self.log.display(),
                    self.log_tail(3)
                );
            }
            // Polling: the gateway announces the broker connection to no one.
            tokio::time::sleep(HEALTH_POLL).await;
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

/// What `GET /healthz` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The HTTP status: 200 when the bus is available, 503 while it is not.
    pub status: u16,
    /// `bus.detail`: why the bus is not available, if the gateway says.
    pub detail: Option<String>,
}

/// Asks the gateway at `http` for `/healthz`.
///
/// # Errors
/// If the request fails or the answer is not the JSON `/healthz` gives.
pub async fn bus_health(http: SocketAddr) -> anyhow::Result<Health> {
    let mut conn = HttpConn::connect(http).await?;
    conn.send_get("/healthz").await?;
    let head = conn.head().await?;
    let body = conn.body(&head).await?;
    let json: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "answered {} with {:?}",
            head.status,
            String::from_utf8_lossy(&body)
        )
    })?;
    Ok(Health {
        status: head.status,
        detail: json["bus"]["detail"].as_str().map(str::to_owned),
    })
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// A `/healthz` that answers 503 with `detail` to the first `unavailable` requests, then
    /// 200.
    async fn fake_health(unavailable: usize, detail: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answered in 0.. {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0; 1024];
                let _ = socket.read(&mut request).await;
                let (status, available) = if answered < unavailable {
                    ("503 Service Unavailable", false)
                } else {
                    ("200 OK", true)
                };
                let body = serde_json::json!({
                    "status": "degraded",
                    "bus": { "backend": "redis", "available": available, "detail": detail },
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    /// A process that stands in for a gateway listening at `http`, its log named `name`.
    fn stand_in(http: SocketAddr, name: &str) -> GatewayProcess {
        let log = std::env::temp_dir().join(format!("{name}-{}.log", std::process::id()));
        std::fs::write(&log, "a line of log\n").unwrap();
        GatewayProcess {
            child: Command::new("sleep").arg("30").spawn().unwrap(),
            endpoints: Endpoints {
                http,
                tls: None,
                wt: None,
            },
            log,
            exited: false,
        }
    }

    #[tokio::test]
    async fn waits_for_the_bus_to_become_available() {
        let addr = fake_health(3, "connecting to redis").await;
        assert_eq!(
            bus_health(addr).await.unwrap(),
            Health {
                status: 503,
                detail: Some("connecting to redis".to_owned())
            }
        );
        let mut gateway = stand_in(addr, "compare-health-ok");
        gateway
            .wait_bus_available(Duration::from_secs(5))
            .await
            .unwrap();
        let _ = std::fs::remove_file(&gateway.log);
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_with_the_gateways_reason() {
        let addr = fake_health(usize::MAX, "redis://127.0.0.1:1: connection refused").await;
        let mut gateway = stand_in(addr, "compare-health-down");
        let error = gateway
            .wait_bus_available(Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("not available within 300ms"), "{error}");
        assert!(
            error.contains("answered 503: redis://127.0.0.1:1: connection refused"),
            "{error}"
        );
        assert!(error.contains("a line of log"), "{error}");
        let _ = std::fs::remove_file(&gateway.log);
    }
}
