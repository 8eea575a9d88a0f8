//! Retry delays.

use std::time::Duration;

/// Exponential backoff: the n-th delay (n from 0) is `base·2ⁿ` capped at `max`, times a random
/// factor in [1 − jitter, 1 + jitter], so clients dropped together (a gateway restart) do not
/// all come back in the same instant. The defaults are the JavaScript client's: 1 s, 30 s,
/// ±25 %.
///
/// ```
/// use std::time::Duration;
/// use streamgate_client::Backoff;
///
/// let backoff = Backoff::default();
/// // With the random factor at the middle of its range (0.5), there is no jitter.
/// assert_eq!(backoff.delay(2, 0.5), Duration::from_secs(4));
/// assert_eq!(backoff.delay(40, 0.5), Duration::from_secs(30));
/// assert_eq!(backoff.delay(0, 0.0), Duration::from_millis(750));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first delay (default 1 s).
    pub base: Duration,
    /// The longest delay (default 30 s).
    pub max: Duration,
    /// The random spread, a fraction (default 0.25).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// Sets the first delay.
    pub fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets the longest delay.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the random spread (0: none).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The `n`-th delay, `random` in [0, 1] choosing within the jitter; rounded to the
    /// millisecond.
    pub fn delay(&self, n: u32, random: f64) -> Duration {
        let doubled = self.base.as_secs_f64() * 2f64.powi(n.min(30) as i32);
        let capped = doubled.min(self.max.as_secs_f64());
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * random.clamp(0.0, 1.0);
        Duration::from_millis((capped * factor * 1000.0).round() as u64)
    }
}
