//! The async side: the transport adapters and the [`Subscription`] that drives the
//! [`Controller`](crate::controller::Controller) with them on tokio.

pub mod http;
#[cfg(feature = "poll")]
mod poll;
#[cfg(feature = "sse")]
mod sse;
#[cfg(feature = "ws")]
mod ws;
#[cfg(feature = "webtransport")]
mod wt;

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::controller::{Action, ConnId, Controller, ControllerConfig};
use crate::h1::encode_query_value;
use crate::{
    check_topic, describe_http_error, Backoff, CloseFlags, Data, EventId, Incoming, InvalidTopic,
    LogEntry, Message, Timeouts, Transport,
};

/// What a [`Subscription`] yields: events, notices, transport changes, errors, and the end of
/// each connection attempt (the controller's [`Output`]).
pub use crate::controller::Output as Item;

/// A gateway's HTTP address: `http://host:port` (or `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    host: String,
    port: u16,
}

/// An address that is not a gateway's plain HTTP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {why}")]
pub struct InvalidGateway {
    text: String,
    why: String,
}

impl Gateway {
    /// `host:port`, for the `Host` header and for connecting.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host name or address, without brackets or port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

impl FromStr for Gateway {
    type Err = InvalidGateway;

    fn from_str(text: &str) -> Result<Self, InvalidGateway> {
        let bad = |why: &str| InvalidGateway {
            text: text.to_owned(),
            why: why.to_owned(),
        };
        let rest = match text.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => {
                return Err(bad(
                    "this client speaks plain http:// to the gateway's HTTP listener \
                     (default 127.0.0.1:8080); https is not supported yet",
                ))
            }
            None => text,
        };
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if !matches!(path, "" | "/") {
            return Err(bad(
                "give only the gateway's address, http://host:port; the client adds the paths",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6.split_once(']').ok_or_else(|| bad("an unclosed '['"))?;
            (host, port.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return Err(bad("an IPv6 address goes in brackets, [::1]:8080")),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad("a bad port"))?,
            None => 80,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Where WebTransport events travel (`mode=`, §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WebTransportMode {
    /// In order on the control stream (the default, and the only lossless mode on resume).
    #[default]
    Stream,
    /// One unidirectional stream per event: events can overtake each other.
    StreamPerEvent,
    /// One datagram per event: unordered, and a lost datagram is never resent.
    Datagram,
}

impl WebTransportMode {
    /// `stream`, `stream-per-event` or `datagram`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::StreamPerEvent => "stream-per-event",
            Self::Datagram => "datagram",
        }
    }
}

/// A subscription that cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The gateway address.
    #[error(transparent)]
    Gateway(#[from] InvalidGateway),
    /// A topic name.
    #[error(transparent)]
    Topic(#[from] InvalidTopic),
    /// No topics.
    #[error("no topics to subscribe to")]
    NoTopics,
    /// No transports.
    #[error("no transports to try")]
    NoTransports,
}

/// A publish that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The gateway refused it (`rate_limited`, `forbidden`, …).
    #[error("{}{code}: {reason}", status.map(|s| format!("HTTP {s} ")).unwrap_or_default())]
    Refused {
        /// The HTTP status, for `POST /publish`.
        status: Option<u16>,
        /// The code of §6.
        code: String,
        /// The reason.
        reason: String,
    },
    /// It could not be sent, or no answer came.
    #[error("publish failed: {0}")]
    Failed(String),
    /// The subscription is closed.
    #[error("the subscription is closed")]
    Closed,
}

type TokenFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What every adapter needs.
pub(crate) struct Ctx {
    gateway: Gateway,
    topics: Vec<String>,
    token: Option<TokenFn>,
    #[cfg_attr(not(feature = "poll"), allow(dead_code))]
    timeouts: Timeouts,
    #[cfg_attr(not(feature = "webtransport"), allow(dead_code))]
    wt_mode: WebTransportMode,
}

impl Ctx {
    fn token(&self) -> Option<String> {
        self.token.as_ref().and_then(|f| f())
    }

    /// `path?topics=a,b&k=v…` (values already encoded).
    fn target(&self, path: &str, params: &[(&str, String)]) -> String {
        let mut target = format!(
            "{path}?topics={}",
            encode_query_value(&self.topics.join(","))
        );
        for (key, value) in params {
            target.push_str(&format!("&{key}={value}"));
        }
        target
    }
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) struct Ended {
    reason: String,
    flags: CloseFlags,
}

impl Ended {
    fn retry(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            flags: CloseFlags::default(),
        }
    }

    #[cfg_attr(not(any(feature = "ws", feature = "webtransport")), allow(dead_code))]
    fn fatal(reason: impl Into<String>, code: Option<String>) -> Self {
        Self {
            reason: reason.into(),
            flags: CloseFlags {
                fatal: true,
                code,
                permanent: false,
            },
        }
    }
}

enum Report {
    Open,
    Incoming(Incoming),
    #[cfg_attr(not(feature = "sse"), allow(dead_code))]
    Activity,
    Closed(Ended),
}

/// An adapter's line to the driver.
pub(crate) struct Sink {
    conn: ConnId,
    tx: mpsc::UnboundedSender<(ConnId, Report)>,
}

#[cfg_attr(not(any(feature = "sse", feature = "poll")), allow(dead_code))]
impl Sink {
    fn open(&self) {
        let _ = self.tx.send((self.conn, Report::Open));
    }
    #[cfg_attr(not(feature = "sse"), allow(dead_code))]
    fn activity(&self) {
        let _ = self.tx.send((self.conn, Report::Activity));
    }
    fn message(&self, incoming: Incoming) {
        let _ = self.tx.send((self.conn, Report::Incoming(incoming)));
    }
}

/// One connection attempt as its adapter sees it: the subscription's settings, where to
/// resume from, and where to report.
pub(crate) struct Attempt {
    ctx: Arc<Ctx>,
    since: Option<EventId>,
    sink: Sink,
}

impl Attempt {
    /// `since=<id>` for an adapter that resumes with the query (WebSocket, WebTransport; SSE
    /// sends `Last-Event-ID`, long polling its cursor).
    #[cfg_attr(not(any(feature = "ws", feature = "webtransport")), allow(dead_code))]
    fn since_param(&self) -> Option<(&'static str, String)> {
        let since = self.since.as_ref()?;
        Some(("since", encode_query_value(&since.to_string())))
    }

    fn finish(&self, ended: Ended) {
        let _ = self.sink.tx.send((self.sink.conn, Report::Closed(ended)));
    }
}

/// The publishes an adapter with a session of its own (WebSocket, WebTransport) sends over it.
#[cfg_attr(not(any(feature = "ws", feature = "webtransport")), allow(dead_code))]
pub(crate) type Publishes = mpsc::UnboundedReceiver<PublishRequest>;

/// The gateway's reply to a publish sent over a session (§6): `published` with the new
/// event's id, or `error`, each with the reference the publish carried, if any. `None` for
/// any other message.
#[cfg_attr(not(any(feature = "ws", feature = "webtransport")), allow(dead_code))]
fn publish_reply(message: &Message) -> Option<(Option<&str>, Result<EventId, PublishError>)> {
    match message {
        Message::Published { reference, id } => Some((reference.as_deref(), Ok(id.clone()))),
        Message::Error {
            code,
            reason,
            reference,
        } => Some((
            reference.as_deref(),
            Err(PublishError::Refused {
                status: None,
                code: code.clone(),
                reason: reason.clone(),
            }),
        )),
        _ => None,
    }
}

/// A publish for an adapter with a live bidirectional session.
pub(crate) struct PublishRequest {
    #[cfg_attr(not(any(feature = "ws", feature = "webtransport")), allow(dead_code))]
    topic: String,
    #[cfg_attr(not(any(feature = "ws", feature = "webtransport")), allow(dead_code))]
    data: Data,
    reply: oneshot::Sender<Result<EventId, PublishError>>,
}

enum Command {
    Publish(PublishRequest),
    Close,
}

enum ToSubscription {
    Item(Item, Option<EventId>),
    Cursor(Option<EventId>),
}

#[derive(Debug, Default)]
struct Shared {
    transport: Option<Transport>,
    log: Vec<LogEntry>,
}

/// Builds a [`Subscription`]: `Subscription::builder(url).topics([..]).connect()`.
pub struct SubscriptionBuilder {
    gateway: String,
    topics: Vec<String>,
    transports: Vec<Transport>,
    since: Option<EventId>,
    token: Option<TokenFn>,
    timeouts: Timeouts,
    backoff: Backoff,
    wt_mode: WebTransportMode,
}

impl fmt::Debug for SubscriptionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("gateway", &self.gateway)
            .field("topics", &self.topics)
            .field("transports", &self.transports)
            .field("since", &self.since)
            .field("token", &self.token.as_ref().map(|_| "[masked]"))
            .finish_non_exhaustive()
    }
}

impl SubscriptionBuilder {
    /// The topics: one subscription, one id order across them.
    pub fn topics(mut self, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// The transports in order of preference (default [`Transport::DEFAULT_ORDER`]); leave one
    /// out to never use it.
    pub fn transports(mut self, transports: impl IntoIterator<Item = Transport>) -> Self {
        self.transports = transports.into_iter().collect();
        self
    }

    /// Resumes after this id (an earlier subscription's [`Subscription::last_id`]): the resume
    /// rule (§4), with its `gap` and `reset` notices.
    pub fn since(mut self, since: impl Into<Option<EventId>>) -> Self {
        self.since = since.into();
        self
    }

    /// A JWT (§8), sent as `Authorization: Bearer` (and as `token=` in the WebTransport URL).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = Some(Arc::new(move || Some(token.clone())));
        self
    }

    /// A function called before every connection, to hand out a fresh token.
    pub fn token_with(
        mut self,
        token: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.token = Some(Arc::new(token));
        self
    }

    /// Deadlines (default [`Timeouts::default`]).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Retry delays (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Where WebTransport events travel (default [`WebTransportMode::Stream`]). In the other
    /// modes events may arrive out of id order: they are deduplicated by id, and the resume
    /// point is the highest id seen.
    pub fn webtransport_mode(mut self, mode: WebTransportMode) -> Self {
        self.wt_mode = mode;
        self
    }

    /// Starts the subscription: it connects at once, in a task of the current tokio runtime.
    ///
    /// # Errors
    /// [`BuildError`]: a bad address, topic name, or empty list.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn connect(self) -> Result<Subscription, BuildError> {
        let gateway: Gateway = self.gateway.parse()?;
        if self.topics.is_empty() {
            return Err(BuildError::NoTopics);
        }
        for topic in &self.topics {
            check_topic(topic)?;
        }
        if self.transports.is_empty() {
            return Err(BuildError::NoTransports);
        }
        let mut config = ControllerConfig::default()
            .with_order(self.transports)
            .with_timeouts(self.timeouts)
            .with_backoff(self.backoff)
            .with_since(self.since.clone());
        if self.wt_mode != WebTransportMode::Stream {
            config.unordered = vec![Transport::WebTransport];
        }
        let mut controller = Controller::new(config, Instant::now());
        controller.set_random(rand::random::<f64>);
        let ctx = Arc::new(Ctx {
            gateway,
            topics: self.topics,
            token: self.token,
            timeouts: self.timeouts,
            wt_mode: self.wt_mode,
        });
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (items_tx, items) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let driver = tokio::spawn(drive(
            controller,
            Arc::clone(&ctx),
            command_rx,
            items_tx,
            Arc::clone(&shared),
        ));
        Ok(Subscription {
            items,
            commands,
            shared,
            last_id: self.since,
            ctx,
            driver,
        })
    }
}

/// A live subscription: a [`Stream`](futures_core::Stream) of [`Item`]s, over the best
/// transport that works. Events come exactly once per id, in id order, whatever the
/// transports do; the stream ends after [`Subscription::close`] or a refusal every transport
/// would get (an [`Item::Error`] comes first). Dropping it closes everything.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use streamgate_client::{Data, Subscription};
///
/// let mut sub = Subscription::builder("http://127.0.0.1:8080").topics(["chat"]).connect()?;
/// let id = sub.publish("chat", Data::Text("hi".into())).await?;
/// while let Some(item) = sub.recv().await {
///     println!("{item:?}");
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    items: mpsc::UnboundedReceiver<ToSubscription>,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<Shared>>,
    last_id: Option<EventId>,
    ctx: Arc<Ctx>,
    driver: JoinHandle<()>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("gateway", &self.ctx.gateway)
            .field("topics", &self.ctx.topics)
            .field("last_id", &self.last_id)
            .field("transport", &self.transport())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A builder for a subscription to the gateway at `gateway` (`http://host:port`).
    pub fn builder(gateway: impl Into<String>) -> SubscriptionBuilder {
        SubscriptionBuilder {
            gateway: gateway.into(),
            topics: Vec::new(),
            transports: Transport::DEFAULT_ORDER.to_vec(),
            since: None,
            token: None,
            timeouts: Timeouts::default(),
            backoff: Backoff::default(),
            wt_mode: WebTransportMode::Stream,
        }
    }

    /// The next item; `None` once the subscription ended.
    ///
    /// # Cancel safety
    /// Cancel-safe: an item not returned stays queued.
    pub async fn recv(&mut self) -> Option<Item> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        loop {
            match self.items.poll_recv(cx) {
                Poll::Ready(Some(ToSubscription::Item(item, cursor))) => {
                    self.last_id = cursor;
                    return Poll::Ready(Some(item));
                }
                Poll::Ready(Some(ToSubscription::Cursor(cursor))) => self.last_id = cursor,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The id of the last event yielded (or skipped as undecodable, or `<epoch>:0` after a
    /// reset): where a later subscription resumes with [`SubscriptionBuilder::since`].
    pub fn last_id(&self) -> Option<&EventId> {
        self.last_id.as_ref()
    }

    /// The transport events come from now (`None` while connecting or reconnecting).
    pub fn transport(&self) -> Option<Transport> {
        self.shared.lock().map(|s| s.transport).unwrap_or_default()
    }

    /// Every connection attempt, oldest first.
    pub fn transport_log(&self) -> Vec<LogEntry> {
        self.shared
            .lock()
            .map(|s| s.log.clone())
            .unwrap_or_default()
    }

    /// Publishes one event: over the live WebSocket or WebTransport session if there is one
    /// (a `publish` message, matched to its reply), else `POST /publish/{topic}`.
    ///
    /// # Errors
    /// [`PublishError`]: refused by the gateway, not sent, or the subscription is closed.
    pub async fn publish(
        &self,
        topic: &str,
        data: impl Into<Data>,
    ) -> Result<EventId, PublishError> {
        let (reply, answer) = oneshot::channel();
        let request = PublishRequest {
            topic: topic.to_owned(),
            data: data.into(),
            reply,
        };
        self.commands
            .send(Command::Publish(request))
            .map_err(|_| PublishError::Closed)?;
        answer.await.map_err(|_| PublishError::Closed)?
    }

    /// Stops everything: every connection and timer. The stream yields what was already
    /// queued, then ends.
    pub fn close(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The driver notices the closed command channel and stops its connections; abort is
        // the backstop.
        let _ = self.commands.send(Command::Close);
        let _ = &self.driver;
    }
}

impl futures_core::Stream for Subscription {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.get_mut().poll_item(cx)
    }
}

struct Connection {
    task: JoinHandle<()>,
    publish: Option<mpsc::UnboundedSender<PublishRequest>>,
}

/// The driver task: owns the controller and the connections.
async fn drive(
    mut controller: Controller,
    ctx: Arc<Ctx>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    items: mpsc::UnboundedSender<ToSubscription>,
    shared: Arc<Mutex<Shared>>,
) {
    let (reports_tx, mut reports) = mpsc::unbounded_channel::<(ConnId, Report)>();
    let mut connections: HashMap<ConnId, Connection> = HashMap::new();
    let mut sent_cursor = controller.cursor().last_id().cloned();
    let mut log_generation = u64::MAX;
    controller.start(Instant::now());
    loop {
        // Carry out what the controller asked, then pass on what it said.
        while let Some(action) = controller.poll_action() {
            match action {
                Action::Connect {
                    conn,
                    transport,
                    since,
                } => match spawn(&ctx, transport, conn, since, reports_tx.clone()) {
                    Ok(connection) => {
                        connections.insert(conn, connection);
                    }
                    Err(reason) => {
                        let flags = CloseFlags {
                            permanent: true,
                            ..CloseFlags::default()
                        };
                        controller.handle_close(conn, reason, flags, Instant::now());
                    }
                },
                Action::Close { conn } => {
                    if let Some(connection) = connections.remove(&conn) {
                        connection.task.abort();
                    }
                }
            }
        }
        let mut any = false;
        while let Some(output) = controller.poll_output() {
            any = true;
            sent_cursor = controller.cursor().last_id().cloned();
            let _ = items.send(ToSubscription::Item(output, sent_cursor.clone()));
        }
        if !any && controller.cursor().last_id() != sent_cursor.as_ref() {
            sent_cursor = controller.cursor().last_id().cloned();
            let _ = items.send(ToSubscription::Cursor(sent_cursor.clone()));
        }
        if controller.log_generation() != log_generation {
            log_generation = controller.log_generation();
            if let Ok(mut shared) = shared.lock() {
                shared.transport = controller.transport();
                shared.log = controller.log().to_vec();
            }
        }
        if controller.is_closed() {
            break;
        }
        let deadline = controller.poll_timeout();
        let sleep = tokio::time::sleep_until(deadline.map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            tokio::time::Instant::from_std,
        ));
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                None | Some(Command::Close) => controller.close(Instant::now()),
                Some(Command::Publish(request)) => {
                    let live = controller
                        .active()
                        .and_then(|conn| connections.get(&conn))
                        .and_then(|c| c.publish.as_ref());
                    match live {
                        Some(publish) => {
                            if let Err(mpsc::error::SendError(request)) = publish.send(request) {
                                tokio::spawn(publish_over_http(Arc::clone(&ctx), request));
                            }
                        }
                        None => {
                            tokio::spawn(publish_over_http(Arc::clone(&ctx), request));
                        }
                    }
                }
            },
            Some((conn, report)) = reports.recv() => {
                let now = Instant::now();
                match report {
                    Report::Open => controller.handle_open(conn, now),
                    Report::Activity => controller.handle_activity(conn, now),
                    Report::Incoming(incoming) => controller.handle_message(conn, incoming, now),
                    Report::Closed(ended) => {
                        connections.remove(&conn);
                        controller.handle_close(conn, ended.reason, ended.flags, now);
                    }
                }
            }
            () = sleep, if deadline.is_some() => controller.handle_timeout(Instant::now()),
        }
    }
    while let Some(action) = controller.poll_action() {
        if let Action::Close { conn } = action {
            if let Some(connection) = connections.remove(&conn) {
                connection.task.abort();
            }
        }
    }
    for (_, connection) in connections {
        connection.task.abort();
    }
    if let Ok(mut shared) = shared.lock() {
        shared.transport = None;
        shared.log = controller.log().to_vec();
    }
}

/// Starts a connection task, or says why this build cannot.
fn spawn(
    ctx: &Arc<Ctx>,
    transport: Transport,
    conn: ConnId,
    since: Option<EventId>,
    tx: mpsc::UnboundedSender<(ConnId, Report)>,
) -> Result<Connection, String> {
    let attempt = Attempt {
        ctx: Arc::clone(ctx),
        since,
        sink: Sink { conn, tx },
    };
    #[allow(unused_variables)]
    let (publish, publishes) = mpsc::unbounded_channel::<PublishRequest>();
    match transport {
        #[cfg(feature = "ws")]
        Transport::WebSocket => Ok(Connection {
            task: tokio::spawn(async move { attempt.finish(ws::run(&attempt, publishes).await) }),
            publish: Some(publish),
        }),
        #[cfg(feature = "webtransport")]
        Transport::WebTransport => Ok(Connection {
            task: tokio::spawn(async move { attempt.finish(wt::run(&attempt, publishes).await) }),
            publish: Some(publish),
        }),
        #[cfg(feature = "sse")]
        Transport::Sse => Ok(Connection {
            task: tokio::spawn(async move { attempt.finish(sse::run(&attempt).await) }),
            publish: None,
        }),
        #[cfg(feature = "poll")]
        Transport::Poll => Ok(Connection {
            task: tokio::spawn(async move { attempt.finish(poll::run(&attempt).await) }),
            publish: None,
        }),
        #[allow(unreachable_patterns)]
        other => {
            let _ = (attempt, publish, publishes);
            Err(format!(
                "unsupported: built without the `{}` feature",
                match other {
                    Transport::WebSocket => "ws",
                    Transport::WebTransport => "webtransport",
                    Transport::Sse => "sse",
                    Transport::Poll => "poll",
                }
            ))
        }
    }
}

/// `POST /publish/{topic}?content_type=…`.
async fn publish_over_http(ctx: Arc<Ctx>, request: PublishRequest) {
    let result = async {
        let data = &request.data;
        let target = format!(
            "/publish/{}?content_type={}",
            request.topic,
            data.content_type().as_str()
        );
        let body = match data {
            Data::Json(value) => value.to_string().into_bytes(),
            Data::Text(text) => text.clone().into_bytes(),
            Data::Binary(bytes) => bytes.clone(),
        };
        let bearer = ctx.token().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("authorization", b.as_str()))
            .collect();
        let (head, body) = http::exchange(
            &ctx.gateway,
            "POST",
            &target,
            &headers,
            &body,
            Duration::from_secs(10),
        )
        .await
        .map_err(PublishError::Failed)?;
        if head.status != 200 {
            let (reason, code) = describe_http_error(head.status, &body);
            return Err(PublishError::Refused {
                status: Some(head.status),
                code: code.unwrap_or_default(),
                reason: reason
                    .split_once(": ")
                    .map_or(reason.clone(), |(_, r)| r.to_owned()),
            });
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| PublishError::Failed(format!("an answer that is not JSON ({e})")))?;
        answer["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| PublishError::Failed(format!("an answer without an id: {answer}")))
    }
    .await;
    let _ = request.reply.send(result);
}
