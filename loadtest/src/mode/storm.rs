//! `storm`: K connections at a time go through connect – upgrade – close (1000, answered, FIN)
//! and are replaced by new ones, for a duration. Reports cycles per second, handshake and cycle
//! latency, and CPU time per cycle.

use std::io;
use std::time::{Duration, Instant};

use serde::Serialize;
use throng::proto::Item;

use crate::cli::StormArgs;
use crate::conn::{End, Status};
use crate::driver::end_cause;
use crate::driver::Driver;
use crate::mode::Outcome;
use crate::net::Sources;
use crate::procfs::{Snapshot, Usage};
use crate::stats::{bump, round3, Causes, Latency, Percentiles};
use crate::target::Target;

#[derive(Serialize)]
struct Report<'a> {
    mode: &'static str,
    url: &'a str,
    parallel: usize,
    duration_s: f64,
    sources: usize,
    /// Completed cycles (clean close).
    cycles: u64,
    failed: Causes,
    elapsed_s: f64,
    cycles_per_s: f64,
    /// Connect start to 101.
    handshake: Percentiles,
    /// Connect start to the server's FIN after the close handshake.
    cycle: Percentiles,
    cpu: Usage,
    ok: bool,
}

pub(crate) fn run(args: &StormArgs, target: &Target, sources: Sources) -> io::Result<Outcome> {
    let common = &args.common;
    let parallel = args.parallel.max(1);
    let n_sources = sources.len();
    let mut driver: Driver<()> = Driver::new(target, sources, 16 * 1024)?;
    let (mut handshake, mut cycle) = (Latency::new(), Latency::new());
    let mut failed = Causes::new();
    let mut cycles = 0u64;
    let pid = common.server_pid;
    let window_start = Snapshot::take(pid)?;
    let start = Instant::now();
    let stop_starting = start + args.duration;
    let give_up = stop_starting + common.connect_timeout;
    let mut next_tick = start;
    let mut ignore = |_: &mut (), _: &Item<'_>| {};
    loop {
        let now = Instant::now();
        let starting = now < stop_starting;
        if starting {
            // At most `parallel` attempts per turn, so instant failures cannot spin here.
            for _ in driver.conns.len()..parallel {
                if let Err(cause) = driver.dial(()) {
                    bump(&mut failed, cause);
                }
            }
        } else if driver.conns.is_empty() || now >= give_up {
            break;
        }
        let ready = driver.poll(Duration::from_millis(50))?;
        for &(key, readiness) in &ready {
            let status = driver.on_ready(key, readiness, &mut ignore);
            let now = Instant::now();
            let outcome = match status {
                Status::Busy => Ok(()),
                Status::Opened => {
                    let conn = &mut driver.conns[key];
                    handshake.record(now.duration_since(conn.started));
                    conn.close()
                }
                Status::Done(End::Clean) => {
                    if let Some(conn) = driver.remove(key) {
                        cycle.record(now.duration_since(conn.started));
                        cycles += 1;
                    }
                    Ok(())
                }
                Status::Done(end) => Err(end_cause(end)),
            };
            if let Err(cause) = outcome {
                driver.remove(key);
                bump(&mut failed, cause);
            }
        }
        driver.give_back(ready);
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + Duration::from_millis(50);
            let expired: Vec<usize> = (driver.conns.iter())
                .filter(|(_, c)| now.duration_since(c.started) > common.connect_timeout)
                .map(|(key, _)| key)
                .collect();
            for key in expired {
                driver.remove(key);
                bump(&mut failed, "timeout");
            }
        }
    }
    let window_end = Snapshot::take(pid)?;
    for _ in 0..driver.conns.len() {
        bump(&mut failed, "unfinished");
    }
    driver.conns.clear();

    let elapsed_s = window_end.wall_s(&window_start);
    let cycles_per_s = if elapsed_s > 0.0 { cycles as f64 / elapsed_s } else { 0.0 };
    let cpu = window_end.usage_since(&window_start, cycles);
    let (handshake, cycle) = (handshake.summary(), cycle.summary());
    let summary = vec![
        format!(
            "storm {}: {parallel} in parallel for {} from {} source address(es)",
            target.url,
            humantime::format_duration(args.duration),
            n_sources.max(1)
        ),
        format!("cycles: {cycles} in {elapsed_s:.2}s = {cycles_per_s:.0}/s, failed {failed:?}"),
        format!("handshake: {}", handshake.line()),
        format!("cycle: {}", cycle.line()),
        cpu.line("cycle"),
    ];
    let ok = failed.is_empty() && cycles > 0;
    let report = Report {
        mode: "storm",
        url: &target.url,
        parallel,
        duration_s: args.duration.as_secs_f64(),
        sources: n_sources,
        cycles,
        failed,
        elapsed_s: round3(elapsed_s),
        cycles_per_s: round3(cycles_per_s),
        handshake,
        cycle,
        cpu,
        ok,
    };
    Outcome::new(summary, &report, ok)
}
