//! How NATS client errors become [`BrokerError`]s.
//!
//! The split follows what the caller should do about it. Anything that says "NATS did not
//! answer in time" or "the connection broke" is [`BrokerError::Unavailable`]: a blip, retried
//! quietly. Anything where NATS answered with a refusal (a JetStream API error, JetStream
//! not enabled, a limit) is [`BrokerError::Refused`]: still retried, but logged as an error
//! because someone probably has to change a configuration.

use std::fmt::Display;

use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind, RequestErrorKind,
};
use async_nats::jetstream::stream::{ConsumerErrorKind, LastRawMessageErrorKind};
use async_nats::ConnectErrorKind;
use streamgate_core::BrokerError;

fn unavailable(what: &str, err: impl Display) -> BrokerError {
    BrokerError::Unavailable(format!("{what}: {err}"))
}

fn refused(what: &str, err: impl Display) -> BrokerError {
    BrokerError::Refused(format!("{what}: {err}"))
}

/// Hint for "no responders" on the JetStream API: nothing listens on `$JS.API`.
const NO_JETSTREAM: &str = "no JetStream answered (is JetStream enabled on the NATS server?)";

pub(crate) fn connect(endpoint: &str, err: &async_nats::ConnectError) -> BrokerError {
    let what = format!("cannot connect to NATS at {endpoint}");
    match err.kind() {
        ConnectErrorKind::Authentication
        | ConnectErrorKind::AuthorizationViolation
        | ConnectErrorKind::Tls
        | ConnectErrorKind::ServerParse => refused(&what, err),
        ConnectErrorKind::Dns
        | ConnectErrorKind::TimedOut
        | ConnectErrorKind::Io
        | ConnectErrorKind::MaxReconnects => unavailable(&what, err),
    }
}

pub(crate) fn request(
    what: &str,
    err: &async_nats::jetstream::context::RequestError,
) -> BrokerError {
    match err.kind() {
        RequestErrorKind::NoResponders => refused(what, NO_JETSTREAM),
        RequestErrorKind::InvalidSubject => refused(what, err),
        RequestErrorKind::TimedOut | RequestErrorKind::Other => unavailable(what, err),
    }
}

pub(crate) fn get_stream(
    what: &str,
    err: &async_nats::jetstream::context::GetStreamError,
) -> BrokerError {
    match err.kind() {
        GetStreamErrorKind::Request => unavailable(what, err),
        GetStreamErrorKind::EmptyName
        | GetStreamErrorKind::InvalidStreamName
        | GetStreamErrorKind::JetStream(_) => refused(what, err),
    }
}

pub(crate) fn create_stream(
    what: &str,
    err: &async_nats::jetstream::context::CreateStreamError,
) -> BrokerError {
    match err.kind() {
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::Response => unavailable(what, err),
        CreateStreamErrorKind::JetStreamUnavailable => refused(what, NO_JETSTREAM),
        CreateStreamErrorKind::EmptyStreamName
        | CreateStreamErrorKind::InvalidStreamName
        | CreateStreamErrorKind::DomainAndExternalSet
        | CreateStreamErrorKind::JetStream(_)
        | CreateStreamErrorKind::NotFound
        | CreateStreamErrorKind::ResponseParse => refused(what, err),
    }
}

pub(crate) fn consumer(
    what: &str,
    err: &async_nats::jetstream::stream::ConsumerError,
) -> BrokerError {
    match err.kind() {
        ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => unavailable(what, err),
        ConsumerErrorKind::InvalidConsumerType
        | ConsumerErrorKind::InvalidName
        | ConsumerErrorKind::JetStream(_)
        | ConsumerErrorKind::Other => refused(what, err),
    }
}

pub(crate) fn raw_message(
    what: &str,
    err: &async_nats::jetstream::stream::RawMessageError,
) -> BrokerError {
    match err.kind() {
        LastRawMessageErrorKind::Other => unavailable(what, err),
        LastRawMessageErrorKind::NoMessageFound
        | LastRawMessageErrorKind::InvalidSubject
        | LastRawMessageErrorKind::JetStream(_) => refused(what, err),
    }
}

/// A publish that failed before or while waiting for its acknowledgement. A missing stream
/// is handled by the caller before it gets here.
pub(crate) fn publish(
    what: &str,
    err: &async_nats::jetstream::context::PublishError,
) -> BrokerError {
    match err.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => unavailable(what, err),
        PublishErrorKind::StreamNotFound => refused(what, NO_JETSTREAM),
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::Other => refused(what, err),
    }
}

/// A core NATS operation (subscribe, publish) failed: the client lost its connection.
pub(crate) fn client(what: &str, err: impl Display) -> BrokerError {
    unavailable(what, err)
}
