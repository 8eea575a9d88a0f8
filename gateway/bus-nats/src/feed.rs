//! A feed: the log read in sequence order through an ordered push consumer.
//!
//! JetStream's ordered consumer is the tool made for this: an ephemeral push consumer
//! without acknowledgements, whose deliveries carry both the stream sequence and a
//! per-consumer delivery counter, with flow control and idle heartbeats. Client libraries
//! usually *repair* an ordered consumer when something goes wrong, recreating it where it
//! stopped; this feed does not, because the `Broker` contract asks for the opposite: every
//! anomaly ends the feed with an error, and the node reopens it from the last sequence it
//! holds, after re-reading the log's epoch (a repaired consumer would silently carry on into
//! a recreated stream). What ends a feed:
//!
//! - a delivery whose consumer counter is not the previous one plus one, or a heartbeat
//!   announcing deliveries the feed never received (the client dropped messages, for example
//!   because the reader was too slow): [`BrokerError::Unavailable`];
//! - a stream sequence that does not increase (never expected; checked because the contract
//!   promises it): [`BrokerError::Refused`];
//! - the connection dropping, or two heartbeat intervals without any message (the server
//!   died or the consumer vanished without a word): [`BrokerError::Unavailable`];
//! - an advisory that the stream or the consumer was deleted: the stream's epoch is over, or
//!   the feed's consumer is gone.
//!
//! A delivered message that is not a valid event (someone else published garbage on the
//! log's subjects) is skipped and logged as an error; its sequence is simply absent, like a
//! trimmed event's. Yielding an error would end the feed, and the node would reopen it
//! before the same message and fail on it again, forever: one bad message must not stop
//! every gateway node.

use std::time::Duration;

use async_nats::jetstream::consumer::push::Config as PushConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::Context;
use async_nats::{Client, Message, StatusCode, Subscriber};
use bytes::Bytes;
use futures_util::stream::{self, Select, StreamExt};
use streamgate_core::{BrokerError, Epoch, Event, FeedEvents};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::connection::Link;
use crate::errors;
use crate::message::{decode_event, Delivery};
use crate::subject::Subjects;

/// Header of an idle heartbeat: the last consumer sequence the server delivered.
const LAST_CONSUMER_HEADER: &str = "Nats-Last-Consumer";
/// Header of an idle heartbeat when the server waits for a lost flow-control reply: where
/// to send that reply.
const STALLED_HEADER: &str = "Nats-Consumer-Stalled";

/// Where a feed starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// With the oldest retained event.
    Oldest,
    /// With the first event after this sequence.
    After(u64),
}

/// What a feed needs to know about the log it reads.
#[derive(Debug)]
pub(crate) struct FeedTarget<'a> {
    pub(crate) stream: &'a str,
    pub(crate) subjects: &'a Subjects,
    pub(crate) epoch: &'a Epoch,
    pub(crate) heartbeat: Duration,
}

/// Opens a consumer on the log and returns its events as a [`FeedEvents`] stream.
///
/// The subscriptions are made before the consumer exists, so nothing it delivers, and no
/// deletion advisory, can be missed.
///
/// # Errors
/// [`BrokerError`] when subscribing or creating the consumer fails.
pub(crate) async fn open(
    link: &Link,
    target: FeedTarget<'_>,
    start: Start,
) -> Result<FeedEvents, BrokerError> {
    let losses = link.losses();
    let client = &link.client;
    let deliver_subject = client.new_inbox();
    let deliveries = client
        .subscribe(deliver_subject.clone())
        .await
        .map_err(|err| errors::client("cannot subscribe to the feed's delivery subject", err))?;
    let stream_deleted = client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.STREAM.DELETED.{}",
            target.stream
        ))
        .await
        .map_err(|err| errors::client("cannot subscribe to stream advisories", err))?;
    let consumer_deleted = client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.DELETED.{}.*",
            target.stream
        ))
        .await
        .map_err(|err| errors::client("cannot subscribe to consumer advisories", err))?;

    let deliver_policy = match start {
        Start::Oldest => DeliverPolicy::All,
        Start::After(seq) => DeliverPolicy::ByStartSequence {
            start_sequence: seq.saturating_add(1),
        },
    };
    let config = PushConfig {
        deliver_subject,
        description: Some("streamgate feed".to_owned()),
        deliver_policy,
        ack_policy: AckPolicy::None,
        max_deliver: 1,
        replay_policy: ReplayPolicy::Instant,
        flow_control: true,
        idle_heartbeat: target.heartbeat,
        memory_storage: true,
        num_replicas: 1,
        // Only reached if this process dies without deleting its consumer.
        inactive_threshold: (target.heartbeat * 5).max(Duration::from_secs(10)),
        ..PushConfig::default()
    };
    let consumer = link
        .jetstream
        .create_consumer_on_stream(config, target.stream)
        .await
        .map_err(|err| errors::consumer("cannot create the feed's consumer", &err))?;
    let consumer_name = consumer.cached_info().name.clone();

    let silence_limit = target.heartbeat * 2;
    let follower = Follower {
        client: client.clone(),
        deliveries,
        deletions: stream::select(stream_deleted, consumer_deleted),
        losses,
        silence_limit,
        deadline: Instant::now() + silence_limit,
        last_consumer_seq: 0,
        last_stream_seq: 0,
        epoch: target.epoch.clone(),
        subjects: target.subjects.clone(),
        consumer: ConsumerGuard {
            jetstream: link.jetstream.clone(),
            stream: target.stream.to_owned(),
            name: consumer_name,
        },
    };
    Ok(Box::pin(stream::unfold(
        Some(follower),
        |follower| async move {
            let mut follower = follower?;
            match follower.next_step().await {
                Ok(event) => Some((Ok(event), Some(follower))),
                Err(err) => {
                    tracing::warn!(error = %err, "NATS feed ended");
                    Some((Err(err), None))
                }
            }
        },
    )))
}

/// What reading produced: the next event in order, or why the feed cannot go on.
type Step = Result<Event, BrokerError>;

/// What woke the feed up.
enum Wake {
    Message(Option<Message>),
    Lost,
    Deletion(Option<Message>),
    Silence,
}

/// The state of an open feed.
struct Follower {
    client: Client,
    deliveries: Subscriber,
    deletions: Select<Subscriber, Subscriber>,
    losses: watch::Receiver<u64>,
    silence_limit: Duration,
    deadline: Instant,
    last_consumer_seq: u64,
    last_stream_seq: u64,
    epoch: Epoch,
    subjects: Subjects,
    consumer: ConsumerGuard,
}

impl Follower {
    async fn next_step(&mut self) -> Step {
        loop {
            // Deliveries first: what arrived before a loss or a deletion is still good and
            // in order, and a reader that paused must drain its buffer before the silence
            // check may conclude anything.
            let wake = tokio::select! {
                biased;
                message = self.deliveries.next() => Wake::Message(message),
                _ = self.losses.changed() => Wake::Lost,
                advisory = self.deletions.next() => Wake::Deletion(advisory),
                () = tokio::time::sleep_until(self.deadline) => Wake::Silence,
            };
            match wake {
                Wake::Message(Some(message)) => {
                    self.deadline = Instant::now() + self.silence_limit;
                    if let Some(step) = self.handle(message).await {
                        return step;
                    }
                }
                Wake::Message(None) => {
                    return Err(BrokerError::Unavailable(
                        "the feed's subscription was closed by the NATS client".to_owned(),
                    ))
                }
                Wake::Lost => {
                    return Err(BrokerError::Unavailable(
                        "connection to NATS lost; the feed must be reopened".to_owned(),
                    ))
                }
                Wake::Deletion(Some(advisory)) => {
                    if let Some(step) = self.on_deletion(&advisory) {
                        return step;
                    }
                }
                Wake::Deletion(None) => {
                    return Err(BrokerError::Unavailable(
                        "the feed's advisory subscription was closed by the NATS client".to_owned(),
                    ))
                }
                Wake::Silence => {
                    return Err(BrokerError::Unavailable(format!(
                        "no delivery or heartbeat from NATS for {:?}; the feed must be reopened",
                        self.silence_limit
                    )))
                }
            }
        }
    }

    /// Handles one message of the delivery subject; `None` when it yields nothing (a
    /// heartbeat, a flow-control request, a skipped invalid message) and reading goes on.
    async fn handle(&mut self, message: Message) -> Option<Step> {
        if let Some(status) = message.status {
            return self.on_status(status, &message).await;
        }
        let Some(delivery) = message
            .reply
            .as_ref()
            .and_then(|reply| Delivery::from_reply(reply.as_str()))
        else {
            return Some(Err(BrokerError::Refused(
                "a message without JetStream delivery metadata arrived on the feed's \
                 delivery subject"
                    .to_owned(),
            )));
        };
        if delivery.consumer_seq != self.last_consumer_seq + 1 {
            return Some(Err(BrokerError::Unavailable(format!(
                "the feed missed deliveries (received delivery {} after {}); it must be \
                 reopened",
                delivery.consumer_seq, self.last_consumer_seq
            ))));
        }
        if delivery.stream_seq <= self.last_stream_seq {
            return Some(Err(BrokerError::Refused(format!(
                "NATS delivered sequence {} after {}: out of order",
                delivery.stream_seq, self.last_stream_seq
            ))));
        }
        self.last_consumer_seq = delivery.consumer_seq;
        self.last_stream_seq = delivery.stream_seq;
        match decode_event(&message, delivery, &self.epoch, &self.subjects) {
            Ok(event) => Some(Ok(event)),
            Err(reason) => {
                tracing::error!(
                    seq = delivery.stream_seq,
                    subject = message.subject.as_str(),
                    %reason,
                    "skipped a message of the log that is not a valid event"
                );
                None
            }
        }
    }

    async fn on_status(&mut self, status: StatusCode, message: &Message) -> Option<Step> {
        if status != StatusCode::IDLE_HEARTBEAT {
            return Some(Err(BrokerError::Unavailable(format!(
                "NATS ended the feed's consumer: status {status} {}",
                message.description.as_deref().unwrap_or_default()
            ))));
        }
        // A flow-control request: the server waits for this reply before sending more.
        if let Some(reply) = &message.reply {
            return self.reply_flow_control(reply.to_string()).await;
        }
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(name))
                .map(|value| value.as_str().to_owned())
        };
        if let Some(stalled) = header(STALLED_HEADER) {
            if let Some(step) = self.reply_flow_control(stalled).await {
                return Some(step);
            }
        }
        let announced = header(LAST_CONSUMER_HEADER).and_then(|seq| seq.parse::<u64>().ok());
        match announced {
            Some(announced) if announced != self.last_consumer_seq => {
                Some(Err(BrokerError::Unavailable(format!(
                    "the feed missed deliveries (NATS delivered {announced}, the feed received \
                     {}); it must be reopened",
                    self.last_consumer_seq
                ))))
            }
            _ => None,
        }
    }

    async fn reply_flow_control(&self, subject: String) -> Option<Step> {
        match self.client.publish(subject, Bytes::new()).await {
            Ok(()) => None,
            Err(err) => Some(Err(errors::client(
                "cannot answer the feed's flow control",
                err,
            ))),
        }
    }

    /// Reacts to a deletion advisory: the end of the stream or of this feed's consumer ends
    /// the feed, other consumers' deletions do not concern it.
    fn on_deletion(&self, advisory: &Message) -> Option<Step> {
        let subject = advisory.subject.as_str();
        if subject.starts_with("$JS.EVENT.ADVISORY.STREAM.DELETED.") {
            return Some(Err(BrokerError::Refused(format!(
                "stream {} was deleted: its epoch {} is over",
                self.consumer.stream, self.epoch
            ))));
        }
        let deleted_consumer = subject.rsplit('.').next().unwrap_or_default();
        (deleted_consumer == self.consumer.name).then(|| {
            Err(BrokerError::Unavailable(format!(
                "the feed's consumer {} was deleted by NATS; the feed must be reopened",
                self.consumer.name
            )))
        })
    }
}

/// Deletes the feed's consumer when the feed is dropped, instead of leaving it to the
/// server's inactivity timer.
struct ConsumerGuard {
    jetstream: Context,
    stream: String,
    name: String,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let jetstream = self.jetstream.clone();
        let stream = std::mem::take(&mut self.stream);
        let name = std::mem::take(&mut self.name);
        runtime.spawn(async move {
            // Fails when the connection or the stream is gone, and then nothing is left to
            // clean up, or the inactivity timer does it.
            let _ = jetstream.delete_consumer_from_stream(&name, &stream).await;
        });
    }
}
