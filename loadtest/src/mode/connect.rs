//! `connect`: open N connections, hold them idle, ping a sample, close cleanly. With
//! `--server-pid`, the server's memory before and after, per connection, and the mappings that
//! grew most; always the kernel's TCP socket memory from /proc/net/sockstat.
//!
//! In a child of `--procs` the hold is the parent's: the child reports `ready` once its
//! connections are up, and holds them until the parent, having read the memory of the server
//! with every child's connections open, says `go`.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use throng::proto::{Item, OpCode};

use crate::cli::ConnectArgs;
use crate::conn::Status;
use crate::ctl::Ctl;
use crate::deflate::DeflateReport;
use crate::driver::{CloseStats, DialPlan, DialStats, Driver};
use crate::mode::{Report as _, RunInfo};
use crate::net::Sources;
use crate::probe::{MemProbe, MemReport};
use crate::procfs::Mem;
use crate::stats::{merge_causes, Causes, Latency, Traffic};
use crate::target::Target;
use crate::threshold::Metrics;

/// How long pinged connections have to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Per connection: the ping payload it must answer, and whether it did.
#[derive(Default)]
struct PingState {
    expect: Option<[u8; 8]>,
    answered: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    mode: String,
    url: String,
    conns: usize,
    rate: Option<f64>,
    hold_s: f64,
    sources: usize,
    dial: DialStats,
    /// Connections lost while held idle, by cause.
    dropped_during_hold: Causes,
    #[serde(flatten)]
    pub(crate) mem: MemReport,
    client_mem: Mem,
    pings_sent: u64,
    pongs_received: u64,
    close: CloseStats,
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
        self.conns += other.conns;
        self.sources += other.sources;
        self.dial.merge(other.dial);
        merge_causes(&mut self.dropped_during_hold, other.dropped_during_hold);
        self.mem.open_at_measure += other.mem.open_at_measure;
        self.client_mem.add(&other.client_mem);
        self.pings_sent += other.pings_sent;
        self.pongs_received += other.pongs_received;
        self.close.merge(other.close);
        self.traffic.merge(&other.traffic);
        crate::deflate::merge(&mut self.deflate, other.deflate);
        self.run.merge(&other.run);
        self.finish();
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "connect".into(),
                format!(
                    "{}: {} connections from {} source address(es) in {} process(es), hold {}s",
                    self.url,
                    self.conns,
                    self.sources.max(1),
                    self.run.procs,
                    self.hold_s
                ),
            ),
            ("dial".into(), self.dial.line()),
        ];
        if let Some(deflate) = &self.deflate {
            rows.push(("deflate".into(), deflate.line()));
        }
        rows.extend([(
            "hold".into(),
            format!("{} open, dropped {:?}", self.mem.open_at_measure, self.dropped_during_hold),
        )]);
        self.mem.rows(&mut rows);
        rows.push((
            "client".into(),
            format!("RSS {} KiB ({:.0} B/conn)", self.client_mem.rss_kib, self.client_bytes_per_conn()),
        ));
        rows.push(("ping".into(), format!("{}/{} answered", self.pongs_received, self.pings_sent)));
        rows.push(("close".into(), self.close.line()));
        rows.push(("traffic".into(), self.traffic.line()));
        rows
    }

    fn metrics(&self) -> Metrics {
        let count = |causes: &Causes| causes.values().sum::<u64>();
        Metrics {
            latency: self.dial.handshake_latency.summary(),
            errors: count(&self.dial.failed)
                + count(&self.dropped_during_hold)
                + self.pings_sent.saturating_sub(self.pongs_received),
            ops: self.dial.attempted,
            rate: Some(self.dial.handshakes_per_s),
            late: None,
        }
    }

    fn ok(&self) -> bool {
        self.ok
    }

    fn chart(&self) -> (&'static str, &Latency) {
        ("Handshake latency (connect start to 101)", &self.dial.handshake_latency)
    }

    fn ops_name(&self) -> &'static str {
        "handshakes"
    }

    fn run_info(&mut self) -> &mut RunInfo {
        &mut self.run
    }

    fn apply(&mut self, extra: super::Extra) {
        if let super::Extra::Mem(mem) = extra {
            self.mem = mem;
        }
    }

    fn finish(&mut self) {
        self.ok = !self.run.interrupted
            && self.dial.established == self.conns as u64
            && self.dial.dropped == 0
            && self.dropped_during_hold.is_empty()
            && self.pongs_received == self.pings_sent
            && self.close.all_clean();
    }
}

impl Report {
    fn client_bytes_per_conn(&self) -> f64 {
        self.client_mem.rss_kib as f64 * 1024.0 / self.dial.established.max(1) as f64
    }
}

pub(crate) fn run(args: &ConnectArgs, target: &Target, sources: Sources, ctl: &Ctl) -> io::Result<Report> {
    let common = &args.common;
    let n_sources = sources.len();
    let mut driver: Driver<PingState> =
        Driver::new(target, sources, 64 * 1024, common.backend, common.deflate || common.deflate_context)?;
    // A child leaves the memory readings to its parent.
    let probe = if ctl.is_child() { None } else { Some(MemProbe::before(&common.server_pid)?) };
    let plan = DialPlan {
        n: args.conns,
        rate: args.rate,
        concurrency: common.concurrency,
        connect_timeout: common.connect_timeout,
        wait_ready: false,
    };
    let dial = driver.establish(ctl, &plan, |_| PingState::default(), &mut |_, _| false)?;
    ctl.ready(driver.conns.len() as u64);

    // Hold: nothing is sent; anything that ends now was dropped by the server or the kernel.
    ctl.phase("holding");
    let mut dropped_during_hold = Causes::new();
    let hold_end = Instant::now() + args.hold;
    let mut ignore = |_: &mut PingState, _: &Item<'_>| {};
    let held = |ctl: &Ctl| if ctl.is_child() { ctl.go() } else { Instant::now() >= hold_end };
    while !held(ctl) && !ctl.stopped() {
        driver.poll_once(Duration::from_millis(100), &mut dropped_during_hold, &mut ignore)?;
        ctl.tick(driver.conns.len() as u64, dial.established);
    }
    let open = driver.conns.len() as u64;
    let mem = match &probe {
        Some(probe) => probe.after(open, args.smaps_top)?,
        None => MemReport { open_at_measure: open, ..MemReport::default() },
    };
    let client_mem = Mem::take(std::process::id())?;

    ctl.phase("pinging");
    let sample = if ctl.stopped() { 0 } else { args.ping_sample };
    let (pings_sent, pongs_received) = ping_sample(&mut driver, sample, ctl)?;
    let close = driver.close_all(ctl, args.close_timeout, &mut ignore)?;

    let mut report = Report {
        mode: "connect".into(),
        url: target.url.clone(),
        conns: args.conns,
        rate: args.rate,
        hold_s: args.hold.as_secs_f64(),
        sources: n_sources,
        dial,
        dropped_during_hold,
        mem,
        client_mem,
        pings_sent,
        pongs_received,
        close,
        traffic: driver.traffic(),
        deflate: driver.deflate_report(),
        ok: false,
        run: RunInfo::new(ctl.stopped(), driver.backend()),
    };
    report.finish();
    Ok(report)
}

/// Pings up to `sample` connections spread over the slab; returns (sent, answered).
fn ping_sample(driver: &mut Driver<PingState>, sample: usize, ctl: &Ctl) -> io::Result<(u64, u64)> {
    let keys: Vec<usize> = driver.conns.iter().map(|(key, _)| key).collect();
    if sample == 0 || keys.is_empty() {
        return Ok((0, 0));
    }
    let step = (keys.len() / sample).max(1);
    let mut sent = 0u64;
    for (i, &key) in keys.iter().step_by(step).take(sample).enumerate() {
        let payload = (i as u64).to_be_bytes();
        let conn = &mut driver.conns[key];
        conn.state.expect = Some(payload);
        conn.queue(OpCode::Ping, &payload, &mut driver.wire);
        if driver.flush(key).is_ok() {
            sent += 1;
        }
    }
    let answered = Cell::new(0u64);
    let mut on_item = |state: &mut PingState, item: &Item<'_>| {
        if let Item::Pong(payload) = item {
            if !state.answered && state.expect.as_ref().is_some_and(|e| e[..] == payload[..]) {
                state.answered = true;
                answered.set(answered.get() + 1);
            }
        }
    };
    let deadline = Instant::now() + PING_TIMEOUT;
    let mut lost = 0u64;
    while answered.get() + lost < sent && Instant::now() < deadline && !ctl.stopped() {
        let ready = driver.poll(Duration::from_millis(50))?;
        for &(key, readiness) in &ready {
            if let Status::Done(_) = driver.on_ready(key, readiness, &mut on_item) {
                if let Some(conn) = driver.remove(key) {
                    lost += u64::from(conn.state.expect.is_some() && !conn.state.answered);
                }
            }
        }
        driver.give_back(ready);
        ctl.tick(driver.conns.len() as u64, answered.get());
    }
    Ok((sent, answered.get()))
}
