//! [`MemoryBus`]: the embedded, single-process bus.
//!
//! # Design
//!
//! One mutex guards the bus state (sequence counter and topics). A publish takes it once:
//! it assigns the next sequence, appends the event to the topic's history and pushes an
//! `Arc<Event>` into the queue of each subscriber of that topic. Because sequence assignment
//! and queueing happen under the same lock, every subscriber sees events in sequence order,
//! across all of its topics, and one id is a correct resume point for a multi-topic
//! subscription.
//!
//! Each subscriber has its own bounded queue. When a push finds it full, the subscriber is
//! *detached*: the publisher stops queueing for it and moves on, so a slow reader never
//! delays the publisher or other subscribers. The subscriber first drains what is queued,
//! then receives [`Notice::Lagged`] and catches up from history in chunks no bigger than
//! its queue; once the rest of the history fits in one chunk it is re-attached, under the
//! bus lock, so nothing falls between the replay and the live queue. Events evicted before
//! it got there are reported with [`Notice::Gap`]. A resumed subscription starts detached
//! at its resume point and catches up the same way.
//!
//! # Lifecycle of topics and the memory bound
//!
//! A topic exists from its first publish or subscription. One that has only ever been
//! subscribed to goes with its last subscriber. One that was published to stays, with its
//! history, until the table is full ([`MemoryBusConfig::max_topics`]) and a new topic needs
//! its place: then the least recently used topic without subscribers is reclaimed. What it
//! lost is kept as a *tombstone* (topic → highest sequence dropped), so a subscriber that
//! later resumes on it from before that sequence gets [`Notice::Gap`], exactly as after an
//! eviction. Tombstones are bounded by `max_topics` too; past that the oldest are folded into
//! one bus-wide watermark, which makes a resume on any topic without a tombstone from before
//! it report a gap (possibly one that was not there, never the other way round). Only when
//! every topic has subscribers is a new topic refused ([`PublishError::TopicLimit`]).
//!
//! History is bounded per topic ([`HistoryConfig`]) and in total
//! ([`MemoryBusConfig::history_memory`]): over the total, the oldest events of the whole bus
//! are evicted first, found through an ordered set of each topic's oldest sequence, so a
//! publish stays O(log topics).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_core::Stream;

use crate::bus::{
    BoxFuture, BusHealth, Delivery, EventBus, HistoryUsage, Notice, SubscribeRequest, Subscription,
    TopicStats,
};
use crate::error::{PublishError, SubscribeError};
use crate::event::{unix_micros_now, ContentType, Epoch, Event, EventId, Topic};
use crate::history::{HistoryConfig, ResumePlan, TopicHistory};

/// Settings of a [`MemoryBus`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryBusConfig {
    /// Per-topic history bounds. Default: [`HistoryConfig::default`].
    pub history: HistoryConfig,
    /// Events queued per subscriber before it is detached as lagging. Default: 1024.
    pub subscriber_queue: usize,
    /// Largest payload accepted, in bytes. Default: 1 MiB.
    pub max_payload: usize,
    /// Most topics the bus tracks. When the table is full, a new topic replaces the least
    /// recently used topic that has no subscriber (its history is dropped, and a subscriber
    /// resuming from before it is told [`Notice::Gap`]); only when every topic has
    /// subscribers is a new one refused. Default: 10 000.
    pub max_topics: usize,
    /// Most bytes of history kept across all topics (counted by
    /// [`Event::accounted_size`]); over it the oldest events of the whole bus are evicted
    /// first, whatever their topic, exactly as a topic's own bounds evict. 0 means no such
    /// bound. Default: 256 MiB.
    pub history_memory: usize,
    /// Most topics in one subscription. Default: 64.
    pub max_topics_per_subscription: usize,
    /// Epoch to use; `None` draws a random one. Default: `None`.
    pub epoch: Option<Epoch>,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self {
            history: HistoryConfig::default(),
            subscriber_queue: 1024,
            max_payload: 1024 * 1024,
            max_topics: 10_000,
            history_memory: 256 * 1024 * 1024,
            max_topics_per_subscription: 64,
            epoch: None,
        }
    }
}

impl MemoryBusConfig {
    /// Sets [`MemoryBusConfig::history`].
    pub fn history(mut self, history: HistoryConfig) -> Self {
        self.history = history;
        self
    }

    /// Sets [`MemoryBusConfig::subscriber_queue`] (at least 1).
    pub fn subscriber_queue(mut self, events: usize) -> Self {
        self.subscriber_queue = events.max(1);
        self
    }

    /// Sets [`MemoryBusConfig::max_payload`].
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets [`MemoryBusConfig::max_topics`].
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.max_topics = topics;
        self
    }

    /// Sets [`MemoryBusConfig::history_memory`] (0: no bound).
    pub fn history_memory(mut self, bytes: usize) -> Self {
        self.history_memory = bytes;
        self
    }

    /// Sets [`MemoryBusConfig::max_topics_per_subscription`].
    pub fn max_topics_per_subscription(mut self, topics: usize) -> Self {
        self.max_topics_per_subscription = topics;
        self
    }

    /// Sets [`MemoryBusConfig::epoch`].
    pub fn epoch(mut self, epoch: Epoch) -> Self {
        self.epoch = Some(epoch);
        self
    }
}

/// The in-memory bus. Cheap to clone; clones share the same state.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    config: MemoryBusConfig,
    state: Mutex<State>,
}

struct State {
    /// Changes only when a mirror follows its log into a new epoch ([`MemoryBus::reset_epoch`]).
    epoch: Epoch,
    head_seq: u64,
    closed: bool,
    next_subscriber: u64,
    topics: HashMap<Topic, TopicState>,
    lifecycle: Lifecycle,
}

struct TopicState {
    history: TopicHistory,
    subscribers: HashMap<u64, Arc<SubscriberQueue>>,
    published: u64,
    /// While the topic has no subscriber: its key in [`Lifecycle::idle`].
    last_used: u64,
}

/// Which topics may make room for new ones, which events go when history is over its
/// memory bound, and what was lost when they did.
///
/// Every structure here is ordered so that a publish costs O(log topics): a topic's place in
/// `idle` moves when it is published to, its place in `oldest` when its oldest event goes.
#[derive(Default)]
struct Lifecycle {
    /// Topics without subscribers, least recently used first, by a tick of `clock`.
    idle: BTreeSet<(u64, Topic)>,
    clock: u64,
    /// Every topic with kept events, by the sequence of its oldest one: the first entry holds
    /// the oldest event of the whole bus.
    oldest: BTreeSet<(u64, Topic)>,
    /// Bytes kept across all topics.
    history_bytes: usize,
    memory_evictions: u64,
    topics_reclaimed: u64,
    tombstones: Tombstones,
}

/// What reclaimed topics lost, so that a subscriber resuming on one from before the loss is
/// told [`Notice::Gap`] instead of silently missing events. Bounded: past `max`, the entry
/// with the lowest sequence is forgotten and folded into `watermark`.
#[derive(Default)]
struct Tombstones {
    by_topic: HashMap<Topic, u64>,
    by_seq: BTreeSet<(u64, Topic)>,
    /// The highest sequence of a forgotten tombstone. A topic created without a tombstone may
    /// have lost events up to here (there is no telling which topic it was), so it starts as
    /// if they had been evicted: a resume from before it reports a gap that possibly was not
    /// one, never the other way round.
    watermark: u64,
    max: usize,
}

impl Tombstones {
    fn bury(&mut self, topic: Topic, lost_through: u64) {
        if lost_through == 0 {
            return;
        }
        let lost_through = match self.by_topic.get(&topic) {
            Some(&old) if old >= lost_through => return,
            Some(&old) => {
                self.by_seq.remove(&(old, topic.clone()));
                lost_through
            }
            None => lost_through,
        };
        self.by_topic.insert(topic.clone(), lost_through);
        self.by_seq.insert((lost_through, topic));
        while self.by_topic.len() > self.max {
            let Some((seq, forgotten)) = self.by_seq.pop_first() else {
                break;
            };
            self.by_topic.remove(&forgotten);
            self.watermark = self.watermark.max(seq);
        }
    }

    /// Takes `topic`'s record, for the topic being created again: what it lost before.
    fn exhume(&mut self, topic: &Topic) -> u64 {
        match self.by_topic.remove(topic) {
            Some(seq) => {
                self.by_seq.remove(&(seq, topic.clone()));
                seq
            }
            None => self.watermark,
        }
    }

    /// What `topic`, not in the table, lost before (0: nothing known).
    fn lost_through(&self, topic: &Topic) -> u64 {
        self.by_topic.get(topic).copied().unwrap_or(self.watermark)
    }

    fn clear(&mut self) {
        self.by_topic.clear();
        self.by_seq.clear();
        self.watermark = 0;
    }
}

impl Lifecycle {
    /// Marks `topic` (which has no subscriber) as used now.
    fn touch(&mut self, topic: &Topic, topic_state: &mut TopicState) {
        self.idle.remove(&(topic_state.last_used, topic.clone()));
        self.clock += 1;
        topic_state.last_used = self.clock;
        self.idle.insert((self.clock, topic.clone()));
    }

    /// `topic` got its first subscriber: it can no longer be reclaimed.
    fn busy(&mut self, topic: &Topic, topic_state: &TopicState) {
        self.idle.remove(&(topic_state.last_used, topic.clone()));
    }

    /// Accounts for a change of `topic`'s history whose oldest kept event was `first_before`
    /// and which held `bytes_before`.
    fn history_changed(
        &mut self,
        topic: &Topic,
        history: &TopicHistory,
        first_before: Option<u64>,
        bytes_before: usize,
    ) {
        self.history_bytes = self.history_bytes - bytes_before + history.bytes();
        let first_after = history.first_seq();
        if first_before != first_after {
            if let Some(seq) = first_before {
                self.oldest.remove(&(seq, topic.clone()));
            }
            if let Some(seq) = first_after {
                self.oldest.insert((seq, topic.clone()));
            }
        }
    }

    /// Forgets `topic`'s history, which is being dropped with the topic.
    fn forget_history(&mut self, topic: &Topic, history: &TopicHistory) {
        if let Some(seq) = history.first_seq() {
            self.oldest.remove(&(seq, topic.clone()));
        }
        self.history_bytes -= history.bytes();
    }
}

/// The publisher-facing half of one subscriber.
struct SubscriberQueue {
    inner: Mutex<QueueState>,
}

struct QueueState {
    events: VecDeque<Arc<Event>>,
    /// Notices for every subscriber ([`MemoryBus::broadcast_notice`]), each due once the
    /// subscriber has delivered everything up to the sequence it is paired with.
    notices: VecDeque<(u64, Notice)>,
    /// The bus moved from the first epoch to the second ([`MemoryBus::reset_epoch`]); the
    /// subscriber reports a reset and catches up from the start of the new epoch's history.
    reset: Option<(Epoch, Epoch)>,
    /// The publisher no longer queues for this subscriber; it catches up from history.
    detached: bool,
    /// Detached because the queue overflowed (as opposed to starting from a resume id).
    overflowed: bool,
    closed: bool,
    waker: Option<Waker>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these structures half-updated in a way that
    // matters more than stopping delivery would, so keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SubscriberQueue {
    fn new(detached: bool) -> Self {
        Self {
            inner: Mutex::new(QueueState {
                events: VecDeque::new(),
                notices: VecDeque::new(),
                reset: None,
                detached,
                overflowed: false,
                closed: false,
                waker: None,
            }),
        }
    }

    /// Called by the publisher, under the bus lock. Returns the subscriber's waker if it is
    /// waiting, for the publisher to wake once the bus lock is released: waking thousands of
    /// tasks inside the lock would hold up every other publish and subscribe.
    fn offer(&self, event: &Arc<Event>, capacity: usize) -> Option<Waker> {
        let mut queue = lock(&self.inner);
        if queue.detached || queue.closed {
            return None;
        }
        if queue.events.len() >= capacity {
            queue.detached = true;
            queue.overflowed = true;
        } else {
            queue.events.push_back(Arc::clone(event));
        }
        queue.waker.take()
    }

    fn close(&self) {
        let mut queue = lock(&self.inner);
        queue.closed = true;
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
    }

    /// Called under the bus lock, like [`SubscriberQueue::offer`].
    fn notify(&self, after_seq: u64, notice: Notice) -> Option<Waker> {
        let mut queue = lock(&self.inner);
        queue.notices.push_back((after_seq, notice));
        queue.waker.take()
    }

    /// Called under the bus lock when the epoch changes.
    fn reset(&self, old: &Epoch, new: &Epoch) -> Option<Waker> {
        let mut queue = lock(&self.inner);
        // After two quick resets the subscriber's position is still in the first epoch.
        let old = queue
            .reset
            .take()
            .map_or_else(|| old.clone(), |(old, _)| old);
        queue.reset = Some((old, new.clone()));
        queue.detached = true;
        queue.waker.take()
    }
}

impl MemoryBus {
    /// A new, empty bus.
    pub fn new(config: MemoryBusConfig) -> Self {
        let epoch = config.epoch.clone().unwrap_or_else(Epoch::random);
        let max_tombstones = config.max_topics.max(1);
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State {
                    epoch,
                    head_seq: 0,
                    closed: false,
                    next_subscriber: 0,
                    topics: HashMap::new(),
                    lifecycle: Lifecycle {
                        tombstones: Tombstones {
                            max: max_tombstones,
                            ..Tombstones::default()
                        },
                        ..Lifecycle::default()
                    },
                }),
            }),
        }
    }

    /// The epoch of this bus's ids.
    pub fn epoch(&self) -> Epoch {
        lock(&self.shared.state).epoch.clone()
    }

    /// The newest id assigned (or, for a mirror, ingested); sequence 0 before the first.
    pub fn head(&self) -> EventId {
        let state = lock(&self.shared.state);
        EventId::new(state.epoch.clone(), state.head_seq)
    }

    /// Publishes synchronously; [`EventBus::publish`] wraps this.
    ///
    /// # Errors
    /// See [`EventBus::publish`].
    pub fn publish_now(
        &self,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> Result<Arc<Event>, PublishError> {
        let config = &self.shared.config;
        self.check_payload(content_type, &payload)?;
        let mut state = lock(&self.shared.state);
        if state.closed {
            return Err(PublishError::Closed);
        }
        if !state.topics.contains_key(&topic) && !state.make_room(1, config) {
            return Err(PublishError::TopicLimit {
                max: config.max_topics,
            });
        }
        let event = Arc::new(Event::new(
            topic,
            EventId::new(state.epoch.clone(), state.head_seq + 1),
            unix_micros_now(),
            content_type,
            payload,
        ));
        self.append_locked(state, Arc::clone(&event));
        Ok(event)
    }

    /// Refuses a payload over [`MemoryBusConfig::max_payload`] or not matching its content
    /// type: the checks every publish passes, on this bus or through a broker.
    ///
    /// # Errors
    /// [`PublishError::TooLarge`] or [`PublishError::InvalidPayload`].
    pub fn check_payload(
        &self,
        content_type: ContentType,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let max = self.shared.config.max_payload;
        if payload.len() > max {
            return Err(PublishError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        content_type.validate(payload)?;
        Ok(())
    }

    /// Stores `event` (whose sequence is above the head) and queues it for its subscribers.
    fn append_locked(&self, mut state: MutexGuard<'_, State>, event: Arc<Event>) {
        let config = &self.shared.config;
        let seq = event.id.seq;
        state.topic_entry_unbounded(&event.topic, config);
        let State {
            topics, lifecycle, ..
        } = &mut *state;
        let Some(topic_state) = topics.get_mut(&event.topic) else {
            return;
        };
        let (first_before, bytes_before) =
            (topic_state.history.first_seq(), topic_state.history.bytes());
        topic_state.history.push(Arc::clone(&event));
        lifecycle.history_changed(
            &event.topic,
            &topic_state.history,
            first_before,
            bytes_before,
        );
        topic_state.published += 1;
        if topic_state.subscribers.is_empty() {
            lifecycle.touch(&event.topic, topic_state);
        }
        let wakers: Vec<Waker> = topic_state
            .subscribers
            .values()
            .filter_map(|subscriber| subscriber.offer(&event, config.subscriber_queue))
            .collect();
        state.head_seq = seq;
        state.enforce_history_memory(config);
        drop(state);
        for waker in wakers {
            waker.wake();
        }
    }

    /// Mirror mode: stores and delivers an event whose id was assigned elsewhere (by the
    /// broker of a [`BrokerBus`](crate::BrokerBus)), exactly as if it had been published
    /// here. Ids must arrive in increasing order: an event of another epoch, or at or below
    /// the head, is ignored and `false` returned (a feed that replays what the mirror
    /// already holds after a reconnection is harmless). Topic limits are not applied: a
    /// mirror holds whatever the log holds.
    pub fn ingest(&self, event: Event) -> bool {
        let mut state = lock(&self.shared.state);
        if state.closed || event.id.epoch != state.epoch || event.id.seq <= state.head_seq {
            return false;
        }
        if !state.topics.contains_key(&event.topic) {
            // Idle topics make room as for a publish; with none, the mirror still holds what
            // the log holds.
            state.make_room(1, &self.shared.config);
        }
        self.append_locked(state, Arc::new(event));
        true
    }

    /// Mirror mode: the log this bus mirrors was reset (it lost its data, or was
    /// recreated), so its ids restart under `epoch`. Every kept event is dropped, and every
    /// subscriber receives [`Notice::Reset`] after what it was already given, then the new
    /// epoch's events from the start.
    pub fn reset_epoch(&self, epoch: Epoch) {
        let config = &self.shared.config;
        let mut state = lock(&self.shared.state);
        if state.epoch == epoch {
            return;
        }
        let old = std::mem::replace(&mut state.epoch, epoch.clone());
        state.head_seq = 0;
        let mut wakers = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for topic_state in state.topics.values_mut() {
            topic_state.history = TopicHistory::new(config.history.clone());
            for (id, subscriber) in &topic_state.subscribers {
                if seen.insert(*id) {
                    wakers.extend(subscriber.reset(&old, &epoch));
                }
            }
        }
        state.topics.retain(|_, t| !t.subscribers.is_empty());
        // Every sequence below belongs to the old epoch; what is left has subscribers.
        let lifecycle = &mut state.lifecycle;
        lifecycle.idle.clear();
        lifecycle.oldest.clear();
        lifecycle.history_bytes = 0;
        lifecycle.tombstones.clear();
        drop(state);
        for waker in wakers {
            waker.wake();
        }
    }

    /// Mirror mode: the log has trimmed `topic`'s history through `seq`, possibly before
    /// this mirror saw those events. Drops what the mirror kept up to there and remembers
    /// the loss, so a resume from before it reports [`Notice::Gap`] exactly as an eviction
    /// here would.
    pub fn mark_evicted(&self, topic: &Topic, seq: u64) {
        let mut state = lock(&self.shared.state);
        let State {
            topics, lifecycle, ..
        } = &mut *state;
        match topics.get_mut(topic) {
            Some(topic_state) => {
                let history = &mut topic_state.history;
                let (first_before, bytes_before) = (history.first_seq(), history.bytes());
                history.evict_through(seq);
                lifecycle.history_changed(topic, history, first_before, bytes_before);
            }
            // Not a topic to hold open: what it lost is all there is to know about it.
            None => lifecycle.tombstones.bury(topic.clone(), seq),
        }
    }

    /// Whether publishing to `topic` stays within [`MemoryBusConfig::max_topics`]: the topic
    /// exists, the table has room, or a topic without subscribers can make room.
    pub fn has_room_for(&self, topic: &Topic) -> bool {
        let state = lock(&self.shared.state);
        state.topics.contains_key(topic)
            || state.topics.len() < self.shared.config.max_topics
            || !state.lifecycle.idle.is_empty()
    }

    /// Whether `topic` exists now (it has history, subscribers, or a record of its losses
    /// in the table): publishing to any other topic creates it.
    pub fn has_topic(&self, topic: &Topic) -> bool {
        lock(&self.shared.state).topics.contains_key(topic)
    }

    /// What retained history costs now.
    pub fn history_usage(&self) -> HistoryUsage {
        let state = lock(&self.shared.state);
        HistoryUsage {
            bytes: state.lifecycle.history_bytes,
            limit: self.shared.config.history_memory,
            memory_evictions: state.lifecycle.memory_evictions,
            topics: state.topics.len(),
            topics_reclaimed: state.lifecycle.topics_reclaimed,
        }
    }

    /// Gives every current subscriber `notice` once it has received every event up to the
    /// current head (so it lands between the events it is about, not before them).
    pub fn broadcast_notice(&self, notice: &Notice) {
        let state = lock(&self.shared.state);
        let mut wakers = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for topic_state in state.topics.values() {
            for (id, subscriber) in &topic_state.subscribers {
                if seen.insert(*id) {
                    wakers.extend(subscriber.notify(state.head_seq, notice.clone()));
                }
            }
        }
        drop(state);
        for waker in wakers {
            waker.wake();
        }
    }

    /// Subscribes synchronously; [`EventBus::subscribe`] wraps this.
    ///
    /// # Errors
    /// See [`EventBus::subscribe`].
    pub fn subscribe_now(&self, request: SubscribeRequest) -> Result<Subscription, SubscribeError> {
        let config = &self.shared.config;
        let topics = request.topics;
        if topics.is_empty() {
            return Err(SubscribeError::NoTopics);
        }
        if topics.len() > config.max_topics_per_subscription {
            return Err(SubscribeError::TooManyTopics {
                count: topics.len(),
                max: config.max_topics_per_subscription,
            });
        }
        for (i, topic) in topics.iter().enumerate() {
            if topics[..i].contains(topic) {
                return Err(SubscribeError::DuplicateTopic(topic.clone()));
            }
        }
        let mut state = lock(&self.shared.state);
        if state.closed {
            return Err(SubscribeError::Closed);
        }
        let epoch = state.epoch.clone();
        let plan = ResumePlan::decide(request.since.as_ref(), &epoch, state.head_seq)?;
        let mut notices = VecDeque::new();
        let mut loss_reported_through = vec![0; topics.len()];
        let (position, detached) = match plan {
            ResumePlan::Live => (state.head_seq, false),
            ResumePlan::After(seq) => (seq, true),
            ResumePlan::Reset { requested } => {
                notices.push_back(Notice::Reset {
                    requested,
                    epoch: epoch.clone(),
                });
                // A reset already says "you may have missed anything": what was evicted
                // before it is not reported again as gaps.
                for (reported, topic) in loss_reported_through.iter_mut().zip(&topics) {
                    *reported = match state.topics.get(topic) {
                        Some(topic_state) => topic_state.history.window().evicted_through,
                        None => state.lifecycle.tombstones.lost_through(topic),
                    };
                }
                (0, true)
            }
        };
        let new_topics = topics
            .iter()
            .filter(|t| !state.topics.contains_key(*t))
            .count();
        if !state.make_room(new_topics, config) {
            return Err(SubscribeError::TopicLimit {
                max: config.max_topics,
            });
        }
        let id = state.next_subscriber;
        state.next_subscriber += 1;
        let queue = Arc::new(SubscriberQueue::new(detached));
        for topic in &topics {
            state.topic_entry_unbounded(topic, config);
            let State {
                topics, lifecycle, ..
            } = &mut *state;
            if let Some(topic_state) = topics.get_mut(topic) {
                if topic_state.subscribers.is_empty() {
                    lifecycle.busy(topic, topic_state);
                }
                topic_state.subscribers.insert(id, Arc::clone(&queue));
            }
        }
        drop(state);
        let stream = MemorySubscription {
            bus: self.clone(),
            id,
            topics: topics.clone(),
            queue,
            position,
            last_delivered: None,
            notices,
            replay: VecDeque::new(),
            loss_reported_through,
        };
        let start = EventId::new(epoch, position);
        Ok(Subscription::new(topics, start, stream))
    }

    fn stats(&self) -> Vec<TopicStats> {
        let state = lock(&self.shared.state);
        let mut stats: Vec<TopicStats> = state
            .topics
            .iter()
            .map(|(topic, t)| TopicStats {
                topic: topic.clone(),
                history: t.history.window(),
                subscribers: t.subscribers.len(),
                published: t.published,
            })
            .collect();
        stats.sort_by(|a, b| a.topic.cmp(&b.topic));
        stats
    }
}

impl State {
    /// Makes room for `new_topics` more topics, reclaiming the least recently used topics
    /// without subscribers if the table would be over [`MemoryBusConfig::max_topics`].
    /// `false` (and nothing reclaimed) when not enough of them exist.
    fn make_room(&mut self, new_topics: usize, config: &MemoryBusConfig) -> bool {
        let over = (self.topics.len() + new_topics).saturating_sub(config.max_topics);
        if over > self.lifecycle.idle.len() {
            return false;
        }
        for _ in 0..over {
            let Some((_, topic)) = self.lifecycle.idle.pop_first() else {
                break;
            };
            if let Some(topic_state) = self.topics.remove(&topic) {
                let lifecycle = &mut self.lifecycle;
                lifecycle.forget_history(&topic, &topic_state.history);
                lifecycle.topics_reclaimed += 1;
                let lost_through = topic_state.history.lost_if_dropped();
                tracing::debug!(%topic, lost_through, "topic reclaimed to make room");
                lifecycle.tombstones.bury(topic, lost_through);
            }
        }
        true
    }

    /// Evicts the oldest events of the whole bus while history is over
    /// [`MemoryBusConfig::history_memory`].
    fn enforce_history_memory(&mut self, config: &MemoryBusConfig) {
        let limit = config.history_memory;
        let State {
            topics, lifecycle, ..
        } = self;
        while limit > 0 && lifecycle.history_bytes > limit {
            let Some((_, topic)) = lifecycle.oldest.pop_first() else {
                break;
            };
            let Some(topic_state) = topics.get_mut(&topic) else {
                continue;
            };
            lifecycle.history_bytes -= topic_state.history.evict_oldest();
            lifecycle.memory_evictions += 1;
            if let Some(seq) = topic_state.history.first_seq() {
                lifecycle.oldest.insert((seq, topic));
            }
        }
    }

    /// `topic`'s state, created (with what a reclaimed topic of that name lost) if needed,
    /// whatever [`MemoryBusConfig::max_topics`] says: callers make room first.
    fn topic_entry_unbounded(
        &mut self,
        topic: &Topic,
        config: &MemoryBusConfig,
    ) -> &mut TopicState {
        let tombstones = &mut self.lifecycle.tombstones;
        self.topics.entry(topic.clone()).or_insert_with(|| {
            let mut history = TopicHistory::new(config.history.clone());
            let lost_through = tombstones.exhume(topic);
            if lost_through > 0 {
                history.evict_through(lost_through);
            }
            TopicState {
                history,
                subscribers: HashMap::new(),
                published: 0,
                last_used: 0,
            }
        })
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus")
            .field("epoch", &self.epoch())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl EventBus for MemoryBus {
    fn publish(
        &self,
        topic: Topic,
        content_type: ContentType,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<Arc<Event>, PublishError>> {
        let result = self.publish_now(topic, content_type, payload);
        Box::pin(async move {
            // Publishing never waits, so a publisher in a loop would keep its worker thread
            // and starve the very subscribers it wakes (tokio runs a woken task in the LIFO
            // slot of the waking worker, which other workers cannot steal). Spending
            // cooperative budget makes such a loop yield now and then.
            tokio::task::consume_budget().await;
            result
        })
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        Box::pin(std::future::ready(self.subscribe_now(request)))
    }

    fn health(&self) -> BusHealth {
        let state = lock(&self.shared.state);
        BusHealth::new("memory", !state.closed, state.epoch.clone())
    }

    fn topic_stats(&self) -> BoxFuture<'_, Vec<TopicStats>> {
        Box::pin(std::future::ready(self.stats()))
    }

    fn has_topic(&self, topic: &Topic) -> bool {
        MemoryBus::has_topic(self, topic)
    }

    fn history_usage(&self) -> Option<HistoryUsage> {
        Some(MemoryBus::history_usage(self))
    }

    fn close(&self) {
        let mut state = lock(&self.shared.state);
        state.closed = true;
        for topic in state.topics.values() {
            for subscriber in topic.subscribers.values() {
                subscriber.close();
            }
        }
    }
}

/// The subscriber-facing half: a [`Stream`] of deliveries.
struct MemorySubscription {
    bus: MemoryBus,
    id: u64,
    topics: Vec<Topic>,
    queue: Arc<SubscriberQueue>,
    /// Sequence of the last event delivered or skipped over; the catch-up point.
    position: u64,
    last_delivered: Option<EventId>,
    notices: VecDeque<Notice>,
    replay: VecDeque<Arc<Event>>,
    /// Per topic (same order as `topics`), the highest evicted sequence already reported in a
    /// [`Notice::Gap`], so one loss is reported once however many catch-up chunks follow.
    loss_reported_through: Vec<u64>,
}

impl MemorySubscription {
    fn deliver(&mut self, event: Arc<Event>) -> Delivery {
        self.position = event.id.seq;
        self.last_delivered = Some(event.id.clone());
        Delivery::Event(event)
    }

    /// Loads the next chunk of history after `position` into `replay`, reports gaps, and
    /// re-attaches to the live queue when the chunk reaches the head. Runs under the bus lock
    /// so that no publish falls between the history read and the re-attachment.
    fn catch_up(&mut self) {
        let shared = &self.bus.shared;
        let chunk = shared.config.subscriber_queue;
        let state = lock(&shared.state);
        if lock(&self.queue.inner).reset.is_some() {
            // The epoch changed since the caller looked: this history is not the one
            // `position` points into. The caller handles the reset first.
            return;
        }
        let epoch = &state.epoch;
        let mut remaining = 0;
        for (i, topic) in self.topics.iter().enumerate() {
            let Some(topic_state) = state.topics.get(topic) else {
                continue;
            };
            let reported = &mut self.loss_reported_through[i];
            if let Some(lost_through) = topic_state.history.lost_after(self.position.max(*reported))
            {
                *reported = lost_through;
                self.notices.push_back(Notice::Gap {
                    topic: topic.clone(),
                    after: EventId::new(epoch.clone(), self.position),
                    lost_through: EventId::new(epoch.clone(), lost_through),
                });
            }
            remaining += topic_state.history.count_after(self.position);
            self.replay.extend(
                topic_state
                    .history
                    .after(self.position)
                    .take(chunk)
                    .cloned(),
            );
        }
        if self.topics.len() > 1 {
            self.replay.make_contiguous().sort_by_key(|e| e.id.seq);
        }
        self.replay.truncate(chunk);
        if remaining <= chunk {
            let mut queue = lock(&self.queue.inner);
            queue.detached = false;
            queue.overflowed = false;
        }
        if self.replay.is_empty() {
            // Everything after `position` was evicted: skip to the head, already reported as gaps.
            self.position = self.position.max(state.head_seq);
        }
    }
}

impl Stream for MemorySubscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = &mut *self;
        loop {
            if let Some(notice) = this.notices.pop_front() {
                return Poll::Ready(Some(Delivery::Notice(notice)));
            }
            if let Some(event) = this.replay.pop_front() {
                return Poll::Ready(Some(this.deliver(event)));
            }
            let mut queue = lock(&this.queue.inner);
            if queue
                .notices
                .front()
                .is_some_and(|(after, _)| *after <= this.position)
            {
                if let Some((_, notice)) = queue.notices.pop_front() {
                    return Poll::Ready(Some(Delivery::Notice(notice)));
                }
            }
            if let Some(event) = queue.events.pop_front() {
                drop(queue);
                if event.id.seq <= this.position {
                    continue;
                }
                return Poll::Ready(Some(this.deliver(event)));
            }
            // A detached subscriber catches up from history even after the bus closed: what it
            // missed is still kept, and ending early would drop it silently.
            if queue.detached {
                if let Some((old_epoch, epoch)) = queue.reset.take() {
                    // Everything queued before the reset was delivered above; what follows
                    // is the new epoch's, from its start.
                    queue.overflowed = false;
                    let requested = this
                        .last_delivered
                        .clone()
                        .unwrap_or_else(|| EventId::new(old_epoch, this.position));
                    this.notices.push_back(Notice::Reset { requested, epoch });
                    this.position = 0;
                    this.replay.clear();
                    this.loss_reported_through.iter_mut().for_each(|r| *r = 0);
                    // Notices paired with the old epoch's sequences are due now.
                    for (after, _) in &mut queue.notices {
                        *after = 0;
                    }
                    continue;
                }
                if queue.overflowed {
                    queue.overflowed = false;
                    this.notices.push_back(Notice::Lagged {
                        last_delivered: this.last_delivered.clone(),
                    });
                }
                drop(queue);
                this.catch_up();
                continue;
            }
            if let Some((_, notice)) = queue.notices.pop_front() {
                return Poll::Ready(Some(Delivery::Notice(notice)));
            }
            if queue.closed {
                return Poll::Ready(None);
            }
            queue.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        let mut state = lock(&self.bus.shared.state);
        let State {
            topics, lifecycle, ..
        } = &mut *state;
        for topic in &self.topics {
            let Some(topic_state) = topics.get_mut(topic) else {
                continue;
            };
            topic_state.subscribers.remove(&self.id);
            if !topic_state.subscribers.is_empty() {
                continue;
            }
            // A topic only ever subscribed to, never published, is forgotten with its last
            // subscriber: otherwise subscribing to made-up names would use up `max_topics`.
            // What it lost before (a reclaimed topic's record) goes back to the tombstones.
            if topic_state.published == 0 && topic_state.history.window().len == 0 {
                let lost_through = topic_state.history.lost_if_dropped();
                topics.remove(topic);
                lifecycle.tombstones.bury(topic.clone(), lost_through);
            } else {
                lifecycle.touch(topic, topic_state);
            }
        }
    }
}
