//! `fanout`: N connections subscribe to one channel (`?channels=C`, each counted once the
//! gateway's welcome arrives), then messages are published through the gateway's admin API at a
//! steady rate, each carrying its send time. Every delivery's publish-to-delivery latency is
//! recorded; at the end, the delivery ratio (overall and of the worst client) and, per message,
//! the time from its publish to its last delivery.
//!
//! The contract with the gateway (see loadtest/README.md): `POST /v1/publish
//! {"channel":C,"data":{"t":T,"seq":S}}` answered with 200 and `{"queued":N}`; subscribers
//! receive a text message with `"seq":S` and `"t":T` in it (the gateway's envelope
//! `{"channel","data","ts"}`); the first message a subscriber receives contains
//! `"type":"welcome"`.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use throng::proto::Item;

use crate::cli::FanoutArgs;
use crate::ctl::Ctl;
use crate::deflate::DeflateReport;
use crate::driver::{CloseStats, DialPlan, DialStats, Driver};
use crate::mode::{Report as _, RunInfo};
use crate::net::Sources;
use crate::procfs::{Snapshot, Usage};
use crate::publish::{self, find_number, now_ns, PublishStats};
use crate::stats::{merge_causes, ratio, Causes, Latency, Traffic};
use crate::target::Target;
use crate::threshold::Metrics;

/// A message in pieces is reassembled up to this many bytes (the fields we read come first).
const MAX_ASSEMBLY: usize = 4096;
/// Sequence numbers above this are not believed (they would size the per-message tables).
const MAX_SEQ: u64 = 10_000_000;

/// Per subscriber.
#[derive(Default)]
struct Sub {
    welcomed: bool,
    received: u64,
    next_seq: u64,
    /// A message arriving in pieces (allocated once, on the first such message).
    assembly: Vec<u8>,
}

/// The receive side, shared by all subscribers.
struct Rx {
    latency: Latency,
    deliveries: u64,
    out_of_order: u64,
    parse_errors: u64,
    /// Per sequence number: the publish time, the last delivery time, deliveries.
    t_ns: Vec<u64>,
    last_ns: Vec<u64>,
    count: Vec<u64>,
}

impl Rx {
    /// Empty tables for `planned` publishes.
    fn new(planned: usize) -> Rx {
        Rx {
            latency: Latency::new(),
            deliveries: 0,
            out_of_order: 0,
            parse_errors: 0,
            t_ns: vec![0; planned],
            last_ns: vec![0; planned],
            count: vec![0; planned],
        }
    }

    /// Handles one frame; true when it was the subscriber's welcome.
    fn on_item(&mut self, sub: &mut Sub, item: &Item<'_>) -> bool {
        let Item::Data { chunk, first, last, .. } = *item else { return false };
        if first && last {
            return self.on_message(sub, chunk);
        }
        if first {
            sub.assembly.clear();
        }
        let room = MAX_ASSEMBLY.saturating_sub(sub.assembly.len());
        sub.assembly.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if !last {
            return false;
        }
        let message = std::mem::take(&mut sub.assembly);
        let welcome = self.on_message(sub, &message);
        sub.assembly = message;
        welcome
    }

    fn on_message(&mut self, sub: &mut Sub, message: &[u8]) -> bool {
        if !sub.welcomed {
            let welcome = memmem(message, b"\"welcome\"");
            sub.welcomed = welcome;
            if !welcome {
                self.parse_errors += 1;
            }
            return welcome;
        }
        let (Some(seq), Some(t)) = (find_number(message, b"\"seq\":"), find_number(message, b"\"t\":"))
        else {
            self.parse_errors += 1;
            return false;
        };
        if seq > MAX_SEQ {
            self.parse_errors += 1;
            return false;
        }
        let now = now_ns();
        self.latency.record_ns(now.saturating_sub(t));
        self.deliveries += 1;
        sub.received += 1;
        if seq < sub.next_seq {
            self.out_of_order += 1;
        }
        sub.next_seq = sub.next_seq.max(seq + 1);
        let i = seq as usize;
        if i >= self.count.len() {
            // Sized for the plan up front; grows only if more was published than planned.
            let len = (i + 1).max(self.count.len() * 2);
            self.t_ns.resize(len, 0);
            self.last_ns.resize(len, 0);
            self.count.resize(len, 0);
        }
        self.t_ns[i] = t;
        self.last_ns[i] = self.last_ns[i].max(now);
        self.count[i] += 1;
        false
    }
}

fn memmem(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    mode: String,
    url: String,
    channel: String,
    subscribers: usize,
    rate: f64,
    duration_s: f64,
    /// `http://…` or `command`.
    publisher: String,
    /// Subscribers set up: counted once their welcome arrived.
    dial: DialStats,
    /// Filled in by the process that published.
    pub(crate) publish: PublishStats,
    /// Messages published (accepted by the API): each subscriber should receive all of them.
    published: u64,
    deliveries: u64,
    /// published × subscribers set up.
    expected: u64,
    /// deliveries / expected.
    delivery_ratio: f64,
    /// The fewest messages one subscriber received, and that over `published`.
    min_client_received: u64,
    min_client_ratio: f64,
    /// Subscribers that received every message.
    clients_complete: u64,
    /// Messages delivered fully (to every subscriber set up).
    publishes_fully_delivered: u64,
    out_of_order: u64,
    parse_errors: u64,
    /// Subscribers that ended during the run, by cause.
    dropped: Causes,
    /// Publish (send time in the message) to delivery, every delivery.
    latency: Latency,
    /// Per message: publish to its last delivery.
    time_to_last_delivery: Latency,
    /// From the first publish to the end of the drain.
    pub(crate) cpu: Usage,
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
    /// Per sequence number (child processes only, for the parent's merge).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    t_ns: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    last_ns: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    count: Vec<u64>,
}

impl super::Report for Report {
    fn merge(&mut self, other: Self) {
        self.subscribers += other.subscribers;
        self.dial.merge(other.dial);
        self.published = self.published.max(other.published);
        self.deliveries += other.deliveries;
        self.min_client_received = self.min_client_received.min(other.min_client_received);
        self.clients_complete += other.clients_complete;
        self.out_of_order += other.out_of_order;
        self.parse_errors += other.parse_errors;
        merge_causes(&mut self.dropped, other.dropped);
        self.latency.add(&other.latency);
        let len = self.count.len().max(other.count.len());
        for v in [&mut self.t_ns, &mut self.last_ns, &mut self.count] {
            v.resize(len, 0);
        }
        for (i, &n) in other.count.iter().enumerate() {
            self.t_ns[i] = self.t_ns[i].max(other.t_ns[i]);
            self.last_ns[i] = self.last_ns[i].max(other.last_ns[i]);
            self.count[i] += n;
        }
        self.cpu.merge(&other.cpu, self.deliveries);
        self.close.merge(other.close);
        self.traffic.merge(&other.traffic);
        crate::deflate::merge(&mut self.deflate, other.deflate);
        self.run.merge(&other.run);
        self.finish();
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "fanout".into(),
                format!(
                    "{} channel {:?}: {} subscribers, {}/s for {}s via {}, {} process(es)",
                    self.url,
                    self.channel,
                    self.subscribers,
                    self.rate,
                    self.duration_s,
                    self.publisher,
                    self.run.procs
                ),
            ),
            ("subscribe".into(), self.dial.line()),
            ("deflate".into(), self.deflate.as_ref().map(DeflateReport::line).unwrap_or_default()),
            ("publish".into(), self.publish.line()),
            (
                "delivery".into(),
                format!(
                    "{}/{} = {:.4}; worst client {}/{} ({:.4}); {} clients complete; {} messages fully delivered",
                    self.deliveries,
                    self.expected,
                    self.delivery_ratio,
                    self.min_client_received,
                    self.published,
                    self.min_client_ratio,
                    self.clients_complete,
                    self.publishes_fully_delivered
                ),
            ),
            ("latency".into(), self.latency.summary().line()),
            ("to last delivery".into(), self.time_to_last_delivery.summary().line()),
            ("cpu".into(), self.cpu.line("delivery")),
            (
                "checks".into(),
                format!(
                    "{} out of order, {} unparsed, dropped {:?}",
                    self.out_of_order, self.parse_errors, self.dropped
                ),
            ),
            ("close".into(), self.close.line()),
            ("traffic".into(), self.traffic.line()),
        ];
        rows.retain(|(_, line)| !line.is_empty());
        rows
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            latency: self.latency.summary(),
            errors: self.expected.saturating_sub(self.deliveries),
            ops: self.expected,
            rate: Some(ratio(self.deliveries as f64, self.duration_s)),
            late: None,
        }
    }

    fn ok(&self) -> bool {
        self.ok
    }

    fn chart(&self) -> (&'static str, &Latency) {
        ("Publish-to-delivery latency (every delivery)", &self.latency)
    }

    fn ops_name(&self) -> &'static str {
        "deliveries"
    }

    fn run_info(&mut self) -> &mut RunInfo {
        &mut self.run
    }

    fn apply(&mut self, extra: super::Extra) {
        match extra {
            super::Extra::Window(start, end) => {
                self.cpu.set_server(end.server_use_since(&start, self.deliveries));
            }
            super::Extra::Publish(stats) => self.publish = stats,
            super::Extra::Mem(_) => {}
        }
        self.finish();
    }

    fn strip(&mut self) {
        self.strip_tables();
    }

    fn finish(&mut self) {
        if !self.count.is_empty() {
            let mut ttl = Latency::new();
            let mut full = 0;
            for i in 0..self.count.len() {
                if self.count[i] > 0 {
                    ttl.record_ns(self.last_ns[i].saturating_sub(self.t_ns[i]));
                }
                full += u64::from(self.count[i] >= self.dial.established && self.dial.established > 0);
            }
            self.time_to_last_delivery = ttl;
            self.publishes_fully_delivered = full;
        }
        self.expected = self.published * self.dial.established;
        self.delivery_ratio = round3_4(ratio(self.deliveries as f64, self.expected as f64));
        self.min_client_ratio = round3_4(ratio(self.min_client_received as f64, self.published as f64));
        self.ok = !self.run.interrupted
            && self.dial.established == self.subscribers as u64
            && self.published > 0
            && self.publish.failed.is_empty()
            && self.deliveries == self.expected
            && self.clients_complete == self.dial.established
            && self.parse_errors == 0
            && self.dropped.is_empty()
            && self.close.all_clean();
    }
}

impl Report {
    /// Drops the per-message tables (kept only for the parent of a `--procs` run).
    pub(crate) fn strip_tables(&mut self) {
        self.t_ns = Vec::new();
        self.last_ns = Vec::new();
        self.count = Vec::new();
    }
}

/// Six significant decimals for ratios.
fn round3_4(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The publisher of a fanout run from its arguments (`None` when `--publish-cmd` is used and
/// no URL is given: then the command).
pub(crate) fn plan(args: &FanoutArgs) -> Result<publish::Plan, String> {
    let publisher = match (&args.publish, &args.publish_cmd) {
        (Some(url), _) => publish::Publisher::Http(publish::HttpTarget::parse(url, args.api_key.clone())?),
        (None, Some(cmd)) => publish::Publisher::Command(cmd.clone()),
        (None, None) => return Err("fanout needs --publish URL or --publish-cmd CMD".into()),
    };
    Ok(publish::Plan {
        publisher,
        channel: args.channel.clone(),
        rate: args.rate,
        duration: args.duration,
        pad: args.pad,
    })
}

/// The subscribers' URL: `?channels=C` (or `&channels=C`) added to the target's path.
pub(crate) fn subscribe_target(target: &Target, channel: &str) -> Target {
    let mut target = target.clone();
    let sep = if target.path.contains('?') { '&' } else { '?' };
    target.path = format!("{}{sep}channels={}", target.path, percent_encode(channel));
    target
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn run(args: &FanoutArgs, target: &Target, sources: Sources, ctl: &Ctl) -> io::Result<Report> {
    let common = &args.common;
    let plan = plan(args).map_err(io::Error::other)?;
    let sub_target = subscribe_target(target, &args.channel);
    let mut driver: Driver<Sub> = Driver::new(
        &sub_target,
        sources,
        256 * 1024,
        common.backend,
        common.deflate || common.deflate_context,
    )?;
    let planned = plan.planned() as usize;
    let mut rx = Rx::new(planned);
    let dial_plan = DialPlan {
        n: args.subscribers,
        rate: None,
        concurrency: common.concurrency,
        connect_timeout: common.connect_timeout,
        wait_ready: true,
    };
    let dial =
        driver.establish(ctl, &dial_plan, |_| Sub::default(), &mut |sub, item| rx.on_item(sub, item))?;
    ctl.ready(driver.conns.len() as u64);
    let mut dropped = Causes::new();

    // A child waits for the parent, which publishes once every child is subscribed.
    ctl.phase("waiting for the other processes");
    while !ctl.go() && !ctl.stopped() {
        driver.poll_once(Duration::from_millis(20), &mut dropped, &mut |sub, item| {
            rx.on_item(sub, item);
        })?;
    }

    let pids = &common.server_pid;
    let window_start = Snapshot::take(pids)?;
    let publisher = if ctl.is_child() || ctl.stopped() {
        None
    } else {
        let (flags, plan) = (ctl.flags().clone(), plan.clone());
        Some(std::thread::spawn(move || {
            let stats = publish::run(&plan, &flags.stop);
            flags.end.store(stats.accepted, Ordering::Release);
            stats
        }))
    };
    ctl.phase("publishing");
    let mut ended_at: Option<(u64, Instant)> = None;
    let mut stopped_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if ended_at.is_none() {
            if let Some(n) = ctl.end() {
                ended_at = Some((n, now));
                ctl.phase("draining");
            }
        }
        if ctl.stopped() && stopped_at.is_none() {
            stopped_at = Some(now);
        }
        if let Some((n, at)) = ended_at {
            let open = driver.conns.len() as u64;
            let all_in = rx.deliveries >= n * open && driver.conns.iter().all(|(_, c)| c.state.received >= n);
            if all_in || now >= at + args.drain_timeout || open == 0 {
                break;
            }
        } else if stopped_at.is_some_and(|at| now >= at + args.drain_timeout) {
            break; // Stopped, and the count of published messages never came.
        }
        driver.poll_once(Duration::from_millis(50), &mut dropped, &mut |sub, item| {
            rx.on_item(sub, item);
        })?;
        ctl.tick(driver.conns.len() as u64, rx.deliveries);
    }
    let window_end = Snapshot::take(pids)?;
    // Before the closes: the parent's window ends with the last child's.
    ctl.measured(rx.deliveries);
    let publish = match publisher {
        Some(handle) => handle.join().map_err(|_| io::Error::other("the publisher thread panicked"))?,
        None => PublishStats::default(),
    };
    // Without the count (stopped before the publisher said), the highest sequence number seen.
    let seen = rx.count.iter().rposition(|&n| n > 0).map_or(0, |i| i as u64 + 1);
    let published = ended_at.map_or(seen, |(n, _)| n);
    let min_client_received = driver.conns.iter().map(|(_, c)| c.state.received).min().unwrap_or(0);
    let clients_complete = driver.conns.iter().filter(|(_, c)| c.state.received >= published).count() as u64;
    let close = driver.close_all(ctl, args.drain_timeout, &mut |_, _| {})?;

    let used = (published as usize).max(seen as usize).min(rx.count.len());
    for v in [&mut rx.t_ns, &mut rx.last_ns, &mut rx.count] {
        v.truncate(used);
    }
    let mut report = Report {
        mode: "fanout".into(),
        url: target.url.clone(),
        channel: args.channel.clone(),
        subscribers: args.subscribers,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        publisher: args.publish.clone().unwrap_or_else(|| "command".into()),
        dial,
        publish,
        published,
        deliveries: rx.deliveries,
        expected: 0,
        delivery_ratio: 0.0,
        min_client_received,
        min_client_ratio: 0.0,
        clients_complete,
        publishes_fully_delivered: 0,
        out_of_order: rx.out_of_order,
        parse_errors: rx.parse_errors,
        dropped,
        latency: rx.latency,
        time_to_last_delivery: Latency::new(),
        cpu: window_end.usage_since(&window_start, rx.deliveries),
        close,
        traffic: driver.traffic(),
        deflate: driver.deflate_report(),
        ok: false,
        run: RunInfo::new(ctl.stopped(), driver.backend()),
        t_ns: rx.t_ns,
        last_ns: rx.last_ns,
        count: rx.count,
    };
    report.finish();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use throng::proto::DataKind;

    fn data<'a>(chunk: &'a [u8], first: bool, last: bool) -> Item<'a> {
        Item::Data { kind: DataKind::Text, chunk, first, last }
    }

    #[test]
    fn welcome_then_deliveries_whole_or_in_pieces() {
        let mut rx = Rx::new(1);
        let mut sub = Sub::default();
        assert!(rx.on_item(&mut sub, &data(br#"{"type":"welcome","conn":"1","channels":["c"]}"#, true, true)));
        let t = now_ns() - 2_000_000; // sent 2 ms ago
        let msg = format!(r#"{{"channel":"c","data":{{"seq":0,"t":{t}}},"ts":1}}"#);
        assert!(!rx.on_item(&mut sub, &data(msg.as_bytes(), true, true)));
        let msg = format!(r#"{{"channel":"c","data":{{"seq":1,"t":{t}}},"ts":1}}"#);
        let (a, b) = msg.as_bytes().split_at(20);
        rx.on_item(&mut sub, &data(a, true, false));
        rx.on_item(&mut sub, &data(b, false, true));
        assert_eq!((rx.deliveries, sub.received, rx.parse_errors, rx.out_of_order), (2, 2, 0, 0));
        assert_eq!(rx.count[..2], [1, 1]);
        let p = rx.latency.summary();
        assert!(p.p50_us >= 2000.0 && p.p50_us < 1_000_000.0, "{p:?}");
        // A repeat is out of order; a message without the fields is a parse error.
        rx.on_item(&mut sub, &data(msg.as_bytes(), true, true));
        rx.on_item(&mut sub, &data(b"{}", true, true));
        assert_eq!((rx.out_of_order, rx.parse_errors), (1, 1));
    }

    #[test]
    fn latency_math_and_merge_of_two_processes() {
        let base = 1_000_000_000u64;
        let report = |count: Vec<u64>, last: Vec<u64>, established: u64, received: u64| {
            let dial = DialStats { established, ..DialStats::default() };
            let mut r = Report {
                mode: "fanout".into(),
                url: String::new(),
                channel: "c".into(),
                subscribers: established as usize,
                rate: 1.0,
                duration_s: 2.0,
                publisher: String::new(),
                dial,
                publish: PublishStats::default(),
                published: 2,
                deliveries: count.iter().sum(),
                expected: 0,
                delivery_ratio: 0.0,
                min_client_received: received,
                min_client_ratio: 0.0,
                clients_complete: established,
                publishes_fully_delivered: 0,
                out_of_order: 0,
                parse_errors: 0,
                dropped: Causes::new(),
                latency: Latency::new(),
                time_to_last_delivery: Latency::new(),
                cpu: Usage::default(),
                close: CloseStats::default(),
                traffic: Traffic::default(),
                deflate: None,
                ok: false,
                run: RunInfo::new(false, crate::driver::Backend::Epoll),
                t_ns: vec![base, base + 1_000_000_000],
                last_ns: last,
                count,
            };
            r.finish();
            r
        };
        // Process A: 3 subscribers got both; process B: 2 subscribers, one missed message 1.
        let mut a = report(vec![3, 3], vec![base + 5_000_000, base + 1_001_000_000], 3, 2);
        let b = report(vec![2, 1], vec![base + 9_000_000, base + 1_000_500_000], 2, 1);
        assert_eq!(a.delivery_ratio, 1.0);
        assert_eq!(b.publishes_fully_delivered, 1);
        // Through JSON, as the parent sees them.
        crate::stats::export_histograms();
        let b: Report = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        a.merge(b);
        assert_eq!((a.subscribers, a.dial.established, a.deliveries, a.expected), (5, 5, 9, 10));
        assert_eq!(a.delivery_ratio, 0.9);
        assert_eq!((a.min_client_received, a.min_client_ratio), (1, 0.5));
        assert_eq!(a.publishes_fully_delivered, 1);
        assert_eq!(a.count, [5, 4]);
        // Time to last delivery: message 0 took 9 ms (process B), message 1 took 1 ms.
        let ttl = a.time_to_last_delivery.summary();
        assert_eq!(ttl.count, 2);
        assert!((ttl.max_us - 9000.0).abs() < 10.0 && (ttl.p50_us - 1000.0).abs() < 2.0, "{ttl:?}");
        assert!(!a.ok);
    }

    #[test]
    fn subscribe_url_gets_the_channel() {
        let t = Target::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(subscribe_target(&t, "news").path, "/ws?channels=news");
        let t = Target::parse("ws://127.0.0.1:8080/ws?token=x").unwrap();
        assert_eq!(subscribe_target(&t, "a b").path, "/ws?token=x&channels=a%20b");
    }
}
