//! Bounded per-topic history and the resume rule, as plain data structures with no I/O.
//!
//! Every backend keeps (or reads) a window of recent events per topic. When a subscriber
//! asks to resume after an id, [`ResumePlan::decide`] says whether it can be trusted and
//! [`TopicHistory::lost_after`] says whether the window still reaches back far enough.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::SubscribeError;
use crate::event::{Epoch, Event, EventId};

/// Bounds on one topic's history. When either bound is passed the oldest events are evicted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryConfig {
    /// Most events kept per topic. Default: 1000.
    pub max_events: usize,
    /// Most bytes kept per topic, counted by [`Event::accounted_size`]. Default: 4 MiB.
    pub max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_events: 1000,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

impl HistoryConfig {
    /// Sets [`HistoryConfig::max_events`].
    pub fn max_events(mut self, max_events: usize) -> Self {
        self.max_events = max_events;
        self
    }

    /// Sets [`HistoryConfig::max_bytes`].
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

/// What a topic's history holds right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryWindow {
    /// Sequence of the oldest event kept, if any.
    pub first_seq: Option<u64>,
    /// Sequence of the newest event kept, if any.
    pub last_seq: Option<u64>,
    /// Events kept.
    pub len: usize,
    /// Bytes kept, as counted against [`HistoryConfig::max_bytes`].
    pub bytes: usize,
    /// Highest sequence ever evicted from this topic (0 if none): events of this topic at or
    /// below it can no longer be replayed.
    pub evicted_through: u64,
}

/// The retained events of one topic, oldest first, in increasing sequence order.
#[derive(Debug)]
pub struct TopicHistory {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
    evicted_through: u64,
    config: HistoryConfig,
}

impl TopicHistory {
    /// An empty history with the given bounds.
    pub fn new(config: HistoryConfig) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            evicted_through: 0,
            config,
        }
    }

    /// Appends `event`, then evicts from the front until both bounds hold. An event larger
    /// than `max_bytes` on its own is kept until the next push, so the newest event is
    /// always replayable. Returns how many events were evicted.
    ///
    /// # Panics
    /// In debug builds, if `event` does not have a higher sequence than the newest kept
    /// (a backend bug: sequences are assigned in order).
    pub fn push(&mut self, event: Arc<Event>) -> usize {
        debug_assert!(self
            .events
            .back()
            .is_none_or(|last| last.id.seq < event.id.seq));
        self.bytes += event.accounted_size();
        self.events.push_back(event);
        let mut evicted = 0;
        while self.events.len() > 1
            && (self.events.len() > self.config.max_events || self.bytes > self.config.max_bytes)
        {
            self.evict_front();
            evicted += 1;
        }
        if self.config.max_events == 0 {
            self.evict_front();
            evicted += 1;
        }
        evicted
    }

    fn evict_front(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.bytes -= old.accounted_size();
            self.evicted_through = old.id.seq;
        }
    }

    /// Evicts the oldest kept event, if any, as the bounds would: it is recorded as lost.
    /// Returns the bytes it freed (0 when the history was empty). A bus-wide memory bound
    /// calls this on the topic holding the oldest event of all.
    pub fn evict_oldest(&mut self) -> usize {
        let before = self.bytes;
        self.evict_front();
        before - self.bytes
    }

    /// Sequence of the oldest kept event.
    pub fn first_seq(&self) -> Option<u64> {
        self.events.front().map(|e| e.id.seq)
    }

    /// Bytes kept, as counted against [`HistoryConfig::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The highest sequence this topic ever held (kept or evicted), 0 if none: if the whole
    /// history is dropped, a subscriber that was before it has lost everything up to here.
    pub fn lost_if_dropped(&self) -> u64 {
        self.events
            .back()
            .map_or(self.evicted_through, |e| e.id.seq.max(self.evicted_through))
    }

    /// Evicts every kept event up to `seq` and records the loss through `seq`, as if they had
    /// been evicted by the bounds (a mirror learning that its log trimmed them).
    pub fn evict_through(&mut self, seq: u64) {
        while self.events.front().is_some_and(|e| e.id.seq <= seq) {
            self.evict_front();
        }
        self.evicted_through = self.evicted_through.max(seq);
    }

    /// Number of kept events with a sequence above `seq`.
    pub fn count_after(&self, seq: u64) -> usize {
        self.events.len() - self.events.partition_point(|e| e.id.seq <= seq)
    }

    /// Kept events with a sequence above `seq`, oldest first.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &Arc<Event>> + '_ {
        let start = self.events.partition_point(|e| e.id.seq <= seq);
        self.events.range(start..)
    }

    /// If events of this topic after `seq` were evicted, the highest evicted sequence.
    pub fn lost_after(&self, seq: u64) -> Option<u64> {
        (self.evicted_through > seq).then_some(self.evicted_through)
    }

    /// A summary of what is kept.
    pub fn window(&self) -> HistoryWindow {
        HistoryWindow {
            first_seq: self.events.front().map(|e| e.id.seq),
            last_seq: self.events.back().map(|e| e.id.seq),
            len: self.events.len(),
            bytes: self.bytes,
            evicted_through: self.evicted_through,
        }
    }
}

/// Where a new subscription starts, decided from the client's resume id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumePlan {
    /// No resume id: only events published from now on.
    Live,
    /// Replay every kept event with a sequence above this one, then go live.
    After(u64),
    /// The resume id is from another epoch: say so, replay everything kept, then go live.
    Reset {
        /// The id the client sent.
        requested: EventId,
    },
}

impl ResumePlan {
    /// Applies the resume rule of `docs/PROTOCOL.md` to a client's resume id, given the bus's
    /// current `epoch` and the newest sequence it has assigned (`head_seq`).
    ///
    /// # Errors
    /// [`SubscribeError::CursorAhead`] if the id is in the current epoch but beyond `head_seq`:
    /// no such id was ever handed out.
    pub fn decide(
        since: Option<&EventId>,
        epoch: &Epoch,
        head_seq: u64,
    ) -> Result<Self, SubscribeError> {
        match since {
            None => Ok(Self::Live),
            Some(id) if id.epoch != *epoch => Ok(Self::Reset {
                requested: id.clone(),
            }),
            Some(id) if id.seq > head_seq => Err(SubscribeError::CursorAhead {
                since: id.clone(),
                head_seq,
            }),
            Some(id) => Ok(Self::After(id.seq)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ContentType, Topic};
    use bytes::Bytes;

    fn event(seq: u64, len: usize) -> Arc<Event> {
        Arc::new(Event::new(
            Topic::new("t").unwrap(),
            EventId::new(Epoch::new("e").unwrap(), seq),
            0,
            ContentType::Binary,
            Bytes::from(vec![0u8; len]),
        ))
    }

    #[test]
    fn count_bound_evicts_oldest() {
        let mut history = TopicHistory::new(HistoryConfig::default().max_events(3));
        for seq in 1..=5 {
            history.push(event(seq, 1));
        }
        let window = history.window();
        assert_eq!(window.first_seq, Some(3));
        assert_eq!(window.last_seq, Some(5));
        assert_eq!(window.len, 3);
        assert_eq!(window.evicted_through, 2);
        assert_eq!(history.lost_after(1), Some(2));
        assert_eq!(history.lost_after(2), None);
    }

    #[test]
    fn byte_bound_evicts_oldest_but_keeps_newest() {
        let per_event = event(1, 100).accounted_size();
        let mut history = TopicHistory::new(HistoryConfig::default().max_bytes(per_event * 2 + 10));
        for seq in 1..=4 {
            history.push(event(seq, 100));
        }
        assert_eq!(history.window().len, 2);
        assert_eq!(history.window().bytes, per_event * 2);
        history.push(event(5, 10_000));
        assert_eq!(history.window().len, 1, "an oversized event is kept alone");
        assert_eq!(history.window().first_seq, Some(5));
    }

    #[test]
    fn after_and_count_after() {
        let mut history = TopicHistory::new(HistoryConfig::default());
        for seq in [2, 4, 6, 8] {
            history.push(event(seq, 1));
        }
        let seqs: Vec<u64> = history.after(4).map(|e| e.id.seq).collect();
        assert_eq!(seqs, vec![6, 8]);
        assert_eq!(history.count_after(0), 4);
        assert_eq!(history.count_after(5), 2);
        assert_eq!(history.count_after(8), 0);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut history = TopicHistory::new(HistoryConfig::default().max_events(0));
        history.push(event(1, 1));
        assert_eq!(history.window().len, 0);
        assert_eq!(history.lost_after(0), Some(1));
    }

    #[test]
    fn resume_rule() {
        let epoch = Epoch::new("now").unwrap();
        let old = Epoch::new("old").unwrap();
        assert_eq!(
            ResumePlan::decide(None, &epoch, 9).unwrap(),
            ResumePlan::Live
        );
        assert_eq!(
            ResumePlan::decide(Some(&EventId::new(epoch.clone(), 9)), &epoch, 9).unwrap(),
            ResumePlan::After(9)
        );
        assert!(matches!(
            ResumePlan::decide(Some(&EventId::new(old, 3)), &epoch, 9).unwrap(),
            ResumePlan::Reset { .. }
        ));
        assert!(matches!(
            ResumePlan::decide(Some(&EventId::new(epoch.clone(), 10)), &epoch, 9),
            Err(SubscribeError::CursorAhead { head_seq: 9, .. })
        ));
    }
}
