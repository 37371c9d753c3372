//! What a running mode shares with the outside: the stop flag (Ctrl-C, or the parent of a
//! `--procs` run), the parent's barrier and commands, and progress (a live status line, or
//! progress lines for the parent, and one sample per second for the HTML report). While a mode
//! opens connections towards a known count ([`Ctl::connecting`], [`Ctl::target`]) the live line
//! is a progress bar of open / target connections with its rate and ETA.
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
//!
//! A loop of `--threads` speaks the same protocol inside the process: its lines go through a
//! channel ([`Ctl::for_thread`]) and the parent sets its [`Flags`] instead of writing commands.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::stats::{fmt_us, Latency, Percentiles};

/// `end` before the publisher has finished.
pub(crate) const NOT_ENDED: u64 = u64::MAX;

/// One sample of the time series (one per second). The fields that a mode does not measure,
/// or that need `--server-pid`, are `null` (an empty CSV cell).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// Seconds since the run started.
    pub(crate) t_s: f64,
    /// Connections open.
    pub(crate) open: u64,
    /// Messages sent per second over the last interval (echo).
    #[serde(default)]
    pub(crate) sent_per_s: Option<f64>,
    /// Operations completed per second over the last interval: echoes received (echo),
    /// deliveries (fanout), handshakes (connect), cycles (storm).
    pub(crate) ops_per_s: f64,
    /// Median latency of the operations completed in the interval, microseconds (echo).
    #[serde(default)]
    pub(crate) p50_us: Option<f64>,
    /// 99th percentile of the same, microseconds.
    #[serde(default)]
    pub(crate) p99_us: Option<f64>,
    /// Errors counted in the interval (echo: corrupted, lost, skipped, dropped).
    #[serde(default)]
    pub(crate) errors: Option<u64>,
    /// The server's CPU seconds per wall second over the interval (`--server-pid`; 1.0 = one
    /// core busy).
    #[serde(default)]
    pub(crate) server_cpu: Option<f64>,
    /// The client's (this process's) CPU seconds per wall second over the interval; `null` in
    /// the parent of a `--procs` run, whose own CPU is not the client's.
    #[serde(default)]
    pub(crate) client_cpu: Option<f64>,
}

/// The column names of [`write_csv`], in order: the JSON field names of [`Sample`].
pub(crate) const CSV_HEADER: &str =
    "t_s,open,sent_per_s,ops_per_s,p50_us,p99_us,errors,server_cpu,client_cpu";

/// Writes `series` as CSV: [`CSV_HEADER`], then one row per sample; an absent figure is an
/// empty cell.
pub(crate) fn write_csv(out: &mut impl Write, series: &[Sample]) -> std::io::Result<()> {
    fn cell<T: std::fmt::Display>(value: Option<T>) -> String {
        value.map_or_else(String::new, |v| v.to_string())
    }
    writeln!(out, "{CSV_HEADER}")?;
    for s in series {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            s.t_s,
            s.open,
            cell(s.sent_per_s),
            s.ops_per_s,
            cell(s.p50_us),
            cell(s.p99_us),
            cell(s.errors),
            cell(s.server_cpu),
            cell(s.client_cpu)
        )?;
    }
    Ok(())
}

/// What a mode reports at each loop turn (see [`Ctl::tick_with`]).
pub(crate) struct Tick<'a> {
    /// Connections open.
    pub(crate) open: u64,
    /// Operations completed so far.
    pub(crate) ops: u64,
    /// Messages sent so far, when the mode sends its own (echo).
    pub(crate) sent: Option<u64>,
    /// Errors so far, when the mode counts them as it goes.
    pub(crate) errors: Option<u64>,
    /// Latencies recorded since the last sample (emptied at each sample).
    pub(crate) recent: Option<&'a mut Latency>,
}

/// CPU samples taken at the previous series sample.
#[derive(Default)]
struct CpuWatch {
    server_pids: Vec<u32>,
    client: bool,
    last_server: Option<crate::procfs::CpuSample>,
    last_client: Option<crate::procfs::CpuSample>,
}

impl CpuWatch {
    /// CPU seconds per wall second of the server and of this process since the last call.
    fn sample(&mut self) -> (Option<f64>, Option<f64>) {
        use crate::procfs::CpuSample;
        let utilisation = |now: &CpuSample, last: &CpuSample| {
            let (cpu, wall) = now.since(last);
            crate::stats::round3(crate::stats::ratio(cpu, wall))
        };
        let mut server = None;
        if !self.server_pids.is_empty() {
            // A server that exited has no more CPU to report; the cell stays empty.
            let now = CpuSample::take_all(&self.server_pids).ok().flatten();
            server = now.as_ref().zip(self.last_server.as_ref()).map(|(n, l)| utilisation(n, l));
            self.last_server = now;
        }
        let mut client = None;
        if self.client {
            let now = CpuSample::take(None).ok();
            client = now.as_ref().zip(self.last_client.as_ref()).map(|(n, l)| utilisation(n, l));
            self.last_client = now;
        }
        (server, client)
    }
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

    /// Applies one line of the child protocol (`go`, `end N`, `stop`; anything else is
    /// ignored), whether it came on a child process's stdin or from the parent to a thread.
    pub(crate) fn apply(&self, line: &str) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next().and_then(|n| n.parse::<u64>().ok())) {
            (Some("go"), _) => self.go.store(true, Ordering::Relaxed),
            (Some("end"), Some(n)) => self.end.store(n, Ordering::Release),
            (Some("stop"), _) => self.stop.store(true, Ordering::Relaxed),
            _ => {}
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
#[derive(Clone, Copy, Debug, PartialEq)]
enum Output {
    /// `\r`-rewritten line on stderr.
    Terminal,
    /// A plain line on stderr every few seconds.
    Plain,
    /// Progress lines for the parent on stdout.
    Child,
}

impl Output {
    /// The one rule for what a run shows: a child speaks the protocol; the live line (and the
    /// connect phases' bar) needs `live` (no `--json`) and both stderr and stdout on a terminal,
    /// so that a pipe or a log never gets rewritten lines; anything else gets plain lines.
    fn choose(child: bool, live: bool, stderr_terminal: bool, stdout_terminal: bool) -> Output {
        if child {
            Output::Child
        } else if live && stderr_terminal && stdout_terminal {
            Output::Terminal
        } else {
            Output::Plain
        }
    }
}

/// The connect phases' bar: `[   3s] connecting [#####>----] 6000/15000 open (2000/s, ETA 4s)`
/// (`{rate}`: [`bar_style`]'s whole connections per second; indicatif's own `{per_sec}` has four
/// decimals, which would make the line wrap on an 80-column terminal).
const BAR_TEMPLATE: &str = "{msg} [{bar:25}] {pos}/{len} open ({rate}, ETA {eta})";

/// The bar's style: [`BAR_TEMPLATE`] with its `{rate}`.
fn bar_style() -> Result<ProgressStyle, indicatif::style::TemplateError> {
    let rate = |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
        let _ = write!(out, "{:.0}/s", state.per_sec());
    };
    Ok(ProgressStyle::with_template(BAR_TEMPLATE)?.with_key("rate", rate).progress_chars("#>-"))
}

/// The bar's message: the status line's prefix (time and phase), so both read alike.
fn bar_message(phase: &str, t_s: f64) -> String {
    format!("[{t_s:>5.0}s] {phase}")
}

struct Progress {
    output: Output,
    start: Instant,
    next: Instant,
    last_print: Instant,
    last_ops: u64,
    last_sent: u64,
    last_errors: u64,
    last_at: Instant,
    cpu: CpuWatch,
    phase: &'static str,
    series: Vec<Sample>,
    line_shown: bool,
    /// The connection count being opened towards, while a mode connects.
    target: Option<u64>,
    /// The bar shown for `target` (on a terminal only).
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Shows, moves or removes the connect bar (terminal only) to match `target`; the bar's
    /// position is updated every turn (an atomic store; indicatif limits the redraws itself).
    fn update_bar(&mut self, open: u64, now: Instant) {
        if self.output != Output::Terminal {
            return;
        }
        match (self.target, &self.bar) {
            (Some(target), Some(bar)) => {
                bar.set_length(target);
                bar.set_position(open);
            }
            (Some(target), None) => {
                if std::mem::take(&mut self.line_shown) {
                    eprint!("\r\x1b[K");
                }
                let bar = ProgressBar::with_draw_target(Some(target), ProgressDrawTarget::stderr());
                if let Ok(style) = bar_style() {
                    bar.set_style(style);
                }
                bar.set_message(bar_message(self.phase, now.duration_since(self.start).as_secs_f64()));
                bar.set_position(open);
                self.bar = Some(bar);
            }
            (None, Some(_)) => self.clear_bar(),
            (None, None) => {}
        }
    }

    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A mode's view of the run.
pub(crate) struct Ctl {
    flags: Flags,
    child: bool,
    /// A loop of `--threads`: where its protocol lines go (a child process prints them).
    lines: Option<Sender<String>>,
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
        let output =
            Output::choose(child, live, std::io::stderr().is_terminal(), std::io::stdout().is_terminal());
        if output == Output::Child {
            spawn_command_reader(flags.clone());
        }
        Ctl::with(flags, child, output)
    }

    fn with(flags: Flags, child: bool, output: Output) -> Self {
        let now = Instant::now();
        Ctl {
            flags,
            child,
            lines: None,
            progress: RefCell::new(Progress {
                output,
                start: now,
                next: now + Duration::from_secs(1),
                last_print: now,
                last_ops: 0,
                last_sent: 0,
                last_errors: 0,
                last_at: now,
                cpu: CpuWatch::default(),
                phase: "starting",
                series: Vec::new(),
                line_shown: false,
                target: None,
                bar: None,
            }),
        }
    }

    /// For one loop of `--threads`: a child whose protocol lines go to `lines` and whose
    /// commands arrive as `flags` set by the parent (no signal handler, no stdin).
    pub(crate) fn for_thread(flags: Flags, lines: Sender<String>) -> Self {
        let mut ctl = Ctl::with(flags, true, Output::Child);
        ctl.lines = Some(lines);
        ctl
    }

    /// Flags for a loop of `--threads`, before the barrier.
    pub(crate) fn thread_flags() -> Flags {
        Flags::new(true)
    }

    /// One line of the child protocol to the parent: stdout, or the channel of a thread.
    fn say(&self, line: &str) {
        match &self.lines {
            Some(lines) => {
                let _ = lines.send(line.to_owned());
            }
            None => println!("{line}"),
        }
    }

    /// A child's report, the protocol's last line.
    pub(crate) fn report(&self, json: &str) {
        self.say(json);
    }

    /// Adds the CPU utilisation of `server_pids` (if any) and, with `client`, of this process to
    /// every sample of the series from now on.
    pub(crate) fn watch_cpu(&self, server_pids: &[u32], client: bool) {
        let mut p = self.progress.borrow_mut();
        p.cpu = CpuWatch { server_pids: server_pids.to_vec(), client, ..CpuWatch::default() };
        // The first sample's figures count from here.
        let _ = p.cpu.sample();
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
            self.say(&format!("{{\"ready\":{open}}}"));
        }
    }

    /// Tells the parent this child's measured window starts, `open` connections open (nothing
    /// outside child mode).
    pub(crate) fn measuring(&self, open: u64) {
        if self.child {
            self.say(&format!("{{\"measuring\":{open}}}"));
        }
    }

    /// Tells the parent this child's measured window is over, `ops` operations counted in it
    /// (nothing outside child mode). Call it right when the window ends, before closing.
    pub(crate) fn measured(&self, ops: u64) {
        if self.child {
            self.say(&format!("{{\"measured\":{ops}}}"));
        }
    }

    /// Names what the run is doing, for the status line; a steady phase (no connection count
    /// to reach: the bar, if any, gives way to the status line).
    pub(crate) fn phase(&self, phase: &'static str) {
        let mut p = self.progress.borrow_mut();
        p.phase = phase;
        p.target = None;
        p.clear_bar();
    }

    /// The phase "connecting", towards `target` connections open: a progress bar on a
    /// terminal until the next [`phase`](Self::phase) or [`target`](Self::target)`(None)`.
    pub(crate) fn connecting(&self, target: u64) {
        self.phase("connecting");
        self.target(Some(target));
    }

    /// The connection count being opened towards (`None`: none, a steady phase), for a mode
    /// whose count moves while it runs (a scenario's rising phases).
    pub(crate) fn target(&self, target: Option<u64>) {
        self.progress.borrow_mut().target = target;
    }

    /// Call every loop turn: `open` connections, `ops` operations so far. Samples once a second.
    pub(crate) fn tick(&self, open: u64, ops: u64) {
        self.tick_with(Tick { open, ops, sent: None, errors: None, recent: None });
    }

    /// [`tick`](Self::tick) with what the series and the live line show besides: messages sent
    /// and errors so far, and the latencies recorded in `recent` since the last sample.
    pub(crate) fn tick_with(&self, tick: Tick<'_>) {
        let now = Instant::now();
        let mut p = self.progress.borrow_mut();
        p.update_bar(tick.open, now);
        if now < p.next {
            return;
        }
        let Tick { open, ops, sent, errors, recent } = tick;
        // On a one-second grid from the start, so that a run of N seconds has its N samples
        // however late each turn comes (after a stall of more than a second, from now on).
        p.next += Duration::from_secs(1);
        if p.next <= now {
            p.next = now + Duration::from_secs(1);
        }
        let dt = now.duration_since(p.last_at).as_secs_f64();
        let per_s =
            |n: u64, last: u64| if dt > 0.0 { (n.saturating_sub(last) as f64 / dt).round() } else { 0.0 };
        let ops_per_s = per_s(ops, p.last_ops);
        let sent_per_s = sent.map(|n| per_s(n, p.last_sent));
        let errors_in = errors.map(|n| n.saturating_sub(p.last_errors));
        let t_s = now.duration_since(p.start).as_secs_f64();
        (p.last_ops, p.last_at) = (ops, now);
        p.last_sent = sent.unwrap_or(0);
        p.last_errors = errors.unwrap_or(0);
        let last = recent.as_ref().map(|r| r.summary());
        if let Some(recent) = recent {
            recent.clear();
        }
        let (p50_us, p99_us) = match last {
            Some(l) if l.count > 0 => (Some(l.p50_us), Some(l.p99_us)),
            _ => (None, None),
        };
        let (server_cpu, client_cpu) = p.cpu.sample();
        p.series.push(Sample {
            t_s: crate::stats::round3(t_s),
            open,
            sent_per_s,
            ops_per_s,
            p50_us,
            p99_us,
            errors: errors_in,
            server_cpu,
            client_cpu,
        });
        match p.output {
            Output::Child => {
                let line = format!("{{\"progress\":{{\"open\":{open},\"ops\":{ops}}}}}");
                self.say(&line);
            }
            Output::Terminal if p.bar.is_some() => {
                let message = bar_message(p.phase, t_s);
                if let Some(bar) = &p.bar {
                    bar.set_message(message);
                }
            }
            Output::Terminal => {
                let mut line = status_line(p.phase, t_s, open, ops, ops_per_s);
                if let (Some(errors), Some(last)) = (errors, last) {
                    line.push_str(&live_suffix(errors, &last, dt));
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
        p.clear_bar();
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
    format!("{}: {open} open, {ops} ops ({ops_per_s:.0}/s)", bar_message(phase, t_s))
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
            flags.apply(&line);
        }
        // The parent is gone or closed our stdin: finish.
        flags.stop.store(true, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_header_and_one_row_per_sample_with_empty_cells_for_absent_figures() {
        let series = [
            Sample { t_s: 1.001, open: 10, ops_per_s: 500.0, ..Sample::default() },
            Sample {
                t_s: 2.0,
                open: 10,
                sent_per_s: Some(510.0),
                ops_per_s: 505.0,
                p50_us: Some(85.5),
                p99_us: Some(210.0),
                errors: Some(2),
                server_cpu: Some(0.25),
                client_cpu: Some(0.5),
            },
        ];
        let mut out = Vec::new();
        write_csv(&mut out, &series).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, [CSV_HEADER, "1.001,10,,500,,,,,", "2,10,510,505,85.5,210,2,0.25,0.5"]);
        // The header names the JSON fields, in the same order.
        let json = serde_json::to_value(series[1]).unwrap();
        let fields: Vec<&String> = json.as_object().unwrap().keys().collect();
        let mut header: Vec<&str> = CSV_HEADER.split(',').collect();
        header.sort_unstable();
        let mut fields: Vec<&str> = fields.iter().map(|s| s.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(header, fields);
    }

    #[test]
    fn only_a_terminal_on_both_sides_without_json_gets_the_live_line_and_bar() {
        use Output::*;
        assert_eq!(Output::choose(false, true, true, true), Terminal);
        // `--json`, or stderr or stdout not a terminal: plain lines, never a bar.
        assert_eq!(Output::choose(false, false, true, true), Plain);
        assert_eq!(Output::choose(false, true, false, true), Plain);
        assert_eq!(Output::choose(false, true, true, false), Plain);
        // A child speaks the protocol whatever its descriptors are.
        assert_eq!(Output::choose(true, true, true, true), Child);
        assert_eq!(Output::choose(true, false, false, false), Child);
    }

    #[test]
    fn the_bar_reads_like_the_status_line() {
        assert!(bar_style().is_ok());
        assert_eq!(bar_message("connecting", 3.2), "[    3s] connecting");
        assert!(status_line("connecting", 3.2, 10, 10, 5.0).starts_with(&bar_message("connecting", 3.2)));
    }

    #[test]
    fn the_bar_follows_the_target_on_a_terminal_only() {
        for (output, drawn) in [(Output::Terminal, true), (Output::Plain, false), (Output::Child, false)] {
            let ctl = Ctl::with(Flags::new(false), false, output);
            ctl.connecting(100);
            ctl.tick(40, 40);
            let p = ctl.progress.borrow();
            assert_eq!(p.bar.as_ref().map(|b| (b.position(), b.length())), drawn.then_some((40, Some(100))));
            drop(p);
            ctl.phase("holding");
            assert!(ctl.progress.borrow().bar.is_none());
        }
    }

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
