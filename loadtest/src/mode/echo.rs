//! `echo`: C connections each keep P messages of S bytes in flight; every echo is checked
//! byte for byte and its round trip recorded. New messages for a connection are written in one
//! batch (one `write`) per loop turn. After a warm-up, the measured window gives messages per
//! second, RTT percentiles and CPU time per message of the client and, with `--server-pid`, of the
//! server.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use serde::Serialize;
use throng::proto::{DataKind, Item, OpCode};

use crate::cli::EchoArgs;
use crate::conn::{Phase, Status};
use crate::driver::{end_cause, CloseStats, DialStats, Driver};
use crate::mode::Outcome;
use crate::net::Sources;
use crate::procfs::{Snapshot, Usage};
use crate::stats::{bump, round3, Causes, Latency, Percentiles};
use crate::target::Target;

/// Bytes at the start of each payload that carry its sequence number (as hex, so text stays text).
const STAMP: usize = 16;

/// Per connection.
struct EchoState {
    /// Send times of the messages in flight, oldest first (echoes come back in order).
    sent_at: VecDeque<Instant>,
    next_seq: u64,
    expect_seq: u64,
    /// Bytes of the current incoming message seen so far, and whether they all matched.
    rx_pos: usize,
    rx_ok: bool,
}

/// The receive side, shared by all connections.
struct Rx {
    template: Vec<u8>,
    kind: DataKind,
    now: Instant,
    in_window: bool,
    received: u64,
    window_msgs: u64,
    payload_errors: u64,
    rtt: Latency,
}

impl Rx {
    fn on_item(&mut self, st: &mut EchoState, item: &Item<'_>) {
        let Item::Data { kind, chunk, first, last } = *item else { return };
        if first {
            st.rx_pos = 0;
            st.rx_ok = kind == self.kind;
        }
        st.rx_ok &= matches_expected(&self.template, st.expect_seq, st.rx_pos, chunk);
        st.rx_pos += chunk.len();
        if !last {
            return;
        }
        if !st.rx_ok || st.rx_pos != self.template.len() {
            self.payload_errors += 1;
        }
        match st.sent_at.pop_front() {
            Some(sent) if self.in_window => {
                self.rtt.record(self.now.duration_since(sent));
                self.window_msgs += 1;
            }
            Some(_) => {}
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

/// Whether `chunk`, found at `offset` in a message, matches message `seq`.
fn matches_expected(template: &[u8], seq: u64, offset: usize, chunk: &[u8]) -> bool {
    let end = offset + chunk.len();
    if end > template.len() {
        return false;
    }
    let stamp = stamp(seq);
    let stamp_len = STAMP.min(template.len());
    let in_stamp = stamp_len.saturating_sub(offset).min(chunk.len());
    chunk[..in_stamp] == stamp[offset.min(stamp_len)..offset.min(stamp_len) + in_stamp]
        && chunk[in_stamp..] == template[offset + in_stamp..end]
}

/// The payload of message `seq` into `msg` (a copy of the template).
fn fill(msg: &mut [u8], seq: u64) {
    let n = STAMP.min(msg.len());
    msg[..n].copy_from_slice(&stamp(seq)[..n]);
}

#[derive(Serialize)]
struct Report<'a> {
    mode: &'static str,
    url: &'a str,
    conns: usize,
    size: usize,
    inflight: usize,
    binary: bool,
    warmup_s: f64,
    duration_s: f64,
    dial: DialStats,
    /// Echoes received in the measured window.
    messages: u64,
    msgs_per_s: f64,
    /// Payload throughput, one direction.
    mib_per_s: f64,
    rtt: Percentiles,
    total_sent: u64,
    total_received: u64,
    payload_errors: u64,
    /// Messages sent and never echoed (drain timeout or connection lost).
    lost: u64,
    /// Connections that ended during the run, by cause.
    dropped: Causes,
    cpu: Usage,
    close: CloseStats,
    ok: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Warmup,
    Measure,
    Drain,
}

pub(crate) fn run(args: &EchoArgs, target: &Target, sources: Sources) -> io::Result<Outcome> {
    let common = &args.common;
    let inflight = args.inflight.max(1);
    let mut driver: Driver<EchoState> = Driver::new(target, sources, (256 * 1024).max(args.size + 1024))?;
    let dial =
        driver.establish(args.conns, None, common.concurrency, common.connect_timeout, |_| EchoState {
            sent_at: VecDeque::with_capacity(inflight),
            next_seq: 0,
            expect_seq: 0,
            rx_pos: 0,
            rx_ok: true,
        })?;
    let mut summary = vec![
        format!(
            "echo {}: {} conns, {} B {}, {} in flight each, warm-up {}, measure {}",
            target.url,
            args.conns,
            args.size,
            if args.binary { "binary" } else { "text" },
            inflight,
            humantime::format_duration(args.warmup),
            humantime::format_duration(args.duration)
        ),
        dial.line(),
    ];

    let template: Vec<u8> = (0..args.size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut msg = template.clone();
    let (opcode, kind) =
        if args.binary { (OpCode::Binary, DataKind::Binary) } else { (OpCode::Text, DataKind::Text) };
    let mut rx = Rx {
        template,
        kind,
        now: Instant::now(),
        in_window: false,
        received: 0,
        window_msgs: 0,
        payload_errors: 0,
        rtt: Latency::new(),
    };
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut dropped = Causes::new();

    // Tops connection `key` up to `inflight` messages and writes them in one batch.
    let mut refill = |driver: &mut Driver<EchoState>, key: usize, now: Instant, sent: &mut u64| {
        let conn = &mut driver.conns[key];
        if conn.phase() != Phase::Open {
            return Ok(());
        }
        while conn.state.sent_at.len() < inflight {
            fill(&mut msg, conn.state.next_seq);
            conn.queue(opcode, &msg);
            conn.state.sent_at.push_back(now);
            conn.state.next_seq += 1;
            *sent += 1;
        }
        conn.flush()
    };

    let start = Instant::now();
    let measure_start = start + args.warmup;
    let measure_end = measure_start + args.duration;
    let mut drain_end = measure_end;
    let keys: Vec<usize> = driver.conns.iter().map(|(key, _)| key).collect();
    for key in keys {
        if let Err(cause) = refill(&mut driver, key, start, &mut sent) {
            if let Some(conn) = driver.remove(key) {
                lost += conn.state.sent_at.len() as u64;
            }
            bump(&mut dropped, cause);
        }
    }
    let pid = common.server_pid;
    let mut stage = Stage::Warmup;
    let mut window_start = Snapshot::take(pid)?;
    let mut window_end = window_start;
    loop {
        let now = Instant::now();
        if stage == Stage::Warmup && now >= measure_start {
            stage = Stage::Measure;
            window_start = Snapshot::take(pid)?;
        }
        if stage == Stage::Measure && now >= measure_end {
            stage = Stage::Drain;
            window_end = Snapshot::take(pid)?;
            drain_end = now + args.drain_timeout;
        }
        let outstanding = sent - rx.received - lost;
        if stage == Stage::Drain && (outstanding == 0 || now >= drain_end || driver.conns.is_empty()) {
            break;
        }
        let boundary = match stage {
            Stage::Warmup => measure_start,
            Stage::Measure => measure_end,
            Stage::Drain => drain_end,
        };
        let timeout = boundary.saturating_duration_since(now).min(Duration::from_millis(100));
        let ready = driver.poll(timeout)?;
        rx.now = Instant::now();
        rx.in_window = stage == Stage::Measure && rx.now < measure_end;
        for &(key, readiness) in &ready {
            let status = driver.on_ready(key, readiness, &mut |st, item| rx.on_item(st, item));
            let result = match status {
                Status::Done(end) => Err(end_cause(end)),
                _ if stage == Stage::Drain => Ok(()),
                _ => refill(&mut driver, key, rx.now, &mut sent),
            };
            if let Err(cause) = result {
                if let Some(conn) = driver.remove(key) {
                    lost += conn.state.sent_at.len() as u64;
                }
                bump(&mut dropped, cause);
            }
        }
        driver.give_back(ready);
    }
    let outstanding = sent - rx.received - lost;
    lost += outstanding;
    let close = driver.close_all(args.drain_timeout, &mut |_, _| {})?;

    let window_s = window_end.wall_s(&window_start);
    let msgs_per_s = if window_s > 0.0 { rx.window_msgs as f64 / window_s } else { 0.0 };
    let mib_per_s = msgs_per_s * args.size as f64 / (1024.0 * 1024.0);
    let cpu = window_end.usage_since(&window_start, rx.window_msgs);
    let rtt = rx.rtt.summary();
    summary.push(format!(
        "throughput: {msgs_per_s:.0} msg/s, {mib_per_s:.2} MiB/s each way ({} messages in {window_s:.2}s)",
        rx.window_msgs
    ));
    summary.push(format!("rtt: {}", rtt.line()));
    summary.push(cpu.line("msg"));
    summary.push(format!(
        "checks: {sent} sent, {} received, {} payload errors, {lost} lost, dropped {dropped:?}",
        rx.received, rx.payload_errors
    ));
    summary.push(close.line());

    let ok = dial.established == args.conns as u64
        && rx.payload_errors == 0
        && lost == 0
        && dropped.is_empty()
        && close.all_clean()
        && rx.window_msgs > 0;
    let report = Report {
        mode: "echo",
        url: &target.url,
        conns: args.conns,
        size: args.size,
        inflight,
        binary: args.binary,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        dial,
        messages: rx.window_msgs,
        msgs_per_s: round3(msgs_per_s),
        mib_per_s: round3(mib_per_s),
        rtt,
        total_sent: sent,
        total_received: rx.received,
        payload_errors: rx.payload_errors,
        lost,
        dropped,
        cpu,
        close,
        ok,
    };
    Outcome::new(summary, &report, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_check_accepts_any_split_and_catches_changes() {
        for size in [0usize, 1, 15, 16, 17, 100] {
            let template: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
            let mut msg = template.clone();
            fill(&mut msg, 0xdead_beef);
            for cut in 0..=size {
                assert!(matches_expected(&template, 0xdead_beef, 0, &msg[..cut]));
                assert!(matches_expected(&template, 0xdead_beef, cut, &msg[cut..]));
            }
            if size > 0 {
                assert!(!matches_expected(&template, 0xdead_bee0, 0, &msg) || size < 16);
                let mut bad = msg.clone();
                bad[size - 1] ^= 1;
                assert!(!matches_expected(&template, 0xdead_beef, 0, &bad));
            }
            assert!(!matches_expected(&template, 0, size, b"x"));
        }
        assert_eq!(&stamp(0xdead_beef), b"00000000deadbeef");
    }
}
