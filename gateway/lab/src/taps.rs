//! The lab's capture store: one bounded ring of wire records per tap, and the registry that
//! issues taps and hands them to connections.
//!
//! A tap id is a capability: 128 random bits, issued by [`Taps::issue`] to one client (its IP
//! address) and never listed. Only that client may attach a connection to it or read it, and
//! only by naming it; an id the lab did not issue records nothing.
//!
//! Bounds, all from `[lab]` ([`TapLimits`]):
//! - at most `taps_per_client` taps per client IP. Asking for one more reclaims that
//!   client's least recently active tap whose connections have all ended; when every one of
//!   them has a live connection, the request is refused (`429`);
//! - at most `max_connections` taps in all, reclaimed the same way across clients, and
//!   refused (`429`) when every tap has a live connection;
//! - at most `records_per_connection` records per tap, oldest dropped first;
//! - at most `max_record_bytes` bytes kept per record, its full length remembered.
//!
//! So memory stays under `max_connections × (records_per_connection + 2) × max_record_bytes`
//! plus small per-record overhead, whatever clients do (the `+ 2` is the pinned opening, see
//! [`TapRing`]).
//!
//! Recording copies bytes under a short lock and does nothing else: it runs on the
//! connection's own task, inside its reads and writes.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use streamgate_core::{
    Direction, RecordKind, Tap, TapConnection, TapRefused, TapRegistry, TapSink,
};

/// The bounds of the store (the gateway's `[lab]` settings of the same names; see the module
/// documentation for what each bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TapLimits {
    /// Most taps issued at once, all clients together.
    pub max_connections: usize,
    /// Most taps issued at once to one client IP.
    pub taps_per_client: usize,
    /// Records kept per tap, oldest dropped first.
    pub records_per_connection: usize,
    /// Bytes kept of one record; the rest is cut and its full length remembered.
    pub max_record_bytes: usize,
}

/// One recorded piece of a connection's traffic.
#[derive(Clone, Debug)]
pub struct Record {
    /// Position in its tap, from 1, never reused: `?after=<seq>` pages on it.
    pub seq: u64,
    /// The connection (or WebTransport session) it came from: a tap can outlive several
    /// (a reconnecting client, successive long polls).
    pub conn: u64,
    /// Microseconds since the lab started (a monotonic clock, shared by every tap).
    pub at_us: u64,
    /// Which way the bytes went: `In` from the client, `Out` to it.
    pub direction: Direction,
    /// What the bytes are (an HTTP head, WebSocket bytes, an SSE chunk, …).
    pub kind: RecordKind,
    /// How many bytes the transport handed over.
    pub len: usize,
    /// The first `min(len, max_record_bytes)` of them.
    pub bytes: Bytes,
}

impl Record {
    /// Whether bytes were cut off the end of this record.
    pub fn truncated(&self) -> bool {
        self.bytes.len() < self.len
    }
}

/// What a tap says about itself in `GET /lab/api/taps`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TapSummary {
    /// The tap id.
    pub id: String,
    /// The transport of its latest connection (`ws`, `sse`, `longpoll`, `webtransport`),
    /// `null` before the first.
    pub transport: Option<&'static str>,
    /// The client address (IP and port) of its latest connection: always the owner's IP,
    /// shown only to the owner.
    pub peer: Option<String>,
    /// When it was opened, milliseconds since the Unix epoch (for people).
    pub opened_unix_ms: u64,
    /// When it was opened, on the records' clock.
    pub opened_us: u64,
    /// When it last recorded, on the records' clock.
    pub last_us: u64,
    /// Connections that used it so far.
    pub connections: u64,
    /// Connections still open.
    pub live: usize,
    /// Records kept now.
    pub records: usize,
    /// The highest seq handed out.
    pub last_seq: u64,
    /// Records dropped by the ring.
    pub evicted: u64,
    /// Records cut to `max_record_bytes`.
    pub truncated: u64,
    /// Bytes that came from the client, counted in full even when not kept. WebTransport
    /// session events are descriptions, not wire bytes, and are not counted (here or below).
    pub bytes_in: u64,
    /// Bytes that went to the client, likewise.
    pub bytes_out: u64,
}

/// A tap's records, copied out of the ring so that annotation runs without the lock.
#[derive(Debug)]
pub struct TapSnapshot {
    /// The tap, as listed.
    pub summary: TapSummary,
    /// Pinned opening and ring together, by seq, without duplicates.
    pub records: Vec<Record>,
}

#[derive(Debug)]
struct RingState {
    records: VecDeque<Record>,
    /// The request head and response head that opened the latest connection, kept apart from
    /// the ring: after a minute of events the ring no longer holds the WebSocket upgrade, and
    /// the upgrade is the first thing a learner wants to see.
    opening: Vec<Record>,
    next_seq: u64,
    evicted: u64,
    truncated: u64,
    bytes_in: u64,
    bytes_out: u64,
    last_us: u64,
    transport: Option<&'static str>,
    peer: Option<SocketAddr>,
    connections: u64,
}

/// The records of one tap id.
#[derive(Debug)]
pub struct TapRing {
    id: String,
    /// The client the tap was issued to, the only one that may use it.
    owner: IpAddr,
    clock: Instant,
    opened_us: u64,
    opened_unix_ms: u64,
    records_per_connection: usize,
    max_record_bytes: usize,
    state: Mutex<RingState>,
}

/// A poisoned lock only means another connection's task panicked while recording; the ring
/// itself is still consistent (every update is a push, a pop or a counter), so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn micros_since(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl TapRing {
    fn new(id: String, owner: IpAddr, limits: &TapLimits, clock: Instant) -> Self {
        let now = micros_since(clock);
        Self {
            id,
            owner,
            clock,
            opened_us: now,
            opened_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            records_per_connection: limits.records_per_connection,
            max_record_bytes: limits.max_record_bytes,
            state: Mutex::new(RingState {
                records: VecDeque::new(),
                opening: Vec::new(),
                next_seq: 1,
                evicted: 0,
                truncated: 0,
                bytes_in: 0,
                bytes_out: 0,
                last_us: now,
                transport: None,
                peer: None,
                connections: 0,
            }),
        }
    }

    fn attach(&self, connection: TapConnection) {
        let mut state = lock(&self.state);
        state.transport = Some(connection.transport);
        state.peer = Some(connection.peer);
        state.connections += 1;
    }

    fn push(&self, conn: u64, direction: Direction, kind: RecordKind, bytes: &[u8]) {
        let kept = Bytes::copy_from_slice(&bytes[..bytes.len().min(self.max_record_bytes)]);
        let at_us = micros_since(self.clock);
        let mut state = lock(&self.state);
        let record = Record {
            seq: state.next_seq,
            conn,
            at_us,
            direction,
            kind,
            len: bytes.len(),
            bytes: kept,
        };
        state.next_seq += 1;
        state.last_us = at_us;
        if record.truncated() {
            state.truncated += 1;
        }
        if kind != RecordKind::WtSession {
            let counter = match direction {
                Direction::In => &mut state.bytes_in,
                Direction::Out => &mut state.bytes_out,
            };
            *counter += bytes.len() as u64;
        }
        if kind == RecordKind::HttpHead {
            match direction {
                // A request head starts a new exchange: it replaces the pinned opening.
                Direction::In => state.opening = vec![record.clone()],
                Direction::Out => {
                    if state.opening.len() == 1 && state.opening[0].conn == conn {
                        state.opening.push(record.clone());
                    }
                }
            }
        }
        if state.records.len() == self.records_per_connection {
            state.records.pop_front();
            state.evicted += 1;
        }
        state.records.push_back(record);
    }

    fn summary(&self, live: usize) -> TapSummary {
        let state = lock(&self.state);
        TapSummary {
            id: self.id.clone(),
            transport: state.transport,
            peer: state.peer.map(|peer| peer.to_string()),
            opened_unix_ms: self.opened_unix_ms,
            opened_us: self.opened_us,
            last_us: state.last_us,
            connections: state.connections,
            live,
            records: state.records.len(),
            last_seq: state.next_seq - 1,
            evicted: state.evicted,
            truncated: state.truncated,
            bytes_in: state.bytes_in,
            bytes_out: state.bytes_out,
        }
    }

    fn records(&self) -> Vec<Record> {
        let state = lock(&self.state);
        let mut records: Vec<Record> = state.opening.clone();
        let oldest_in_ring = state.records.front().map_or(u64::MAX, |r| r.seq);
        // The pinned opening is only worth sending when the ring no longer has it.
        records.retain(|r| r.seq < oldest_in_ring);
        records.extend(state.records.iter().cloned());
        records
    }

    fn last_us(&self) -> u64 {
        lock(&self.state).last_us
    }
}

/// What a connection's [`Tap`] writes to: its tap's ring, tagged with the connection.
#[derive(Debug)]
struct ConnectionSink {
    ring: Arc<TapRing>,
    conn: u64,
}

impl TapSink for ConnectionSink {
    fn record(&self, direction: Direction, kind: RecordKind, bytes: &[u8]) {
        self.ring.push(self.conn, direction, kind, bytes);
    }
}

/// Every tap of one gateway. See the module documentation for its bounds.
#[derive(Debug)]
pub struct Taps {
    limits: TapLimits,
    clock: Instant,
    taps: Mutex<HashMap<String, Arc<TapRing>>>,
}

/// Connections still holding a tap's ring: the registry holds one reference, each live
/// connection's sink one more.
fn live_connections(ring: &Arc<TapRing>) -> usize {
    Arc::strong_count(ring) - 1
}

/// The address a client is known by: an IPv4 client of a dual-stack listener
/// (`::ffff:127.0.0.1`) is the same client as on an IPv4 one.
pub fn client_ip(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

/// Why no tap was issued.
#[derive(Debug, PartialEq, Eq)]
pub enum IssueRefusal {
    /// This client holds `limit` taps, each with a live connection.
    ClientFull {
        /// `taps_per_client`.
        limit: usize,
    },
    /// The lab holds `limit` taps, each with a live connection.
    LabFull {
        /// `max_connections`.
        limit: usize,
    },
}

/// Why a tap named by a request cannot be used by its sender.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No such tap: never issued, or reclaimed since.
    Unknown,
    /// The tap was issued to another client.
    Foreign,
}

/// A fresh tap id: 128 bits from the operating system's CSPRNG (through `rand`'s thread
/// generator, which reseeds from it), base64url without padding: 22 characters, nothing to
/// escape in a URL.
fn new_tap_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

impl Taps {
    /// A store with no taps yet, its clock starting now.
    pub fn new(limits: TapLimits) -> Self {
        Self {
            limits,
            clock: Instant::now(),
            taps: Mutex::new(HashMap::new()),
        }
    }

    /// Microseconds since the lab started, the clock of every record.
    pub fn now_us(&self) -> u64 {
        micros_since(self.clock)
    }

    /// Issues a new tap to `owner`, reclaiming an idle one when a bound is reached.
    pub fn issue(&self, owner: IpAddr) -> Result<TapSummary, IssueRefusal> {
        let mut taps = lock(&self.taps);
        let held = taps.values().filter(|ring| ring.owner == owner).count();
        if held >= self.limits.taps_per_client {
            let reclaimed = reclaim(&mut taps, |ring| ring.owner == owner);
            if !reclaimed {
                return Err(IssueRefusal::ClientFull {
                    limit: self.limits.taps_per_client,
                });
            }
        }
        if taps.len() >= self.limits.max_connections && !reclaim(&mut taps, |_| true) {
            return Err(IssueRefusal::LabFull {
                limit: self.limits.max_connections,
            });
        }
        let id = loop {
            let id = new_tap_id();
            // 2^-128 per pair: the loop is for the proof, not for the odds.
            if !taps.contains_key(&id) {
                break id;
            }
        };
        let ring = Arc::new(TapRing::new(id.clone(), owner, &self.limits, self.clock));
        let summary = ring.summary(0);
        taps.insert(id, ring);
        Ok(summary)
    }

    /// The tap `id`, if `caller` owns it.
    fn owned(&self, id: &str, caller: IpAddr) -> Result<(usize, Arc<TapRing>), Denied> {
        let taps = lock(&self.taps);
        let ring = taps.get(id).ok_or(Denied::Unknown)?;
        if ring.owner != caller {
            return Err(Denied::Foreign);
        }
        Ok((live_connections(ring), Arc::clone(ring)))
    }

    /// The summaries of those of `ids` that `caller` owns, most recently opened first, and
    /// the ids it asked for that it cannot have (unknown and foreign alike: a caller learns
    /// nothing about ids that are not its own).
    pub fn summaries<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        caller: IpAddr,
    ) -> (Vec<TapSummary>, Vec<String>) {
        let mut summaries = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match self.owned(id, caller) {
                Ok((live, ring)) => summaries.push(ring.summary(live)),
                Err(_) => missing.push(id.to_owned()),
            }
        }
        summaries.sort_by(|a, b| b.opened_us.cmp(&a.opened_us).then(a.id.cmp(&b.id)));
        (summaries, missing)
    }

    /// One tap's records and summary, for its owner.
    pub fn snapshot(&self, id: &str, caller: IpAddr) -> Result<TapSnapshot, Denied> {
        let (live, ring) = self.owned(id, caller)?;
        Ok(TapSnapshot {
            summary: ring.summary(live),
            records: ring.records(),
        })
    }

    /// Forgets tap `id` at its owner's request (the page going away). Connections still
    /// attached keep recording into the ring until they end; nobody can read it any more.
    pub fn release(&self, id: &str, caller: IpAddr) -> Result<(), Denied> {
        self.owned(id, caller)?;
        lock(&self.taps).remove(id);
        Ok(())
    }
}

/// Removes the least recently active tap among those `eligible` with no live connection;
/// whether there was one.
fn reclaim(taps: &mut HashMap<String, Arc<TapRing>>, eligible: impl Fn(&TapRing) -> bool) -> bool {
    let idle = taps
        .iter()
        .filter(|(_, ring)| eligible(ring) && live_connections(ring) == 0)
        .min_by_key(|(_, ring)| ring.last_us())
        .map(|(id, _)| id.clone());
    match idle {
        Some(id) => {
            taps.remove(&id);
            true
        }
        None => false,
    }
}

impl TapRegistry for Taps {
    fn open(&self, id: &str, connection: TapConnection) -> Result<Option<Tap>, TapRefused> {
        let ring = match self.owned(id, client_ip(connection.peer)) {
            Ok((_, ring)) => ring,
            Err(Denied::Unknown) => {
                // The id is a capability: it is not logged.
                tracing::debug!(
                    peer = %connection.peer,
                    transport = connection.transport,
                    "lab= names a tap this gateway did not issue (or has reclaimed): not tapped"
                );
                return Ok(None);
            }
            Err(Denied::Foreign) => {
                return Err(TapRefused {
                    reason: format!(
                        "lab: this tap was issued to another client; {} may use only taps it \
                         asked for (POST /lab/api/taps)",
                        client_ip(connection.peer)
                    ),
                })
            }
        };
        ring.attach(connection);
        Ok(Some(Tap::new(Arc::new(ConnectionSink {
            ring,
            conn: connection.conn_id,
        }))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(taps: usize, per_client: usize, records: usize, bytes: usize) -> TapLimits {
        TapLimits {
            max_connections: taps,
            taps_per_client: per_client,
            records_per_connection: records,
            max_record_bytes: bytes,
        }
    }

    const OWNER: [u8; 4] = [127, 0, 0, 1];
    const STRANGER: [u8; 4] = [127, 0, 0, 2];

    fn ip(octets: [u8; 4]) -> IpAddr {
        IpAddr::from(octets)
    }

    fn connection(from: [u8; 4], conn_id: u64) -> TapConnection {
        TapConnection {
            transport: "ws",
            peer: SocketAddr::from((from, 40000)),
            conn_id,
        }
    }

    /// Issues a tap to `owner` and opens it for one of its connections.
    fn issue_and_open(registry: &Taps, owner: [u8; 4], conn_id: u64) -> (String, Tap) {
        let id = registry.issue(ip(owner)).unwrap().id;
        let tap = registry
            .open(&id, connection(owner, conn_id))
            .unwrap()
            .expect("an issued tap opens");
        (id, tap)
    }

    const WS: RecordKind = RecordKind::WsBytes { offset: 0 };

    #[test]
    fn issued_ids_are_128_random_bits_in_url_safe_text() {
        let registry = Taps::new(config(64, 64, 4, 64));
        let a = registry.issue(ip(OWNER)).unwrap().id;
        let b = registry.issue(ip(OWNER)).unwrap().id;
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 22, "{id}");
            assert_eq!(URL_SAFE_NO_PAD.decode(id).unwrap().len(), 16);
            assert!(streamgate_core::is_valid_tap_id(id), "{id}");
        }
    }

    #[test]
    fn only_issued_ids_record_and_only_for_their_owner() {
        let registry = Taps::new(config(8, 8, 8, 64));
        assert!(
            registry
                .open("chosen-by-client", connection(OWNER, 1))
                .unwrap()
                .is_none(),
            "an id the lab never issued records nothing"
        );
        let (id, tap) = issue_and_open(&registry, OWNER, 1);
        tap.record(Direction::Out, WS, b"mine");
        let refused = registry.open(&id, connection(STRANGER, 2)).unwrap_err();
        assert!(
            refused.reason.contains("issued to another client"),
            "{refused}"
        );
        assert_eq!(
            registry.snapshot(&id, ip(STRANGER)).unwrap_err(),
            Denied::Foreign
        );
        let (listed, missing) = registry.summaries([id.as_str(), "nope"], ip(STRANGER));
        assert!(listed.is_empty());
        assert_eq!(missing, [id.clone(), "nope".to_owned()]);
        let (listed, _) = registry.summaries([id.as_str()], ip(OWNER));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].peer.as_deref(), Some("127.0.0.1:40000"));
        assert_eq!(registry.snapshot(&id, ip(OWNER)).unwrap().records.len(), 1);
        // An IPv4 client of a dual-stack listener is the same client.
        let mapped = TapConnection {
            peer: "[::ffff:127.0.0.1]:40001".parse().unwrap(),
            ..connection(OWNER, 3)
        };
        assert!(registry.open(&id, mapped).unwrap().is_some());
    }

    #[test]
    fn the_ring_keeps_the_newest_records_and_counts_the_rest() {
        let registry = Taps::new(config(4, 4, 3, 1024));
        let (id, tap) = issue_and_open(&registry, OWNER, 1);
        for i in 0..5u8 {
            tap.record(Direction::Out, WS, &[i; 10]);
        }
        let snapshot = registry.snapshot(&id, ip(OWNER)).unwrap();
        let seqs: Vec<u64> = snapshot.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(snapshot.records[0].bytes[0], 2);
        assert_eq!(snapshot.summary.evicted, 2);
        assert_eq!(snapshot.summary.last_seq, 5);
        assert_eq!(
            snapshot.summary.bytes_out, 50,
            "every byte is counted, kept or not"
        );
    }

    #[test]
    fn records_are_cut_to_max_record_bytes_and_remember_their_length() {
        let registry = Taps::new(config(4, 4, 8, 16));
        let (id, tap) = issue_and_open(&registry, OWNER, 1);
        tap.record(Direction::In, WS, &[7; 100]);
        tap.record(Direction::In, WS, &[8; 16]);
        let snapshot = registry.snapshot(&id, ip(OWNER)).unwrap();
        let first = &snapshot.records[0];
        assert_eq!(
            (first.len, first.bytes.len(), first.truncated()),
            (100, 16, true)
        );
        let second = &snapshot.records[1];
        assert_eq!((second.len, second.bytes.len()), (16, 16));
        assert!(!second.truncated());
        assert_eq!(snapshot.summary.truncated, 1);
        assert_eq!(snapshot.summary.bytes_in, 116);
    }

    #[test]
    fn the_opening_heads_stay_when_the_ring_has_moved_on() {
        let registry = Taps::new(config(4, 4, 2, 1024));
        let (id, tap) = issue_and_open(&registry, OWNER, 1);
        tap.record(
            Direction::In,
            RecordKind::HttpHead,
            b"GET /ws HTTP/1.1\r\n\r\n",
        );
        tap.record(
            Direction::Out,
            RecordKind::HttpHead,
            b"HTTP/1.1 101 \r\n\r\n",
        );
        for _ in 0..5 {
            tap.record(Direction::Out, WS, b"\x81\x01x");
        }
        let records = registry.snapshot(&id, ip(OWNER)).unwrap().records;
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 6, 7], "pinned opening, then the ring");
    }

    #[test]
    fn a_client_holds_at_most_its_share_and_reclaims_only_its_idle_taps() {
        let registry = Taps::new(config(8, 2, 8, 64));
        let (a, tap_a) = issue_and_open(&registry, OWNER, 1);
        let (b, tap_b) = issue_and_open(&registry, OWNER, 2);
        assert_eq!(
            registry.issue(ip(OWNER)).unwrap_err(),
            IssueRefusal::ClientFull { limit: 2 },
            "both of its taps are live"
        );
        // Another client is not affected by the first one's share.
        let (other, _other_tap) = issue_and_open(&registry, STRANGER, 3);
        drop(tap_a);
        let c = registry.issue(ip(OWNER)).unwrap().id;
        assert_eq!(
            registry.snapshot(&a, ip(OWNER)).unwrap_err(),
            Denied::Unknown
        );
        assert!(registry.snapshot(&b, ip(OWNER)).is_ok());
        assert!(registry.snapshot(&c, ip(OWNER)).is_ok());
        assert!(registry.snapshot(&other, ip(STRANGER)).is_ok());
        drop(tap_b);
    }

    #[test]
    fn the_lab_holds_at_most_max_connections_taps() {
        let registry = Taps::new(config(2, 2, 8, 64));
        let (_, a) = issue_and_open(&registry, OWNER, 1);
        let (_, b) = issue_and_open(&registry, STRANGER, 2);
        assert_eq!(
            registry.issue(ip([127, 0, 0, 3])).unwrap_err(),
            IssueRefusal::LabFull { limit: 2 }
        );
        drop(a);
        assert!(
            registry.issue(ip([127, 0, 0, 3])).is_ok(),
            "the idle tap made room"
        );
        drop(b);
    }

    #[test]
    fn a_tap_reused_by_a_new_connection_keeps_its_records_until_released() {
        let registry = Taps::new(config(2, 2, 8, 64));
        let (id, first) = issue_and_open(&registry, OWNER, 1);
        first.record(Direction::Out, WS, b"one");
        drop(first);
        let second = registry.open(&id, connection(OWNER, 2)).unwrap().unwrap();
        second.record(Direction::Out, WS, b"two");
        let snapshot = registry.snapshot(&id, ip(OWNER)).unwrap();
        let conns: Vec<u64> = snapshot.records.iter().map(|r| r.conn).collect();
        assert_eq!(conns, [1, 2]);
        assert_eq!(
            (snapshot.summary.connections, snapshot.summary.live),
            (2, 1)
        );
        assert_eq!(registry.release(&id, ip(STRANGER)), Err(Denied::Foreign));
        assert_eq!(registry.release(&id, ip(OWNER)), Ok(()));
        assert_eq!(
            registry.snapshot(&id, ip(OWNER)).unwrap_err(),
            Denied::Unknown
        );
    }
}
