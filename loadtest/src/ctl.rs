//! What a running mode shares with the outside: the stop flag (Ctrl-C, or the parent of a
//! `--procs` run), the parent's barrier and commands, and progress (a live status line, or
//! progress lines for the parent, and one sample per second for the HTML report).
//!
//! Child protocol (`--child`, spoken over the child's stdin and stdout, one line each):
//! - child → parent: `{"progress":{"open":N,"ops":N}}` once a second; `{"ready":N}` when its N
//!   connections are set up; `{"measuring":N}` (echo) when its measured window starts, N
//!   connections open; `{"measured":N}` (echo, storm, fanout) the moment its measured window
//!   ends, N operations counted in it, before it closes its connections; the report (`--json`)
//!   as the last line. The parent measures the server's CPU over the same window: from `go`
//!   (echo: from the last `measuring`) to the last `measured`, so that the closes, which come
//!   after, are not counted as the window's work (a child that ends without saying counts as
//!   having said).
//! - parent → child: `go` (pass the barrier), `end N` (fanout: N messages were published),
//!   `stop` (finish now with a partial report). EOF on stdin counts as `stop`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats::{fmt_us, Latency, Percentiles};

/// `end` before the publisher has finished.
pub(crate) const NOT_ENDED: u64 = u64::MAX;

/// One sample of the time series (one per second).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// Seconds since the run started.
    pub(crate) t_s: f64,
    /// Connections open.
    pub(crate) open: u64,
    /// Operations (messages, handshakes, cycles, deliveries) per second over the last interval.
    pub(crate) ops_per_s: f64,
}

/// Flags shared with the signal handler, the stdin reader and helper threads.
#[derive(Clone)]
pub(crate) struct Flags {
    /// Stop now, report what was measured.
    pub(crate) stop: Arc<AtomicBool>,
    /// The barrier was passed (always set outside child mode).
    pub(crate) go: Arc<AtomicBool>,
    /// Fanout: how many messages were published, once publishing is over.
    pub(crate) end: Arc<AtomicU64>,
}

impl Flags {
    fn new(child: bool) -> Self {
        Flags {
            stop: Arc::new(AtomicBool::new(false)),
            go: Arc::new(AtomicBool::new(!child)),
            end: Arc::new(AtomicU64::new(NOT_ENDED)),
        }
    }
}

/// Registers SIGINT and SIGTERM to set `stop`; a second one ends the process at once.
pub(crate) fn stop_on_signals(stop: &Arc<AtomicBool>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM] {
        // The conditional shutdown is registered first: it only fires when `stop` is already set.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone());
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
}

/// How progress is shown.
enum Output {
    /// `\r`-rewritten line on stderr.
    Terminal,
    /// A plain line on stderr every few seconds.
    Plain,
    /// Progress lines for the parent on stdout.
    Child,
}

struct Progress {
    output: Output,
    start: Instant,
    next: Instant,
    last_print: Instant,
    last_ops: u64,
    last_at: Instant,
    phase: &'static str,
    series: Vec<Sample>,
    line_shown: bool,
}

/// A mode's view of the run.
pub(crate) struct Ctl {
    flags: Flags,
    child: bool,
    progress: RefCell<Progress>,
}

/// Plain (non-terminal) status lines are this far apart.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Ctl {
    /// For a run: reads the parent's commands in child mode, shows a status line otherwise. The
    /// live (rewritten) line needs stderr and stdout on a terminal and `live`; otherwise a plain
    /// line every few seconds.
    pub(crate) fn new(child: bool, live: bool) -> Self {
        let flags = Flags::new(child);
        stop_on_signals(&flags.stop);
        let output = if child {
            spawn_command_reader(flags.clone());
            Output::Child
        } else if live && std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
            Output::Terminal
        } else {
            Output::Plain
        };
        Ctl::with(flags, child, output)
    }

    fn with(flags: Flags, child: bool, output: Output) -> Self {
        let now = Instant::now();
        Ctl {
            flags,
            child,
            progress: RefCell::new(Progress {
                output,
                start: now,
                next: now + Duration::from_secs(1),
                last_print: now,
                last_ops: 0,
                last_at: now,
                phase: "starting",
                series: Vec::new(),
                line_shown: false,
            }),
        }
    }

    /// The shared flags (for helper threads).
    pub(crate) fn flags(&self) -> &Flags {
        &self.flags
    }

    /// Whether this process is a child of a `--procs` run.
    pub(crate) fn is_child(&self) -> bool {
        self.child
    }

    /// Ctrl-C, SIGTERM or the parent's `stop`.
    pub(crate) fn stopped(&self) -> bool {
        self.flags.stop.load(Ordering::Relaxed)
    }

    /// Whether the barrier was passed.
    pub(crate) fn go(&self) -> bool {
        self.flags.go.load(Ordering::Relaxed)
    }

    /// Fanout: the number of messages published, once known.
    pub(crate) fn end(&self) -> Option<u64> {
        Some(self.flags.end.load(Ordering::Acquire)).filter(|&n| n != NOT_ENDED)
    }

    /// Tells the parent this child's `open` connections are set up (nothing outside child mode).
    pub(crate) fn ready(&self, open: u64) {
        if self.child {
            println!("{{\"ready\":{open}}}");
        }
    }

    /// Tells the parent this child's measured window starts, `open` connections open (nothing
    /// outside child mode).
    pub(crate) fn measuring(&self, open: u64) {
        if self.child {
            println!("{{\"measuring\":{open}}}");
        }
    }

    /// Tells the parent this child's measured window is over, `ops` operations counted in it
    /// (nothing outside child mode). Call it right when the window ends, before closing.
    pub(crate) fn measured(&self, ops: u64) {
        if self.child {
            println!("{{\"measured\":{ops}}}");
        }
    }

    /// Names what the run is doing, for the status line.
    pub(crate) fn phase(&self, phase: &'static str) {
        self.progress.borrow_mut().phase = phase;
    }

    /// Whether the status line shows recent latencies (feed them to [`tick_live`](Self::tick_live)
    /// only then: they cost a second histogram record per operation).
    pub(crate) fn wants_latency(&self) -> bool {
        matches!(self.progress.borrow().output, Output::Terminal)
    }

    /// Call every loop turn: `open` connections, `ops` operations so far. Samples once a second.
    pub(crate) fn tick(&self, open: u64, ops: u64) {
        self.sample(open, ops, None);
    }

    /// [`tick`](Self::tick) with what the live line shows besides: `errors` so far and the
    /// latencies recorded in `recent` since the last sample (emptied at each sample).
    pub(crate) fn tick_live(&self, open: u64, ops: u64, errors: u64, recent: &mut Latency) {
        self.sample(open, ops, Some((errors, recent)));
    }

    fn sample(&self, open: u64, ops: u64, live: Option<(u64, &mut Latency)>) {
        let now = Instant::now();
        let mut p = self.progress.borrow_mut();
        if now < p.next {
            return;
        }
        p.next = now + Duration::from_secs(1);
        let dt = now.duration_since(p.last_at).as_secs_f64();
        let ops_per_s = if dt > 0.0 { ops.saturating_sub(p.last_ops) as f64 / dt } else { 0.0 };
        let t_s = now.duration_since(p.start).as_secs_f64();
        (p.last_ops, p.last_at) = (ops, now);
        p.series.push(Sample { t_s: crate::stats::round3(t_s), open, ops_per_s: ops_per_s.round() });
        match p.output {
            Output::Child => println!("{{\"progress\":{{\"open\":{open},\"ops\":{ops}}}}}"),
            Output::Terminal => {
                let mut line = status_line(p.phase, t_s, open, ops, ops_per_s);
                if let Some((errors, recent)) = live {
                    line.push_str(&live_suffix(errors, &recent.summary(), dt));
                    recent.clear();
                }
                eprint!("\r\x1b[K{line}");
                let _ = std::io::stderr().flush();
                p.line_shown = true;
            }
            Output::Plain if now.duration_since(p.last_print) >= PLAIN_EVERY => {
                p.last_print = now;
                eprintln!("{}", status_line(p.phase, t_s, open, ops, ops_per_s));
            }
            Output::Plain => {}
        }
    }

    /// Removes the status line before the final output; returns the samples taken.
    pub(crate) fn finish(&self) -> Vec<Sample> {
        let mut p = self.progress.borrow_mut();
        if p.line_shown {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
            p.line_shown = false;
        }
        std::mem::take(&mut p.series)
    }
}

/// `[  12s] measuring: 15000 open, 1234567 ops (98765/s)`.
pub(crate) fn status_line(phase: &str, t_s: f64, open: u64, ops: u64, ops_per_s: f64) -> String {
    format!("[{t_s:>5.0}s] {phase}: {open} open, {ops} ops ({ops_per_s:.0}/s)")
}

/// `, p50 850µs p99 2.1ms (last 1s), 0 errors` (no latencies when none were recorded).
fn live_suffix(errors: u64, last: &Percentiles, dt: f64) -> String {
    let mut out = String::new();
    if last.count > 0 {
        let _ = write!(out, ", p50 {} p99 {} (last {dt:.0}s)", fmt_us(last.p50_us), fmt_us(last.p99_us));
    }
    let _ = write!(out, ", {errors} errors");
    out
}

/// Child mode: a thread turns the parent's lines on stdin into flags.
fn spawn_command_reader(flags: Flags) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            match (words.next(), words.next().and_then(|n| n.parse::<u64>().ok())) {
                (Some("go"), _) => flags.go.store(true, Ordering::Relaxed),
                (Some("end"), Some(n)) => flags.end.store(n, Ordering::Release),
                (Some("stop"), _) => flags.stop.store(true, Ordering::Relaxed),
                _ => {}
            }
        }
        // The parent is gone or closed our stdin: finish.
        flags.stop.store(true, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_line_shows_the_last_seconds_latency_and_errors() {
        let mut recent = Latency::new();
        assert_eq!(live_suffix(3, &recent.summary(), 1.0), ", 3 errors");
        for us in [800u64, 850, 900, 2100] {
            recent.record(Duration::from_micros(us));
        }
        let line = format!(
            "{}{}",
            status_line("measuring", 12.0, 100, 5000, 1000.0),
            live_suffix(0, &recent.summary(), 1.0)
        );
        assert_eq!(
            line,
            "[   12s] measuring: 100 open, 5000 ops (1000/s), p50 850µs p99 2.1ms (last 1s), 0 errors"
        );
    }
}
