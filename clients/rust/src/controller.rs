//! The subscription's logic without any I/O: which transport to try, when to give up on it,
//! when to probe a better one and when to switch back, and what to deliver. The JavaScript
//! client's `Controller`, the same rules and the same test list (`controller/tests.rs`).
//!
//! A sans-IO state machine in quinn-proto's style: the driver feeds it what the transports
//! report (`handle_open`, `handle_message`, `handle_activity`, `handle_close`) and the time
//! (`handle_timeout` at `poll_timeout`), and carries out what it asks (`poll_action`: open or
//! close a connection) and what it says (`poll_output`: events, notices, transport changes).
//! Time is always passed in, so tests run it on a virtual clock.
//!
//! ```
//! use std::time::Instant;
//! use streamgate_client::controller::{Action, Controller, ControllerConfig, Output};
//! use streamgate_client::{Incoming, Message, Transport};
//!
//! let t0 = Instant::now();
//! let config = ControllerConfig::default().with_order([Transport::Sse, Transport::Poll]);
//! let mut controller = Controller::new(config, t0);
//! controller.start(t0);
//! let Some(Action::Connect { conn, transport: Transport::Sse, since: None }) = controller.poll_action() else { panic!() };
//! controller.handle_open(conn, t0);
//! let event = Message::parse(br#"{"type":"event","topic":"t","id":"e:1","content_type":"json","data":1}"#)?;
//! controller.handle_message(conn, Incoming::Message(event.clone()), t0);
//! controller.handle_message(conn, Incoming::Message(event), t0); // a duplicate: dropped
//! assert!(matches!(controller.poll_output(), Some(Output::Transport(c)) if c.to == Some(Transport::Sse)));
//! assert!(matches!(controller.poll_output(), Some(Output::Event(e)) if e.id.seq() == 1));
//! assert!(controller.poll_output().is_none());
//! # Ok::<(), streamgate_client::Undecodable>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::{Backoff, Cursor, Event, EventId, Message, Notice, Timeouts, Transport, Undecodable};

/// One connection attempt's handle, chosen by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// To carry the subscription (nothing else does).
    Connect,
    /// In the background, to move back to a better transport.
    Probe,
}

/// Where an attempt got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not confirmed yet.
    Connecting,
    /// Confirmed by the gateway.
    Open,
    /// Ended before it was confirmed.
    Failed,
    /// Ended after it was confirmed (or closed by the client).
    Closed,
    /// Closed because a better transport took over.
    Replaced,
}

impl Outcome {
    /// `connecting`, `open`, `failed`, `closed` or `replaced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Open => "open",
            Self::Failed => "failed",
            Self::Closed => "closed",
            Self::Replaced => "replaced",
        }
    }
}

/// One line of the transport log: one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The transport.
    pub transport: Transport,
    /// Why it was tried.
    pub role: Role,
    /// When it started.
    pub start: Instant,
    /// Where it got to.
    pub outcome: Outcome,
    /// Why it ended (empty while it has not).
    pub reason: String,
    /// From `start` to the gateway's confirmation.
    pub open_after: Option<Duration>,
    /// From `start` to its first event.
    pub first_event_after: Option<Duration>,
    /// From `start` to its end.
    pub ended_after: Option<Duration>,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.outcome.as_str())?;
        if let Some(open) = self.open_after {
            write!(f, " (open after {} ms)", open.as_millis())?;
        }
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// How a connection ended, beyond its reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseFlags {
    /// This runtime cannot use the transport at all: never try it again.
    pub permanent: bool,
    /// A refusal every transport would get (HTTP 400, 401, 403: a bad topic, no valid token):
    /// the subscription ends with an error.
    pub fatal: bool,
    /// The gateway's code (§6), when it gave one.
    pub code: Option<String>,
}

/// What a transport adapter reports besides open and close: a message, or what the driver
/// read around one.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A decoded message.
    Message(Message),
    /// A message that could not be decoded.
    Undecodable(Undecodable),
    /// A long-poll answer's cursor: where the next poll continues.
    Cursor(EventId),
}

/// What the controller asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection over `transport`, resuming after `since`, and report on it as `conn`.
    Connect {
        /// Its handle.
        conn: ConnId,
        /// The transport.
        transport: Transport,
        /// Resume after this id.
        since: Option<EventId>,
    },
    /// Close this connection; report nothing more on it.
    Close {
        /// Its handle.
        conn: ConnId,
    },
}

/// The transport events come from changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportChange {
    /// The transport before (`None`: none yet, or none while reconnecting).
    pub from: Option<Transport>,
    /// The transport now (`None`: every transport failed; the client waits to start over).
    pub to: Option<Transport>,
    /// Why, with the reasons of every failure since the last change.
    pub reason: String,
}

impl fmt::Display for TransportChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |t: Option<Transport>| t.map_or("none", Transport::as_str);
        write!(
            f,
            "{} → {}: {}",
            name(self.from),
            name(self.to),
            self.reason
        )
    }
}

/// An error the gateway or the controller reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// A code of §6, or `no_transport`, or `refused` when the gateway gave none.
    pub code: String,
    /// The reason.
    pub reason: String,
}

impl fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

/// What the controller tells the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// An event: once per id, in id order, whatever the transports do.
    Event(Event),
    /// A notice, once even when two overlapping transports report it.
    Notice(Notice),
    /// The transport events come from changed.
    Transport(TransportChange),
    /// An `error` from the gateway, or a refusal that ends the subscription (then
    /// [`Controller::is_closed`]).
    Error(ErrorReport),
    /// An attempt ended on its own (failed or dropped): its log entry. The JavaScript client
    /// has only the log for this.
    Ended(LogEntry),
}

/// The controller's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// The transports in order of preference (default [`Transport::DEFAULT_ORDER`]).
    pub order: Vec<Transport>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Retry delays.
    pub backoff: Backoff,
    /// Resume after this id.
    pub since: Option<EventId>,
    /// Transports whose events may come out of id order (WebTransport's unordered modes):
    /// their events are deduplicated by id instead of by order.
    pub unordered: Vec<Transport>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            order: Transport::DEFAULT_ORDER.to_vec(),
            timeouts: Timeouts::default(),
            backoff: Backoff::default(),
            since: None,
            unordered: Vec::new(),
        }
    }
}

impl ControllerConfig {
    /// Sets the order of preference.
    pub fn with_order(mut self, order: impl IntoIterator<Item = Transport>) -> Self {
        self.order = order.into_iter().collect();
        self
    }

    /// Sets the deadlines.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the retry delays.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Resumes after `since`.
    pub fn with_since(mut self, since: Option<EventId>) -> Self {
        self.since = since;
        self
    }
}

#[derive(Debug)]
struct Attempt {
    name: Transport,
    role: Role,
    since: Option<EventId>,
    open: bool,
    done: bool,
    opened_at: Instant,
    top: Option<EventId>,
    entry: usize,
    /// The confirmation deadline, then the catch-up deadline of an open probe.
    deadline: Option<(Instant, Deadline)>,
    /// SSE: the idle deadline.
    idle: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Confirm,
    CatchUp,
}

#[derive(Debug, Clone, Copy)]
enum Retry {
    /// Start over from the best transport.
    Start,
    /// Try the chain from this index (after quick drops).
    Chain(usize),
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Attempt(ConnId, Deadline),
    Idle(ConnId),
    Retry,
    Probe,
}

/// The fallback-and-switch-back state machine. See the module documentation.
pub struct Controller {
    order: Vec<Transport>,
    timeouts: Timeouts,
    backoff: Backoff,
    unordered: HashSet<Transport>,
    random: Box<dyn FnMut() -> f64 + Send>,
    cursor: Cursor,
    attempts: BTreeMap<ConnId, Attempt>,
    next_conn: u64,
    active: Option<ConnId>,
    pending: Option<ConnId>,
    probe: Option<ConnId>,
    current: Option<Transport>,
    log: Vec<LogEntry>,
    log_generation: u64,
    fails: HashMap<Transport, u32>,
    retry_at: HashMap<Transport, Instant>,
    off: HashSet<Transport>,
    reasons: Vec<String>,
    rounds: u32,
    quick: u32,
    retry: Option<(Instant, Retry)>,
    probe_timer: Option<(Instant, Transport)>,
    closed: bool,
    actions: VecDeque<Action>,
    outputs: VecDeque<Output>,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("order", &self.order)
            .field("active", &self.active)
            .field("pending", &self.pending)
            .field("probe", &self.probe)
            .field("cursor", &self.cursor)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller; nothing happens before [`Controller::start`].
    pub fn new(config: ControllerConfig, _now: Instant) -> Self {
        Self {
            order: config.order,
            timeouts: config.timeouts,
            backoff: config.backoff,
            unordered: config.unordered.into_iter().collect(),
            random: Box::new(|| 0.5),
            cursor: Cursor::new(config.since),
            attempts: BTreeMap::new(),
            next_conn: 0,
            active: None,
            pending: None,
            probe: None,
            current: None,
            log: Vec::new(),
            log_generation: 0,
            fails: HashMap::new(),
            retry_at: HashMap::new(),
            off: HashSet::new(),
            reasons: Vec::new(),
            rounds: 0,
            quick: 0,
            retry: None,
            probe_timer: None,
            closed: false,
            actions: VecDeque::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Sets the source of randomness for the backoff jitter, values in [0, 1] (default: a
    /// constant 0.5, no jitter; the async [`Subscription`](crate::Subscription) gives it a
    /// random one).
    pub fn set_random(&mut self, random: impl FnMut() -> f64 + Send + 'static) {
        self.random = Box::new(random);
    }

    /// Starts: tries the first transport.
    pub fn start(&mut self, now: Instant) {
        self.reasons.clear();
        self.chain(0, now);
    }

    /// The transport events come from now (`None` while connecting or reconnecting).
    pub fn transport(&self) -> Option<Transport> {
        self.active
            .and_then(|a| self.attempts.get(&a))
            .map(|a| a.name)
    }

    /// The active connection.
    pub fn active(&self) -> Option<ConnId> {
        self.active
    }

    /// The cursor: the last id delivered.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Every attempt, oldest first.
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }

    /// Changes whenever the log does.
    pub fn log_generation(&self) -> u64 {
        self.log_generation
    }

    /// The deadlines.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Whether the subscription ended (closed, or refused).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next thing to do: open or close a connection.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing to tell the application.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Controller::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers().map(|(at, _)| at).min()
    }

    fn timers(&self) -> impl Iterator<Item = (Instant, Timer)> + '_ {
        let attempts = self.attempts.iter().flat_map(|(&conn, a)| {
            let deadline = a.deadline.map(|(at, d)| (at, Timer::Attempt(conn, d)));
            let idle = a.idle.map(|at| (at, Timer::Idle(conn)));
            deadline.into_iter().chain(idle)
        });
        let retry = self.retry.map(|(at, _)| (at, Timer::Retry));
        let probe = self.probe_timer.map(|(at, _)| (at, Timer::Probe));
        attempts.chain(retry).chain(probe)
    }

    /// Fires every deadline due at `now`, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, timer)) = self
            .timers()
            .filter(|(at, _)| *at <= now)
            .min_by_key(|(at, _)| *at)
        {
            match timer {
                Timer::Attempt(conn, Deadline::Confirm) => {
                    let Some(a) = self.attempts.get_mut(&conn) else {
                        continue;
                    };
                    a.deadline = None;
                    let reason = format!(
                        "no answer within {} ms{}",
                        self.timeouts.connect(a.name).as_millis(),
                        a.name.timeout_hint()
                    );
                    self.fail(conn, reason, now);
                }
                Timer::Attempt(conn, Deadline::CatchUp) => {
                    if let Some(a) = self.attempts.get_mut(&conn) {
                        a.deadline = None;
                    }
                    let reason = format!(
                        "subscribed {} ms ago from an earlier id",
                        self.timeouts.catch_up.as_millis()
                    );
                    self.promote(conn, reason, now);
                }
                Timer::Idle(conn) => {
                    if let Some(a) = self.attempts.get_mut(&conn) {
                        a.idle = None;
                    }
                    let reason = format!(
                        "nothing received for {} ms, not even a heartbeat",
                        self.timeouts.sse_idle.as_millis()
                    );
                    self.fail(conn, reason, now);
                }
                Timer::Retry => match self.retry.take() {
                    Some((_, Retry::Start)) => self.start(now),
                    Some((_, Retry::Chain(from))) => self.chain(from, now),
                    None => {}
                },
                Timer::Probe => {
                    if let Some((_, name)) = self.probe_timer.take() {
                        if !self.closed && self.probe.is_none() && self.active.is_some() {
                            self.attempt(name, Role::Probe, now);
                        }
                    }
                }
            }
        }
    }

    /// The gateway confirmed the subscription on `conn`.
    pub fn handle_open(&mut self, conn: ConnId, now: Instant) {
        let Some(a) = self.attempts.get_mut(&conn) else {
            return;
        };
        if a.done || a.open {
            return;
        }
        a.open = true;
        a.opened_at = now;
        a.deadline = None;
        let entry = &mut self.log[a.entry];
        entry.outcome = Outcome::Open;
        entry.open_after = Some(now - entry.start);
        self.log_generation += 1;
        self.alive(conn, now);
        if self.pending == Some(conn) {
            let reason = if self.reasons.is_empty() {
                "start".to_owned()
            } else {
                self.reasons.join("; ")
            };
            self.promote(conn, reason, now);
        } else if self.probe == Some(conn) {
            self.caught_up(conn, now);
        }
    }

    /// Any sign of life on `conn` (SSE comments keep an SSE stream from being declared dead).
    pub fn handle_activity(&mut self, conn: ConnId, now: Instant) {
        self.alive(conn, now);
    }

    /// A message on `conn`. Any message also confirms the subscription.
    pub fn handle_message(&mut self, conn: ConnId, incoming: Incoming, now: Instant) {
        match self.attempts.get(&conn) {
            Some(a) if !a.done => {
                if !a.open {
                    self.handle_open(conn, now);
                }
            }
            _ => return,
        }
        let Some(a) = self.attempts.get_mut(&conn).filter(|a| !a.done) else {
            return;
        };
        let name = a.name;
        match incoming {
            Incoming::Message(Message::Event(event)) => {
                let entry = &mut self.log[a.entry];
                if entry.first_event_after.is_none() {
                    entry.first_event_after = Some(now - entry.start);
                    self.log_generation += 1;
                }
                a.top = Some(event.id.clone());
                // An epoch change without a `reset` would break the seq comparison silently.
                if let Some(last) = self.cursor.last_id() {
                    if last.epoch() != event.id.epoch() {
                        let reset = Notice::Reset {
                            requested: last.to_string(),
                            epoch: event.id.epoch().to_owned(),
                            implicit: true,
                        };
                        if self.cursor.notice(&reset) {
                            self.outputs.push_back(Output::Notice(reset));
                        }
                    }
                }
                let new = if self.unordered.contains(&name) {
                    self.cursor.event_unordered(&event.id)
                } else {
                    self.cursor.event(&event.id)
                };
                if new {
                    self.outputs.push_back(Output::Event(event));
                }
                self.alive(conn, now);
                if self.probe == Some(conn) {
                    self.caught_up(conn, now);
                }
                return;
            }
            Incoming::Cursor(id) => {
                // The first long poll's position: adopted only when nothing else gave one, so
                // a fresh subscription that falls over to another transport resumes there.
                if self.cursor.last_id().is_none() {
                    self.cursor.set(id);
                }
            }
            Incoming::Undecodable(undecodable) => {
                // Skipped with a warning, resume point past it (§3.1).
                if let Some(id) = &undecodable.id {
                    self.cursor.event(id);
                }
                self.outputs
                    .push_back(Output::Notice(Notice::Undecodable(undecodable)));
            }
            Incoming::Message(Message::Notice(notice)) => {
                if self.cursor.notice(&notice) {
                    self.outputs.push_back(Output::Notice(notice));
                }
            }
            Incoming::Message(Message::Error { code, reason, .. }) => {
                self.outputs
                    .push_back(Output::Error(ErrorReport { code, reason }));
            }
            Incoming::Message(_) => {}
        }
        self.alive(conn, now);
    }

    /// `conn` ended (or could not start), with a reason.
    pub fn handle_close(
        &mut self,
        conn: ConnId,
        reason: impl Into<String>,
        flags: CloseFlags,
        now: Instant,
    ) {
        self.ended(conn, reason.into(), flags, now);
    }

    /// Stops everything: every connection, every timer.
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.retry = None;
        self.probe_timer = None;
        for conn in [self.active, self.pending, self.probe]
            .into_iter()
            .flatten()
        {
            if self.finish(
                conn,
                Outcome::Closed,
                "closed by the client".to_owned(),
                now,
            ) {
                self.actions.push_back(Action::Close { conn });
            }
        }
        self.active = None;
        self.pending = None;
        self.probe = None;
        self.attempts.clear();
    }

    fn backoff_delay(&mut self, n: u32) -> Duration {
        let random = (self.random)();
        self.backoff.delay(n, random)
    }

    fn attempt(&mut self, name: Transport, role: Role, now: Instant) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.log.push(LogEntry {
            transport: name,
            role,
            start: now,
            outcome: Outcome::Connecting,
            reason: String::new(),
            open_after: None,
            first_event_after: None,
            ended_after: None,
        });
        self.log_generation += 1;
        let since = self.cursor.last_id().cloned();
        self.attempts.insert(
            conn,
            Attempt {
                name,
                role,
                since: since.clone(),
                open: false,
                done: false,
                opened_at: now,
                top: None,
                entry: self.log.len() - 1,
                deadline: Some((now + self.timeouts.connect(name), Deadline::Confirm)),
                idle: None,
            },
        );
        match role {
            Role::Connect => self.pending = Some(conn),
            Role::Probe => self.probe = Some(conn),
        }
        self.actions.push_back(Action::Connect {
            conn,
            transport: name,
            since,
        });
    }

    fn index(&self, name: Transport) -> usize {
        self.order
            .iter()
            .position(|&t| t == name)
            .unwrap_or(self.order.len())
    }

    fn chain(&mut self, from: usize, now: Instant) {
        if self.closed {
            return;
        }
        let mut i = from;
        while i < self.order.len() && self.off.contains(&self.order[i]) {
            i += 1;
        }
        if i < self.order.len() {
            self.attempt(self.order[i], Role::Connect, now);
            return;
        }
        if self.order.iter().all(|t| self.off.contains(t)) {
            self.close(now);
            self.outputs.push_back(Output::Error(ErrorReport {
                code: "no_transport".to_owned(),
                reason: format!("no usable transport: {}", self.reasons.join("; ")),
            }));
            return;
        }
        let d = self.backoff_delay(self.rounds);
        self.rounds += 1;
        let reason = format!(
            "every transport failed ({}); retrying in {} ms",
            self.reasons.join("; "),
            d.as_millis()
        );
        if self.current.is_some() {
            self.outputs.push_back(Output::Transport(TransportChange {
                from: self.current,
                to: None,
                reason,
            }));
        }
        self.current = None;
        self.retry = Some((now + d, Retry::Start));
    }

    fn alive(&mut self, conn: ConnId, now: Instant) {
        let idle = self.timeouts.sse_idle;
        if let Some(a) = self.attempts.get_mut(&conn) {
            if a.name == Transport::Sse && a.open && !a.done {
                a.idle = Some(now + idle);
            }
        }
    }

    fn fail(&mut self, conn: ConnId, reason: String, now: Instant) {
        if self.attempts.get(&conn).is_none_or(|a| a.done) {
            return;
        }
        self.actions.push_back(Action::Close { conn });
        self.ended(conn, reason, CloseFlags::default(), now);
    }

    fn finish(&mut self, conn: ConnId, outcome: Outcome, reason: String, now: Instant) -> bool {
        let Some(a) = self.attempts.get_mut(&conn) else {
            return false;
        };
        if a.done {
            return false;
        }
        a.done = true;
        a.deadline = None;
        a.idle = None;
        let entry = &mut self.log[a.entry];
        entry.outcome = outcome;
        entry.reason = reason;
        entry.ended_after = Some(now - entry.start);
        self.log_generation += 1;
        true
    }

    fn ended(&mut self, conn: ConnId, reason: String, flags: CloseFlags, now: Instant) {
        let Some(a) = self.attempts.get(&conn) else {
            return;
        };
        let (was_open, name, role, opened_at, entry) =
            (a.open, a.name, a.role, a.opened_at, a.entry);
        let outcome = if was_open {
            Outcome::Closed
        } else {
            Outcome::Failed
        };
        if !self.finish(conn, outcome, reason.clone(), now) {
            return;
        }
        if flags.permanent {
            self.off.insert(name);
        }
        if flags.fatal {
            // Refused for a reason every transport would meet. Closed first, so whoever sees
            // the error sees a closed subscription.
            self.close(now);
            self.outputs.push_back(Output::Error(ErrorReport {
                code: flags.code.unwrap_or_else(|| "refused".to_owned()),
                reason: format!("{name}: {reason}"),
            }));
            return;
        }
        self.outputs
            .push_back(Output::Ended(self.log[entry].clone()));
        if !was_open || role == Role::Probe {
            let fails = self.fails.entry(name).or_default();
            *fails += 1;
            let n = *fails - 1;
            let d = self.backoff_delay(n);
            self.retry_at.insert(name, now + d);
        }
        if self.probe == Some(conn) {
            self.probe = None;
            self.attempts.remove(&conn);
            self.schedule(now);
        } else if self.active == Some(conn) {
            self.active = None;
            self.attempts.remove(&conn);
            self.quick = if now - opened_at < self.timeouts.stable {
                self.quick + 1
            } else {
                0
            };
            let why = format!("{name} dropped: {reason}");
            if let Some(probe) = self
                .probe
                .filter(|p| self.attempts.get(p).is_some_and(|a| a.open))
            {
                let probe_name = self.attempts[&probe].name;
                self.promote(
                    probe,
                    format!("{why}; {probe_name} was already subscribed"),
                    now,
                );
                return;
            }
            // A transport that worked gets the first try again (a restart, a cut connection);
            // only if that attempt fails does the next one take over, from the last id.
            self.reasons = vec![why];
            let i = self.index(name);
            if self.quick == 0 {
                self.chain(i, now);
            } else {
                let d = self.backoff_delay(self.quick - 1);
                self.retry = Some((now + d, Retry::Chain(i)));
            }
        } else if self.pending == Some(conn) {
            self.pending = None;
            self.attempts.remove(&conn);
            self.reasons.push(format!("{name}: {reason}"));
            let next = self.index(name) + 1;
            self.chain(next, now);
        } else {
            self.attempts.remove(&conn);
        }
    }

    /// Makes `conn` the transport events come from, and closes the one it replaces.
    fn promote(&mut self, conn: ConnId, reason: String, now: Instant) {
        let Some(a) = self.attempts.get_mut(&conn) else {
            return;
        };
        a.deadline = None;
        let name = a.name;
        let old = self.active;
        if self.probe == Some(conn) {
            self.probe = None;
        }
        if self.pending == Some(conn) {
            self.pending = None;
        }
        for other in [old, self.pending].into_iter().flatten() {
            if self.finish(other, Outcome::Replaced, format!("replaced by {name}"), now) {
                self.actions.push_back(Action::Close { conn: other });
            }
            self.attempts.remove(&other);
        }
        self.pending = None;
        self.retry = None;
        self.active = Some(conn);
        self.rounds = 0;
        self.fails.insert(name, 0);
        self.reasons.clear();
        if self.current != Some(name) {
            self.outputs.push_back(Output::Transport(TransportChange {
                from: self.current,
                to: Some(name),
                reason,
            }));
            self.current = Some(name);
        }
        self.schedule(now);
    }

    /// Plans the next background attempt at a better transport than the active one.
    fn schedule(&mut self, now: Instant) {
        self.probe_timer = None;
        if self.closed || self.probe.is_some() {
            return;
        }
        let Some(active) = self.transport() else {
            return;
        };
        let mut best: Option<Transport> = None;
        for &t in &self.order[..self.index(active)] {
            if self.off.contains(&t) {
                continue;
            }
            let earlier = match best {
                None => true,
                Some(b) => self.retry_at.get(&t) < self.retry_at.get(&b),
            };
            if earlier {
                best = Some(t);
            }
        }
        let Some(name) = best else { return };
        let at = self.retry_at.get(&name).copied().unwrap_or(now).max(now);
        self.probe_timer = Some((at, name));
    }

    /// A probe takes over once it delivered the event the cursor is at (or nothing was
    /// delivered since it subscribed): from then on it carries everything the active one would.
    fn caught_up(&mut self, conn: ConnId, now: Instant) {
        let Some(a) = self.attempts.get(&conn) else {
            return;
        };
        if !a.open || a.done || self.probe != Some(conn) {
            return;
        }
        let last = self.cursor.last_id().cloned();
        if self.active.is_none() {
            self.promote(
                conn,
                "subscribed while no other transport was".to_owned(),
                now,
            );
        } else if a.top == last || a.since == last {
            let at = last.map_or("null".to_owned(), |id| id.to_string());
            self.promote(conn, format!("caught up at {at}"), now);
        } else if a.deadline.is_none() {
            let at = now + self.timeouts.catch_up;
            if let Some(a) = self.attempts.get_mut(&conn) {
                a.deadline = Some((at, Deadline::CatchUp));
            }
        }
    }
}

#[cfg(test)]
mod tests;
