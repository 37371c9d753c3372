//! `throng-load`: a WebSocket load generator for loopback targets.
//!
//! Modes (one module each under `mode/`):
//! - `connect`: open N connections, hold them idle, check a sample answers pings, close cleanly;
//!   with `--server-pid`, the server's memory per connection.
//! - `echo`: throughput and round-trip latency of echoed messages, payloads checked.
//! - `storm`: connect–upgrade–close cycles per second.
//!
//! Everything runs on one thread with one `mio::Poll` (the measurements pin the client to one
//! core). Human-readable lines go to stdout; `--json` adds one JSON object as the last line.
//! Exit status: 0 when the run met its checks, 1 when it ran but did not (failed connections,
//! corrupted or lost messages), 2 on bad usage, 3 when the hard timeout fired.

mod cli;
mod conn;
mod driver;
mod mode;
mod net;
mod procfs;
mod stats;
mod target;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Mode};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = cli.mode.common();
    let target = match target::Target::parse(&common.url) {
        Ok(target) => target,
        Err(message) => return usage_error(&message),
    };
    let sources = match net::Sources::new(common.sources.as_deref(), target.addr) {
        Ok(sources) => sources,
        Err(message) => return usage_error(&message),
    };
    if let Some(pid) = common.server_pid {
        if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            return usage_error(&format!("--server-pid {pid}: no such process"));
        }
    }
    raise_open_files_limit();
    watchdog(common.timeout.unwrap_or_else(|| cli.mode.default_timeout()));
    let json = common.json;
    let outcome = match &cli.mode {
        Mode::Connect(args) => mode::connect::run(args, &target, sources),
        Mode::Echo(args) => mode::echo::run(args, &target, sources),
        Mode::Storm(args) => mode::storm::run(args, &target, sources),
    };
    match outcome {
        Ok(outcome) => {
            for line in &outcome.summary {
                println!("{line}");
            }
            if json {
                println!("{}", outcome.json);
            }
            if outcome.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("throng-load: {e}");
            ExitCode::from(1)
        }
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

/// Raises the soft open-files limit to the hard one: `connect` holds one descriptor per connection.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("throng-load: {message}");
    ExitCode::from(2)
}
