//! `throng-load compare --server NAME=CMD … -- MODE ARGS…`: the same run against several
//! servers, one after the other, and one table of the results.
//!
//! For each server: a free loopback port is chosen, `sh -c CMD` is started in a process group
//! of its own with the port in `$PORT`, and once the port accepts, `throng-load MODE ARGS…
//! --server-pid PIDS --json` runs as a child process (PIDS: every process of the server's
//! group, so the server's CPU per operation and memory per connection are measured whatever
//! `sh` forks). Then the group gets SIGTERM, and SIGKILL after a grace period.
//!
//! The target: `{port}` (and `{name}`) in MODE ARGS are replaced by the server's port (and
//! name); when no argument holds `{port}`, `ws://127.0.0.1:PORT/` is inserted as the URL.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Cli, Command as CliCommand, CompareArgs};
use crate::stats::fmt_us;

/// Replaced by the server's port in MODE ARGS.
const PORT: &str = "{port}";
/// Replaced by the server's name in MODE ARGS (e.g. `--csv run-{name}.csv`).
const NAME: &str = "{name}";
/// How often a starting server, a run and a stopping server are checked.
const POLL: Duration = Duration::from_millis(50);

/// Options `compare` sets itself on each run.
const RESERVED: [&str; 3] = ["--server-pid", "--json", "--child"];

/// One server's result.
#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    name: String,
    command: String,
    port: u16,
    /// The run's exit status (`null` when it did not run or was killed by a signal).
    exit_code: Option<i32>,
    /// The server started and the run met its checks and thresholds.
    ok: bool,
    /// Why there are no figures (the server did not start, the run printed no report).
    error: Option<String>,
    /// The mode's operations per second (as `--threshold rate` sees it).
    rate: Option<f64>,
    /// The mode's main latency (as `--threshold p50`/`p99` see it), microseconds.
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    /// The server's CPU microseconds per operation over the measured window.
    server_cpu_us_per_op: Option<f64>,
    /// `connect`: the growth of the server's RSS per connection held, bytes.
    server_rss_bytes_per_conn: Option<f64>,
    /// The run's whole JSON report.
    report: Value,
}

/// The arguments of the run against server `name` on `port` (without the program name).
pub(crate) fn run_args(run: &[String], name: &str, port: u16) -> Vec<String> {
    let has_port = run.iter().any(|arg| arg.contains(PORT));
    let mut out = Vec::with_capacity(run.len() + 1);
    for (i, arg) in run.iter().enumerate() {
        out.push(arg.replace(PORT, &port.to_string()).replace(NAME, name));
        if i == 0 && !has_port {
            out.push(format!("ws://127.0.0.1:{port}/"));
        }
    }
    out
}

/// Checks MODE ARGS before any server is started: they must parse as a mode's command line.
fn check_run(run: &[String]) -> Result<(), String> {
    if let Some(arg) = run.iter().find(|arg| RESERVED.iter().any(|r| arg.split('=').next() == Some(*r))) {
        return Err(format!("compare: {arg} is set by compare itself; leave it out of MODE ARGS"));
    }
    let args = run_args(run, "name", 1);
    let mut line = vec!["throng-load".to_owned()];
    line.extend(args);
    match Cli::try_parse_from(&line) {
        Ok(Cli { command: CliCommand::Run(_) }) => Ok(()),
        Ok(_) => Err("compare: MODE is one of connect, echo, storm, fanout, scenario".to_owned()),
        Err(e) => Err(format!("compare: MODE ARGS: {}", e.render())),
    }
}

/// `throng-load compare`.
pub(crate) fn main(args: &CompareArgs) -> ExitCode {
    if let Err(message) = check_run(&args.run) {
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
    let stop = Arc::new(AtomicBool::new(false));
    crate::ctl::stop_on_signals(&stop);
    let mut entries = Vec::new();
    for (name, command) in &args.servers {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        eprintln!("throng-load: compare: {name}: sh -c {command:?}");
        let entry = compare_one(args, &exe, name, command, &stop);
        if let Some(error) = &entry.error {
            eprintln!("throng-load: compare: {name}: {error}");
        }
        entries.push(entry);
    }
    let rows = table(&entries);
    println!("== compare: {} ==", args.run.join(" "));
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
    if args.json {
        let value = serde_json::json!({ "mode": "compare", "servers": entries, "ok": ok });
        println!("{value}");
    }
    let failed = |e: &Entry| e.error.is_some() || !matches!(e.exit_code, Some(0) | Some(4));
    if entries.iter().any(failed) || stop.load(Ordering::Relaxed) {
        ExitCode::from(1)
    } else if !ok {
        ExitCode::from(crate::THRESHOLD_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Starts server `name`, runs the mode against it, stops it.
fn compare_one(args: &CompareArgs, exe: &Path, name: &str, command: &str, stop: &AtomicBool) -> Entry {
    let mut entry = Entry {
        name: name.to_owned(),
        command: command.to_owned(),
        port: 0,
        exit_code: None,
        ok: false,
        error: None,
        rate: None,
        p50_us: None,
        p99_us: None,
        server_cpu_us_per_op: None,
        server_rss_bytes_per_conn: None,
        report: Value::Null,
    };
    let outcome = free_port().and_then(|port| {
        entry.port = port;
        let mut server =
            Server::start(command, port, args.stop_grace).map_err(|e| format!("starting: {e}"))?;
        server.wait_accepting(port, args.start_timeout)?;
        let pids = server.pids();
        let result = run_child(exe, &run_args(&args.run, name, port), &pids, stop);
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
            entry.error = Some(error);
            return entry;
        }
    };
    entry.exit_code = status.code();
    // The run's table, under the server's name; the JSON line is kept for the comparison.
    println!("== {name} ==");
    let mut lines: Vec<&str> = stdout.lines().collect();
    let last = lines.pop().unwrap_or_default();
    for line in lines {
        println!("{line}");
    }
    match serde_json::from_str::<Value>(last) {
        Ok(report) => {
            let number = |path: &str| path.split('.').fold(&report, |v, key| &v[key]).as_f64();
            let measured = number("metrics.latency.count").is_some_and(|n| n > 0.0);
            entry.rate = number("metrics.rate");
            entry.p50_us = number("metrics.latency.p50_us").filter(|_| measured);
            entry.p99_us = number("metrics.latency.p99_us").filter(|_| measured);
            entry.server_cpu_us_per_op = number("cpu.server.us_per_op");
            entry.server_rss_bytes_per_conn = number("server.rss_bytes_per_conn");
            entry.ok = entry.exit_code == Some(0);
            entry.report = report;
        }
        Err(_) => {
            println!("{last}");
            entry.error = Some(format!("the run printed no JSON report ({status})"));
        }
    }
    entry
}

/// A loopback port nothing listens on right now (the kernel's choice; it could be taken again
/// before the server binds it, which then shows as the server not starting).
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A server under test: `sh -c CMD` leading a process group of its own.
struct Server {
    child: Child,
    grace: Duration,
    stopped: bool,
}

impl Server {
    /// Starts `sh -c command` with `PORT` set; its output goes to stderr, so that stdout keeps
    /// the tables and the JSON.
    fn start(command: &str, port: u16, grace: Duration) -> io::Result<Self> {
        let stderr = io::stderr().as_fd().try_clone_to_owned()?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr))
            .process_group(0)
            .spawn()?;
        Ok(Server { child, grace, stopped: false })
    }

    fn group(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits until 127.0.0.1:`port` accepts a connection, at most `timeout`.
    fn wait_accepting(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stopped = true;
                return Err(format!("the server exited ({status}) before accepting on {addr}"));
            }
            if TcpStream::connect_timeout(&addr, POLL.max(Duration::from_millis(200))).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nothing accepted on {addr} within {} (see --start-timeout)",
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

/// Runs `throng-load ARGS --server-pid PIDS --json`; its stderr (the status line) is ours.
/// Ctrl-C reaches it through the terminal; a SIGTERM to `compare` is passed on.
fn run_child(
    exe: &Path,
    args: &[String],
    pids: &[u32],
    stop: &AtomicBool,
) -> io::Result<(ExitStatus, String)> {
    let mut command = Command::new(exe);
    command.args(args);
    if !pids.is_empty() {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        command.arg("--server-pid").arg(list.join(","));
    }
    let mut child = command.arg("--json").stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
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

/// The comparison table: a header row, then one row per server.
fn table(entries: &[Entry]) -> Vec<Vec<String>> {
    let mut rows = vec![["server", "rate/s", "p50", "p99", "server CPU/op", "server RSS/conn", "result"]
        .map(str::to_owned)
        .to_vec()];
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for e in entries {
        let result = match (&e.error, e.exit_code) {
            (Some(_), _) => "error".to_owned(),
            (None, Some(0)) => "ok".to_owned(),
            (None, Some(4)) => "threshold failed".to_owned(),
            (None, Some(code)) => format!("failed (exit {code})"),
            (None, None) => "killed".to_owned(),
        };
        rows.push(vec![
            e.name.clone(),
            or_dash(e.rate.map(|r| format!("{r:.0}"))),
            or_dash(e.p50_us.map(fmt_us)),
            or_dash(e.p99_us.map(fmt_us)),
            or_dash(e.server_cpu_us_per_op.map(|us| format!("{us:.2}µs"))),
            or_dash(e.server_rss_bytes_per_conn.map(|b| format!("{b:.0} B"))),
            result,
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

    #[test]
    fn the_url_is_inserted_unless_the_arguments_place_the_port() {
        let run = strings(&["echo", "--conns", "4", "--csv", "echo-{name}.csv"]);
        assert_eq!(
            run_args(&run, "a", 4000),
            strings(&["echo", "ws://127.0.0.1:4000/", "--conns", "4", "--csv", "echo-a.csv"])
        );
        let run = strings(&["echo", "ws://127.0.0.1:{port}/ws", "--conns", "4"]);
        assert_eq!(run_args(&run, "a", 4000), strings(&["echo", "ws://127.0.0.1:4000/ws", "--conns", "4"]));
    }

    #[test]
    fn mode_arguments_are_checked_before_any_server_starts() {
        assert_eq!(check_run(&strings(&["echo", "--conns", "4"])), Ok(()));
        assert!(check_run(&strings(&["echo", "--conns", "x"])).unwrap_err().contains("--conns"));
        assert!(check_run(&strings(&["fly"])).is_err());
        assert!(check_run(&strings(&["echo", "--json"])).unwrap_err().contains("--json"));
        assert!(check_run(&strings(&["echo", "--server-pid=1"])).unwrap_err().contains("--server-pid"));
        // A URL of its own without `{port}` is one positional too many.
        assert!(check_run(&strings(&["echo", "ws://127.0.0.1:9/"])).is_err());
    }

    #[test]
    fn a_stopped_group_has_no_members_left() {
        let mut server = Server::start("sleep 30 & sleep 30", 9, Duration::from_secs(5)).unwrap();
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
