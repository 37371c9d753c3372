//! `scenario URL FILE.toml`: a run in phases (see `scenario.rs` for the file). Each loop turn
//! brings the connections open (or being set up) towards the phases' connection ramp — dialling
//! at most `connect_rate` per second and `--concurrency` at once, closing the newest above it —
//! and sends each sending connection's messages on the message-rate ramp's schedule (open loop,
//! as `echo --ramp`: latency from the scheduled send, late and skipped sends counted by echo's
//! rules). Echoes are matched in order and checked by length; subscribers send the gateway's
//! `{"op":"subscribe"}` once open and only count what arrives; slow readers handle what is
//! readable at most once per `pause` (epoll only: io_uring's receive buffers are lent for one
//! turn, so `--backend auto` runs such a scenario on epoll).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use throng::proto::{Item, OpCode};

use crate::cli::ScenarioArgs;
use crate::conn::{Phase, Status};
use crate::ctl::{Ctl, Tick};
use crate::driver::{end_cause, Backend, CloseStats, Driver, Event};
use crate::mode::echo::{is_late, MAX_OUTSTANDING, MAX_UNWRITTEN};
use crate::mode::RunInfo;
use crate::net::Sources;
use crate::procfs::{Snapshot, Usage};
use crate::stats::{bump, merge_causes, ratio, round3, Causes, Latency};
use crate::target::Target;
use crate::threshold::Metrics;

/// What a connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Sends on the schedule and expects its messages echoed.
    Sender,
    /// Subscribes once open, sends nothing else, counts what arrives.
    Subscriber,
}

/// Per connection.
struct State {
    role: Role,
    slow: bool,
    /// Closed by us (the connection ramp went down): what it still had in flight is not lost.
    closing: bool,
    /// Sent and not yet echoed: scheduled time, length, phase.
    in_flight: VecDeque<(Instant, usize, usize)>,
    next_seq: u64,
    rx_len: usize,
    /// Slow readers: an event held back, and when it may be handled.
    held: Option<(Instant, Event)>,
    last_read: Option<Instant>,
}

/// One phase's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PhaseReport {
    name: String,
    duration_s: f64,
    /// Connections open at its end (the plan) and as it ended (measured).
    planned_connections: u64,
    open_at_end: u64,
    message_rate: f64,
    sent: u64,
    echoes: u64,
    latency: Latency,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    mode: String,
    url: String,
    scenario: String,
    phases: Vec<PhaseReport>,
    /// Connection attempts, upgrades, attempts that failed (by cause).
    dialled: u64,
    established: u64,
    dial_failed: Causes,
    /// Connect start to 101.
    handshake_latency: Latency,
    /// Closed by us as the connection ramp went down (plus those at the end: `close`).
    closed_by_ramp: u64,
    /// Connections that ended on their own, by cause.
    dropped: Causes,
    /// Most connections open at once.
    peak_open: u64,
    subscribers: u64,
    slow_readers: u64,
    sent: u64,
    echoes: u64,
    /// Messages that arrived on subscribers (the subscribe reply included).
    pushed: u64,
    /// Echoes of the wrong length, or with nothing in flight.
    payload_errors: u64,
    /// Sent and never echoed on a connection that ended on its own or at the end.
    lost: u64,
    /// Sent and not echoed before the ramp closed their connection (not an error: the close
    /// overtook them).
    abandoned: u64,
    /// Sends due: late ones (echo's rule), skipped ones (backlog full).
    scheduled: u64,
    late: u64,
    skipped: u64,
    /// Echoes per second over the whole run.
    msgs_per_s: f64,
    duration_s: f64,
    /// From the scheduled send to the echo, the whole run.
    latency: Latency,
    cpu: Usage,
    close: CloseStats,
    ok: bool,
    #[serde(flatten)]
    run: RunInfo,
}

impl super::Report for Report {
    fn merge(&mut self, other: Self) {
        for (mine, theirs) in self.phases.iter_mut().zip(&other.phases) {
            mine.open_at_end += theirs.open_at_end;
            mine.sent += theirs.sent;
            mine.echoes += theirs.echoes;
            mine.latency.add(&theirs.latency);
        }
        self.dialled += other.dialled;
        self.established += other.established;
        merge_causes(&mut self.dial_failed, other.dial_failed);
        self.handshake_latency.add(&other.handshake_latency);
        self.closed_by_ramp += other.closed_by_ramp;
        merge_causes(&mut self.dropped, other.dropped);
        self.peak_open += other.peak_open;
        self.subscribers += other.subscribers;
        self.slow_readers += other.slow_readers;
        self.sent += other.sent;
        self.echoes += other.echoes;
        self.pushed += other.pushed;
        self.payload_errors += other.payload_errors;
        self.lost += other.lost;
        self.abandoned += other.abandoned;
        self.scheduled += other.scheduled;
        self.late += other.late;
        self.skipped += other.skipped;
        self.msgs_per_s = round3(self.msgs_per_s + other.msgs_per_s);
        self.latency.add(&other.latency);
        self.cpu.merge(&other.cpu, self.echoes);
        self.close.merge(other.close);
        self.run.merge(&other.run);
        self.finish();
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![(
            "scenario".into(),
            format!("{}: {} ({} phases, {}s)", self.url, self.scenario, self.phases.len(), self.duration_s),
        )];
        for phase in &self.phases {
            rows.push((
                format!("  {}", phase.name),
                format!(
                    "{}s to {} conns ({} open at its end), {} msg/s each: {} sent, {} echoed; {}",
                    phase.duration_s,
                    phase.planned_connections,
                    phase.open_at_end,
                    phase.message_rate,
                    phase.sent,
                    phase.echoes,
                    phase.latency.summary().line()
                ),
            ));
        }
        rows.extend([
            (
                "connections".into(),
                format!(
                    "{} dialled, {} established (handshake {}), failed {:?}; peak {} open ({} subscribers, {} slow readers); {} closed by the ramp, dropped {:?}",
                    self.dialled,
                    self.established,
                    self.handshake_latency.summary().line(),
                    self.dial_failed,
                    self.peak_open,
                    self.subscribers,
                    self.slow_readers,
                    self.closed_by_ramp,
                    self.dropped
                ),
            ),
            (
                "schedule".into(),
                format!("{} due, {} late, {} skipped (backlog full)", self.scheduled, self.late, self.skipped),
            ),
            (
                "messages".into(),
                format!(
                    "{} sent, {} echoed ({:.0}/s), {} pushed to subscribers; {} payload errors, {} lost, {} in flight when the ramp closed their connection",
                    self.sent,
                    self.echoes,
                    self.msgs_per_s,
                    self.pushed,
                    self.payload_errors,
                    self.lost,
                    self.abandoned
                ),
            ),
            ("latency".into(), format!("from the scheduled send: {}", self.latency.summary().line())),
            ("cpu".into(), self.cpu.line("echo")),
            ("close".into(), self.close.line()),
        ]);
        rows
    }

    fn ok(&self) -> bool {
        self.ok
    }

    fn metrics(&self) -> Metrics {
        let failed_dials: u64 = self.dial_failed.values().sum();
        Metrics {
            latency: self.latency.summary(),
            errors: self.payload_errors + self.lost + self.skipped + failed_dials,
            ops: self.sent + self.skipped + self.dialled,
            rate: Some(self.msgs_per_s),
            late: Some((self.late, self.scheduled)),
        }
    }

    fn chart(&self) -> (&'static str, &Latency) {
        ("Latency from the scheduled send (whole run)", &self.latency)
    }

    fn ops_name(&self) -> &'static str {
        "echoes"
    }

    fn run_info(&mut self) -> &mut RunInfo {
        &mut self.run
    }

    fn finish(&mut self) {
        self.ok = !self.run.interrupted
            && self.payload_errors == 0
            && self.lost == 0
            && self.dropped.is_empty()
            && self.dial_failed.is_empty()
            && self.close.all_clean()
            && self.established > 0;
    }
}

/// The receive side, shared by all connections.
struct Rx {
    now: Instant,
    phases: Vec<PhaseReport>,
    echoes: u64,
    pushed: u64,
    payload_errors: u64,
    latency: Latency,
    /// Since the last per-second sample.
    recent: Latency,
}

impl Rx {
    /// A frame on connection `st`: a sender's echo is matched with its oldest message in flight
    /// (echoes come back in order) and checked by length; what a subscriber gets is counted.
    fn on_item(&mut self, st: &mut State, item: &Item<'_>) {
        let Item::Data { chunk, first, last, .. } = *item else { return };
        st.rx_len = if first { chunk.len() } else { st.rx_len + chunk.len() };
        if !last {
            return;
        }
        if st.role == Role::Subscriber {
            self.pushed += 1;
            return;
        }
        let Some((at, len, phase)) = st.in_flight.pop_front() else {
            self.payload_errors += 1;
            return;
        };
        self.payload_errors += u64::from(len != st.rx_len);
        let took = self.now.saturating_duration_since(at);
        self.latency.record(took);
        self.recent.record(took);
        self.phases[phase].latency.record(took);
        self.phases[phase].echoes += 1;
        self.echoes += 1;
    }
}

/// Whether item `i` of a sequence is one of a `share` spread evenly through it.
fn picked(i: u64, share: f64) -> bool {
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

pub(crate) fn run(args: &ScenarioArgs, target: &Target, sources: Sources, ctl: &Ctl) -> io::Result<Report> {
    let common = &args.common;
    let sc = args.scenario();
    // Slow readers hold events back, which io_uring's lent buffers do not allow.
    let backend = match (common.backend, sc.slow_readers.is_some_and(|s| s.0 > 0.0)) {
        (Backend::Auto, true) => Backend::Epoll,
        (Backend::IoUring, true) => {
            return Err(io::Error::other("slow_readers: run on --backend epoll (or auto)"));
        }
        (backend, _) => backend,
    };
    let largest = sc.sizes.iter().map(|s| s.0).max().unwrap_or(0);
    let mut driver: Driver<State> =
        Driver::new(target, sources, (256 * 1024).max(largest + 1024), backend, common.deflate)?;
    let opcode = if sc.binary { OpCode::Binary } else { OpCode::Text };
    let subscribe = sc.subscribe.as_ref().map(|(share, channel)| {
        (*share, serde_json::json!({"op": "subscribe", "channel": channel}).to_string())
    });
    let slow = sc.slow_readers;
    let total = sc.duration();
    let phases: Vec<PhaseReport> = (sc.phases.iter())
        .map(|p| PhaseReport {
            name: p.name.clone(),
            duration_s: p.secs,
            planned_connections: p.connections,
            message_rate: p.message_rate,
            ..PhaseReport::default()
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut msg = Vec::with_capacity(largest + 64);
    let (mut dialled, mut established, mut pending) = (0u64, 0u64, 0u64);
    let (mut subscribers, mut slow_readers, mut peak_open, mut closed_by_ramp) = (0u64, 0u64, 0u64, 0u64);
    let (mut sent, mut lost, mut abandoned) = (0u64, 0u64, 0u64);
    let (mut scheduled, mut late, mut skipped) = (0u64, 0u64, 0u64);
    let mut dial_failed = Causes::new();
    let mut dropped = Causes::new();
    let mut handshake_latency = Latency::new();
    let mut rx = Rx {
        now: Instant::now(),
        phases,
        echoes: 0,
        pushed: 0,
        payload_errors: 0,
        latency: Latency::new(),
        recent: Latency::new(),
    };
    // Connections open or being set up and not being closed by us.
    let mut live = 0u64;
    // Newest last: the ramp closes from the end.
    let mut order: Vec<(usize, u32)> = Vec::new();
    // `(due, key, generation)`, earliest first.
    let mut due: BinaryHeap<Reverse<(Instant, usize, u32)>> = BinaryHeap::new();
    let mut dial_credit = 0.0f64;
    // Connections dialled so far as senders and as subscribers.
    let mut dialled_as = [0u64; 2];
    // How the connections the ramp closed ended (those closed at the end are added).
    let mut ramp_close = CloseStats::default();

    ctl.ready(0);
    ctl.phase("running");
    let start = Instant::now();
    let end = start + total;
    let window_start = Snapshot::take(&common.server_pid)?;
    let mut last_turn = start;
    let mut held_count = 0usize;
    while !ctl.stopped() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let t = now.duration_since(start).as_secs_f64();
        let phase = sc.phase_at(t);
        ctl.target(sc.rising_target(phase));

        // Connections: towards the ramp's count.
        let target = sc.conns.rate_at(t).round() as u64;
        if live < target {
            let limit = sc.phases[phase].connect_rate;
            let allowed = match limit {
                Some(rate) => {
                    // At most a tenth of a second's worth saved up.
                    dial_credit = (dial_credit + rate * now.duration_since(last_turn).as_secs_f64())
                        .min((rate / 10.0).max(1.0));
                    dial_credit as u64
                }
                None => u64::MAX,
            };
            let room = (common.concurrency.max(1) as u64).saturating_sub(pending);
            let n = (target - live).min(allowed).min(room);
            for _ in 0..n {
                let i = dialled;
                dialled += 1;
                if limit.is_some() {
                    dial_credit -= 1.0;
                }
                let role = match &subscribe {
                    Some((share, _)) if picked(i, *share) => Role::Subscriber,
                    _ => Role::Sender,
                };
                let nth_of_role = dialled_as[role as usize];
                dialled_as[role as usize] += 1;
                let state = State {
                    role,
                    // Counted within the role: drawn over all connections, the two shares could
                    // pick the same ones (every 20th is also every 10th).
                    slow: slow.is_some_and(|(share, _)| picked(nth_of_role, share)),
                    closing: false,
                    in_flight: VecDeque::new(),
                    next_seq: 0,
                    rx_len: 0,
                    held: None,
                    last_read: None,
                };
                match driver.dial(state) {
                    Ok(key) => {
                        pending += 1;
                        live += 1;
                        // Connections that ended on their own leave stale entries: dropped
                        // here, so that a server that keeps closing them cannot grow the list.
                        if order.len() > 2 * driver.conns.len() + 1024 {
                            let conns = &driver.conns;
                            order.retain(|&(k, g)| conns.get(k).is_some_and(|c| c.generation == g));
                        }
                        order.push((key, driver.conns[key].generation));
                    }
                    Err(cause) => bump(&mut dial_failed, cause),
                }
            }
        } else if live > target {
            while live > target {
                let Some((key, generation)) = order.pop() else { break };
                let Some(conn) = driver.conns.get_mut(key).filter(|c| c.generation == generation) else {
                    continue;
                };
                if conn.state.closing {
                    continue;
                }
                conn.state.closing = true;
                live -= 1;
                closed_by_ramp += 1;
                if conn.phase() == Phase::Open {
                    if let Err(cause) = driver.close(key) {
                        lost += driver.remove(key).map_or(0, |c| c.state.in_flight.len() as u64);
                        bump(&mut dropped, cause);
                    }
                } else {
                    // Still being set up: given up.
                    pending -= u64::from(!conn.counted);
                    driver.remove(key);
                }
            }
        }
        last_turn = now;

        // Wait for the next send, the next held event or a short tick (the ramps move).
        let mut wake = (now + Duration::from_millis(10)).min(end);
        if let Some(Reverse((at, _, _))) = due.peek() {
            wake = wake.min(*at);
        }
        let ready = driver.poll(wake.saturating_duration_since(now))?;
        let now = Instant::now();
        rx.now = now;
        let mut handle = |driver: &mut Driver<State>, key: usize, event: Event| {
            let status = driver.on_ready(key, event, &mut |st, item| rx.on_item(st, item));
            let Some(conn) = driver.conns.get_mut(key) else { return };
            match status {
                Status::Busy => {}
                Status::Opened => {
                    conn.counted = true;
                    pending -= 1;
                    established += 1;
                    handshake_latency.record(now.duration_since(conn.started));
                    subscribers += u64::from(conn.state.role == Role::Subscriber);
                    slow_readers += u64::from(conn.state.slow);
                    if conn.state.closing {
                        let _ = driver.close(key);
                        return;
                    }
                    match (&subscribe, conn.state.role) {
                        (Some((_, command)), Role::Subscriber) => {
                            conn.queue(OpCode::Text, command.as_bytes(), &mut driver.wire);
                            if let Err(cause) = driver.flush(key) {
                                driver.remove(key);
                                live -= 1;
                                bump(&mut dropped, cause);
                            }
                        }
                        _ => {
                            // The first send a random part of a message into the schedule, so
                            // that connections opened together do not send together.
                            let since = now.duration_since(start);
                            let first = sc.rate.as_ref().and_then(|r| r.after_duration(since, rng.f64()));
                            if let Some(at) = first {
                                due.push(Reverse((start + at, key, conn.generation)));
                            }
                        }
                    }
                }
                Status::Done(cause) => {
                    let Some(conn) = driver.remove(key) else { return };
                    if conn.counted && conn.state.closing {
                        abandoned += conn.state.in_flight.len() as u64;
                        ramp_close.count(cause);
                    } else if !conn.counted {
                        pending -= 1;
                        if !conn.state.closing {
                            live -= 1;
                            bump(&mut dial_failed, end_cause(cause));
                        }
                    } else if !conn.state.closing {
                        live -= 1;
                        lost += conn.state.in_flight.len() as u64;
                        bump(&mut dropped, end_cause(cause));
                    }
                }
            }
        };
        for &(key, event) in &ready {
            let Some(conn) = driver.conns.get_mut(key) else { continue };
            if let (true, Some((_, pause))) = (conn.state.slow && conn.phase() == Phase::Open, slow) {
                // A slow reader: hold what is readable until a pause after its last read.
                let at = conn.state.last_read.map_or(now, |last| last + pause);
                if at > now || conn.state.held.is_some() {
                    match &mut conn.state.held {
                        Some((_, held)) => held.merge(event),
                        None => {
                            conn.state.held = Some((at, event));
                            held_count += 1;
                        }
                    }
                    continue;
                }
                conn.state.last_read = Some(now);
            }
            handle(&mut driver, key, event);
        }
        driver.give_back(ready);
        if held_count > 0 {
            let keys: Vec<usize> = (driver.conns.iter())
                .filter(|(_, c)| c.state.held.is_some_and(|(at, _)| at <= now))
                .map(|(key, _)| key)
                .collect();
            for key in keys {
                let conn = &mut driver.conns[key];
                let Some((_, event)) = conn.state.held.take() else { continue };
                conn.state.last_read = Some(now);
                handle(&mut driver, key, event);
            }
            // Recounted: connections removed with an event held took theirs with them.
            held_count = driver.conns.iter().filter(|(_, c)| c.state.held.is_some()).count();
        }

        // Sends due by now.
        while let Some(Reverse((at, key, generation))) = due.peek().copied().filter(|r| r.0 .0 <= now) {
            due.pop();
            let Some(conn) = driver.conns.get_mut(key).filter(|c| c.generation == generation) else {
                continue;
            };
            if conn.state.closing || conn.phase() != Phase::Open {
                continue;
            }
            let mut next = Some(at);
            while let Some(at) = next.filter(|&at| at <= now && at < end) {
                let since = at.duration_since(start);
                next = sc.rate.as_ref().and_then(|r| r.after_duration(since, 1.0)).map(|d| start + d);
                let phase = sc.phase_at(since.as_secs_f64());
                scheduled += 1;
                if conn.state.in_flight.len() >= MAX_OUTSTANDING || conn.pending_out() >= MAX_UNWRITTEN {
                    skipped += 1;
                    continue;
                }
                let size = sc.size(rng.f64());
                let ts = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                sc.template.fill(&mut msg, conn.state.next_seq, ts.as_micros() as u64, size);
                conn.queue(opcode, &msg, &mut driver.wire);
                conn.state.in_flight.push_back((at, msg.len(), phase));
                conn.state.next_seq += 1;
                rx.phases[phase].sent += 1;
                sent += 1;
                late += u64::from(is_late(at, next, now));
            }
            if let Err(cause) = driver.flush(key) {
                lost += driver.remove(key).map_or(0, |c| c.state.in_flight.len() as u64);
                live -= 1;
                bump(&mut dropped, cause);
                continue;
            }
            if let Some(at) = next.filter(|&at| at < end) {
                due.push(Reverse((at, key, generation)));
            }
        }

        let open = driver.conns.iter().filter(|(_, c)| c.counted).count() as u64;
        peak_open = peak_open.max(open);
        let phase_now = sc.phase_at(now.duration_since(start).as_secs_f64());
        rx.phases[phase_now].open_at_end = open;
        ctl.tick_with(Tick {
            open,
            ops: rx.echoes,
            sent: Some(sent),
            errors: Some(rx.payload_errors + lost + skipped + dropped.values().sum::<u64>()),
            recent: Some(&mut rx.recent),
        });
    }
    let window_end = Snapshot::take(&common.server_pid)?;
    // The last echoes: up to the drain timeout.
    let drain_end = Instant::now() + args.drain_timeout;
    while Instant::now() < drain_end && !ctl.stopped() {
        let waiting: usize = driver.conns.iter().map(|(_, c)| c.state.in_flight.len()).sum();
        if waiting == 0 {
            break;
        }
        let ready = driver.poll(Duration::from_millis(20))?;
        rx.now = Instant::now();
        for &(key, event) in &ready {
            let Status::Done(end) = driver.on_ready(key, event, &mut |st, item| rx.on_item(st, item)) else {
                continue;
            };
            match driver.remove(key) {
                Some(conn) if conn.counted && conn.state.closing => {
                    abandoned += conn.state.in_flight.len() as u64;
                    ramp_close.count(end);
                }
                Some(conn) if !conn.state.closing => {
                    lost += conn.state.in_flight.len() as u64;
                    bump(&mut dropped, end_cause(end));
                }
                _ => {}
            }
        }
        driver.give_back(ready);
    }
    lost += driver
        .conns
        .iter()
        .filter(|(_, c)| !c.state.closing)
        .map(|(_, c)| c.state.in_flight.len() as u64)
        .sum::<u64>();
    let mut close = driver.close_all(ctl, args.drain_timeout, &mut |_, _| {})?;
    close.merge(ramp_close);
    let window_s = window_end.wall_s(&window_start);
    let mut report = Report {
        mode: "scenario".into(),
        url: target.url.clone(),
        scenario: sc.path.clone(),
        phases: rx.phases,
        dialled,
        established,
        dial_failed,
        handshake_latency,
        closed_by_ramp,
        dropped,
        peak_open,
        subscribers,
        slow_readers,
        sent,
        echoes: rx.echoes,
        pushed: rx.pushed,
        payload_errors: rx.payload_errors,
        lost,
        abandoned,
        scheduled,
        late,
        skipped,
        msgs_per_s: round3(ratio(rx.echoes as f64, window_s)),
        duration_s: round3(total.as_secs_f64()),
        latency: rx.latency,
        cpu: window_end.usage_since(&window_start, rx.echoes),
        close,
        ok: false,
        run: RunInfo::new(ctl.stopped(), driver.backend()),
    };
    super::Report::finish(&mut report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::picked;

    #[test]
    fn shares_are_spread_evenly() {
        let count = |share: f64| (0..1000).filter(|&i| picked(i, share)).count();
        assert_eq!((count(0.0), count(0.1), count(0.25), count(1.0)), (0, 100, 250, 1000));
        // 1 in 4: the 4th, 8th, …
        assert!(!picked(0, 0.25) && picked(3, 0.25) && !picked(4, 0.25));
    }
}
