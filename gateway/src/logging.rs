//! Logs through `tracing`: human lines or JSON objects on stderr, with a filter SIGHUP can
//! change. The engine logs through the `log` crate; those records are bridged in.
//!
//! JSON lines are written by [`JsonLines`] rather than `tracing-subscriber`'s JSON writer, which
//! prints every field that is not a number or a bool as a string (lists included) unless the
//! unstable `valuable` support is compiled in. A list is logged as `field = ?List(&items)`: the
//! human writer shows it as `["a","b"]`, and [`JsonLines`] writes it as a JSON array.

use std::cell::Cell;
use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

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
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().event_format(JsonLines).with_writer(std::io::stderr).boxed()
        }
    };
    tracing_subscriber::registry().with(filter).with(output).try_init().map_err(|e| e.to_string())?;
    Ok(LogControl { handle })
}

thread_local! {
    /// Set by a [`List`] while it is formatted, so that [`JsonLines`] knows the text it just
    /// got is a list's (a peer's string that merely looks like one stays a string).
    static LIST_FORMATTED: Cell<bool> = const { Cell::new(false) };
}

/// A list field: `tracing::info!(listeners = ?List(&names), ...)`. Formats as a JSON array of
/// the items' `Display` texts, which the JSON lines keep as an array.
pub(crate) struct List<'a, T>(pub(crate) &'a [T]);

impl<T: fmt::Display> fmt::Debug for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        LIST_FORMATTED.with(|seen| seen.set(true));
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&serde_json::to_string(&items).map_err(|_| fmt::Error)?)
    }
}

/// One JSON object per line: `timestamp`, `level`, `fields` (the message among them) and
/// `target`, as `tracing-subscriber`'s JSON writer lays them out, with [`List`] fields as
/// arrays. Bridged `log` records carry their own target; their `log.*` fields are left out.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut fields = JsonFields(Map::new());
        event.record(&mut fields);
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let line = serde_json::json!({
            "timestamp": timestamp,
            "level": meta.level().as_str(),
            "fields": fields.0,
            "target": meta.target(),
        });
        writeln!(writer, "{line}")
    }
}

/// Collects an event's fields as JSON values.
struct JsonFields(Map<String, Value>);

impl JsonFields {
    fn put(&mut self, field: &Field, value: Value) {
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        LIST_FORMATTED.with(|seen| seen.set(false));
        let text = format!("{value:?}");
        if LIST_FORMATTED.with(|seen| seen.replace(false)) {
            if let Ok(list @ Value::Array(_)) = serde_json::from_str(&text) {
                return self.put(field, list);
            }
        }
        self.put(field, Value::String(text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
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
    use super::{JsonLines, List, LogLimiter};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// The lines `log` writes through the JSON writer, parsed.
    fn json_lines(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let writer = move || Sink(sink.clone());
        let subscriber = tracing_subscriber::fmt().event_format(JsonLines).with_writer(writer).finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_list_field_is_a_json_array_and_a_string_that_looks_like_one_stays_a_string() {
        let listeners = ["client", "admin \"tls\""];
        let lines = json_lines(|| {
            tracing::info!(listeners = ?List(&listeners), detail = "[1,2]", n = 3u64, ok = true, "reloaded");
            tracing::info!(ports = ?List(&[80u16, 443]), empty = ?List::<&str>(&[]), "second");
        });
        assert_eq!(lines.len(), 2);
        let fields = &lines[0]["fields"];
        assert_eq!(fields["listeners"], serde_json::json!(["client", "admin \"tls\""]), "{fields}");
        assert_eq!(fields["detail"], "[1,2]", "a peer's text is not parsed");
        assert_eq!((&fields["n"], &fields["ok"]), (&serde_json::json!(3), &serde_json::json!(true)));
        assert_eq!(fields["message"], "reloaded");
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", lines[0]);
        assert_eq!(lines[0]["target"], module_path!());
        assert_eq!(lines[1]["fields"]["ports"], serde_json::json!(["80", "443"]));
        assert_eq!(lines[1]["fields"]["empty"], serde_json::json!([]));
    }

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
