//! Latency histograms, percentiles, medians and tables: the arithmetic every figure of
//! `streamgate compare` and of `bench/` goes through, so they all have the same resolution.

use hdrhistogram::{Counter, Histogram};
use serde::Serialize;

/// Significant decimal digits kept by the latency histograms: values are exact to within 1%.
///
/// Three digits would multiply every histogram's size by eight, and with 10 000 subscribers
/// each holding one that is more than a gigabyte of counters to allocate and merge.
const LATENCY_SIGFIG: u8 = 2;

/// Latency the histograms cover from the start, in nanoseconds (one second).
///
/// They still grow past it, but growing reallocates inside the measured receive path, so the
/// usual range is allocated up front, before the first publish.
const LATENCY_PRESIZED_NS: u64 = 1_000_000_000;

/// An empty latency histogram, in nanoseconds: 2 significant digits, presized to one second,
/// growing past it if needed.
///
/// The counter type is the caller's: a benchmark holding one histogram per client can use
/// `u32` counters (half the memory) and merge them into a `u64` one with [`merge`].
pub fn latency_histogram<C: Counter>() -> Histogram<C> {
    let mut histogram = Histogram::new_with_bounds(1, LATENCY_PRESIZED_NS, LATENCY_SIGFIG)
        .expect("constant bounds are valid");
    histogram.auto(true);
    histogram
}

/// Adds a `u32`-counter histogram into a `u64` one (hdrhistogram only adds equal types).
///
/// # Errors
/// If a value cannot be recorded (the target does not auto-resize and is too small).
pub fn merge(
    into: &mut Histogram<u64>,
    from: &Histogram<u32>,
) -> Result<(), hdrhistogram::RecordError> {
    for value in from.iter_recorded() {
        into.record_n(value.value_iterated_to(), u64::from(value.count_at_value()))?;
    }
    Ok(())
}

/// Latency percentiles of every delivery in a run, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Deliveries timed.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises a histogram of nanoseconds.
    pub fn from_nanos<C: Counter>(histogram: &Histogram<C>) -> Self {
        let us = |ns: u64| ns as f64 / 1_000.0;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            samples: histogram.len(),
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

/// The distribution of a histogram of nanoseconds as `(percentile, microseconds)` points,
/// ascending, for a percentile plot: a few points per halving of the remaining tail, so the
/// tail is drawn as finely as the body.
pub fn percentile_points<C: Counter>(histogram: &Histogram<C>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    histogram
        .iter_quantiles(4)
        .map(|value| {
            (
                value.quantile_iterated_to() * 100.0,
                value.value_iterated_to() as f64 / 1_000.0,
            )
        })
        .collect()
}

/// The median of `values`; for an even count, the upper of the two middle values, so the
/// result is always a figure some run actually produced.
///
/// # Panics
/// If `values` is empty.
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted[sorted.len() / 2]
}

/// The value at quantile `q` (0..=1) of `values` by nearest rank; 0 for no values.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Formats a table: one header line, then one line per row, the first column left-aligned
/// and the others right-aligned to their widest cell, columns separated by two spaces. Rows
/// shorter than the header leave their last columns empty.
pub fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|col| {
            rows.iter()
                .filter_map(|row| row.get(col))
                .map(|cell| cell.chars().count())
                .chain([header[col].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |fields: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = fields
            .zip(&widths)
            .enumerate()
            .map(|(col, (field, width))| {
                if col == 0 {
                    format!("{field:<width$}")
                } else {
                    format!("{field:>width$}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_known_distribution() {
        let mut histogram: Histogram<u64> = latency_histogram();
        for us in 1..=1000u64 {
            histogram.record(us * 1_000).unwrap();
        }
        let summary = LatencySummary::from_nanos(&histogram);
        assert_eq!(summary.samples, 1000);
        // Two significant digits: within 1%.
        assert!((summary.p50_us - 500.0).abs() <= 5.0, "{summary:?}");
        assert!((summary.p90_us - 900.0).abs() <= 9.0, "{summary:?}");
        assert!((summary.p99_us - 990.0).abs() <= 10.0, "{summary:?}");
        assert!((summary.max_us - 1000.0).abs() <= 10.0, "{summary:?}");
        let points = percentile_points(&histogram);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!((points.last().unwrap().0 - 100.0).abs() < 1e-9);
    }

    #[test]
    fn merging_adds_counts() {
        let mut small: Histogram<u32> = latency_histogram();
        small.record_n(2_000, 3).unwrap();
        let mut big: Histogram<u64> = latency_histogram();
        big.record(1_000).unwrap();
        merge(&mut big, &small).unwrap();
        assert_eq!(big.len(), 4);
    }

    #[test]
    fn median_and_quantile() {
        assert_eq!(median(&[3, 1, 2]), 2);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn table_aligns_columns() {
        let table = format_table(
            &["transport", "p50"],
            &[
                vec!["ws".to_owned(), "1.5".to_owned()],
                vec!["longpoll".to_owned(), "12.25".to_owned()],
            ],
        );
        assert_eq!(
            table,
            "transport    p50\nws           1.5\nlongpoll   12.25\n"
        );
    }
}
