//! The epoch of a NATS log: the creation time of its stream.
//!
//! An epoch must change exactly when the sequence counter may restart. A JetStream stream
//! keeps its counter for its whole life, across server restarts (file storage) and config
//! updates, and only a deleted and recreated stream counts from 1 again. The stream's
//! `created` timestamp has the same lifetime: the server stores it with the stream and
//! reports the same instant after a restart, while a recreated stream gets a new one. It is
//! also the same on every node that asks, which an epoch must be.
//!
//! The instant, in nanoseconds since the Unix epoch, is written in lowercase base 36: about
//! 13 characters today, never more than 25 (a `u128` in base 36), within the 32 alphanumerics
//! an [`Epoch`] allows.

use streamgate_core::{BrokerError, Epoch};

const BASE36_DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The epoch of a stream created `created_unix_nanos` nanoseconds after the Unix epoch.
pub(crate) fn epoch_of_stream(created_unix_nanos: i128) -> Result<Epoch, BrokerError> {
    let mut nanos = u128::try_from(created_unix_nanos)
        .ok()
        .filter(|nanos| *nanos > 0)
        .ok_or_else(|| {
            BrokerError::Refused(format!(
                "stream creation time {created_unix_nanos} ns is not after 1970; \
                 cannot derive an epoch from it"
            ))
        })?;
    let mut digits = Vec::with_capacity(25);
    while nanos > 0 {
        digits.push(BASE36_DIGITS[(nanos % 36) as usize]);
        nanos /= 36;
    }
    digits.reverse();
    let token = String::from_utf8(digits).unwrap_or_default();
    Epoch::new(&token)
        .map_err(|err| BrokerError::Refused(format!("epoch {token:?} is not valid: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_base36() {
        assert_eq!(epoch_of_stream(1).unwrap().as_str(), "1");
        assert_eq!(epoch_of_stream(36).unwrap().as_str(), "10");
        // 2024-01-01T00:00:00Z
        let epoch = epoch_of_stream(1_704_067_200_000_000_000).unwrap();
        assert_eq!(epoch.as_str().len(), 12);
        assert_eq!(
            i128::from_str_radix(epoch.as_str(), 36).unwrap(),
            1_704_067_200_000_000_000
        );
    }

    #[test]
    fn widest_instant_fits() {
        let epoch = epoch_of_stream(i128::MAX).unwrap();
        assert!(epoch.as_str().len() <= 32);
    }

    #[test]
    fn refuses_instants_not_after_1970() {
        assert!(matches!(epoch_of_stream(0), Err(BrokerError::Refused(_))));
        assert!(matches!(epoch_of_stream(-5), Err(BrokerError::Refused(_))));
    }

    #[test]
    fn one_nanosecond_apart_is_another_epoch() {
        let base = 1_704_067_200_123_456_789;
        assert_ne!(epoch_of_stream(base), epoch_of_stream(base + 1));
    }
}
