//! Pass/fail thresholds on a run's results: `--threshold 'p99<50ms' --threshold 'errors<0.1%'`.
//!
//! A threshold is `METRIC OP VALUE`: METRIC one of `p50 p90 p99 p999 max mean` (latency: VALUE a
//! duration in `us`, `ms` or `s`), `errors` (a count, or a percentage of the operations with
//! `%`), `rate` (operations per second, `1000` or `1000/s`), `late` (open-loop sends made late:
//! a count or a percentage of the sends due); OP one of `<`, `<=`, `>`, `>=`. What the latency,
//! errors and rate of each mode are is [`crate::mode::Report::metrics`].

use serde::Serialize;

use crate::stats::{fmt_us, Percentiles};

/// What a run measured, as far as thresholds can see.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Metrics {
    /// The mode's main latency.
    pub(crate) latency: Percentiles,
    /// Operations that failed, out of `ops`.
    pub(crate) errors: u64,
    pub(crate) ops: u64,
    /// Operations per second.
    pub(crate) rate: Option<f64>,
    /// Open loop: sends made late, out of the sends due.
    pub(crate) late: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
    Errors,
    Rate,
    Late,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// The number a threshold compares with, in its unit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Limit {
    Micros(f64),
    Percent(f64),
    Count(f64),
    PerSecond(f64),
}

/// One `--threshold`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Threshold {
    text: String,
    metric: Metric,
    op: Op,
    limit: Limit,
}

/// How a threshold fared.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) threshold: String,
    /// The measured value in the threshold's unit (µs, %, count, per second); `null` when the
    /// mode does not measure it.
    pub(crate) value: Option<f64>,
    /// The same, for people.
    pub(crate) measured: String,
    pub(crate) ok: bool,
}

/// Parses one threshold (the `--threshold` value parser).
pub(crate) fn parse(text: &str) -> Result<Threshold, String> {
    let fail = |what: &str| format!("--threshold '{text}': {what}");
    let at = text.find(['<', '>']).ok_or_else(|| fail("expected METRIC<VALUE, e.g. p99<50ms"))?;
    let (name, rest) = (text[..at].trim(), &text[at..]);
    let (op, value) = match rest.as_bytes() {
        [b'<', b'=', ..] => (Op::Le, &rest[2..]),
        [b'>', b'=', ..] => (Op::Ge, &rest[2..]),
        [b'<', ..] => (Op::Lt, &rest[1..]),
        _ => (Op::Gt, &rest[1..]),
    };
    let value = value.trim();
    let metric = match name.to_ascii_lowercase().as_str() {
        "p50" => Metric::P50,
        "p90" => Metric::P90,
        "p99" => Metric::P99,
        "p999" | "p99.9" => Metric::P999,
        "max" => Metric::Max,
        "mean" => Metric::Mean,
        "errors" => Metric::Errors,
        "rate" => Metric::Rate,
        "late" => Metric::Late,
        _ => return Err(fail("unknown metric (p50, p90, p99, p999, max, mean, errors, rate, late)")),
    };
    let number = |s: &str| s.trim().parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0);
    let limit = match metric {
        Metric::Errors | Metric::Late => match value.strip_suffix('%') {
            Some(pct) => number(pct).map(Limit::Percent),
            None => number(value).map(Limit::Count),
        }
        .ok_or_else(|| fail("expected a count like 10 or a percentage like 0.1%"))?,
        Metric::Rate => number(value.strip_suffix("/s").unwrap_or(value))
            .map(Limit::PerSecond)
            .ok_or_else(|| fail("expected a rate like 1000/s"))?,
        _ => {
            let (digits, scale) = if let Some(v) = value.strip_suffix("us").or(value.strip_suffix("µs")) {
                (v, 1.0)
            } else if let Some(v) = value.strip_suffix("ms") {
                (v, 1e3)
            } else if let Some(v) = value.strip_suffix('s') {
                (v, 1e6)
            } else {
                ("", 0.0)
            };
            number(digits)
                .filter(|_| scale > 0.0)
                .map(|n| Limit::Micros(n * scale))
                .ok_or_else(|| fail("expected a duration like 50ms (units us, ms, s)"))?
        }
    };
    Ok(Threshold { text: text.trim().to_owned(), metric, op, limit })
}

impl Threshold {
    /// Compares the run's `metrics` with the threshold.
    pub(crate) fn evaluate(&self, m: &Metrics) -> Outcome {
        let lat = &m.latency;
        let pct = |part: u64, whole: u64| if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 };
        let (value, limit) = match (self.metric, self.limit) {
            (_, Limit::Micros(limit)) => {
                let us = match self.metric {
                    Metric::P50 => lat.p50_us,
                    Metric::P90 => lat.p90_us,
                    Metric::P99 => lat.p99_us,
                    Metric::P999 => lat.p999_us,
                    Metric::Max => lat.max_us,
                    _ => lat.mean_us,
                };
                // No sample: there is no latency to compare.
                ((lat.count > 0).then_some(us), limit)
            }
            (Metric::Errors, Limit::Percent(limit)) => (Some(pct(m.errors, m.ops)), limit),
            (Metric::Errors, _) => (Some(m.errors as f64), self.limit_value()),
            (Metric::Late, Limit::Percent(limit)) => (m.late.map(|(late, due)| pct(late, due)), limit),
            (Metric::Late, _) => (m.late.map(|(late, _)| late as f64), self.limit_value()),
            (_, _) => (m.rate, self.limit_value()),
        };
        let ok = value.is_some_and(|v| match self.op {
            Op::Lt => v < limit,
            Op::Le => v <= limit,
            Op::Gt => v > limit,
            Op::Ge => v >= limit,
        });
        let measured = match (value, self.limit) {
            (None, _) => "not measured in this run".to_owned(),
            (Some(v), Limit::Micros(_)) => fmt_us(v),
            (Some(v), Limit::Percent(_)) => format!("{v:.3}%"),
            (Some(v), Limit::Count(_)) => format!("{v:.0}"),
            (Some(v), Limit::PerSecond(_)) => format!("{v:.1}/s"),
        };
        Outcome { threshold: self.text.clone(), value: value.map(crate::stats::round3), measured, ok }
    }

    fn limit_value(&self) -> f64 {
        match self.limit {
            Limit::Micros(x) | Limit::Percent(x) | Limit::Count(x) | Limit::PerSecond(x) => x,
        }
    }
}

/// The table row for the outcomes: `p99<50ms ok (12.3ms); errors<0.1% FAILED (0.500%)`.
pub(crate) fn row(outcomes: &[Outcome]) -> (String, String) {
    let text: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{} {} ({})", o.threshold, if o.ok { "ok" } else { "FAILED" }, o.measured))
        .collect();
    ("thresholds".into(), text.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics {
            latency: Percentiles {
                count: 100,
                mean_us: 900.0,
                p50_us: 800.0,
                p90_us: 2000.0,
                p99_us: 12_000.0,
                p999_us: 40_000.0,
                max_us: 1_500_000.0,
            },
            errors: 5,
            ops: 1000,
            rate: Some(2500.0),
            late: None,
        }
    }

    fn check(text: &str, m: &Metrics) -> bool {
        parse(text).unwrap().evaluate(m).ok
    }

    #[test]
    fn parses_metrics_operators_and_units() {
        let t = parse(" p99 <= 50ms ").unwrap();
        assert_eq!((t.metric, t.op, t.limit), (Metric::P99, Op::Le, Limit::Micros(50_000.0)));
        assert_eq!(parse("p99.9<1.5s").unwrap().limit, Limit::Micros(1_500_000.0));
        assert_eq!(parse("max<250us").unwrap().limit, Limit::Micros(250.0));
        assert_eq!(parse("p50<250µs").unwrap().limit, Limit::Micros(250.0));
        assert_eq!(parse("errors<0.1%").unwrap().limit, Limit::Percent(0.1));
        assert_eq!(parse("errors<=3").unwrap().limit, Limit::Count(3.0));
        let t = parse("rate>=1000/s").unwrap();
        assert_eq!((t.metric, t.op, t.limit), (Metric::Rate, Op::Ge, Limit::PerSecond(1000.0)));
        assert_eq!(parse("rate>10").unwrap().op, Op::Gt);
        assert_eq!(parse("late<1%").unwrap().metric, Metric::Late);
    }

    #[test]
    fn parse_errors_say_what_was_expected() {
        for (text, says) in [
            ("p99<fast", "--threshold 'p99<fast': expected a duration like 50ms"),
            ("p99<50", "expected a duration like 50ms"),
            ("p99<-5ms", "expected a duration"),
            ("errors<many", "expected a count like 10 or a percentage like 0.1%"),
            ("rate>quick", "expected a rate like 1000/s"),
            ("p98<5ms", "unknown metric"),
            ("p99 50ms", "expected METRIC<VALUE"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn evaluates_against_the_measured_values() {
        let m = metrics();
        assert!(check("p99<50ms", &m) && !check("p99<10ms", &m));
        assert!(check("p99<=12ms", &m) && !check("p99<12ms", &m));
        assert!(check("p50>=800us", &m) && check("p999<41ms", &m) && !check("max<1s", &m));
        assert!(check("mean<1ms", &m) && check("p90<3ms", &m));
        // 5 of 1000 = 0.5 %.
        assert!(check("errors<1%", &m) && !check("errors<0.1%", &m) && !check("errors<5", &m));
        assert!(check("errors<=5", &m));
        assert!(check("rate>2000/s", &m) && !check("rate>=3000", &m));
        let o = parse("errors<0.1%").unwrap().evaluate(&m);
        assert_eq!((o.value, o.measured.as_str(), o.ok), (Some(0.5), "0.500%", false));
        assert_eq!(row(&[o]).1, "errors<0.1% FAILED (0.500%)");
    }

    #[test]
    fn unmeasured_metrics_fail() {
        let mut m = metrics();
        let o = parse("late<1%").unwrap().evaluate(&m);
        assert!(!o.ok && o.value.is_none() && o.measured.contains("not measured"), "{o:?}");
        m.late = Some((3, 300));
        assert!(check("late<2%", &m) && !check("late<1%", &m) && check("late<=3", &m));
        m.rate = None;
        assert!(!check("rate>0", &m));
        m.latency = Percentiles::default();
        assert!(!check("p99<1s", &m));
        m.ops = 0;
        m.errors = 0;
        assert!(check("errors<0.1%", &m));
    }
}
