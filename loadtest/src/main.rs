//! `throng-load`: a WebSocket load generator. Targets are `ws://` URLs to any host (an IP
//! literal or a DNS name); the repository's own tests and scripts use loopback.
//!
//! Modes (one module each under `mode/`):
//! - `connect`: open N connections, hold them idle, check a sample answers pings, close cleanly;
//!   with `--server-pid`, the server's memory per connection.
//! - `echo`: throughput and round-trip latency of echoed messages, payloads checked.
//! - `storm`: connect–upgrade–close cycles per second.
//! - `fanout`: N subscribers of a channel, messages published through the gateway's admin API;
//!   delivery ratio and publish-to-delivery latency.
//! - `scenario`: a run in phases from a TOML file (`scenario.rs`): connections and message rate
//!   ramping, payload sizes and template, subscribers, slow readers, thresholds.
//!
//! A process runs on one thread with one loop (`driver.rs`: epoll through `mio`, or io_uring
//! through `uring.rs`, `--backend`; the measurements pin the client to one
//! core); `--procs K` (automatic above 15,000 connections) runs K copies of itself, each with a
//! share of the connections and of the source addresses, and merges their reports
//! (`shard.rs`). The final table goes to stdout, a status line to stderr; `--json` adds one
//! JSON object as the last line of stdout, `--report FILE.html` a page with charts.
//! Exit status: 0 when the run met its checks, 1 when it ran but did not (failed connections,
//! corrupted or lost messages, interrupted), 2 on bad usage, 3 when the hard timeout fired, 4
//! when the run met its checks but a `--threshold` failed (`threshold.rs`).

mod cli;
mod compare;
mod conn;
mod ctl;
mod deflate;
mod driver;
mod html;
mod mode;
mod net;
mod probe;
mod procfs;
mod publish;
mod ramp;
mod scenario;
mod shard;
mod stats;
mod target;
mod threshold;
#[cfg(target_os = "linux")]
mod uring;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Command, Common, Mode};
use ctl::Ctl;
use mode::Report;

/// Connections one process opens at most before `--procs` is chosen automatically (the
/// open-files limit is 20,000 here, and each connection is one descriptor).
const CONNS_PER_PROC: usize = 15_000;

/// The exit status when the run met its checks but a `--threshold` failed.
const THRESHOLD_FAILED: u8 = 4;

fn main() -> ExitCode {
    let mode = match Cli::parse().command {
        Command::Run(mode) => mode,
        Command::Compare(args) => return compare::main(&args),
    };
    let common = mode.common();
    deflate::offer_context_takeover(common.deflate_context);
    let target = match common.target() {
        Ok(target) => target,
        Err(message) => return usage_error(&message),
    };
    let sources = match net::Sources::new(common.sources.as_deref(), target.addr) {
        Ok(sources) => sources,
        Err(message) => return usage_error(&message),
    };
    for pid in &common.server_pid {
        if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            return usage_error(&format!("--server-pid {pid}: no such process"));
        }
    }
    if let Mode::Fanout(args) = &mode {
        if let Err(message) = mode::fanout::plan(args) {
            return usage_error(&message);
        }
    }
    if matches!(mode, Mode::Scenario(_))
        && (common.procs.is_some_and(|p| p > 1) || common.threads.is_some_and(|t| t > 1))
    {
        return usage_error("scenario: runs in one process on one loop (no --procs or --threads above 1)");
    }
    let (_, conns) = mode.shard_option();
    let threads = match common.threads {
        Some(0) => return usage_error("--threads: at least 1"),
        Some(k) if k > 1 && common.procs.is_some_and(|p| p > 1) => {
            return usage_error("--threads and --procs: give one of them (each splits the connections)")
        }
        Some(k) => k,
        None => 1,
    };
    let procs = match common.procs {
        _ if threads > 1 => 1,
        Some(0) => return usage_error("--procs: at least 1"),
        Some(k) => k,
        None if matches!(mode, Mode::Storm(_) | Mode::Scenario(_)) => 1,
        None => conns.div_ceil(CONNS_PER_PROC).max(1),
    };
    match common.backend.resolve_for(&target) {
        Err(why) => return usage_error(&format!("--backend io_uring: {why}")),
        // Said once, by the process the user started.
        Ok((_, Some(why))) if !common.child => {
            eprintln!("throng-load: io_uring unavailable ({why}); using epoll")
        }
        Ok(_) => {}
    }
    if common.child {
        stats::export_histograms();
    }
    // `connect` holds one descriptor per connection: the soft limit up to the hard one.
    let _ = throng::raise_nofile_limit();
    watchdog(common.timeout.unwrap_or_else(|| mode.default_timeout()));
    // The live status line would garble a JSON consumer's terminal; it stays a plain line then.
    let ctl = Ctl::new(common.child, !common.json);
    let sharded = (procs > 1 || threads > 1) && !common.child;
    if !common.child {
        // The parent of a `--procs` run is not where the client's work happens.
        ctl.watch_cpu(&common.server_pid, !sharded);
    }
    let mut thresholds = common.thresholds.clone();
    if let Mode::Scenario(args) = &mode {
        thresholds.extend(args.scenario().thresholds.iter().cloned());
    }
    let thresholds = &thresholds;
    match &mode {
        Mode::Scenario(args) => {
            finish(common, thresholds, &ctl, || mode::scenario::run(args, &target, sources, &ctl))
        }
        Mode::Connect(args) => finish(common, thresholds, &ctl, || {
            if sharded {
                shard::run(&mode, procs.max(threads), threads > 1, &ctl)
            } else {
                mode::connect::run(args, &target, sources, &ctl)
            }
        }),
        Mode::Echo(args) => finish(common, thresholds, &ctl, || {
            if sharded {
                shard::run(&mode, procs.max(threads), threads > 1, &ctl)
            } else {
                mode::echo::run(args, &target, sources, &ctl)
            }
        }),
        Mode::Storm(args) => finish(common, thresholds, &ctl, || {
            if sharded {
                shard::run(&mode, procs.max(threads), threads > 1, &ctl)
            } else {
                mode::storm::run(args, &target, sources, &ctl)
            }
        }),
        Mode::Fanout(args) => finish(common, thresholds, &ctl, || {
            if sharded {
                shard::run(&mode, procs.max(threads), threads > 1, &ctl)
            } else {
                mode::fanout::run(args, &target, sources, &ctl)
            }
        }),
    }
}

/// Runs the mode and prints its report: the table (not in a child), the HTML report, the JSON;
/// judges it by `thresholds` (`--threshold` and a scenario's own).
fn finish<R: Report>(
    common: &Common,
    thresholds: &[threshold::Threshold],
    ctl: &Ctl,
    run: impl FnOnce() -> std::io::Result<R>,
) -> ExitCode {
    let result = run();
    let series = ctl.finish();
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("throng-load: {e}");
            return ExitCode::from(1);
        }
    };
    // The parent of a `--procs` run judges the merged report; its children do not.
    let outcomes: Vec<threshold::Outcome> = if common.child {
        Vec::new()
    } else {
        let metrics = report.metrics();
        thresholds.iter().map(|t| t.evaluate(&metrics)).collect()
    };
    if !common.child {
        report.strip();
        let info = report.run_info();
        if info.series.is_empty() {
            info.series = series;
        }
        let mut rows = report.rows();
        if !outcomes.is_empty() {
            rows.push(threshold::row(&outcomes));
        }
        mode::print_table(&rows);
        if report.run_info().interrupted {
            println!("  (interrupted: partial figures)");
        }
        if let Some(path) = &common.csv {
            let written = std::fs::File::create(path).and_then(|file| {
                let mut out = std::io::BufWriter::new(file);
                ctl::write_csv(&mut out, &report.run_info().series)?;
                std::io::Write::flush(&mut out)
            });
            match written {
                Ok(()) => println!("  csv: {}", path.display()),
                Err(e) => eprintln!("throng-load: writing {}: {e}", path.display()),
            }
        }
        if let Some(path) = &common.report {
            match html::write(path, &report) {
                Ok(()) => println!("  report: {}", path.display()),
                Err(e) => eprintln!("throng-load: writing {}: {e}", path.display()),
            }
        }
    }
    let thresholds_ok = outcomes.iter().all(|o| o.ok);
    if common.json || common.child {
        let json = serde_json::to_value(&report).and_then(|mut value| {
            if let (false, Some(object)) = (common.child, value.as_object_mut()) {
                // The mode's main figures under one name for every mode (`compare` reads them).
                object.insert("metrics".into(), serde_json::to_value(report.metrics())?);
            }
            if let (false, Some(object)) = (outcomes.is_empty(), value.as_object_mut()) {
                object.insert("thresholds".into(), serde_json::to_value(&outcomes)?);
                object.insert("thresholds_ok".into(), thresholds_ok.into());
            }
            serde_json::to_string(&value)
        });
        match json {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("throng-load: {e}"),
        }
    }
    if !report.ok() {
        ExitCode::from(1)
    } else if !thresholds_ok {
        ExitCode::from(THRESHOLD_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Ends the process if the run outlives `limit`, whatever it is blocked on.
fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("throng-load: hard timeout of {} reached; exiting", humantime::format_duration(limit));
        std::process::exit(3);
    });
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("throng-load: {message}");
    ExitCode::from(2)
}
