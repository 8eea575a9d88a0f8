//! `Feed::evicted` for a NATS log: which topics may have lost events, and up to where.
//!
//! JetStream trims a subject's oldest messages without recording which ones, so the exact
//! answer is not available. The rule used instead errs on the side of announcing a loss:
//!
//! > A topic holding at least the smallest bound the stream ever had (see `stream_setup`)
//! > reports its first retained sequence minus one as evicted.
//!
//! Everything trimmed from a topic is older than what it still holds, so "first retained
//! minus one" is at or above the highest trimmed sequence; and a topic below that bound was
//! never trimmed. The price: a full topic that never lost anything (exactly `bound` events
//! ever published) is reported too, and a subscriber resuming from before its first event
//! gets a gap notice for events that never existed. A topic whose messages all vanished
//! between the two requests below (a purge) is reported as evicted through the head.
//!
//! Cost: one stream-info request listing the subjects with their message counts, then one
//! message lookup per full topic, a few at a time.

use async_nats::jetstream::stream::Stream;
use futures_util::{StreamExt, TryStreamExt};
use streamgate_core::{BrokerError, Topic};

use crate::epoch::epoch_of_stream;
use crate::errors;
use crate::stream_setup::LogState;
use crate::subject::Subjects;

/// Lookups of first retained messages in flight at once.
const CONCURRENT_LOOKUPS: usize = 16;

/// Lists, per topic that may have been trimmed, the highest sequence that may be gone.
///
/// `opened` is what the feed reported as the log's state; the stream is read again here and
/// must still be the same incarnation.
///
/// # Errors
/// [`BrokerError::Unavailable`] when NATS does not answer or the stream was recreated in the
/// meantime; [`BrokerError::Refused`] when it refuses a lookup.
pub(crate) async fn scan(
    stream: &Stream<()>,
    subjects: &Subjects,
    opened: &LogState,
) -> Result<Vec<(Topic, u64)>, BrokerError> {
    let mut counts = stream
        .info_with_subjects(subjects.all_topics())
        .await
        .map_err(|err| errors::request("cannot read the log's per-topic counts", &err))?;
    let epoch_now = epoch_of_stream(counts.info.created.unix_timestamp_nanos())?;
    if epoch_now != opened.epoch {
        return Err(BrokerError::Unavailable(format!(
            "the log's stream was recreated while the feed opened (epoch {} became {epoch_now})",
            opened.epoch
        )));
    }
    let head_seq = counts.info.state.last_sequence;
    let mut full = Vec::new();
    while let Some((subject, count)) = counts
        .try_next()
        .await
        .map_err(|err| errors::request("cannot read the log's per-topic counts", &err))?
    {
        if (count as u64) < opened.smallest_bound {
            continue;
        }
        match subjects.topic_of(&subject) {
            Some(topic) => full.push((topic, subject)),
            None => tracing::warn!(%subject, "the log's stream holds a subject of no topic"),
        }
    }

    let mut evicted: Vec<(Topic, u64)> = futures_util::stream::iter(full)
        .map(|(topic, subject)| async move {
            match stream.get_first_raw_message_by_subject(&subject, 1).await {
                Ok(first) => Ok((topic, first.sequence.saturating_sub(1))),
                Err(err) if is_no_message(&err) => Ok((topic, head_seq)),
                Err(err) => Err(errors::raw_message(
                    &format!("cannot read the oldest event of topic {topic}"),
                    &err,
                )),
            }
        })
        .buffer_unordered(CONCURRENT_LOOKUPS)
        .try_collect()
        .await?;
    evicted.retain(|(_, seq)| *seq > 0);
    evicted.sort();
    Ok(evicted)
}

fn is_no_message(err: &async_nats::jetstream::stream::RawMessageError) -> bool {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match err.kind() {
        LastRawMessageErrorKind::NoMessageFound => true,
        LastRawMessageErrorKind::JetStream(err) => {
            err.error_code() == async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND
        }
        LastRawMessageErrorKind::InvalidSubject | LastRawMessageErrorKind::Other => false,
    }
}
