//! The fault/soak test: many clients of every transport on one gateway process with the
//! Redis backend, each cutting its own connection at random moments and resuming from the
//! last id it got, a publisher at a steady rate, and one gateway crash (SIGKILL) and
//! restart in the middle. At the end every client must hold every published event exactly
//! once, in id order: the resume rule of `docs/PROTOCOL.md` §4, end to end, under faults.
//!
//! - `soak_small` runs in `cargo test --workspace` (debug build): a few hundred clients.
//! - `soak_thousands` is the full run (`#[ignore]`: `.ci/run` runs it against a release
//!   build): thousands of clients.
//!
//! Both print what they did: connections held, sessions, faults injected, events published
//! and delivered, and losses (which must be 0). `SOAK_CLIENTS` (per transport),
//! `SOAK_RATE` (events/s) and `SOAK_SECONDS` override the size.
//!
//! Why a client stays exact across a crash: the history lives in Redis, so the restarted
//! gateway has the same epoch and every id a client holds; the client resumes with
//! `since` / `Last-Event-ID` / `cursor` and the gateway sends what follows, from history.
//! A publish cut off by the crash may have been stored without its answer arriving; the
//! publisher then publishes it again, so the reference is the log itself, read back at the
//! end, and every acknowledged id must be in it.
//!
//! Needs the `streamgate` binary (`cargo test --workspace` builds it; or `STREAMGATE_BIN`)
//! and Redis: a `redis-server` this test binary starts for itself, or the server at
//! `REDIS_URL`.

mod support;

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use serde_json::Value;
use streamgate_client::frame::FrameDecoder;
use streamgate_client::http::{exchange, Body, HttpConn};
use streamgate_client::sse::{SseDecoder, SseItem};
use streamgate_client::{describe_http_error, Gateway, Message, Notice, PollAnswer, Undecodable};
use support::cluster::{free_port, free_udp_port, publish, request, Backend, Cluster, NodeOptions};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint, RecvStream};

/// The one topic of the run.
const TOPIC: &str = "soak";

/// Longest a connect, a subscription or one request may take before the client gives up on
/// that session and reconnects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `timeout=` of each long poll, seconds: short, so a poller sees the end of the run soon.
const POLL_TIMEOUT: u64 = 2;

/// How long the clients may take to catch up once the publisher has finished.
const DRAIN_WAIT: Duration = Duration::from_secs(90);

/// How long the clients may take to connect at the start.
const CONNECT_ALL_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_small() {
    run(Plan::from_env(50, 20.0, 8.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "thousands of clients: .ci/run runs it against a release build"]
async fn soak_thousands() {
    run(Plan::from_env(500, 20.0, 20.0)).await;
}

/// The size of a run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    clients_per_transport: usize,
    /// Events per second.
    rate: f64,
    /// Events to publish (at `rate`, so the run lasts `events / rate` seconds).
    events: u64,
}

impl Plan {
    fn from_env(clients_per_transport: usize, rate: f64, seconds: f64) -> Self {
        fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse().ok())
        }
        let clients_per_transport = env("SOAK_CLIENTS").unwrap_or(clients_per_transport);
        let rate: f64 = env("SOAK_RATE").unwrap_or(rate);
        let seconds: f64 = env("SOAK_SECONDS").unwrap_or(seconds);
        assert!(
            rate > 0.0 && seconds > 0.0 && clients_per_transport > 0,
            "SOAK_CLIENTS, SOAK_RATE and SOAK_SECONDS must be positive"
        );
        Self {
            clients_per_transport,
            rate,
            events: (rate * seconds).ceil() as u64,
        }
    }

    fn clients(&self) -> usize {
        self.clients_per_transport * Transport::ALL.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Sse,
    LongPoll,
    Wt,
}

impl Transport {
    const ALL: [Self; 4] = [Self::WebSocket, Self::Sse, Self::LongPoll, Self::Wt];

    fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
            Self::LongPoll => "longpoll",
            Self::Wt => "webtransport",
        }
    }
}

/// Where the run is; the clients watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Publishing; clients cut their connections at random.
    Running,
    /// The publisher is done and the newest event is this `seq`: no more faults, and each
    /// client stops once it has it.
    Drain(u64),
    /// Time is up: stop now, whatever is missing.
    Abort,
}

/// What every client shares.
#[derive(Debug)]
struct Shared {
    gateway: Gateway,
    wt_url: String,
    epoch: String,
    /// The event the run starts after: every client subscribes from here.
    start_seq: u64,
    phase: watch::Receiver<Phase>,
    /// Clients subscribed at least once.
    connected: watch::Sender<usize>,
    /// Connections subscribed right now, and the most at once.
    held: AtomicI64,
    peak_held: AtomicI64,
    /// Each session's life before the client cuts it, drawn from this range (ms).
    fault_after_ms: (u64, u64),
}

/// One subscribed connection, counted while it lives.
#[derive(Debug)]
struct Held<'a>(&'a Shared);

impl<'a> Held<'a> {
    fn new(shared: &'a Shared) -> Self {
        let now = shared.held.fetch_add(1, Ordering::Relaxed) + 1;
        shared.peak_held.fetch_max(now, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one client saw over the whole run.
#[derive(Debug, Default)]
struct ClientLog {
    /// `seq` of every event received, in arrival order.
    seqs: Vec<u64>,
    sessions: u64,
    /// Sessions this client cut on purpose.
    faults: u64,
    /// Sessions that ended otherwise (the gateway's restart, a refused connect, …).
    drops: u64,
    last_drop: Option<String>,
    /// Why they ended, by the reason's first words, and how often.
    drop_reasons: std::collections::BTreeMap<String, u64>,
    /// Events of another epoch, `gap`, `reset`, `error`: none may occur.
    violations: Vec<String>,
    lagged: u64,
    subscribed_once: bool,
}

impl ClientLog {
    fn last_seq(&self, shared: &Shared) -> u64 {
        self.seqs.last().copied().unwrap_or(shared.start_seq)
    }

    fn resume_id(&self, shared: &Shared) -> String {
        format!("{}:{}", shared.epoch, self.last_seq(shared))
    }

    /// Records a message; an `error` message ends the session.
    fn apply(&mut self, message: Message, shared: &Shared) -> Result<(), String> {
        match message {
            Message::Event(event) => {
                if event.id.epoch() == shared.epoch {
                    self.seqs.push(event.id.seq());
                } else {
                    self.violations
                        .push(format!("event {} of another epoch", event.id));
                }
            }
            Message::Notice(notice) => match notice {
                Notice::Lagged { .. } => self.lagged += 1,
                // The broker link was lost and found again: nothing is missed by it.
                Notice::Unavailable { .. } | Notice::Available => {}
                other => self.violations.push(other.to_string()),
            },
            Message::Error { code, reason, .. } => return Err(format!("error {code}: {reason}")),
            // `subscribed`, and whatever a newer gateway may add.
            _ => {}
        }
        Ok(())
    }

    fn mark_subscribed(&mut self, shared: &Shared) {
        if !self.subscribed_once {
            self.subscribed_once = true;
            shared.connected.send_modify(|count| *count += 1);
        }
    }
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The client cut it (an injected fault).
    Fault,
    /// The run is over for this client.
    Stop,
    /// It ended on its own: the gateway went away, refused, or timed out.
    Dropped(String),
}

impl From<String> for End {
    fn from(reason: String) -> Self {
        Self::Dropped(reason)
    }
}

/// An error answer as the end of a session, in words (`HTTP 400 cursor_ahead: …`).
async fn refused(http: &mut HttpConn, status: u16, body: &mut Body) -> End {
    let text = http.read_body(body).await.unwrap_or_default();
    End::Dropped(describe_http_error(status, &text).0)
}

/// Whether the client is done, given the phase: `Some(End::Stop)` once aborted, or
/// draining and holding the newest event.
fn finished(phase: Phase, log: &ClientLog, shared: &Shared) -> Option<End> {
    match phase {
        Phase::Abort => Some(End::Stop),
        Phase::Drain(newest) if log.last_seq(shared) >= newest => Some(End::Stop),
        Phase::Drain(_) | Phase::Running => None,
    }
}

/// A random session life while the run is on; forever while draining, when faults stop.
fn session_life(shared: &Shared) -> Duration {
    let (low, high) = shared.fault_after_ms;
    if *shared.phase.borrow() == Phase::Running {
        Duration::from_millis(rand::rng().random_range(low..=high))
    } else {
        Duration::from_secs(3600)
    }
}

async fn run_client(transport: Transport, shared: Arc<Shared>) -> ClientLog {
    let mut log = ClientLog::default();
    loop {
        if let Some(End::Stop) = finished(*shared.phase.borrow(), &log, &shared) {
            break;
        }
        log.sessions += 1;
        let life = session_life(&shared);
        let end = match transport {
            Transport::WebSocket => ws_session(&shared, &mut log, life).await,
            Transport::Sse => sse_session(&shared, &mut log, life).await,
            Transport::LongPoll => poll_session(&shared, &mut log, life).await,
            Transport::Wt => wt_session(&shared, &mut log, life).await,
        };
        match end {
            End::Fault => log.faults += 1,
            End::Stop => break,
            End::Dropped(reason) => {
                log.drops += 1;
                let kind: String = reason.chars().take(40).collect();
                *log.drop_reasons.entry(kind).or_default() += 1;
                log.last_drop = Some(reason);
                // Spread the reconnects of a crowd that lost its gateway at once.
                let delay = rand::rng().random_range(50..300);
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
    log
}

/// A subscription's stream of messages, however the transport carries them.
trait MessageStream {
    /// Whether the connection is subscribed as soon as it is open (SSE: the `200` said so);
    /// otherwise a `subscribed` message says it.
    const SUBSCRIBED_WHEN_OPEN: bool;

    /// The next messages that arrived, or how the stream ended. Cancel-safe: it races the
    /// fault timer and the phase.
    async fn next_messages(&mut self) -> Result<Vec<Result<Message, Undecodable>>, End>;
}

/// Reads `stream` until the client cuts it (`life`), the run is over for this client, or
/// the stream ends; records every message in `log`.
async fn read_stream<S: MessageStream>(
    stream: &mut S,
    shared: &Shared,
    log: &mut ClientLog,
    life: Duration,
) -> End {
    let mut held = None;
    if S::SUBSCRIBED_WHEN_OPEN {
        subscribed(shared, log, &mut held);
    }
    let mut phase = shared.phase.clone();
    let mut fault = pin!(tokio::time::sleep(life));
    loop {
        let messages = tokio::select! {
            () = &mut fault => return End::Fault,
            Ok(()) = phase.changed() => match finished(*phase.borrow_and_update(), log, shared) {
                Some(end) => return end,
                None => continue,
            },
            messages = stream.next_messages() => messages,
        };
        let messages = match messages {
            Ok(messages) => messages,
            Err(end) => return end,
        };
        for message in messages {
            match message {
                Ok(Message::Subscribed(_)) => subscribed(shared, log, &mut held),
                Ok(message) => {
                    if let Err(e) = log.apply(message, shared) {
                        return End::Dropped(e);
                    }
                }
                Err(e) => log.violations.push(format!("unreadable message: {e}")),
            }
        }
        if let Some(end) = finished(*phase.borrow(), log, shared) {
            return end;
        }
    }
}

/// The connection is subscribed: count it as held while it lives.
fn subscribed<'a>(shared: &'a Shared, log: &mut ClientLog, held: &mut Option<Held<'a>>) {
    held.get_or_insert_with(|| Held::new(shared));
    log.mark_subscribed(shared);
}

/// WebSocket: `GET /ws?topics=…&since=<last id>`.
async fn ws_session(shared: &Shared, log: &mut ClientLog, life: Duration) -> End {
    let url = format!(
        "ws://{}/ws?topics={TOPIC}&since={}",
        shared.gateway.authority(),
        log.resume_id(shared)
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(&url)).await {
        Ok(Ok((socket, _))) => read_stream(&mut WsStream(socket), shared, log, life).await,
        Ok(Err(e)) => End::Dropped(format!("websocket connect: {e}")),
        Err(_) => End::Dropped("websocket connect timed out".to_owned()),
    }
}

struct WsStream(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl MessageStream for WsStream {
    const SUBSCRIBED_WHEN_OPEN: bool = false;

    async fn next_messages(&mut self) -> Result<Vec<Result<Message, Undecodable>>, End> {
        let message = match self.0.next().await {
            Some(Ok(WsMessage::Text(text))) => Message::parse(text.as_bytes()),
            Some(Ok(WsMessage::Binary(bytes))) => Message::parse(&bytes),
            Some(Ok(WsMessage::Close(close))) => {
                return Err(End::Dropped(format!("closed: {close:?}")))
            }
            Some(Ok(_)) => return Ok(Vec::new()),
            Some(Err(e)) => return Err(End::Dropped(format!("websocket: {e}"))),
            None => return Err(End::Dropped("websocket ended".to_owned())),
        };
        Ok(vec![message])
    }
}

/// SSE: `GET /sse?topics=…` with `Last-Event-ID`, read as it streams.
async fn sse_session(shared: &Shared, log: &mut ClientLog, life: Duration) -> End {
    let resume = log.resume_id(shared);
    let open = async {
        let mut http = HttpConn::open(&shared.gateway).await?;
        let target = format!("/sse?topics={TOPIC}");
        let (head, body) = http
            .request("GET", &target, &[("last-event-id", &resume)], b"")
            .await?;
        Ok::<_, String>((http, head.status, body))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
        Ok(Ok((http, 200, body))) => {
            let mut stream = SseStream {
                http,
                body,
                decoder: SseDecoder::default(),
            };
            read_stream(&mut stream, shared, log, life).await
        }
        Ok(Ok((mut http, status, mut body))) => refused(&mut http, status, &mut body).await,
        Ok(Err(e)) => End::Dropped(e),
        Err(_) => End::Dropped("no answer to GET /sse".to_owned()),
    }
}

struct SseStream {
    http: HttpConn,
    body: Body,
    decoder: SseDecoder,
}

impl MessageStream for SseStream {
    const SUBSCRIBED_WHEN_OPEN: bool = true;

    async fn next_messages(&mut self) -> Result<Vec<Result<Message, Undecodable>>, End> {
        let chunk = match self.http.chunk(&mut self.body).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Err(End::Dropped("sse stream ended".to_owned())),
            Err(e) => return Err(End::Dropped(format!("sse body: {e}"))),
        };
        // Comments and `retry:`-only blocks carry no message.
        Ok(self
            .decoder
            .feed(&chunk)
            .into_iter()
            .filter_map(|item| match item {
                SseItem::Block(block) => block.data,
                SseItem::Comment(_) => None,
            })
            .map(|data| Message::parse(data.as_bytes()))
            .collect())
    }
}

/// Long polling: `GET /poll?topics=…&cursor=<last id>&timeout=…`, over and over on one
/// keep-alive connection.
async fn poll_session(shared: &Shared, log: &mut ClientLog, life: Duration) -> End {
    let mut http = match HttpConn::open(&shared.gateway).await {
        Ok(http) => http,
        Err(e) => return e.into(),
    };
    let mut fault = pin!(tokio::time::sleep(life));
    let mut held = None;
    loop {
        // Not raced against the phase: cutting a poll short would leave the connection out
        // of step. Polls are short, so the phase is looked at often enough between them.
        let target = format!(
            "/poll?topics={TOPIC}&cursor={}&timeout={POLL_TIMEOUT}",
            log.resume_id(shared)
        );
        let answer = tokio::select! {
            () = &mut fault => return End::Fault,
            answer = poll_once(&mut http, &target) => answer,
        };
        let (messages, keeps_alive) = match answer {
            Ok(answer) => answer,
            Err(end) => return end,
        };
        subscribed(shared, log, &mut held);
        for message in messages {
            match message {
                Ok(message) => {
                    if let Err(e) = log.apply(message, shared) {
                        return End::Dropped(e);
                    }
                }
                Err(e) => log.violations.push(format!("unreadable poll message: {e}")),
            }
        }
        if let Some(end) = finished(*shared.phase.borrow(), log, shared) {
            return end;
        }
        if !keeps_alive {
            return End::Dropped("the gateway closed the connection".to_owned());
        }
    }
}

/// One poll; its messages, and whether the connection may carry the next one (the gateway
/// says `connection: close` when it shuts down).
async fn poll_once(http: &mut HttpConn, target: &str) -> Result<(Polled, bool), End> {
    let exchange = async {
        let (head, mut body) = http.request("GET", target, &[], b"").await?;
        if head.status != 200 {
            return Ok(Err(refused(http, head.status, &mut body).await));
        }
        let text = http.read_body(&mut body).await?;
        Ok::<_, String>(Ok((head.keeps_alive(), text)))
    };
    let timeout = CONNECT_TIMEOUT + Duration::from_secs(POLL_TIMEOUT);
    let (keeps_alive, text) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| End::Dropped(format!("no answer to GET {target}")))???;
    let answer = PollAnswer::parse(&text).map_err(End::Dropped)?;
    Ok((answer.messages, keeps_alive))
}

/// A poll answer's messages, each decoded or not.
type Polled = Vec<Result<Message, Undecodable>>;

/// WebTransport, `stream` mode: the certificate hash from `/wt/cert-hash` (a restarted
/// gateway has a new self-signed certificate), then the session and its control stream.
async fn wt_session(shared: &Shared, log: &mut ClientLog, life: Duration) -> End {
    let hash = match cert_hash(&shared.gateway).await {
        Ok(hash) => hash,
        Err(end) => return end,
    };
    let config = ClientConfig::builder()
        .with_bind_address(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_server_certificate_hashes([hash])
        // QUIC has no reset: a crashed gateway is noticed only when the connection goes
        // idle. Short, so a client reconnects soon after the restart.
        .keep_alive_interval(Some(Duration::from_millis(500)))
        .max_idle_timeout(Some(Duration::from_secs(2)))
        .expect("a valid idle timeout")
        .build();
    let endpoint = match Endpoint::client(config) {
        Ok(endpoint) => endpoint,
        Err(e) => return End::Dropped(format!("UDP socket: {e}")),
    };
    let url = format!(
        "{}?topics={TOPIC}&since={}&mode=stream",
        shared.wt_url,
        log.resume_id(shared)
    );
    let connect = async {
        let connection = endpoint.connect(&url).await.map_err(|e| e.to_string())?;
        let control = connection.accept_uni().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((connection, control))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((_connection, control))) => {
            let mut stream = WtStream {
                stream: control,
                frames: FrameDecoder::default(),
            };
            read_stream(&mut stream, shared, log, life).await
        }
        Ok(Err(e)) => End::Dropped(format!("webtransport: {e}")),
        Err(_) => End::Dropped("webtransport connect timed out".to_owned()),
    }
}

/// The session's control stream, where `stream` mode sends everything in order.
struct WtStream {
    stream: RecvStream,
    frames: FrameDecoder,
}

impl MessageStream for WtStream {
    const SUBSCRIBED_WHEN_OPEN: bool = false;

    /// Cancel-safe: the one await is a `read`, which returns bytes or takes none, and a
    /// message received in pieces stays in the decoder until it is whole.
    async fn next_messages(&mut self) -> Result<Vec<Result<Message, Undecodable>>, End> {
        let mut chunk = [0u8; 16 * 1024];
        let n = match self.stream.read(&mut chunk).await {
            Ok(Some(n)) => n,
            Ok(None) if self.frames.is_mid_message() => {
                return Err(End::Dropped("a stream ended inside a message".to_owned()))
            }
            Ok(None) => return Err(End::Dropped("the control stream ended".to_owned())),
            Err(e) => return Err(End::Dropped(format!("reading a stream: {e}"))),
        };
        self.frames.feed(&chunk[..n]);
        let mut messages = Vec::new();
        while let Some(message) = self
            .frames
            .next_frame()
            .map_err(|e| End::Dropped(e.to_string()))?
        {
            messages.push(Message::parse(&message));
        }
        Ok(messages)
    }
}

async fn cert_hash(gateway: &Gateway) -> Result<Sha256Digest, End> {
    let (head, body) = exchange(gateway, "GET", "/wt/cert-hash", &[], b"", CONNECT_TIMEOUT).await?;
    if head.status != 200 {
        return Err(End::Dropped(describe_http_error(head.status, &body).0));
    }
    let document: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hash: Option<Vec<u8>> = document["value"].as_array().and_then(|bytes| {
        bytes
            .iter()
            .map(|byte| byte.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect()
    });
    hash.and_then(|hash| <[u8; 32]>::try_from(hash).ok())
        .map(Sha256Digest::new)
        .ok_or_else(|| End::Dropped(format!("a bad /wt/cert-hash: {document}")))
}

/// Publishes `{"n":…}` until the gateway accepts it; returns the id and the failed attempts.
async fn publish_until_accepted(http: SocketAddr, n: u64) -> (String, u64) {
    let payload = format!("{{\"n\":{n}}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = 0;
    loop {
        match publish(http, TOPIC, &payload).await {
            Ok(reply) if reply.status == 200 => {
                let id = reply.json()["id"].as_str().map(str::to_owned);
                return (id.expect("an id in the publish answer"), failures);
            }
            // Refused (503 while the restarted gateway reaches Redis) or no gateway at all.
            Ok(_) | Err(_) => failures += 1,
        }
        assert!(
            Instant::now() < deadline,
            "event {n} not accepted within 60 s"
        );
        // Nothing to wait on for a gateway coming back: try again shortly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event of the topic after `after`, in order, read back through long polling.
async fn read_log(http: SocketAddr, epoch: &str, after: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut cursor = after;
    loop {
        let reply = request(
            http,
            "GET",
            &format!("/poll?topics={TOPIC}&cursor={epoch}:{cursor}&timeout=0"),
            None,
        )
        .await
        .expect("the gateway answers a poll");
        assert_eq!(reply.status, 200, "poll: {}", reply.json());
        let batch = reply.json();
        let messages = batch["messages"].as_array().expect("messages");
        if messages.is_empty() {
            return seqs;
        }
        for message in messages {
            let seq = seq_of(message["id"].as_str().expect("an event id"));
            seqs.push(seq);
            cursor = seq;
        }
    }
}

fn seq_of(id: &str) -> u64 {
    id.rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("an epoch:seq id")
}

async fn run(plan: Plan) {
    let mut cluster = Cluster::on_shared_broker(Backend::Redis);
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let webtransport = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let node = cluster
        .start_node_with(
            "soak",
            &NodeOptions {
                http: Some(http),
                webtransport: Some(webtransport),
                // Every client comes from 127.0.0.1.
                server_settings: "max_connections = 19000\nmax_connections_per_ip = 0\n".to_owned(),
                history_events: Some(plan.events as usize + 1000),
            },
        )
        .await;
    cluster.wait_until_available().await;

    // The event the clients resume after, from their very first connection.
    let (first_id, _) = publish_until_accepted(http, 0).await;
    let epoch = first_id.split(':').next().expect("epoch").to_owned();
    let start_seq = seq_of(&first_id);

    let (phase_tx, phase) = watch::channel(Phase::Running);
    let shared = Arc::new(Shared {
        gateway: http.to_string().parse().expect("gateway address"),
        wt_url: format!("https://{webtransport}/wt"),
        epoch: epoch.clone(),
        start_seq,
        phase,
        connected: watch::Sender::new(0),
        held: AtomicI64::new(0),
        peak_held: AtomicI64::new(0),
        fault_after_ms: (1000, 8000),
    });
    let started = Instant::now();
    let mut clients = Vec::new();
    for transport in Transport::ALL {
        for _ in 0..plan.clients_per_transport {
            let shared = Arc::clone(&shared);
            clients.push((transport, tokio::spawn(run_client(transport, shared))));
        }
    }
    let mut connected = shared.connected.subscribe();
    let all = plan.clients();
    let waited = tokio::time::timeout(CONNECT_ALL_WAIT, connected.wait_for(|n| *n >= all))
        .await
        .is_ok_and(|seen| seen.is_ok());
    assert!(
        waited,
        "only {} of {all} clients subscribed within {CONNECT_ALL_WAIT:?}",
        *shared.connected.borrow()
    );
    let connect_time = started.elapsed();

    // A steady publisher; the gateway is killed and restarted halfway.
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each tick starts one publish, so a slow answer does not slow the pace. The restart
    // runs beside the publisher, which publishes each event again until the gateway is back
    // and accepts it.
    let mut publishes = Vec::new();
    let mut cut_by_restart = 0;
    let mut restart = None;
    let mut cluster = Some(cluster);
    let publishing = Instant::now();
    for n in 1..=plan.events {
        ticks.tick().await;
        if n == plan.events / 2 + 1 {
            cut_by_restart = shared.held.load(Ordering::Relaxed);
            let mut cluster = cluster.take().expect("the cluster");
            restart = Some(tokio::spawn(async move {
                let down = Instant::now();
                cluster.restart_node(node).await;
                (cluster, down.elapsed())
            }));
        }
        publishes.push(tokio::spawn(publish_until_accepted(http, n)));
    }
    let mut acknowledged = Vec::new();
    let mut publish_retries = 0;
    for publish in publishes {
        let (id, retries) = publish.await.expect("publish task");
        acknowledged.push(seq_of(&id));
        publish_retries += retries;
    }
    let publish_time = publishing.elapsed();
    let (cluster, downtime) = restart.expect("a restart").await.expect("the restart task");

    let reference = read_log(http, &epoch, start_seq).await;
    let newest = *reference.last().expect("events in the log");
    phase_tx.send_replace(Phase::Drain(newest));
    let draining = Instant::now();
    let mut logs = Vec::new();
    let drain_deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    for (transport, mut client) in clients {
        let log = match tokio::time::timeout_at(drain_deadline, &mut client).await {
            Ok(log) => log,
            Err(_) => {
                phase_tx.send_replace(Phase::Abort);
                tokio::time::timeout(Duration::from_secs(30), client)
                    .await
                    .expect("a client stops within 30 s of the abort")
            }
        }
        .expect("client task");
        logs.push((transport, log));
    }
    let drain_time = draining.elapsed();

    // Tally, per transport and in all.
    println!(
        "soak: {} clients ({} per transport), Redis backend, {} events at {}/s, one gateway \
         crash (SIGKILL) and restart after event {}",
        plan.clients(),
        plan.clients_per_transport,
        plan.events,
        plan.rate,
        plan.events / 2
    );
    println!(
        "{:<13} {:>8} {:>9} {:>8} {:>8} {:>11} {:>7} {:>6} {:>9} {:>7}",
        "transport",
        "clients",
        "sessions",
        "faults",
        "drops",
        "delivered",
        "lost",
        "dup",
        "disorder",
        "lagged"
    );
    let reference_set: std::collections::HashSet<u64> = reference.iter().copied().collect();
    let mut totals = [0u64; 8];
    let mut problems = Vec::new();
    for transport in Transport::ALL {
        let mut row = [0u64; 8];
        for (_, log) in logs.iter().filter(|(t, _)| *t == transport) {
            let received: std::collections::HashSet<u64> = log.seqs.iter().copied().collect();
            let lost = reference
                .iter()
                .filter(|seq| !received.contains(seq))
                .count() as u64;
            let duplicates = (log.seqs.len() - received.len()) as u64;
            let disorder = log.seqs.windows(2).filter(|w| w[1] <= w[0]).count() as u64;
            let unknown = received.difference(&reference_set).count();
            row[0] += 1;
            row[1] += log.sessions;
            row[2] += log.faults;
            row[3] += log.drops;
            row[4] += log.seqs.len() as u64;
            row[5] += lost;
            row[6] += duplicates;
            row[7] += disorder;
            if lost + duplicates + disorder > 0 || unknown > 0 || !log.violations.is_empty() {
                problems.push(format!(
                    "{}: lost {lost}, duplicates {duplicates}, out of order {disorder}, not in \
                     the log {unknown}, violations {:?}, last drop {:?}",
                    transport.name(),
                    log.violations.iter().take(3).collect::<Vec<_>>(),
                    log.last_drop
                ));
            }
        }
        let lagged: u64 = logs
            .iter()
            .filter(|(t, _)| *t == transport)
            .map(|(_, log)| log.lagged)
            .sum();
        println!(
            "{:<13} {:>8} {:>9} {:>8} {:>8} {:>11} {:>7} {:>6} {:>9} {:>7}",
            transport.name(),
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            lagged
        );
        let mut reasons = std::collections::BTreeMap::<&str, u64>::new();
        for (_, log) in logs.iter().filter(|(t, _)| *t == transport) {
            for (reason, count) in &log.drop_reasons {
                *reasons.entry(reason).or_default() += count;
            }
        }
        let mut reasons: Vec<_> = reasons.into_iter().collect();
        reasons.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        for (reason, count) in reasons.iter().take(3) {
            println!("    {count:>6} × {reason}…");
        }
        for (total, value) in totals.iter_mut().zip(row) {
            *total += value;
        }
    }
    println!(
        "connections held: {} at the peak ({} cut by the gateway restart); all {} clients \
         subscribed within {:.1} s",
        shared.peak_held.load(Ordering::Relaxed),
        cut_by_restart,
        plan.clients(),
        connect_time.as_secs_f64()
    );
    println!(
        "faults injected: {} client disconnects + 1 gateway restart ({:.2} s from the kill to \
         listening again); {} sessions ended on their own (restart, refusals)",
        totals[2],
        downtime.as_secs_f64(),
        totals[3]
    );
    println!(
        "events: {} in the log ({} acknowledged, {} publish attempts refused or cut during the \
         restart), {} deliveries in all; published in {:.1} s ({:.1}/s), clients caught up \
         {:.1} s later",
        reference.len(),
        acknowledged.len(),
        publish_retries,
        totals[4],
        publish_time.as_secs_f64(),
        plan.events as f64 / publish_time.as_secs_f64(),
        drain_time.as_secs_f64()
    );
    println!(
        "losses: {}, duplicates: {}, out of order: {}",
        totals[5], totals[6], totals[7]
    );

    let missing_acks: Vec<_> = acknowledged
        .iter()
        .filter(|seq| !reference_set.contains(seq))
        .collect();
    assert!(
        missing_acks.is_empty(),
        "acknowledged events missing from the log: {missing_acks:?}"
    );
    assert!(
        reference.windows(2).all(|w| w[0] < w[1]) && reference.first() > Some(&start_seq),
        "the log read back is not in id order after the start"
    );
    assert!(
        problems.is_empty(),
        "{} clients did not get every event exactly once, in order:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        totals[4],
        reference.len() as u64 * plan.clients() as u64,
        "deliveries"
    );
    assert!(totals[2] > 0, "no fault was injected");
    drop(cluster);
}
