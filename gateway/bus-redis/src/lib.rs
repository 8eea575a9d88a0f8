//! # streamgate-bus-redis
//!
//! The Redis backend of [`Broker`]: one shared log in Redis that many gateway nodes append
//! to and mirror (read the [`Broker`] documentation first).
//!
//! ```no_run
//! use streamgate_bus_redis::{Fanout, RedisBroker, RedisBrokerConfig};
//!
//! # fn main() -> Result<(), streamgate_core::BrokerError> {
//! let broker = RedisBroker::new(
//!     RedisBrokerConfig::new("redis://127.0.0.1:6379")
//!         .prefix("streamgate")
//!         .history_events(1000)
//!         .fanout(Fanout::PubSub),
//! )?;
//! # let _ = broker; Ok(())
//! # }
//! ```
//!
//! ## Key layout
//!
//! With the prefix `p` (default `streamgate`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `p:epoch` | string | the log's epoch, set once by whoever needs it first |
//! | `p:seq` | string (integer) | the last sequence assigned, one counter for every topic |
//! | `p:topics` | set | every topic that ever had an event |
//! | `p:t:{topic}` | stream | the topic's history: entry id `<seq>-0`, fields `ct` (content type name), `ts` (µs since the Unix epoch), `p` (payload bytes), at most `history_events` entries |
//! | `p:evicted` | hash | per topic, the highest sequence trimmed from its stream |
//! | `p:log` | stream | [`Fanout::Xread`] only: every event, encoded, entry id `<seq>-0`, about [`LOG_EVENTS`] entries |
//! | `p:events` | Pub/Sub channel | [`Fanout::PubSub`] only: every event, encoded |
//!
//! Entry ids equal to sequences make "topic T after sequence n" a direct `XRANGE`.
//!
//! ## Appending
//!
//! One Lua script, run atomically, sets the epoch if there is none, increments `p:seq`,
//! records what the trim will drop in `p:evicted`, adds the event to its topic stream with
//! an exact `MAXLEN`, adds the topic to `p:topics`, then publishes the encoded event (or
//! adds it to `p:log`). Atomicity gives the two properties the feeds rely on: messages go out
//! in sequence order, and an event is in its stream as soon as its sequence is visible.
//! Appends share one connection, replaced as soon as it is lost (see the `appender` module).
//!
//! ## Following
//!
//! See the `follow` module: listen first, then read the state in one atomic script, then
//! yield the retained events merged from the topic streams, then the live ones, filling any
//! hole from the streams.
//!
//! ## Losing Redis
//!
//! A lost connection ends every feed with [`BrokerError::Unavailable`] and makes appends
//! fail with it; the caller retries. Events acknowledged before a Redis restart survive only
//! if Redis persisted them: run it with `appendonly yes` and `appendfsync always`
//! (`everysec` may lose the last second of acknowledged events; a node that had seen them
//! then finds the log behind its cursor and the log moves to a new epoch). Without
//! persistence a restarted Redis is an empty log: the first node to need it draws a new
//! epoch, and every node resets.
//!
//! All nodes sharing a prefix must use the same [`Fanout`] and `history_events`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod appender;
mod config;
mod error;
mod follow;
mod keys;
mod reply;
mod scripts;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ProtocolVersion, Value};
use streamgate_core::{BoxFuture, Broker, BrokerError, ContentType, Epoch, EventId, Feed, Topic};

use crate::appender::Appender;
pub use crate::config::{Fanout, RedisBrokerConfig};
use crate::error::{bad_reply, from_redis, timed_out};
use crate::follow::{CatchUp, Follower, Live};
use crate::keys::Keys;
use crate::scripts::Scripts;

/// Entries the `{prefix}:log` stream keeps, roughly (`MAXLEN ~`), with [`Fanout::Xread`]. A
/// node more than this many events behind finds its position trimmed and catches up from the
/// topic streams instead.
pub const LOG_EVENTS: usize = 10_000;

/// Longest wait for a connection to Redis. A node must learn promptly that Redis is down:
/// its publishes fail meanwhile, and it retries on its own schedule.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait for the answer to one command or script.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Broker`] keeping the shared log in Redis. See the [crate documentation](crate).
pub struct RedisBroker {
    client: Client,
    endpoint: String,
    keys: Arc<Keys>,
    history_events: usize,
    fanout: Fanout,
    scripts: Scripts,
    /// The appends' shared connection, opened on first use.
    appender: Appender,
}

impl RedisBroker {
    /// A broker for the log `config` describes. Connects lazily: Redis being down is not an
    /// error here, only later, from [`Broker::append`] and [`Broker::follow`].
    ///
    /// # Errors
    /// [`BrokerError::Refused`] if the URL is malformed.
    pub fn new(config: RedisBrokerConfig) -> Result<Self, BrokerError> {
        let endpoint = config::redact_url(&config.url);
        let invalid = |e: redis::RedisError| {
            BrokerError::Refused(format!("invalid Redis URL {endpoint}: {e}"))
        };
        // The protocol is ours to choose, whatever the URL says: RESP2 for the feeds (the
        // Pub/Sub client needs it), RESP3 for the appends (see the `appender` module).
        let info = Client::open(config.url.as_str())
            .map_err(invalid)?
            .get_connection_info()
            .clone();
        let speaking = |protocol| {
            let settings = info.redis_settings().clone().set_protocol(protocol);
            Client::open(info.clone().set_redis_settings(settings)).map_err(invalid)
        };
        let client = speaking(ProtocolVersion::RESP2)?;
        let append_client = speaking(ProtocolVersion::RESP3)?;
        Ok(Self {
            client,
            appender: Appender::new(
                append_client,
                endpoint.clone(),
                CONNECT_TIMEOUT,
                COMMAND_TIMEOUT,
            ),
            endpoint,
            keys: Arc::new(Keys::new(&config.prefix)),
            history_events: config.history_events,
            fanout: config.fanout,
            scripts: Scripts::new(),
        })
    }

    /// How this broker fans out.
    pub fn fanout(&self) -> Fanout {
        self.fanout
    }

    /// Deletes every key under this broker's prefix and returns how many there were: for
    /// tests and benchmarks, or to retire a log. Nodes following it fail on their next
    /// catch-up or see a new epoch on their next event.
    ///
    /// # Errors
    /// [`BrokerError`] if Redis is unreachable or refuses.
    pub async fn delete_keys(&self) -> Result<u64, BrokerError> {
        let doing = "deleting the log's keys";
        let mut connection = self.connect(COMMAND_TIMEOUT).await?;
        let pattern = self.keys.scan_pattern();
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let page: Value = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .map_err(|e| from_redis(doing, &e))?;
            let (next, keys) =
                reply::scan_page(page).map_err(|problem| bad_reply(doing, problem))?;
            if !keys.is_empty() {
                let unlinked: Value = redis::cmd("UNLINK")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| from_redis(doing, &e))?;
                deleted += reply::number(unlinked).unwrap_or(0);
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// A fresh connection whose commands time out after `response_timeout`.
    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, BrokerError> {
        let doing = format!("connecting to {}", self.endpoint);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        // The whole handshake (TCP, then AUTH and SELECT) is bounded, not only the TCP part.
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(from_redis(&doing, &e)),
            Err(_) => Err(timed_out(&doing, CONNECT_TIMEOUT)),
        }
    }

    async fn append_event(
        &self,
        topic: &Topic,
        content_type: ContentType,
        payload: Bytes,
        timestamp_us: u64,
    ) -> Result<EventId, BrokerError> {
        let doing = "appending to the log";
        let mut held = self.appender.connection().await?;
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .key(&self.keys.epoch)
            .key(&self.keys.seq)
            .key(&self.keys.topics)
            .key(&self.keys.evicted)
            .key(self.keys.topic(topic.as_str()));
        if self.fanout == Fanout::Xread {
            invocation.key(&self.keys.log);
        }
        invocation
            .arg(Epoch::random().as_str())
            .arg(topic.as_str())
            .arg(content_type.as_str())
            .arg(timestamp_us)
            .arg(payload.as_ref())
            .arg(self.history_events)
            .arg(wire::encode_meta(topic, content_type, timestamp_us))
            .arg(self.fanout.name());
        match self.fanout {
            Fanout::PubSub => invocation.arg(&self.keys.channel),
            Fanout::Xread => invocation.arg(LOG_EVENTS),
        };
        let reply: Value = invocation
            .invoke_async(&mut held.connection)
            .await
            .map_err(|e| {
                held.check(&e);
                from_redis(doing, &e)
            })?;
        reply::appended(reply).map_err(|problem| bad_reply(doing, problem))
    }

    async fn open_feed(&self, after: Option<EventId>) -> Result<Feed, BrokerError> {
        // Listen first (see the `follow` module): everything appended from now on is heard.
        let (live, mut connection) = match self.fanout {
            Fanout::PubSub => {
                let live = self.subscribe().await?;
                (live, self.connect(COMMAND_TIMEOUT).await?)
            }
            Fanout::Xread => {
                // Blocking reads share this connection, so answers may take a whole block.
                let mut connection = self.connect(follow::XREAD_BLOCK + COMMAND_TIMEOUT).await?;
                let position: Value = redis::cmd("GET")
                    .arg(&self.keys.seq)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| from_redis("noting the log position", &e))?;
                let position = reply::number(position)
                    .ok_or_else(|| bad_reply("noting the log position", "not a number"))?;
                let live = Live::Xread {
                    position,
                    pending: Default::default(),
                };
                (live, connection)
            }
        };

        let doing = "reading the log's state";
        let (cursor_epoch, cursor_seq) = match &after {
            Some(id) => (id.epoch.as_str(), id.seq),
            None => ("", 0),
        };
        let snapshot: Value = self
            .scripts
            .snapshot
            .key(&self.keys.epoch)
            .key(&self.keys.seq)
            .key(&self.keys.topics)
            .key(&self.keys.evicted)
            .arg(Epoch::random().as_str())
            .arg(cursor_epoch)
            .arg(cursor_seq)
            .invoke_async(&mut connection)
            .await
            .map_err(|e| from_redis(doing, &e))?;
        let snapshot = reply::snapshot(snapshot).map_err(|problem| bad_reply(doing, problem))?;

        // Resume after the cursor if it belongs to this log; otherwise replay all it holds.
        let start = match &after {
            Some(id) if id.epoch == snapshot.epoch => id.seq.min(snapshot.head),
            _ => 0,
        };
        let announced: HashMap<Topic, u64> = snapshot.evicted.iter().cloned().collect();
        let catch_up = (start < snapshot.head).then(|| {
            CatchUp::new(
                &self.keys,
                snapshot.topics,
                start,
                snapshot.head,
                &announced,
            )
        });
        let follower = Follower::new(
            connection,
            Arc::clone(&self.keys),
            snapshot.epoch.clone(),
            live,
            start,
            catch_up,
            announced,
        );
        Ok(Feed::new(
            snapshot.epoch,
            snapshot.head,
            snapshot.evicted,
            follower.into_events(),
        ))
    }

    /// A subscription to the channel on a connection of its own.
    async fn subscribe(&self) -> Result<Live, BrokerError> {
        let doing = format!("subscribing to {} on {}", self.keys.channel, self.endpoint);
        let mut pubsub =
            match tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(e)) => return Err(from_redis(&doing, &e)),
                Err(_) => return Err(timed_out(&doing, CONNECT_TIMEOUT)),
            };
        match tokio::time::timeout(COMMAND_TIMEOUT, pubsub.subscribe(&self.keys.channel)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(from_redis(&doing, &e)),
            Err(_) => return Err(timed_out(&doing, COMMAND_TIMEOUT)),
        }
        let (sink, messages) = pubsub.split();
        Ok(Live::PubSub {
            sink,
            messages,
            command_timeout: COMMAND_TIMEOUT,
        })
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.keys.prefix())
            .field("history_events", &self.history_events)
            .field("fanout", &self.fanout)
            .finish_non_exhaustive()
    }
}

impl Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    fn append(
        &self,
        topic: &Topic,
        content_type: ContentType,
        payload: Bytes,
        timestamp_us: u64,
    ) -> BoxFuture<'_, Result<EventId, BrokerError>> {
        let topic = topic.clone();
        Box::pin(async move {
            self.append_event(&topic, content_type, payload, timestamp_us)
                .await
        })
    }

    fn follow(&self, after: Option<EventId>) -> BoxFuture<'_, Result<Feed, BrokerError>> {
        Box::pin(self.open_feed(after))
    }
}
