//! [`NatsBroker`]: the [`Broker`] implementation.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use streamgate_core::{BoxFuture, Broker, BrokerError, ContentType, Epoch, EventId, Feed, Topic};

use crate::config::NatsBrokerConfig;
use crate::connection::{Connector, Link};
use crate::errors;
use crate::evicted;
use crate::feed::{self, FeedTarget, Start};
use crate::message::event_headers;
use crate::stream_setup::{LogState, LogStream};
use crate::subject::Subjects;

/// A shared log kept in a NATS JetStream stream. See the [crate documentation](crate).
///
/// Cheap to keep around: it holds one NATS connection, opened on first use. Every node of a
/// gateway cluster uses the same `stream` and `subject_prefix` (and should use the same
/// `history_events`: each node brings the stream to its own bound when it opens a feed).
pub struct NatsBroker {
    connector: Connector,
    log: LogStream,
    heartbeat: Duration,
    /// The log as last read: the epoch that append stamps on the ids it returns.
    known: Mutex<Option<KnownLog>>,
}

/// The log as last read by this broker.
#[derive(Clone, Debug)]
struct KnownLog {
    epoch: Epoch,
    /// The stream's last sequence when it was read. A publish sent afterwards to the same
    /// stream gets a higher sequence, so an acknowledgement at or below it reveals that the
    /// stream was recreated since (and the epoch is stale).
    floor_seq: u64,
}

impl NatsBroker {
    /// Checks `config` and prepares the broker, without contacting NATS: the connection is
    /// opened by the first call that needs it.
    ///
    /// # Errors
    /// [`BrokerError::Refused`] when the configuration is malformed (a URL that does not
    /// parse, an illegal stream name or subject prefix, a zero bound or timeout).
    pub fn new(config: NatsBrokerConfig) -> Result<Self, BrokerError> {
        let servers = config.validate()?;
        let history_events = i64::try_from(config.history_events).map_err(|_| {
            BrokerError::Refused("invalid NATS broker config: history_events too large".to_owned())
        })?;
        Ok(Self {
            connector: Connector::new(
                servers,
                config.connect_timeout,
                config.request_timeout,
                config.heartbeat,
            ),
            log: LogStream::new(
                config.stream,
                Subjects::new(&config.subject_prefix),
                history_events,
            ),
            heartbeat: config.heartbeat,
            known: Mutex::new(None),
        })
    }

    async fn append_event(
        &self,
        topic: &Topic,
        content_type: ContentType,
        payload: Bytes,
        timestamp_us: u64,
    ) -> Result<EventId, BrokerError> {
        let link = self.connector.link().await?;
        let known = match self.known() {
            Some(known) => known,
            None => self.read_log(&link).await?.0,
        };
        let subject = self.log.subjects.of_topic(topic);
        let headers = event_headers(topic, content_type, timestamp_us);
        let publish = |payload: Bytes| {
            let jetstream = link.jetstream.clone();
            let subject = subject.clone();
            let headers = headers.clone();
            async move {
                jetstream
                    .publish_with_headers(subject, headers, payload)
                    .await?
                    .await
            }
        };
        let (known, ack) = match publish(payload.clone()).await {
            Ok(ack) => (known, ack),
            // Nothing captures the subject: the stream was deleted. No stream stored the
            // event, so recreating the stream (a new epoch) and publishing again is safe.
            Err(err) if err.kind() == PublishErrorKind::StreamNotFound => {
                self.forget();
                let (known, _) = self.read_log(&link).await?;
                let ack = publish(payload)
                    .await
                    .map_err(|err| errors::publish("cannot append to the log", &err))?;
                (known, ack)
            }
            Err(err) => {
                self.forget();
                return Err(errors::publish("cannot append to the log", &err));
            }
        };
        self.check_ack(&known, &ack)?;
        Ok(EventId::new(known.epoch, ack.sequence))
    }

    /// Refuses acknowledgements that do not come from the log's current incarnation.
    fn check_ack(&self, known: &KnownLog, ack: &PublishAck) -> Result<(), BrokerError> {
        if ack.stream != self.log.name {
            return Err(BrokerError::Refused(format!(
                "the event was stored by stream {:?}, not by the log's stream {:?}: another \
                 stream captures subjects {}",
                ack.stream,
                self.log.name,
                self.log.subjects.all_topics()
            )));
        }
        if ack.sequence <= known.floor_seq {
            self.forget();
            return Err(BrokerError::Unavailable(format!(
                "the log's stream was recreated during the append (sequence {} is not above \
                 {}); the event may have been stored under the new epoch",
                ack.sequence, known.floor_seq
            )));
        }
        Ok(())
    }

    async fn open_feed(&self, after: Option<EventId>) -> Result<Feed, BrokerError> {
        let link = self.connector.link().await?;
        let (_, opened) = self.read_log(&link).await?;
        let start = match after {
            // An id beyond the head cannot come from this log; starting after the head at
            // least never skips an event.
            Some(after) if after.epoch == opened.epoch => {
                Start::After(after.seq.min(opened.head_seq))
            }
            _ => Start::Oldest,
        };
        let target = FeedTarget {
            stream: &self.log.name,
            subjects: &self.log.subjects,
            epoch: &opened.epoch,
            heartbeat: self.heartbeat,
        };
        let events = feed::open(&link, target, start).await?;
        let stream = link
            .jetstream
            .get_stream_no_info(&self.log.name)
            .await
            .map_err(|err| errors::get_stream("cannot address the log's stream", &err))?;
        let evicted = evicted::scan(&stream, &self.log.subjects, &opened).await?;
        Ok(Feed::new(opened.epoch, opened.head_seq, evicted, events))
    }

    /// Opens the log (creating or updating its stream) and remembers its epoch for appends.
    async fn read_log(&self, link: &Link) -> Result<(KnownLog, LogState), BrokerError> {
        let state = self.log.open(&link.jetstream).await?;
        let known = KnownLog {
            epoch: state.epoch.clone(),
            floor_seq: state.head_seq,
        };
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = Some(known.clone());
        Ok((known, state))
    }

    fn known(&self) -> Option<KnownLog> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drops the remembered epoch: the next append reads the log again first.
    fn forget(&self) {
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("endpoint", &self.connector.endpoint())
            .field("stream", &self.log.name)
            .field("subjects", &self.log.subjects.all_topics())
            .finish_non_exhaustive()
    }
}

impl Broker for NatsBroker {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn endpoint(&self) -> String {
        self.connector.endpoint().to_owned()
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
