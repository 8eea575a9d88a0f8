//! A node's feed of the log: retained events first, then live ones, never out of order.
//!
//! # Opening
//!
//! [`RedisBroker::follow`](crate::RedisBroker) starts listening *before* it reads the log's
//! state (subscribes to the channel, or notes the log stream's position). Every event
//! appended after the state was read is therefore heard live, and every event before it is
//! in a topic stream (or was trimmed, which the state reports). Events appended in between
//! arrive both ways; the feed drops the second copy.
//!
//! # Catching up
//!
//! Topic streams use the sequence as entry id, so "everything of topic T after sequence n"
//! is `XRANGE T (n+1)-0 ...` with no search. A catch-up reads every topic from the same
//! point up to a fixed upper sequence, a chunk per topic at a time, and merges the chunks by
//! sequence ([`CatchUp`]). The upper bound matters: it is a sequence the log had already
//! assigned when the catch-up started, and since the append script stores an event in the
//! same atomic step that assigns its sequence, every event up to the bound is already in its
//! stream. Reading topic A and then topic B without a bound could return a newer event of B
//! before an older one of A that was appended in between.
//!
//! # Live, and holes
//!
//! Live messages come in sequence order (the append script publishes in the step that
//! assigns the sequence). One at or below the last sequence yielded is a duplicate and is
//! dropped. One that skips ahead leaves a hole: the feed holds it back, catches up from the
//! topic streams over the hole, then yields it. A hole the streams cannot fill is a sequence
//! that a failed script burnt without an event, and is accepted. Holes come from a lagging
//! node whose log-stream position was trimmed, or from a message the node could not decode.
//!
//! # Losses are reported, never hidden
//!
//! Each chunk is read together with the topic's trimming record, atomically. If the stream
//! was trimmed past the chunk's start, and further than the feed announced in `evicted`
//! when it opened, events the node has not seen are gone without notice: the feed then
//! fails, so the node follows again and learns the new `evicted`. The epoch is read with
//! every chunk too, so a log wiped under a connected node is not mistaken for its old self.
//!
//! Any error ends the feed: the caller follows again from the last event it holds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::Value;
use streamgate_core::{BrokerError, Epoch, Event, FeedEvents, Topic};

use crate::error::{bad_reply, from_redis, timed_out};
use crate::keys::Keys;
use crate::{reply, wire};

/// Events a catch-up buffers at most, over all topics (each topic's chunk stays within
/// [`MIN_CHUNK`] and [`MAX_CHUNK`], so with many topics the bound is `topics × MIN_CHUNK`).
const CATCH_UP_BUDGET: usize = 4096;
const MIN_CHUNK: usize = 16;
const MAX_CHUNK: usize = 512;

/// After this long without a message, a Pub/Sub feed pings Redis: a connection that died
/// without a TCP reset (a cable pulled, a NAT table flushed) is otherwise silent forever.
const IDLE_PING: Duration = Duration::from_secs(10);

/// How long one blocking `XREAD` waits for new entries before asking again. An empty answer
/// doubles as the liveness check the Pub/Sub feed gets from its pings.
pub(crate) const XREAD_BLOCK: Duration = Duration::from_secs(5);

/// Entries one `XREAD` returns at most.
const XREAD_COUNT: usize = 1024;

/// Where live events come from.
pub(crate) enum Live {
    /// A subscription to the channel, on its own connection.
    PubSub {
        sink: PubSubSink,
        messages: PubSubStream,
        /// Time allowed for a ping's answer.
        command_timeout: Duration,
    },
    /// Blocking reads of the log stream, on the feed's command connection.
    Xread {
        /// The sequence of the last log entry read: the next read asks for entries after it.
        position: u64,
        pending: VecDeque<Bytes>,
    },
}

impl Live {
    /// The next fan-out message, or why there will be none.
    async fn next(
        &mut self,
        connection: &mut MultiplexedConnection,
        keys: &Keys,
        epoch: &Epoch,
    ) -> Result<Bytes, BrokerError> {
        match self {
            Self::PubSub {
                sink,
                messages,
                command_timeout,
            } => loop {
                match tokio::time::timeout(IDLE_PING, messages.next()).await {
                    Ok(Some(message)) => {
                        return Ok(Bytes::copy_from_slice(message.get_payload_bytes()))
                    }
                    Ok(None) => {
                        return Err(BrokerError::Unavailable(
                            "the Pub/Sub connection to Redis was lost".to_owned(),
                        ))
                    }
                    Err(_quiet) => {
                        let doing = "pinging Redis on a quiet Pub/Sub connection";
                        match tokio::time::timeout(*command_timeout, sink.ping::<Value>()).await {
                            Ok(Ok(_pong)) => {}
                            Ok(Err(e)) => return Err(from_redis(doing, &e)),
                            Err(_) => return Err(timed_out(doing, *command_timeout)),
                        }
                    }
                }
            },
            Self::Xread { position, pending } => loop {
                if let Some(message) = pending.pop_front() {
                    return Ok(message);
                }
                let block_ms = u64::try_from(XREAD_BLOCK.as_millis()).unwrap_or(u64::MAX);
                let reply: Value = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(XREAD_COUNT)
                    .arg("BLOCK")
                    .arg(block_ms)
                    .arg("STREAMS")
                    .arg(&keys.log)
                    .arg(format!("{position}-0"))
                    .query_async(connection)
                    .await
                    .map_err(|e| from_redis("reading the log stream", &e))?;
                if reply == Value::Nil {
                    // A quiet log, or one wiped and restarted below our position, whose
                    // entries this read will not return until they pass it: tell them apart.
                    check_epoch(connection, keys, epoch).await?;
                    continue;
                }
                let messages = reply::log_messages(reply)
                    .map_err(|problem| bad_reply("reading the log stream", problem))?;
                for (seq, message) in messages {
                    *position = seq;
                    pending.push_back(message);
                }
            },
        }
    }
}

/// The state behind a feed's event stream.
pub(crate) struct Follower {
    connection: MultiplexedConnection,
    keys: Arc<Keys>,
    epoch: Epoch,
    live: Live,
    /// The highest sequence queued in `ready`, or known to have no event for this node
    /// (below the resume point, or a hole a catch-up found empty).
    last: u64,
    ready: VecDeque<Event>,
    catch_up: Option<CatchUp>,
    /// A live event that came after a hole, waiting for the hole's catch-up.
    held: Option<Event>,
    /// What the feed announced as evicted when it opened, per topic.
    announced: HashMap<Topic, u64>,
    finished: bool,
}

impl Follower {
    /// A follower that has yielded up to `after` and still owes `catch_up`.
    pub(crate) fn new(
        connection: MultiplexedConnection,
        keys: Arc<Keys>,
        epoch: Epoch,
        live: Live,
        after: u64,
        catch_up: Option<CatchUp>,
        announced: HashMap<Topic, u64>,
    ) -> Self {
        Self {
            connection,
            keys,
            epoch,
            live,
            last: after,
            ready: VecDeque::new(),
            catch_up,
            held: None,
            announced,
            finished: false,
        }
    }

    /// The feed's event stream.
    pub(crate) fn into_events(self) -> FeedEvents {
        Box::pin(futures_util::stream::unfold(
            self,
            |mut follower| async move {
                let item = follower.next().await?;
                Some((item, follower))
            },
        ))
    }

    async fn next(&mut self) -> Option<Result<Event, BrokerError>> {
        if self.finished {
            return None;
        }
        let item = self.advance().await;
        if item.is_err() {
            self.finished = true;
        }
        Some(item)
    }

    async fn advance(&mut self) -> Result<Event, BrokerError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if let Some(catch_up) = &mut self.catch_up {
                let batch = catch_up
                    .next_batch(&mut self.connection, &self.keys, &self.epoch)
                    .await?;
                if batch.is_empty() {
                    // Everything up to the bound was read: what is not queued does not exist.
                    self.last = self.last.max(catch_up.until);
                    self.catch_up = None;
                    if let Some(held) = self.held.take() {
                        self.queue(held);
                    }
                } else {
                    for event in batch {
                        self.queue(event);
                    }
                }
                continue;
            }
            let message = self
                .live
                .next(&mut self.connection, &self.keys, &self.epoch)
                .await?;
            let event = match wire::decode(message) {
                Ok(event) => event,
                Err(problem) => {
                    // Anyone can publish on a channel. If this was one of ours, the next
                    // event's sequence leaves a hole and the catch-up reads it from its
                    // topic stream.
                    tracing::warn!(%problem, "dropping an undecodable message on the Redis fan-out");
                    continue;
                }
            };
            if event.id.epoch != self.epoch {
                return Err(epoch_changed(&self.epoch));
            }
            let seq = event.id.seq;
            if seq <= self.last {
                continue;
            }
            if seq == self.last + 1 {
                self.queue(event);
                continue;
            }
            let topics = read_topics(&mut self.connection, &self.keys).await?;
            self.catch_up = Some(CatchUp::new(
                &self.keys,
                topics,
                self.last,
                seq - 1,
                &self.announced,
            ));
            self.held = Some(event);
        }
    }

    fn queue(&mut self, event: Event) {
        if event.id.seq > self.last {
            self.last = event.id.seq;
            self.ready.push_back(event);
        }
    }
}

/// The error ending a feed whose log is no longer the one it opened on.
fn epoch_changed(epoch: &Epoch) -> BrokerError {
    BrokerError::Refused(format!(
        "the log's epoch is no longer {epoch}: its data was lost or wiped; follow again"
    ))
}

/// Fails if the log's epoch is no longer `epoch`.
async fn check_epoch(
    connection: &mut MultiplexedConnection,
    keys: &Keys,
    epoch: &Epoch,
) -> Result<(), BrokerError> {
    let current: Value = redis::cmd("GET")
        .arg(&keys.epoch)
        .query_async(connection)
        .await
        .map_err(|e| from_redis("checking the log's epoch", &e))?;
    if reply::bytes(current).as_deref() == Some(epoch.as_str().as_bytes()) {
        Ok(())
    } else {
        Err(epoch_changed(epoch))
    }
}

/// Every topic that ever had an event.
async fn read_topics(
    connection: &mut MultiplexedConnection,
    keys: &Keys,
) -> Result<Vec<Topic>, BrokerError> {
    let doing = "reading the topic set";
    let reply: Value = redis::cmd("SMEMBERS")
        .arg(&keys.topics)
        .query_async(connection)
        .await
        .map_err(|e| from_redis(doing, &e))?;
    reply::items(reply)
        .ok_or_else(|| bad_reply(doing, "not a set"))?
        .into_iter()
        .map(|name| {
            reply::bytes(name)
                .and_then(|name| String::from_utf8(name).ok())
                .and_then(|name| Topic::new(&name).ok())
                .ok_or_else(|| bad_reply(doing, "a member is not a valid topic name"))
        })
        .collect()
}

/// One topic's place in a catch-up.
struct Cursor {
    topic: Topic,
    key: String,
    /// The next sequence to read from.
    next: u64,
    buffered: VecDeque<Event>,
    /// The last read returned less than a chunk: nothing more up to the bound.
    exhausted: bool,
    /// Trimming up to here was announced in the feed's `evicted`.
    announced: u64,
}

/// Reads every topic stream from one point up to a fixed bound, merging them by sequence.
pub(crate) struct CatchUp {
    /// The upper bound: a sequence assigned before the catch-up started.
    until: u64,
    cursors: Vec<Cursor>,
    /// The first buffered sequence of each cursor that has one, smallest on top.
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    chunk: usize,
}

impl CatchUp {
    /// A catch-up of the events in `(after, until]` of `topics`.
    pub(crate) fn new(
        keys: &Keys,
        topics: Vec<Topic>,
        after: u64,
        until: u64,
        announced: &HashMap<Topic, u64>,
    ) -> Self {
        let chunk = (CATCH_UP_BUDGET / topics.len().max(1)).clamp(MIN_CHUNK, MAX_CHUNK);
        let cursors = topics
            .into_iter()
            .map(|topic| Cursor {
                key: keys.topic(topic.as_str()),
                announced: announced.get(&topic).copied().unwrap_or(0),
                topic,
                next: after + 1,
                buffered: VecDeque::new(),
                exhausted: after >= until,
            })
            .collect();
        Self {
            until,
            cursors,
            heads: BinaryHeap::new(),
            chunk,
        }
    }

    /// The next events in sequence order; empty once everything up to the bound was read.
    async fn next_batch(
        &mut self,
        connection: &mut MultiplexedConnection,
        keys: &Keys,
        epoch: &Epoch,
    ) -> Result<Vec<Event>, BrokerError> {
        self.refill(connection, keys, epoch).await?;
        let mut batch = Vec::new();
        while let Some(Reverse((_, index))) = self.heads.pop() {
            let cursor = &mut self.cursors[index];
            let Some(event) = cursor.buffered.pop_front() else {
                continue;
            };
            batch.push(event);
            if let Some(head) = cursor.buffered.front() {
                self.heads.push(Reverse((head.id.seq, index)));
            } else if !cursor.exhausted {
                // Its next chunk may start below every other head: read it first.
                break;
            }
        }
        Ok(batch)
    }

    /// Reads the next chunk of every topic whose buffer is empty, in one atomic round trip.
    async fn refill(
        &mut self,
        connection: &mut MultiplexedConnection,
        keys: &Keys,
        epoch: &Epoch,
    ) -> Result<(), BrokerError> {
        let doing = "catching up from the topic streams";
        let wanted: Vec<usize> = (0..self.cursors.len())
            .filter(|&i| self.cursors[i].buffered.is_empty() && !self.cursors[i].exhausted)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("GET").arg(&keys.epoch);
        for &index in &wanted {
            let cursor = &self.cursors[index];
            pipe.cmd("HGET")
                .arg(&keys.evicted)
                .arg(cursor.topic.as_str())
                .cmd("XRANGE")
                .arg(&cursor.key)
                .arg(format!("{}-0", cursor.next))
                .arg(format!("{}-0", self.until))
                .arg("COUNT")
                .arg(self.chunk);
        }
        let replies: Vec<Value> = pipe
            .query_async(connection)
            .await
            .map_err(|e| from_redis(doing, &e))?;
        if replies.len() != 1 + 2 * wanted.len() {
            return Err(bad_reply(
                doing,
                "the transaction returned the wrong number of replies",
            ));
        }
        let mut replies = replies.into_iter();
        let current = replies.next().and_then(reply::bytes);
        if current.as_deref() != Some(epoch.as_str().as_bytes()) {
            return Err(epoch_changed(epoch));
        }
        for &index in &wanted {
            let (Some(trimmed), Some(entries)) = (replies.next(), replies.next()) else {
                return Err(bad_reply(doing, "missing replies"));
            };
            let cursor = &mut self.cursors[index];
            let trimmed = reply::number(trimmed).ok_or_else(|| {
                bad_reply(doing, format!("evicted[{}] is not a number", cursor.topic))
            })?;
            if trimmed >= cursor.next && trimmed > cursor.announced {
                return Err(BrokerError::Unavailable(format!(
                    "topic {} was trimmed up to sequence {trimmed} while this node still had to \
                     read it from {}; follow again to learn what was evicted",
                    cursor.topic, cursor.next
                )));
            }
            let events = reply::stream_events(entries, &cursor.topic, epoch)
                .map_err(|problem| bad_reply(doing, problem))?;
            let mut previous = cursor.next - 1;
            for event in &events {
                if event.id.seq <= previous || event.id.seq > self.until {
                    return Err(bad_reply(
                        doing,
                        format!("XRANGE on {} went out of range", cursor.topic),
                    ));
                }
                previous = event.id.seq;
            }
            cursor.exhausted = events.len() < self.chunk;
            cursor.next = previous + 1;
            cursor.buffered = events.into();
            if let Some(head) = cursor.buffered.front() {
                self.heads.push(Reverse((head.id.seq, index)));
            }
        }
        Ok(())
    }
}
