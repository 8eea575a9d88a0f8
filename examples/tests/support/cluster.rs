//! Real `streamgate serve` processes sharing one broker, for `tests/cluster.rs`.
//!
//! - [`Backend`]: Redis or NATS, and the broker the tests of one binary share (`REDIS_URL`,
//!   `NATS_URL`, else a server the binary starts for itself), or a broker of one test's own,
//!   which the test kills and restarts (`streamgate-test-brokers` runs both).
//! - [`Cluster`]: one test's log (a random Redis key prefix, or a random NATS stream and
//!   subject prefix), the nodes running on it, and the cleanup when it is dropped, also after a
//!   failed assertion: nodes killed, the log deleted from the broker, the test's own broker
//!   stopped, its files removed.
//! - [`Node`]: one gateway process. Its addresses come from its own log lines (every node
//!   listens on port 0), and its HTTP API is reached with [`request`], a plain HTTP/1.1
//!   exchange.
//!
//! Every wait is bounded. A node that fails shows its log: the panic message includes it, and
//! a node dropped while a test panics prints it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use streamgate_client::h1::{self, BodyFraming, ChunkedDecoder, ResponseHead};
use streamgate_test_brokers::{shared_url, BrokerKind, BrokerServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::WAIT;

/// Upper bound of waiting for a node's broker link to change state. A node retries its
/// broker with a backoff that grows to 5 s between attempts, so this is generous.
pub const HEALTH_WAIT: Duration = Duration::from_secs(20);

/// The `streamgate` binary: `STREAMGATE_BIN` if set, else the one beside the example
/// clients, in the same target directory.
///
/// # Panics
/// When it has not been built: `cargo test -p streamgate-examples` does not build another
/// package's binaries (`cargo test --workspace` does).
pub fn streamgate_binary() -> PathBuf {
    let binary = match std::env::var_os("STREAMGATE_BIN") {
        Some(binary) => PathBuf::from(binary),
        None => Path::new(env!("CARGO_BIN_EXE_ws_client"))
            .parent()
            .expect("the client binaries' directory")
            .join(format!("streamgate{}", std::env::consts::EXE_SUFFIX)),
    };
    assert!(
        binary.is_file(),
        "{} is missing: these tests run the gateway as a real process. Build it first with \
         `cargo build -p streamgate` (same profile and CARGO_TARGET_DIR as the tests), or run \
         `cargo test --workspace`, which builds it",
        binary.display()
    );
    binary
}

/// A free TCP port on 127.0.0.1 (free when this returns; nothing holds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A free UDP port on 127.0.0.1 (free when this returns; nothing holds it).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free UDP port")
        .port()
}

fn random_token() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

// ---------------------------------------------------------------------------------------------
// Brokers

/// The broker backends, and the two ways Redis carries events to the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Redis, events fanned out with Pub/Sub (`bus.redis.fanout = "pubsub"`, the default).
    Redis,
    /// Redis, events read by every node with a blocking `XREAD` (`fanout = "xread"`).
    RedisXread,
    /// NATS JetStream.
    Nats,
}

impl Backend {
    /// The name `bus.backend` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis | Self::RedisXread => "redis",
            Self::Nats => "nats",
        }
    }

    /// The name in test output.
    pub fn label(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::RedisXread => "redis xread",
            Self::Nats => "nats",
        }
    }

    /// The broker server this backend runs on.
    pub fn broker(self) -> BrokerKind {
        match self {
            Self::Redis | Self::RedisXread => BrokerKind::Redis,
            Self::Nats => BrokerKind::Nats,
        }
    }

    /// The broker the tests of this binary share: `REDIS_URL` / `NATS_URL`, else a server
    /// this test binary starts on first use.
    pub fn shared_url(self) -> String {
        shared_url(self.broker())
    }

    /// The URL of a broker on 127.0.0.1:`port`.
    pub fn url_on(self, port: u16) -> String {
        self.broker().url_on(port)
    }

    /// A broker of one test's own on `port`, whose acknowledged writes survive a kill (Redis
    /// with `appendonly yes` and `appendfsync always`, NATS with JetStream file storage).
    fn own_broker_on(self, port: u16) -> BrokerServer {
        BrokerServer::builder(self.broker())
            .durable()
            .port(port)
            .start()
    }
}

// ---------------------------------------------------------------------------------------------
// A cluster: one log, its nodes, its cleanup

/// One test's nodes on one log. Dropping it kills the nodes, deletes the log from the broker
/// (Redis keys under the prefix, or the NATS stream), stops the test's own broker and
/// removes the test's files.
pub struct Cluster {
    pub backend: Backend,
    /// The broker URL the nodes use.
    url: String,
    /// Random: the Redis key prefix, the NATS stream name and subject prefix derive from it.
    token: String,
    dir: PathBuf,
    /// The test's own broker, if it has one (else the shared one, or none yet).
    pub broker: Option<BrokerServer>,
    pub nodes: Vec<Node>,
}

impl Cluster {
    fn new(backend: Backend, url: String) -> Self {
        let token = random_token();
        let dir = std::env::temp_dir().join(format!("streamgate-cluster-{token}"));
        std::fs::create_dir_all(&dir).expect("the test's directory");
        Self {
            backend,
            url,
            token,
            dir,
            broker: None,
            nodes: Vec::new(),
        }
    }

    /// A log of its own on the broker the tests share.
    pub fn on_shared_broker(backend: Backend) -> Self {
        Self::new(backend, backend.shared_url())
    }

    /// A broker of its own, started now on a free port.
    pub fn with_own_broker(backend: Backend) -> Self {
        let mut cluster = Self::new(backend, String::new());
        let broker = backend.own_broker_on(free_port());
        cluster.url = broker.url();
        cluster.broker = Some(broker);
        cluster
    }

    /// Nodes pointed at a free port where no broker listens yet; [`Cluster::start_broker`]
    /// starts one there.
    pub fn with_broker_missing(backend: Backend) -> Self {
        Self::new(backend, backend.url_on(free_port()))
    }

    /// The broker URL the nodes use.
    pub fn broker_url(&self) -> &str {
        &self.url
    }

    /// Starts the test's own broker on the port of [`Cluster::broker_url`].
    pub fn start_broker(&mut self) {
        let port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port in the broker URL");
        self.broker = Some(self.backend.own_broker_on(port));
    }

    /// The test's own broker.
    pub fn own_broker(&mut self) -> &mut BrokerServer {
        self.broker
            .as_mut()
            .expect("this cluster has no broker of its own")
    }

    /// Starts a node named `name` and waits until it listens (not until it reached the
    /// broker: see [`Cluster::wait_until_available`]). Returns its index in `nodes`.
    pub async fn start_node(&mut self, name: &str) -> usize {
        self.start_node_with(name, &NodeOptions::default()).await
    }

    /// [`Cluster::start_node`] with `options` in its configuration.
    pub async fn start_node_with(&mut self, name: &str, options: &NodeOptions) -> usize {
        let config = self.dir.join(format!("node-{name}.toml"));
        std::fs::write(&config, self.node_config(options)).expect("write the node's configuration");
        self.nodes.push(Node::start(name, &config).await);
        self.nodes.len() - 1
    }

    /// Kills node `index` (SIGKILL, as a crash) and starts it again on its configuration, so
    /// on the same addresses if it was given fixed ones ([`NodeOptions::http`]).
    pub async fn restart_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.kill();
        let (name, config) = (node.name.clone(), node.config.clone());
        *node = Node::start(&name, &config).await;
    }

    /// Waits until every running node reports its broker reachable (`/healthz` 200).
    pub async fn wait_until_available(&self) {
        for node in &self.nodes {
            node.wait_health(true).await;
        }
    }

    /// Waits until every running node reports its broker unreachable (`/healthz` 503).
    pub async fn wait_until_unavailable(&self) {
        for node in &self.nodes {
            node.wait_health(false).await;
        }
    }

    /// A node's configuration: HTTP and WebTransport on ephemeral ports (or `options`'),
    /// no HTTPS, no demo source, no lab, a short SSE `retry:`, and this test's log on the
    /// broker.
    fn node_config(&self, options: &NodeOptions) -> String {
        let token = &self.token;
        let url = &self.url;
        let bus = match self.backend {
            Backend::Redis => {
                format!("[bus.redis]\nurl = {url:?}\nprefix = \"sgcluster-{token}\"\n")
            }
            Backend::RedisXread => format!(
                "[bus.redis]\nurl = {url:?}\nprefix = \"sgcluster-{token}\"\nfanout = \"xread\"\n"
            ),
            Backend::Nats => format!(
                "[bus.nats]\nurl = {url:?}\nstream = \"SGCLUSTER_{token}\"\n\
                 subject_prefix = \"sgcluster_{token}\"\n"
            ),
        };
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        format!(
            "# A node of a tests/cluster.rs or tests/soak.rs test.\n\
             [server]\nlisten = \"{}\"\nshutdown_grace = 1\n{}\n\
             [tls]\nenabled = false\n\n\
             [webtransport]\nlisten = \"{}\"\n\n\
             [demo]\nenabled = false\n\n\
             [lab]\nenabled = false\n\n\
             [sse]\nretry = 0.2\n\n\
             [bus]\nbackend = \"{}\"\nhistory_events = {}\n\n{bus}",
            options.http.unwrap_or(any_port),
            options.server_settings,
            options.webtransport.unwrap_or(any_port),
            self.backend.name(),
            options.history_events.unwrap_or(1000),
        )
    }

    /// Deletes this test's log from the broker, if the broker can be reached. Best effort:
    /// a broker that is down (or was the test's own, about to be removed) keeps nothing.
    fn delete_log(&self) {
        match self.backend {
            Backend::Redis | Backend::RedisXread => {
                let _ = redis_delete_prefix(&self.url, &format!("sgcluster-{}", self.token));
            }
            Backend::Nats => nats_delete_stream(&self.url, &format!("SGCLUSTER_{}", self.token)),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nodes first: a node still running would recreate the log it follows.
        self.nodes.clear();
        self.delete_log();
        self.broker = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes every key under `prefix:` with one Lua script, over a bare RESP connection.
fn redis_delete_prefix(url: &str, prefix: &str) -> std::io::Result<()> {
    // redis://[user:password@]host:port[/db]: credentials and database are not supported here.
    let authority = url.trim_start_matches("redis://");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let authority = authority.split('/').next().unwrap_or(authority);
    let address = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut redis = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    redis.set_read_timeout(Some(Duration::from_secs(5)))?;
    let script = "local n = 0 \
                  for _, key in ipairs(redis.call('KEYS', ARGV[1])) do \
                  n = n + redis.call('DEL', key) end return n";
    let pattern = format!("{prefix}:*");
    let mut command = String::from("*4\r\n");
    for arg in ["EVAL", script, "0", &pattern] {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    redis.write_all(command.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(redis).read_line(&mut reply)?;
    if reply.starts_with(':') {
        Ok(())
    } else {
        Err(std::io::Error::other(reply))
    }
}

/// Deletes a JetStream stream, if NATS can be reached within a few seconds.
fn nats_delete_stream(url: &str, stream: &str) {
    let (url, stream) = (url.to_owned(), stream.to_owned());
    // A thread with a runtime of its own works from a test's runtime and while unwinding.
    let cleanup = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let delete = async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url.as_str())
                    .await
                    .ok()?;
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(&stream)
                    .await;
                Some(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
        });
    });
    let _ = cleanup.join();
}

// ---------------------------------------------------------------------------------------------
// A node

/// What a test changes in a node's configuration; the default is what
/// [`Cluster::start_node`] uses.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// The HTTP listener's address (default: an ephemeral port on 127.0.0.1). A fixed one
    /// lets [`Cluster::restart_node`] bring the node back where its clients reconnect.
    pub http: Option<SocketAddr>,
    /// The WebTransport (UDP) listener's address (default: an ephemeral port).
    pub webtransport: Option<SocketAddr>,
    /// More `key = value` lines of the `[server]` table.
    pub server_settings: String,
    /// `bus.history_events` (default 1000).
    pub history_events: Option<usize>,
}

/// One `streamgate serve` process, killed when dropped.
pub struct Node {
    pub name: String,
    /// Its configuration file.
    config: PathBuf,
    child: Child,
    /// The HTTP listener.
    pub addr: SocketAddr,
    /// The WebTransport (UDP) listener.
    pub wt_addr: SocketAddr,
    /// Everything the node logged (stderr) so far.
    log: watch::Receiver<String>,
}

/// What a node logs once it listens; the address follows.
const LISTENING_HTTP: &str = "streamgate listening on http://";
const LISTENING_WT: &str = "streamgate listening for WebTransport on https://";

impl Node {
    async fn start(name: &str, config: &Path) -> Self {
        let binary = streamgate_binary();
        let mut child = Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(config)
            // The lines this reads are `info`: a RUST_LOG of the caller's must not hide them.
            .env(
                "RUST_LOG",
                "streamgate=info,streamgate_core=info,streamgate_bus_redis=info,\
                 streamgate_bus_nats=info",
            )
            .env_remove("STREAMGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("stderr");
        let (log_text, mut log) = watch::channel(String::new());
        // A thread, not a task: it must keep draining the pipe whatever the test's runtime
        // does, or a node blocked on a full pipe would look like a broken gateway. It ends
        // (and closes the channel) when the process exits.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).split(b'\n');
            while let Some(Ok(line)) = lines.next() {
                log_text.send_modify(|text| {
                    text.push_str(&String::from_utf8_lossy(&line));
                    text.push('\n');
                });
            }
        });
        let listening = tokio::time::timeout(
            WAIT,
            log.wait_for(|text| text.contains(LISTENING_HTTP) && text.contains(LISTENING_WT)),
        )
        .await
        .map(|seen| seen.map(|_| ()));
        let text = log.borrow().clone();
        match listening {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let _ = child.kill();
                let status = child.wait();
                let hint = if text.contains("no Redis support") || text.contains("no NATS support")
                {
                    "\nThis streamgate binary was built without that broker backend (cargo \
                     features `redis` / `nats` of gateway/server): rebuild it with the feature."
                } else {
                    ""
                };
                panic!("node {name} exited at start-up ({status:?}):\n{text}{hint}");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {name} did not log that it listens within {WAIT:?}:\n{text}");
            }
        }
        let address_after = |marker: &str, end: &str| -> SocketAddr {
            let rest = &text[text.find(marker).expect("marker") + marker.len()..];
            let address = rest.split(|c: char| c.is_whitespace()).next().unwrap_or("");
            let address = address.split(end).next().unwrap_or(address);
            address
                .parse()
                .unwrap_or_else(|e| panic!("node {name}: {address:?} in its log: {e}\n{text}"))
        };
        let addr = address_after(LISTENING_HTTP, "/");
        let wt_addr = address_after(LISTENING_WT, "/");
        Self {
            name: name.to_owned(),
            config: config.to_owned(),
            child,
            addr,
            wt_addr,
            log,
        }
    }

    /// `http://<its HTTP listener>`, for a client's `--gateway`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        self.log.borrow().clone()
    }

    /// Waits until the node has logged `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let mut log = self.log.clone();
        let seen =
            tokio::time::timeout(HEALTH_WAIT, log.wait_for(|text| text.contains(needle))).await;
        assert!(
            matches!(seen, Ok(Ok(_))),
            "node {} never logged {needle:?}:\n{}",
            self.name,
            self.log()
        );
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the node with SIGKILL: no shutdown, connections cut as by a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `GET /healthz`: the status and the JSON body.
    pub async fn healthz(&self) -> (u16, Value) {
        let reply = self.request("GET", "/healthz", None).await;
        (reply.status, reply.json())
    }

    /// Waits until `/healthz` says the broker is reachable (200) or not (503).
    pub async fn wait_health(&self, available: bool) {
        let want = if available { 200 } else { 503 };
        let deadline = Instant::now() + HEALTH_WAIT;
        loop {
            let (status, body) = self.healthz().await;
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: /healthz still {status} {body} after {HEALTH_WAIT:?}, want {want}:\n{}",
                self.name,
                self.log()
            );
            // HTTP has no push for health: look again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /publish/{topic}` with a JSON payload: the status and the JSON answer (the
    /// event's `id` on 200, `{"error":{"code":…,"reason":…}}` otherwise).
    pub async fn publish(&self, topic: &str, payload: &str) -> Reply {
        publish(self.addr, topic, payload)
            .await
            .unwrap_or_else(|e| panic!("node {}: publish: {e}\n{}", self.name, self.log()))
    }

    /// Publishes and returns the id the node answered; fails the test on anything but 200.
    pub async fn publish_ok(&self, topic: &str, payload: &str) -> String {
        let reply = self.publish(topic, payload).await;
        let body = reply.json();
        match body["id"].as_str() {
            Some(id) if reply.status == 200 => id.to_owned(),
            _ => panic!(
                "node {}: publish answered {} {body}\n{}",
                self.name,
                reply.status,
                self.log()
            ),
        }
    }

    /// How many subscribers of `topic` the node counts (`GET /topics`).
    pub async fn subscribers(&self, topic: &str) -> u64 {
        let topics = self.request("GET", "/topics", None).await.json();
        topics["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["topic"] == topic)
            .and_then(|t| t["subscribers"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until the node counts at least `count` subscribers of `topic`. A long-polling
    /// client counts while its poll is held.
    pub async fn wait_subscribers(&self, topic: &str, count: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.subscribers(topic).await;
            if now >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {now} subscribers of {topic} after {WAIT:?}, want {count}:\n{}",
                self.name,
                self.log()
            );
            // No notification for a subscriber count: look again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One request to the node; fails the test if the node does not answer.
    pub async fn request(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let body = body.map(|b| ("application/json", b.as_bytes()));
        request(self.addr, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("node {}: {method} {path}: {e}\n{}", self.name, self.log()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- node {} log\n{}", self.name, self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// `POST /publish/{topic}` of a JSON payload to the node at `addr`.
///
/// # Errors
/// The node did not answer (connection refused or reset, no answer within [`WAIT`]).
pub async fn publish(addr: SocketAddr, topic: &str, payload: &str) -> Result<Reply, String> {
    request(
        addr,
        "POST",
        &format!("/publish/{topic}"),
        Some(("application/json", payload.as_bytes())),
    )
    .await
}

/// One HTTP/1.1 exchange on a new connection (`Connection: close`), bounded by [`WAIT`].
///
/// # Errors
/// The connection failed or the answer is not HTTP.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Result<Reply, String> {
    let host = addr.to_string();
    let (content_type, payload) = body.unwrap_or(("", b""));
    let mut headers = vec![("connection", "close")];
    if body.is_some() {
        headers.push(("content-type", content_type));
    }
    let request = h1::request(method, path, &host, &headers, payload);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(&request).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("no answer from {addr} within {WAIT:?}"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    parse_response(&raw)
}

/// A whole answer read to the connection's close: the head through httparse, a chunked body
/// decoded.
fn parse_response(raw: &[u8]) -> Result<Reply, String> {
    let text = || String::from_utf8_lossy(raw).into_owned();
    let head = ResponseHead::parse(raw)
        .ok()
        .flatten()
        .ok_or_else(|| format!("not an HTTP response: {:?}", text()))?;
    let rest = &raw[head.len..];
    let body = match head.framing() {
        BodyFraming::Chunked => {
            let mut body = Vec::new();
            let mut chunked = ChunkedDecoder::default();
            chunked
                .feed(rest, &mut body)
                .ok()
                .filter(|_| chunked.is_done())
                .ok_or_else(|| format!("bad chunked body: {:?}", text()))?;
            body
        }
        _ => rest.to_vec(),
    };
    Ok(Reply {
        status: head.status,
        body,
    })
}
