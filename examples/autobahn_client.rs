//! Runs the Autobahn|Testsuite client cases with `throng::client` against wstest's fuzzingserver.
//!
//! ```text
//! bash scripts/autobahn.sh client --port 9002 --out target/autobahn/client &
//! cargo run --release --example autobahn_client -- --url ws://127.0.0.1:9002 --agent throng-client
//! python3 scripts/autobahn_check.py target/autobahn/client/reports/index.json --agent throng-client
//! ```
//! Asks the case count (`/getCaseCount`), echoes every message of each case
//! (`/runCase?case=N&agent=…`) until the server closes, then has the reports written
//! (`/updateReports?agent=…`). `--deflate` offers permessage-deflate on every case connection
//! (for cases 12.* and 13.*; the others run compressed too when the server accepts).
//! `scripts/conformance.sh` does all of this.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use throng::client::{connect, ClientError, ClientOptions};
use throng::Message;

fn options(deflate: bool) -> ClientOptions {
    ClientOptions {
        deflate,
        // Section 9 sends 16 MiB messages; leave room above them.
        max_message_size: 64 << 20,
        max_frame_size: 64 << 20,
        // A case that hangs must not hang the run.
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientOptions::default()
    }
}

/// Echoes until the server ends the connection. `Ok` however it ended (failing the connection
/// on a protocol error is the expected behaviour in many cases); `Err` on local trouble.
fn echo_until_closed(url: &str, deflate: bool) -> Result<String, ClientError> {
    let mut conn = connect(url, &options(deflate))?;
    let mut echoed = 0u64;
    loop {
        match conn.recv() {
            Ok(message) => match conn.send(&message) {
                Ok(()) => echoed += 1,
                // The server may have closed while we echoed; recv reports how it ended.
                Err(ClientError::Io(_) | ClientError::Closed { .. }) => {}
                Err(e) => return Err(e),
            },
            Err(ClientError::Closed { code, .. }) => return Ok(format!("{echoed} echoed, closed {code}")),
            Err(ClientError::Protocol(e)) => return Ok(format!("{echoed} echoed, failed: {e}")),
            Err(e) => return Err(e),
        }
    }
}

/// Reads the one text message of `/getCaseCount`.
fn case_count(base: &str) -> Result<u32, String> {
    let mut conn = connect(&format!("{base}/getCaseCount"), &options(false)).map_err(|e| e.to_string())?;
    let count = match conn.recv().map_err(|e| e.to_string())? {
        Message::Text(text) => text.trim().parse().map_err(|_| format!("not a case count: {text:?}"))?,
        Message::Binary(_) => return Err("binary case count".into()),
    };
    // The server closes right after; wait for it.
    let _ = conn.recv();
    Ok(count)
}

fn main() -> ExitCode {
    let mut base = "ws://127.0.0.1:9002".to_owned();
    let mut agent = "throng-client".to_owned();
    let mut deflate = false;
    let mut args = std::env::args().skip(1).peekable();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next_if(|_| arg != "--deflate")) {
            ("--deflate", None) => deflate = true,
            ("--url", Some(value)) => base = value.trim_end_matches('/').to_owned(),
            ("--agent", Some(value)) => agent = value,
            _ => {
                eprintln!(
                    "usage: autobahn_client [--url ws://127.0.0.1:9002] [--agent throng-client] [--deflate]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let count = match case_count(&base) {
        Ok(count) => count,
        Err(e) => {
            eprintln!("autobahn_client: cannot get the case count from {base}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let offer = if deflate { ", offering permessage-deflate" } else { "" };
    eprintln!("autobahn_client: {count} cases from {base} as agent {agent}{offer}");
    let mut failures = 0;
    for case in 1..=count {
        let started = Instant::now();
        let outcome = echo_until_closed(&format!("{base}/runCase?case={case}&agent={agent}"), deflate);
        let elapsed = started.elapsed();
        match outcome {
            Ok(what) => eprintln!("case {case}/{count}: {what} ({elapsed:.2?})"),
            Err(e) => {
                failures += 1;
                eprintln!("case {case}/{count}: client error: {e} ({elapsed:.2?})");
            }
        }
    }
    if let Err(e) = echo_until_closed(&format!("{base}/updateReports?agent={agent}"), false) {
        eprintln!("autobahn_client: updateReports failed: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("autobahn_client: done, {failures} case(s) with client errors (the report has the verdicts)");
    ExitCode::SUCCESS
}
