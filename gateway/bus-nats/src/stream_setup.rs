//! The stream that holds the log: created on first use, brought back to shape on every open.
//!
//! The stream is configured entirely by this crate: `{prefix}.t.>` subjects, limits
//! retention with `history_events` messages per subject and the oldest discarded, file
//! storage, and no other limit (no age, byte or total message limit that could trim a topic
//! below its bound behind the gateway's back). Opening the log creates the stream when it is
//! missing and updates it when any of these settings drifted, keeping what an operator may
//! legitimately choose (replicas, placement).
//!
//! # The smallest bound ever set
//!
//! `Feed::evicted` must never hide a loss, and NATS does not say which per-subject messages
//! it trimmed. A topic can only have been trimmed when it held as many messages as the bound
//! in force at that moment, and it never holds fewer afterwards (lowering the bound trims it
//! to the new bound, raising it lets it grow). So "holds at least the smallest bound the
//! stream ever had" is a safe test for "may have lost events". That smallest bound is kept
//! in the stream's description, `... (min-history-events=N)`, the one free-form field a 2.9
//! server stores, and only ever decreases.

use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind,
};
use async_nats::jetstream::stream::{Config, DiscardPolicy, Info, RetentionPolicy, StorageType};
use async_nats::jetstream::{Context, ErrorCode};
use streamgate_core::{BrokerError, Epoch};

use crate::epoch::epoch_of_stream;
use crate::errors;
use crate::subject::Subjects;

/// Marks the smallest bound in the stream description.
const SMALLEST_BOUND_KEY: &str = "min-history-events=";

/// What [`LogStream::open`] learnt about the log.
#[derive(Clone, Debug)]
pub(crate) struct LogState {
    /// The stream's incarnation.
    pub(crate) epoch: Epoch,
    /// The stream's last sequence.
    pub(crate) head_seq: u64,
    /// The smallest per-topic bound the stream ever had: a topic holding at least this many
    /// messages may have been trimmed.
    pub(crate) smallest_bound: u64,
}

impl LogState {
    pub(crate) fn from_info(info: &Info) -> Result<Self, BrokerError> {
        Ok(Self {
            epoch: epoch_of_stream(info.created.unix_timestamp_nanos())?,
            head_seq: info.state.last_sequence,
            smallest_bound: smallest_bound_of(&info.config).unwrap_or(1),
        })
    }
}

/// The log's stream, as configured.
#[derive(Debug)]
pub(crate) struct LogStream {
    pub(crate) name: String,
    pub(crate) subjects: Subjects,
    history_events: i64,
}

impl LogStream {
    pub(crate) fn new(name: String, subjects: Subjects, history_events: i64) -> Self {
        Self {
            name,
            subjects,
            history_events,
        }
    }

    /// Makes sure the stream exists with the right settings, and reads its state.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when NATS does not answer; [`BrokerError::Refused`] when
    /// JetStream refuses to create or update the stream.
    pub(crate) async fn open(&self, jetstream: &Context) -> Result<LogState, BrokerError> {
        let info = match jetstream.get_stream(&self.name).await {
            Ok(stream) => self.reconcile(jetstream, stream.cached_info()).await?,
            Err(err) if is_stream_not_found(&err) => self.create(jetstream).await?,
            Err(err) => {
                return Err(errors::get_stream(
                    &format!("cannot read stream {}", self.name),
                    &err,
                ))
            }
        };
        LogState::from_info(&info)
    }

    async fn create(&self, jetstream: &Context) -> Result<Info, BrokerError> {
        let config = self.desired(None);
        match jetstream.create_stream(config).await {
            Ok(mut stream) => {
                tracing::info!(stream = %self.name, "created the JetStream stream of the log");
                Ok(stream
                    .info()
                    .await
                    .map_err(|err| errors::request("cannot read the new stream", &err))?
                    .clone())
            }
            // Another node created it a moment ago: use theirs.
            Err(err) if is_name_taken(&err) => match jetstream.get_stream(&self.name).await {
                Ok(stream) => self.reconcile(jetstream, stream.cached_info()).await,
                Err(err) => Err(errors::get_stream(
                    &format!("cannot read stream {}", self.name),
                    &err,
                )),
            },
            Err(err) => Err(errors::create_stream(
                &format!("cannot create stream {}", self.name),
                &err,
            )),
        }
    }

    async fn reconcile(&self, jetstream: &Context, info: &Info) -> Result<Info, BrokerError> {
        let desired = self.desired(Some(&info.config));
        if desired == info.config {
            return Ok(info.clone());
        }
        tracing::info!(
            stream = %self.name,
            history_events = self.history_events,
            "updating the JetStream stream of the log to the configured settings"
        );
        jetstream.update_stream(&desired).await.map_err(|err| {
            errors::create_stream(&format!("cannot update stream {}", self.name), &err)
        })
    }

    /// The configuration the stream must have, keeping from `existing` whatever this crate
    /// does not decide.
    fn desired(&self, existing: Option<&Config>) -> Config {
        let bound = self.history_events;
        let smallest = existing
            .and_then(smallest_bound_of)
            .and_then(|smallest| i64::try_from(smallest).ok())
            .map_or(bound, |smallest| smallest.min(bound));
        let mut config = existing.cloned().unwrap_or_else(|| Config {
            name: self.name.clone(),
            storage: StorageType::File,
            num_replicas: 1,
            max_consumers: -1,
            ..Config::default()
        });
        config.subjects = vec![self.subjects.all_topics()];
        config.retention = RetentionPolicy::Limits;
        config.max_messages_per_subject = bound;
        config.discard = DiscardPolicy::Old;
        config.discard_new_per_subject = false;
        config.max_messages = -1;
        config.max_bytes = -1;
        config.max_age = Duration::ZERO;
        config.max_message_size = -1;
        config.description = Some(format!(
            "streamgate event log, one subject per topic ({SMALLEST_BOUND_KEY}{smallest})"
        ));
        config
    }
}

/// The smallest per-topic bound a stream ever had, from its description, or from its current
/// bound when it has no such record (a stream this crate did not create).
fn smallest_bound_of(config: &Config) -> Option<u64> {
    let recorded = config.description.as_deref().and_then(|description| {
        let (_, rest) = description.split_once(SMALLEST_BOUND_KEY)?;
        let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse::<u64>().ok().filter(|bound| *bound > 0)
    });
    let current = u64::try_from(config.max_messages_per_subject)
        .ok()
        .filter(|bound| *bound > 0);
    match (recorded, current) {
        (Some(recorded), Some(current)) => Some(recorded.min(current)),
        (recorded, current) => recorded.or(current),
    }
}

fn is_stream_not_found(err: &GetStreamError) -> bool {
    match err.kind() {
        GetStreamErrorKind::JetStream(err) => err.error_code() == ErrorCode::STREAM_NOT_FOUND,
        _ => false,
    }
}

fn is_name_taken(err: &CreateStreamError) -> bool {
    match err.kind() {
        CreateStreamErrorKind::JetStream(err) => err.error_code() == ErrorCode::STREAM_NAME_EXIST,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(bound: i64) -> LogStream {
        LogStream::new("LOG".to_owned(), Subjects::new("sg"), bound)
    }

    #[test]
    fn new_stream_config() {
        let config = log(5).desired(None);
        assert_eq!(config.name, "LOG");
        assert_eq!(config.subjects, vec!["sg.t.>".to_owned()]);
        assert_eq!(config.max_messages_per_subject, 5);
        assert_eq!(config.discard, DiscardPolicy::Old);
        assert_eq!(config.storage, StorageType::File);
        assert_eq!(smallest_bound_of(&config), Some(5));
    }

    #[test]
    fn settled_stream_needs_no_update() {
        let config = log(5).desired(None);
        assert_eq!(log(5).desired(Some(&config)), config);
    }

    #[test]
    fn smallest_bound_only_decreases() {
        let first = log(5).desired(None);
        let raised = log(50).desired(Some(&first));
        assert_eq!(raised.max_messages_per_subject, 50);
        assert_eq!(smallest_bound_of(&raised), Some(5));
        let lowered = log(3).desired(Some(&raised));
        assert_eq!(smallest_bound_of(&lowered), Some(3));
    }

    #[test]
    fn keeps_operator_choices_and_removes_other_limits() {
        let mut existing = log(5).desired(None);
        existing.num_replicas = 3;
        existing.max_age = Duration::from_secs(60);
        existing.description = None;
        existing.max_messages_per_subject = 7;
        let desired = log(10).desired(Some(&existing));
        assert_eq!(desired.num_replicas, 3);
        assert_eq!(desired.max_age, Duration::ZERO);
        // Unknown history: the stream's own bound is the best record there is.
        assert_eq!(smallest_bound_of(&desired), Some(7));
    }
}
