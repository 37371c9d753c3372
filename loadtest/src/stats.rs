//! Counters and latency histograms, and their serialisable summaries.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Failure counts by cause (see [`crate::net::cause`] and [`crate::conn::End`]).
pub(crate) type Causes = BTreeMap<&'static str, u64>;

/// Adds one to `cause`.
pub(crate) fn bump(causes: &mut Causes, cause: &'static str) {
    *causes.entry(cause).or_default() += 1;
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, three significant digits.
pub(crate) struct Latency {
    hist: Histogram<u64>,
}

impl Latency {
    pub(crate) fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds");
        Latency { hist }
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(nanos);
    }

    pub(crate) fn summary(&self) -> Percentiles {
        let us = |nanos: u64| nanos as f64 / 1000.0;
        let h = &self.hist;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) mean_us: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
}

impl Percentiles {
    /// `p50 … p99.9 … max` for a summary line.
    pub(crate) fn line(&self) -> String {
        format!(
            "n={} p50={} p90={} p99={} p99.9={} max={}",
            self.count,
            fmt_us(self.p50_us),
            fmt_us(self.p90_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us)
        )
    }
}

/// `850µs`, `12.3ms`, `1.20s`.
pub(crate) fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// Rounds to three decimals for the JSON output.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut l = Latency::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let p = l.summary();
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.max_us - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Latency::new().summary().count, 0);
    }
}
