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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_core::Stream;

use crate::bus::{
    BoxFuture, BusHealth, Delivery, EventBus, Notice, SubscribeRequest, Subscription,
};
use crate::error::{PublishError, SubscribeError};
use crate::event::{unix_micros_now, ContentType, Epoch, Event, EventId, Topic};
use crate::history::{HistoryConfig, HistoryWindow, ResumePlan, TopicHistory};

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
    /// Most topics the bus tracks. Default: 10 000.
    pub max_topics: usize,
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

/// Summary of one topic, for `/topics` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic.
    pub topic: Topic,
    /// What its history holds.
    pub history: HistoryWindow,
    /// Current subscribers.
    pub subscribers: usize,
    /// Events published since the bus started.
    pub published: u64,
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
}

struct TopicState {
    history: TopicHistory,
    subscribers: HashMap<u64, Arc<SubscriberQueue>>,
    published: u64,
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
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State {
                    epoch,
                    head_seq: 0,
                    closed: false,
                    next_subscriber: 0,
                    topics: HashMap::new(),
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
        let state = lock(&self.shared.state);
        if state.closed {
            return Err(PublishError::Closed);
        }
        if !state.topics.contains_key(&topic) && state.topics.len() >= config.max_topics {
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
        let topic_state = state.topic_entry_unbounded(&event.topic, config);
        topic_state.history.push(Arc::clone(&event));
        topic_state.published += 1;
        let wakers: Vec<Waker> = topic_state
            .subscribers
            .values()
            .filter_map(|subscriber| subscriber.offer(&event, config.subscriber_queue))
            .collect();
        state.head_seq = seq;
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
        let state = lock(&self.shared.state);
        if state.closed || event.id.epoch != state.epoch || event.id.seq <= state.head_seq {
            return false;
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
        let config = &self.shared.config;
        let mut state = lock(&self.shared.state);
        state
            .topic_entry_unbounded(topic, config)
            .history
            .evict_through(seq);
    }

    /// Whether publishing to `topic` stays within [`MemoryBusConfig::max_topics`].
    pub fn has_room_for(&self, topic: &Topic) -> bool {
        let state = lock(&self.shared.state);
        state.topics.contains_key(topic) || state.topics.len() < self.shared.config.max_topics
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
                    if let Some(topic_state) = state.topics.get(topic) {
                        *reported = topic_state.history.window().evicted_through;
                    }
                }
                (0, true)
            }
        };
        let new_topics = topics
            .iter()
            .filter(|t| !state.topics.contains_key(*t))
            .count();
        if state.topics.len() + new_topics > config.max_topics {
            return Err(SubscribeError::TopicLimit {
                max: config.max_topics,
            });
        }
        let id = state.next_subscriber;
        state.next_subscriber += 1;
        let queue = Arc::new(SubscriberQueue::new(detached));
        for topic in &topics {
            if let Some(topic_state) = state.topic_entry(topic, config) {
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
    fn topic_entry(&mut self, topic: &Topic, config: &MemoryBusConfig) -> Option<&mut TopicState> {
        if !self.topics.contains_key(topic) && self.topics.len() >= config.max_topics {
            return None;
        }
        Some(self.topic_entry_unbounded(topic, config))
    }

    fn topic_entry_unbounded(
        &mut self,
        topic: &Topic,
        config: &MemoryBusConfig,
    ) -> &mut TopicState {
        self.topics
            .entry(topic.clone())
            .or_insert_with(|| TopicState {
                history: TopicHistory::new(config.history.clone()),
                subscribers: HashMap::new(),
                published: 0,
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
        for topic in &self.topics {
            if let Some(topic_state) = state.topics.get_mut(topic) {
                topic_state.subscribers.remove(&self.id);
                // A topic only ever subscribed to, never published, is forgotten with its last
                // subscriber: otherwise subscribing to made-up names would use up `max_topics`.
                if topic_state.subscribers.is_empty()
                    && topic_state.published == 0
                    && topic_state.history.window().evicted_through == 0
                {
                    state.topics.remove(topic);
                }
            }
        }
    }
}
