//! Event ids, `epoch:seq` (`docs/PROTOCOL.md` §2), and topic names (§1).

use std::fmt;
use std::str::FromStr;

/// An event id as the gateway hands it out: `<epoch>:<seq>`, for example `k3f9x2m1q0zz:42`.
///
/// Ids are opaque except for one use: within one epoch, a higher `seq` is a later event (of
/// any topic: `seq` counts across the whole bus). Ids of different epochs cannot be compared
/// at all; a gateway that restarts with the in-memory bus starts a new epoch, and answers a
/// resume from the old one with a `reset` notice.
///
/// ```
/// use streamgate_client::EventId;
///
/// let id: EventId = "k3f9x2m1q0zz:42".parse()?;
/// assert_eq!((id.epoch(), id.seq()), ("k3f9x2m1q0zz", 42));
/// assert_eq!(id.is_after(&"k3f9x2m1q0zz:41".parse()?), Some(true));
/// assert_eq!(id.is_after(&"other:1".parse()?), None);
/// # Ok::<(), streamgate_client::InvalidId>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    epoch: String,
    seq: u64,
}

/// A string that is not an event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an event id ({why}); ids look like k3f9x2m1q0zz:42 (epoch:seq)")]
pub struct InvalidId {
    text: String,
    why: &'static str,
}

impl EventId {
    /// The id `<epoch>:<seq>`.
    ///
    /// # Errors
    /// An epoch that is not 1 to 32 ASCII letters or digits.
    pub fn new(epoch: &str, seq: u64) -> Result<Self, InvalidId> {
        format!("{epoch}:{seq}").parse()
    }

    /// The epoch: which incarnation of the bus's history the id belongs to.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The sequence number within the epoch.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether `self` is a later event than `other`: `None` when they are from different
    /// epochs, where the question has no answer.
    pub fn is_after(&self, other: &EventId) -> Option<bool> {
        (self.epoch == other.epoch).then_some(self.seq > other.seq)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

impl FromStr for EventId {
    type Err = InvalidId;

    fn from_str(text: &str) -> Result<Self, InvalidId> {
        let bad = |why| InvalidId {
            text: text.to_owned(),
            why,
        };
        let (epoch, seq) = text.split_once(':').ok_or_else(|| bad("no ':'"))?;
        if epoch.is_empty() || epoch.len() > 32 || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(bad("the epoch is 1 to 32 ASCII letters or digits"));
        }
        // `u64::from_str` would also take a leading '+'; the gateway only writes digits.
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the sequence is a decimal number"));
        }
        let seq = seq.parse().map_err(|_| bad("the sequence is too large"))?;
        Ok(Self {
            epoch: epoch.to_owned(),
            seq,
        })
    }
}

/// A string that is not a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a topic name: use 1 to 128 ASCII letters, digits, '_', '-' or '.'")]
pub struct InvalidTopic(pub String);

/// Checks a topic name: 1 to 128 ASCII letters, digits, `_`, `-` or `.` (§1). The alphabet
/// needs no escaping in a URL, an SSE `event:` line or a broker key.
///
/// # Errors
/// [`InvalidTopic`], naming it.
pub fn check_topic(name: &str) -> Result<(), InvalidTopic> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if name.is_empty() || name.len() > 128 || !name.bytes().all(allowed) {
        return Err(InvalidTopic(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let id: EventId = "k3f9x2m1q0zz:42".parse().unwrap();
        assert_eq!((id.epoch(), id.seq()), ("k3f9x2m1q0zz", 42));
        assert_eq!(id.to_string(), "k3f9x2m1q0zz:42");
        // A long-poll cursor after a reset with nothing kept is `<epoch>:0`.
        assert_eq!("ep:0".parse::<EventId>().unwrap().seq(), 0);
    }

    #[test]
    fn refuses_what_the_gateway_never_writes() {
        for bad in [
            "",
            "42",
            ":1",
            "ep:",
            "ep:+1",
            "ep:-1",
            "e-p:1",
            "ep:1:2",
            "ep:99999999999999999999",
        ] {
            let error = bad.parse::<EventId>().unwrap_err().to_string();
            assert!(error.contains("epoch:seq"), "{bad}: {error}");
        }
    }

    #[test]
    fn only_ids_of_one_epoch_compare() {
        let id = |s: &str| s.parse::<EventId>().unwrap();
        assert_eq!(id("a:2").is_after(&id("a:1")), Some(true));
        assert_eq!(id("a:1").is_after(&id("a:1")), Some(false));
        assert_eq!(id("b:9").is_after(&id("a:1")), None);
    }

    #[test]
    fn topic_names() {
        assert!(check_topic("ris.rrc00").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }
}
