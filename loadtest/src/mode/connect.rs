//! `connect`: open N connections, hold them idle, ping a sample, close cleanly. With
//! `--server-pid`, the server's memory before and after, per connection, and the mappings that
//! grew most; always the kernel's TCP socket memory from /proc/net/sockstat.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use serde::Serialize;
use throng::proto::{Item, OpCode};

use crate::cli::ConnectArgs;
use crate::conn::Status;
use crate::driver::{end_cause, CloseStats, DialStats, Driver};
use crate::mode::Outcome;
use crate::net::Sources;
use crate::procfs::{self, Growth, Mem, SockStat};
use crate::stats::{bump, round3, Causes};
use crate::target::Target;

/// How long pinged connections have to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Per connection: the ping payload it must answer, and whether it did.
#[derive(Default)]
struct PingState {
    expect: Option<[u8; 8]>,
    answered: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    mode: &'static str,
    url: &'a str,
    conns: usize,
    rate: Option<f64>,
    hold_s: f64,
    sources: usize,
    dial: DialStats,
    /// Connections lost while held idle, by cause.
    dropped_during_hold: Causes,
    /// Connections open when the memory was read.
    open_at_measure: u64,
    server: Option<ServerMem>,
    sockstat_before: SockStat,
    sockstat_after: SockStat,
    /// Growth of /proc/net/sockstat `TCP mem` per open connection, in bytes. System-wide: on
    /// loopback it covers both ends of each connection.
    kernel_tcp_bytes_per_conn: f64,
    /// Growth of /proc/meminfo `Slab` per open connection, in bytes: the kernel's socket, file
    /// and epoll structures of both ends (system-wide, so other activity adds noise).
    kernel_slab_bytes_per_conn: f64,
    client_mem: Mem,
    pings_sent: u64,
    pongs_received: u64,
    close: CloseStats,
    ok: bool,
}

#[derive(Serialize)]
struct ServerMem {
    pid: u32,
    before: Mem,
    after: Mem,
    rss_bytes_per_conn: f64,
    pss_bytes_per_conn: f64,
    anon_bytes_per_conn: f64,
    /// The mappings whose resident size grew most.
    top_growth: Vec<Growth>,
}

pub(crate) fn run(args: &ConnectArgs, target: &Target, sources: Sources) -> io::Result<Outcome> {
    let common = &args.common;
    let n_sources = sources.len();
    let mut driver: Driver<PingState> = Driver::new(target, sources, 64 * 1024)?;
    let pid = common.server_pid;
    let mem_before = pid.map(Mem::take).transpose()?;
    let maps_before = pid.map(procfs::smaps).transpose()?;
    let sockstat_before = SockStat::take()?;
    let slab_before = procfs::slab_kib()?;
    let mut summary = vec![format!(
        "connect {}: {} connections from {} source address(es), hold {}",
        target.url,
        args.conns,
        n_sources.max(1),
        humantime::format_duration(args.hold)
    )];

    let dial = driver.establish(args.conns, args.rate, common.concurrency, common.connect_timeout, |_| {
        PingState::default()
    })?;
    summary.push(dial.line());

    // Hold: nothing is sent; anything that ends now was dropped by the server or the kernel.
    let mut dropped_during_hold = Causes::new();
    let hold_end = Instant::now() + args.hold;
    let mut ignore = |_: &mut PingState, _: &Item<'_>| {};
    while let Some(left) = hold_end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        let ready = driver.poll(left.min(Duration::from_millis(100)))?;
        for &(key, readiness) in &ready {
            if let Status::Done(end) = driver.on_ready(key, readiness, &mut ignore) {
                driver.remove(key);
                bump(&mut dropped_during_hold, end_cause(end));
            }
        }
        driver.give_back(ready);
    }
    let open_at_measure = driver.conns.len() as u64;
    let mem_after = pid.map(Mem::take).transpose()?;
    let maps_after = pid.map(procfs::smaps).transpose()?;
    let sockstat_after = SockStat::take()?;
    let slab_after = procfs::slab_kib()?;
    let client_mem = Mem::take(std::process::id())?;
    let per_conn = |before: u64, after: u64| {
        let open = open_at_measure.max(1) as f64;
        round3((after as f64 - before as f64) * 1024.0 / open)
    };
    let server = match (pid, mem_before, mem_after, &maps_before, &maps_after) {
        (Some(pid), Some(before), Some(after), Some(maps_before), Some(maps_after)) => Some(ServerMem {
            pid,
            before,
            after,
            rss_bytes_per_conn: per_conn(before.rss_kib, after.rss_kib),
            pss_bytes_per_conn: per_conn(before.pss_kib, after.pss_kib),
            anon_bytes_per_conn: per_conn(before.rss_anon_kib, after.rss_anon_kib),
            top_growth: procfs::growth(maps_before, maps_after, args.smaps_top),
        }),
        _ => None,
    };
    let page = procfs::page_size();
    let kernel_tcp_bytes_per_conn = round3(
        (sockstat_after.mem_pages as f64 - sockstat_before.mem_pages as f64) * page as f64
            / open_at_measure.max(1) as f64,
    );
    let kernel_slab_bytes_per_conn = per_conn(slab_before, slab_after);
    summary.push(format!("hold: {open_at_measure} open, dropped {dropped_during_hold:?}"));
    if let Some(s) = &server {
        summary.push(format!(
            "server {}: RSS {} -> {} KiB ({:.0} B/conn), PSS {} -> {} KiB ({:.0} B/conn), anon {:.0} B/conn",
            s.pid,
            s.before.rss_kib,
            s.after.rss_kib,
            s.rss_bytes_per_conn,
            s.before.pss_kib,
            s.after.pss_kib,
            s.pss_bytes_per_conn,
            s.anon_bytes_per_conn
        ));
        for g in &s.top_growth {
            summary.push(format!(
                "  grew {:+} KiB: {} ({} -> {} KiB resident of {} KiB)",
                g.growth_kib, g.mapping, g.rss_before_kib, g.rss_after_kib, g.size_kib
            ));
        }
    }
    summary.push(format!(
        "kernel: TCP mem {} -> {} pages ({:.0} B/conn), slab {slab_before} -> {slab_after} KiB ({:.0} B/conn) (both ends), inuse {} -> {}, tw {}",
        sockstat_before.mem_pages,
        sockstat_after.mem_pages,
        kernel_tcp_bytes_per_conn,
        kernel_slab_bytes_per_conn,
        sockstat_before.inuse,
        sockstat_after.inuse,
        sockstat_after.tw
    ));

    let (pings_sent, pongs_received) = ping_sample(&mut driver, args.ping_sample)?;
    summary.push(format!("ping: {pongs_received}/{pings_sent} answered"));

    let close = driver.close_all(args.close_timeout, &mut ignore)?;
    summary.push(close.line());

    let ok = dial.established == args.conns as u64
        && dial.dropped == 0
        && dropped_during_hold.is_empty()
        && pongs_received == pings_sent
        && close.all_clean();
    let report = Report {
        mode: "connect",
        url: &target.url,
        conns: args.conns,
        rate: args.rate,
        hold_s: args.hold.as_secs_f64(),
        sources: n_sources,
        dial,
        dropped_during_hold,
        open_at_measure,
        server,
        sockstat_before,
        sockstat_after,
        kernel_tcp_bytes_per_conn,
        kernel_slab_bytes_per_conn,
        client_mem,
        pings_sent,
        pongs_received,
        close,
        ok,
    };
    Outcome::new(summary, &report, ok)
}

/// Pings up to `sample` connections spread over the slab; returns (sent, answered).
fn ping_sample(driver: &mut Driver<PingState>, sample: usize) -> io::Result<(u64, u64)> {
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
        conn.queue(OpCode::Ping, &payload);
        if conn.flush().is_ok() {
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
    while answered.get() + lost < sent && Instant::now() < deadline {
        let ready = driver.poll(Duration::from_millis(50))?;
        for &(key, readiness) in &ready {
            if let Status::Done(_) = driver.on_ready(key, readiness, &mut on_item) {
                if let Some(conn) = driver.remove(key) {
                    lost += u64::from(conn.state.expect.is_some() && !conn.state.answered);
                }
            }
        }
        driver.give_back(ready);
    }
    Ok((sent, answered.get()))
}
