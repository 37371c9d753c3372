//! Logs through `tracing`: human lines or JSON objects on stderr, with a filter SIGHUP can
//! change. The engine logs through the `log` crate; those records are bridged in.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use super::config::LogFormat;

/// Changes the log filter of the running process.
pub(crate) struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    pub(crate) fn set_level(&self, filter: &str) -> Result<(), String> {
        let filter = parse(filter)?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("log_level {filter:?}: {e}"))
}

/// Checks a log filter without installing it, so a bad one is a configuration error.
pub(crate) fn check_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter).map(drop).map_err(|e| format!("{filter:?} is not a log filter: {e}"))
}

/// Installs the global subscriber. Fails on a bad filter.
pub(crate) fn init(format: LogFormat, filter: &str) -> Result<LogControl, String> {
    let (filter, handle) = reload::Layer::new(parse(filter)?);
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Human => {
            fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).boxed()
        }
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(output).try_init().map_err(|e| e.to_string())?;
    Ok(LogControl { handle })
}

/// Caps how many lines of one kind are logged per second, so a flood of refusals cannot fill
/// the disk: past `per_second` lines in a one-second window the rest are counted, and the
/// first line let through afterwards carries how many were suppressed. One per kind of line;
/// the clock is passed in so the rule is tested without sleeping.
pub(crate) struct LogLimiter {
    per_second: u32,
    state: std::sync::Mutex<Window>,
}

impl Default for LogLimiter {
    fn default() -> LogLimiter {
        LogLimiter::new(super::metrics::REFUSAL_LINES_PER_SECOND)
    }
}

struct Window {
    start: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) const fn new(per_second: u32) -> LogLimiter {
        LogLimiter {
            per_second,
            state: std::sync::Mutex::new(Window { start: None, logged: 0, suppressed: 0 }),
        }
    }

    /// `Some(suppressed)` when a line may be logged now (`suppressed` lines were dropped since
    /// the last one logged), `None` when this one is to be dropped (and counted).
    pub(crate) fn allow(&self, now: std::time::Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-count: the counts stay usable.
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let fresh =
            w.start.is_none_or(|s| now.saturating_duration_since(s) >= std::time::Duration::from_secs(1));
        if fresh {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < self.per_second {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimiter;
    use std::time::{Duration, Instant};

    #[test]
    fn at_most_n_lines_a_second_then_the_suppressed_count() {
        let limiter = LogLimiter::new(3);
        let t0 = Instant::now();
        let first: Vec<Option<u64>> =
            (0..10).map(|i| limiter.allow(t0 + Duration::from_millis(i * 10))).collect();
        assert_eq!(first, [Some(0), Some(0), Some(0), None, None, None, None, None, None, None]);
        // Still inside the window: dropped, counted.
        assert_eq!(limiter.allow(t0 + Duration::from_millis(999)), None);
        // A new window: the first line carries the 8 suppressed, the next ones none.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(limiter.allow(t1), Some(8));
        assert_eq!(limiter.allow(t1), Some(0));
        assert_eq!(limiter.allow(t1), Some(0));
        assert_eq!(limiter.allow(t1), None);
        // A quiet spell then: a fresh window, and the one suppressed line is reported.
        assert_eq!(limiter.allow(t1 + Duration::from_secs(60)), Some(1));
        // A clock that went backwards (another thread's earlier reading) stays in the window.
        assert_eq!(limiter.allow(t0), Some(0));
    }
}
