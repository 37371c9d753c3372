//! `throng-load compare --server NAME=CMD … -- MODE ARGS…`: the same run against several
//! servers, one after the other, in `--rounds` rounds, and one table of the results.
//!
//! For each server: a free loopback port is chosen (and a second one for `{admin}`), `sh -c
//! CMD` is started in a process group of its own with the ports in `$PORT` and `$ADMIN_PORT`
//! (and in place of `{port}` and `{admin}` in CMD), pinned with `--server-cpu`; once the port
//! listens, the server's fresh RSS is read, then `throng-load MODE ARGS… --server-pid PIDS
//! --json` runs as a child process, pinned with `--client-cpu` (PIDS: every process of the
//! server's group, so the server's CPU per operation and memory per connection are measured
//! whatever `sh` forks). Then the group gets SIGTERM, and SIGKILL after a grace period.
//!
//! The target: `{port}`, `{admin}`, `{url}`, `{name}` and `{round}` in MODE ARGS are replaced
//! by the server's port, admin port, URL, name and the round; when no argument holds `{port}`
//! or `{url}`, the URL is inserted as the mode's URL.

use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Cli, Command as CliCommand, CompareArgs, Cpus};
use crate::stats::fmt_us;

/// Replaced by the server's port in MODE ARGS and CMD.
const PORT: &str = "{port}";
/// Replaced by a second free port in MODE ARGS and CMD (a gateway's admin listener).
const ADMIN: &str = "{admin}";
/// Replaced by the server's URL in MODE ARGS: `ws://127.0.0.1:PORT/`, or
/// `wss://localhost:PORT/` when the run has `--ca-file` (the name test certificates are for).
const URL: &str = "{url}";
/// Replaced by the server's name in MODE ARGS (e.g. `--csv run-{name}.csv`).
const NAME: &str = "{name}";
/// Replaced by the round (from 1) in MODE ARGS.
const ROUND: &str = "{round}";
/// How often a starting server, a run and a stopping server are checked.
const POLL: Duration = Duration::from_millis(50);
/// Between a server listening and its fresh RSS being read: its start-up may still be
/// touching memory after `listen`.
const SETTLE: Duration = Duration::from_millis(300);

/// Options `compare` sets itself on each run.
const RESERVED: [&str; 3] = ["--server-pid", "--json", "--child"];

/// What one run measured (each `None` when the mode or the run did not give it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Figures {
    /// The mode's operations per second (as `--threshold rate` sees it).
    rate: Option<f64>,
    /// The mode's main latency (as `--threshold p50`/`p99` see it), microseconds.
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    /// The server's CPU microseconds per operation over the measured window.
    server_cpu_us_per_op: Option<f64>,
    /// The client's (the run's) CPU microseconds per operation over the same window.
    client_cpu_us_per_op: Option<f64>,
    /// `connect`: the growth of the server's RSS per connection held, bytes.
    server_rss_bytes_per_conn: Option<f64>,
    /// The server's RSS right after it listened, before any connection, KiB.
    fresh_rss_kib: Option<f64>,
    /// Of that, the KiB resident in io_uring ring mappings (0 without a ring).
    ring_kib: Option<f64>,
    /// Bytes through the client's sockets per data message received (frame headers and
    /// compression included).
    wire_bytes_per_msg: Option<f64>,
    /// The share of TLS handshakes that were resumptions (`null` without TLS).
    tls_resumed_share: Option<f64>,
}

impl Figures {
    /// The figures of a run's JSON report (fresh RSS and ring are the server's, set apart).
    fn of(report: &Value) -> Figures {
        let number = |path: &str| path.split('.').fold(report, |v, key| &v[key]).as_f64();
        let measured = number("metrics.latency.count").is_some_and(|n| n > 0.0);
        let messages = number("traffic.messages_received").filter(|&n| n > 0.0);
        let handshakes = number("traffic.tls_handshakes").filter(|&n| n > 0.0);
        Figures {
            rate: number("metrics.rate"),
            p50_us: number("metrics.latency.p50_us").filter(|_| measured),
            p99_us: number("metrics.latency.p99_us").filter(|_| measured),
            server_cpu_us_per_op: number("cpu.server.us_per_op"),
            client_cpu_us_per_op: number("cpu.client.us_per_op"),
            server_rss_bytes_per_conn: number("server.rss_bytes_per_conn"),
            wire_bytes_per_msg: number("traffic.wire_bytes_received")
                .zip(messages)
                .map(|(bytes, n)| (bytes / n).floor()),
            tls_resumed_share: number("traffic.tls_resumed")
                .zip(handshakes)
                .map(|(resumed, n)| crate::stats::round3(resumed / n)),
            ..Figures::default()
        }
    }

    /// Each figure's median over `runs` (runs without it left out).
    fn median(runs: &[&Figures]) -> Figures {
        let m = |get: fn(&Figures) -> Option<f64>| median(runs.iter().filter_map(|f| get(f)).collect());
        Figures {
            rate: m(|f| f.rate),
            p50_us: m(|f| f.p50_us),
            p99_us: m(|f| f.p99_us),
            server_cpu_us_per_op: m(|f| f.server_cpu_us_per_op),
            client_cpu_us_per_op: m(|f| f.client_cpu_us_per_op),
            server_rss_bytes_per_conn: m(|f| f.server_rss_bytes_per_conn),
            fresh_rss_kib: m(|f| f.fresh_rss_kib),
            ring_kib: m(|f| f.ring_kib),
            wire_bytes_per_msg: m(|f| f.wire_bytes_per_msg),
            tls_resumed_share: m(|f| f.tls_resumed_share),
        }
    }
}

/// The median (the mean of the middle two for an even count); `None` for no value.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// One round against one server.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    /// From 1.
    round: u32,
    port: u16,
    /// The run's exit status (`null` when it did not run or was killed by a signal).
    exit_code: Option<i32>,
    /// The server started and the run met its checks and thresholds.
    ok: bool,
    /// Why there are no figures (the server did not start, the run printed no report).
    error: Option<String>,
    #[serde(flatten)]
    figures: Figures,
    /// The run's whole JSON report.
    report: Value,
}

impl Run {
    /// The table's result cell; also what ranks a server's runs (the worst one speaks).
    fn result(&self) -> (u8, String) {
        match (&self.error, self.exit_code) {
            (Some(_), _) => (4, "error".to_owned()),
            (None, Some(0)) => (0, "ok".to_owned()),
            (None, Some(4)) => (1, "threshold failed".to_owned()),
            (None, Some(code)) => (2, format!("failed (exit {code})")),
            (None, None) => (3, "killed".to_owned()),
        }
    }
}

/// One server's result: its runs, and the medians of their figures.
#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    name: String,
    command: String,
    /// The port of its last run.
    port: u16,
    /// The exit status of its worst run (see [`Run::result`]).
    exit_code: Option<i32>,
    /// Every run met its checks and thresholds.
    ok: bool,
    /// The first run's error, if any.
    error: Option<String>,
    /// The medians over the runs.
    #[serde(flatten)]
    figures: Figures,
    /// The last run's whole JSON report.
    report: Value,
    /// Every round's run, in round order.
    runs: Vec<Run>,
}

impl Entry {
    fn new(name: &str, command: &str, runs: Vec<Run>) -> Entry {
        let worst = runs.iter().max_by_key(|r| r.result().0);
        let figures: Vec<&Figures> = runs.iter().map(|r| &r.figures).collect();
        Entry {
            name: name.to_owned(),
            command: command.to_owned(),
            port: runs.last().map_or(0, |r| r.port),
            exit_code: worst.and_then(|r| r.exit_code),
            ok: !runs.is_empty() && runs.iter().all(|r| r.ok),
            error: runs.iter().find_map(|r| r.error.clone()),
            figures: Figures::median(&figures),
            report: runs.last().map_or(Value::Null, |r| r.report.clone()),
            runs,
        }
    }

    fn result(&self) -> String {
        self.runs.iter().map(Run::result).max_by_key(|r| r.0).map_or_else(|| "not run".to_owned(), |r| r.1)
    }
}

/// What the placeholders of MODE ARGS stand for in one run.
pub(crate) struct Place<'a> {
    name: &'a str,
    port: u16,
    admin: u16,
    round: u32,
}

/// The arguments of the run (without the program name): MODE ARGS and `extra` (the server's
/// own), placeholders replaced, the URL inserted unless an argument places it.
pub(crate) fn run_args(run: &[String], extra: &[String], place: &Place<'_>) -> Vec<String> {
    let all = || run.iter().chain(extra);
    let has_url = all().any(|arg| arg.contains(PORT) || arg.contains(URL));
    let url = if all().any(|arg| arg == "--ca-file" || arg.starts_with("--ca-file=")) {
        format!("wss://localhost:{}/", place.port)
    } else {
        format!("ws://127.0.0.1:{}/", place.port)
    };
    let mut out = Vec::with_capacity(run.len() + extra.len() + 1);
    for (i, arg) in all().enumerate() {
        out.push(
            arg.replace(URL, &url)
                .replace(PORT, &place.port.to_string())
                .replace(ADMIN, &place.admin.to_string())
                .replace(NAME, place.name)
                .replace(ROUND, &place.round.to_string()),
        );
        if i == 0 && !has_url {
            out.push(url.clone());
        }
    }
    out
}

/// The server `name`'s own throng-load arguments (`--server-args`).
fn own_args(args: &CompareArgs, name: &str) -> Vec<String> {
    (args.server_args.iter())
        .filter(|(n, _)| n == name)
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned))
        .collect()
}

/// Checks MODE ARGS (with a server's own arguments) before any server is started: they must
/// parse as a mode's command line.
fn check_run(run: &[String], extra: &[String]) -> Result<(), String> {
    let reserved = |arg: &&String| RESERVED.iter().any(|r| arg.split('=').next() == Some(*r));
    if let Some(arg) = run.iter().chain(extra).find(reserved) {
        return Err(format!("compare: {arg} is set by compare itself; leave it out of MODE ARGS"));
    }
    let args = run_args(run, extra, &Place { name: "name", port: 1, admin: 2, round: 1 });
    let mut line = vec!["throng-load".to_owned()];
    line.extend(args);
    match Cli::try_parse_from(&line) {
        Ok(Cli { command: CliCommand::Run(_) }) => Ok(()),
        Ok(_) => Err("compare: MODE is one of connect, echo, storm, fanout, scenario".to_owned()),
        Err(e) => Err(format!("compare: MODE ARGS: {}", e.render())),
    }
}

/// Checks the whole command line: every server's runs parse, `--server-args` names a server.
fn check(args: &CompareArgs) -> Result<(), String> {
    for (name, _) in &args.server_args {
        if !args.servers.iter().any(|(n, _)| n == name) {
            return Err(format!("compare: --server-args {name}=…: no --server named {name}"));
        }
    }
    for (name, _) in &args.servers {
        check_run(&args.run, &own_args(args, name))?;
    }
    Ok(())
}

/// Round `round`'s order of `n` servers (indices): turned by one each round, so that none
/// always runs first (after a fresh port's quiet) or last.
pub(crate) fn order(n: usize, round: u32) -> Vec<usize> {
    (0..n).map(|k| (k + round as usize - 1) % n).collect()
}

/// `throng-load compare`.
pub(crate) fn main(args: &CompareArgs) -> ExitCode {
    if let Err(message) = check(args) {
        eprintln!("throng-load: {message}");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("throng-load: compare: own executable: {e}");
            return ExitCode::from(1);
        }
    };
    // Unlike a run's, a second signal does not end compare at once: it would leave the server's
    // process group running. Stopping is bounded anyway (the run's child is told to stop, the
    // group gets SIGKILL after --stop-grace); `timeout`, for one, signals its whole group, so
    // compare gets two at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    let mut runs: Vec<Vec<Run>> = args.servers.iter().map(|_| Vec::new()).collect();
    'rounds: for round in 1..=args.rounds {
        for i in order(args.servers.len(), round) {
            if stop.load(Ordering::Relaxed) {
                break 'rounds;
            }
            let (name, command) = &args.servers[i];
            eprintln!("throng-load: compare: round {round}/{}: {name}: sh -c {command:?}", args.rounds);
            let run = compare_one(args, &exe, name, command, round, &stop);
            if let Some(error) = &run.error {
                eprintln!("throng-load: compare: {name}: {error}");
            }
            runs[i].push(run);
        }
    }
    let entries: Vec<Entry> = (args.servers.iter().zip(runs))
        .map(|((name, command), runs)| Entry::new(name, command, runs))
        .collect();
    let rows = table(&entries);
    let rounds =
        if args.rounds > 1 { format!(" (medians of {} rounds)", args.rounds) } else { String::new() };
    println!("== compare: {}{rounds} ==", args.run.join(" "));
    print_columns(&rows);
    if stop.load(Ordering::Relaxed) {
        println!("  (interrupted)");
    }
    if let Some(path) = &args.report {
        match crate::html::write_compare(path, &args.run.join(" "), &rows, &charts(&entries)) {
            Ok(()) => println!("  report: {}", path.display()),
            Err(e) => eprintln!("throng-load: writing {}: {e}", path.display()),
        }
    }
    let ok = entries.iter().all(|e| e.ok) && !stop.load(Ordering::Relaxed);
    if let Some(path) = &args.json {
        let value =
            serde_json::json!({ "mode": "compare", "rounds": args.rounds, "servers": entries, "ok": ok });
        if path.as_os_str() == "-" {
            println!("{value}");
        } else if let Err(e) = std::fs::write(path, format!("{value}\n")) {
            eprintln!("throng-load: writing {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    let failed = |r: &Run| r.error.is_some() || !matches!(r.exit_code, Some(0) | Some(4));
    if entries.iter().flat_map(|e| &e.runs).any(failed) || stop.load(Ordering::Relaxed) {
        ExitCode::from(1)
    } else if !ok {
        ExitCode::from(crate::THRESHOLD_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Starts server `name`, runs the mode against it, stops it.
fn compare_one(
    args: &CompareArgs,
    exe: &Path,
    name: &str,
    command: &str,
    round: u32,
    stop: &AtomicBool,
) -> Run {
    let mut run = Run {
        round,
        port: 0,
        exit_code: None,
        ok: false,
        error: None,
        figures: Figures::default(),
        report: Value::Null,
    };
    let mut fresh = Figures::default();
    let outcome = free_ports().and_then(|(port, admin)| {
        run.port = port;
        let command = command.replace(PORT, &port.to_string()).replace(ADMIN, &admin.to_string());
        let mut server =
            pinned(args.server_cpu.as_ref(), || Server::start(&command, port, admin, args.stop_grace))
                .map_err(|e| format!("starting: {e}"))?;
        server.wait_listening(port, args.start_timeout)?;
        let pids = server.pids();
        let kib = |each: fn(u32) -> io::Result<u64>| {
            pids.iter().map(|&pid| each(pid)).sum::<io::Result<u64>>().ok().map(|k| k as f64)
        };
        fresh.fresh_rss_kib = kib(|pid| crate::procfs::Mem::take(pid).map(|m| m.rss_kib));
        fresh.ring_kib = kib(crate::procfs::ring_kib);
        let place = Place { name, port, admin, round };
        let run_args = run_args(&args.run, &own_args(args, name), &place);
        let during = args.during.as_deref().map(|cmd| start_during(cmd, &pids, name, round));
        let result = pinned(args.client_cpu.as_ref(), || spawn_child(exe, &run_args, &pids))
            .and_then(|child| wait_child(child, stop));
        if let Some(during) = during {
            match during.and_then(|mut child| child.wait()) {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!("throng-load: compare: {name}: --during ended with {status}"),
                Err(e) => eprintln!("throng-load: compare: {name}: --during: {e}"),
            }
        }
        let stopped = server.stop();
        let (status, stdout) = result.map_err(|e| format!("running throng-load: {e}"))?;
        if let Some(how) = stopped {
            eprintln!("throng-load: compare: {name}: stopped ({how})");
        }
        Ok((status, stdout))
    });
    let (status, stdout) = match outcome {
        Ok(done) => done,
        Err(error) => {
            run.error = Some(error);
            return run;
        }
    };
    run.exit_code = status.code();
    // The run's table, under the server's name; the JSON line is kept for the comparison.
    if args.rounds > 1 {
        println!("== {name}, round {round} ==");
    } else {
        println!("== {name} ==");
    }
    let mut lines: Vec<&str> = stdout.lines().collect();
    let last = lines.pop().unwrap_or_default();
    for line in lines {
        println!("{line}");
    }
    match serde_json::from_str::<Value>(last) {
        Ok(report) => {
            run.figures = Figures {
                fresh_rss_kib: fresh.fresh_rss_kib,
                ring_kib: fresh.ring_kib,
                ..Figures::of(&report)
            };
            run.ok = run.exit_code == Some(0);
            run.report = report;
        }
        Err(_) => {
            println!("{last}");
            run.figures = fresh;
            run.error = Some(format!("the run printed no JSON report ({status})"));
        }
    }
    run
}

/// Runs `spawn` with this thread pinned to `cpus` (when given), then unpins it: a child
/// inherits its parent thread's CPU mask at fork, so everything it starts (`sh` and whatever
/// that forks) is pinned from its first instruction, without `taskset`.
fn pinned<T>(cpus: Option<&Cpus>, spawn: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let Some(Cpus(cpus)) = cpus else { return spawn() };
    let me = Pid::from_raw(0);
    let before = sched_getaffinity(me).map_err(io::Error::from)?;
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(|_| io::Error::other(format!("CPU {cpu}: beyond the CPU set")))?;
    }
    sched_setaffinity(me, &set).map_err(|e| io::Error::other(format!("pinning to CPUs {cpus:?}: {e}")))?;
    let result = spawn();
    sched_setaffinity(me, &before).map_err(io::Error::from)?;
    result
}

/// `sh -c CMD` beside a run, with the server's pids, the server's name and the round.
fn start_during(command: &str, pids: &[u32], name: &str, round: u32) -> io::Result<Child> {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let stderr = io::stderr().as_fd().try_clone_to_owned()?;
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("SERVER_PIDS", list.join(","))
        .env("NAME", name)
        .env("ROUND", round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .spawn()
}

/// Two loopback ports nothing listens on right now, the server's and its admin's (the
/// kernel's choice, both bound at once so that they differ; one could be taken again before
/// the server binds it, which then shows as the server not starting).
fn free_ports() -> Result<(u16, u16), String> {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("no free port: {e}"));
    let (a, b) = (bind()?, bind()?);
    let port =
        |l: &TcpListener| l.local_addr().map(|addr| addr.port()).map_err(|e| format!("no free port: {e}"));
    Ok((port(&a)?, port(&b)?))
}

/// A server under test: `sh -c CMD` leading a process group of its own.
struct Server {
    child: Child,
    grace: Duration,
    stopped: bool,
}

impl Server {
    /// Starts `sh -c command` with `PORT` and `ADMIN_PORT` set; its output goes to stderr, so
    /// that stdout keeps the tables and the JSON.
    fn start(command: &str, port: u16, admin: u16, grace: Duration) -> io::Result<Self> {
        let stderr = io::stderr().as_fd().try_clone_to_owned()?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("PORT", port.to_string())
            .env("ADMIN_PORT", admin.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr))
            .process_group(0)
            .spawn()?;
        Ok(Server { child, grace, stopped: false })
    }

    fn group(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits until something listens on `port`, at most `timeout`, then lets the server
    /// settle. Nothing connects to it: its fresh RSS is that of a server that never saw a
    /// connection.
    fn wait_listening(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stopped = true;
                return Err(format!("the server exited ({status}) before listening on port {port}"));
            }
            if crate::procfs::listening(port) {
                std::thread::sleep(SETTLE);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nothing listened on 127.0.0.1:{port} within {} (see --start-timeout)",
                    humantime::format_duration(timeout)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The live processes of the server's group.
    fn pids(&self) -> Vec<u32> {
        group_members(self.group().as_raw())
    }

    /// SIGTERM to the group; SIGKILL to what is left of it after the grace period. Returns how
    /// it ended (`None` when it had already).
    fn stop(&mut self) -> Option<String> {
        if std::mem::replace(&mut self.stopped, true) {
            return None;
        }
        let group = self.group();
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        let mut how = "SIGTERM";
        loop {
            // Reaping `sh` first: a zombie would count as a member.
            let _ = self.child.try_wait();
            if group_members(group.as_raw()).is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = killpg(group, Signal::SIGKILL);
                how = "SIGKILL after the grace period";
                break;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.wait();
        Some(how.to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The processes (not zombies) whose process group is `group`, from /proc.
fn group_members(group: i32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // After the command name in parentheses: state, ppid, pgrp.
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
            let mut fields = after.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
            state != Some("Z") && pgrp == Some(group)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Starts `throng-load ARGS --server-pid PIDS --json`; its stderr (the status line) is ours.
fn spawn_child(exe: &Path, args: &[String], pids: &[u32]) -> io::Result<Child> {
    let mut command = Command::new(exe);
    command.args(args);
    if !pids.is_empty() {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        command.arg("--server-pid").arg(list.join(","));
    }
    command.arg("--json").stdin(Stdio::null()).stdout(Stdio::piped()).spawn()
}

/// Waits for the run, keeping its stdout. Ctrl-C reaches it through the terminal; a SIGTERM
/// to `compare` is passed on.
fn wait_child(mut child: Child, stop: &AtomicBool) -> io::Result<(ExitStatus, String)> {
    let mut stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let mut told = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if stop.load(Ordering::Relaxed) && !std::mem::replace(&mut told, true) {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        std::thread::sleep(POLL);
    };
    let text = reader.join().unwrap_or_default();
    Ok((status, text))
}

/// The comparison table: a header row, then one row per server (its medians over the rounds).
fn table(entries: &[Entry]) -> Vec<Vec<String>> {
    let header = ["server", "rate/s", "p50", "p99", "server CPU/op", "client CPU/op", "server RSS/conn"];
    let mut rows = vec![header.into_iter().chain(["fresh RSS", "result"]).map(str::to_owned).collect()];
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let us = |v: Option<f64>| or_dash(v.map(|us| format!("{us:.2}µs")));
    for e in entries {
        let f = &e.figures;
        rows.push(vec![
            e.name.clone(),
            or_dash(f.rate.map(|r| format!("{r:.0}"))),
            or_dash(f.p50_us.map(fmt_us)),
            or_dash(f.p99_us.map(fmt_us)),
            us(f.server_cpu_us_per_op),
            us(f.client_cpu_us_per_op),
            or_dash(f.server_rss_bytes_per_conn.map(|b| format!("{b:.0} B"))),
            or_dash(f.fresh_rss_kib.map(|k| format!("{k:.0} KiB"))),
            e.result(),
        ]);
    }
    rows
}

/// Prints `rows` as aligned columns.
fn print_columns(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, &w)| format!("{cell:<w$}")).collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}

/// Per server: its run's per-second series.
fn charts(entries: &[Entry]) -> Vec<(String, Vec<crate::ctl::Sample>)> {
    entries
        .iter()
        .map(|e| {
            let series = serde_json::from_value(e.report["series"].clone()).unwrap_or_default();
            (e.name.clone(), series)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    const PLACE: Place<'static> = Place { name: "a", port: 4000, admin: 4001, round: 2 };

    #[test]
    fn the_url_is_inserted_unless_the_arguments_place_the_port() {
        let run = strings(&["echo", "--conns", "4", "--csv", "echo-{name}-{round}.csv"]);
        assert_eq!(
            run_args(&run, &[], &PLACE),
            strings(&["echo", "ws://127.0.0.1:4000/", "--conns", "4", "--csv", "echo-a-2.csv"])
        );
        let run = strings(&["echo", "ws://127.0.0.1:{port}/ws", "--conns", "4"]);
        assert_eq!(run_args(&run, &[], &PLACE), strings(&["echo", "ws://127.0.0.1:4000/ws", "--conns", "4"]));
        // `{url}` with a path and query; `{admin}` anywhere.
        let run =
            strings(&["fanout", "{url}ws?channels=d1", "--publish", "http://127.0.0.1:{admin}/v1/publish"]);
        assert_eq!(
            run_args(&run, &[], &PLACE),
            strings(&[
                "fanout",
                "ws://127.0.0.1:4000/ws?channels=d1",
                "--publish",
                "http://127.0.0.1:4001/v1/publish"
            ])
        );
    }

    #[test]
    fn a_server_with_a_ca_file_is_reached_over_tls_by_name() {
        let run = strings(&["storm", "--duration", "1s"]);
        let own = strings(&["--ca-file", "ca.pem"]);
        assert_eq!(
            run_args(&run, &own, &PLACE),
            strings(&["storm", "wss://localhost:4000/", "--duration", "1s", "--ca-file", "ca.pem"])
        );
        let run = strings(&["connect", "{url}ws", "--ca-file=ca.pem"]);
        assert_eq!(run_args(&run, &[], &PLACE)[1], "wss://localhost:4000/ws");
    }

    #[test]
    fn mode_arguments_are_checked_before_any_server_starts() {
        let check = |args: &[&str]| check_run(&strings(args), &[]);
        assert_eq!(check(&["echo", "--conns", "4"]), Ok(()));
        assert!(check(&["echo", "--conns", "x"]).unwrap_err().contains("--conns"));
        assert!(check(&["fly"]).is_err());
        assert!(check(&["echo", "--json"]).unwrap_err().contains("--json"));
        assert!(check(&["echo", "--server-pid=1"]).unwrap_err().contains("--server-pid"));
        // A URL of its own without `{port}` is one positional too many.
        assert!(check(&["echo", "ws://127.0.0.1:9/"]).is_err());
        // A server's own arguments are checked with MODE ARGS.
        assert!(check_run(&strings(&["echo"]), &strings(&["--conns", "x"])).unwrap_err().contains("--conns"));
        assert!(check_run(&strings(&["echo"]), &strings(&["--json"])).is_err());
    }

    #[test]
    fn the_order_turns_by_one_each_round() {
        assert_eq!([1, 2, 3, 4].map(|round| order(3, round)), [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]);
        assert_eq!(order(1, 5), [0]);
    }

    #[test]
    fn a_servers_figures_are_the_medians_of_its_runs_without_the_missing() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 10.0]), Some(3.0));
        let run =
            |rate: Option<f64>, rss: Option<f64>| Figures { rate, fresh_rss_kib: rss, ..Figures::default() };
        let runs = [run(Some(100.0), Some(900.0)), run(None, Some(1000.0)), run(Some(300.0), Some(950.0))];
        let m = Figures::median(&runs.iter().collect::<Vec<_>>());
        assert_eq!((m.rate, m.fresh_rss_kib, m.p50_us), (Some(200.0), Some(950.0), None));
    }

    #[test]
    fn a_reports_figures_are_read_from_its_json() {
        let report = serde_json::json!({
            "metrics": {"rate": 5000.0, "latency": {"count": 10, "p50_us": 80.0, "p99_us": 200.0}},
            "cpu": {"server": {"us_per_op": 6.5}, "client": {"us_per_op": 5.25}},
            "traffic": {"wire_bytes_received": 4100, "messages_received": 100, "tls_handshakes": 8, "tls_resumed": 6},
        });
        let f = Figures::of(&report);
        assert_eq!((f.rate, f.p50_us, f.p99_us), (Some(5000.0), Some(80.0), Some(200.0)));
        assert_eq!((f.server_cpu_us_per_op, f.client_cpu_us_per_op), (Some(6.5), Some(5.25)));
        assert_eq!(
            (f.wire_bytes_per_msg, f.tls_resumed_share, f.server_rss_bytes_per_conn),
            (Some(41.0), Some(0.75), None)
        );
        // No latency sample: no percentiles; no TLS handshake: no share.
        let f = Figures::of(
            &serde_json::json!({"metrics": {"latency": {"count": 0, "p50_us": 0.0}}, "traffic": {"tls_handshakes": 0}}),
        );
        assert_eq!((f.p50_us, f.tls_resumed_share), (None, None));
    }

    #[test]
    fn a_cpu_list_pins_what_is_spawned_and_the_thread_is_unpinned_after() {
        let me = Pid::from_raw(0);
        let before = sched_getaffinity(me).unwrap();
        let first = (0..CpuSet::count()).find(|&c| before.is_set(c).unwrap_or(false)).unwrap();
        let mask = pinned(Some(&Cpus(vec![first])), || {
            let child =
                Command::new("sh").args(["-c", "grep Cpus_allowed_list /proc/self/status"]).output()?;
            Ok(String::from_utf8_lossy(&child.stdout).into_owned())
        })
        .unwrap();
        assert_eq!(mask.split_whitespace().nth(1), Some(first.to_string().as_str()), "{mask}");
        assert_eq!(sched_getaffinity(me).unwrap(), before);
    }

    #[test]
    fn a_stopped_group_has_no_members_left() {
        let mut server = Server::start("sleep 30 & sleep 30", 9, 10, Duration::from_secs(5)).unwrap();
        // Both sleeps and (unless it exec'd the last one) sh.
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.pids().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(server.pids().len() >= 2, "{:?}", server.pids());
        let group = server.group().as_raw();
        assert_eq!(server.stop().as_deref(), Some("SIGTERM"));
        assert!(group_members(group).is_empty());
        assert_eq!(server.stop(), None);
    }
}
