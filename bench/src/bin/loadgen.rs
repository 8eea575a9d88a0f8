//! `loadgen`: subscribers of one transport against streamgate or nginx + Nchan, in a process
//! of their own, driven over stdin/stdout by `vs_nchan` (bench/README.md).
//!
//! ```text
//! loadgen --target nchan --url http://127.0.0.1:8090 --transport ws --connections 5000 \
//!         --source-ips 127.0.0.2,127.0.0.3
//! ```
//!
//! It opens `--connections` subscribers of `--topic` (bound to the source addresses round
//! robin), prints `{"ready":…}` once each has connected (or failed), then obeys one command
//! per stdin line:
//!
//! - `reset <index>`: zero every counter; count only events whose index is ≥ `index`;
//! - `stall` / `unstall`: the stallable subscribers (`--stall-fraction`) stop / resume reading;
//!   one the server closed meanwhile reconnects with its last id;
//! - `reconnect <spread ms>`: every subscriber drops its connection at a random moment within
//!   the spread and reconnects with its last id (a reconnect storm);
//! - `report`: print the summary JSON line; `stop`: print it and exit.
//!
//! Its `fed` (subscribers that got any event since `reset`) tells `vs_nchan` when the server
//! has registered every subscriber, and its deliveries when a drain is over.
//!
//! Every event's payload starts with `{"t":<scheduled send time, µs since the Unix
//! epoch>,"i":<index>,` (see [`streamgate_bench::vs_nchan::payload`]): latency is the receive
//! time minus `t`, in an HDR histogram, and the index sequence per connection finds losses
//! and duplicates.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use streamgate_bench::vs_nchan::{
    hist_pairs, now_us, parse_stamp, LoadgenSummary, Server, TransportKind,
};
use streamgate_client::sse;
use streamgate_compare::clients::{ws_handshake, HttpConn};
use streamgate_compare::wire::find;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket read buffer of each connection.
const READ_CHUNK: usize = 4 * 1024;
/// Receive buffer of a stallable connection, so that a stalled reader backs up quickly.
const STALL_RCVBUF: u32 = 4 * 1024;

/// Subscribers of one transport, for `vs_nchan`.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Cli {
    /// `streamgate` or `nchan`.
    #[arg(long)]
    target: Server,
    /// Base URL, `http://127.0.0.1:PORT`.
    #[arg(long)]
    url: String,
    /// `ws`, `sse` or `longpoll`.
    #[arg(long)]
    transport: TransportKind,
    /// Topic (streamgate) or channel (Nchan).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Subscribers to open.
    #[arg(long)]
    connections: usize,
    /// Source addresses to bind, round robin (all must be 127.x.y.z).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    source_ips: Vec<IpAddr>,
    /// Fraction of the subscribers that `stall` stops.
    #[arg(long, default_value_t = 0.0)]
    stall_fraction: f64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

/// Counters and histograms of the process, shared by every connection task (one thread).
#[derive(Debug)]
struct Stats {
    deliveries: u64,
    stalled_deliveries: u64,
    errors: u64,
    gaps: u64,
    dups: u64,
    notices: u64,
    closed_by_server: u64,
    reconnects: u64,
    latency: Histogram<u64>,
    latency_stalled: Histogram<u64>,
    connect: Histogram<u64>,
    ttfe: Histogram<u64>,
    first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds");
    h.auto(true);
    h
}

impl Stats {
    fn new() -> Self {
        Self {
            deliveries: 0,
            stalled_deliveries: 0,
            errors: 0,
            gaps: 0,
            dups: 0,
            notices: 0,
            closed_by_server: 0,
            reconnects: 0,
            latency: histogram(),
            latency_stalled: histogram(),
            connect: histogram(),
            ttfe: histogram(),
            first_error: None,
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// What every connection task shares.
#[derive(Debug)]
struct Ctx {
    cli: Cli,
    server: SocketAddr,
    stats: RefCell<Stats>,
    /// Events with a smaller index are not counted (they belong to an earlier phase).
    from_index: Cell<u64>,
    /// Bumped by `reset`: a connection counts in `fed` once per phase.
    phase: Cell<u64>,
    fed: Cell<usize>,
    connected: Cell<usize>,
    settled: Cell<usize>,
    stall: watch::Receiver<bool>,
    /// (generation, spread ms): a new generation asks every connection to reconnect.
    storm: watch::Receiver<(u64, u64)>,
    stopping: Cell<bool>,
    connect_slots: Semaphore,
    ready_tx: RefCell<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// What a connection carries across reconnects.
#[derive(Debug, Default)]
struct ConnState {
    stallable: bool,
    /// Resume position: the event id (streamgate, Nchan ws/sse) or `Last-Modified|Etag`
    /// (Nchan long polling).
    last_id: Option<String>,
    last_index: Option<u64>,
    /// Set when a reconnect started: the next event gives the time to first event.
    reconnect_started: Option<Instant>,
    /// The phase in which this connection last counted in `fed`.
    fed_phase: Option<u64>,
}

impl Ctx {
    fn record(&self, st: &mut ConnState, t_us: u64, index: u64) {
        let now = now_us();
        if st.fed_phase != Some(self.phase.get()) {
            st.fed_phase = Some(self.phase.get());
            self.fed.set(self.fed.get() + 1);
        }
        let mut stats = self.stats.borrow_mut();
        if let Some(last) = st.last_index {
            if index > last + 1 {
                if index > self.from_index.get() {
                    stats.gaps += index - last - 1;
                }
            } else if index <= last {
                stats.dups += 1;
            }
        }
        st.last_index = Some(index.max(st.last_index.unwrap_or(0)));
        if let Some(started) = st.reconnect_started.take() {
            let us = started.elapsed().as_micros() as u64;
            let _ = stats.ttfe.record(us.max(1));
        }
        if index < self.from_index.get() {
            return;
        }
        let latency = now.saturating_sub(t_us).max(1);
        if st.stallable {
            stats.stalled_deliveries += 1;
            let _ = stats.latency_stalled.record(latency);
        } else {
            stats.deliveries += 1;
            let _ = stats.latency.record(latency);
        }
    }

    /// Every event in `bytes` (one or several payloads), and notices.
    fn scan(&self, st: &mut ConnState, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some((t_us, index, after)) = parse_stamp(rest) {
            self.record(st, t_us, index);
            rest = &rest[rest.len() - after..];
        }
        let notices = count(bytes, b"\"type\":\"lagged\"") + count(bytes, b"\"type\":\"gap\"");
        if notices > 0 {
            self.stats.borrow_mut().notices += notices as u64;
        }
    }

    fn summary(&self) -> LoadgenSummary {
        let stats = self.stats.borrow();
        LoadgenSummary {
            connections: self.cli.connections,
            connected: self.connected.get(),
            deliveries: stats.deliveries,
            stalled_deliveries: stats.stalled_deliveries,
            errors: stats.errors,
            gaps: stats.gaps,
            dups: stats.dups,
            notices: stats.notices,
            closed_by_server: stats.closed_by_server,
            reconnects: stats.reconnects,
            fed: self.fed.get(),
            latency_us: hist_pairs(&stats.latency),
            latency_stalled_us: hist_pairs(&stats.latency_stalled),
            connect_us: hist_pairs(&stats.connect),
            ttfe_us: hist_pairs(&stats.ttfe),
            first_error: stats.first_error.clone(),
        }
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

/// One open subscriber.
#[derive(Debug)]
enum Feed {
    Ws(Box<WebSocketStream<TcpStream>>),
    Sse {
        http: HttpConn,
        text: Vec<u8>,
    },
    Poll {
        http: HttpConn,
        /// streamgate: the cursor; Nchan: `Last-Modified|Etag`.
        cursor: Option<String>,
        in_flight: bool,
    },
}

async fn tcp_connect(ctx: &Ctx, slot: usize, stallable: bool) -> anyhow::Result<TcpStream> {
    let ip = ctx.cli.source_ips[slot % ctx.cli.source_ips.len()];
    let socket = TcpSocket::new_v4()?;
    if stallable {
        socket.set_recv_buffer_size(STALL_RCVBUF)?;
    }
    socket.bind(SocketAddr::new(ip, 0)).context("bind")?;
    let tcp = socket.connect(ctx.server).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Sends the next long poll: after `cursor` (streamgate), or with the validators of the last
/// answer (Nchan, `Last-Modified|Etag`).
async fn send_poll(
    ctx: &Ctx,
    http: &mut HttpConn,
    cursor: Option<&str>,
    timeout: u32,
) -> anyhow::Result<()> {
    let topic = &ctx.cli.topic;
    match ctx.cli.target {
        Server::Streamgate => {
            let cursor = cursor.unwrap_or("");
            let target = format!("/poll?topics={topic}&cursor={cursor}&timeout={timeout}");
            http.send_get(&target).await
        }
        Server::Nchan => {
            let headers: Vec<(&str, &str)> = match cursor.and_then(|c| c.split_once('|')) {
                Some((lm, etag)) => vec![("if-modified-since", lm), ("if-none-match", etag)],
                None => Vec::new(),
            };
            http.send_get_with(&format!("/sub/{topic}"), &headers).await
        }
    }
}

async fn connect(ctx: &Ctx, slot: usize, st: &ConnState) -> anyhow::Result<Feed> {
    let tcp = tcp_connect(ctx, slot, st.stallable).await?;
    let topic = &ctx.cli.topic;
    let host = ctx.server;
    let resume = st.last_id.as_deref();
    match ctx.cli.transport {
        TransportKind::Ws => {
            let url = match (ctx.cli.target, resume) {
                (Server::Streamgate, None) => format!("ws://{host}/ws?topics={topic}"),
                (Server::Streamgate, Some(id)) => {
                    format!("ws://{host}/ws?topics={topic}&since={id}")
                }
                (Server::Nchan, None) => format!("ws://{host}/sub/{topic}"),
                (Server::Nchan, Some(id)) => {
                    format!("ws://{host}/sub/{topic}?last_event_id={id}")
                }
            };
            let mut request = url.into_client_request()?;
            if ctx.cli.target == Server::Nchan {
                // Frames carry `id:` lines, so a reconnect can resume.
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", "ws+meta.nchan".parse()?);
            }
            let (mut socket, _) = ws_handshake(request, tcp, READ_CHUNK).await?;
            if ctx.cli.target == Server::Streamgate {
                // Wait for `subscribed`, so "ready" means subscribed.
                loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(text))) => {
                            if text.as_str().starts_with("{\"type\":\"subscribed\"") {
                                break;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => bail!("closed before subscribed"),
                    }
                }
            }
            Ok(Feed::Ws(Box::new(socket)))
        }
        TransportKind::Sse => {
            let target = match ctx.cli.target {
                Server::Streamgate => format!("/sse?topics={topic}"),
                Server::Nchan => format!("/sub/{topic}"),
            };
            let mut headers = Vec::new();
            if ctx.cli.target == Server::Nchan {
                headers.push(("accept", "text/event-stream"));
            }
            if let Some(id) = resume {
                headers.push(("last-event-id", id));
            }
            let mut http = HttpConn::over(tcp)?;
            http.send_get_with(&target, &headers).await?;
            let head = http.head().await?;
            if head.status != 200 {
                bail!("SSE answered {}", head.status);
            }
            Ok(Feed::Sse {
                http,
                text: Vec::new(),
            })
        }
        TransportKind::Longpoll => {
            let mut http = HttpConn::over(tcp)?;
            let mut cursor = resume.map(str::to_owned);
            if ctx.cli.target == Server::Streamgate && cursor.is_none() {
                // A first poll that answers at once: its cursor is the newest id.
                send_poll(ctx, &mut http, None, 0).await?;
                let head = http.head().await?;
                let body = http.body(&head).await?;
                if head.status != 200 {
                    bail!("poll answered {}", head.status);
                }
                cursor = Some(json_cursor(&body).context("no cursor")?);
            }
            Ok(Feed::Poll {
                http,
                cursor,
                in_flight: false,
            })
        }
    }
}

fn json_cursor(body: &[u8]) -> Option<String> {
    json_cursor_key(body, b"\"cursor\":\"")
}

/// streamgate envelope id (the first `"id":"…"`).
fn envelope_id(bytes: &[u8]) -> Option<String> {
    json_cursor_key(bytes, b"\"id\":\"")
}

fn json_cursor_key(bytes: &[u8], key: &[u8]) -> Option<String> {
    let at = find(bytes, key)? + key.len();
    let len = bytes[at..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&bytes[at..at + len]).into_owned())
}

/// Reads one batch of input from `feed`, recording what arrived. Cancel-safe enough: a
/// cancelled read is only ever followed by dropping the feed or by reading on.
async fn read_some(ctx: &Ctx, st: &mut ConnState, feed: &mut Feed) -> anyhow::Result<()> {
    match feed {
        Feed::Ws(socket) => match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let bytes = text.as_bytes();
                on_ws_message(ctx, st, bytes);
                Ok(())
            }
            Some(Ok(Message::Binary(bytes))) => {
                on_ws_message(ctx, st, &bytes);
                Ok(())
            }
            Some(Ok(Message::Close(_))) | None => bail!("closed by the server"),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.into()),
        },
        Feed::Sse { http, text } => {
            if !http.stream(text).await? {
                bail!("stream ended");
            }
            // Borrowed views of the complete blocks: no allocation per event.
            let mut start = 0;
            while let Some((block, used)) = sse::next_block(&text[start..]) {
                if let Some(id) = block.field(b"id") {
                    st.last_id = Some(String::from_utf8_lossy(id).trim().to_owned());
                }
                if block.field(b"event").is_some_and(|e| e.starts_with(b"@")) {
                    ctx.stats.borrow_mut().notices += 1;
                }
                if let Some((t_us, index, _)) = parse_stamp(block.bytes) {
                    ctx.record(st, t_us, index);
                }
                start += used;
            }
            text.drain(..start);
            Ok(())
        }
        Feed::Poll {
            http,
            cursor,
            in_flight,
        } => {
            if !*in_flight {
                send_poll(ctx, http, cursor.as_deref(), 55).await?;
                *in_flight = true;
            }
            let head = http.head().await?;
            let body = http.body(&head).await?;
            *in_flight = false;
            match (ctx.cli.target, head.status) {
                (Server::Streamgate, 200) => {
                    if let Some(next) = json_cursor(&body) {
                        *cursor = Some(next);
                    }
                    ctx.scan(st, &body);
                }
                (Server::Nchan, 200) => {
                    if let (Some(lm), Some(etag)) =
                        (head.header("last-modified"), head.header("etag"))
                    {
                        *cursor = Some(format!("{lm}|{etag}"));
                    }
                    ctx.scan(st, &body);
                }
                (Server::Nchan, 304 | 408) => {}
                (_, status) => bail!(
                    "poll answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            }
            st.last_id.clone_from(cursor);
            Ok(())
        }
    }
}

fn on_ws_message(ctx: &Ctx, st: &mut ConnState, bytes: &[u8]) {
    match ctx.cli.target {
        Server::Streamgate => {
            if bytes.starts_with(b"{\"type\":\"event\"") {
                if let Some(id) = envelope_id(bytes) {
                    st.last_id = Some(id);
                }
            }
        }
        Server::Nchan => {
            if let Some(rest) = bytes.strip_prefix(b"id: ") {
                let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                st.last_id = Some(String::from_utf8_lossy(&rest[..end]).into_owned());
            }
        }
    }
    ctx.scan(st, bytes);
}

/// Why a connection's read loop ended.
#[derive(Debug)]
enum End {
    /// Asked to reconnect (storm): after this delay.
    Storm(Duration),
    /// The server closed it or it failed.
    Failed(anyhow::Error),
    Stop,
}

async fn run_feed(ctx: &Ctx, st: &mut ConnState, feed: &mut Feed) -> End {
    let mut stall = ctx.stall.clone();
    let mut storm = ctx.storm.clone();
    storm.mark_unchanged();
    loop {
        if ctx.stopping.get() {
            return End::Stop;
        }
        if st.stallable && *stall.borrow_and_update() {
            tokio::select! {
                _ = stall.wait_for(|s| !*s) => {}
                _ = storm.changed() => return storm_end(&storm),
            }
            continue;
        }
        tokio::select! {
            result = read_some(ctx, st, feed) => {
                if let Err(e) = result {
                    return End::Failed(e);
                }
            }
            _ = storm.changed() => return storm_end(&storm),
            _ = stall.changed(), if st.stallable => {}
        }
    }
}

fn storm_end(storm: &watch::Receiver<(u64, u64)>) -> End {
    let (_, spread_ms) = *storm.borrow();
    End::Storm(Duration::from_micros(rand_below(spread_ms.max(1) * 1000)))
}

/// A cheap per-process random number below `n` (xorshift seeded from the clock).
fn rand_below(n: u64) -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(now_us() | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x % n.max(1)
    })
}

async fn conn_task(ctx: Rc<Ctx>, slot: usize) {
    let stallable = (slot as f64) < ctx.cli.stall_fraction * ctx.cli.connections as f64;
    let mut st = ConnState {
        stallable,
        ..ConnState::default()
    };
    let mut settled = false;
    let mut attempts: u32 = 0;
    loop {
        if ctx.stopping.get() {
            return;
        }
        let started = Instant::now();
        let connected = {
            let _permit = ctx.connect_slots.acquire().await;
            tokio::time::timeout(Duration::from_secs(15), connect(&ctx, slot, &st)).await
        };
        let mut feed = match connected {
            Ok(Ok(feed)) => feed,
            Ok(Err(e)) => {
                connect_failed(&ctx, &mut attempts, &mut settled, format!("{e:#}")).await;
                continue;
            }
            Err(_) => {
                connect_failed(&ctx, &mut attempts, &mut settled, "timed out".to_owned()).await;
                continue;
            }
        };
        attempts = 0;
        let _ = ctx
            .stats
            .borrow_mut()
            .connect
            .record((started.elapsed().as_micros() as u64).max(1));
        ctx.connected.set(ctx.connected.get() + 1);
        if !settled {
            settled = true;
            settle(&ctx);
        }
        let end = run_feed(&ctx, &mut st, &mut feed).await;
        ctx.connected.set(ctx.connected.get() - 1);
        drop(feed);
        match end {
            End::Stop => return,
            End::Storm(delay) => {
                tokio::time::sleep(delay).await;
                st.reconnect_started = Some(Instant::now());
                ctx.stats.borrow_mut().reconnects += 1;
            }
            End::Failed(e) => {
                if ctx.stopping.get() {
                    return;
                }
                {
                    let mut stats = ctx.stats.borrow_mut();
                    stats.closed_by_server += 1;
                    stats.reconnects += 1;
                    if stats.first_error.is_none() {
                        stats.first_error = Some(format!("read: {e:#}"));
                    }
                }
                st.reconnect_started = Some(Instant::now());
                // A stalled reader reconnects only once it reads again.
                if st.stallable {
                    let mut stall = ctx.stall.clone();
                    let _ = stall.wait_for(|s| !*s).await;
                }
            }
        }
    }
}

async fn connect_failed(ctx: &Ctx, attempts: &mut u32, settled: &mut bool, what: String) {
    ctx.stats.borrow_mut().error(format!("connect: {what}"));
    *attempts += 1;
    if !*settled && *attempts >= 3 {
        *settled = true;
        settle(ctx);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn settle(ctx: &Ctx) {
    ctx.settled.set(ctx.settled.get() + 1);
    if ctx.settled.get() == ctx.cli.connections {
        if let Some(tx) = ctx.ready_tx.borrow_mut().take() {
            let _ = tx.send(());
        }
    }
}

fn print_line(value: &impl serde::Serialize) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, value);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let server: SocketAddr = cli
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--url must be http://IP:PORT")?;
    for ip in &cli.source_ips {
        anyhow::ensure!(ip.is_loopback(), "source address {ip} is not loopback");
    }
    anyhow::ensure!(server.ip().is_loopback(), "the server must be on loopback");
    let (stall_tx, stall_rx) = watch::channel(false);
    let (storm_tx, storm_rx) = watch::channel((0u64, 0u64));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let max_seconds = cli.max_seconds;
    let connections = cli.connections;
    let ctx = Rc::new(Ctx {
        connect_slots: Semaphore::new(cli.connect_concurrency.max(1)),
        cli,
        server,
        stats: RefCell::new(Stats::new()),
        from_index: Cell::new(0),
        phase: Cell::new(0),
        fed: Cell::new(0),
        connected: Cell::new(0),
        settled: Cell::new(0),
        stall: stall_rx,
        storm: storm_rx,
        stopping: Cell::new(false),
        ready_tx: RefCell::new(Some(ready_tx)),
    });
    let started = Instant::now();
    for slot in 0..connections {
        tokio::task::spawn_local(conn_task(ctx.clone(), slot));
    }
    if connections > 0 {
        let _ = ready_rx.await;
    }
    print_line(&serde_json::json!({
        "ready": true,
        "connected": ctx.connected.get(),
        "errors": ctx.stats.borrow().errors,
        "connect_s": started.elapsed().as_secs_f64(),
    }));
    // Commands from stdin, read on a thread of their own.
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            match std::io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = cmd_tx.send("stop".to_owned());
                    return;
                }
                Ok(_) => {
                    if cmd_tx.send(line.trim().to_owned()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let deadline = tokio::time::sleep(Duration::from_secs(max_seconds));
    tokio::pin!(deadline);
    let mut generation = 0;
    loop {
        let command = tokio::select! {
            command = cmd_rx.recv() => command.unwrap_or_else(|| "stop".to_owned()),
            () = &mut deadline => "stop".to_owned(),
        };
        let mut words = command.split_whitespace();
        match words.next().unwrap_or("") {
            "reset" => {
                let from: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                ctx.from_index.set(from);
                ctx.phase.set(ctx.phase.get() + 1);
                ctx.fed.set(0);
                // Connection setup times stay: they belong to the connections, not a phase.
                let mut stats = ctx.stats.borrow_mut();
                let connect = std::mem::replace(&mut stats.connect, histogram());
                *stats = Stats::new();
                stats.connect = connect;
                drop(stats);
                print_line(&serde_json::json!({"ok": "reset"}));
            }
            "stall" => {
                let _ = stall_tx.send(true);
                print_line(&serde_json::json!({"ok": "stall"}));
            }
            "unstall" => {
                let _ = stall_tx.send(false);
                print_line(&serde_json::json!({"ok": "unstall"}));
            }
            "reconnect" => {
                let spread: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(1000);
                generation += 1;
                let _ = storm_tx.send((generation, spread));
                print_line(&serde_json::json!({"ok": "reconnect"}));
            }
            "report" => print_line(&ctx.summary()),
            "stop" => {
                ctx.stopping.set(true);
                print_line(&ctx.summary());
                return Ok(());
            }
            other => eprintln!("loadgen: unknown command {other:?}"),
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
