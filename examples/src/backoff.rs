//! The delay between reconnection attempts.

use std::time::Duration;

/// Exponential backoff with jitter: 0.5 s, doubling up to 30 s, each delay ±25 % at random —
/// the same schedule the gateway uses for its own upstream feeds.
///
/// Doubling keeps a client from hammering a gateway that is down; the jitter keeps thousands
/// of clients dropped at the same moment (a gateway restart) from all coming back in the same
/// instant. Call [`Backoff::reset`] once a connection works again, so the next outage starts
/// from the short delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Delays starting at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// How long to wait before the next attempt; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::random_range(0.75..=1.25))
    }

    /// Back to the first delay: the last attempt succeeded.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Starts the next series of delays at `first` (SSE's `retry:` field sets it).
    pub fn set_first(&mut self, first: Duration) {
        self.first = first.min(self.max);
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_within_the_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        for expected in [1.0, 2.0, 4.0, 4.0] {
            let delay = backoff.next_delay().as_secs_f64();
            assert!(
                (expected * 0.75..=expected * 1.25).contains(&delay),
                "{delay} vs {expected}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(1250));
    }
}
