//! The JavaScript client's `test/controller.test.mjs`, test for test (the names pair up; see
//! docs/CLIENTS.md), on a virtual clock with fake transports. The harness is `fakes.mjs`:
//! `Harness` plays FakeClock and FakeNet, `Conn` a FakeConn.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::{Data, Transport::*};

/// One connection the controller asked for; the test plays the gateway's part on it.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    name: Transport,
    since: Option<String>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Recorder {
    events: Vec<String>,
    notices: Vec<Notice>,
    transports: Vec<TransportChange>,
    errors: Vec<ErrorReport>,
}

struct Harness {
    ctrl: Controller,
    t0: Instant,
    now: Instant,
    conns: Vec<Conn>,
    unsupported: Vec<Transport>,
    rec: Recorder,
}

fn setup(order: &[Transport]) -> Harness {
    setup_with(order, Timeouts::default())
}

fn setup_with(order: &[Transport], timeouts: Timeouts) -> Harness {
    rig(ControllerConfig::default()
        .with_order(order.iter().copied())
        .with_timeouts(timeouts))
}

fn rig(config: ControllerConfig) -> Harness {
    let t0 = Instant::now();
    // Random fixed at 0.5: no jitter, as FakeClock.
    Harness {
        ctrl: Controller::new(config, t0),
        t0,
        now: t0,
        conns: Vec::new(),
        unsupported: Vec::new(),
        rec: Recorder::default(),
    }
}

/// A catch-up deadline that never comes in a test: a probe takes over only by catching up.
fn no_catch_up_deadline() -> Timeouts {
    Timeouts::default().with_catch_up(ms(1_000_000_000))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn id(n: &str) -> String {
    if n.contains(':') {
        n.to_owned()
    } else {
        format!("e:{n}")
    }
}

fn event(n: &str) -> Message {
    Message::Event(Event {
        id: id(n).parse().unwrap(),
        topic: "t".into(),
        ts: Some(1),
        data: Data::Json(json!({ "n": id(n) })),
    })
}

impl Harness {
    fn start(&mut self) {
        self.ctrl.start(self.now);
        self.pump();
    }

    /// Starts, and the first transport tried opens. Returns that connection.
    fn open_first(&mut self) -> usize {
        self.start();
        self.open(0)
    }

    /// The start most switch-back tests share: the first transport tried is refused at t=0, so
    /// the controller falls back to the next one, which opens. Returns that open connection.
    fn fall_back(&mut self) -> usize {
        self.start();
        self.fail(self.conns.len() - 1, "refused");
        self.open(self.conns.len() - 1)
    }

    /// The probe of the refused better transport, started 1000 ms later (backoff(0) with no
    /// jitter). Returns that connection.
    fn probe(&mut self) -> usize {
        let before = self.conns.len();
        self.advance(1000);
        assert_eq!(self.conns.len(), before + 1, "a probe after 1000 ms");
        before
    }

    /// [`Self::fall_back`], then the fallback delivers `before`, the probe starts, the fallback
    /// delivers `during`, and the probe opens (subscribed from the last id before it started).
    /// Returns (fallback, probe).
    fn fall_back_and_probe(&mut self, before: &[&str], during: &[&str]) -> (usize, usize) {
        let fallback = self.fall_back();
        self.events(fallback, before);
        let probe = self.probe();
        self.events(fallback, during);
        (fallback, self.open(probe))
    }

    /// Carries out the controller's actions (FakeNet) and records its outputs.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(action) = self.ctrl.poll_action() {
                busy = true;
                match action {
                    Action::Connect {
                        conn,
                        transport,
                        since,
                    } => {
                        self.conns.push(Conn {
                            id: conn,
                            name: transport,
                            since: since.map(|s| s.to_string()),
                            closed: false,
                        });
                        if self.unsupported.contains(&transport) {
                            let flags = CloseFlags {
                                permanent: true,
                                ..CloseFlags::default()
                            };
                            self.ctrl.handle_close(
                                conn,
                                format!("unsupported: no {transport}"),
                                flags,
                                self.now,
                            );
                        }
                    }
                    Action::Close { conn } => {
                        if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) {
                            c.closed = true;
                        }
                    }
                }
            }
            while let Some(output) = self.ctrl.poll_output() {
                busy = true;
                match output {
                    Output::Event(e) => self.rec.events.push(e.id.to_string()),
                    Output::Notice(n) => self.rec.notices.push(n),
                    Output::Transport(t) => self.rec.transports.push(t),
                    Output::Error(e) => self.rec.errors.push(e),
                    Output::Ended(_) => {}
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// Moves time forward, firing due timers in order (FakeClock.advance).
    fn advance(&mut self, by: u64) {
        let end = self.now + ms(by);
        while let Some(at) = self.ctrl.poll_timeout().filter(|at| *at <= end) {
            self.now = at;
            self.ctrl.handle_timeout(at);
            self.pump();
        }
        self.now = end;
    }

    fn clock(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    /// Index of the latest connection of a transport (FakeNet.last).
    fn last(&self, name: Transport) -> usize {
        self.conns
            .iter()
            .rposition(|c| c.name == name)
            .expect("a connection")
    }

    fn at(&self, i: usize) -> &Conn {
        &self.conns[i]
    }

    fn tail(&self) -> &Conn {
        self.conns.last().unwrap()
    }

    fn live(&self) -> usize {
        self.conns.iter().filter(|c| !c.closed).count()
    }

    fn open(&mut self, i: usize) -> usize {
        self.ctrl.handle_open(self.conns[i].id, self.now);
        self.pump();
        i
    }

    fn events(&mut self, i: usize, ids: &[&str]) -> usize {
        for n in ids {
            self.ctrl
                .handle_message(self.conns[i].id, Incoming::Message(event(n)), self.now);
            self.pump();
        }
        i
    }

    fn notice(&mut self, i: usize, incoming: Incoming) -> usize {
        self.ctrl
            .handle_message(self.conns[i].id, incoming, self.now);
        self.pump();
        i
    }

    fn fail(&mut self, i: usize, reason: &str) {
        self.fail_with(i, reason, CloseFlags::default());
    }

    fn fail_with(&mut self, i: usize, reason: &str, flags: CloseFlags) {
        self.conns[i].closed = true;
        self.ctrl
            .handle_close(self.conns[i].id, reason, flags, self.now);
        self.pump();
    }

    fn log(&self) -> Vec<(Transport, Outcome)> {
        self.ctrl
            .log()
            .iter()
            .map(|e| (e.transport, e.outcome))
            .collect()
    }
}

fn notice(n: Notice) -> Incoming {
    Incoming::Message(Message::Notice(n))
}

fn gap(after: &str, through: &str) -> Notice {
    Notice::Gap {
        topic: "t".into(),
        after: after.into(),
        lost_through: through.into(),
    }
}

fn pairs(h: &Harness) -> Vec<(Option<Transport>, Option<Transport>)> {
    h.rec.transports.iter().map(|t| (t.from, t.to)).collect()
}

#[test]
fn fallback_in_the_default_order_with_a_reason_for_every_step() {
    let mut h = setup(&Transport::DEFAULT_ORDER);
    h.unsupported.push(WebTransport);
    h.start();
    assert_eq!(
        h.conns.iter().map(|c| c.name).collect::<Vec<_>>(),
        [WebTransport, WebSocket]
    );
    h.fail(
        h.last(WebSocket),
        "closed before opening (code 1006): refused, or a proxy stripped Upgrade",
    );
    assert_eq!(h.tail().name, Sse);
    h.advance(3999);
    assert_eq!(h.conns.len(), 3, "sse still has time");
    h.advance(1);
    assert!(
        h.at(h.last(Sse)).closed,
        "a silent SSE attempt is closed at its deadline"
    );
    assert_eq!(h.tail().name, Poll);
    h.open(h.last(Poll));
    assert_eq!(h.ctrl.transport(), Some(Poll));
    assert_eq!(h.rec.transports.len(), 1);
    let change = &h.rec.transports[0];
    assert_eq!((change.from, change.to), (None, Some(Poll)));
    assert!(
        change
            .reason
            .contains("webtransport: unsupported: no webtransport"),
        "{}",
        change.reason
    );
    assert!(change
        .reason
        .contains("websocket: closed before opening (code 1006)"));
    assert!(change.reason.contains(
        "sse: no answer within 4000 ms, not even the stream preamble (a buffering proxy?)"
    ));
    assert_eq!(
        h.log(),
        [
            (WebTransport, Outcome::Failed),
            (WebSocket, Outcome::Failed),
            (Sse, Outcome::Failed),
            (Poll, Outcome::Open)
        ]
    );
    assert_eq!(h.ctrl.log()[2].ended_after, Some(ms(4000)));
    assert_eq!(h.ctrl.log()[3].open_after, Some(ms(0)));
}

#[test]
fn a_transport_that_is_unsupported_is_never_tried_again_one_that_failed_is_probed_with_backoff() {
    let mut h = setup(&Transport::DEFAULT_ORDER);
    h.unsupported.push(WebTransport);
    h.fall_back(); // webtransport unsupported, websocket refused, sse open
                   // websocket failed at t=0: probed at t=1000 (backoff(0) with no jitter), never webtransport.
    h.advance(999);
    assert_eq!(h.conns.len(), 3);
    h.advance(1);
    assert_eq!(h.tail().name, WebSocket);
    assert_eq!(h.conns.iter().filter(|c| c.name == WebTransport).count(), 1);
}

#[test]
fn backoff_base_doubling_to_the_cap_with_jitter() {
    let o = Backoff::default();
    let got: Vec<u128> = [0, 1, 2, 3, 4, 5, 6, 40]
        .iter()
        .map(|&n| o.delay(n, 0.5).as_millis())
        .collect();
    assert_eq!(got, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    assert_eq!(o.delay(0, 0.0), ms(750));
    assert_eq!(o.delay(0, 1.0), ms(1250));
    assert_eq!(o.delay(2, 0.5), ms(4000));
}

#[test]
fn probes_of_a_better_transport_that_keeps_failing_back_off_exponentially() {
    let mut h = setup(&[WebSocket, Poll]);
    h.fall_back();
    let mut times = Vec::new();
    for _ in 0..5 {
        let before = h.conns.len();
        while h.conns.len() == before {
            h.advance(1);
        }
        times.push(h.clock());
        h.fail(h.last(WebSocket), "refused");
    }
    // failed at 0 → probe at 1000; fails → +2000; → +4000; → +8000; → +16000
    assert_eq!(times, [1000, 3000, 7000, 15000, 31000]);
    assert_eq!(
        h.ctrl.transport(),
        Some(Poll),
        "the working transport carries on meanwhile"
    );
    let probes: Vec<Outcome> = h
        .ctrl
        .log()
        .iter()
        .filter(|e| e.role == Role::Probe)
        .map(|e| e.outcome)
        .collect();
    assert_eq!(probes, [Outcome::Failed; 5]);
}

#[test]
fn switch_back_once_the_better_transport_caught_up_no_loss_no_repetition_the_worse_one_closed() {
    let mut h = setup(&[WebSocket, Sse, Poll]);
    let (sse, ws) = h.fall_back_and_probe(&["1", "2"], &["3"]);
    assert_eq!(
        h.at(ws).since.as_deref(),
        Some("e:2"),
        "the probe resumes from lastId"
    );
    assert_eq!(
        h.ctrl.transport(),
        Some(Sse),
        "not caught up yet: the probe subscribed before e:3"
    );
    h.events(ws, &["3"]);
    assert_eq!(h.ctrl.transport(), Some(WebSocket));
    assert!(h.at(sse).closed);
    h.events(sse, &["4"]); // late, from the closed transport: ignored
    h.events(ws, &["4", "5"]);
    assert_eq!(h.rec.events, ["e:1", "e:2", "e:3", "e:4", "e:5"]);
    assert_eq!(pairs(&h), [(None, Some(Sse)), (Some(Sse), Some(WebSocket))]);
    assert!(h.rec.transports[1].reason.contains("caught up at e:3"));
    assert_eq!(
        h.ctrl
            .log()
            .iter()
            .find(|e| e.transport == Sse)
            .unwrap()
            .outcome,
        Outcome::Replaced
    );
    assert_eq!(
        h.ctrl.poll_timeout(),
        None,
        "on the best transport nothing more is planned"
    );
}

#[test]
fn overlapping_transports_every_id_once_in_order_whichever_delivers_first() {
    let mut h = setup(&[WebSocket, Poll]);
    let (poll, ws) = h.fall_back_and_probe(&["1"], &["2", "3"]);
    h.events(ws, &["2"]); // behind: duplicate
    h.events(poll, &["4"]);
    h.events(ws, &["3"]); // still behind
    assert_eq!(h.ctrl.transport(), Some(Poll));
    h.events(poll, &["5"]);
    h.events(ws, &["4", "5"]); // caught up at e:5
    assert_eq!(h.ctrl.transport(), Some(WebSocket));
    h.events(ws, &["6"]);
    assert_eq!(h.rec.events, ["e:1", "e:2", "e:3", "e:4", "e:5", "e:6"]);

    // The other way round: the probe runs ahead of the active transport.
    let mut h = setup_with(&[WebSocket, Poll], no_catch_up_deadline());
    let (poll, ws) = h.fall_back_and_probe(&["1", "2"], &["3"]);
    h.events(poll, &["4"]);
    h.events(ws, &["2", "3", "4", "5"]); // e:5 first from the probe: delivered, and it is caught up
    h.events(poll, &["5"]);
    assert_eq!(h.rec.events, ["e:1", "e:2", "e:3", "e:4", "e:5"]);
    assert_eq!(h.ctrl.transport(), Some(WebSocket));
}

#[test]
fn a_probe_that_subscribed_but_does_not_catch_up_takes_over_at_the_catch_up_deadline() {
    let mut h = setup(&[WebSocket, Poll]);
    h.fall_back_and_probe(&["1"], &["2"]);
    h.advance(4999);
    assert_eq!(h.ctrl.transport(), Some(Poll));
    h.advance(1);
    assert_eq!(h.ctrl.transport(), Some(WebSocket));
    assert!(h
        .rec
        .transports
        .last()
        .unwrap()
        .reason
        .contains("subscribed 5000 ms ago"));
}

#[test]
fn a_probe_whose_since_is_still_last_id_takes_over_as_soon_as_it_is_subscribed_idle_stream() {
    let mut h = setup(&[WebSocket, Poll]);
    h.fall_back_and_probe(&["7"], &[]);
    assert_eq!(h.ctrl.transport(), Some(WebSocket));
}

#[test]
fn after_a_drop_the_same_transport_reconnects_from_last_id_then_the_next_one_takes_over_from_last_id(
) {
    let mut h = setup(&[WebSocket, Sse, Poll]);
    let ws = h.open_first();
    h.events(ws, &["1", "2", "3"]);
    h.advance(5000);
    h.fail(ws, "closed (code 1006)");
    assert_eq!(h.ctrl.transport(), None);
    let again = h.conns.len() - 1;
    assert_eq!(h.at(again).name, WebSocket);
    assert_eq!(h.at(again).since.as_deref(), Some("e:3"));
    h.fail(
        again,
        "closed before opening (code 1006): refused, or a proxy stripped Upgrade",
    );
    let sse = h.conns.len() - 1;
    assert_eq!(h.at(sse).name, Sse);
    assert_eq!(h.at(sse).since.as_deref(), Some("e:3"));
    h.open(sse);
    h.events(sse, &["3", "4"]);
    assert_eq!(h.rec.events, ["e:1", "e:2", "e:3", "e:4"]);
    assert_eq!(
        pairs(&h),
        [(None, Some(WebSocket)), (Some(WebSocket), Some(Sse))]
    );
    assert!(h.rec.transports[1]
        .reason
        .contains("websocket dropped: closed (code 1006); websocket: closed before opening"));
}

#[test]
fn a_connection_that_keeps_dropping_right_after_it_opens_is_retried_with_backoff() {
    let mut h = setup(&[WebSocket, Poll]);
    let ws = h.open_first();
    h.fail(ws, "closed (code 1008: token expired)");
    assert_eq!(h.conns.len(), 1, "not at once: it dropped within `stable`");
    h.advance(1000);
    assert_eq!(h.conns.len(), 2);
    let ws = h.open(h.last(WebSocket));
    h.fail(ws, "again");
    h.advance(1999);
    assert_eq!(h.conns.len(), 2);
    h.advance(1);
    assert_eq!(h.conns.len(), 3);
    assert_eq!(h.ctrl.transport(), None);
}

#[test]
fn when_every_transport_fails_the_chain_starts_over_from_the_best_after_a_backoff() {
    let mut h = setup(&[WebSocket, Poll]);
    let ws = h.open_first();
    h.advance(2000);
    h.fail(ws, "gateway gone");
    h.fail(h.last(WebSocket), "refused");
    h.fail(h.last(Poll), "fetch failed");
    assert_eq!(
        h.rec.transports.last().unwrap(),
        &TransportChange {
            from: Some(WebSocket),
            to: None,
            reason: "every transport failed (websocket dropped: gateway gone; websocket: refused; poll: fetch failed); retrying in 1000 ms".into(),
        }
    );
    let n = h.conns.len();
    h.advance(1000);
    assert_eq!(h.conns.len(), n + 1);
    assert_eq!(h.tail().name, WebSocket);
    h.fail(h.last(WebSocket), "refused");
    h.fail(h.last(Poll), "fetch failed");
    h.advance(1999);
    assert_eq!(h.conns.len(), n + 2, "second round waits 2000 ms");
    h.advance(1);
    assert_eq!(h.conns.len(), n + 3);
}

#[test]
fn an_sse_stream_silent_past_sse_idle_is_dropped_comments_keep_it_alive() {
    let mut h = setup(&[Sse, Poll]);
    let sse = h.open_first();
    h.advance(44000);
    h.ctrl.handle_activity(h.conns[sse].id, h.now); // a heartbeat comment
    h.advance(44000);
    assert_eq!(h.ctrl.transport(), Some(Sse));
    h.advance(1000);
    assert!(h.at(sse).closed);
    assert_eq!(
        h.ctrl.log()[0].reason,
        "nothing received for 45000 ms, not even a heartbeat"
    );
    assert_eq!(h.tail().name, Sse, "it had worked: one more try");
}

#[test]
fn gap_reset_lagged_unavailable_available_surfaced_once_each_even_from_overlapping_transports() {
    let mut h = setup_with(&[WebSocket, Poll], no_catch_up_deadline());
    // e:2 while the probe starts: the probe (since e:1) is behind and both stay open.
    let (poll, ws) = h.fall_back_and_probe(&["1"], &["2"]);
    assert_eq!(h.ctrl.transport(), Some(Poll));
    h.notice(poll, notice(gap("e:2", "e:9")));
    h.notice(ws, notice(gap("e:2", "e:9")));
    h.notice(
        poll,
        notice(Notice::Lagged {
            last_delivered: Some("e:1".into()),
        }),
    );
    h.notice(
        poll,
        notice(Notice::Unavailable {
            reason: "redis".into(),
        }),
    );
    h.notice(
        ws,
        notice(Notice::Unavailable {
            reason: "redis".into(),
        }),
    );
    h.notice(ws, notice(Notice::Available));
    h.notice(poll, notice(Notice::Available));
    let kinds: Vec<&str> = h.rec.notices.iter().map(Notice::kind).collect();
    assert_eq!(kinds, ["gap", "lagged", "unavailable", "available"]);
    h.events(poll, &["10"]);
    // A gap that another transport already delivered past is no loss.
    h.notice(ws, notice(gap("e:1", "e:5")));
    assert_eq!(h.rec.notices.len(), 4);
    let reset = || Notice::Reset {
        requested: "e:10".into(),
        epoch: "f".into(),
        implicit: false,
    };
    h.notice(ws, notice(reset()));
    h.notice(poll, notice(reset()));
    assert_eq!(h.rec.notices.len(), 5);
    assert_eq!(
        h.ctrl.cursor().last_id().unwrap().to_string(),
        "f:0",
        "resumes in the new epoch, not reset again"
    );
    h.events(ws, &["f:1", "f:2"]);
    h.events(poll, &["f:1"]);
    // An epoch change with no reset is surfaced as one.
    h.events(ws, &["g:1"]);
    assert_eq!(
        h.rec.notices.last().unwrap(),
        &Notice::Reset {
            requested: "f:2".into(),
            epoch: "g".into(),
            implicit: true
        }
    );
    assert_eq!(h.rec.events, ["e:1", "e:2", "e:10", "f:1", "f:2", "g:1"]);
    h.notice(
        ws,
        notice(Notice::Expired {
            reason: "token expired".into(),
        }),
    );
    assert_eq!(h.rec.notices.last().unwrap().kind(), "expired");
}

#[test]
fn an_undecodable_event_is_surfaced_and_the_resume_point_moves_past_it() {
    let mut h = setup(&[Poll]);
    let poll = h.open_first();
    h.events(poll, &["1"]);
    let undecodable = Undecodable {
        id: Some("e:2".parse().unwrap()),
        reason: "bad json".into(),
    };
    h.notice(poll, Incoming::Undecodable(undecodable));
    h.events(poll, &["2", "3"]);
    assert_eq!(h.rec.events, ["e:1", "e:3"]);
    assert_eq!(h.rec.notices[0].kind(), "undecodable");
}

#[test]
fn the_first_poll_cursor_gives_a_fresh_subscription_its_resume_point() {
    let mut h = setup(&[Poll, Sse]);
    let poll = h.open_first();
    h.notice(poll, Incoming::Cursor("e:41".parse().unwrap()));
    assert_eq!(h.ctrl.cursor().last_id().unwrap().to_string(), "e:41");
    h.advance(5000);
    h.fail(poll, "fetch failed");
    assert_eq!(h.tail().since.as_deref(), Some("e:41"));
}

#[test]
fn a_refusal_every_transport_would_get_400_401_403_ends_the_subscription_with_an_error() {
    let mut h = setup(&Transport::DEFAULT_ORDER);
    h.unsupported.push(WebTransport);
    h.start();
    h.fail(h.last(WebSocket), "closed before opening");
    let sse = h.last(Sse);
    let flags = CloseFlags {
        fatal: true,
        code: Some("unauthorized".into()),
        permanent: false,
    };
    h.fail_with(sse, "HTTP 401 unauthorized: no token", flags);
    assert_eq!(
        h.rec.errors,
        [ErrorReport {
            code: "unauthorized".into(),
            reason: "sse: HTTP 401 unauthorized: no token".into()
        }]
    );
    assert!(h.ctrl.is_closed());
    assert_eq!(h.conns.len(), 3, "poll is not tried");
}

#[test]
fn no_usable_transport_at_all_is_an_error_not_an_endless_loop() {
    let mut h = setup(&[WebTransport]);
    h.unsupported.push(WebTransport);
    h.start();
    assert_eq!(h.rec.errors[0].code, "no_transport");
    assert!(h.ctrl.is_closed());
}

#[test]
fn close_stops_every_connection_and_timer() {
    let mut h = setup(&[WebSocket, Sse, Poll]);
    let sse = h.fall_back();
    h.events(sse, &["1"]);
    let ws = h.probe(); // connecting
    assert_eq!(h.live(), 2);
    h.ctrl.close(h.now);
    h.pump();
    assert_eq!(h.live(), 0);
    assert_eq!(h.ctrl.poll_timeout(), None);
    h.events(sse, &["2"]);
    h.open(ws);
    h.events(ws, &["3"]);
    h.advance(100_000);
    assert_eq!(h.rec.events, ["e:1"]);
    assert_eq!(h.conns.len(), 3, "nothing new after close()");
    assert!(h
        .ctrl
        .log()
        .iter()
        .all(|e| !matches!(e.outcome, Outcome::Connecting | Outcome::Open)));
}

#[test]
fn cursor_and_parse_id() {
    let id: EventId = "k3f9x2m1q0zz:42".parse().unwrap();
    assert_eq!((id.epoch(), id.seq()), ("k3f9x2m1q0zz", 42));
    assert!("bad".parse::<EventId>().is_err());
    assert!("a:b".parse::<EventId>().is_err());
    let mut c = Cursor::new(Some("e:5".parse().unwrap()));
    assert!(!c.event(&"e:5".parse().unwrap()));
    assert!(!c.event(&"e:4".parse().unwrap()));
    assert!(c.event(&"e:7".parse().unwrap()));
    assert_eq!(c.last_id().unwrap().to_string(), "e:7");
    // `new Cursor('nope')` throws in JavaScript; in Rust the id is checked by its parse.
    assert!("nope".parse::<EventId>().is_err());
}

#[test]
fn unordered_webtransport_modes_deliver_each_id_once_in_any_order() {
    // Rust only: WebTransport's stream-per-event and datagram modes.
    let mut config = ControllerConfig::default().with_order([WebTransport]);
    config.unordered = vec![WebTransport];
    let mut h = rig(config);
    let wt = h.open_first();
    h.events(wt, &["2", "1", "2", "3"]);
    assert_eq!(h.rec.events, ["e:2", "e:1", "e:3"]);
    assert_eq!(h.ctrl.cursor().last_id().unwrap().to_string(), "e:3");
}
