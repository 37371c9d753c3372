//! `/metrics` read by a real Prometheus text parser: every sample line parses, each family has
//! its type, and the families for build, process and closes (by code and reason) carry what
//! happened. Also the connection and refusal log lines.

mod gateway_support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use gateway_support::{http, now, token, Gateway, Upgrade, Ws, SECRET};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

fn scrape(gw: &Gateway) -> Scrape {
    let text = gw.get("/metrics").body;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = Scrape::parse(lines).expect("the exposition parses");
    // The parser skips lines it cannot read instead of failing: every sample line must be one
    // of its samples, so none was skipped (a histogram's bucket lines make one sample).
    let lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let unbucketed = lines.filter(|l| !l.contains("_bucket{")).count();
    let histograms = scrape.samples.iter().filter(|s| matches!(s.value, Value::Histogram(_))).count();
    assert_eq!(scrape.samples.len(), unbucketed + histograms, "{text}");
    scrape
}

fn find<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}")).value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn every_family_parses_with_its_type() {
    let gw = Gateway::start(None, &[]);
    let scrape = scrape(&gw);
    // Each family is typed (counters end in _total) and has its help. The parser reads a
    // histogram's `_sum` and `_count` as untyped samples of their own: those belong to it.
    let histograms: HashSet<&str> = (scrape.samples.iter())
        .filter(|s| matches!(s.value, Value::Histogram(_)))
        .map(|s| s.metric.as_str())
        .collect();
    assert!(histograms.contains("throng_handshake_duration_seconds"), "{histograms:?}");
    for s in &scrape.samples {
        let family = ["_sum", "_count"].iter().find_map(|suffix| s.metric.strip_suffix(suffix));
        let of_histogram = family.is_some_and(|f| histograms.contains(f));
        assert!(of_histogram || !matches!(s.value, Value::Untyped(_)), "{} has no TYPE", s.metric);
        if let Value::Histogram(buckets) = &s.value {
            check_histogram(&scrape, &s.metric, buckets);
        }
        if matches!(s.value, Value::Counter(_)) {
            assert!(s.metric.ends_with("_total"), "counter {}", s.metric);
        }
        let name = if of_histogram { family.unwrap_or_default() } else { s.metric.as_str() };
        assert!(scrape.docs.contains_key(name), "{} has no HELP", s.metric);
    }
    let build = find(&scrape, "throng_build_info", &[("version", env!("CARGO_PKG_VERSION"))])
        .expect("build_info with the crate's version");
    assert_eq!(build.value, Value::Gauge(1.0));
    // The backend that runs: the one the test run asked for (scripts/test runs every test on
    // each), or under `auto` whichever this kernel allows.
    let backend = build.labels.get("backend");
    match std::env::var("THRONG_BACKEND").as_deref() {
        Ok(asked @ ("epoll" | "io_uring")) => assert_eq!(backend, Some(asked)),
        _ => assert!(matches!(backend, Some("epoll" | "io_uring")), "{backend:?}"),
    }

    // Process metrics, read from /proc at scrape time.
    assert!(value(&scrape, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&scrape, "process_cpu_seconds_total", &[]) >= 0.0);
    let (open, max) = (value(&scrape, "process_open_fds", &[]), value(&scrape, "process_max_fds", &[]));
    assert!(open >= 3.0 && open <= max, "{open} of {max}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value(&scrape, "process_start_time_seconds", &[]);
    assert!(started <= now + 1.0 && started > now - 3600.0, "{started} vs {now}");
    // The fds gauge follows the process: a connection held adds its socket.
    let _ws = gw.connect("/ws");
    assert!(value(&self::scrape(&gw), "process_open_fds", &[]) > open);
}

/// Buckets cumulative, in order, ending with `+Inf` equal to `_count`.
fn check_histogram(scrape: &Scrape, name: &str, buckets: &[prometheus_parse::HistogramCount]) {
    assert!(
        buckets.windows(2).all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
        "{name}"
    );
    let last = buckets.last().expect("buckets");
    assert!(last.less_than.is_infinite(), "{name} ends with +Inf");
    let count = scrape.samples.iter().find(|s| s.metric == format!("{name}_count"));
    match count.map(|s| &s.value) {
        Some(Value::Untyped(n) | Value::Counter(n) | Value::Gauge(n)) => assert_eq!(*n, last.count, "{name}"),
        other => panic!("{name}_count: {other:?}"),
    }
}

fn histogram_count(scrape: &Scrape, name: &str) -> f64 {
    match &find(scrape, name, &[]).unwrap_or_else(|| panic!("no {name}")).value {
        Value::Histogram(buckets) => {
            check_histogram(scrape, name, buckets);
            buckets.last().map_or(0.0, |b| b.count)
        }
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn handshakes_are_timed() {
    let gw = Gateway::start(None, &[]);
    assert_eq!(histogram_count(&scrape(&gw), "throng_handshake_duration_seconds"), 0.0);
    let _a = gw.connect("/ws");
    let _b = gw.connect("/ws");
    // A refused upgrade is not timed: the histogram counts upgrades completed.
    assert!(gw.try_connect(&Upgrade::new("/nope")).is_err());
    assert_eq!(histogram_count(&scrape(&gw), "throng_handshake_duration_seconds"), 2.0);
}

#[test]
fn client_messages_are_timed_from_decode_to_worker() {
    let gw = Gateway::start(None, &[]);
    assert_eq!(histogram_count(&scrape(&gw), "throng_event_delay_seconds"), 0.0);
    let mut ws = gw.connect("/ws");
    const N: usize = 7;
    for i in 0..N {
        let reply = ws.command(serde_json::json!({"op": "subscribe", "channel": format!("c{i}")}));
        assert_eq!(reply["type"], "subscribed", "{reply}");
    }
    // Every command is a client message a worker took (its reply proves it); the open is not one.
    assert_eq!(histogram_count(&scrape(&gw), "throng_event_delay_seconds"), N as f64);
}

/// `throng_closes_total` as (code, reason) -> count: every sample it has.
fn closes(scrape: &Scrape) -> BTreeMap<(String, String), f64> {
    (scrape.samples.iter().filter(|s| s.metric == "throng_closes_total"))
        .map(|s| {
            let label = |name: &str| s.labels.get(name).unwrap_or_else(|| panic!("{s:?}")).to_owned();
            let Value::Counter(n) = s.value else { panic!("{s:?}") };
            ((label("code"), label("reason")), n)
        })
        .collect()
}

/// Waits until `throng_closes_total` is exactly `want` (pairs that did not happen have no
/// sample), or fails with what it was after a generous wait.
fn wait_closes(gw: &Gateway, want: &[(&str, &str, f64)]) {
    let want: BTreeMap<(String, String), f64> =
        want.iter().map(|(code, reason, n)| ((code.to_string(), reason.to_string()), *n)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = closes(&scrape(gw));
        if seen == want {
            return;
        }
        assert!(Instant::now() < deadline, "closes {seen:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads until the gateway's close frame, answers it with its code and returns the code.
fn close_answered(ws: &mut Ws) -> u16 {
    let (code, _) = ws.expect_close();
    ws.send_close(code);
    code
}

#[test]
fn closes_are_counted_by_code_and_reason_and_logged() {
    let gw = Gateway::start(None, &["--log-level", "throng=debug"]);
    assert_eq!(closes(&scrape(&gw)), BTreeMap::new(), "no close, no sample");
    // The client closes: its code, reason peer. A code the gateway does not list is counted
    // as other, and whatever reason text the peer sends is no label.
    let mut normal = gw.connect("/ws");
    normal.send_close(1000);
    assert_eq!(normal.expect_close().0, 1000);
    let mut odd = gw.connect("/ws");
    odd.send_close(4999);
    assert_eq!(odd.expect_close().0, 4999);
    // The admin API closes one.
    let mut closed = gw.connect("/ws");
    let conn = closed.conn();
    let resp = gw.post(&format!("/v1/connections/{conn}/close"), r#"{"code": 1000}"#);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(close_answered(&mut closed), 1000);
    // An unmasked frame, which no client may send: 1002, a protocol error.
    let mut broken = gw.connect("/ws");
    broken.stream.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(broken.expect_close().0, 1002);
    drop(broken);
    // A data message that is not a command, on a push-only gateway (the default): 1003.
    let mut chatty = gw.connect("/ws");
    chatty.send_text("hello");
    assert_eq!(close_answered(&mut chatty), 1003);
    // Gone without a close frame: 1006.
    drop(gw.connect("/ws"));
    wait_closes(
        &gw,
        &[
            ("1000", "peer", 1.0),
            ("other", "peer", 1.0),
            ("1000", "admin", 1.0),
            ("1002", "protocol_error", 1.0),
            ("1003", "push_only", 1.0),
            ("1006", "disconnected", 1.0),
        ],
    );
    // The close lines are written after the close is counted.
    let log = gw.wait_log("code=4999");
    let opened = log.lines().filter(|l| l.contains("connection open") && l.contains("path=\"/ws\""));
    assert_eq!(opened.count(), 6, "{log}");
    let closed: Vec<&str> = log.lines().filter(|l| l.contains("connection closed")).collect();
    assert_eq!(closed.len(), 6, "{log}");
    let line = |code: &str, cause: &str| {
        closed
            .iter()
            .any(|l| l.contains(&format!("code={code} ")) && l.contains(&format!("cause=\"{cause}\"")))
    };
    assert!(line("1000", "peer") && line("4999", "peer") && line("1000", "admin"), "{log}");
    assert!(closed.iter().any(|l| l.contains("code=1000") && l.contains("duration_ms=")), "{log}");
    // Admin requests are logged at debug, with their answer.
    let admin = format!("path=/v1/connections/{conn}/close");
    let request = log.lines().find(|l| l.contains("admin request") && l.contains(&admin));
    let request = request.unwrap_or_else(|| panic!("{log}"));
    assert!(
        request.contains("DEBUG") && request.contains("method=POST") && request.contains("status=200"),
        "{request}"
    );
}

#[test]
fn idle_and_pong_timeouts_are_reasons_of_their_own() {
    // Quiet for the idle timeout: 1001 from the gateway, answered.
    let idle = Gateway::start(None, &["--ping-interval", "0", "--idle-timeout", "300ms"]);
    let mut quiet = idle.connect("/ws");
    assert_eq!(quiet.expect_close(), (1001, "idle timeout".to_owned()));
    quiet.send_close(1001);
    wait_closes(&idle, &[("1001", "idle_timeout", 1.0)]);
    // Never reads, so never answers the ping: dropped at the pong timeout, without a close frame.
    let pinged = Gateway::start(None, &["--ping-interval", "200ms", "--pong-timeout", "200ms"]);
    let _deaf = pinged.connect("/ws");
    wait_closes(&pinged, &[("1006", "pong_timeout", 1.0)]);
}

#[test]
fn a_token_expiry_and_the_drain_are_reasons_of_their_own() {
    // With a leeway of 1 s the connection closes one second after the token's exp.
    let config = format!("jwt_secret = \"{SECRET}\"\njwt_leeway = \"1s\"\n");
    let gw = Gateway::start(Some(&config), &["--drain-timeout", "10s"]);
    let path = |exp: u64| format!("/ws?token={}", token(json!({"sub": "dave", "exp": exp})));
    let mut expiring = gw.connect(&path(now() + 1));
    let mut staying = gw.connect(&path(now() + 3600));
    let mut holding = gw.connect(&path(now() + 3600));
    assert_eq!(close_answered(&mut expiring), 4001);
    wait_closes(&gw, &[("4001", "token_expired", 1.0)]);
    // SIGTERM: 1001 to everyone. One answers and is counted while the other holds the drain
    // open (the admin API serves until the process exits).
    gw.signal(libc::SIGTERM);
    assert_eq!(close_answered(&mut staying), 1001);
    wait_closes(&gw, &[("4001", "token_expired", 1.0), ("1001", "drain", 1.0)]);
    assert_eq!(holding.expect_close().0, 1001);
}

#[test]
fn refusals_are_logged_at_info_with_their_reason() {
    let gw = Gateway::start(None, &[]);
    let refused = gw.try_connect(&Upgrade::new("/nope")).err().expect("refused");
    assert_eq!(refused.status, 404);
    let log = gw.wait_log("upgrade refused");
    let line = log.lines().find(|l| l.contains("upgrade refused")).unwrap();
    assert!(line.contains("INFO") && line.contains("reason=\"not_found\""), "{line}");
    assert!(line.contains("status=404") && line.contains("suppressed=0"), "{line}");
    let started = log.lines().find(|l| l.contains("throng started")).unwrap();
    assert!(started.contains(env!("CARGO_PKG_VERSION")), "{started}");
}

#[test]
fn queued_outbound_bytes_rise_for_a_reader_that_stalls_and_fall_when_it_goes() {
    let gw = Gateway::start(None, &["--max-outbound-bytes", "64MiB", "--slow-consumer", "drop"]);
    let reader = gw.connect("/ws?channels=slow");
    let wait = |what: &str, done: &dyn Fn(f64) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let queued = value(&scrape(&gw), "throng_outbound_queued_bytes", &[]);
            if done(queued) {
                return queued;
            }
            assert!(Instant::now() < deadline, "{what}: {queued}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The loop counts the welcome out once its write completed, which may be a moment after
    // the client read it (on io_uring, when the send's completion is reaped).
    wait("the welcome no longer queued", &|q| q == 0.0);
    // Far more than the loopback socket buffers hold: the rest waits in the queue.
    let body = vec![b'x'; 1024 * 1024];
    for _ in 0..32 {
        assert_eq!(http(gw.admin, "POST", "/v1/channels/slow", &[], &body).status, 200);
    }
    let queued = wait("bytes queued", &|q| q > 1024.0 * 1024.0);
    assert!(queued <= 33.0 * 1024.0 * 1024.0, "{queued}");
    drop(reader);
    wait("the queue of the closed connection released", &|q| q == 0.0);
}

#[test]
fn bytes_are_split_by_direction_and_kind() {
    let gw = Gateway::start(None, &[]);
    let bytes = |direction: &str, kind: &str| {
        value(&scrape(&gw), "throng_bytes_total", &[("direction", direction), ("kind", kind)])
    };
    let mut ws = gw.connect("/ws");
    // The welcome was read: the 101 and its frame were written.
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("the 101 and the welcome counted", &|| {
        bytes("out", "handshake") > 0.0 && bytes("out", "frames") > 0.0
    });
    let request = bytes("in", "handshake");
    assert!(request > 50.0, "{request}");
    assert_eq!(bytes("in", "frames"), 0.0);
    let reply = ws.command(serde_json::json!({"op": "subscribe", "channel": "news"}));
    assert_eq!(reply["type"], "subscribed", "{reply}");
    // A masked frame of the command: header (2 + 4 mask) plus its JSON, now frames, not handshake.
    assert!(bytes("in", "frames") > 6.0);
    assert_eq!(bytes("in", "handshake"), request);
    // The split adds up to the totals.
    let s = scrape(&gw);
    let total_in = value(&s, "throng_bytes_in_total", &[]);
    let split: f64 = ["handshake", "frames"]
        .iter()
        .map(|k| value(&s, "throng_bytes_total", &[("direction", "in"), ("kind", k)]))
        .sum();
    assert_eq!(split, total_in);
}

/// The histogram's `_sum` in seconds.
fn histogram_sum(scrape: &Scrape, name: &str) -> f64 {
    value(scrape, &format!("{name}_sum"), &[])
}

#[test]
fn a_publish_is_timed_once_to_its_last_subscribers_write() {
    const NAME: &str = "throng_publish_duration_seconds";
    let gw = Gateway::start(None, &[]);
    assert_eq!(histogram_count(&scrape(&gw), NAME), 0.0);
    let mut subscribers: Vec<_> = (0..4).map(|_| gw.connect("/ws?channels=news")).collect();
    gw.wait_subscribers("news", 4);
    // Nobody subscribed: no frame is written, nothing timed.
    assert_eq!(http(gw.admin, "POST", "/v1/channels/empty", &[], b"lost").status, 200);
    const N: usize = 3;
    for i in 0..N {
        let body = format!("m{i}");
        assert_eq!(http(gw.admin, "POST", "/v1/channels/news", &[], body.as_bytes()).status, 200);
        for ws in &mut subscribers {
            assert!(ws.recv_text().contains(&body));
        }
    }
    // Each publish is observed once, by whichever loop let go of its frame last, which may be
    // a moment after the client read it (on io_uring, when the send's completion is reaped).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(&gw);
        let count = histogram_count(&s, NAME);
        if count == N as f64 {
            assert!(histogram_sum(&s, NAME) > 0.0);
            assert_eq!(value(&s, "throng_fanout_total", &[]), (4 * N) as f64, "four deliveries each");
            break;
        }
        assert!(count < N as f64 && Instant::now() < deadline, "{count} observations for {N} publishes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The metrics reference of docs/configuration.md: `(family, type, labels cell, meaning)` for
/// each row.
fn documented_families() -> Vec<(String, String, String, String)> {
    let doc = include_str!("../../docs/configuration.md");
    let table = doc.split("## Metrics reference").nth(1).expect("the Metrics reference section");
    let cell = |c: &str| c.trim().trim_matches('`').to_owned();
    (table.lines().skip_while(|l| !l.starts_with("| family")).skip(2))
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 4, "{row}");
            (cell(cells[0]), cell(cells[1]), cells[2].trim().to_owned(), cells[3].trim().to_owned())
        })
        .collect()
}

#[test]
fn the_metrics_reference_is_what_metrics_serves() {
    // TLS on the client listener, so its families are there too; the admin listener stays
    // plain for this test's client.
    let dir = gateway_support::temp_dir();
    let (cert, key) = gateway_support::write_cert(&dir, "client");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let gw = Gateway::start(None, &["--tls-cert", &cert, "--tls-key", &key]);
    let text = gw.get("/metrics").body;
    let served: BTreeMap<&str, &str> = (text.lines().filter_map(|l| l.strip_prefix("# TYPE ")))
        .map(|l| l.split_once(' ').expect("# TYPE name kind"))
        .collect();
    let documented = documented_families();
    // The one family this gateway cannot show: its admin listener is not TLS.
    let shown = |meaning: &str| !meaning.contains("Only with `admin_tls_cert`");
    let listed: BTreeMap<&str, &str> = (documented.iter())
        .filter(|(_, _, _, meaning)| shown(meaning))
        .map(|(name, kind, _, _)| (name.as_str(), kind.as_str()))
        .collect();
    assert_eq!(listed, served, "documented families and types against /metrics");
    // Every label a sample carries is named in its row, on a gateway that has seen a close
    // (the close pairs appear with their first close).
    let plain = Gateway::start(None, &[]);
    let mut ws = plain.connect("/ws");
    ws.send_close(1000);
    assert_eq!(ws.expect_close().0, 1000);
    wait_closes(&plain, &[("1000", "peer", 1.0)]);
    let scrape = scrape(&plain);
    for s in &scrape.samples {
        let family = ["_sum", "_count"].iter().find_map(|x| s.metric.strip_suffix(x)).unwrap_or(&s.metric);
        let row = (documented.iter()).find(|(name, ..)| name == family || name == &s.metric);
        let (_, _, labels, _) = row.unwrap_or_else(|| panic!("{} is not documented", s.metric));
        for (label, value) in s.labels.iter() {
            let named = format!("`{label}`");
            assert!(labels.contains(&named), "{}: label {label} not in {labels:?}", s.metric);
            // Where the row lists the label's values, `(`v1`, `v2`)` after its name, the value
            // is one of them.
            let after = &labels[labels.find(&named).unwrap_or(0) + named.len()..];
            if let Some(list) = after.strip_prefix(" (").and_then(|l| l.split(')').next()) {
                assert!(
                    list.contains(&format!("`{value}`")),
                    "{}: {label}={value} not in {list:?}",
                    s.metric
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
