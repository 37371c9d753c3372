//! `--procs K`: the parent runs K copies of itself (`--child`), each with a share of the
//! connections and of the source addresses, and merges their reports. Histograms come as
//! HdrHistogram V2 (base64), so the merged percentiles are exact.
//!
//! The children speak the protocol described in `ctl.rs`. The parent holds the barrier: once
//! every child is ready it says `go`, so all measure the same window. What concerns the server
//! or the machine as a whole it measures once itself: `connect`'s memory readings (taken after
//! the hold, with every child's connections open), the server's CPU over the measured window
//! (which ends when every child has said `measured`, before they close their connections),
//! and in `fanout` the publishing (the children only subscribe).

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use clap::Parser;

use crate::cli::{Cli, Mode};
use crate::ctl::{Ctl, Flags};
use crate::mode::{Extra, Report};
use crate::net::Sources;
use crate::probe::MemProbe;
use crate::procfs::Snapshot;
use crate::publish::{self, PublishStats};

/// A line from a child, or its end.
enum Line {
    Progress {
        open: u64,
        ops: u64,
    },
    Ready(u64),
    /// Echo: the child's measured window started.
    Measuring,
    /// The child's measured window ended (with this many operations).
    Measured(u64),
    Report(String),
    Eof,
}

fn parse_line(line: &str) -> Option<Line> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if let Some(p) = value.get("progress") {
        return Some(Line::Progress { open: p.get("open")?.as_u64()?, ops: p.get("ops")?.as_u64()? });
    }
    if let Some(n) = value.get("ready") {
        return Some(Line::Ready(n.as_u64().unwrap_or(0)));
    }
    if value.get("measuring").is_some() {
        return Some(Line::Measuring);
    }
    if let Some(n) = value.get("measured") {
        return Some(Line::Measured(n.as_u64().unwrap_or(0)));
    }
    value.get("mode").is_some().then(|| Line::Report(line.to_owned()))
}

/// `args` (without the program name) less `--name VALUE` / `--name=VALUE` for each of `with_value`
/// and `--name` for each of `flags`.
pub(crate) fn strip_args(args: &[String], with_value: &[&str], flags: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_next = false;
    for arg in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if flags.contains(&arg.as_str()) {
            continue;
        }
        if with_value.contains(&arg.as_str()) {
            skip_next = true;
            continue;
        }
        if with_value.iter().any(|name| arg.strip_prefix(name).is_some_and(|rest| rest.starts_with('='))) {
            continue;
        }
        out.push(arg.clone());
    }
    out
}

/// `n` split into `k` shares differing by at most one.
pub(crate) fn shares(n: usize, k: usize) -> Vec<usize> {
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

/// The source addresses of child `i` of `k`: contiguous slices, or one address each (shared
/// round-robin) when there are fewer addresses than children.
pub(crate) fn source_slice(sources: &Sources, i: usize, k: usize) -> Option<String> {
    let addrs = sources.addrs();
    if addrs.is_empty() {
        return None;
    }
    let slice: Vec<String> = if addrs.len() >= k {
        let sizes = shares(addrs.len(), k);
        let start: usize = sizes[..i].iter().sum();
        addrs[start..start + sizes[i]].iter().map(|a| a.to_string()).collect()
    } else {
        vec![addrs[i % addrs.len()].to_string()]
    };
    Some(slice.join(","))
}

/// How the parent reaches one child: a process (`--procs`) or a thread (`--threads`).
enum Link {
    Process { process: Child, stdin: Option<ChildStdin> },
    Thread { flags: Flags, handle: Option<std::thread::JoinHandle<()>> },
}

struct Kid {
    link: Link,
    heard: Heard,
}

/// What the parent heard from one child.
#[derive(Default)]
struct Heard {
    ready: Option<u64>,
    open: u64,
    ops: u64,
    measuring: bool,
    /// Operations counted in its measured window, once that is over.
    measured: Option<u64>,
    report: Option<String>,
    done: bool,
}

impl Heard {
    fn take(&mut self, line: Line) {
        match line {
            Line::Progress { open, ops } => (self.open, self.ops) = (open, ops),
            Line::Ready(open) => (self.ready, self.open) = (Some(open), open),
            Line::Measuring => self.measuring = true,
            Line::Measured(ops) => self.measured = Some(ops),
            Line::Report(report) => self.report = Some(report),
            Line::Eof => self.done = true,
        }
    }

    /// Its measured window has started (or it never will).
    fn window_started(&self) -> bool {
        self.measuring || self.window_ended()
    }

    /// Its measured window is over (or it never will be: it ended without saying).
    fn window_ended(&self) -> bool {
        self.measured.is_some() || self.done
    }
}

/// Whether the parent's measured window (the server's CPU) ends: when every child's has, not
/// at the first report, which a child sends only after closing its connections.
fn window_over<'a>(heard: impl IntoIterator<Item = &'a Heard>) -> bool {
    heard.into_iter().all(Heard::window_ended)
}

/// Echo: whether the parent's window starts (every child is measuring), so that it is as long
/// as each child's.
fn window_begun<'a>(heard: impl IntoIterator<Item = &'a Heard>) -> bool {
    heard.into_iter().all(Heard::window_started)
}

impl Kid {
    /// A command of the child protocol: written to a process's stdin, or set in a thread's
    /// flags (what a child process's stdin reader would do).
    fn say(&mut self, line: &str) {
        match &mut self.link {
            Link::Process { stdin: Some(stdin), .. } => {
                if writeln!(stdin, "{line}").and_then(|()| stdin.flush()).is_err() {
                    self.link_lost();
                }
            }
            Link::Process { stdin: None, .. } => {}
            Link::Thread { flags, .. } => flags.apply(line),
        }
    }

    fn link_lost(&mut self) {
        if let Link::Process { stdin, .. } = &mut self.link {
            *stdin = None;
        }
    }

    /// Closes the command channel (a child process then stops) and waits for the child.
    fn wait(&mut self) {
        match &mut self.link {
            Link::Process { process, stdin } => {
                *stdin = None;
                let _ = process.wait();
            }
            Link::Thread { flags, handle } => {
                flags.stop.store(true, Ordering::Relaxed);
                if let Some(handle) = handle.take() {
                    let _ = handle.join();
                }
            }
        }
    }
}

/// Sends each protocol line of child `i` to the parent's loop, then its end.
fn forward(i: usize, lines: impl Iterator<Item = String>, tx: &mpsc::Sender<(usize, Line)>) {
    for line in lines {
        if let Some(parsed) = parse_line(&line) {
            if tx.send((i, parsed)).is_err() {
                return;
            }
        }
    }
    let _ = tx.send((i, Line::Eof));
}

/// One loop of `--threads`: runs `mode` (a child's arguments) with its own [`Ctl`] and sends
/// its report as the protocol's last line, as a child process would print it.
fn run_thread(mode: &Mode, ctl: &Ctl) -> io::Result<String> {
    crate::stats::export_histograms();
    crate::procfs::client_is_this_thread();
    let common = mode.common();
    let target = common.target().map_err(io::Error::other)?;
    let sources = Sources::new(common.sources.as_deref(), target.addr).map_err(io::Error::other)?;
    let json = match mode {
        Mode::Connect(args) => {
            serde_json::to_string(&crate::mode::connect::run(args, &target, sources, ctl)?)
        }
        Mode::Echo(args) => serde_json::to_string(&crate::mode::echo::run(args, &target, sources, ctl)?),
        Mode::Storm(args) => serde_json::to_string(&crate::mode::storm::run(args, &target, sources, ctl)?),
        Mode::Fanout(args) => serde_json::to_string(&crate::mode::fanout::run(args, &target, sources, ctl)?),
        // `main` runs a scenario in one loop; a child started with one runs it whole.
        Mode::Scenario(args) => {
            serde_json::to_string(&crate::mode::scenario::run(args, &target, sources, ctl)?)
        }
    };
    json.map_err(io::Error::other)
}

/// Runs `mode` over `procs` children, processes or (with `threads`) threads of this process,
/// and merges their reports.
pub(crate) fn run<R: Report>(mode: &Mode, procs: usize, threads: bool, ctl: &Ctl) -> io::Result<R> {
    let common = mode.common();
    let target = common.target().map_err(io::Error::other)?;
    let sources = Sources::new(common.sources.as_deref(), target.addr).map_err(io::Error::other)?;
    let (shard_option, total) = mode.shard_option();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut strip =
        vec!["--procs", "--threads", "--report", "--csv", "--server-pid", "--sources", shard_option];
    // `connect --rate` is the total: each child starts its share.
    let connect_rate = match mode {
        Mode::Connect(args) => args.rate.map(|rate| rate / procs as f64),
        _ => None,
    };
    if connect_rate.is_some() {
        strip.push("--rate");
    }
    // `echo --total-rate` is for all connections: every child gets the per-connection rate.
    let message_rate = match mode {
        Mode::Echo(args) => args.total_rate.map(|rate| rate / total.max(1) as f64),
        _ => None,
    };
    if message_rate.is_some() {
        strip.push("--total-rate");
    }
    let mut base = strip_args(&args, &strip, &["--json", "--child"]);
    if let Some(rate) = connect_rate {
        base.extend(["--rate".into(), rate.to_string()]);
    }
    if let Some(rate) = message_rate {
        base.extend(["--message-rate".into(), rate.to_string()]);
    }
    // Taken before any connection exists.
    let probe = match mode {
        Mode::Connect(_) => Some(MemProbe::before(&common.server_pid)?),
        _ => None,
    };
    let exe = std::env::current_exe()?;
    let (tx, rx) = mpsc::channel::<(usize, Line)>();
    let mut kids = Vec::with_capacity(procs);
    for (i, share) in shares(total, procs).into_iter().enumerate() {
        let mut child_args = base.clone();
        child_args.extend(["--child".into(), shard_option.into(), share.to_string()]);
        if let Some(slice) = source_slice(&sources, i, procs) {
            child_args.extend(["--sources".into(), slice]);
        }
        if threads {
            let argv = std::iter::once("throng-load".to_owned()).chain(child_args);
            let child_mode =
                match Cli::try_parse_from(argv).map_err(|e| io::Error::other(e.to_string()))?.command {
                    crate::cli::Command::Run(mode) => mode,
                    crate::cli::Command::Compare(_) => return Err(io::Error::other("not a mode")),
                };
            let flags = Ctl::thread_flags();
            let (lines_tx, lines_rx) = mpsc::channel::<String>();
            let tx = tx.clone();
            std::thread::spawn(move || forward(i, lines_rx.into_iter(), &tx));
            let thread_flags = flags.clone();
            let handle = std::thread::Builder::new().name(format!("loop-{i}")).spawn(move || {
                let ctl = Ctl::for_thread(thread_flags, lines_tx);
                match run_thread(&child_mode, &ctl) {
                    Ok(json) => ctl.report(&json),
                    Err(e) => eprintln!("throng-load: loop {i}: {e}"),
                }
            })?;
            kids.push(Kid { link: Link::Thread { flags, handle: Some(handle) }, heard: Heard::default() });
            continue;
        }
        let mut process = Command::new(&exe)
            .args(&child_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = process.stdout.take().ok_or_else(|| io::Error::other("no child stdout"))?;
        let tx = tx.clone();
        std::thread::spawn(move || forward(i, BufReader::new(stdout).lines().map_while(Result::ok), &tx));
        let stdin = process.stdin.take();
        kids.push(Kid { link: Link::Process { process, stdin }, heard: Heard::default() });
    }
    drop(tx);

    let pids = &common.server_pid;
    let mut go_at: Option<Instant> = None;
    let mut all_ready_at: Option<Instant> = None;
    let mut window: (Option<Snapshot>, Option<Snapshot>) = (None, None);
    let mut mem = None;
    let mut publisher: Option<std::thread::JoinHandle<PublishStats>> = None;
    let mut publish_stats = None;
    let mut stop_sent = false;
    // The children's `open` sums to `total` connections, except in storm (its connections
    // come and go: no count to reach).
    match mode {
        Mode::Storm(_) => ctl.phase("connecting"),
        _ => ctl.connecting(total as u64),
    }
    while kids.iter().any(|k| !k.heard.done) {
        if let Ok((i, line)) = rx.recv_timeout(Duration::from_millis(50)) {
            kids[i].heard.take(line);
        }
        let now = Instant::now();
        if ctl.stopped() && !stop_sent {
            stop_sent = true;
            kids.iter_mut().for_each(|k| k.say("stop"));
        }
        let all_ready = kids.iter().all(|k| k.heard.ready.is_some() || k.heard.done);
        if all_ready && all_ready_at.is_none() {
            all_ready_at = Some(now);
            ctl.phase(if matches!(mode, Mode::Connect(_)) { "holding" } else { "starting" });
        }
        if let (Some(ready_at), None) = (all_ready_at, go_at) {
            // `connect` holds before the barrier; every other mode starts at once.
            let hold = match mode {
                Mode::Connect(args) if !ctl.stopped() => args.hold,
                _ => Duration::ZERO,
            };
            if now >= ready_at + hold || ctl.stopped() {
                if let (Mode::Connect(args), Some(probe)) = (mode, &probe) {
                    let open = kids.iter().map(|k| k.heard.ready.unwrap_or(0)).sum();
                    mem = Some(probe.after(open, args.smaps_top)?);
                }
                // Echo's window starts after the warm-up, when the children say so.
                if matches!(mode, Mode::Storm(_) | Mode::Fanout(_)) {
                    window.0 = Some(Snapshot::take(pids)?);
                }
                if let Mode::Fanout(args) = mode {
                    if !ctl.stopped() {
                        let plan = crate::mode::fanout::plan(args).map_err(io::Error::other)?;
                        let stop = ctl.flags().stop.clone();
                        publisher = Some(std::thread::spawn(move || publish::run(&plan, &stop)));
                    }
                }
                kids.iter_mut().for_each(|k| k.say("go"));
                go_at = Some(now);
                ctl.phase("running");
            }
        }
        if go_at.is_some() {
            if publisher.as_ref().is_some_and(|p| p.is_finished()) {
                if let Some(handle) = publisher.take() {
                    let stats =
                        handle.join().map_err(|_| io::Error::other("the publisher thread panicked"))?;
                    let line = format!("end {}", stats.accepted);
                    kids.iter_mut().for_each(|k| k.say(&line));
                    publish_stats = Some(stats);
                }
            }
            // The window is the children's: it ends when the last one's has (each says so
            // before closing its connections, whose work is not the window's).
            let heard = || kids.iter().map(|k| &k.heard);
            if window.0.is_none() && matches!(mode, Mode::Echo(_)) && window_begun(heard()) {
                window.0 = Some(Snapshot::take(pids)?);
            }
            if window.0.is_some() && window.1.is_none() && window_over(heard()) {
                window.1 = Some(Snapshot::take(pids)?);
            }
        }
        let open = kids.iter().map(|k| k.heard.open).sum();
        let ops = kids.iter().map(|k| k.heard.ops).sum();
        ctl.tick(open, ops);
    }
    for kid in &mut kids {
        kid.wait();
    }

    let mut merged: Option<R> = None;
    let mut missing = 0;
    for kid in &kids {
        let Some(text) = &kid.heard.report else {
            missing += 1;
            continue;
        };
        let report: R =
            serde_json::from_str(text).map_err(|e| io::Error::other(format!("child report: {e}")))?;
        match &mut merged {
            Some(m) => m.merge(report),
            None => merged = Some(report),
        }
    }
    let mut merged = merged.ok_or_else(|| io::Error::other("no child process reported"))?;
    if missing > 0 {
        eprintln!(
            "throng-load: {missing} of {procs} processes did not report; their connections are not counted"
        );
        merged.run_info().interrupted = true;
    }
    merged.run_info().series.clear();
    if let Some(mem) = mem {
        merged.apply(Extra::Mem(mem));
    }
    if let (Some(start), Some(end)) = window {
        merged.apply(Extra::Window(start, end));
    }
    if let Some(stats) = publish_stats {
        merged.apply(Extra::Publish(stats));
    }
    merged.run_info().interrupted |= ctl.stopped();
    merged.finish();
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn child_arguments() {
        let args = strings(&[
            "connect",
            "ws://127.0.0.1:9/",
            "--conns",
            "50000",
            "--procs=3",
            "--json",
            "--hold",
            "5s",
            "--server-pid",
            "1,2,3",
            "--sources=127.0.0.2-127.0.0.9",
            "--report",
            "r.html",
        ]);
        let out =
            strip_args(&args, &["--procs", "--report", "--server-pid", "--sources", "--conns"], &["--json"]);
        assert_eq!(out, strings(&["connect", "ws://127.0.0.1:9/", "--hold", "5s"]));
    }

    #[test]
    fn shares_and_source_slices() {
        assert_eq!(shares(50_000, 3), [16_667, 16_667, 16_666]);
        assert_eq!(shares(2, 3), [1, 1, 0]);
        let target = "127.0.0.1:9".parse().unwrap();
        let sources = Sources::new(Some("127.0.0.2-127.0.0.8"), target).unwrap();
        let slices: Vec<_> = (0..3).map(|i| source_slice(&sources, i, 3).unwrap()).collect();
        assert_eq!(slices, ["127.0.0.2,127.0.0.3,127.0.0.4", "127.0.0.5,127.0.0.6", "127.0.0.7,127.0.0.8"]);
        let one = Sources::new(Some("127.0.0.2"), target).unwrap();
        assert_eq!(source_slice(&one, 2, 3).unwrap(), "127.0.0.2");
        assert_eq!(source_slice(&Sources::default(), 0, 3), None);
    }

    #[test]
    fn child_lines() {
        assert!(matches!(
            parse_line(r#"{"progress":{"open":3,"ops":9}}"#),
            Some(Line::Progress { open: 3, ops: 9 })
        ));
        assert!(matches!(parse_line(r#"{"ready":12}"#), Some(Line::Ready(12))));
        assert!(matches!(parse_line(r#"{"measuring":12}"#), Some(Line::Measuring)));
        assert!(matches!(parse_line(r#"{"measured":150000}"#), Some(Line::Measured(150_000))));
        assert!(matches!(parse_line(r#"{"mode":"echo","conns":1}"#), Some(Line::Report(_))));
        assert!(parse_line("dial: 1/1").is_none());
    }

    /// The parent's window (the server's CPU) follows the children's `measuring` and `measured`
    /// lines; a report, sent only after the child closed its connections, is too late to end it.
    #[test]
    fn window_ends_when_every_child_has_measured() {
        let mut kids = [Heard::default(), Heard::default()];
        let lines = |kids: &[Heard; 2]| (window_begun(kids), window_over(kids));
        kids[0].take(Line::Ready(100));
        kids[1].take(Line::Ready(100));
        assert_eq!(lines(&kids), (false, false));
        kids[0].take(parse_line(r#"{"measuring":100}"#).unwrap());
        assert_eq!(lines(&kids), (false, false), "one child still warming up");
        kids[1].take(parse_line(r#"{"measuring":100}"#).unwrap());
        assert_eq!(lines(&kids), (true, false));
        kids[0].take(parse_line(r#"{"measured":75000}"#).unwrap());
        kids[0].take(parse_line(r#"{"mode":"fanout","deliveries":75000}"#).unwrap());
        assert_eq!(lines(&kids), (true, false), "child 1 is still in its window");
        kids[1].take(parse_line(r#"{"measured":75000}"#).unwrap());
        assert_eq!(lines(&kids), (true, true));

        // A child that ends without saying (it failed) does not hold the window open.
        let mut kids = [Heard::default(), Heard::default()];
        kids[0].take(Line::Measured(10));
        kids[1].take(Line::Eof);
        assert_eq!(lines(&kids), (true, true));
    }
}
