//! # streamgate-bench
//!
//! Scenarios for measuring the in-process [`MemoryBus`] the way the gateway uses it: one
//! publisher, many subscribers, every event fanned out to all of them.
//!
//! ## The fan-out scenario
//!
//! [`run_fanout`] runs one [`Scenario`]:
//!
//! 1. It builds a fresh bus, opens `subscribers` subscriptions to one topic and moves each one
//!    into its own tokio task, exactly as a transport would hold one per connected client.
//! 2. Once every subscriber task is running, one publisher task publishes `events` events.
//! 3. Each subscriber reads its stream until it has seen the last event, timing every
//!    delivery into its own latency histogram; the histograms are merged at the end.
//!
//! ## How latency is measured
//!
//! The publisher writes a send time into the first 8 bytes of every payload (nanoseconds since
//! an [`Instant`] shared by all tasks, little-endian) and the event's index into the next 8 (see
//! [`encode_payload`]). A subscriber subtracts that from its own clock reading, so the figure
//! covers everything between "the publisher meant to send" and "the subscriber holds the
//! event": the publish call, the fan-out under the bus lock, the task wake-up and scheduling.
//! Using the payload rather than [`Event::timestamp_us`](streamgate_core::Event) keeps the
//! measurement monotonic and at nanosecond resolution.
//!
//! [`Pace`] decides what "meant to send" is:
//!
//! - [`Pace::Rate`] is *open loop*: event `i` is due at `start + i / rate`, whatever happened
//!   to event `i - 1`, and the payload carries that due time, not the time the publish really
//!   started. If the publisher falls behind (because a publish to 10 000 subscribers takes
//!   longer than the interval, say), the events it sends late are charged for the wait. A
//!   closed-loop publisher would instead quietly send fewer events and only time the ones it
//!   managed to send, hiding the stall: that is *coordinated omission*.
//! - [`Pace::Saturate`] publishes back to back and stamps each event just before its publish.
//!   The figure to read is then throughput; latency mostly measures how far the subscribers
//!   trail the publisher, which is queueing, not the bus's own delay.
//!
//! ## Lag is reported, never hidden
//!
//! A subscriber whose queue overflows is detached by the bus and catches up from history,
//! receiving [`Notice::Lagged`], then [`Notice::Gap`] if history no longer reaches back. The
//! scenario counts those notices and the events that never arrived; `deliveries` equals
//! `subscribers × events` only when nothing lagged. [`Scenario::queue_capacity`] sets the
//! per-subscriber queue; by default it is large enough to hold every event of the run.

pub mod vs_nchan;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
// The arithmetic is shared with `streamgate compare`, so both report the same resolution.
use serde::Serialize;
pub use streamgate_compare::stats::{format_table, latency_histogram, median, LatencySummary};
use streamgate_core::{
    ContentType, Delivery, EventBus, MemoryBus, MemoryBusConfig, Notice, SubscribeRequest,
    Subscription, Topic,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Bytes at the start of every payload that the scenario reads back: send time and index.
pub const HEADER_BYTES: usize = 16;

/// Below this much time to wait, an open-loop publisher ([`wait_until`]) stops trusting
/// tokio's timer.
///
/// The timer fires on millisecond ticks, so a `sleep_until` can end up to a millisecond late,
/// and that lateness would be charged as latency to the bus (or Redis) under test.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// How the publisher paces its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Back to back, as fast as the bus accepts them.
    Saturate,
    /// Open loop: this many events per second, each at its scheduled time.
    Rate(NonZeroU64),
}

impl Pace {
    /// `0` means [`Pace::Saturate`], anything else is a rate in events per second.
    pub fn from_rate(events_per_second: u64) -> Self {
        NonZeroU64::new(events_per_second).map_or(Self::Saturate, Self::Rate)
    }

    /// When event `index` is due, in nanoseconds after the publisher's start.
    fn due_after_start(self, index: u64) -> Option<u64> {
        match self {
            Self::Saturate => None,
            Self::Rate(rate) => {
                let due = u128::from(index) * 1_000_000_000 / u128::from(rate.get());
                Some(u64::try_from(due).unwrap_or(u64::MAX))
            }
        }
    }
}

/// One fan-out run: `subscribers` subscribers of one topic, `events` events published to it.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Subscriber tasks, each holding one subscription.
    pub subscribers: usize,
    /// Events to publish.
    pub events: u64,
    /// Payload size in bytes; at least [`HEADER_BYTES`].
    pub payload_bytes: usize,
    /// How the publisher paces the events.
    pub pace: Pace,
    /// Per-subscriber queue, in events; `None` means `max(events, 1024)`, so nothing can lag.
    pub queue_capacity: Option<usize>,
    /// How long to wait for the subscribers once the last event is published. A subscriber
    /// still reading then is cut off by closing the bus and reported as unfinished.
    pub drain_timeout: Duration,
    /// Under [`Pace::Saturate`], whether the publisher yields to the scheduler after each
    /// publish. Default: `true`.
    ///
    /// `false` runs the publisher as a tight loop of `publish(..).await`. The memory bus's
    /// publish never waits, and tokio puts the task a publish wakes in the waking worker's
    /// LIFO slot, which other workers cannot steal; before `publish` spent tokio's
    /// cooperative budget, such a loop kept its worker for the whole run and a lone
    /// subscriber overflowed any queue smaller than the run. It now gives up its worker
    /// every 128 publishes (the budget), so the subscriber runs at least that often; `false`
    /// shows what remains of the hazard (a loop can still outrun subscribers whose queue is
    /// short, see `bench/README.md`). The default is what a gateway task does anyway,
    /// awaiting its next input between publishes.
    pub publisher_yields: bool,
}

impl Scenario {
    /// A scenario with the default payload (256 bytes), queue and drain timeout.
    pub fn new(subscribers: usize, events: u64, pace: Pace) -> Self {
        Self {
            subscribers,
            events,
            payload_bytes: 256,
            pace,
            queue_capacity: None,
            drain_timeout: Duration::from_secs(60),
            publisher_yields: true,
        }
    }

    /// The per-subscriber queue this scenario runs with.
    pub fn effective_queue_capacity(&self) -> usize {
        self.queue_capacity.unwrap_or_else(|| {
            // A full queue detaches the subscriber; sizing it for the whole run means the
            // figures describe the bus's normal path, not its catch-up path.
            usize::try_from(self.events).unwrap_or(usize::MAX).max(1024)
        })
    }
}

/// What one [`run_fanout`] measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// Subscribers in the run.
    pub subscribers: usize,
    /// Events published.
    pub published: u64,
    /// Events received, summed over all subscribers.
    pub deliveries: u64,
    /// `subscribers × published`: what `deliveries` is when nothing is lost.
    pub expected_deliveries: u64,
    /// [`Notice::Lagged`] received: a subscriber's queue overflowed.
    pub lagged: u64,
    /// [`Notice::Gap`] received: events were evicted before a lagging subscriber got them.
    pub gaps: u64,
    /// Any other notice received (none is expected in this scenario).
    pub other_notices: u64,
    /// Deliveries whose index was not above the previous one's: the bus broke its ordering.
    pub misordered: u64,
    /// Subscribers that had not seen the last event when the drain timeout ran out.
    pub unfinished_subscribers: usize,
    /// Per-subscriber queue the bus ran with.
    pub queue_capacity: usize,
    /// From the first publish to the last delivery, in seconds.
    pub elapsed_secs: f64,
    /// `deliveries / elapsed_secs`.
    pub delivered_per_sec: f64,
    /// Events published per second of publishing.
    pub published_per_sec: f64,
    /// Open loop only: the furthest the publisher fell behind its schedule, in microseconds.
    pub publisher_behind_max_us: f64,
    /// Publish-to-receive latency of every delivery.
    pub latency: LatencySummary,
}

/// Builds a payload of `len` bytes (at least [`HEADER_BYTES`]) carrying `send_ns` and `index`.
pub fn encode_payload(send_ns: u64, index: u64, len: usize) -> Bytes {
    let mut payload = BytesMut::with_capacity(len.max(HEADER_BYTES));
    payload.put_u64_le(send_ns);
    payload.put_u64_le(index);
    payload.resize(len.max(HEADER_BYTES), 0);
    payload.freeze()
}

/// Reads back `(send_ns, index)` from a payload built by [`encode_payload`].
pub fn decode_payload(payload: &[u8]) -> Option<(u64, u64)> {
    let send = payload.get(..8)?.try_into().ok()?;
    let index = payload.get(8..HEADER_BYTES)?.try_into().ok()?;
    Some((u64::from_le_bytes(send), u64::from_le_bytes(index)))
}

/// Nanoseconds elapsed since `base`, the clock every task of a run shares.
pub fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Runs one fan-out scenario on the current tokio runtime and reports what it measured.
///
/// Use a multi-threaded runtime: on a current-thread runtime the publisher and every
/// subscriber share one thread and the figures say little about the gateway.
///
/// # Errors
/// If the scenario is malformed (no subscribers, no events, a payload smaller than
/// [`HEADER_BYTES`]) or the bus refuses a subscribe or publish.
pub async fn run_fanout(scenario: &Scenario) -> anyhow::Result<RunReport> {
    anyhow::ensure!(
        scenario.subscribers > 0,
        "a fan-out needs at least one subscriber"
    );
    anyhow::ensure!(scenario.events > 0, "a fan-out needs at least one event");
    anyhow::ensure!(
        scenario.payload_bytes >= HEADER_BYTES,
        "payloads must be at least {HEADER_BYTES} bytes to carry the send time and index"
    );
    let queue_capacity = scenario.effective_queue_capacity();
    let bus = MemoryBus::new(
        MemoryBusConfig::default()
            .subscriber_queue(queue_capacity)
            .max_payload(
                scenario
                    .payload_bytes
                    .max(MemoryBusConfig::default().max_payload),
            ),
    );
    let topic = Topic::new("bench.fanout")?;
    let base = Instant::now();

    // Every subscription is registered before the first publish, so each one is owed every
    // event and `deliveries` has an exact expected value.
    let ready = Arc::new(Semaphore::new(0));
    let mut subscribers = JoinSet::new();
    for _ in 0..scenario.subscribers {
        let subscription = bus
            .subscribe(SubscribeRequest::live(vec![topic.clone()]))
            .await
            .context("subscribing")?;
        subscribers.spawn(subscribe_loop(
            subscription,
            scenario.events - 1,
            base,
            Arc::clone(&ready),
        ));
    }
    // Wait until every task has been polled once, so the first events do not also measure
    // how long the runtime takes to start thousands of tasks.
    let all = u32::try_from(scenario.subscribers).context("too many subscribers")?;
    ready.acquire_many(all).await?.forget();

    let publisher = tokio::spawn(publish_loop(bus.clone(), topic, scenario.clone(), base));
    let published = publisher.await.context("publisher task")??;

    let mut totals = Totals::default();
    let deadline = tokio::time::Instant::now() + scenario.drain_timeout;
    // Closing ends every subscription once its queue is drained, so the stragglers return
    // what they have and the run still reports. One the bus had detached for lagging ends
    // without its Lagged notice (a core bug), so what it missed shows only in `deliveries`.
    let ends = join_by_deadline(&mut subscribers, deadline, || bus.close()).await;
    for end in ends.context("subscriber task")? {
        totals.add(end)?;
    }
    bus.close();

    let elapsed_ns = totals
        .seen
        .last_receive_ns
        .saturating_sub(published.start_ns);
    let elapsed_secs = elapsed_ns as f64 / 1e9;
    let publish_secs = published.end_ns.saturating_sub(published.start_ns) as f64 / 1e9;
    let per_sec = |count: u64, secs: f64| if secs > 0.0 { count as f64 / secs } else { 0.0 };
    Ok(RunReport {
        subscribers: scenario.subscribers,
        published: published.count,
        deliveries: totals.seen.deliveries,
        expected_deliveries: published.count * scenario.subscribers as u64,
        lagged: totals.seen.lagged,
        gaps: totals.seen.gaps,
        other_notices: totals.seen.other_notices,
        misordered: totals.seen.misordered,
        unfinished_subscribers: totals.unfinished,
        queue_capacity,
        elapsed_secs,
        delivered_per_sec: per_sec(totals.seen.deliveries, elapsed_secs),
        published_per_sec: per_sec(published.count, publish_secs),
        publisher_behind_max_us: published.behind_max_ns as f64 / 1_000.0,
        latency: LatencySummary::from_nanos(&totals.seen.latency),
    })
}

/// What the publisher did.
#[derive(Debug)]
struct Published {
    count: u64,
    start_ns: u64,
    end_ns: u64,
    behind_max_ns: u64,
}

async fn publish_loop(
    bus: MemoryBus,
    topic: Topic,
    scenario: Scenario,
    base: Instant,
) -> anyhow::Result<Published> {
    let start_ns = nanos_since(base);
    let mut behind_max_ns = 0;
    for index in 0..scenario.events {
        let send_ns = match scenario.pace.due_after_start(index) {
            None => nanos_since(base),
            Some(due) => {
                let due_ns = start_ns.saturating_add(due);
                wait_until(base, due_ns).await;
                behind_max_ns = behind_max_ns.max(nanos_since(base).saturating_sub(due_ns));
                // The due time, not the actual one: a late publish is the publisher's delay
                // and belongs in the latency it causes.
                due_ns
            }
        };
        let payload = encode_payload(send_ns, index, scenario.payload_bytes);
        bus.publish(topic.clone(), ContentType::Binary, payload)
            .await
            .with_context(|| format!("publishing event {index}"))?;
        if scenario.pace == Pace::Saturate && scenario.publisher_yields {
            tokio::task::yield_now().await;
        }
    }
    Ok(Published {
        count: scenario.events,
        start_ns,
        end_ns: nanos_since(base),
        behind_max_ns,
    })
}

/// Every task of `tasks`, as they finish. Once `deadline` passes, `cut_off` is called (once):
/// it must make the tasks still running end, so that a run that stalls still reports what
/// arrived.
///
/// # Errors
/// A task that panicked.
pub async fn join_by_deadline<T: 'static>(
    tasks: &mut JoinSet<T>,
    deadline: tokio::time::Instant,
    cut_off: impl FnOnce(),
) -> Result<Vec<T>, tokio::task::JoinError> {
    let mut cut_off = Some(cut_off);
    let mut finished = Vec::with_capacity(tasks.len());
    loop {
        let next = tasks.join_next();
        let joined = if cut_off.is_none() {
            next.await
        } else if let Ok(joined) = tokio::time::timeout_at(deadline, next).await {
            joined
        } else {
            if let Some(cut_off) = cut_off.take() {
                cut_off();
            }
            continue;
        };
        match joined {
            Some(joined) => finished.push(joined?),
            None => return Ok(finished),
        }
    }
}

/// Waits until `due_ns` after `base`: on the timer while far away, then by yielding.
pub async fn wait_until(base: Instant, due_ns: u64) {
    let due = base + Duration::from_nanos(due_ns);
    let now = Instant::now();
    if due <= now {
        return;
    }
    if due - now > TIMER_SLACK {
        tokio::time::sleep_until((due - TIMER_SLACK).into()).await;
    }
    // Yielding rather than spinning in place lets woken subscribers run on this worker while
    // the publisher waits out the last stretch.
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

/// What subscribers saw: one subscriber's, or every subscriber's merged into [`Totals`].
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    deliveries: u64,
    lagged: u64,
    gaps: u64,
    other_notices: u64,
    misordered: u64,
    last_receive_ns: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency: latency_histogram(),
            deliveries: 0,
            lagged: 0,
            gaps: 0,
            other_notices: 0,
            misordered: 0,
            last_receive_ns: 0,
        }
    }
}

/// One subscriber's [`Tally`], and whether it saw the last event.
#[derive(Debug)]
struct SubscriberEnd {
    tally: Tally,
    finished: bool,
}

async fn subscribe_loop(
    mut subscription: Subscription,
    last_index: u64,
    base: Instant,
    ready: Arc<Semaphore>,
) -> anyhow::Result<SubscriberEnd> {
    let mut tally = Tally::default();
    let mut previous: Option<u64> = None;
    ready.add_permits(1);
    // The last event is always kept in history, so even a subscriber that lagged and lost
    // events on the way receives it; the stream only ends early if the bus is closed.
    while let Some(delivery) = subscription.next().await {
        match delivery {
            Delivery::Event(event) => {
                let now_ns = nanos_since(base);
                let (send_ns, index) = decode_payload(&event.payload)
                    .context("a payload without the benchmark header")?;
                tally.latency.record(now_ns.saturating_sub(send_ns))?;
                tally.deliveries += 1;
                tally.last_receive_ns = now_ns;
                if previous.is_some_and(|previous| index <= previous) {
                    tally.misordered += 1;
                }
                previous = Some(index);
                if index >= last_index {
                    return Ok(SubscriberEnd {
                        tally,
                        finished: true,
                    });
                }
            }
            Delivery::Notice(Notice::Lagged { .. }) => tally.lagged += 1,
            Delivery::Notice(Notice::Gap { .. }) => tally.gaps += 1,
            Delivery::Notice(_) => tally.other_notices += 1,
        }
    }
    Ok(SubscriberEnd {
        tally,
        finished: false,
    })
}

/// Every subscriber's [`Tally`], merged, and how many never saw the last event.
#[derive(Debug, Default)]
struct Totals {
    seen: Tally,
    unfinished: usize,
}

impl Totals {
    fn add(&mut self, end: anyhow::Result<SubscriberEnd>) -> anyhow::Result<()> {
        let SubscriberEnd { tally, finished } = end?;
        let seen = &mut self.seen;
        seen.latency.add(&tally.latency)?;
        seen.deliveries += tally.deliveries;
        seen.lagged += tally.lagged;
        seen.gaps += tally.gaps;
        seen.other_notices += tally.other_notices;
        seen.misordered += tally.misordered;
        seen.last_receive_ns = seen.last_receive_ns.max(tally.last_receive_ns);
        self.unfinished += usize::from(!finished);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let payload = encode_payload(123_456_789, 42, 256);
        assert_eq!(payload.len(), 256);
        assert_eq!(decode_payload(&payload), Some((123_456_789, 42)));
        assert_eq!(encode_payload(1, 2, 3).len(), HEADER_BYTES);
        assert_eq!(decode_payload(&[0; 15]), None);
    }

    #[test]
    fn open_loop_schedule() {
        let pace = Pace::from_rate(4);
        assert_eq!(pace.due_after_start(0), Some(0));
        assert_eq!(pace.due_after_start(3), Some(750_000_000));
        assert_eq!(Pace::from_rate(0), Pace::Saturate);
        assert_eq!(Pace::Saturate.due_after_start(3), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_subscriber_gets_every_event() {
        let report = run_fanout(&Scenario::new(8, 500, Pace::Saturate))
            .await
            .unwrap();
        assert_eq!(report.published, 500);
        assert_eq!(report.deliveries, 8 * 500);
        assert_eq!(report.deliveries, report.expected_deliveries);
        assert_eq!(report.latency.samples, 8 * 500);
        assert_eq!((report.lagged, report.gaps, report.misordered), (0, 0, 0));
        assert_eq!(report.unfinished_subscribers, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_run_completes() {
        let report = run_fanout(&Scenario::new(4, 50, Pace::from_rate(5_000)))
            .await
            .unwrap();
        assert_eq!(report.deliveries, 4 * 50);
        // 50 events at 5000/s are scheduled over 9.8 ms.
        assert!(report.elapsed_secs >= 0.0098, "{report:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lag_is_reported_and_the_run_still_ends() {
        let mut scenario = Scenario::new(4, 20_000, Pace::Saturate);
        // A queue of one overflows almost at once; history (1000 events by default) is far
        // shorter than the run, so lagging subscribers also lose events.
        scenario.queue_capacity = Some(1);
        let report = run_fanout(&scenario).await.unwrap();
        assert_eq!(report.unfinished_subscribers, 0);
        assert_eq!(report.misordered, 0);
        assert!(report.lagged > 0, "{report:?}");
        assert_eq!(
            report.deliveries < report.expected_deliveries,
            report.gaps > 0,
            "events are missing exactly when a gap was reported: {report:?}"
        );
    }
}
