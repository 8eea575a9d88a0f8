//! The lab's capture store: one bounded ring of wire records per tap, and the registry that
//! hands taps out.
//!
//! Bounds, all from `[lab]`:
//! - at most `max_connections` taps. A new tap id takes the place of the least recently
//!   active tap whose connections have all ended; when every tap still has a live
//!   connection, the newcomer is simply not tapped (it works, it is just not recorded);
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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use streamgate_core::{Direction, RecordKind, Tap, TapConnection, TapRegistry, TapSink};

use crate::config::LabConfig;

/// One recorded piece of a connection's traffic.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// Position in its tap, from 1, never reused: `?after=<seq>` pages on it.
    pub(crate) seq: u64,
    /// The connection (or WebTransport session) it came from: a tap can outlive several
    /// (a reconnecting client, successive long polls).
    pub(crate) conn: u64,
    /// Microseconds since the lab started (a monotonic clock, shared by every tap).
    pub(crate) at_us: u64,
    pub(crate) direction: Direction,
    pub(crate) kind: RecordKind,
    /// How many bytes the transport handed over.
    pub(crate) len: usize,
    /// The first `min(len, max_record_bytes)` of them.
    pub(crate) bytes: Bytes,
}

impl Record {
    /// Whether bytes were cut off the end of this record.
    pub(crate) fn truncated(&self) -> bool {
        self.bytes.len() < self.len
    }
}

/// What a tap says about itself in `GET /lab/api/taps`.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct TapSummary {
    pub(crate) id: String,
    /// The transport of its latest connection (`ws`, `sse`, `longpoll`, `webtransport`).
    pub(crate) transport: &'static str,
    /// The client address of its latest connection.
    pub(crate) peer: String,
    /// When it was opened, milliseconds since the Unix epoch (for people).
    pub(crate) opened_unix_ms: u64,
    /// When it was opened and when it last recorded, on the records' clock.
    pub(crate) opened_us: u64,
    pub(crate) last_us: u64,
    /// Connections that used it so far, and those still open.
    pub(crate) connections: u64,
    pub(crate) live: usize,
    /// Records kept now, the highest seq handed out, records dropped by the ring and
    /// records cut to `max_record_bytes`.
    pub(crate) records: usize,
    pub(crate) last_seq: u64,
    pub(crate) evicted: u64,
    pub(crate) truncated: u64,
    /// Bytes that crossed the wire each way, counted in full even when not kept.
    /// WebTransport session events are descriptions, not wire bytes, and are not counted.
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

/// A tap's records, copied out of the ring so that annotation runs without the lock.
#[derive(Debug)]
pub(crate) struct TapSnapshot {
    pub(crate) summary: TapSummary,
    /// Pinned opening and ring together, by seq, without duplicates.
    pub(crate) records: Vec<Record>,
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
    transport: &'static str,
    peer: SocketAddr,
    connections: u64,
}

/// The records of one tap id.
#[derive(Debug)]
pub(crate) struct TapRing {
    id: String,
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
    fn new(id: &str, config: &LabConfig, clock: Instant, connection: TapConnection) -> Self {
        let now = micros_since(clock);
        Self {
            id: id.to_owned(),
            clock,
            opened_us: now,
            opened_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            records_per_connection: config.records_per_connection,
            max_record_bytes: config.max_record_bytes,
            state: Mutex::new(RingState {
                records: VecDeque::new(),
                opening: Vec::new(),
                next_seq: 1,
                evicted: 0,
                truncated: 0,
                bytes_in: 0,
                bytes_out: 0,
                last_us: now,
                transport: connection.transport,
                peer: connection.peer,
                connections: 0,
            }),
        }
    }

    fn attach(&self, connection: TapConnection) {
        let mut state = lock(&self.state);
        state.transport = connection.transport;
        state.peer = connection.peer;
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
            peer: state.peer.to_string(),
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
pub(crate) struct Taps {
    config: LabConfig,
    clock: Instant,
    taps: Mutex<HashMap<String, Arc<TapRing>>>,
}

/// Connections still holding a tap's ring: the registry holds one reference, each live
/// connection's sink one more.
fn live_connections(ring: &Arc<TapRing>) -> usize {
    Arc::strong_count(ring) - 1
}

impl Taps {
    pub(crate) fn new(config: LabConfig) -> Self {
        Self {
            config,
            clock: Instant::now(),
            taps: Mutex::new(HashMap::new()),
        }
    }

    /// Microseconds since the lab started, the clock of every record.
    pub(crate) fn now_us(&self) -> u64 {
        micros_since(self.clock)
    }

    /// Every tap, most recently opened first.
    pub(crate) fn summaries(&self) -> Vec<TapSummary> {
        // Counted before cloning: the clone is not a connection.
        let rings: Vec<(usize, Arc<TapRing>)> = lock(&self.taps)
            .values()
            .map(|ring| (live_connections(ring), Arc::clone(ring)))
            .collect();
        let mut summaries: Vec<TapSummary> = rings
            .iter()
            .map(|(live, ring)| ring.summary(*live))
            .collect();
        summaries.sort_by(|a, b| b.opened_us.cmp(&a.opened_us).then(a.id.cmp(&b.id)));
        summaries
    }

    /// One tap's records and summary, or `None` for an unknown id.
    pub(crate) fn snapshot(&self, id: &str) -> Option<TapSnapshot> {
        let (live, ring) = {
            let taps = lock(&self.taps);
            let ring = taps.get(id)?;
            (live_connections(ring), Arc::clone(ring))
        };
        Some(TapSnapshot {
            summary: ring.summary(live),
            records: ring.records(),
        })
    }
}

impl TapRegistry for Taps {
    fn open(&self, id: &str, connection: TapConnection) -> Option<Tap> {
        let mut taps = lock(&self.taps);
        let ring = match taps.get(id) {
            Some(ring) => Arc::clone(ring),
            None => {
                if taps.len() >= self.config.max_connections {
                    let idle = taps
                        .iter()
                        .filter(|(_, ring)| live_connections(ring) == 0)
                        .min_by_key(|(_, ring)| ring.last_us())
                        .map(|(id, _)| id.clone());
                    match idle {
                        Some(idle) => {
                            taps.remove(&idle);
                        }
                        None => {
                            tracing::debug!(
                                tap = id,
                                limit = self.config.max_connections,
                                "every lab tap has a live connection; not tapping this one"
                            );
                            return None;
                        }
                    }
                }
                let ring = Arc::new(TapRing::new(id, &self.config, self.clock, connection));
                taps.insert(id.to_owned(), Arc::clone(&ring));
                ring
            }
        };
        drop(taps);
        ring.attach(connection);
        Some(Tap::new(Arc::new(ConnectionSink {
            ring,
            conn: connection.conn_id,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(taps: usize, records: usize, bytes: usize) -> LabConfig {
        LabConfig {
            enabled: true,
            max_connections: taps,
            records_per_connection: records,
            max_record_bytes: bytes,
        }
    }

    fn connection(conn_id: u64) -> TapConnection {
        TapConnection {
            transport: "ws",
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
            conn_id,
        }
    }

    const WS: RecordKind = RecordKind::WsBytes { offset: 0 };

    #[test]
    fn the_ring_keeps_the_newest_records_and_counts_the_rest() {
        let registry = Taps::new(config(4, 3, 1024));
        let tap = registry.open("t", connection(1)).unwrap();
        for i in 0..5u8 {
            tap.record(Direction::Out, WS, &[i; 10]);
        }
        let snapshot = registry.snapshot("t").unwrap();
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
        let registry = Taps::new(config(4, 8, 16));
        let tap = registry.open("t", connection(1)).unwrap();
        tap.record(Direction::In, WS, &[7; 100]);
        tap.record(Direction::In, WS, &[8; 16]);
        let snapshot = registry.snapshot("t").unwrap();
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
        let registry = Taps::new(config(4, 2, 1024));
        let tap = registry.open("t", connection(1)).unwrap();
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
        let records = registry.snapshot("t").unwrap().records;
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 6, 7], "pinned opening, then the ring");
    }

    #[test]
    fn taps_are_bounded_and_only_idle_ones_make_room() {
        let registry = Taps::new(config(2, 8, 64));
        let a = registry.open("a", connection(1)).unwrap();
        let b = registry.open("b", connection(2)).unwrap();
        a.record(Direction::Out, WS, b"a");
        b.record(Direction::Out, WS, b"b");
        assert!(
            registry.open("c", connection(3)).is_none(),
            "both taps are live: the newcomer runs untapped"
        );
        drop(a);
        let c = registry.open("c", connection(3)).unwrap();
        c.record(Direction::Out, WS, b"c");
        assert!(registry.snapshot("a").is_none(), "the idle tap made room");
        assert!(registry.snapshot("b").is_some());
        let summaries = registry.summaries();
        assert_eq!(summaries.len(), 2);
        assert!(summaries.iter().all(|s| s.live == 1), "{summaries:?}");
    }

    #[test]
    fn a_tap_id_reused_by_a_new_connection_keeps_its_records() {
        let registry = Taps::new(config(2, 8, 64));
        let first = registry.open("t", connection(1)).unwrap();
        first.record(Direction::Out, WS, b"one");
        drop(first);
        let second = registry.open("t", connection(2)).unwrap();
        second.record(Direction::Out, WS, b"two");
        let snapshot = registry.snapshot("t").unwrap();
        let conns: Vec<u64> = snapshot.records.iter().map(|r| r.conn).collect();
        assert_eq!(conns, [1, 2]);
        assert_eq!(
            (snapshot.summary.connections, snapshot.summary.live),
            (2, 1)
        );
    }
}
