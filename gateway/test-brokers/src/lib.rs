//! # streamgate-test-brokers
//!
//! Redis and NATS servers for streamgate's tests, so that `cargo test --workspace` needs no
//! service running on the machine: each is started from the `redis-server` or `nats-server`
//! binary (the Debian packages of those names) on a free port of 127.0.0.1, with a data
//! directory of its own under the temporary directory, and killed when it is no longer
//! needed. Nothing is shared with the machine's own Redis or NATS, nor between test binaries.
//!
//! - [`shared_url`] ([`redis_url`], [`nats_url`]): the broker every test of one test binary
//!   shares, each test under a key prefix or stream of its own. `REDIS_URL` / `NATS_URL`
//!   name a running server to use instead; without them one server is started on first use
//!   and lives as long as the test binary.
//! - [`BrokerServer`]: a server of one test's own, which the test may kill (SIGKILL) and
//!   restart on the same port and data, to test what a broker restart does.
//!
//! The binary is `REDIS_SERVER` / `NATS_SERVER` (a path) if set, else the first found on
//! `PATH` or in /usr/sbin, /usr/local/sbin, /sbin (Debian installs nats-server in /usr/sbin,
//! which a user's `PATH` may lack). When there is none and the test runs as root on a machine
//! with apt-get, the Debian packages `redis-server` and `nats-server` are installed first
//! (once, whichever test binary gets there first; `STREAMGATE_TEST_INSTALL=0` turns that off),
//! so the README's `cargo test --workspace` passes on a fresh Debian machine with only Rust.
//! Otherwise the test fails at once with a message naming the package to install and the
//! variable to set instead: a test that cannot run fails, it is never skipped.
//!
//! A server is up when it logs that it is ready (`Ready to accept connections`,
//! `Server is ready`) and then answers a `PING` on its port: no fixed sleep, and at most
//! [`START_TIMEOUT`].
//!
//! Every server runs under a small `sh` wrapper that holds the read end of a pipe whose write
//! end only this process holds. Dropping the server closes it; so does the kernel when the
//! test process exits or is killed, which is what stops the per-binary server (a `static` is
//! never dropped) and a test's own one whose test was cut short, and removes their data
//! directories. No server, and no data directory, outlives its test binary.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest a server may take from its start to answering `PING`. A fresh one takes a few
/// milliseconds (Redis) to a few tens (NATS with JetStream); this bound is for a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound of one connection attempt and of one reply during the readiness check.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts at a free port for Redis, which cannot pick one itself: another process may take
/// the port between the probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;

/// How much of a server's output is kept for failure messages (the newest part).
const OUTPUT_LIMIT: usize = 64 * 1024;

/// Directories searched after `PATH`.
const SBIN_DIRECTORIES: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// Runs `"$@"` (the server) and SIGKILLs it when a line or end of file arrives on its
/// standard input. A line `keep` ([`BrokerServer::kill`]) keeps the data directory `$1` for
/// a restart; end of file alone (the server dropped, or the test process gone, even killed)
/// removes it once the server is gone. The server's output (both streams) goes to the
/// wrapper's standard output, and only the server holds it: its end of file says the server
/// exited.
///
/// A background job of a non-interactive shell has its standard input replaced by /dev/null,
/// so the watcher reads the pipe through a copy on descriptor 3. The shell's own output goes
/// to /dev/null: once the test process is gone, a write to the pipe (the shell reports the
/// killed job) would end the shell by SIGPIPE before it removes the directory. A server that
/// exits by itself leaves the wrapper waiting for that line or end of file all the same.
const WRAPPER: &str = r#"
data=$1
shift
exec 2>&1 3<&0
"$@" </dev/null 3<&- &
server=$!
{ read -r order <&3; kill -KILL "$server"; [ "$order" = keep ]; } </dev/null >/dev/null 2>&1 &
watcher=$!
exec 3<&- >/dev/null 2>&1
wait "$server"
status=$?
wait "$watcher" || rm -rf "$data"
exit "$status"
"#;

/// The two brokers the bus backends speak to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BrokerKind {
    /// Redis (`redis-server`).
    Redis,
    /// NATS with JetStream (`nats-server -js`).
    Nats,
}

impl BrokerKind {
    /// The URL scheme, which is also the name `bus.backend` takes.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
    }

    /// The server's binary, and the Debian package that installs it.
    pub fn program(self) -> &'static str {
        match self {
            Self::Redis => "redis-server",
            Self::Nats => "nats-server",
        }
    }

    /// The variable naming a running server to use instead of starting one.
    pub fn url_variable(self) -> &'static str {
        match self {
            Self::Redis => "REDIS_URL",
            Self::Nats => "NATS_URL",
        }
    }

    /// The variable naming the server's binary.
    pub fn program_variable(self) -> &'static str {
        match self {
            Self::Redis => "REDIS_SERVER",
            Self::Nats => "NATS_SERVER",
        }
    }

    /// The URL of this broker on 127.0.0.1:`port`.
    pub fn url_on(self, port: u16) -> String {
        format!("{}://127.0.0.1:{port}", self.scheme())
    }

    fn title(self) -> &'static str {
        match self {
            Self::Redis => "Redis",
            Self::Nats => "NATS with JetStream",
        }
    }

    /// The line the server logs once it accepts connections (and, for NATS, once JetStream
    /// is on: it is enabled before the client listener opens).
    fn ready_line(self) -> &'static str {
        match self {
            Self::Redis => "Ready to accept connections",
            Self::Nats => "Server is ready",
        }
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// The URL of the broker the tests of this test binary share: the broker's URL variable
/// (`REDIS_URL`, `NATS_URL`) if set, else a server started on the first call, which lives as
/// long as the test binary. Tests sharing it must keep to a key prefix or a stream of their
/// own.
///
/// # Panics
/// When the variable is not set and no server can be started (no binary: a message naming
/// the package to install and the variable to set). A failed start is remembered: every later
/// call fails at once with the same message.
#[track_caller]
pub fn shared_url(broker: BrokerKind) -> String {
    if let Some(url) = url_from_environment(broker) {
        return url;
    }
    static REDIS: OnceLock<Result<BrokerServer, String>> = OnceLock::new();
    static NATS: OnceLock<Result<BrokerServer, String>> = OnceLock::new();
    let shared = match broker {
        BrokerKind::Redis => &REDIS,
        BrokerKind::Nats => &NATS,
    };
    let started = shared.get_or_init(|| {
        let mut builder = BrokerServer::builder(broker);
        builder.for_the_whole_binary = true;
        builder.try_start()
    });
    match started {
        Ok(server) => server.url(),
        Err(message) => panic!("{message}"),
    }
}

/// [`shared_url`] of Redis.
#[track_caller]
pub fn redis_url() -> String {
    shared_url(BrokerKind::Redis)
}

/// [`shared_url`] of NATS.
#[track_caller]
pub fn nats_url() -> String {
    shared_url(BrokerKind::Nats)
}

fn url_from_environment(broker: BrokerKind) -> Option<String> {
    std::env::var(broker.url_variable())
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// How to start a [`BrokerServer`]: [`BrokerServer::builder`].
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    broker: BrokerKind,
    durable: bool,
    port: Option<u16>,
    program: Option<PathBuf>,
    /// The per-binary server of [`shared_url`] (for the messages).
    for_the_whole_binary: bool,
}

impl ServerBuilder {
    /// Every acknowledged write survives a SIGKILL: Redis with `appendonly yes` and
    /// `appendfsync always`. NATS always keeps JetStream on files in the data directory.
    /// Default: off (Redis keeps nothing on disk).
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// Listens on `port` (default: a free one), e.g. where a node was told a broker would be.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The server's binary (default: the broker's program variable, else the search
    /// described in the crate documentation).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Panics
    /// With the message of [`ServerBuilder::try_start`].
    #[track_caller]
    pub fn start(self) -> BrokerServer {
        match self.try_start() {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Errors
    /// What is missing or went wrong, for a person: no binary (with the package to install),
    /// a server that exited or did not answer within [`START_TIMEOUT`] (with its output).
    pub fn try_start(self) -> Result<BrokerServer, String> {
        let program = match self.program.clone() {
            Some(program) => program,
            None => {
                let find = || {
                    find_program(
                        self.broker,
                        std::env::var_os(self.broker.program_variable()),
                        std::env::var_os("PATH"),
                    )
                };
                find()
                    .or_else(|missing| {
                        install_debian_packages().map_err(|why| format!("{missing} ({why})"))?;
                        find()
                    })
                    .map_err(|missing| self.missing_message(&missing))?
            }
        };
        if !program.is_file() {
            return Err(self.missing_message(&format!("{} is not a file", program.display())));
        }
        let dir = data_directory(self.broker)
            .map_err(|e| format!("cannot create a data directory for {}: {e}", self.broker))?;
        let mut server = BrokerServer {
            broker: self.broker,
            durable: self.durable,
            port: self.port,
            program,
            dir,
            process: None,
            output: Arc::default(),
        };
        let attempts = match (self.broker, self.port) {
            (BrokerKind::Redis, None) => PORT_ATTEMPTS,
            _ => 1,
        };
        for attempt in 1..=attempts {
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(failure) if failure.port_taken && attempt < attempts => server.port = None,
                Err(failure) => return Err(failure.message),
            }
        }
        unreachable!("the last attempt returns")
    }

    fn missing_message(&self, missing: &str) -> String {
        let broker = self.broker;
        let program = broker.program();
        let install = format!("Install it (Debian, Ubuntu: `apt-get install {program}`)");
        if self.for_the_whole_binary {
            format!(
                "these tests need {broker}: {missing}, and {} is not set. {install} and the \
                 tests start their own on free ports, or set {} (e.g. {}) to use a running server",
                broker.url_variable(),
                broker.url_variable(),
                broker.url_on(match broker {
                    BrokerKind::Redis => 6379,
                    BrokerKind::Nats => 4222,
                }),
            )
        } else {
            format!(
                "this test runs a {program} of its own (to kill, restart or start it late; {} \
                 cannot stand in): {missing}. {install}, or set {} to its path",
                broker.url_variable(),
                broker.program_variable(),
            )
        }
    }
}

/// The Debian packages every broker test of the workspace needs.
const DEBIAN_PACKAGES: [&str; 2] = ["redis-server", "nats-server"];

/// Installs [`DEBIAN_PACKAGES`] with apt-get, so that `cargo test --workspace` passes on a
/// fresh Debian machine with only Rust on it: done only as root, where apt-get exists, and
/// unless `STREAMGATE_TEST_INSTALL=0`. Test binaries run in parallel, so one file lock
/// serializes them and the first one installs; the others find the binaries afterwards.
///
/// # Errors
/// Why nothing was installed, for the failure message.
fn install_debian_packages() -> Result<(), String> {
    if std::env::var_os("STREAMGATE_TEST_INSTALL").is_some_and(|value| value == "0") {
        return Err("STREAMGATE_TEST_INSTALL=0: not installing it".to_owned());
    }
    let apt_get = Path::new("/usr/bin/apt-get");
    if !apt_get.is_file() {
        return Err("no apt-get to install it with".to_owned());
    }
    if !running_as_root() {
        return Err("not root, so not installing it".to_owned());
    }
    let lock_path = std::env::temp_dir().join("streamgate-test-brokers-install.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let installed = |program: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(SBIN_DIRECTORIES.iter().map(PathBuf::from))
            .any(|directory| directory.join(program).is_file())
    };
    if installed("redis-server") && installed("nats-server") {
        return Ok(());
    }
    eprintln!(
        "streamgate-test-brokers: installing the Debian packages {} for the broker tests \
         (STREAMGATE_TEST_INSTALL=0 to not)",
        DEBIAN_PACKAGES.join(" ")
    );
    let apt = |arguments: &[&str]| {
        Command::new(apt_get)
            .args(arguments)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(DEBIAN_PACKAGES);
    // A fresh machine has no package lists yet: update only when the install needs it.
    if apt(&install) || (apt(&["update", "-qq"]) && apt(&install)) {
        Ok(())
    } else {
        Err(format!(
            "`apt-get install {}` failed",
            DEBIAN_PACKAGES.join(" ")
        ))
    }
}

/// Whether this process runs with effective user id 0 (the `Uid:` line of
/// /proc/self/status: real, effective, saved, filesystem).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The server's binary: `variable` (the broker's program variable) if set, else the first
/// `program` on `path`, then in the sbin directories.
fn find_program(
    broker: BrokerKind,
    variable: Option<OsString>,
    path: Option<OsString>,
) -> Result<PathBuf, String> {
    if let Some(program) = variable.filter(|program| !program.is_empty()) {
        let program = PathBuf::from(program);
        return if program.is_file() {
            Ok(program)
        } else {
            Err(format!(
                "{}={} is not a file",
                broker.program_variable(),
                program.display()
            ))
        };
    }
    let path = path.unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRECTORIES.iter().map(PathBuf::from))
        .map(|directory| directory.join(broker.program()))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "no `{}` on PATH nor in {}",
                broker.program(),
                SBIN_DIRECTORIES.join(", "),
            )
        })
}

/// A fresh directory under the temporary directory, unique to this process and call.
fn data_directory(broker: BrokerKind) -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "streamgate-test-{}-{}-{}-{nanos:08x}",
        broker.program(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    ));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// A Redis or NATS server of a test's own, on 127.0.0.1, killed when dropped (its data
/// directory removed with it). [`BrokerServer::kill`] and [`BrokerServer::restart`] keep the
/// port and the data.
#[derive(Debug)]
pub struct BrokerServer {
    broker: BrokerKind,
    durable: bool,
    /// Known once the server first listened (NATS picks its own when none was asked for).
    port: Option<u16>,
    program: PathBuf,
    dir: PathBuf,
    process: Option<ServerProcess>,
    /// Everything it printed, all runs together (the newest [`OUTPUT_LIMIT`] bytes).
    output: Arc<Mutex<String>>,
}

impl BrokerServer {
    /// How to start one: a volatile server on a free port unless told otherwise.
    pub fn builder(broker: BrokerKind) -> ServerBuilder {
        ServerBuilder {
            broker,
            durable: false,
            port: None,
            program: None,
            for_the_whole_binary: false,
        }
    }

    /// A server on a free port, keeping nothing on disk that must survive it.
    ///
    /// # Panics
    /// When it cannot be started: see [`ServerBuilder::try_start`].
    #[track_caller]
    pub fn start(broker: BrokerKind) -> Self {
        Self::builder(broker).start()
    }

    /// A server on a free port whose acknowledged writes survive [`BrokerServer::kill`]
    /// ([`ServerBuilder::durable`]).
    ///
    /// # Panics
    /// When it cannot be started: see [`ServerBuilder::try_start`].
    #[track_caller]
    pub fn start_durable(broker: BrokerKind) -> Self {
        Self::builder(broker).durable().start()
    }

    /// Which broker this is.
    pub fn broker(&self) -> BrokerKind {
        self.broker
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port.expect("a started server has a port")
    }

    /// `redis://127.0.0.1:<port>` or `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.broker.url_on(self.port())
    }

    /// Whether it runs (it was not killed since its last start).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the server with SIGKILL (no shutdown, nothing flushed that it had not written)
    /// and waits until it is gone. Nothing happens if it is not running.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop(DataDirectory::Keep);
        }
    }

    /// Starts the server again on the same port and data directory, and waits until it
    /// answers.
    ///
    /// # Panics
    /// If it runs, or does not come back (with its output).
    #[track_caller]
    pub fn restart(&mut self) {
        assert!(
            self.process.is_none(),
            "the {} server is running",
            self.broker
        );
        if let Err(failure) = self.launch() {
            panic!("{}", failure.message);
        }
    }

    /// What the server printed, all its runs together (the newest 64 KiB).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn arguments(&self, port: Option<u16>) -> Vec<OsString> {
        let dir = self.dir.as_os_str().to_owned();
        let mut arguments: Vec<OsString> = Vec::new();
        match self.broker {
            BrokerKind::Redis => {
                let port = port.expect("Redis is given its port");
                arguments.extend(
                    ["--port", &port.to_string(), "--bind", "127.0.0.1"].map(OsString::from),
                );
                arguments.extend(["--dir".into(), dir]);
                arguments.extend(["--daemonize", "no", "--save", ""].map(OsString::from));
                let appendonly: &[&str] = if self.durable {
                    &["--appendonly", "yes", "--appendfsync", "always"]
                } else {
                    &["--appendonly", "no"]
                };
                arguments.extend(appendonly.iter().map(OsString::from));
            }
            BrokerKind::Nats => {
                arguments.extend(["-js".into(), "-sd".into(), dir]);
                // -1: the server takes a free port itself and logs which.
                let port = port.map_or_else(|| "-1".to_owned(), |port| port.to_string());
                arguments.extend(["-a", "127.0.0.1", "-p", &port].map(OsString::from));
            }
        }
        arguments
    }

    /// Starts the server process and waits until it answers on its port.
    fn launch(&mut self) -> Result<(), LaunchFailure> {
        let port = match (self.broker, self.port) {
            (BrokerKind::Redis, None) => Some(free_port().map_err(|e| LaunchFailure {
                message: format!("no free port on 127.0.0.1: {e}"),
                port_taken: false,
            })?),
            (_, port) => port,
        };
        // A failed attempt's wrapper removed it.
        std::fs::create_dir_all(&self.dir).map_err(|e| LaunchFailure {
            message: format!("cannot create {}: {e}", self.dir.display()),
            port_taken: false,
        })?;
        let (process, lines) = ServerProcess::spawn(
            &self.program,
            &self.arguments(port),
            &self.dir,
            &self.output,
        )
        .map_err(|e| LaunchFailure {
            message: format!(
                "cannot start {}: {e} (it runs under `sh`, which must be on PATH)",
                self.program.display()
            ),
            port_taken: false,
        })?;
        let started = Instant::now();
        let outcome = self.wait_until_ready(port, &lines, started + START_TIMEOUT);
        match outcome {
            Ok(port) => {
                self.port = Some(port);
                self.process = Some(process);
                Ok(())
            }
            Err(problem) => {
                let status = process.stop(DataDirectory::Remove);
                let output = self.output();
                let port_taken = output
                    .to_ascii_lowercase()
                    .contains("address already in use");
                Err(LaunchFailure {
                    message: format!(
                        "{} ({}) {problem} after {:?}; exit status {}; its output:\n{output}",
                        self.broker,
                        self.program.display(),
                        started.elapsed(),
                        status.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                    ),
                    port_taken,
                })
            }
        }
    }

    /// Waits for the server's ready line, then checks that it answers `PING`. Returns the
    /// port it listens on.
    fn wait_until_ready(
        &self,
        mut port: Option<u16>,
        lines: &Receiver<String>,
        deadline: Instant,
    ) -> Result<u16, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(listening) = nats_client_port(&line) {
                        port = Some(listening);
                    }
                    if line.contains(self.broker.ready_line()) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "did not log {:?} within {START_TIMEOUT:?}",
                        self.broker.ready_line()
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("exited before it was ready".to_owned())
                }
            }
        }
        let port = port.ok_or("logged no client port")?;
        answer_ping(self.broker, port).map_err(|e| format!("does not answer PING: {e}"))?;
        Ok(port)
    }
}

impl Drop for BrokerServer {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop(DataDirectory::Remove);
        }
        // Also when the server was killed, and the wrapper told to keep it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug)]
struct LaunchFailure {
    message: String,
    /// The server could not bind its port: another one may do.
    port_taken: bool,
}

/// `Listening for client connections on 127.0.0.1:<port>` in a nats-server log line.
fn nats_client_port(line: &str) -> Option<u16> {
    let (_, address) = line.split_once("Listening for client connections on ")?;
    address.trim().rsplit(':').next()?.parse().ok()
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One exchange on the broker's protocol: Redis `PING` → `+PONG`; NATS `INFO`, then
/// `CONNECT` and `PING` → `PONG`.
fn answer_ping(broker: BrokerKind, port: u16) -> std::io::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&address, HANDSHAKE_TIMEOUT)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut read_line = || -> std::io::Result<String> {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        Ok(line.trim_end().to_owned())
    };
    let unexpected = |line: String| std::io::Error::other(format!("unexpected reply {line:?}"));
    match broker {
        BrokerKind::Redis => {
            writer.write_all(b"PING\r\n")?;
            let line = read_line()?;
            if line != "+PONG" {
                return Err(unexpected(line));
            }
        }
        BrokerKind::Nats => {
            let info = read_line()?;
            if !info.starts_with("INFO ") {
                return Err(unexpected(info));
            }
            writer.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")?;
            loop {
                match read_line()? {
                    line if line == "PONG" => break,
                    line if line == "+OK" || line.starts_with("INFO ") => {}
                    line => return Err(unexpected(line)),
                }
            }
        }
    }
    Ok(())
}

/// The wrapper shell and the server under it.
#[derive(Debug)]
struct ServerProcess {
    shell: Child,
    /// The pipe whose line or end of file tells the wrapper to kill the server.
    lifeline: Option<ChildStdin>,
}

/// What the wrapper does with the data directory once it killed the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataDirectory {
    /// For a restart.
    Keep,
    Remove,
}

impl ServerProcess {
    /// Starts `program` under the wrapper. Every line it prints is added to `output` and sent
    /// on the returned channel, which closes when the server and the wrapper are gone.
    fn spawn(
        program: &Path,
        arguments: &[OsString],
        data_directory: &Path,
        output: &Arc<Mutex<String>>,
    ) -> std::io::Result<(Self, Receiver<String>)> {
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("streamgate-test-broker")
            .arg(data_directory)
            .arg(program)
            .args(arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let lifeline = shell.stdin.take();
        let stdout = shell.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        let kept = Arc::clone(output);
        std::thread::Builder::new()
            .name(format!(
                "{} output",
                program.file_name().unwrap_or_default().to_string_lossy()
            ))
            .spawn(move || forward_lines(stdout, &kept, &sender))?;
        Ok((Self { shell, lifeline }, lines))
    }

    /// Has the wrapper kill the server, and waits for both.
    fn stop(mut self, data: DataDirectory) -> Option<ExitStatus> {
        if let Some(mut lifeline) = self.lifeline.take() {
            if data == DataDirectory::Keep {
                // If the write fails, the wrapper is gone already.
                let _ = lifeline.write_all(b"keep\n");
            }
        }
        self.shell.wait().ok()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.lifeline.take().is_some() {
            let _ = self.shell.wait();
        }
    }
}

fn forward_lines(stdout: impl Read, output: &Mutex<String>, lines: &mpsc::Sender<String>) {
    for line in BufReader::new(stdout).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).into_owned();
        if let Ok(mut output) = output.lock() {
            if output.len() > OUTPUT_LIMIT {
                let cut = output.len() - OUTPUT_LIMIT / 2;
                let cut = (cut..output.len())
                    .find(|&i| output.is_char_boundary(i))
                    .unwrap_or(0);
                output.drain(..cut);
            }
            output.push_str(&line);
            output.push('\n');
        }
        // Nobody listens once the server is ready; its output is still kept.
        let _ = lines.send(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_variable_wins_and_must_name_a_file() {
        let found = find_program(
            BrokerKind::Redis,
            Some("/bin/sh".into()),
            Some("/nowhere".into()),
        );
        assert_eq!(found, Ok(PathBuf::from("/bin/sh")));
        let error = find_program(BrokerKind::Nats, Some("/nowhere/nats".into()), None).unwrap_err();
        assert!(error.contains("NATS_SERVER=/nowhere/nats"), "{error}");
    }

    #[test]
    fn a_missing_program_names_the_package_and_the_variables() {
        let started = Instant::now();
        let error = BrokerServer::builder(BrokerKind::Redis)
            .program("/nowhere/redis-server")
            .try_start()
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(error.contains("apt-get install redis-server"), "{error}");
        assert!(error.contains("REDIS_SERVER"), "{error}");
        let mut shared = BrokerServer::builder(BrokerKind::Nats).program("/nowhere/nats-server");
        shared.for_the_whole_binary = true;
        let error = shared.try_start().unwrap_err();
        assert!(error.contains("apt-get install nats-server"), "{error}");
        assert!(
            error.contains("NATS_URL (e.g. nats://127.0.0.1:4222)"),
            "{error}"
        );
    }

    #[test]
    fn the_nats_port_comes_from_its_log() {
        let line = "[7] 2026/12/07 19:13:40.322197 [INF] Listening for client connections on \
                    127.0.0.1:40605";
        assert_eq!(nats_client_port(line), Some(40605));
        assert_eq!(nats_client_port("[INF] Server is ready"), None);
    }
}
