//! Sorting Redis failures into the two kinds the gateway acts on.
//!
//! [`BrokerError::Unavailable`] is a blip: the connection is down, timed out, or Redis is
//! not ready yet (loading its AOF after a restart, a replica that lost its master). Every
//! other failure, including a reply this crate does not understand, is
//! [`BrokerError::Refused`]: Redis is there but something needs a human (credentials, a
//! `maxmemory` reached, foreign data under our keys).

use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use streamgate_core::BrokerError;

/// `error`, prefixed with what was being done.
pub(crate) fn from_redis(doing: &str, error: &RedisError) -> BrokerError {
    let message = format!("{doing}: {error}");
    if is_transient(error) {
        BrokerError::Unavailable(message)
    } else {
        BrokerError::Refused(message)
    }
}

fn is_transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
        // A script running too long on the server: it answers again once that ends.
        || error.code() == Some("BUSY")
}

/// A step that did not finish in time: the server may be up but is not answering.
pub(crate) fn timed_out(doing: &str, limit: Duration) -> BrokerError {
    BrokerError::Unavailable(format!("{doing}: no answer within {limit:?}"))
}

/// A reply that does not have the shape this crate wrote or asked for.
pub(crate) fn bad_reply(doing: &str, problem: impl std::fmt::Display) -> BrokerError {
    BrokerError::Refused(format!("{doing}: unexpected reply from Redis: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_transient() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            from_redis("appending", &refused),
            BrokerError::Unavailable(message) if message.starts_with("appending: ")
        ));
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(
            from_redis("x", &reset),
            BrokerError::Unavailable(_)
        ));
    }

    #[test]
    fn other_failures_are_refusals() {
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "bad password"));
        assert!(matches!(from_redis("x", &auth), BrokerError::Refused(_)));
        let parse = RedisError::from((ErrorKind::UnexpectedReturnType, "not a string"));
        assert!(matches!(from_redis("x", &parse), BrokerError::Refused(_)));
    }
}
