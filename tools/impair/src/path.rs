//! One direction of the link without its IO: what happens to one packet (an [`Impairer`]),
//! and the queue that holds packets until their time (a [`DelayLine`]); [`ImpairedPath`]
//! joins the two for the forwarder.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::spec::Impairment;

/// Packets a direction may hold at once before it drops new ones; netem's default `limit`.
pub const QUEUE_LIMIT: usize = 1000;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::{ms, parse};
    use rand::rngs::StdRng;
    use rand::SeedableRng as _;
    use std::collections::VecDeque;

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
}
