//! `echo`: C connections each keep P messages of S bytes in flight (closed loop) or send R
//! messages per second on a fixed schedule (open loop, `--message-rate`/`--total-rate`); every
//! echo is checked byte for byte and its round trip recorded. New messages for a connection are
//! written in one batch (one `write`) per loop turn. After a warm-up, the measured window gives
//! messages per second, RTT percentiles and CPU time per message of the client and, with
//! `--server-pid`, of the server.
//!
//! Open loop: each connection's sends are due every `1/R` s (the connections' schedules are
//! staggered over one interval); due times sit in a min-heap and the poll sleeps until the
//! earliest. An echo's latency counts from its message's *scheduled* time (as wrk2 does), so a
//! server that falls behind shows its queueing instead of being offered less load. A send made
//! more than one interval (and at least [`TIMER_SLACK`]) after its due time is counted `late`
//! (the client could not keep up: its latencies then include its own delay). A connection holds
//! at most [`MAX_OUTSTANDING`] messages not yet echoed and [`MAX_UNWRITTEN`] bytes the kernel has
//! not taken; a send due beyond that is `skipped` (counted, not sent, not measured).
//!
//! With `--deflate`, messages go out compressed where the server agreed (the connection code
//! compresses and inflates, so the check below sees plain payloads either way); `--payload json`
//! gives deflate something realistic to work on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use throng::proto::{DataKind, Item, OpCode};

use crate::cli::{EchoArgs, Payload};
use crate::conn::{Conn, Phase, Status, Wire};
use crate::ctl::{Ctl, Tick};
use crate::deflate::DeflateReport;
use crate::driver::{end_cause, CloseStats, DialPlan, DialStats, Driver};
use crate::mode::{Report as _, RunInfo};
use crate::net::Sources;
use crate::procfs::{Snapshot, Usage};
use crate::ramp::Ramp;
use crate::stats::{bump, merge_causes, ratio, round3, Causes, Latency, Traffic};
use crate::target::Target;
use crate::threshold::Metrics;

/// Bytes at the start of each payload that carry its sequence number (as hex, so text stays text).
const STAMP: usize = 16;

/// Open loop: the most messages a connection has sent and not yet seen echoed.
pub(crate) const MAX_OUTSTANDING: usize = 1024;

/// Open loop: the most bytes a connection keeps queued that the kernel has not taken yet.
pub(crate) const MAX_UNWRITTEN: usize = 256 * 1024;

/// Open loop: the poll's timer resolution (mio rounds timeouts up to milliseconds); a send this
/// late is on time.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Per connection.
struct EchoState {
    /// Send times of the messages in flight, oldest first (echoes come back in order); in open
    /// loop, their scheduled times.
    sent_at: VecDeque<Instant>,
    next_seq: u64,
    expect_seq: u64,
    /// Bytes of the current incoming message seen so far, and whether they all matched.
    rx_pos: usize,
    rx_ok: bool,
}

/// The receive side, shared by all connections.
struct Rx {
    pattern: Pattern,
    kind: DataKind,
    now: Instant,
    in_window: bool,
    received: u64,
    window_msgs: u64,
    payload_errors: u64,
    rtt: Latency,
    /// The latencies since the last per-second sample (the series and the status line).
    recent: Latency,
}

impl Rx {
    fn on_item(&mut self, st: &mut EchoState, item: &Item<'_>) {
        let Item::Data { kind, chunk, first, last } = *item else { return };
        if first {
            st.rx_pos = 0;
            st.rx_ok = kind == self.kind;
        }
        st.rx_ok &= self.pattern.matches(st.expect_seq, st.rx_pos, chunk);
        st.rx_pos += chunk.len();
        if !last {
            return;
        }
        if !st.rx_ok || st.rx_pos != self.pattern.template.len() {
            self.payload_errors += 1;
        }
        match st.sent_at.pop_front() {
            Some(sent) => {
                let latency = self.now.duration_since(sent);
                if self.in_window {
                    self.rtt.record(latency);
                    self.window_msgs += 1;
                }
                self.recent.record(latency);
            }
            None => self.payload_errors += 1,
        }
        st.expect_seq += 1;
        self.received += 1;
    }
}

/// `seq` as 16 lowercase hex digits.
fn stamp(seq: u64) -> [u8; STAMP] {
    let mut out = [0u8; STAMP];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = b"0123456789abcdef"[((seq >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// What every message of a run holds: a template, with the message's sequence stamp at
/// `stamp_at` (cut where the template ends).
#[derive(Clone, Debug)]
struct Pattern {
    template: Vec<u8>,
    stamp_at: usize,
}

/// Where the stamp of a `json` payload goes: inside `{"seq":"…"`.
const JSON_HEAD: &[u8] = b"{\"seq\":\"";

impl Pattern {
    /// `size` bytes of `payload`.
    fn new(payload: Payload, size: usize) -> Pattern {
        match payload {
            Payload::Letters => {
                Pattern { template: (0..size).map(|i| b'a' + (i % 26) as u8).collect(), stamp_at: 0 }
            }
            Payload::Random => {
                let mut rng = fastrand::Rng::with_seed(7);
                Pattern { template: (0..size).map(|_| rng.alphanumeric() as u8).collect(), stamp_at: 0 }
            }
            Payload::Json => Pattern { template: json_template(size), stamp_at: JSON_HEAD.len() },
        }
    }

    /// The stamp's place in the template.
    fn stamp_range(&self) -> std::ops::Range<usize> {
        let len = self.template.len();
        self.stamp_at.min(len)..(self.stamp_at + STAMP).min(len)
    }

    /// Whether `chunk`, found at `offset` in a message, matches message `seq`.
    fn matches(&self, seq: u64, offset: usize, chunk: &[u8]) -> bool {
        let end = offset + chunk.len();
        if end > self.template.len() {
            return false;
        }
        let stamp = stamp(seq);
        let at = self.stamp_range();
        // Before the stamp, the stamp, after it: each compared where the chunk overlaps it.
        let parts =
            [(0, at.start, None), (at.start, at.end, Some(stamp)), (at.end, self.template.len(), None)];
        parts.into_iter().all(|(from, to, stamp)| {
            let (lo, hi) = (from.max(offset), to.min(end));
            if lo >= hi {
                return true;
            }
            let want = match stamp {
                Some(ref stamp) => &stamp[lo - from..hi - from],
                None => &self.template[lo..hi],
            };
            chunk[lo - offset..hi - offset] == *want
        })
    }

    /// The payload of message `seq` into `msg` (a copy of the template).
    fn fill(&self, msg: &mut [u8], seq: u64) {
        let at = self.stamp_range();
        let n = at.len();
        msg[at].copy_from_slice(&stamp(seq)[..n]);
    }
}

/// A JSON document of exactly `size` bytes (when `size` allows one): the stamp's field, then
/// records of made-up events, spaces before the closing brace. Smaller sizes get the start of
/// the smallest document.
fn json_template(size: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = ["click", "view", "login", "logout", "purchase", "scroll", "share", "search"];
    const TAIL: &[u8] = b"]}";
    let mut out = Vec::with_capacity(size.max(64));
    out.extend_from_slice(JSON_HEAD);
    out.extend_from_slice(&[b'0'; STAMP]);
    out.extend_from_slice(b"\",\"items\":[");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut record = String::new();
    for id in 1u64.. {
        record.clear();
        let (word, other) = (WORDS[rng.usize(..WORDS.len())], WORDS[rng.usize(..WORDS.len())]);
        let separator = if id == 1 { "" } else { "," };
        record.push_str(&format!(
            "{separator}{{\"id\":{id},\"user\":\"user-{}\",\"event\":\"{word}\",\"score\":{}.{:03},\"tags\":[\"{other}\",\"{word}\"],\"ok\":{}}}",
            rng.u32(1000..100_000),
            rng.u32(0..100),
            rng.u32(0..1000),
            rng.bool()
        ));
        if out.len() + record.len() + TAIL.len() > size {
            break;
        }
        out.extend_from_slice(record.as_bytes());
    }
    out.push(b']');
    // Whitespace before the closing brace keeps it JSON at the exact size.
    out.resize(size.max(out.len() + 1) - 1, b' ');
    out.push(b'}');
    out.truncate(size);
    out
}

/// How an open-loop run kept its schedule. Counts cover the sends due in the measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct OpenLoop {
    /// Messages per second per connection.
    pub(crate) rate_per_conn: f64,
    /// All connections together (the sum over the processes).
    pub(crate) total_rate: f64,
    /// Sends due in the measured window.
    pub(crate) scheduled: u64,
    /// Of those, sent more than one interval (and at least 1 ms) after their due time.
    pub(crate) late: u64,
    /// Of those, not sent: the connection's backlog was full.
    pub(crate) skipped: u64,
    /// `--ramp`, as written (then the rates above are its peak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ramp: Option<String>,
}

impl OpenLoop {
    fn merge(&mut self, other: &OpenLoop) {
        self.total_rate = round3(self.total_rate + other.total_rate);
        self.scheduled += other.scheduled;
        self.late += other.late;
        self.skipped += other.skipped;
    }

    fn line(&self) -> String {
        let ramp = self.ramp.as_ref().map_or_else(String::new, |ramp| format!("ramp {ramp}, peak "));
        format!(
            "{ramp}{:.1} msg/s per conn ({:.0}/s in all): {} due in the window, {} late, {} skipped (backlog full)",
            self.rate_per_conn, self.total_rate, self.scheduled, self.late, self.skipped
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    mode: String,
    url: String,
    conns: usize,
    size: usize,
    /// Closed loop: messages in flight per connection (0 in open loop).
    inflight: usize,
    /// Open loop: the schedule and how well it was kept (absent in closed loop).
    open_loop: Option<OpenLoop>,
    binary: bool,
    /// `--payload`: `letters`, `json` or `random`.
    #[serde(default)]
    payload: String,
    warmup_s: f64,
    duration_s: f64,
    dial: DialStats,
    /// Echoes received in the measured window.
    messages: u64,
    /// Length of the measured window (the longest of the processes').
    window_s: f64,
    msgs_per_s: f64,
    /// Payload throughput, one direction (uncompressed).
    mib_per_s: f64,
    /// Bytes through the sockets in the measured window, each way (with `--deflate`, the
    /// compressed frames).
    #[serde(default)]
    wire_mib_per_s_sent: f64,
    #[serde(default)]
    wire_mib_per_s_received: f64,
    /// The measured window's bytes and messages.
    #[serde(default)]
    window_traffic: Traffic,
    /// The whole run's, from the first connect to the last close.
    #[serde(default)]
    traffic: Traffic,
    /// `--deflate`: how the connections negotiated compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deflate: Option<DeflateReport>,
    rtt: Latency,
    total_sent: u64,
    total_received: u64,
    payload_errors: u64,
    /// Messages sent and never echoed (drain timeout or connection lost).
    lost: u64,
    /// Connections that ended during the run, by cause.
    dropped: Causes,
    pub(crate) cpu: Usage,
    close: CloseStats,
    ok: bool,
    #[serde(flatten)]
    run: RunInfo,
}

impl super::Report for Report {
    fn merge(&mut self, other: Self) {
        self.conns += other.conns;
        if let (Some(open), Some(other)) = (&mut self.open_loop, &other.open_loop) {
            open.merge(other);
        }
        self.dial.merge(other.dial);
        self.messages += other.messages;
        self.window_s = self.window_s.max(other.window_s);
        // The processes measured the same window: their rates add up.
        self.msgs_per_s = round3(self.msgs_per_s + other.msgs_per_s);
        self.mib_per_s = round3(self.mib_per_s + other.mib_per_s);
        self.wire_mib_per_s_sent = round3(self.wire_mib_per_s_sent + other.wire_mib_per_s_sent);
        self.wire_mib_per_s_received = round3(self.wire_mib_per_s_received + other.wire_mib_per_s_received);
        self.window_traffic.merge(&other.window_traffic);
        self.traffic.merge(&other.traffic);
        crate::deflate::merge(&mut self.deflate, other.deflate);
        self.rtt.add(&other.rtt);
        self.total_sent += other.total_sent;
        self.total_received += other.total_received;
        self.payload_errors += other.payload_errors;
        self.lost += other.lost;
        merge_causes(&mut self.dropped, other.dropped);
        self.cpu.merge(&other.cpu, self.messages);
        self.close.merge(other.close);
        self.run.merge(&other.run);
        self.finish();
    }

    fn rows(&self) -> Vec<(String, String)> {
        let load = match &self.open_loop {
            Some(OpenLoop { ramp: Some(ramp), .. }) => format!("open loop ramping {ramp}"),
            Some(open) => format!("open loop at {:.1} msg/s each", open.rate_per_conn),
            None => format!("{} in flight each", self.inflight),
        };
        let mut rows = vec![
            (
                "echo".into(),
                format!(
                    "{}: {} conns, {} B {} ({}), {load}, warm-up {}s, measure {}s, {} process(es)",
                    self.url,
                    self.conns,
                    self.size,
                    if self.binary { "binary" } else { "text" },
                    self.payload,
                    self.warmup_s,
                    self.duration_s,
                    self.run.procs
                ),
            ),
            ("dial".into(), self.dial.line()),
        ];
        if let Some(deflate) = &self.deflate {
            rows.push(("deflate".into(), deflate.line()));
        }
        if let Some(open) = &self.open_loop {
            rows.push(("schedule".into(), open.line()));
        }
        rows.extend([
            (
                "throughput".into(),
                format!(
                    "{:.0} msg/s, {:.2} MiB/s of payload each way ({} messages in {:.2}s); on the wire {:.2} MiB/s sent, {:.2} MiB/s received",
                    self.msgs_per_s,
                    self.mib_per_s,
                    self.messages,
                    self.window_s,
                    self.wire_mib_per_s_sent,
                    self.wire_mib_per_s_received
                ),
            ),
            ("traffic".into(), self.traffic.line()),
            (
                if self.open_loop.is_some() { "latency (from schedule)" } else { "rtt" }.into(),
                self.rtt.summary().line(),
            ),
            ("cpu".into(), self.cpu.line("msg")),
            (
                "checks".into(),
                format!(
                    "{} sent, {} received, {} payload errors, {} lost, dropped {:?}",
                    self.total_sent, self.total_received, self.payload_errors, self.lost, self.dropped
                ),
            ),
            ("close".into(), self.close.line()),
        ]);
        rows
    }

    fn metrics(&self) -> Metrics {
        let skipped = self.open_loop.as_ref().map_or(0, |open| open.skipped);
        Metrics {
            latency: self.rtt.summary(),
            errors: self.payload_errors + self.lost + skipped,
            ops: self.total_sent + skipped,
            rate: Some(self.msgs_per_s),
            late: self.open_loop.as_ref().map(|open| (open.late, open.scheduled)),
        }
    }

    fn ok(&self) -> bool {
        self.ok
    }

    fn chart(&self) -> (&'static str, &Latency) {
        match self.open_loop {
            Some(_) => ("Latency from the scheduled send (measured window)", &self.rtt),
            None => ("Round-trip latency (measured window)", &self.rtt),
        }
    }

    fn ops_name(&self) -> &'static str {
        "echoes"
    }

    fn run_info(&mut self) -> &mut RunInfo {
        &mut self.run
    }

    fn apply(&mut self, extra: super::Extra) {
        if let super::Extra::Window(start, end) = extra {
            self.cpu.set_server(end.server_use_since(&start, self.messages));
        }
    }

    fn finish(&mut self) {
        self.ok = !self.run.interrupted
            && self.dial.established == self.conns as u64
            && self.payload_errors == 0
            && self.lost == 0
            && self.dropped.is_empty()
            && self.close.all_clean()
            && self.messages > 0;
    }
}

/// Queues the next message on a connection: `(conn, wire, sent or due at, sent count)`.
type SendFn<'a> = dyn FnMut(&mut Conn<EchoState>, &mut Wire, Instant, &mut u64) + 'a;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Warmup,
    Measure,
    Drain,
}

/// Open loop: when each connection's next send is due, and how well the schedule is kept.
struct Schedule {
    /// At a fixed rate, the time between two sends of a connection.
    interval: Duration,
    /// With `--ramp`, the changing rate (then `interval` is that of the peak rate).
    ramp: Option<Ramp>,
    /// Where the ramp's time starts (the start of the warm-up).
    start: Instant,
    /// `(due, key)`, earliest first.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    stats: OpenLoop,
}

impl Schedule {
    /// `rate_per_conn` at a fixed rate; with a ramp, its peak.
    fn new(rate_per_conn: f64, ramp: Option<Ramp>, conns: usize) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate_per_conn);
        let label = ramp.as_ref().map(|ramp| ramp.text().to_owned());
        Schedule {
            interval,
            ramp,
            start: Instant::now(),
            due: BinaryHeap::with_capacity(conns),
            stats: OpenLoop {
                rate_per_conn: round3(rate_per_conn),
                total_rate: round3(rate_per_conn * conns as f64),
                ramp: label,
                ..OpenLoop::default()
            },
        }
    }

    /// Connection `i` of `n` first sends at `start + i/n` of an interval (staggered, so that the
    /// connections do not all send in the same turn); with a ramp, when `(i + 1)/n` of a message
    /// is due (a ramp from 0 sends nothing at its very start).
    fn start(&mut self, keys: &[usize], start: Instant) {
        self.start = start;
        let n = keys.len().max(1) as u32;
        for (i, &key) in keys.iter().enumerate() {
            let first = match &self.ramp {
                None => Some(start + self.interval * i as u32 / n),
                Some(ramp) => ramp
                    .after_duration(Duration::ZERO, f64::from(i as u32 + 1) / f64::from(n))
                    .map(|at| start + at),
            };
            if let Some(first) = first {
                self.due.push(Reverse((first, key)));
            }
        }
    }

    /// The earliest due time.
    fn next(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// A connection's send after the one due at `due` (`None`: the ramp ends at rate 0).
    fn after(&self, due: Instant) -> Option<Instant> {
        match &self.ramp {
            None => Some(due + self.interval),
            Some(ramp) => ramp.after_duration(due.duration_since(self.start), 1.0).map(|at| self.start + at),
        }
    }
}

/// Whether a send due at `due`, followed by one at `next`, made at `now` is late: more than one
/// interval (and at least [`TIMER_SLACK`]) after its due time (also the scenarios' rule).
pub(crate) fn is_late(due: Instant, next: Option<Instant>, now: Instant) -> bool {
    let interval = next.map_or(Duration::MAX, |next| next.duration_since(due));
    now.duration_since(due) > interval.max(TIMER_SLACK)
}

pub(crate) fn run(args: &EchoArgs, target: &Target, sources: Sources, ctl: &Ctl) -> io::Result<Report> {
    let common = &args.common;
    let rate_per_conn = match (args.message_rate, args.total_rate, &args.ramp) {
        (Some(rate), _, _) => Some(rate),
        (None, Some(total), _) => Some(total / args.conns.max(1) as f64),
        (None, None, Some(ramp)) => Some(ramp.peak()),
        (None, None, None) => None,
    };
    let inflight = if rate_per_conn.is_some() { 0 } else { args.inflight.max(1) };
    let scratch = (256 * 1024).max(args.size + 1024);
    let mut driver: Driver<EchoState> = Driver::new(
        target,
        sources,
        scratch,
        args.common.backend,
        args.common.deflate || args.common.deflate_context,
    )?;
    let plan = DialPlan {
        n: args.conns,
        rate: None,
        concurrency: common.concurrency,
        connect_timeout: common.connect_timeout,
        wait_ready: false,
    };
    let make_state = |_| EchoState {
        sent_at: VecDeque::with_capacity(inflight.max(1)),
        next_seq: 0,
        expect_seq: 0,
        rx_pos: 0,
        rx_ok: true,
    };
    let dial = driver.establish(ctl, &plan, make_state, &mut |_, _| false)?;
    ctl.ready(driver.conns.len() as u64);

    let pattern = Pattern::new(args.payload, args.size);
    let mut msg = pattern.template.clone();
    let (opcode, kind) =
        if args.binary { (OpCode::Binary, DataKind::Binary) } else { (OpCode::Text, DataKind::Text) };
    let mut rx = Rx {
        pattern: pattern.clone(),
        kind,
        now: Instant::now(),
        in_window: false,
        received: 0,
        window_msgs: 0,
        payload_errors: 0,
        rtt: Latency::new(),
        recent: Latency::new(),
    };
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut dropped = Causes::new();
    let mut schedule = rate_per_conn.map(|rate| Schedule::new(rate, args.ramp.clone(), driver.conns.len()));

    // Queues message `seq` of `conn`, sent (or due) at `at`.
    let mut send = |conn: &mut Conn<EchoState>, wire: &mut Wire, at: Instant, sent: &mut u64| {
        pattern.fill(&mut msg, conn.state.next_seq);
        conn.queue(opcode, &msg, wire);
        conn.state.sent_at.push_back(at);
        conn.state.next_seq += 1;
        *sent += 1;
    };

    // Closed loop: tops connection `key` up to `inflight` messages and writes them in one batch.
    let refill =
        |driver: &mut Driver<EchoState>, send: &mut SendFn<'_>, key: usize, now: Instant, sent: &mut u64| {
            let conn = &mut driver.conns[key];
            if conn.phase() != Phase::Open {
                return Ok(());
            }
            while conn.state.sent_at.len() < inflight {
                send(conn, &mut driver.wire, now, sent);
            }
            driver.flush(key)
        };

    // A child waits for the parent's `go`, so that every process measures the same window.
    ctl.phase("waiting for the other processes");
    while !ctl.go() && !ctl.stopped() {
        driver.poll_once(Duration::from_millis(20), &mut dropped, &mut |_, _| {})?;
    }
    let mut stage = Stage::Warmup;
    ctl.phase("warming up");
    let start = Instant::now();
    let measure_start = start + args.warmup;
    let measure_end = measure_start + args.duration;
    let mut drain_end = measure_end;
    // Open loop: sends due before this are made, even in the turn that ends the window late (a
    // loaded client wakes after `measure_end` with sends still due before it); a stop cuts it.
    let mut sends_until = measure_end;
    let keys: Vec<usize> = driver.conns.iter().map(|(key, _)| key).collect();
    match &mut schedule {
        Some(schedule) => schedule.start(&keys, start),
        None => {
            for key in keys {
                if let Err(cause) = refill(&mut driver, &mut send, key, start, &mut sent) {
                    if let Some(conn) = driver.remove(key) {
                        lost += conn.state.sent_at.len() as u64;
                    }
                    bump(&mut dropped, cause);
                }
            }
        }
    }
    let pids = &common.server_pid;
    let mut window_start = Snapshot::take(pids)?;
    let mut window_end = None;
    let (mut traffic_start, mut traffic_end) = (driver.traffic(), None);
    loop {
        let now = Instant::now();
        if stage == Stage::Warmup && (now >= measure_start || ctl.stopped()) {
            stage = Stage::Measure;
            ctl.phase("measuring");
            window_start = Snapshot::take(pids)?;
            traffic_start = driver.traffic();
            ctl.measuring(driver.conns.len() as u64);
        }
        if stage == Stage::Measure && (now >= measure_end || ctl.stopped()) {
            stage = Stage::Drain;
            ctl.phase("draining");
            window_end = Some(Snapshot::take(pids)?);
            traffic_end = Some(driver.traffic());
            ctl.measured(rx.window_msgs);
            drain_end = now + args.drain_timeout;
            sends_until = now.min(measure_end);
        }
        let outstanding = sent - rx.received - lost;
        let sends_left = schedule.as_ref().and_then(Schedule::next).is_some_and(|due| due < sends_until);
        if stage == Stage::Drain
            && ((outstanding == 0 && !sends_left) || now >= drain_end || driver.conns.is_empty())
        {
            break;
        }
        let boundary = match stage {
            Stage::Warmup => measure_start,
            Stage::Measure => measure_end,
            Stage::Drain => drain_end,
        };
        let mut wake = boundary;
        if let Some(due) = schedule.as_ref().and_then(Schedule::next).filter(|&due| due < sends_until) {
            wake = wake.min(due);
        }
        let timeout = wake.saturating_duration_since(now).min(Duration::from_millis(100));
        let ready = driver.poll(timeout)?;
        rx.now = Instant::now();
        rx.in_window = stage == Stage::Measure && rx.now < measure_end;
        for &(key, readiness) in &ready {
            let status = driver.on_ready(key, readiness, &mut |st, item| rx.on_item(st, item));
            let result = match status {
                Status::Done(end) => Err(end_cause(end)),
                _ if stage == Stage::Drain || schedule.is_some() => Ok(()),
                _ => refill(&mut driver, &mut send, key, rx.now, &mut sent),
            };
            if let Err(cause) = result {
                if let Some(conn) = driver.remove(key) {
                    lost += conn.state.sent_at.len() as u64;
                }
                bump(&mut dropped, cause);
            }
        }
        driver.give_back(ready);
        if let Some(schedule) = schedule.as_mut() {
            let window = measure_start..measure_end;
            let now = rx.now;
            while let Some(Reverse((first, key))) = schedule.due.peek().copied().filter(|r| r.0 .0 <= now) {
                schedule.due.pop();
                let Some(conn) = driver.conns.get_mut(key) else { continue };
                if conn.phase() != Phase::Open {
                    continue;
                }
                // Every send due by now goes out in this turn's batch (a stalled turn catches up).
                let mut next_due = Some(first);
                while let Some(due) = next_due.filter(|&due| due <= now && due < sends_until) {
                    next_due = schedule.after(due);
                    let in_window = window.contains(&due);
                    schedule.stats.scheduled += u64::from(in_window);
                    if conn.state.sent_at.len() >= MAX_OUTSTANDING || conn.pending_out() >= MAX_UNWRITTEN {
                        schedule.stats.skipped += u64::from(in_window);
                    } else {
                        send(conn, &mut driver.wire, due, &mut sent);
                        schedule.stats.late += u64::from(in_window && is_late(due, next_due, now));
                    }
                }
                if let Err(cause) = driver.flush(key) {
                    if let Some(conn) = driver.remove(key) {
                        lost += conn.state.sent_at.len() as u64;
                    }
                    bump(&mut dropped, cause);
                    continue;
                }
                if let Some(due) = next_due.filter(|&due| due < sends_until) {
                    schedule.due.push(Reverse((due, key)));
                }
            }
        }
        let skipped = schedule.as_ref().map_or(0, |s| s.stats.skipped);
        let errors = rx.payload_errors + lost + skipped + dropped.values().sum::<u64>();
        ctl.tick_with(Tick {
            open: driver.conns.len() as u64,
            ops: rx.received,
            sent: Some(sent),
            errors: Some(errors),
            recent: Some(&mut rx.recent),
        });
    }
    let window_end = match window_end {
        Some(end) => end,
        None => Snapshot::take(pids)?,
    };
    let window_traffic = traffic_end.unwrap_or_else(|| driver.traffic()).since(&traffic_start);
    let outstanding = sent - rx.received - lost;
    lost += outstanding;
    let close = driver.close_all(ctl, args.drain_timeout, &mut |_, _| {})?;

    let window_s = window_end.wall_s(&window_start);
    let msgs_per_s = ratio(rx.window_msgs as f64, window_s);
    const MIB: f64 = 1024.0 * 1024.0;
    let mib_per_s = msgs_per_s * args.size as f64 / MIB;
    let wire_rate = |bytes: u64| round3(ratio(bytes as f64 / MIB, window_s));
    let mut report = Report {
        mode: "echo".into(),
        url: target.url.clone(),
        conns: args.conns,
        size: args.size,
        inflight,
        open_loop: schedule.map(|schedule| schedule.stats),
        binary: args.binary,
        payload: args.payload.name().into(),
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        dial,
        messages: rx.window_msgs,
        window_s: round3(window_s),
        msgs_per_s: round3(msgs_per_s),
        mib_per_s: round3(mib_per_s),
        wire_mib_per_s_sent: wire_rate(window_traffic.wire_bytes_sent),
        wire_mib_per_s_received: wire_rate(window_traffic.wire_bytes_received),
        window_traffic,
        traffic: driver.traffic(),
        deflate: driver.deflate_report(),
        rtt: rx.rtt,
        total_sent: sent,
        total_received: rx.received,
        payload_errors: rx.payload_errors,
        lost,
        dropped,
        cpu: window_end.usage_since(&window_start, rx.window_msgs),
        close,
        ok: false,
        run: RunInfo::new(ctl.stopped(), driver.backend()),
    };
    report.finish();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_staggered_over_one_interval() {
        let mut schedule = Schedule::new(100.0, None, 4);
        assert_eq!(schedule.interval, Duration::from_millis(10));
        assert_eq!(schedule.stats.total_rate, 400.0);
        let start = Instant::now();
        schedule.start(&[7, 8, 9, 10], start);
        let mut due = Vec::new();
        while let Some(Reverse((at, key))) = schedule.due.pop() {
            due.push((at.duration_since(start), key));
        }
        let ms = Duration::from_micros;
        assert_eq!(due, [(ms(0), 7), (ms(2500), 8), (ms(5000), 9), (ms(7500), 10)]);
        assert_eq!(schedule.next(), None);
        assert_eq!(schedule.after(start), Some(start + Duration::from_millis(10)));
    }

    #[test]
    fn late_means_more_than_one_interval_and_the_timer_slack() {
        let (due, ms) = (Instant::now(), Duration::from_millis);
        assert!(!is_late(due, Some(due + ms(10)), due + ms(10)));
        assert!(is_late(due, Some(due + ms(10)), due + ms(11)));
        // At 10,000/s the interval is below the poll's resolution: 1 ms is still on time.
        assert!(!is_late(due, Some(due + Duration::from_micros(100)), due + ms(1)));
        assert!(!is_late(due, None, due + ms(1000)));
    }

    #[test]
    fn a_ramp_spaces_the_sends_by_its_rate() {
        // 0 → 100/s per connection over 10 s: message n of a connection is due at sqrt(n/5) s.
        let ramp = crate::ramp::parse("0:100:10s").unwrap();
        let mut schedule = Schedule::new(ramp.peak(), Some(ramp), 2);
        assert_eq!(schedule.stats.total_rate, 200.0);
        let start = Instant::now();
        schedule.start(&[0, 1], start);
        let firsts: Vec<_> = std::iter::from_fn(|| schedule.due.pop()).map(|r| r.0 .0 - start).collect();
        let near = |a: Duration, secs: f64| (a.as_secs_f64() - secs).abs() < 1e-6;
        assert!(
            near(firsts[0], (0.5f64 / 5.0).sqrt()) && near(firsts[1], (1.0f64 / 5.0).sqrt()),
            "{firsts:?}"
        );
        let second = schedule.after(start + firsts[1]).unwrap() - start;
        assert!(near(second, (2.0f64 / 5.0).sqrt()), "{second:?}");
    }

    #[test]
    fn payload_check_accepts_any_split_and_catches_changes() {
        for payload in [Payload::Letters, Payload::Json, Payload::Random] {
            for size in [0usize, 1, 8, 15, 16, 17, 24, 25, 100, 1000] {
                let pattern = Pattern::new(payload, size);
                assert_eq!(pattern.template.len(), size, "{payload:?}");
                let mut msg = pattern.template.clone();
                pattern.fill(&mut msg, 0xdead_beef);
                for cut in 0..=size {
                    assert!(pattern.matches(0xdead_beef, 0, &msg[..cut]), "{payload:?} {size} {cut}");
                    assert!(pattern.matches(0xdead_beef, cut, &msg[cut..]), "{payload:?} {size} {cut}");
                }
                // The stamp is all there: another sequence number differs.
                let whole_stamp = pattern.stamp_range().len() == STAMP;
                assert_eq!(pattern.matches(0xdead_bee0, 0, &msg), !whole_stamp, "{payload:?} {size}");
                if size > 0 {
                    let mut bad = msg.clone();
                    bad[size - 1] ^= 1;
                    assert!(!pattern.matches(0xdead_beef, 0, &bad));
                }
                assert!(!pattern.matches(0, size, b"x"));
            }
        }
        assert_eq!(&stamp(0xdead_beef), b"00000000deadbeef");
    }

    #[test]
    fn json_payloads_are_json_of_the_size_asked_for() {
        for size in [40usize, 100, 1000, 4096] {
            let pattern = Pattern::new(Payload::Json, size);
            let mut msg = pattern.template.clone();
            pattern.fill(&mut msg, 42);
            let v: serde_json::Value = serde_json::from_slice(&msg).unwrap();
            assert_eq!(v["seq"], "000000000000002a", "{size}");
            assert_eq!(msg.len(), size);
        }
        let v: serde_json::Value =
            serde_json::from_slice(&Pattern::new(Payload::Json, 1000).template).unwrap();
        assert!(v["items"].as_array().unwrap().len() >= 5, "{v}");
    }
}
