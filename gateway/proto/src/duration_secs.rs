//! Serde helper for configuration durations, written as seconds (`2.5`, `10`).
//!
//! Use with `#[serde(with = "streamgate_proto::duration_secs")]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Reads a non-negative number of seconds.
///
/// # Errors
/// The value is not a number, or is negative, infinite or too large.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| serde::de::Error::custom("expected a non-negative number of seconds"))
}

/// Writes seconds as a float.
///
/// # Errors
/// Those of the serializer.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}
