//! Helpers for running the example clients as real processes against a gateway in this
//! process: spawning a client and reading its output, publishing on the gateway's bus, and a
//! TCP proxy that can cut connections. Every wait is bounded by [`WAIT`]; a test that would
//! hang fails instead, naming what it waited for and showing the client's stderr.
//!
//! [`cluster`] runs `streamgate serve` processes and brokers for `tests/cluster.rs`.
#![allow(dead_code, unreachable_pub)]

pub mod cluster;

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamgate::config::GatewayConfig;
use streamgate_core::{ContentType, Event, Topic};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use streamgate::testkit::TestGateway;

/// Upper bound of every wait. Generous: it only matters when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

/// The four clients, by binary name.
pub const WS: &str = env!("CARGO_BIN_EXE_ws_client");
pub const SSE: &str = env!("CARGO_BIN_EXE_sse_client");
pub const POLL: &str = env!("CARGO_BIN_EXE_poll_client");
pub const WT: &str = env!("CARGO_BIN_EXE_wt_client");

/// A gateway without the demo source (only the test publishes) and without HTTPS; its
/// WebTransport listener stays on.
pub fn quiet() -> GatewayConfig {
    TestGateway::quiet_config()
}

/// Publishes one event straight on the bus.
pub async fn publish(
    gateway: &TestGateway,
    topic: &str,
    content_type: ContentType,
    payload: impl Into<Bytes>,
) -> Arc<Event> {
    gateway.publish(topic, content_type, payload).await
}

/// The bus's current subscriber count of `topic`.
pub async fn subscribers(gateway: &TestGateway, topic: &str) -> usize {
    let topic = Topic::new(topic).expect("valid topic");
    gateway
        .app
        .bus
        .topic_stats()
        .await
        .iter()
        .find(|t| t.topic == topic)
        .map_or(0, |t| t.subscribers)
}

/// A client process, its stdout read line by line and its stderr collected in the background.
pub struct Client {
    name: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Everything printed on stderr so far, updated as lines arrive.
    stderr: watch::Receiver<String>,
    stderr_reader: JoinHandle<()>,
    /// Every stdout line read so far.
    pub lines: Vec<String>,
    /// [`Client::fail`] already showed the output.
    reported: bool,
}

/// How a client process ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Every line it printed on stdout.
    pub lines: Vec<String>,
    pub stderr: String,
}

impl Client {
    /// Starts `binary` against `gateway_url` with `args`.
    pub fn spawn(binary: &str, gateway_url: &str, args: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .arg("--gateway")
            .arg(gateway_url)
            .args(args)
            .env_remove("STREAMGATE_GATEWAY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr_lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (stderr_text, stderr) = watch::channel(String::new());
        let stderr_reader = tokio::spawn(async move {
            while let Ok(Some(line)) = stderr_lines.next_line().await {
                stderr_text.send_modify(|text| {
                    text.push_str(&line);
                    text.push('\n');
                });
            }
        });
        let name = std::path::Path::new(binary)
            .file_name()
            .map_or(binary.to_owned(), |n| n.to_string_lossy().into_owned());
        Self {
            name,
            child,
            stdout,
            stderr,
            stderr_reader,
            lines: Vec::new(),
            reported: false,
        }
    }

    /// Starts `binary` against `gateway` (its HTTP listener).
    pub fn start(binary: &str, gateway: &TestGateway, args: &[&str]) -> Self {
        Self::spawn(binary, &format!("http://{}", gateway.addr), args)
    }

    /// The next stdout line.
    pub async fn next_line(&mut self) -> String {
        match tokio::time::timeout(WAIT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => {
                self.lines.push(line.clone());
                line
            }
            Ok(_) => self.fail("stdout ended").await,
            Err(_) => self.fail("timed out waiting for a line").await,
        }
    }

    /// Waits until the gateway counts a subscriber of `topic`: the client is subscribed.
    pub async fn wait_until_subscribed(&mut self, gateway: &TestGateway, topic: &str) {
        let subscribed = async {
            loop {
                if subscribers(gateway, topic).await > 0 {
                    return true;
                }
                if self.child.try_wait().ok().flatten().is_some() {
                    return false;
                }
                // The bus has no notification for a subscriber count; look again shortly.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        match tokio::time::timeout(WAIT, subscribed).await {
            Ok(true) => {}
            Ok(false) => self.fail("exited before subscribing").await,
            Err(_) => self.fail("never subscribed").await,
        }
    }

    /// Everything the client printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.borrow().clone()
    }

    /// Kills the process (SIGKILL) and reads what it had printed on stdout before it died.
    pub async fn kill_and_finish(mut self) -> Finished {
        let _ = self.child.start_kill();
        self.finish_within("did not die after SIGKILL").await
    }

    /// Waits until the client has printed `needle` on stderr.
    pub async fn wait_for_stderr(&mut self, needle: &str) {
        let mut stderr = self.stderr.clone();
        let seen = tokio::time::timeout(WAIT, stderr.wait_for(|text| text.contains(needle))).await;
        if !matches!(seen, Ok(Ok(_))) {
            self.fail(&format!("never printed {needle:?} on stderr"))
                .await;
        }
    }

    /// Waits for the process to exit on its own and reads everything it printed.
    pub async fn finish(self) -> Finished {
        self.finish_within("did not exit").await
    }

    async fn finish_within(mut self, timed_out: &str) -> Finished {
        let rest = async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                self.lines.push(line);
            }
            self.child.wait().await
        };
        match tokio::time::timeout(WAIT, rest).await {
            Ok(Ok(status)) => {
                // The process is gone, so its stderr pipe ends and the reader with it.
                let _ = tokio::time::timeout(WAIT, &mut self.stderr_reader).await;
                Finished {
                    status,
                    stderr: self.stderr.borrow().clone(),
                    lines: std::mem::take(&mut self.lines),
                }
            }
            Ok(Err(e)) => self.fail(&format!("wait failed: {e}")).await,
            Err(_) => self.fail(timed_out).await,
        }
    }

    /// Kills the process and fails the test, showing what it printed.
    async fn fail(&mut self, what: &str) -> ! {
        self.reported = true;
        let _ = self.child.kill().await;
        let _ = tokio::time::timeout(WAIT, &mut self.stderr_reader).await;
        let stderr = self.stderr.borrow().clone();
        panic!(
            "{}: {what}\n--- stdout so far\n{}\n--- stderr\n{stderr}",
            self.name,
            self.lines.join("\n")
        );
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // A test failing over something else (another client, a gateway) shows what this
        // client had printed as well.
        if std::thread::panicking() && !self.reported {
            eprintln!(
                "--- {} when the test failed\nstdout:\n{}\nstderr:\n{}",
                self.name,
                self.lines.join("\n"),
                *self.stderr.borrow()
            );
        }
    }
}

impl Finished {
    /// Asserts a clean exit (status 0) with exactly `expected` on stdout, in order.
    pub fn assert_printed(&self, expected: &[String]) {
        assert!(self.status.success(), "{}: {self:#?}", self.status);
        assert_eq!(self.lines, expected, "stderr:\n{}", self.stderr);
    }
}

/// A TCP proxy in front of the gateway that can cut every connection and hold new ones back,
/// to make a client lose its connection at a moment the test chooses.
pub struct Proxy {
    pub addr: SocketAddr,
    state: watch::Sender<ProxyState>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ProxyState {
    /// New connections wait (accepted, not forwarded) while this is set.
    paused: bool,
    /// Bumped by each cut; a connection forwarded under an older generation is closed.
    generation: u64,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (state, _) = watch::channel(ProxyState::default());
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let state = state.clone();
            let accepted = Arc::clone(&accepted);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(forward(client, upstream, state.subscribe()));
                }
            }
        });
        Self {
            addr,
            state,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every forwarded connection, and holds new ones until [`Proxy::resume`].
    pub fn cut_and_hold(&self) {
        self.state.send_modify(|s| {
            s.paused = true;
            s.generation += 1;
        });
    }

    /// Forwards held and new connections again.
    pub fn resume(&self) {
        self.state.send_modify(|s| s.paused = false);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<ProxyState>,
) {
    let generation = match state.wait_for(|s| !s.paused).await {
        Ok(s) => s.generation,
        Err(_) => return,
    };
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = state.wait_for(|s| s.generation != generation) => {}
    }
}
