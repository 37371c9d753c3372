//! `storm`: K connections at a time go through connect – upgrade – close (1000, answered, FIN)
//! and are replaced by new ones, for a duration. Reports cycles per second, handshake and cycle
//! latency, and CPU time per cycle.

use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use throng::proto::Item;

use crate::cli::StormArgs;
use crate::conn::{End, Status};
use crate::ctl::Ctl;
use crate::deflate::DeflateReport;
use crate::driver::{end_cause, Driver};
use crate::mode::{Report as _, RunInfo};
use crate::net::Sources;
use crate::procfs::{Snapshot, Usage};
use crate::stats::{bump, merge_causes, ratio, round3, Causes, Latency, Traffic};
use crate::target::Target;
use crate::threshold::Metrics;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    mode: String,
    url: String,
    parallel: usize,
    duration_s: f64,
    sources: usize,
    /// Completed cycles (clean close).
    cycles: u64,
    failed: Causes,
    elapsed_s: f64,
    cycles_per_s: f64,
    /// Connect start to 101.
    handshake: Latency,
    /// Connect start to the server's FIN after the close handshake.
    cycle: Latency,
    pub(crate) cpu: Usage,
    /// Bytes and messages through the sockets over the whole run.
    #[serde(default)]
    traffic: Traffic,
    /// `--deflate`: how the connections negotiated compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deflate: Option<DeflateReport>,
    ok: bool,
    #[serde(flatten)]
    run: RunInfo,
}

impl super::Report for Report {
    fn merge(&mut self, other: Self) {
        self.parallel += other.parallel;
        self.sources += other.sources;
        self.cycles += other.cycles;
        merge_causes(&mut self.failed, other.failed);
        self.elapsed_s = self.elapsed_s.max(other.elapsed_s);
        self.cycles_per_s = round3(self.cycles_per_s + other.cycles_per_s);
        self.handshake.add(&other.handshake);
        self.cycle.add(&other.cycle);
        self.cpu.merge(&other.cpu, self.cycles);
        self.traffic.merge(&other.traffic);
        crate::deflate::merge(&mut self.deflate, other.deflate);
        self.run.merge(&other.run);
        self.finish();
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "storm".into(),
                format!(
                    "{}: {} in parallel for {}s from {} source address(es), {} process(es)",
                    self.url,
                    self.parallel,
                    self.duration_s,
                    self.sources.max(1),
                    self.run.procs
                ),
            ),
            (
                "cycles".into(),
                format!(
                    "{} in {:.2}s = {:.0}/s, failed {:?}",
                    self.cycles, self.elapsed_s, self.cycles_per_s, self.failed
                ),
            ),
            ("handshake".into(), self.handshake.summary().line()),
            ("cycle".into(), self.cycle.summary().line()),
            ("cpu".into(), self.cpu.line("cycle")),
            ("traffic".into(), self.traffic.line()),
        ];
        if let Some(deflate) = &self.deflate {
            rows.push(("deflate".into(), deflate.line()));
        }
        rows
    }

    fn metrics(&self) -> Metrics {
        let errors = self.failed.values().sum::<u64>();
        Metrics {
            latency: self.cycle.summary(),
            errors,
            ops: self.cycles + errors,
            rate: Some(self.cycles_per_s),
            late: None,
        }
    }

    fn ok(&self) -> bool {
        self.ok
    }

    fn chart(&self) -> (&'static str, &Latency) {
        ("Handshake latency (connect start to 101)", &self.handshake)
    }

    fn ops_name(&self) -> &'static str {
        "cycles"
    }

    fn run_info(&mut self) -> &mut RunInfo {
        &mut self.run
    }

    fn apply(&mut self, extra: super::Extra) {
        if let super::Extra::Window(start, end) = extra {
            self.cpu.set_server(end.server_use_since(&start, self.cycles));
        }
    }

    fn finish(&mut self) {
        self.ok = !self.run.interrupted && self.failed.is_empty() && self.cycles > 0;
    }
}

pub(crate) fn run(args: &StormArgs, target: &Target, sources: Sources, ctl: &Ctl) -> io::Result<Report> {
    let common = &args.common;
    let parallel = args.parallel.max(1);
    let n_sources = sources.len();
    let mut driver: Driver<()> =
        Driver::new(target, sources, 16 * 1024, common.backend, common.deflate || common.deflate_context)?;
    let (mut handshake, mut cycle) = (Latency::new(), Latency::new());
    let mut failed = Causes::new();
    let mut cycles = 0u64;
    ctl.ready(0);
    while !ctl.go() && !ctl.stopped() {
        std::thread::sleep(Duration::from_millis(5));
    }
    ctl.phase("cycling");
    let pids = &common.server_pid;
    let window_start = Snapshot::take(pids)?;
    let start = Instant::now();
    let stop_starting = start + args.duration;
    let give_up = stop_starting + common.connect_timeout;
    let mut next_tick = start;
    let mut ignore = |_: &mut (), _: &Item<'_>| {};
    loop {
        let now = Instant::now();
        let starting = now < stop_starting && !ctl.stopped();
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
                    handshake.record(now.duration_since(driver.conns[key].started));
                    driver.close(key)
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
        ctl.tick(driver.conns.len() as u64, cycles);
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
    let window_end = Snapshot::take(pids)?;
    // Before the unfinished connections are dropped: the parent's window ends with the last child's.
    ctl.measured(cycles);
    for _ in 0..driver.conns.len() {
        bump(&mut failed, "unfinished");
    }
    driver.clear();

    let elapsed_s = window_end.wall_s(&window_start);
    let mut report = Report {
        mode: "storm".into(),
        url: target.url.clone(),
        parallel,
        duration_s: args.duration.as_secs_f64(),
        sources: n_sources,
        cycles,
        failed,
        elapsed_s: round3(elapsed_s),
        cycles_per_s: round3(ratio(cycles as f64, elapsed_s)),
        handshake,
        cycle,
        cpu: window_end.usage_since(&window_start, cycles),
        traffic: driver.traffic(),
        deflate: driver.deflate_report(),
        ok: false,
        run: RunInfo::new(ctl.stopped(), driver.backend()),
    };
    report.finish();
    Ok(report)
}
