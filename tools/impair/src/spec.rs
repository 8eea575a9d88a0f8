//! The impairment one direction of a link applies, in the subset of `tc netem` syntax we
//! accept: parsed from text, checked, and written back as text that `tc` and the parser read.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The syntax [`Impairment::from_str`] accepts, quoted in its error messages.
const ACCEPTED_SYNTAX: &str = "accepted: `delay TIME [JITTER]`, `loss [random] PERCENT` and \
     `rate RATE` in any order, e.g. \"delay 20ms 5ms loss 1%\"; TIME in us, ms or s; PERCENT \
     like 1% or 0.5%; RATE in bit, kbit, mbit, gbit, or bytes in bps, kbps, mbps, gbps";

/// Longest delay (and jitter) accepted. Far beyond anything useful, but it keeps instant
/// arithmetic away from overflow.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// A netem-style impairment: parsed from the subset of `tc netem` syntax we support.
///
/// It describes one direction of the link; [`ImpairedLink`](crate::ImpairedLink) applies it
/// to both.
///
/// ```text
/// delay TIME [JITTER]   every packet waits TIME, give or take up to JITTER (uniformly);
///                       with jitter, packets may overtake each other, as with netem
/// loss [random] PERCENT each packet is dropped with this probability, independently
/// rate RATE             packets are serialised at this bit rate before their delay starts
/// ```
///
/// Netem's correlation arguments, distributions, `duplicate`, `corrupt`, `reorder` and `limit`
/// are not supported: they are refused with an error naming the word, never ignored.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Probability, from 0 to 1, that a packet is dropped.
    pub loss: f64,
    /// Bit rate of the link in bits per second, if limited.
    pub rate_bits: Option<u64>,
}

/// Why an impairment string was refused; the message names the offending word and the
/// accepted syntax, so it can be shown to a user as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseImpairmentError {
    message: String,
}

impl ParseImpairmentError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseImpairmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {ACCEPTED_SYNTAX}", self.message)
    }
}

impl std::error::Error for ParseImpairmentError {}

impl Impairment {
    /// True when the link would pass packets untouched.
    pub fn is_none(&self) -> bool {
        self.delay.is_zero()
            && self.jitter.is_zero()
            && self.loss == 0.0
            && self.rate_bits.is_none()
    }

    /// Checks values that the parser guarantees but a hand-built `Impairment` might not have.
    pub fn validate(&self) -> Result<(), ParseImpairmentError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(ParseImpairmentError::new(format!(
                "loss must be between 0 and 1 (0% to 100%), not {}",
                self.loss
            )));
        }
        if self.delay > MAX_DELAY || self.jitter > MAX_DELAY {
            return Err(ParseImpairmentError::new(format!(
                "delay and jitter must be at most {}s",
                MAX_DELAY.as_secs()
            )));
        }
        if self.rate_bits == Some(0) {
            return Err(ParseImpairmentError::new("rate must be above 0 bit/s"));
        }
        Ok(())
    }
}

impl FromStr for Impairment {
    type Err = ParseImpairmentError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut words = spec.split_whitespace().peekable();
        if words.peek().is_none() {
            return Err(ParseImpairmentError::new("empty impairment"));
        }
        let mut impairment = Impairment::default();
        let (mut seen_delay, mut seen_loss, mut seen_rate) = (false, false, false);
        while let Some(word) = words.next() {
            match word {
                "delay" => {
                    refuse_repeat(&mut seen_delay, word)?;
                    let value = words.next().ok_or_else(|| missing_value(word, "a TIME"))?;
                    impairment.delay = parse_time(value)?;
                    // The jitter is optional, so the next word is only taken when it is a time.
                    if let Some(jitter) = words.next_if(|next| parse_time(next).is_ok()) {
                        impairment.jitter = parse_time(jitter)?;
                        refuse_correlation(words.peek().copied(), "delay")?;
                    }
                }
                "loss" => {
                    refuse_repeat(&mut seen_loss, word)?;
                    // `random` is netem's default (and only uncorrelated) loss model.
                    words.next_if_eq(&"random");
                    let value = words
                        .next()
                        .ok_or_else(|| missing_value(word, "a PERCENT"))?;
                    impairment.loss = parse_percent(value)?;
                    refuse_correlation(words.peek().copied(), "loss")?;
                }
                "rate" => {
                    refuse_repeat(&mut seen_rate, word)?;
                    let value = words.next().ok_or_else(|| missing_value(word, "a RATE"))?;
                    impairment.rate_bits = Some(parse_rate(value)?);
                }
                unknown => {
                    return Err(ParseImpairmentError::new(format!(
                        "unsupported word `{unknown}`"
                    )))
                }
            }
        }
        impairment.validate()?;
        Ok(impairment)
    }
}

fn refuse_repeat(seen: &mut bool, word: &str) -> Result<(), ParseImpairmentError> {
    if std::mem::replace(seen, true) {
        return Err(ParseImpairmentError::new(format!(
            "`{word}` is given twice"
        )));
    }
    Ok(())
}

fn missing_value(word: &str, what: &str) -> ParseImpairmentError {
    ParseImpairmentError::new(format!("`{word}` needs {what} after it"))
}

/// Netem allows a correlation percentage after the jitter or the loss; silently treating it as
/// something else would measure a different link than the one asked for.
fn refuse_correlation(next: Option<&str>, word: &str) -> Result<(), ParseImpairmentError> {
    match next {
        Some(next) if parse_percent(next).is_ok() => Err(ParseImpairmentError::new(format!(
            "correlation `{next}` after `{word}` is not supported"
        ))),
        _ => Ok(()),
    }
}

/// Splits "20ms" into (20.0, "ms"), accepting only finite, non-negative numbers.
fn split_number(word: &str) -> Option<(f64, &str)> {
    let unit_start = word
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(word.len());
    let (number, unit) = word.split_at(unit_start);
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some((value, unit))
}

fn parse_time(word: &str) -> Result<Duration, ParseImpairmentError> {
    let invalid = || ParseImpairmentError::new(format!("`{word}` is not a TIME like 20ms"));
    let (value, unit) = split_number(word).ok_or_else(invalid)?;
    let nanos_per_unit = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" => 1e9,
        "ms" | "msec" | "msecs" => 1e6,
        "us" | "usec" | "usecs" => 1e3,
        _ => return Err(invalid()),
    };
    let nanos = (value * nanos_per_unit).round();
    if nanos > MAX_DELAY.as_nanos() as f64 {
        return Err(ParseImpairmentError::new(format!(
            "`{word}` is longer than the {}s allowed",
            MAX_DELAY.as_secs()
        )));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses netem's PERCENT into a probability. Like `tc`, a bare number is a percentage too.
fn parse_percent(word: &str) -> Result<f64, ParseImpairmentError> {
    let number = word.strip_suffix('%').unwrap_or(word);
    match split_number(number) {
        Some((percent, "")) if percent <= 100.0 => Ok(percent / 100.0),
        _ => Err(ParseImpairmentError::new(format!(
            "`{word}` is not a PERCENT between 0% and 100%"
        ))),
    }
}

/// Parses a `tc` RATE. Beware `tc`'s units: `mbit` is megabits, `mbps` is megaBYTES per
/// second. A bare number is refused, because `tc` itself documents and implements it
/// differently.
fn parse_rate(word: &str) -> Result<u64, ParseImpairmentError> {
    let invalid = || ParseImpairmentError::new(format!("`{word}` is not a RATE like 10mbit"));
    let (value, unit) = split_number(word).ok_or_else(invalid)?;
    let bits_per_unit = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(invalid()),
    };
    let bits = (value * bits_per_unit).round();
    if bits < 1.0 || bits >= u64::MAX as f64 {
        return Err(ParseImpairmentError::new(format!(
            "`{word}` is outside the rates a link can have"
        )));
    }
    Ok(bits as u64)
}

impl fmt::Display for Impairment {
    /// Writes the impairment back in netem syntax, which [`Impairment::from_str`] reads again.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.delay.is_zero() || !self.jitter.is_zero() {
            let mut delay = format!("delay {}", NetemTime(self.delay));
            if !self.jitter.is_zero() {
                delay.push_str(&format!(" {}", NetemTime(self.jitter)));
            }
            parts.push(delay);
        }
        if self.loss > 0.0 {
            parts.push(format!("loss {}%", trim_decimals(self.loss * 100.0)));
        }
        if let Some(bits) = self.rate_bits {
            parts.push(format!("rate {}", NetemRate(bits)));
        }
        if parts.is_empty() {
            // Something netem and our parser both read as "no impairment".
            return f.write_str("delay 0ms");
        }
        f.write_str(&parts.join(" "))
    }
}

/// A duration in the largest unit that states it exactly.
struct NetemTime(Duration);

impl fmt::Display for NetemTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else {
            // Microseconds are the finest unit netem takes; sub-microsecond parts are kept as
            // decimals so that the text reads back to the same value.
            write!(f, "{}us", trim_decimals(nanos as f64 / 1e3))
        }
    }
}

struct NetemRate(u64);

impl fmt::Display for NetemRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.0;
        for (unit, size) in [
            ("gbit", 1_000_000_000),
            ("mbit", 1_000_000),
            ("kbit", 1_000),
        ] {
            if bits.is_multiple_of(size) {
                return write!(f, "{}{unit}", bits / size);
            }
        }
        write!(f, "{bits}bit")
    }
}

/// "1", "0.5", "0.001": six decimals at most, none that are trailing zeros.
fn trim_decimals(value: f64) -> String {
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    pub(crate) fn parse(spec: &str) -> Impairment {
        spec.parse()
            .unwrap_or_else(|error| panic!("{spec:?}: {error}"))
    }

    fn parse_error(spec: &str) -> String {
        match spec.parse::<Impairment>() {
            Ok(parsed) => panic!("{spec:?} should be refused, got {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn parses_the_netem_subset() {
        assert_eq!(
            parse("delay 20ms"),
            Impairment {
                delay: ms(20),
                ..Impairment::default()
            }
        );
        assert_eq!(
            parse("delay 20ms 5ms loss 1%"),
            Impairment {
                delay: ms(20),
                jitter: ms(5),
                loss: 0.01,
                rate_bits: None
            }
        );
        assert_eq!(parse("loss 0.5%").loss, 0.005);
        assert_eq!(parse("loss random 2%").loss, 0.02);
        assert_eq!(
            parse("loss 3").loss,
            0.03,
            "a bare number is a percentage, as for tc"
        );
        assert_eq!(parse("delay 1s").delay, Duration::from_secs(1));
        assert_eq!(parse("delay 250us").delay, Duration::from_micros(250));
        assert_eq!(parse("delay 1.5ms").delay, Duration::from_micros(1500));
        assert_eq!(parse("delay 2SEC").delay, Duration::from_secs(2));
        assert_eq!(parse("  loss 1%   delay 20ms ").delay, ms(20));
        assert_eq!(parse("rate 10mbit").rate_bits, Some(10_000_000));
        assert_eq!(
            parse("rate 1mbps").rate_bits,
            Some(8_000_000),
            "tc's mbps is megabytes"
        );
        assert_eq!(parse("loss 100%").loss, 1.0);
        assert!(parse("delay 0ms").is_none());
    }

    #[test]
    fn refuses_what_it_does_not_support_and_says_what_it_accepts() {
        let error = parse_error("delay 20ms duplicate 1%");
        assert!(error.contains("`duplicate`"), "{error}");
        assert!(error.contains("delay TIME [JITTER]"), "{error}");

        for (spec, expected) in [
            ("", "empty"),
            ("delay", "`delay` needs a TIME"),
            ("delay fast", "`fast` is not a TIME"),
            ("delay 20", "`20` is not a TIME"),
            ("delay -5ms", "`-5ms` is not a TIME"),
            ("delay NaNms", "`NaNms` is not a TIME"),
            ("delay 2h", "`2h` is not a TIME"),
            ("delay 7200s", "longer than"),
            ("delay 20ms 5ms 25%", "correlation `25%` after `delay`"),
            ("loss 1% 25%", "correlation `25%` after `loss`"),
            ("loss 101%", "`101%` is not a PERCENT"),
            ("loss", "`loss` needs a PERCENT"),
            ("loss 1%%", "`1%%` is not a PERCENT"),
            ("rate 100", "`100` is not a RATE"),
            ("rate 0kbit", "outside the rates"),
            ("delay 1ms delay 2ms", "`delay` is given twice"),
            ("limit 1000", "`limit`"),
            ("distribution normal", "`distribution`"),
        ] {
            let error = parse_error(spec);
            assert!(error.contains(expected), "{spec:?}: {error}");
        }
    }

    #[test]
    fn displays_netem_syntax_that_parses_back() {
        for (spec, shown) in [
            ("delay 20ms", "delay 20ms"),
            ("delay 20ms 5ms loss 1%", "delay 20ms 5ms loss 1%"),
            ("loss 0.5%", "loss 0.5%"),
            ("delay 1000ms", "delay 1s"),
            ("delay 1.5ms", "delay 1500us"),
            ("delay 0.0015us", "delay 0.002us"),
            (
                "rate 1500kbit loss random 0.01%",
                "loss 0.01% rate 1500kbit",
            ),
            ("rate 12345bit", "rate 12345bit"),
            ("delay 0s", "delay 0ms"),
        ] {
            let impairment = parse(spec);
            assert_eq!(impairment.to_string(), shown, "{spec:?}");
            assert_eq!(parse(shown), impairment, "{shown:?} reads back");
        }
    }

    #[test]
    fn validate_refuses_impossible_hand_built_values() {
        for loss in [-0.1, 1.5, f64::NAN] {
            let impairment = Impairment {
                loss,
                ..Impairment::default()
            };
            assert!(impairment.validate().is_err(), "loss {loss}");
        }
        let zero_rate = Impairment {
            rate_bits: Some(0),
            ..Impairment::default()
        };
        assert!(zero_rate.validate().is_err());
    }
}
