//! An impaired network link between this process's network namespace and a new one.
//!
//! `streamgate compare --netem "delay 20ms loss 1%"` runs the gateway inside a Linux network
//! namespace and the clients outside it, so every packet between them crosses one link that
//! delays and drops packets like a real lossy path. That is what makes head-of-line blocking
//! visible: one lost TCP segment stalls every WebSocket, SSE and long-polling message behind it
//! until the retransmission arrives, while a lost WebTransport datagram costs only itself.
//!
//! ```text
//!   root namespace (clients)                     namespace sgns<pid>_<n> (gateway)
//!  ┌──────────────────────────┐                 ┌──────────────────────────────┐
//!  │ client 10.77.a.b+1       │ ── impaired ──▶ │ gateway 10.77.a.b+2          │
//!  │ device sgc<pid>_<n>      │ ◀── impaired ── │ device sgg<pid>_<n>, lo up   │
//!  └──────────────────────────┘                 └──────────────────────────────┘
//! ```
//!
//! The impairment applies **in each direction**, as on a real path: `delay 20ms` makes a round
//! trip take at least 40 ms, and `loss 1%` drops 1% of the packets going each way.
//!
//! # Two mechanisms behind one API
//!
//! * [`Mechanism::Netem`]: a veth pair with the kernel's `tc qdisc … netem` on both ends. This
//!   is the textbook way, and it is used whenever the kernel has `sch_netem`.
//! * [`Mechanism::Userspace`]: many small kernels (Firecracker's among them) are built without
//!   `sch_netem`; `tc` then answers "Specified qdisc kind is unknown". The link is then two TUN
//!   devices, one on each side, and a forwarder thread in this process that reads every IP
//!   packet from one, offers it to an [`ImpairedPath`] (an [`Impairer`] deciding its fate, a
//!   [`DelayLine`] holding it until its time) and writes it to the other. Its delays are as
//!   precise as tokio's timer, which rounds up to the next millisecond: `delay 20ms` measures
//!   20–21 ms each way.
//!
//! # Entering a namespace without `setns`
//!
//! Running code inside another namespace needs `setns(2)`, which the standard library does not
//! offer and this crate, forbidding `unsafe`, does not call. A TUN device, however, stays attached to the file descriptor that created it wherever the
//! device itself goes. So both TUN devices are created here in the root namespace, and only
//! then is the gateway's end moved with `ip link set <dev> netns <ns>` and configured with
//! `ip -n <ns>`. The descriptors keep working after the move; nothing in this process ever runs
//! inside the namespace. The gateway does, through [`ImpairedLink::command`].
//!
//! # Cleaning up
//!
//! [`ImpairedLink::remove`] deletes the namespace and the devices; dropping an [`ImpairedLink`]
//! does the same, synchronously and best effort, so that a failing test leaves nothing behind.
//! The TUN devices are not persistent: even a killed process takes them with it when its
//! descriptors close. A namespace (or a netem veth pair) left by a process that was killed is
//! swept by the next [`ImpairedLink::create`], which recognises its name and sees that its
//! process is gone; processes still running inside it (an orphaned gateway) are killed then.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng as _;

/// The syntax [`Impairment::from_str`] accepts, quoted in its error messages.
const ACCEPTED_SYNTAX: &str = "accepted: `delay TIME [JITTER]`, `loss [random] PERCENT` and \
     `rate RATE` in any order, e.g. \"delay 20ms 5ms loss 1%\"; TIME in us, ms or s; PERCENT \
     like 1% or 0.5%; RATE in bit, kbit, mbit, gbit, or bytes in bps, kbps, mbps, gbps";

/// Longest delay (and jitter) accepted. Far beyond anything useful, but it keeps instant
/// arithmetic away from overflow.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Packets a direction may hold at once before it drops new ones; netem's default `limit`.
pub const QUEUE_LIMIT: usize = 1000;

/// MTU of both ends of the link. QUIC needs paths that carry 1200-byte datagrams; 1500 is what
/// an Ethernet path offers, so the comparison does not favour any transport.
const LINK_MTU: u16 = 1500;

/// Packets the kernel holds for the forwarder to read, per device (Linux's default for TUN is
/// 500). Drops there would be losses nobody asked for; a queue as long as netem's own absorbs
/// the moments when the forwarder thread waits for a core, at 20 000 packets/s and more.
const TUN_QUEUE_LEN: u32 = 1000;

/// Addresses come from 10.77.0.0/16, split into /30 blocks (client = .1, gateway = .2 of a
/// block). A block is chosen from the process id and checked against the addresses in use.
const SUBNET_SECOND_OCTET: u8 = 77;
const BLOCKS_IN_SUBNET: u32 = 1 << 14;

/// Prefixes of the names this module gives its namespaces and devices. They are how the sweep
/// of stale links recognises what a dead process of ours left behind.
const NAMESPACE_PREFIX: &str = "sgns";
const CLIENT_DEVICE_PREFIX: &str = "sgc";
const GATEWAY_DEVICE_PREFIX: &str = "sgg";

// ---------------------------------------------------------------------------------------------
// The impairment and its netem syntax
// ---------------------------------------------------------------------------------------------

/// A netem-style impairment: parsed from the subset of `tc netem` syntax we support.
///
/// It describes one direction of the link; [`ImpairedLink`] applies it to both.
///
/// ```text
/// delay TIME [JITTER]   every packet waits TIME, give or take up to JITTER (uniformly);
///                       with jitter, packets may overtake each other, as with netem
/// loss [random] PERCENT each packet is dropped with this probability, independently
/// rate RATE             packets are serialised at this bit rate before their delay starts
/// ```
///
/// Netem's correlation arguments, distributions, `duplicate`, `corrupt`, `reorder` and `limit`
/// are not supported: they are refused with an error naming the word, never ignored.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Probability, from 0 to 1, that a packet is dropped.
    pub loss: f64,
    /// Bit rate of the link in bits per second, if limited.
    pub rate_bits: Option<u64>,
}

/// Why an impairment string was refused; the message names the offending word and the
/// accepted syntax, so it can be shown to a user as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseImpairmentError {
    message: String,
}

impl ParseImpairmentError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseImpairmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {ACCEPTED_SYNTAX}", self.message)
    }
}

impl std::error::Error for ParseImpairmentError {}

impl Impairment {
    /// True when the link would pass packets untouched.
    pub fn is_none(&self) -> bool {
        self.delay.is_zero()
            && self.jitter.is_zero()
            && self.loss == 0.0
            && self.rate_bits.is_none()
    }

    /// Checks values that the parser guarantees but a hand-built `Impairment` might not have.
    pub fn validate(&self) -> Result<(), ParseImpairmentError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(ParseImpairmentError::new(format!(
                "loss must be between 0 and 1 (0% to 100%), not {}",
                self.loss
            )));
        }
        if self.delay > MAX_DELAY || self.jitter > MAX_DELAY {
            return Err(ParseImpairmentError::new(format!(
                "delay and jitter must be at most {}s",
                MAX_DELAY.as_secs()
            )));
        }
        if self.rate_bits == Some(0) {
            return Err(ParseImpairmentError::new("rate must be above 0 bit/s"));
        }
        Ok(())
    }
}

impl FromStr for Impairment {
    type Err = ParseImpairmentError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut words = spec.split_whitespace().peekable();
        if words.peek().is_none() {
            return Err(ParseImpairmentError::new("empty impairment"));
        }
        let mut impairment = Impairment::default();
        let (mut seen_delay, mut seen_loss, mut seen_rate) = (false, false, false);
        while let Some(word) = words.next() {
            match word {
                "delay" => {
                    refuse_repeat(&mut seen_delay, word)?;
                    let value = words.next().ok_or_else(|| missing_value(word, "a TIME"))?;
                    impairment.delay = parse_time(value)?;
                    // The jitter is optional, so the next word is only taken when it is a time.
                    if let Some(jitter) = words.next_if(|next| parse_time(next).is_ok()) {
                        impairment.jitter = parse_time(jitter)?;
                        refuse_correlation(words.peek().copied(), "delay")?;
                    }
                }
                "loss" => {
                    refuse_repeat(&mut seen_loss, word)?;
                    // `random` is netem's default (and only uncorrelated) loss model.
                    words.next_if_eq(&"random");
                    let value = words
                        .next()
                        .ok_or_else(|| missing_value(word, "a PERCENT"))?;
                    impairment.loss = parse_percent(value)?;
                    refuse_correlation(words.peek().copied(), "loss")?;
                }
                "rate" => {
                    refuse_repeat(&mut seen_rate, word)?;
                    let value = words.next().ok_or_else(|| missing_value(word, "a RATE"))?;
                    impairment.rate_bits = Some(parse_rate(value)?);
                }
                unknown => {
                    return Err(ParseImpairmentError::new(format!(
                        "unsupported word `{unknown}`"
                    )))
                }
            }
        }
        impairment.validate()?;
        Ok(impairment)
    }
}

fn refuse_repeat(seen: &mut bool, word: &str) -> Result<(), ParseImpairmentError> {
    if std::mem::replace(seen, true) {
        return Err(ParseImpairmentError::new(format!(
            "`{word}` is given twice"
        )));
    }
    Ok(())
}

fn missing_value(word: &str, what: &str) -> ParseImpairmentError {
    ParseImpairmentError::new(format!("`{word}` needs {what} after it"))
}

/// Netem allows a correlation percentage after the jitter or the loss; silently treating it as
/// something else would measure a different link than the one asked for.
fn refuse_correlation(next: Option<&str>, word: &str) -> Result<(), ParseImpairmentError> {
    match next {
        Some(next) if parse_percent(next).is_ok() => Err(ParseImpairmentError::new(format!(
            "correlation `{next}` after `{word}` is not supported"
        ))),
        _ => Ok(()),
    }
}

/// Splits "20ms" into (20.0, "ms"), accepting only finite, non-negative numbers.
fn split_number(word: &str) -> Option<(f64, &str)> {
    let unit_start = word
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(word.len());
    let (number, unit) = word.split_at(unit_start);
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some((value, unit))
}

fn parse_time(word: &str) -> Result<Duration, ParseImpairmentError> {
    let invalid = || ParseImpairmentError::new(format!("`{word}` is not a TIME like 20ms"));
    let (value, unit) = split_number(word).ok_or_else(invalid)?;
    let nanos_per_unit = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" => 1e9,
        "ms" | "msec" | "msecs" => 1e6,
        "us" | "usec" | "usecs" => 1e3,
        _ => return Err(invalid()),
    };
    let nanos = (value * nanos_per_unit).round();
    if nanos > MAX_DELAY.as_nanos() as f64 {
        return Err(ParseImpairmentError::new(format!(
            "`{word}` is longer than the {}s allowed",
            MAX_DELAY.as_secs()
        )));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses netem's PERCENT into a probability. Like `tc`, a bare number is a percentage too.
fn parse_percent(word: &str) -> Result<f64, ParseImpairmentError> {
    let number = word.strip_suffix('%').unwrap_or(word);
    match split_number(number) {
        Some((percent, "")) if percent <= 100.0 => Ok(percent / 100.0),
        _ => Err(ParseImpairmentError::new(format!(
            "`{word}` is not a PERCENT between 0% and 100%"
        ))),
    }
}

/// Parses a `tc` RATE. Beware `tc`'s units: `mbit` is megabits, `mbps` is megaBYTES per
/// second. A bare number is refused, because `tc` itself documents and implements it
/// differently.
fn parse_rate(word: &str) -> Result<u64, ParseImpairmentError> {
    let invalid = || ParseImpairmentError::new(format!("`{word}` is not a RATE like 10mbit"));
    let (value, unit) = split_number(word).ok_or_else(invalid)?;
    let bits_per_unit = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(invalid()),
    };
    let bits = (value * bits_per_unit).round();
    if bits < 1.0 || bits >= u64::MAX as f64 {
        return Err(ParseImpairmentError::new(format!(
            "`{word}` is outside the rates a link can have"
        )));
    }
    Ok(bits as u64)
}

impl fmt::Display for Impairment {
    /// Writes the impairment back in netem syntax, which [`Impairment::from_str`] reads again.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.delay.is_zero() || !self.jitter.is_zero() {
            let mut delay = format!("delay {}", NetemTime(self.delay));
            if !self.jitter.is_zero() {
                delay.push_str(&format!(" {}", NetemTime(self.jitter)));
            }
            parts.push(delay);
        }
        if self.loss > 0.0 {
            parts.push(format!("loss {}%", trim_decimals(self.loss * 100.0)));
        }
        if let Some(bits) = self.rate_bits {
            parts.push(format!("rate {}", NetemRate(bits)));
        }
        if parts.is_empty() {
            // Something netem and our parser both read as "no impairment".
            return f.write_str("delay 0ms");
        }
        f.write_str(&parts.join(" "))
    }
}

/// A duration in the largest unit that states it exactly.
struct NetemTime(Duration);

impl fmt::Display for NetemTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else {
            // Microseconds are the finest unit netem takes; sub-microsecond parts are kept as
            // decimals so that the text reads back to the same value.
            write!(f, "{}us", trim_decimals(nanos as f64 / 1e3))
        }
    }
}

struct NetemRate(u64);

impl fmt::Display for NetemRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.0;
        for (unit, size) in [
            ("gbit", 1_000_000_000),
            ("mbit", 1_000_000),
            ("kbit", 1_000),
        ] {
            if bits.is_multiple_of(size) {
                return write!(f, "{}{unit}", bits / size);
            }
        }
        write!(f, "{bits}bit")
    }
}

/// "1", "0.5", "0.001": six decimals at most, none that are trailing zeros.
fn trim_decimals(value: f64) -> String {
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

// ---------------------------------------------------------------------------------------------
// Sans-IO core: what happens to one packet, and the queue that holds packets until their time
// ---------------------------------------------------------------------------------------------

/// A source of uniform random numbers in `[0, 1)`, injected into an [`Impairer`] so that tests
/// can script its decisions. Every [`rand::Rng`] is one.
pub trait UnitRandom {
    /// The next number, uniformly distributed in `[0, 1)`.
    fn next_unit(&mut self) -> f64;
}

impl<R: rand::Rng> UnitRandom for R {
    fn next_unit(&mut self) -> f64 {
        self.random()
    }
}

/// What the link does with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The packet is lost.
    Drop,
    /// The packet arrives at the far end at this instant.
    DeliverAt(Instant),
}

/// Decides the fate of each packet of one direction of the link, without doing any IO: given a
/// packet's length and the current instant, it answers [`Verdict::Drop`] or
/// [`Verdict::DeliverAt`].
///
/// The model follows netem's: a packet is first lost or not (independently, with probability
/// `loss`); with a `rate`, it then waits for the link to finish sending the packets before it
/// and for its own serialisation; then it travels for `delay ± jitter`. Without jitter the
/// delivery instants never decrease, so packets keep their order.
#[derive(Debug)]
pub struct Impairer<R> {
    impairment: Impairment,
    random: R,
    /// When the link finishes serialising the packets accepted so far (with a `rate` only).
    link_busy_until: Option<Instant>,
}

impl<R: UnitRandom> Impairer<R> {
    /// An impairer applying `impairment`, drawing its chances from `random`.
    pub fn new(impairment: Impairment, random: R) -> Self {
        Self {
            impairment,
            random,
            link_busy_until: None,
        }
    }

    /// The fate of a packet of `packet_len` bytes that enters the link at `now`.
    pub fn judge(&mut self, packet_len: usize, now: Instant) -> Verdict {
        let Impairment {
            delay,
            jitter,
            loss,
            rate_bits,
        } = self.impairment;
        // `loss` of 1 drops everything, because the draw is always below 1.
        if loss > 0.0 && self.random.next_unit() < loss {
            return Verdict::Drop;
        }
        let mut departs = now;
        if let Some(rate) = rate_bits.filter(|&rate| rate > 0) {
            let start = self.link_busy_until.map_or(now, |busy| busy.max(now));
            let serialisation_nanos = packet_len as u128 * 8 * 1_000_000_000 / u128::from(rate);
            let serialisation =
                Duration::from_nanos(serialisation_nanos.min(u64::MAX.into()) as u64);
            match start.checked_add(serialisation) {
                Some(done) => departs = done,
                None => return Verdict::Drop,
            }
            self.link_busy_until = Some(departs);
        }
        let travel = if jitter.is_zero() {
            delay
        } else {
            // Uniform in [delay - jitter, delay + jitter), clamped at zero like netem's.
            let offset = (2.0 * self.random.next_unit() - 1.0) * jitter.as_nanos() as f64;
            let nanos = (delay.as_nanos() as f64 + offset).max(0.0);
            Duration::from_nanos(nanos.round() as u64)
        };
        departs
            .checked_add(travel)
            .map_or(Verdict::Drop, Verdict::DeliverAt)
    }
}

/// Packets waiting for their delivery instant, earliest first; packets due at the same instant
/// leave in the order they came in.
#[derive(Debug)]
pub struct DelayLine<P> {
    queue: BinaryHeap<Reverse<Waiting<P>>>,
    next_sequence: u64,
    limit: usize,
}

#[derive(Debug)]
struct Waiting<P> {
    due: Instant,
    /// Breaks ties between equal instants in arrival order.
    sequence: u64,
    packet: P,
}

impl<P> PartialEq for Waiting<P> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<P> Eq for Waiting<P> {}

impl<P> PartialOrd for Waiting<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<P> Ord for Waiting<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

impl<P> DelayLine<P> {
    /// An empty line holding at most `limit` packets.
    pub fn new(limit: usize) -> Self {
        Self {
            queue: BinaryHeap::new(),
            next_sequence: 0,
            limit,
        }
    }

    /// Queues `packet` for delivery at `due`; gives it back when the line is full, which is
    /// how a congested link loses packets (like netem past its `limit`).
    pub fn push(&mut self, due: Instant, packet: P) -> Result<(), P> {
        if self.is_full() {
            return Err(packet);
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.queue.push(Reverse(Waiting {
            due,
            sequence,
            packet,
        }));
        Ok(())
    }

    /// When the earliest packet is due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(waiting)| waiting.due)
    }

    /// Takes the earliest packet if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<P> {
        if self.next_due()? > now {
            return None;
        }
        self.queue.pop().map(|Reverse(waiting)| waiting.packet)
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no packet is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True when the next [`DelayLine::push`] would be refused.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.limit
    }
}

/// One direction of the link without its IO: an [`Impairer`] deciding, a [`DelayLine`]
/// holding. The forwarder offers it every packet it reads and writes out what it pops.
#[derive(Debug)]
pub struct ImpairedPath<R, P> {
    impairer: Impairer<R>,
    line: DelayLine<P>,
}

impl<R: UnitRandom, P: AsRef<[u8]>> ImpairedPath<R, P> {
    /// A path applying `impairment` that holds at most `limit` packets at once.
    pub fn new(impairment: Impairment, random: R, limit: usize) -> Self {
        Self {
            impairer: Impairer::new(impairment, random),
            line: DelayLine::new(limit),
        }
    }

    /// Offers a packet entering the link at `now`; false when it is lost, to the configured
    /// loss or to a full queue.
    ///
    /// A full queue refuses the packet before the impairer sees it, as netem checks its
    /// `limit` before it schedules: a refused packet must not book time on a rate-limited
    /// link, or an overload would push every later packet further and further away.
    pub fn offer(&mut self, packet: P, now: Instant) -> bool {
        if self.line.is_full() {
            return false;
        }
        match self.impairer.judge(packet.as_ref().len(), now) {
            Verdict::Drop => false,
            Verdict::DeliverAt(due) => self.line.push(due, packet).is_ok(),
        }
    }

    /// When the earliest held packet is due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.line.next_due()
    }

    /// Takes the earliest packet if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<P> {
        self.line.pop_due(now)
    }
}

// ---------------------------------------------------------------------------------------------
// The link
// ---------------------------------------------------------------------------------------------

/// How an [`ImpairedLink`] impairs its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// The kernel's `tc netem` qdisc on both ends of a veth pair.
    Netem,
    /// Two TUN devices and a forwarder in this process, on a thread and a single-threaded
    /// tokio runtime of its own so that a busy caller's runtime does not delay packets.
    Userspace,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mechanism::Netem => "netem",
            Mechanism::Userspace => "userspace",
        })
    }
}

/// Traffic through the link so far, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// From the clients' side into the namespace.
    pub to_gateway: DirectionStats,
    /// From the namespace back to the clients' side.
    pub to_client: DirectionStats,
}

/// Traffic through one direction of the link.
///
/// With netem, these are the qdisc's counters: bytes include the 14-byte Ethernet header of
/// the veth, and drops include packets refused past netem's queue limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionStats {
    /// Packets that reached the far end.
    pub delivered_packets: u64,
    /// Bytes of those packets.
    pub delivered_bytes: u64,
    /// Packets lost: to the configured loss, or because the queue was full.
    pub dropped_packets: u64,
}

/// Names of one link's namespace and devices, unique per process and per link.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkNames {
    namespace: String,
    client_device: String,
    gateway_device: String,
}

impl LinkNames {
    /// `sgns<pid>_<n>`, `sgc<pid>_<n>`, `sgg<pid>_<n>`: the pid keeps concurrent processes
    /// apart and tells the stale sweep whose link it is; `n` keeps the links of one process
    /// (tests run in parallel) apart. With a 7-digit pid and `n` below 10 000 a device name is
    /// 15 characters, the most Linux allows.
    fn new(pid: u32, link_number: u32) -> Self {
        let suffix = format!("{pid}_{}", link_number % 10_000);
        Self {
            namespace: format!("{NAMESPACE_PREFIX}{suffix}"),
            client_device: format!("{CLIENT_DEVICE_PREFIX}{suffix}"),
            gateway_device: format!("{GATEWAY_DEVICE_PREFIX}{suffix}"),
        }
    }

    /// The pid and link number of a namespace name that this module made.
    fn parse_namespace(name: &str) -> Option<(u32, u32)> {
        let (pid, number) = name.strip_prefix(NAMESPACE_PREFIX)?.split_once('_')?;
        Some((pid.parse().ok()?, number.parse().ok()?))
    }
}

/// The two ends' addresses: a /30 block of 10.77.0.0/16, client `.1`, gateway `.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkAddresses {
    client: Ipv4Addr,
    gateway: Ipv4Addr,
}

impl LinkAddresses {
    fn for_block(block: u32) -> Self {
        let base = u32::from(Ipv4Addr::new(10, SUBNET_SECOND_OCTET, 0, 0))
            + (block % BLOCKS_IN_SUBNET) * 4;
        Self {
            client: Ipv4Addr::from(base + 1),
            gateway: Ipv4Addr::from(base + 2),
        }
    }

    /// The first block from one derived from the pid whose addresses nobody uses yet, so that
    /// two processes (or two links of one) do not route into each other's namespace.
    fn choose(pid: u32, link_number: u32, in_use: &[Ipv4Addr]) -> Self {
        let start = pid.wrapping_mul(97).wrapping_add(link_number);
        (0..BLOCKS_IN_SUBNET)
            .map(|offset| Self::for_block(start.wrapping_add(offset)))
            .find(|candidate| {
                !in_use.contains(&candidate.client) && !in_use.contains(&candidate.gateway)
            })
            .unwrap_or_else(|| Self::for_block(start))
    }
}

/// Distinguishes the links made by one process.
static NEXT_LINK_NUMBER: AtomicU64 = AtomicU64::new(0);

/// A link between this process's network namespace (the clients' side) and a new namespace
/// (the gateway's side) that delays and drops packets in both directions.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use streamgate_compare::impair::{ImpairedLink, Impairment};
///
/// let impairment: Impairment = "delay 20ms loss 1%".parse()?;
/// let link = ImpairedLink::create(&impairment).await?;
/// println!("{}", link.describe());
/// // The gateway runs inside the namespace, listening on link.gateway_ip().
/// let mut gateway = tokio::process::Command::from(link.command("streamgate"))
///     .arg("serve")
///     .kill_on_drop(true)
///     .spawn()?;
/// // ... clients connect to link.gateway_ip() ...
/// gateway.kill().await?;
/// link.remove().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ImpairedLink {
    impairment: Impairment,
    names: LinkNames,
    addresses: LinkAddresses,
    mechanism: Mechanism,
    /// Why netem could not be used, when the link fell back to userspace.
    netem_unavailable: Option<String>,
    forwarder: Option<Forwarder>,
    /// Set once [`ImpairedLink::remove`] has cleaned up, so that `Drop` does not do it again.
    removed: bool,
}

impl ImpairedLink {
    /// Creates the namespace and the link, with netem when the kernel has it and the userspace
    /// forwarder otherwise.
    ///
    /// Must be called inside a tokio runtime, which runs the `ip` and `tc` commands. The
    /// userspace forwarder, though, runs on a thread of its own (see [`Mechanism::Userspace`]).
    pub async fn create(impairment: &Impairment) -> anyhow::Result<ImpairedLink> {
        Self::build(impairment, Plan::Auto).await
    }

    /// Creates the link with the given mechanism, failing when it is not available here.
    pub async fn create_using(
        impairment: &Impairment,
        mechanism: Mechanism,
    ) -> anyhow::Result<ImpairedLink> {
        let plan = match mechanism {
            Mechanism::Netem => Plan::Veth {
                qdisc: netem_qdisc(impairment),
            },
            Mechanism::Userspace => Plan::Userspace,
        };
        Self::build(impairment, plan).await
    }

    /// The network namespace the gateway runs in.
    pub fn namespace(&self) -> &str {
        &self.names.namespace
    }

    /// The address inside the namespace, where the gateway listens.
    pub fn gateway_ip(&self) -> IpAddr {
        IpAddr::V4(self.addresses.gateway)
    }

    /// The address of the clients' end of the link, in this process's namespace. Clients need
    /// not bind to it: the route to [`ImpairedLink::gateway_ip`] already goes through the link.
    pub fn client_ip(&self) -> IpAddr {
        IpAddr::V4(self.addresses.client)
    }

    /// How the packets are impaired.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The impairment applied in each direction.
    pub fn impairment(&self) -> &Impairment {
        &self.impairment
    }

    /// One line for a person: mechanism (and why), impairment, devices, namespace, addresses.
    pub fn describe(&self) -> String {
        let LinkNames {
            namespace,
            client_device,
            gateway_device,
        } = &self.names;
        let LinkAddresses { client, gateway } = self.addresses;
        let how = match (self.mechanism, &self.netem_unavailable) {
            (Mechanism::Netem, _) => {
                format!("tc netem on veth pair {client_device}/{gateway_device}")
            }
            (Mechanism::Userspace, reason) => {
                let why = reason
                    .as_deref()
                    .map_or_else(String::new, |reason| format!(" ({reason})"));
                format!(
                    "userspace impairment{why} via TUN devices {client_device}/{gateway_device}"
                )
            }
        };
        let stopped = match &self.forwarder {
            Some(forwarder) if forwarder.has_stopped() => {
                " — the forwarder has STOPPED, the link is down"
            }
            _ => "",
        };
        format!(
            "{how}: {} each way, namespace {namespace}, \
             client {client} ↔ gateway {gateway}{stopped}",
            self.impairment
        )
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec <ns> program`).
    ///
    /// `ip netns exec` replaces itself with `program`, so the child's pid is the program's and
    /// killing the child kills the program. Kill what runs in the namespace before
    /// [`ImpairedLink::remove`]: a namespace lives on, invisible, while a process is in it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.names.namespace])
            .arg(program);
        command
    }

    /// Packets delivered and dropped so far in each direction: the forwarder's counters with the
    /// userspace mechanism, the qdiscs' (`tc -s qdisc`) with netem. `None` when they cannot be
    /// read.
    ///
    /// With netem this runs `tc` twice and waits for it, a few milliseconds.
    pub fn stats(&self) -> Option<LinkStats> {
        match &self.forwarder {
            Some(forwarder) => Some(forwarder.stats()),
            None => Some(LinkStats {
                to_gateway: qdisc_stats(None, &self.names.client_device)?,
                to_client: qdisc_stats(Some(&self.names.namespace), &self.names.gateway_device)?,
            }),
        }
    }

    /// Removes the namespace and the devices, and reports a forwarder that had failed.
    ///
    /// Dropping the link does the same, synchronously and best effort; this is the way to do
    /// it from async code and to hear about errors.
    pub async fn remove(mut self) -> anyhow::Result<()> {
        let forwarder_error = match self.forwarder.take() {
            Some(forwarder) => forwarder.stop().await,
            None => None,
        };
        let mut errors = Vec::new();
        for command in teardown_commands(&self.names) {
            if let Err(error) = run(command).await {
                if !error.says_already_gone() {
                    errors.push(error.to_string());
                }
            }
        }
        self.removed = true;
        errors.extend(forwarder_error);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "removing impaired link {}: {}",
                self.names.namespace,
                errors.join("; ")
            ))
        }
    }
}

impl Drop for ImpairedLink {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Some(forwarder) = self.forwarder.take() {
            let _ = forwarder.stop_blocking();
        }
        for command in teardown_commands(&self.names) {
            // Best effort: a panic or an error here would hide the failure that got us here.
            let _ = run_blocking(command);
        }
    }
}

/// What [`ImpairedLink::build`] should try.
#[derive(Debug)]
enum Plan {
    /// netem on a veth pair, else the userspace forwarder.
    Auto,
    /// A veth pair with this root qdisc on both ends (netem, or a stand-in in tests).
    Veth { qdisc: Vec<String> },
    /// The userspace forwarder only.
    Userspace,
}

/// `tc qdisc add … root` arguments for netem with this impairment.
fn netem_qdisc(impairment: &Impairment) -> Vec<String> {
    std::iter::once("netem".to_owned())
        .chain(impairment.to_string().split_whitespace().map(str::to_owned))
        .collect()
}

impl ImpairedLink {
    async fn build(impairment: &Impairment, plan: Plan) -> anyhow::Result<ImpairedLink> {
        impairment
            .validate()
            .map_err(|error| anyhow::anyhow!("cannot impair a link: {error}"))?;
        check_common_prerequisites().await?;
        sweep_stale_links().await;

        let pid = std::process::id();
        let link_number = (NEXT_LINK_NUMBER.fetch_add(1, AtomicOrdering::Relaxed) % 10_000) as u32;
        let names = LinkNames::new(pid, link_number);
        let addresses = LinkAddresses::choose(pid, link_number, &addresses_in_use().await);

        run(ip(&format!("netns add {}", names.namespace)))
            .await
            .context("cannot impair a link: creating its network namespace")?;
        // From here on, dropping `link` undoes whatever was made, whichever step fails.
        let mut link = ImpairedLink {
            impairment: *impairment,
            names,
            addresses,
            mechanism: Mechanism::Userspace,
            netem_unavailable: None,
            forwarder: None,
            removed: false,
        };
        run(ip(&format!("-n {} link set lo up", link.names.namespace)))
            .await
            .context("bringing up lo in the namespace")?;

        let veth_qdisc = match plan {
            Plan::Auto => Some(netem_qdisc(impairment)),
            Plan::Veth { ref qdisc } => Some(qdisc.clone()),
            Plan::Userspace => None,
        };
        if let Some(qdisc) = veth_qdisc {
            match link.set_up_veth(&qdisc).await {
                Ok(()) => {
                    link.mechanism = Mechanism::Netem;
                    return Ok(link);
                }
                Err(reason) if matches!(plan, Plan::Auto) => {
                    // Remove the half-made pair before trying the other way.
                    let _ = run(ip(&format!("link del {}", link.names.client_device))).await;
                    link.netem_unavailable = Some(reason);
                }
                Err(reason) => anyhow::bail!("cannot impair a link with tc netem: {reason}"),
            }
        }
        if let Err(error) = link.set_up_userspace().await {
            return Err(match &link.netem_unavailable {
                Some(reason) => error.context(format!(
                    "cannot impair a link: tc netem is unavailable ({reason}), \
                     and so is the userspace fallback"
                )),
                None => error.context("cannot impair a link with the userspace forwarder"),
            });
        }
        Ok(link)
    }

    /// The netem mechanism. Returns why it failed, in words for [`ImpairedLink::describe`].
    async fn set_up_veth(&mut self, qdisc: &[String]) -> Result<(), String> {
        let LinkNames {
            namespace,
            client_device,
            gateway_device,
        } = &self.names;
        let created = run(ip(&format!(
            "link add {client_device} type veth peer name {gateway_device}"
        )))
        .await;
        if let Err(error) = created {
            return Err(format!("cannot create a veth pair: {}", error.brief()));
        }
        let client_qdisc = tc(&format!("qdisc add dev {client_device} root"), qdisc);
        match run(client_qdisc).await {
            Ok(_) => {}
            Err(error) if error.says_qdisc_unknown() => {
                return Err("kernel has no sch_netem".to_owned())
            }
            Err(error) => return Err(error.brief()),
        }
        let steps = [
            ip(&format!("link set {gateway_device} netns {namespace}")),
            tc(
                &format!("-n {namespace} qdisc add dev {gateway_device} root"),
                qdisc,
            ),
        ];
        for step in steps {
            run(step).await.map_err(|error| error.brief())?;
        }
        self.configure_addresses()
            .await
            .map_err(|error| format!("{error:#}"))
    }

    /// The userspace mechanism: TUN devices created here, the gateway's moved into the
    /// namespace, and a forwarder thread between them.
    async fn set_up_userspace(&mut self) -> anyhow::Result<()> {
        if !std::path::Path::new("/dev/net/tun").exists() {
            anyhow::bail!(
                "/dev/net/tun does not exist (a kernel without the TUN driver, or a container \
                 without the device: `mknod /dev/net/tun c 10 200` or `--device /dev/net/tun`)"
            );
        }
        let open = |name: &str| {
            // Not persistent, and not brought up here: the device vanishes with its descriptor,
            // and it is brought up after its move and its addressing.
            tun_rs::DeviceBuilder::new()
                .name(name)
                .mtu(LINK_MTU)
                .tx_queue_len(TUN_QUEUE_LEN)
                .enable(false)
                .build_sync()
                .with_context(|| format!("opening TUN device {name} through /dev/net/tun"))
        };
        let client = open(&self.names.client_device)?;
        let gateway = open(&self.names.gateway_device)?;
        let LinkNames {
            namespace,
            gateway_device,
            ..
        } = &self.names;
        run(ip(&format!("link set {gateway_device} netns {namespace}")))
            .await
            .context("moving the gateway's TUN device into the namespace")?;
        let forwarder = Forwarder::start(self.impairment, client, gateway)
            .await
            .context("starting the forwarder thread")?;
        self.forwarder = Some(forwarder);
        self.configure_addresses().await
    }

    /// Point-to-point addresses on both ends, so that each end's route to the other is implied
    /// by its address and no other route is needed; then both ends up.
    async fn configure_addresses(&self) -> anyhow::Result<()> {
        let LinkNames {
            namespace,
            client_device,
            gateway_device,
        } = &self.names;
        let LinkAddresses { client, gateway } = self.addresses;
        // Without an IPv6 link-local address the link carries no router or multicast
        // solicitations, only the traffic under test. Best effort: it fails where IPv6 is off.
        let _ = run(ip(&format!("link set {client_device} addrgenmode none"))).await;
        let _ = run(ip(&format!(
            "-n {namespace} link set {gateway_device} addrgenmode none"
        )))
        .await;
        let steps = [
            format!("addr add {client}/32 peer {gateway}/32 dev {client_device}"),
            format!("link set {client_device} up"),
            format!("-n {namespace} addr add {gateway}/32 peer {client}/32 dev {gateway_device}"),
            format!("-n {namespace} link set {gateway_device} up"),
        ];
        for step in steps {
            run(ip(&step)).await.context("addressing the link")?;
        }
        Ok(())
    }
}

/// Commands that undo a link, in order. Deleting the client's device deletes a veth pair
/// whole; TUN devices also vanish when their descriptors close, so "not found" is fine.
fn teardown_commands(names: &LinkNames) -> [Command; 2] {
    [
        ip(&format!("link del {}", names.client_device)),
        ip(&format!("netns del {}", names.namespace)),
    ]
}

/// Fails with a message saying exactly what is missing: Linux, root, or the `ip` command.
async fn check_common_prerequisites() -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        anyhow::bail!("cannot impair a link: it needs Linux network namespaces");
    }
    if let Some(uid) = effective_uid() {
        if uid != 0 {
            anyhow::bail!(
                "cannot impair a link: not running as root (effective uid {uid}); network \
                 namespaces, veth and TUN devices need CAP_SYS_ADMIN and CAP_NET_ADMIN"
            );
        }
    }
    match run(ip("-V")).await {
        Err(CommandError::NotFound { .. }) => {
            anyhow::bail!("cannot impair a link: the `ip` command (iproute2) was not found in PATH")
        }
        Err(error) => Err(anyhow::anyhow!("cannot impair a link: {error}")),
        Ok(_) => Ok(()),
    }
}

/// The effective uid, from `/proc/self/status` (no `unsafe` `geteuid` needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Deletes namespaces (and veth pairs) named by this module for processes that no longer exist,
/// with whatever still runs inside them: what a killed run leaves behind. A live process's
/// links are never touched.
async fn sweep_stale_links() {
    let Ok(listing) = run(ip("netns list")).await else {
        return;
    };
    for namespace in listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some((pid, link_number)) = LinkNames::parse_namespace(namespace) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let names = LinkNames::new(pid, link_number);
        if names.namespace != namespace {
            continue;
        }
        // A gateway started in the namespace outlives a killed parent and would keep the
        // namespace (and its port) alive after `ip netns del`.
        if let Ok(pids) = run(ip(&format!("netns pids {namespace}"))).await {
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if !pids.is_empty() {
                let mut kill = Command::new("kill");
                kill.arg("-KILL").args(&pids);
                let _ = run(kill).await;
            }
        }
        for command in teardown_commands(&names) {
            let _ = run(command).await;
        }
    }
}

/// IPv4 addresses (and point-to-point peers) configured in this namespace.
async fn addresses_in_use() -> Vec<Ipv4Addr> {
    run(ip("-4 -o addr show"))
        .await
        .map(|listing| parse_ipv4_addresses(&listing))
        .unwrap_or_default()
}

/// Reads `ip -o addr` lines such as `5: sgc1_0 inet 10.77.0.1 peer 10.77.0.2/32 scope …`.
fn parse_ipv4_addresses(listing: &str) -> Vec<Ipv4Addr> {
    let mut addresses = Vec::new();
    for line in listing.lines() {
        let mut words = line.split_whitespace();
        while let Some(word) = words.next() {
            if word == "inet" || word == "peer" {
                let address = words.next().unwrap_or_default();
                let address = address.split('/').next().unwrap_or_default();
                addresses.extend(address.parse::<Ipv4Addr>().ok());
            }
        }
    }
    addresses
}

// ---------------------------------------------------------------------------------------------
// The userspace forwarder
// ---------------------------------------------------------------------------------------------

/// The thread that carries packets between the TUN devices, and its counters.
///
/// It has a thread and a single-threaded runtime of its own, rather than tasks on the
/// caller's runtime, so that when the clients keep every worker busy the link's timing does
/// not suffer from it: a delay of 20 ms stays 20 ms, whatever the transport under test does.
#[derive(Debug)]
struct Forwarder {
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    /// Dropping or sending on it ends the thread.
    shutdown: tokio::sync::oneshot::Sender<()>,
    to_gateway: Arc<Counters>,
    to_client: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    delivered_packets: AtomicU64,
    delivered_bytes: AtomicU64,
    dropped_packets: AtomicU64,
}

impl Counters {
    fn count_delivered(&self, len: usize) {
        self.delivered_packets.fetch_add(1, AtomicOrdering::Relaxed);
        self.delivered_bytes
            .fetch_add(len as u64, AtomicOrdering::Relaxed);
    }

    fn count_dropped(&self) {
        self.dropped_packets.fetch_add(1, AtomicOrdering::Relaxed);
    }

    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            delivered_packets: self.delivered_packets.load(AtomicOrdering::Relaxed),
            delivered_bytes: self.delivered_bytes.load(AtomicOrdering::Relaxed),
            dropped_packets: self.dropped_packets.load(AtomicOrdering::Relaxed),
        }
    }
}

impl Forwarder {
    /// Starts carrying packets both ways, and returns once the thread is ready. The devices
    /// become async inside the thread, because an async descriptor belongs to the runtime it
    /// was registered with.
    async fn start(
        impairment: Impairment,
        client: tun_rs::SyncDevice,
        gateway: tun_rs::SyncDevice,
    ) -> std::io::Result<Self> {
        let (shutdown, shutdown_requested) = tokio::sync::oneshot::channel::<()>();
        let (ready, thread_ready) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let to_gateway = Arc::new(Counters::default());
        let to_client = Arc::new(Counters::default());
        let counters = (Arc::clone(&to_gateway), Arc::clone(&to_client));
        let thread = std::thread::Builder::new()
            .name("sg-impair".to_owned())
            .spawn(move || {
                let started = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        let _in_runtime = runtime.enter();
                        let client = Arc::new(tun_rs::AsyncDevice::new(client)?);
                        let gateway = Arc::new(tun_rs::AsyncDevice::new(gateway)?);
                        Ok((runtime, client, gateway))
                    });
                let (runtime, client, gateway) = match started {
                    Ok(started) => started,
                    Err(error) => {
                        let reason = std::io::Error::new(error.kind(), error.to_string());
                        let _ = ready.send(Err(reason));
                        return Err(error);
                    }
                };
                let _ = ready.send(Ok(()));
                let path = || ImpairedPath::new(impairment, StdRng::from_os_rng(), QUEUE_LIMIT);
                let to_gateway = forward(
                    Arc::clone(&client),
                    Arc::clone(&gateway),
                    path(),
                    counters.0,
                );
                let to_client = forward(gateway, client, path(), counters.1);
                runtime.block_on(async move {
                    tokio::select! {
                        // Asked to stop, or the link was dropped: either way, done.
                        _ = shutdown_requested => Ok(()),
                        ended = to_gateway => ended,
                        ended = to_client => ended,
                    }
                })
            })?;
        match thread_ready.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(std::io::Error::other("the forwarder thread died starting")),
        }
        Ok(Self {
            thread,
            shutdown,
            to_gateway,
            to_client,
        })
    }

    fn stats(&self) -> LinkStats {
        LinkStats {
            to_gateway: self.to_gateway.snapshot(),
            to_client: self.to_client.snapshot(),
        }
    }

    fn has_stopped(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the thread and waits until it has closed the devices (which removes them);
    /// returns why it had stopped earlier, if it had.
    fn stop_blocking(self) -> Option<String> {
        // The thread may have ended already, and then nobody receives: that is fine.
        let _ = self.shutdown.send(());
        match self.thread.join() {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("the forwarder had stopped: {error}")),
            Err(_) => Some("the forwarder had panicked".to_owned()),
        }
    }

    /// [`Forwarder::stop_blocking`] off the async worker threads.
    async fn stop(self) -> Option<String> {
        tokio::task::spawn_blocking(move || self.stop_blocking())
            .await
            .unwrap_or_else(|error| Some(format!("stopping the forwarder: {error}")))
    }
}

/// Carries packets from one device to the other until reading fails (the device is gone).
///
/// One loop waits for two things at once: the next packet from `from`, and the instant the
/// earliest held packet is due. A packet that cannot be written (the far end is briefly down)
/// counts as dropped, like a packet lost on the wire.
async fn forward(
    from: Arc<tun_rs::AsyncDevice>,
    to: Arc<tun_rs::AsyncDevice>,
    mut path: ImpairedPath<StdRng, Bytes>,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    // Bigger than any packet a TUN device without offloads hands over.
    let mut buffer = vec![0_u8; 65_536];
    // One timer, moved as the earliest due instant changes, instead of one per packet.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let holding = path.next_due();
        if let Some(due) = holding {
            let due = tokio::time::Instant::from_std(due);
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
        }
        tokio::select! {
            // Due packets first: a busy sender must not hold back what is already late.
            biased;
            () = &mut timer, if holding.is_some() => {
                let now = Instant::now();
                while let Some(packet) = path.pop_due(now) {
                    match to.send(&packet).await {
                        Ok(_) => counters.count_delivered(packet.len()),
                        Err(_) => counters.count_dropped(),
                    }
                }
            }
            received = from.recv(&mut buffer) => {
                let packet = Bytes::copy_from_slice(&buffer[..received?]);
                if !path.offer(packet, Instant::now()) {
                    counters.count_dropped();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// netem statistics
// ---------------------------------------------------------------------------------------------

/// Counters of the root qdisc of `device`, read with `tc -s -j qdisc show`.
fn qdisc_stats(namespace: Option<&str>, device: &str) -> Option<DirectionStats> {
    let in_namespace = namespace.map_or_else(String::new, |namespace| format!("-n {namespace}"));
    let output = run_blocking(tc(
        &format!("{in_namespace} -s -j qdisc show dev {device}"),
        &[],
    ))
    .ok()?;
    parse_qdisc_stats(&output)
}

/// Reads the root qdisc's counters from `tc -s -j qdisc show dev X`:
/// `[{"kind":"netem","root":true,…,"bytes":…,"packets":…,"drops":…}]`.
fn parse_qdisc_stats(json: &str) -> Option<DirectionStats> {
    let qdiscs: Vec<serde_json::Value> = serde_json::from_str(json).ok()?;
    let root = qdiscs
        .iter()
        .find(|qdisc| qdisc.get("root").and_then(serde_json::Value::as_bool) == Some(true))?;
    let counter = |name: &str| root.get(name).and_then(serde_json::Value::as_u64);
    Some(DirectionStats {
        delivered_packets: counter("packets")?,
        delivered_bytes: counter("bytes")?,
        dropped_packets: counter("drops")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Running `ip` and `tc`
// ---------------------------------------------------------------------------------------------

/// `ip` with these arguments, split at spaces. Every argument here is a word, a name or an
/// address that this module made, none with a space in it.
fn ip(args: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(args.split_whitespace());
    command
}

/// `tc` with these arguments, split at spaces like [`ip`]'s, then `extra` as they are.
fn tc(args: &str, extra: &[String]) -> Command {
    let mut command = Command::new("tc");
    command.args(args.split_whitespace()).args(extra);
    command
}

/// Why a command did not do its job.
#[derive(Debug)]
enum CommandError {
    /// The program is not installed.
    NotFound { program: String },
    /// It could not be started for another reason.
    Spawn { line: String, error: std::io::Error },
    /// It ran and failed.
    Failed { line: String, stderr: String },
}

impl CommandError {
    /// The part worth showing a person: the tool's own words.
    fn brief(&self) -> String {
        match self {
            CommandError::Failed { stderr, .. } if !stderr.is_empty() => stderr.clone(),
            other => other.to_string(),
        }
    }

    fn says_qdisc_unknown(&self) -> bool {
        matches!(self, CommandError::Failed { stderr, .. }
            if stderr.contains("qdisc kind is unknown"))
    }

    /// Teardown of something that is not there (any more) is not a failure.
    fn says_already_gone(&self) -> bool {
        matches!(self, CommandError::Failed { stderr, .. }
            if stderr.contains("Cannot find device") || stderr.contains("does not exist")
                || stderr.contains("No such file"))
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NotFound { program } => write!(f, "`{program}` was not found in PATH"),
            CommandError::Spawn { line, error } => write!(f, "cannot run `{line}`: {error}"),
            CommandError::Failed { line, stderr } => write!(f, "`{line}` failed: {stderr}"),
        }
    }
}

impl std::error::Error for CommandError {}

async fn run(command: Command) -> Result<String, CommandError> {
    let line = command_line(&command);
    let program = command.get_program().to_string_lossy().into_owned();
    let output = tokio::process::Command::from(command).output().await;
    finish(program, line, output)
}

/// For `Drop` and [`ImpairedLink::stats`], which cannot await.
fn run_blocking(mut command: Command) -> Result<String, CommandError> {
    let line = command_line(&command);
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output();
    finish(program, line, output)
}

fn finish(
    program: String,
    line: String,
    output: std::io::Result<Output>,
) -> Result<String, CommandError> {
    match output {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(CommandError::NotFound { program })
        }
        Err(error) => Err(CommandError::Spawn { line, error }),
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Ok(output) => Err(CommandError::Failed {
            line,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }),
    }
}

fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Linux refuses interface names longer than this (IFNAMSIZ - 1).
    const MAX_DEVICE_NAME_LEN: usize = 15;

    /// Random numbers chosen by the test, in order.
    struct Scripted(VecDeque<f64>);

    impl Scripted {
        fn new(draws: &[f64]) -> Self {
            Self(draws.iter().copied().collect())
        }
    }

    impl UnitRandom for Scripted {
        fn next_unit(&mut self) -> f64 {
            self.0.pop_front().expect("the test scripted too few draws")
        }
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn parse(spec: &str) -> Impairment {
        spec.parse()
            .unwrap_or_else(|error| panic!("{spec:?}: {error}"))
    }

    fn parse_error(spec: &str) -> String {
        match spec.parse::<Impairment>() {
            Ok(parsed) => panic!("{spec:?} should be refused, got {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn parses_the_netem_subset() {
        assert_eq!(
            parse("delay 20ms"),
            Impairment {
                delay: ms(20),
                ..Impairment::default()
            }
        );
        assert_eq!(
            parse("delay 20ms 5ms loss 1%"),
            Impairment {
                delay: ms(20),
                jitter: ms(5),
                loss: 0.01,
                rate_bits: None
            }
        );
        assert_eq!(parse("loss 0.5%").loss, 0.005);
        assert_eq!(parse("loss random 2%").loss, 0.02);
        assert_eq!(
            parse("loss 3").loss,
            0.03,
            "a bare number is a percentage, as for tc"
        );
        assert_eq!(parse("delay 1s").delay, Duration::from_secs(1));
        assert_eq!(parse("delay 250us").delay, Duration::from_micros(250));
        assert_eq!(parse("delay 1.5ms").delay, Duration::from_micros(1500));
        assert_eq!(parse("delay 2SEC").delay, Duration::from_secs(2));
        assert_eq!(parse("  loss 1%   delay 20ms ").delay, ms(20));
        assert_eq!(parse("rate 10mbit").rate_bits, Some(10_000_000));
        assert_eq!(
            parse("rate 1mbps").rate_bits,
            Some(8_000_000),
            "tc's mbps is megabytes"
        );
        assert_eq!(parse("loss 100%").loss, 1.0);
        assert!(parse("delay 0ms").is_none());
    }

    #[test]
    fn refuses_what_it_does_not_support_and_says_what_it_accepts() {
        let error = parse_error("delay 20ms duplicate 1%");
        assert!(error.contains("`duplicate`"), "{error}");
        assert!(error.contains("delay TIME [JITTER]"), "{error}");

        for (spec, expected) in [
            ("", "empty"),
            ("delay", "`delay` needs a TIME"),
            ("delay fast", "`fast` is not a TIME"),
            ("delay 20", "`20` is not a TIME"),
            ("delay -5ms", "`-5ms` is not a TIME"),
            ("delay NaNms", "`NaNms` is not a TIME"),
            ("delay 2h", "`2h` is not a TIME"),
            ("delay 7200s", "longer than"),
            ("delay 20ms 5ms 25%", "correlation `25%` after `delay`"),
            ("loss 1% 25%", "correlation `25%` after `loss`"),
            ("loss 101%", "`101%` is not a PERCENT"),
            ("loss", "`loss` needs a PERCENT"),
            ("loss 1%%", "`1%%` is not a PERCENT"),
            ("rate 100", "`100` is not a RATE"),
            ("rate 0kbit", "outside the rates"),
            ("delay 1ms delay 2ms", "`delay` is given twice"),
            ("limit 1000", "`limit`"),
            ("distribution normal", "`distribution`"),
        ] {
            let error = parse_error(spec);
            assert!(error.contains(expected), "{spec:?}: {error}");
        }
    }

    #[test]
    fn displays_netem_syntax_that_parses_back() {
        for (spec, shown) in [
            ("delay 20ms", "delay 20ms"),
            ("delay 20ms 5ms loss 1%", "delay 20ms 5ms loss 1%"),
            ("loss 0.5%", "loss 0.5%"),
            ("delay 1000ms", "delay 1s"),
            ("delay 1.5ms", "delay 1500us"),
            ("delay 0.0015us", "delay 0.002us"),
            (
                "rate 1500kbit loss random 0.01%",
                "loss 0.01% rate 1500kbit",
            ),
            ("rate 12345bit", "rate 12345bit"),
            ("delay 0s", "delay 0ms"),
        ] {
            let impairment = parse(spec);
            assert_eq!(impairment.to_string(), shown, "{spec:?}");
            assert_eq!(parse(shown), impairment, "{shown:?} reads back");
        }
    }

    #[test]
    fn validate_refuses_impossible_hand_built_values() {
        for loss in [-0.1, 1.5, f64::NAN] {
            let impairment = Impairment {
                loss,
                ..Impairment::default()
            };
            assert!(impairment.validate().is_err(), "loss {loss}");
        }
        let zero_rate = Impairment {
            rate_bits: Some(0),
            ..Impairment::default()
        };
        assert!(zero_rate.validate().is_err());
    }

    #[test]
    fn a_link_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<ImpairedLink>();
        shareable::<Impairment>();
    }

    #[test]
    fn impairer_without_impairment_delivers_at_once_and_draws_nothing() {
        let now = Instant::now();
        let mut impairer = Impairer::new(Impairment::default(), Scripted::new(&[]));
        assert_eq!(impairer.judge(1500, now), Verdict::DeliverAt(now));
    }

    #[test]
    fn impairer_delays_every_packet_and_keeps_their_order() {
        let start = Instant::now();
        let mut impairer = Impairer::new(parse("delay 20ms"), Scripted::new(&[]));
        let mut previous = None;
        for step in 0..100 {
            let now = start + Duration::from_micros(step * 10);
            let Verdict::DeliverAt(due) = impairer.judge(100, now) else {
                panic!("no loss was configured");
            };
            assert_eq!(due, now + ms(20));
            assert!(previous <= Some(due));
            previous = Some(due);
        }
    }

    #[test]
    fn impairer_drops_when_the_draw_is_below_the_loss() {
        let now = Instant::now();
        let mut impairer = Impairer::new(parse("loss 50%"), Scripted::new(&[0.49, 0.5, 0.0, 0.99]));
        assert_eq!(impairer.judge(100, now), Verdict::Drop);
        assert_eq!(impairer.judge(100, now), Verdict::DeliverAt(now));
        assert_eq!(impairer.judge(100, now), Verdict::Drop);
        assert_eq!(impairer.judge(100, now), Verdict::DeliverAt(now));
    }

    #[test]
    fn impairer_with_full_loss_drops_everything_and_none_drops_nothing() {
        let now = Instant::now();
        let mut all = Impairer::new(parse("loss 100%"), StdRng::seed_from_u64(1));
        assert!((0..10_000).all(|_| all.judge(100, now) == Verdict::Drop));
        let mut none = Impairer::new(parse("delay 1ms"), StdRng::seed_from_u64(1));
        assert!((0..10_000).all(|_| none.judge(100, now) != Verdict::Drop));
    }

    #[test]
    fn impairer_loses_about_the_configured_share_with_a_real_rng() {
        let now = Instant::now();
        let mut impairer = Impairer::new(parse("loss 1%"), StdRng::seed_from_u64(7));
        let packets = 100_000;
        let dropped = (0..packets)
            .filter(|_| impairer.judge(100, now) == Verdict::Drop)
            .count();
        assert!((800..1200).contains(&dropped), "{dropped} of {packets}");
    }

    #[test]
    fn impairer_spreads_delay_over_the_jitter_and_never_below_zero() {
        let now = Instant::now();
        let mut impairer = Impairer::new(parse("delay 20ms 5ms"), Scripted::new(&[0.0, 0.5, 0.75]));
        assert_eq!(impairer.judge(100, now), Verdict::DeliverAt(now + ms(15)));
        assert_eq!(impairer.judge(100, now), Verdict::DeliverAt(now + ms(20)));
        assert_eq!(
            impairer.judge(100, now),
            Verdict::DeliverAt(now + Duration::from_micros(22_500))
        );

        let mut wide = Impairer::new(parse("delay 1ms 10ms"), Scripted::new(&[0.0]));
        assert_eq!(wide.judge(100, now), Verdict::DeliverAt(now));
    }

    #[test]
    fn impairer_serialises_packets_at_the_rate_before_their_delay() {
        let now = Instant::now();
        // 1250 bytes are 10 000 bits: 10 ms at 1 mbit/s.
        let mut impairer = Impairer::new(parse("rate 1mbit delay 5ms"), Scripted::new(&[]));
        for queued in 1..=3 {
            assert_eq!(
                impairer.judge(1250, now),
                Verdict::DeliverAt(now + ms(10 * queued + 5))
            );
        }
        // Once the link is idle again, a packet waits only for itself.
        let later = now + Duration::from_secs(1);
        assert_eq!(
            impairer.judge(1250, later),
            Verdict::DeliverAt(later + ms(15))
        );
    }

    #[test]
    fn delay_line_releases_packets_in_due_order_and_ties_in_arrival_order() {
        let now = Instant::now();
        let mut line = DelayLine::new(10);
        assert_eq!(line.next_due(), None);
        line.push(now + ms(30), "late").unwrap();
        line.push(now + ms(10), "first").unwrap();
        line.push(now + ms(10), "second").unwrap();
        line.push(now + ms(20), "middle").unwrap();
        assert_eq!(line.next_due(), Some(now + ms(10)));
        assert_eq!(line.pop_due(now + ms(9)), None, "nothing is due yet");
        assert_eq!(line.pop_due(now + ms(10)), Some("first"));
        assert_eq!(line.pop_due(now + ms(10)), Some("second"));
        assert_eq!(line.pop_due(now + ms(10)), None);
        assert_eq!(line.pop_due(now + ms(100)), Some("middle"));
        assert_eq!(line.pop_due(now + ms(100)), Some("late"));
        assert!(line.is_empty());
    }

    #[test]
    fn delay_line_keeps_fifo_order_for_many_equal_instants() {
        let now = Instant::now();
        let mut line = DelayLine::new(QUEUE_LIMIT);
        for packet in 0..QUEUE_LIMIT {
            line.push(now, packet).unwrap();
        }
        let order: Vec<_> = std::iter::from_fn(|| line.pop_due(now)).collect();
        assert_eq!(order, (0..QUEUE_LIMIT).collect::<Vec<_>>());
    }

    #[test]
    fn delay_line_refuses_packets_past_its_limit() {
        let now = Instant::now();
        let mut line = DelayLine::new(2);
        line.push(now, 1).unwrap();
        line.push(now, 2).unwrap();
        assert_eq!(line.push(now, 3), Err(3));
        assert_eq!(line.len(), 2);
    }

    #[test]
    fn path_refuses_packets_past_its_limit_without_booking_link_time() {
        let now = Instant::now();
        // 1250 bytes are 10 ms at 1 mbit/s; the path holds two packets.
        let mut path = ImpairedPath::new(parse("rate 1mbit"), Scripted::new(&[]), 2);
        assert!(path.offer(vec![1; 1250], now));
        assert!(path.offer(vec![2; 1250], now));
        assert!(!path.offer(vec![3; 1250], now), "the queue is full");
        assert_eq!(path.pop_due(now + ms(10)).map(|packet| packet[0]), Some(1));
        assert!(path.offer(vec![4; 1250], now + ms(10)));
        // Packet 4 follows packet 2 at once: the refused packet 3 took no link time.
        assert_eq!(path.pop_due(now + ms(20)).map(|packet| packet[0]), Some(2));
        assert_eq!(path.next_due(), Some(now + ms(30)));
        assert_eq!(path.pop_due(now + ms(30)).map(|packet| packet[0]), Some(4));
        assert_eq!(path.next_due(), None);
    }

    #[test]
    fn path_loses_what_the_impairer_drops() {
        let now = Instant::now();
        let mut path = ImpairedPath::new(parse("loss 50%"), Scripted::new(&[0.1, 0.9]), 10);
        assert!(!path.offer(b"lost".as_slice(), now));
        assert!(path.offer(b"kept".as_slice(), now));
        assert_eq!(path.pop_due(now), Some(b"kept".as_slice()));
    }

    #[test]
    fn names_fit_linux_limits_and_are_recognised_by_the_sweep() {
        let names = LinkNames::new(4_194_304, 9_999);
        assert!(
            names.client_device.len() <= MAX_DEVICE_NAME_LEN,
            "{names:?}"
        );
        assert!(
            names.gateway_device.len() <= MAX_DEVICE_NAME_LEN,
            "{names:?}"
        );
        assert_ne!(names.client_device, names.gateway_device);
        assert_eq!(
            LinkNames::parse_namespace(&names.namespace),
            Some((4_194_304, 9_999))
        );
        assert_eq!(LinkNames::new(1, 10_000), LinkNames::new(1, 0));
        assert_eq!(LinkNames::parse_namespace("sgnsfoo_1"), None);
        assert_eq!(LinkNames::parse_namespace("other"), None);
    }

    #[test]
    fn addresses_are_point_to_point_pairs_avoiding_those_in_use() {
        let first = LinkAddresses::for_block(0);
        assert_eq!(first.client, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(first.gateway, Ipv4Addr::new(10, 77, 0, 2));
        let last = LinkAddresses::for_block(BLOCKS_IN_SUBNET - 1);
        assert_eq!(last.gateway, Ipv4Addr::new(10, 77, 255, 254));
        assert_eq!(LinkAddresses::for_block(BLOCKS_IN_SUBNET), first);

        let free = LinkAddresses::choose(1234, 0, &[]);
        let taken = [free.gateway];
        let other = LinkAddresses::choose(1234, 0, &taken);
        assert_ne!(other, free);
        assert_ne!(LinkAddresses::choose(1234, 1, &[]), free);
    }

    #[test]
    fn reads_addresses_and_peers_from_ip_o_addr() {
        let listing = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                       5: sgc1_0    inet 10.77.0.1 peer 10.77.0.2/32 scope global sgc1_0\\ x\n";
        assert_eq!(
            parse_ipv4_addresses(listing),
            [
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(10, 77, 0, 1),
                Ipv4Addr::new(10, 77, 0, 2)
            ]
        );
    }

    #[test]
    fn reads_root_qdisc_counters_from_tc_json() {
        let json = r#"[{"kind":"netem","handle":"8001:","root":true,"refcnt":2,
            "options":{"limit":1000,"delay":{"delay":0.02}},"bytes":5400,"packets":40,
            "drops":3,"overlimits":0,"requeues":0,"backlog":0,"qlen":0}]"#;
        assert_eq!(
            parse_qdisc_stats(json),
            Some(DirectionStats {
                delivered_packets: 40,
                delivered_bytes: 5400,
                dropped_packets: 3
            })
        );
        assert_eq!(parse_qdisc_stats("[]"), None);
        assert_eq!(parse_qdisc_stats("not json"), None);
    }

    #[test]
    fn netem_arguments_are_the_displayed_impairment() {
        assert_eq!(
            netem_qdisc(&parse("loss 1% delay 20ms")),
            ["netem", "delay", "20ms", "loss", "1%"]
        );
    }

    // -----------------------------------------------------------------------------------------
    // Real links: these need root, `ip`, /dev/net/tun (or netem) and python3 for the servers
    // inside the namespace. Where one is missing they say so and pass without testing.
    // -----------------------------------------------------------------------------------------

    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

    /// An echo server for the tests, run inside the namespace: prints its port, then echoes
    /// TCP connections or UDP datagrams back.
    const ECHO_SERVER: &str = r#"
import socket, sys
protocol, address = sys.argv[1], sys.argv[2]
kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
server = socket.socket(socket.AF_INET, kind)
server.bind((address, 0))
if protocol == "tcp":
    server.listen(16)
print(server.getsockname()[1], flush=True)
while True:
    if protocol == "udp":
        data, peer = server.recvfrom(65536)
        server.sendto(data, peer)
        continue
    connection, _ = server.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := connection.recv(65536):
        connection.sendall(data)
    connection.close()
"#;

    /// Why real links cannot be tested here, if they cannot.
    fn real_links_unavailable() -> Option<&'static str> {
        if effective_uid() != Some(0) {
            return Some("not running as root");
        }
        if run_blocking(ip("-V")).is_err() {
            return Some("no `ip` command");
        }
        let python = Command::new("python3").args(["-c", ""]).status();
        if !python.is_ok_and(|status| status.success()) {
            return Some("no python3 for the echo servers");
        }
        None
    }

    macro_rules! skip_without_real_links {
        () => {
            if let Some(reason) = real_links_unavailable() {
                eprintln!("skipped: {reason}");
                return;
            }
        };
    }

    struct EchoServer {
        child: tokio::process::Child,
        port: u16,
    }

    impl EchoServer {
        async fn start(link: &ImpairedLink, protocol: &str) -> Self {
            let mut child = tokio::process::Command::from(link.command("python3"))
                .args(["-c", ECHO_SERVER, protocol, &link.gateway_ip().to_string()])
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("python3 starts inside the namespace");
            let stdout = child.stdout.take().expect("stdout is piped");
            let mut line = String::new();
            tokio::time::timeout(
                Duration::from_secs(10),
                BufReader::new(stdout).read_line(&mut line),
            )
            .await
            .expect("the echo server starts within 10 s")
            .expect("the echo server prints its port");
            let port = line.trim().parse().expect("a port number");
            Self { child, port }
        }

        /// Kills the server and waits for it, so that the namespace can go.
        async fn stop(mut self) {
            let _ = self.child.kill().await;
        }
    }

    /// Asserts that neither the namespace nor a device of the link is left.
    fn assert_gone(names: &LinkNames) {
        let namespaces = run_blocking(ip("netns list")).unwrap();
        assert!(
            !namespaces.contains(&names.namespace),
            "namespace {} left behind: {namespaces}",
            names.namespace
        );
        for device in [&names.client_device, &names.gateway_device] {
            assert!(
                run_blocking(ip(&format!("link show dev {device}"))).is_err(),
                "device {device} left behind"
            );
        }
    }

    fn mtu_of(namespace: Option<&str>, device: &str) -> Option<u32> {
        let in_namespace =
            namespace.map_or_else(String::new, |namespace| format!("-n {namespace}"));
        let listing =
            run_blocking(ip(&format!("{in_namespace} -o link show dev {device}"))).ok()?;
        let mut words = listing.split_whitespace();
        words.find(|&word| word == "mtu")?;
        words.next()?.parse().ok()
    }

    async fn echo_round_trip(stream: &mut tokio::net::TcpStream) -> Duration {
        let sent = Instant::now();
        stream.write_all(b"x").await.unwrap();
        let mut echo = [0_u8; 1];
        stream.read_exact(&mut echo).await.unwrap();
        sent.elapsed()
    }

    /// Through a `delay 20ms` link: MTU 1500 on both ends, a TCP handshake and echo round
    /// trips of 40 ms or more (20 ms each way) but well under a second, nothing dropped; then
    /// removes the link and checks that nothing is left.
    async fn check_tcp_round_trips_take_twice_the_delay(link: ImpairedLink) {
        eprintln!("{}", link.describe());
        let names = link.names.clone();
        assert_eq!(mtu_of(None, &names.client_device), Some(1500));
        assert_eq!(
            mtu_of(Some(&names.namespace), &names.gateway_device),
            Some(1500)
        );
        let server = EchoServer::start(&link, "tcp").await;

        let started = Instant::now();
        let connect = tokio::net::TcpStream::connect((link.gateway_ip(), server.port));
        let mut stream = tokio::time::timeout(Duration::from_secs(1), connect)
            .await
            .expect("connects within 1 s")
            .unwrap();
        let handshake = started.elapsed();
        stream.set_nodelay(true).unwrap();
        assert_eq!(stream.local_addr().unwrap().ip(), link.client_ip());
        let mut round_trips = Vec::new();
        for _ in 0..5 {
            round_trips.push(echo_round_trip(&mut stream).await);
        }
        eprintln!("handshake {handshake:?}, echo round trips {round_trips:?}");
        assert!(handshake >= ms(40), "handshake {handshake:?}");
        for round_trip in &round_trips {
            assert!(
                (ms(40)..Duration::from_secs(1)).contains(round_trip),
                "{round_trip:?}"
            );
        }
        let stats = link.stats().expect("stats");
        eprintln!("{stats:?}");
        assert!(stats.to_gateway.delivered_packets >= 6, "{stats:?}");
        assert!(stats.to_client.delivered_packets >= 6, "{stats:?}");
        assert_eq!(
            stats.to_gateway.dropped_packets + stats.to_client.dropped_packets,
            0
        );

        drop(stream);
        server.stop().await;
        link.remove().await.unwrap();
        assert_gone(&names);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_round_trips_through_a_20ms_link_take_at_least_40ms() {
        skip_without_real_links!();
        let link = ImpairedLink::create(&parse("delay 20ms loss 0%"))
            .await
            .unwrap();
        check_tcp_round_trips_take_twice_the_delay(link).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn userspace_link_delays_tcp_wherever_it_is_chosen() {
        skip_without_real_links!();
        let impairment = parse("delay 20ms");
        let link = ImpairedLink::create_using(&impairment, Mechanism::Userspace)
            .await
            .unwrap();
        assert_eq!(link.mechanism(), Mechanism::Userspace);
        check_tcp_round_trips_take_twice_the_delay(link).await;
    }

    /// On a kernel with netem this tests the netem link for real; on one without, that asking
    /// for it fails with the reason.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn netem_link_delays_tcp_or_says_why_it_cannot() {
        skip_without_real_links!();
        match ImpairedLink::create_using(&parse("delay 20ms"), Mechanism::Netem).await {
            Ok(link) => {
                assert_eq!(link.mechanism(), Mechanism::Netem);
                check_tcp_round_trips_take_twice_the_delay(link).await;
            }
            Err(error) => {
                let error = format!("{error:#}");
                eprintln!("netem unavailable: {error}");
                assert!(
                    error.contains("cannot impair a link with tc netem"),
                    "{error}"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_loss_keeps_a_connect_from_succeeding() {
        skip_without_real_links!();
        let link = ImpairedLink::create(&parse("delay 20ms loss 100%"))
            .await
            .unwrap();
        let names = link.names.clone();
        let server = EchoServer::start(&link, "tcp").await;

        let connect = tokio::net::TcpStream::connect((link.gateway_ip(), server.port));
        let outcome = tokio::time::timeout(Duration::from_secs(1), connect).await;
        assert!(
            outcome.is_err(),
            "connected through a link that loses everything: {outcome:?}"
        );
        let stats = link.stats().expect("stats");
        eprintln!("{stats:?}");
        assert!(
            stats.to_gateway.dropped_packets >= 1,
            "the SYN was dropped: {stats:?}"
        );
        assert_eq!(stats.to_gateway.delivered_packets, 0, "{stats:?}");

        server.stop().await;
        link.remove().await.unwrap();
        assert_gone(&names);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_datagrams_of_quic_size_cross_the_link() {
        skip_without_real_links!();
        let link = ImpairedLink::create(&parse("delay 20ms")).await.unwrap();
        let names = link.names.clone();
        let server = EchoServer::start(&link, "udp").await;
        let socket = tokio::net::UdpSocket::bind((link.client_ip(), 0))
            .await
            .unwrap();
        socket
            .connect((link.gateway_ip(), server.port))
            .await
            .unwrap();

        // 1200 bytes is QUIC's minimum; 1472 fills a 1500-byte MTU (20 IP + 8 UDP bytes).
        for size in [1200, 1472] {
            let datagram: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sent = Instant::now();
            socket.send(&datagram).await.unwrap();
            let mut echo = vec![0_u8; 2048];
            let received = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut echo))
                .await
                .expect("the echo comes back within 1 s")
                .unwrap();
            let round_trip = sent.elapsed();
            eprintln!("{size}-byte datagram round trip {round_trip:?}");
            assert_eq!(&echo[..received], &datagram[..]);
            assert!(round_trip >= ms(40), "{round_trip:?}");
        }

        server.stop().await;
        link.remove().await.unwrap();
        assert_gone(&names);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_link_leaves_nothing_behind() {
        skip_without_real_links!();
        let link = ImpairedLink::create(&parse("delay 5ms")).await.unwrap();
        let names = link.names.clone();
        assert!(run_blocking(ip("netns list"))
            .unwrap()
            .contains(&names.namespace));
        drop(link);
        assert_gone(&names);
    }

    /// The netem code path minus netem itself: a veth pair with `pfifo`, which every kernel has,
    /// standing in for the netem qdisc that this test machine may lack.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn veth_link_connects_and_counts_with_a_stand_in_qdisc() {
        skip_without_real_links!();
        let plan = Plan::Veth {
            qdisc: vec!["pfifo".to_owned()],
        };
        let link = ImpairedLink::build(&Impairment::default(), plan)
            .await
            .unwrap();
        assert_eq!(link.mechanism(), Mechanism::Netem);
        let names = link.names.clone();
        let server = EchoServer::start(&link, "tcp").await;
        let connect = tokio::net::TcpStream::connect((link.gateway_ip(), server.port));
        let mut stream = tokio::time::timeout(Duration::from_secs(1), connect)
            .await
            .expect("connects within 1 s")
            .unwrap();
        echo_round_trip(&mut stream).await;
        let stats = link.stats().expect("tc counters");
        eprintln!("{stats:?}");
        assert!(stats.to_gateway.delivered_packets >= 2, "{stats:?}");
        assert!(stats.to_client.delivered_packets >= 2, "{stats:?}");

        drop(stream);
        server.stop().await;
        link.remove().await.unwrap();
        assert_gone(&names);
    }
}
