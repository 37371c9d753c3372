//! A value that changes over a run in piecewise-linear phases: `echo --ramp` (a message rate
//! per connection) and a scenario's phases (`scenario.rs`: the message rate and the number of
//! connections open, both built with [`Ramp::from_steps`]).
//!
//! Grammar: `PHASE[,PHASE…]`, each PHASE either `FROM:TO:DURATION` (the rate goes linearly from
//! FROM to TO messages per second per connection over DURATION) or `hold:DURATION` (the rate the
//! previous phase ended at, for DURATION). Rates are written as for `--message-rate` (`100` or
//! `100/s`) and may be 0; durations as everywhere (`500ms`, `30s`, `2m`). Time counts from the
//! start of the warm-up; after the last phase its final rate holds until the run ends. Example:
//! `0:100/s:30s,hold:60s,100:10:10s`.
//!
//! The schedule is exact for piecewise-linear rates: a connection's next send is the time at
//! which the integral of the rate since its previous send reaches one message (see
//! [`Ramp::after`]), so a ramp starting at 0 is fine.

use std::time::Duration;

/// One phase: the rate goes from `from` to `to` (messages/s per connection) over `secs`.
#[derive(Clone, Debug, PartialEq)]
struct Phase {
    from: f64,
    to: f64,
    secs: f64,
}

/// A parsed `--ramp`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ramp {
    phases: Vec<Phase>,
    /// As written (for the report).
    text: String,
}

/// `FROM:TO:DURATION` or `hold:DURATION`, comma-separated; see the module's documentation.
pub(crate) fn parse(text: &str) -> Result<Ramp, String> {
    let mut phases: Vec<Phase> = Vec::new();
    for (i, part) in text.split(',').enumerate() {
        let part = part.trim();
        let n = i + 1;
        let fields: Vec<&str> = part.split(':').collect();
        let phase = match fields.as_slice() {
            ["hold", duration] => {
                let Some(last) = phases.last() else {
                    return Err(format!(
                        "phase {n} ({part:?}): a ramp cannot start with hold (there is no rate to hold yet)"
                    ));
                };
                Phase { from: last.to, to: last.to, secs: phase_duration(n, part, duration)? }
            }
            [from, to, duration] => Phase {
                from: rate(from).map_err(|e| format!("phase {n} ({part:?}): FROM {e}"))?,
                to: rate(to).map_err(|e| format!("phase {n} ({part:?}): TO {e}"))?,
                secs: phase_duration(n, part, duration)?,
            },
            _ => {
                return Err(format!(
                    "phase {n} ({part:?}): expected FROM:TO:DURATION (e.g. 0:100/s:30s) or hold:DURATION"
                ))
            }
        };
        phases.push(phase);
    }
    if phases.iter().all(|phase| phase.from == 0.0 && phase.to == 0.0) {
        return Err(format!("{text:?}: the rate is 0 throughout, nothing would be sent"));
    }
    Ok(Ramp { phases, text: text.trim().to_owned() })
}

fn phase_duration(n: usize, part: &str, text: &str) -> Result<f64, String> {
    let duration = crate::cli::parse_duration(text).map_err(|e| format!("phase {n} ({part:?}): {e}"))?;
    if duration.is_zero() {
        return Err(format!("phase {n} ({part:?}): the duration must be more than 0"));
    }
    Ok(duration.as_secs_f64())
}

/// `100`, `100/s`, `0`: a rate per second that is not negative.
pub(crate) fn rate(text: &str) -> Result<f64, String> {
    match text.trim().trim_end_matches("/s").parse::<f64>() {
        Ok(rate) if rate >= 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("{text:?}: a rate per second, e.g. 100 or 100/s")),
    }
}

impl Ramp {
    /// The phases as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The highest rate the ramp reaches (what the report gives as the rate per connection).
    pub(crate) fn peak(&self) -> f64 {
        self.phases.iter().map(|phase| phase.from.max(phase.to)).fold(0.0, f64::max)
    }

    /// Phases that each go from where the previous one ended (`start` for the first) to
    /// `to` over `secs` (each more than 0), labelled `text`. `None` when the value is 0
    /// throughout (nothing would be sent, or no connection opened).
    pub(crate) fn from_steps(start: f64, steps: &[(f64, f64)], text: String) -> Option<Ramp> {
        let mut from = start;
        let phases: Vec<Phase> = steps
            .iter()
            .map(|&(to, secs)| {
                let phase = Phase { from, to, secs };
                from = to;
                phase
            })
            .collect();
        let all_zero = phases.iter().all(|phase| phase.from == 0.0 && phase.to == 0.0);
        (!phases.is_empty() && !all_zero).then_some(Ramp { phases, text })
    }

    /// Where each phase ends, seconds since the start.
    pub(crate) fn ends(&self) -> Vec<f64> {
        let mut t = 0.0;
        self.phases
            .iter()
            .map(|phase| {
                t += phase.secs;
                t
            })
            .collect()
    }

    /// The value (rate) at `t` seconds since the start.
    pub(crate) fn rate_at(&self, t: f64) -> f64 {
        let mut t0 = 0.0;
        for phase in &self.phases {
            if t < t0 + phase.secs {
                return phase.from + (phase.to - phase.from) * (t - t0) / phase.secs;
            }
            t0 += phase.secs;
        }
        self.phases.last().map_or(0.0, |phase| phase.to)
    }

    /// The time `s > t` (seconds since the start) at which `messages` more messages are due:
    /// the integral of the rate from `t` to `s` is `messages`. `None` when the rate never
    /// gives that many again (it ends at 0).
    pub(crate) fn after(&self, t: f64, messages: f64) -> Option<f64> {
        let mut need = messages;
        let mut t0 = 0.0;
        for phase in &self.phases {
            let end = t0 + phase.secs;
            if t < end {
                // Within this phase the rate is a + b·x, x the time since `t0`.
                let (a, b) = (phase.from, (phase.to - phase.from) / phase.secs);
                let u = (t - t0).max(0.0);
                // The area already behind `u`, plus what is needed: solve b/2·v² + a·v = c.
                let c = a * u + b / 2.0 * u * u + need;
                let disc = a * a + 2.0 * b * c;
                if disc >= 0.0 {
                    let denom = a + disc.sqrt();
                    if denom > 0.0 {
                        // The stable form of the quadratic's root (also right for b = 0).
                        let v = 2.0 * c / denom;
                        if v <= phase.secs {
                            return Some(t0 + v);
                        }
                    }
                }
                // Not within this phase: take what is left of its area and go on.
                let area = |x: f64| a * x + b / 2.0 * x * x;
                need -= area(phase.secs) - area(u);
            }
            t0 = end;
        }
        let last = self.phases.last()?.to;
        (last > 0.0).then(|| t.max(t0) + need / last)
    }

    /// [`Ramp::after`] on durations since the start.
    pub(crate) fn after_duration(&self, since_start: Duration, messages: f64) -> Option<Duration> {
        let secs = self.after(since_start.as_secs_f64(), messages)?;
        // Past any run's end; keeps `Duration::from_secs_f64` from panicking.
        (secs < 1e9).then(|| Duration::from_secs_f64(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn parses_phases_and_holds() {
        let ramp = parse("0:1000/s:30s,hold:60s, 1000:10:500ms").unwrap();
        assert_eq!(
            ramp.phases,
            [
                Phase { from: 0.0, to: 1000.0, secs: 30.0 },
                Phase { from: 1000.0, to: 1000.0, secs: 60.0 },
                Phase { from: 1000.0, to: 10.0, secs: 0.5 },
            ]
        );
        assert_eq!(ramp.peak(), 1000.0);
        assert_eq!(parse("5:5:1m").unwrap().phases, [Phase { from: 5.0, to: 5.0, secs: 60.0 }]);
    }

    #[test]
    fn says_what_is_wrong() {
        let err = |text: &str| parse(text).unwrap_err();
        assert!(err("hold:10s").contains("cannot start with hold"), "{}", err("hold:10s"));
        assert!(err("0:10:5s,10:5s").contains("phase 2 (\"10:5s\"): expected FROM:TO:DURATION"));
        assert!(err("x:10:5s").starts_with("phase 1 (\"x:10:5s\"): FROM \"x\""), "{}", err("x:10:5s"));
        assert!(err("1:-1:5s").contains("TO \"-1\""));
        assert!(err("1:2:5").contains("phase 1"), "{}", err("1:2:5"));
        assert!(err("1:2:0s").contains("more than 0"));
        assert!(err("0:0:5s,hold:1s").contains("0 throughout"));
        assert!(err("").contains("expected FROM:TO:DURATION"));
    }

    #[test]
    fn steps_go_on_from_where_the_last_one_ended() {
        let ramp = Ramp::from_steps(0.0, &[(100.0, 10.0), (100.0, 5.0), (0.0, 10.0)], "x".into()).unwrap();
        assert_eq!(ramp, Ramp { text: "x".into(), ..parse("0:100:10s,hold:5s,100:0:10s").unwrap() });
        assert_eq!(Ramp::from_steps(0.0, &[(0.0, 1.0)], String::new()), None);
        assert_eq!(Ramp::from_steps(0.0, &[], String::new()), None);
    }

    #[test]
    fn rates_interpolate_and_the_last_one_holds() {
        let ramp = parse("0:100:10s,hold:5s,100:0:10s").unwrap();
        assert!(close(ramp.rate_at(0.0), 0.0) && close(ramp.rate_at(5.0), 50.0));
        assert!(close(ramp.rate_at(12.0), 100.0) && close(ramp.rate_at(20.0), 50.0));
        assert!(close(ramp.rate_at(99.0), 0.0));
    }

    #[test]
    fn sends_are_due_where_the_rate_adds_up_to_one_message() {
        // Constant 10/s: every 100 ms, also across phases and after the last one.
        let flat = parse("10:10:1s,hold:1s").unwrap();
        assert!(close(flat.after(0.0, 1.0).unwrap(), 0.1));
        assert!(close(flat.after(0.95, 1.0).unwrap(), 1.05));
        assert!(close(flat.after(5.0, 1.0).unwrap(), 5.1));
        // 0 → 100/s over 10 s: the first n messages are due at sqrt(n/5) s (area 5·t²).
        let up = parse("0:100:10s").unwrap();
        assert!(close(up.after(0.0, 1.0).unwrap(), (0.2f64).sqrt()));
        assert!(close(up.after(0.0, 20.0).unwrap(), 2.0));
        // Past the ramp: 500 messages in the ramp, then 100/s.
        assert!(close(up.after(0.0, 600.0).unwrap(), 11.0));
        // Going down to 0 and staying there: the area left is 5 messages, then nothing.
        let down = parse("10:0:1s").unwrap();
        assert!(close(down.after(0.0, 1.0).unwrap(), 1.0 - (0.8f64).sqrt()));
        assert_eq!(down.after(0.0, 6.0), None);
        assert_eq!(down.after(2.0, 1.0), None);
        // A pause at 0 in the middle is skipped.
        let gap = parse("10:10:1s,0:0:5s,10:10:1s").unwrap();
        assert!(close(gap.after(0.95, 1.0).unwrap(), 6.05));
        assert_eq!(gap.after_duration(Duration::from_millis(950), 1.0), Some(Duration::from_secs_f64(6.05)));
    }
}
