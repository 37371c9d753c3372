//! `throng-load` end to end against in-process servers on loopback: an echo server (throng's
//! engine with an inline echo hook) and, for `fanout`, a miniature gateway that speaks the
//! contract of loadtest/README.md (welcome on open, `?channels=`, `POST /v1/publish`). Small
//! numbers: the whole file runs in a few seconds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use throng::{Event, Flow, Server};

/// An echo server of the test's: stopped (its loops and their rings gone) when dropped, at the
/// end of the test, so that the file's tests do not pile servers up in one process.
struct Echo {
    addr: SocketAddr,
    _server: Server,
}

/// An echo server on 127.0.0.1:0.
fn echo_server() -> Echo {
    echo_server_taking(Duration::ZERO)
}

/// An echo server (one loop) that spends `delay` on every message before echoing it: it
/// cannot echo more than `1/delay` messages per second, whoever sends them.
fn echo_server_taking(delay: Duration) -> Echo {
    start_echo_server(delay, None)
}

/// The echo server of [`echo_server_taking`], over TLS when given a configuration.
fn start_echo_server(delay: Duration, tls: Option<throng::tls::rustls::ServerConfig>) -> Echo {
    let mut builder =
        Server::builder().bind("127.0.0.1:0").unwrap().loops(1).on_message(move |inline, kind, payload| {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            inline.reply(kind, payload);
            Flow::Consumed
        });
    if let Some(config) = tls {
        builder = builder.tls(config);
    }
    let server = builder.start().unwrap();
    let addr = server.local_addr();
    let events = server.events();
    std::thread::spawn(move || for _ in events.iter() {});
    Echo { addr, _server: server }
}

/// The client loop's backends (`--backend`): the tests that run the loop run on each.
const BACKENDS: [&str; 2] = ["epoll", "io_uring"];

/// [`load`] with `--backend BACKEND`; checks that the report says that backend ran.
fn load_on(backend: &str, args: &[&str]) -> (i32, Value, String) {
    let args: Vec<&str> = args.iter().copied().chain(["--backend", backend]).collect();
    let (code, v, text) = load(&args);
    assert_eq!(v["backend"], backend, "{text}");
    (code, v, text)
}

/// Runs `throng-load ARGS --json`; returns the exit code, the parsed last line and the output.
fn load(args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(args)
        .args(["--json", "--timeout", "30s"])
        .output()
        .expect("throng-load runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    let json = serde_json::from_str(last).unwrap_or_else(|e| panic!("no JSON last line ({e}):\n{text}"));
    (output.status.code().unwrap_or(-1), json, text)
}

fn u(v: &Value, path: &str) -> u64 {
    path.split('.').fold(v, |v, key| &v[key]).as_u64().unwrap_or_else(|| panic!("{path} in {v}"))
}

fn f(v: &Value, path: &str) -> f64 {
    path.split('.').fold(v, |v, key| &v[key]).as_f64().unwrap_or_else(|| panic!("{path} in {v}"))
}

fn assert_ordered(v: &Value, latency: &str) {
    let (p50, p99, max) = (
        f(v, &format!("{latency}.p50_us")),
        f(v, &format!("{latency}.p99_us")),
        f(v, &format!("{latency}.max_us")),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}: {p50} {p99} {max}");
    assert!(u(v, &format!("{latency}.count")) > 0);
}

#[test]
fn connect_holds_500_and_checks_them() {
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let (code, v, text) =
            load_on(backend, &["connect", &url, "--conns", "500", "--hold", "2s", "--ping-sample", "100"]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(v["mode"], "connect");
        assert_eq!(u(&v, "dial.established"), 500);
        assert_eq!(u(&v, "open_at_measure"), 500);
        assert_eq!((u(&v, "pings_sent"), u(&v, "pongs_received")), (100, 100));
        assert_eq!(u(&v, "close.clean"), 500);
        assert_ordered(&v, "dial.handshake_latency");
        assert_eq!(v["ok"], true);
    }
}

#[test]
fn echo_checks_payloads_and_orders_percentiles() {
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let (code, v, text) = load_on(
            backend,
            &[
                "echo",
                &url,
                "--conns",
                "8",
                "--size",
                "100",
                "--inflight",
                "4",
                "--warmup",
                "200ms",
                "--duration",
                "1s",
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!(u(&v, "dial.established"), 8);
        assert_eq!((u(&v, "payload_errors"), u(&v, "lost")), (0, 0));
        assert_eq!(u(&v, "total_sent"), u(&v, "total_received"));
        assert_ordered(&v, "rtt");
        assert_eq!(u(&v, "rtt.count"), u(&v, "messages"));
        assert!(f(&v, "cpu.client.utilisation") > 0.0);
    }
}

/// `--csv`: a header, then one row per second of the run, the same rows as the JSON's `series`;
/// the server (in this process) and the client have a CPU figure in each row, and a second in
/// which echoes came back has its latency percentiles.
#[test]
fn csv_has_a_row_per_second() {
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let path = std::env::temp_dir().join(format!("throng-load-e2e-{}.csv", std::process::id()));
        let pid = std::process::id().to_string();
        let csv = path.to_str().unwrap();
        let args = ["echo", &url, "--conns", "4", "--warmup", "0s", "--duration", "3s", "--csv", csv];
        let (code, v, text) = load_on(backend, &[&args[..], &["--server-pid", &pid]].concat());
        assert_eq!(code, 0, "{text}");
        let written = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut lines = written.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header[..4], ["t_s", "open", "sent_per_s", "ops_per_s"]);
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert!(rows.len() >= 3, "3s run, {} rows:\n{written}", rows.len());
        assert_eq!(rows.len(), v["series"].as_array().unwrap().len());
        let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
        for row in &rows {
            assert_eq!(row.len(), header.len(), "{row:?}");
            assert!(
                !row[column("server_cpu")].is_empty() && !row[column("client_cpu")].is_empty(),
                "{row:?}"
            );
        }
        let busy =
            rows.iter().find(|r| r[column("ops_per_s")].parse::<f64>().unwrap() > 0.0).expect("echoes");
        let (p50, p99): (f64, f64) =
            (busy[column("p50_us")].parse().unwrap(), busy[column("p99_us")].parse().unwrap());
        assert!(0.0 < p50 && p50 <= p99, "{busy:?}");
        assert!(busy[column("sent_per_s")].parse::<f64>().unwrap() > 0.0);
    }
}

/// The coordinated-omission check: a server that can echo about 500 messages per second. The
/// closed loop (one in flight on each of 2 connections) waits for it and sees a few ms per echo;
/// the open loop offers 800 messages per second whatever it answers, so a queue builds up and the
/// latency from the scheduled send times grows over the run (the per-second series shows it).
/// Only relations are asserted.
#[test]
fn open_loop_measures_the_queue_a_closed_loop_hides() {
    for backend in BACKENDS {
        let echo = echo_server_taking(Duration::from_millis(2));
        let url = format!("ws://{}/", echo.addr);
        let common = ["--conns", "2", "--warmup", "0s", "--duration", "2s", "--drain-timeout", "20s"];
        let closed: Vec<&str> = ["echo", &url, "--inflight", "1"].into_iter().chain(common).collect();
        let (code, closed, text) = load_on(backend, &closed);
        assert_eq!(code, 0, "{text}");
        assert!(closed["open_loop"].is_null(), "{closed}");
        let open: Vec<&str> = ["echo", &url, "--total-rate", "800/s"].into_iter().chain(common).collect();
        let (code, open, text) = load_on(backend, &open);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("latency (from schedule)") && text.contains("skipped"), "{text}");
        // 2 connections × 400/s × 2 s, whatever the server does.
        let scheduled = u(&open, "open_loop.scheduled");
        assert!((1590..=1610).contains(&scheduled), "{open}");
        assert_eq!(u(&open, "open_loop.skipped"), 0, "{open}");
        assert_eq!((u(&open, "lost"), u(&open, "payload_errors")), (0, 0), "{open}");
        assert_eq!(f(&open, "open_loop.total_rate"), 800.0);
        let (closed_p99, open_p99) = (f(&closed, "rtt.p99_us"), f(&open, "rtt.p99_us"));
        assert!(
            open_p99 > 5.0 * closed_p99,
            "open-loop p99 {open_p99} µs vs closed-loop p99 {closed_p99} µs"
        );
        assert!(f(&open, "rtt.p50_us") > 5.0 * f(&closed, "rtt.p50_us"), "{open}\n{closed}");
        // Over time: the open loop's per-second median grows as the queue does (about 0.3 s in
        // the first second, 0.9 s in the second); the closed loop's stays where it was.
        let growth = |v: &Value| {
            let p50s: Vec<f64> =
                v["series"].as_array().unwrap().iter().filter_map(|s| s["p50_us"].as_f64()).collect();
            assert!(p50s.len() >= 2, "{v}");
            p50s[p50s.len() - 1] / p50s[0]
        };
        let (open_growth, closed_growth) = (growth(&open), growth(&closed));
        assert!(open_growth > 1.5, "open-loop p50 per second grew {open_growth}x: {open}");
        assert!(open_growth > 1.5 * closed_growth, "open {open_growth}x, closed {closed_growth}x");
    }
}

/// `--total-rate` is for the whole run: with `--procs 2`, each child sends its connections'
/// share, and the merged schedule adds up to the total.
#[test]
fn total_rate_is_shared_by_the_processes() {
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let (code, v, text) = load_on(
            backend,
            &[
                "echo",
                &url,
                "--conns",
                "4",
                "--procs",
                "2",
                "--total-rate",
                "400/s",
                "--warmup",
                "0s",
                "--duration",
                "1s",
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!((u(&v, "procs"), f(&v, "open_loop.rate_per_conn")), (2, 100.0), "{v}");
        assert_eq!(f(&v, "open_loop.total_rate"), 400.0, "{v}");
        let scheduled = u(&v, "open_loop.scheduled");
        assert!((396..=404).contains(&scheduled), "{v}");
    }
}

/// `--ramp`: from 10 to 400 messages per second per connection over the run, so the series'
/// sent rate rises from its first to its third second (the relation only, not the values).
#[test]
fn a_ramp_raises_the_sent_rate_over_the_run() {
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let (code, v, text) = load_on(
            backend,
            &["echo", &url, "--conns", "2", "--ramp", "10:400/s:4s", "--warmup", "0s", "--duration", "4s"],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!(f(&v, "open_loop.rate_per_conn"), 400.0, "{v}");
        assert_eq!(v["open_loop"]["ramp"], "10:400/s:4s", "{v}");
        assert!(text.contains("open loop ramping 10:400/s:4s"), "{text}");
        // Due in the window: 2 connections × the ramp's area (4 s × (10 + 400)/2 = 820).
        let scheduled = u(&v, "open_loop.scheduled");
        assert!((1610..=1670).contains(&scheduled), "{v}");
        let sent: Vec<f64> =
            v["series"].as_array().unwrap().iter().filter_map(|row| row["sent_per_s"].as_f64()).collect();
        assert!(sent.len() >= 3, "{v}");
        // A row per second of a 4 s run: the first second averages about 2 × 59/s, the third
        // (the last sure to be whole) about 2 × 254/s.
        assert!(sent[2] > 2.0 * sent[0], "sent per second {sent:?}");
    }
}

/// Thresholds judge the run: all passing gives 0, one failing gives 4 and says which and why.
#[test]
fn thresholds_set_the_exit_status() {
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let base = ["echo", &url, "--conns", "2", "--warmup", "0s", "--duration", "500ms"];
        let with = |extra: &[&'static str]| -> Vec<&str> {
            base.iter().copied().chain(extra.iter().copied()).collect()
        };
        let (code, v, text) = load_on(
            backend,
            &with(&["--threshold", "p99<100s", "--threshold", "errors<=0", "--threshold", "rate>0"]),
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!(v["thresholds_ok"], true, "{v}");
        assert_eq!(v["thresholds"].as_array().map(Vec::len), Some(3), "{v}");
        assert!(text.contains("p99<100s ok ("), "{text}");
        // No loopback echo comes near a hundred million messages per second.
        let (code, v, text) =
            load_on(backend, &with(&["--threshold", "p99<100s", "--threshold", "rate>=100000000/s"]));
        assert_eq!(code, 4, "{text}");
        assert_eq!(v["ok"], true, "the run itself met its checks: {v}");
        assert_eq!(v["thresholds_ok"], false, "{v}");
        let failed = &v["thresholds"][1];
        assert_eq!(
            (failed["threshold"].as_str(), failed["ok"].as_bool()),
            (Some("rate>=100000000/s"), Some(false))
        );
        assert!(failed["value"].as_f64().is_some_and(|rate| rate > 0.0), "{v}");
        assert!(text.contains("rate>=100000000/s FAILED ("), "{text}");
        // A bad threshold is a usage error.
        let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
            .args(with(&["--threshold", "p99<fast"]))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("expected a duration like 50ms"));
    }
}

#[test]
fn procs_2_merges_counts_and_histograms() {
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let (code, v, text) = load_on(
            backend,
            &["connect", &url, "--conns", "301", "--hold", "300ms", "--procs", "2", "--report", "/dev/null"],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!((u(&v, "procs"), u(&v, "conns"), u(&v, "dial.established")), (2, 301, 301));
        assert_eq!(u(&v, "dial.handshake_latency.count"), 301, "merged histogram counts every handshake");
        assert_eq!(u(&v, "close.clean"), 301);

        // The server runs in this process: the parent measures its CPU over the children's window.
        let pid = std::process::id().to_string();
        let (code, v, text) = load_on(
            backend,
            &[
                "echo",
                &url,
                "--conns",
                "6",
                "--procs",
                "2",
                "--warmup",
                "100ms",
                "--duration",
                "700ms",
                "--server-pid",
                &pid,
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert!(v["cpu"]["server"].is_object(), "the window closed on the children's `measured`: {v}");
        assert_eq!((u(&v, "procs"), u(&v, "conns"), u(&v, "dial.established")), (2, 6, 6));
        assert_eq!(u(&v, "rtt.count"), u(&v, "messages"), "exact merge: one latency per measured echo");
        assert_eq!(u(&v, "total_sent"), u(&v, "total_received"));
        assert!(v["rtt"].get("hist").is_none(), "the histograms stay between the processes");
        assert_ordered(&v, "rtt");
    }
}

/// `--threads 2`: two loops in one process, merged as `--procs` merges: counts add up, the
/// histograms are merged exactly and stay out of the parent's report, and each loop's client CPU
/// is its own thread's.
#[test]
fn threads_2_split_the_connections_and_merge_like_procs() {
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let pid = std::process::id().to_string();
        let (code, v, text) = load_on(
            backend,
            &[
                "echo",
                &url,
                "--conns",
                "5",
                "--threads",
                "2",
                // Enough echoes that the client's CPU is at least one clock tick (10 ms) of
                // /proc accounting: at 500/s it was sometimes 0 on a loaded machine.
                "--total-rate",
                "5000/s",
                "--warmup",
                "100ms",
                "--duration",
                "700ms",
                "--server-pid",
                &pid,
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!((u(&v, "procs"), u(&v, "conns"), u(&v, "dial.established")), (2, 5, 5), "{v}");
        assert_eq!(f(&v, "open_loop.total_rate"), 5000.0, "{v}");
        assert_eq!(u(&v, "rtt.count"), u(&v, "messages"), "exact merge: one latency per measured echo");
        assert_eq!(u(&v, "total_sent"), u(&v, "total_received"));
        assert!(v["rtt"].get("hist").is_none(), "the histograms stay between the loops: {v}");
        assert!(v["cpu"]["server"].is_object(), "{v}");
        assert!(f(&v, "cpu.client.cpu_s") > 0.0, "{v}");
        let (code, v, text) =
            load_on(backend, &["connect", &url, "--conns", "31", "--hold", "200ms", "--threads", "3"]);
        assert_eq!(code, 0, "{text}");
        assert_eq!((u(&v, "procs"), u(&v, "dial.established"), u(&v, "close.clean")), (3, 31, 31), "{v}");
        assert_eq!(u(&v, "dial.handshake_latency.count"), 31);
        // One way of splitting at a time.
        let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
            .args(["connect", &url, "--conns", "4", "--threads", "2", "--procs", "2"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("--threads and --procs"));
    }
}

/// A miniature gateway: `?channels=C` subscribes, a welcome is sent once subscribed, and
/// `POST /v1/publish {"channel","data"}` publishes `{"channel","data","ts"}`.
fn mini_gateway() -> (SocketAddr, SocketAddr) {
    mini_gateway_with(None)
}

/// [`mini_gateway`], its WebSocket listener on TLS with `tls`.
fn mini_gateway_with(tls: Option<throng::tls::rustls::ServerConfig>) -> (SocketAddr, SocketAddr) {
    let mut builder = Server::builder().bind("127.0.0.1:0").unwrap().loops(1);
    if let Some(config) = tls {
        builder = builder.tls(config);
    }
    let server = builder.start().unwrap();
    let ws = server.local_addr();
    let (events, handle) = (server.events(), server.handle());
    std::thread::spawn(move || {
        for event in events.iter() {
            if let Event::Open { conn, query, .. } = event {
                let channel = query.as_deref().and_then(|q| q.strip_prefix("channels=")).unwrap_or("");
                handle.subscribe(conn, channel).unwrap();
                handle.send(conn, format!(r#"{{"type":"welcome","channels":["{channel}"]}}"#)).unwrap();
            }
        }
    });
    let handle = server.handle();
    std::mem::forget(server);
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in admin.incoming() {
            let Ok(mut stream) = stream else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || serve_admin(&mut stream, &handle));
        }
    });
    (ws, admin_addr)
}

fn serve_admin(stream: &mut TcpStream, handle: &throng::Handle) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
        buf.drain(..end + 4 + len);
        let channel = body["channel"].as_str().unwrap().to_owned();
        let envelope = serde_json::json!({ "channel": channel, "data": body["data"], "ts": 0 });
        handle.publish(&channel, envelope.to_string()).unwrap();
        let answer = format!(r#"{{"channel":"{channel}","queued":1}}"#);
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
    }
}

#[test]
fn fanout_delivers_every_message_to_every_subscriber() {
    for backend in BACKENDS {
        let (ws, admin) = mini_gateway();
        let url = format!("ws://{ws}/ws");
        let publish = format!("http://{admin}/v1/publish");
        let (code, v, text) = load_on(
            backend,
            &[
                "fanout",
                &url,
                "--subscribers",
                "50",
                "--channel",
                "e2e",
                "--publish",
                &publish,
                "--rate",
                "20/s",
                "--duration",
                "500ms",
                "--drain-timeout",
                "3s",
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!((u(&v, "dial.established"), u(&v, "publish.accepted"), u(&v, "published")), (50, 10, 10));
        assert_eq!((u(&v, "deliveries"), u(&v, "expected")), (500, 500));
        assert_eq!((f(&v, "delivery_ratio"), f(&v, "min_client_ratio")), (1.0, 1.0));
        assert_eq!(u(&v, "time_to_last_delivery.count"), 10);
        assert_ordered(&v, "latency");

        // The same over two processes: the parent publishes, the children subscribe.
        let (code, v, text) = load_on(
            backend,
            &[
                "fanout",
                &url,
                "--subscribers",
                "30",
                "--channel",
                "e2e2",
                "--publish",
                &publish,
                "--rate",
                "20/s",
                "--duration",
                "300ms",
                "--procs",
                "2",
                "--server-pid",
                &std::process::id().to_string(),
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert!(v["cpu"]["server"].is_object(), "the window closed on the children's `measured`: {v}");
        assert_eq!((u(&v, "procs"), u(&v, "dial.established"), u(&v, "published")), (2, 30, 6));
        assert_eq!((u(&v, "deliveries"), u(&v, "publishes_fully_delivered")), (180, 6));
        assert_eq!(u(&v, "latency.count"), 180);

        // And over two threads of one process (the `end N` command goes through the loops' flags).
        let (code, v, text) = load_on(
            backend,
            &[
                "fanout",
                &url,
                "--subscribers",
                "20",
                "--channel",
                "e2e3",
                "--publish",
                &publish,
                "--rate",
                "20/s",
                "--duration",
                "300ms",
                "--threads",
                "2",
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!((u(&v, "procs"), u(&v, "dial.established"), u(&v, "published")), (2, 20, 6));
        assert_eq!((u(&v, "deliveries"), u(&v, "publishes_fully_delivered")), (120, 6));
    }
}

/// Usage errors (exit status 2) are found before any connection is attempted: these runs name a
/// non-loopback target (a documentation address) but are refused before contacting it.
#[test]
fn refuses_bad_targets_and_sources_without_sending() {
    for args in [
        &["echo", "ws://bad!name:9001/"][..],
        &["echo", "wss://127.0.0.1:9/", "--backend", "io_uring"],
        &["echo", "wss://127.0.0.1:9/", "--ca-file", "/nonexistent/ca.pem"],
        &["echo", "ws://127.0.0.1:9/", "--ca-file", "/nonexistent/ca.pem"],
        &["echo", "https://127.0.0.1:9/"],
        &["echo", "ws://192.0.2.7:9001/", "--sources", "192.0.2.99"],
        &["echo", "ws://192.0.2.7:9001/", "--sources", "127.0.0.2"],
        &["echo", "ws://127.0.0.1:9/", "--sources", "10.0.0.1"],
        &["fanout", "ws://127.0.0.1:9/ws", "--subscribers", "1", "--publish", "http://bad!name:9090/"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_throng-load")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("throng-load: "), "{args:?}: {stderr}");
    }
}

/// A TLS server configuration presenting a leaf for `localhost` and 127.0.0.1, and the PEM
/// file of the certificate authority that signed it.
fn test_pki() -> (throng::tls::rustls::ServerConfig, std::path::PathBuf) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // A name of its own: a certificate from another CA of the same name reads as a forgery.
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("throng-load test CA {n}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let certificates =
        throng::tls::Certificates::from_pem(leaf.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let ca_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-ca-{}-{n}.pem", std::process::id()));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (throng::tls::server_config(certificates).unwrap(), ca_file)
}

/// A TLS echo server (throng's engine) with a [`test_pki`] certificate, and its CA file.
fn tls_echo_server() -> (Echo, std::path::PathBuf) {
    let (config, ca_file) = test_pki();
    (start_echo_server(Duration::ZERO, Some(config)), ca_file)
}

/// Every mode that dials runs over `wss://` (on epoll, which `auto` picks for TLS): the
/// handshakes are counted, and `--tls-resume` decides whether they resume.
#[test]
fn wss_runs_every_mode_and_resumes_on_request() {
    let (echo, ca_file) = tls_echo_server();
    let addr = echo.addr;
    let ca = ca_file.to_str().unwrap();
    let url = format!("wss://localhost:{}/", addr.port());
    let (code, v, text) = load(&[
        "echo",
        &url,
        "--ca-file",
        ca,
        "--conns",
        "4",
        "--size",
        "3000",
        "--warmup",
        "0s",
        "--duration",
        "300ms",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["backend"], "epoll", "{text}");
    assert_eq!(u(&v, "dial.established"), 4);
    assert_eq!((u(&v, "payload_errors"), u(&v, "lost")), (0, 0));
    assert!(u(&v, "total_received") > 0, "{v}");
    assert_eq!(u(&v, "traffic.tls_handshakes"), 4, "{v}");

    let (code, v, text) = load(&["connect", &url, "--ca-file", ca, "--conns", "50", "--hold", "0s"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!((u(&v, "dial.established"), u(&v, "close.clean")), (50, 50), "{v}");
    assert_eq!(u(&v, "pongs_received"), 50, "{v}");

    for (resume, resumed) in [("off", false), ("on", true)] {
        let (code, v, text) = load(&[
            "storm",
            &url,
            "--ca-file",
            ca,
            "--tls-resume",
            resume,
            "--parallel",
            "2",
            "--duration",
            "300ms",
        ]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(v["failed"], serde_json::json!({}), "{v}");
        let (handshakes, resumptions) = (u(&v, "traffic.tls_handshakes"), u(&v, "traffic.tls_resumed"));
        assert!(handshakes >= u(&v, "cycles") && handshakes > 1, "{v}");
        // On, every cycle after the first of each parallel slot can resume; off, none does.
        assert_eq!(resumptions > 0, resumed, "--tls-resume {resume}: {v}");
    }
}

/// `fanout` over `wss://`: the subscribers on TLS, the publisher on plain HTTP.
#[test]
fn wss_fanout_delivers_every_message() {
    let (config, ca_file) = test_pki();
    let (ws, admin) = mini_gateway_with(Some(config));
    let url = format!("wss://localhost:{}/ws", ws.port());
    let publish = format!("http://{admin}/v1/publish");
    let ca = ca_file.to_str().unwrap();
    let (code, v, text) = load(&[
        "fanout",
        &url,
        "--ca-file",
        ca,
        "--subscribers",
        "20",
        "--channel",
        "tls",
        "--publish",
        &publish,
        "--rate",
        "20/s",
        "--duration",
        "300ms",
        "--drain-timeout",
        "3s",
    ]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(u(&v, "dial.established"), 20, "{v}");
    assert_eq!(u(&v, "deliveries"), u(&v, "expected"), "{v}");
    assert!(u(&v, "deliveries") > 0, "{v}");
}

/// A certificate the client does not trust fails every connection, counted by reason.
#[test]
fn wss_counts_an_untrusted_certificate_as_such() {
    let (echo, _) = tls_echo_server();
    let addr = echo.addr;
    // Only the other server's CA is used.
    let (_, other_ca) = tls_echo_server();
    let url = format!("wss://localhost:{}/", addr.port());
    let (code, v, text) =
        load(&["connect", &url, "--ca-file", other_ca.to_str().unwrap(), "--conns", "3", "--hold", "0s"]);
    assert_ne!(code, 0, "{text}");
    assert_eq!(u(&v, "dial.failed.tls_cert_unknown_issuer"), 3, "{v}");
}

/// `storm`: connect–upgrade–close cycles, each ended by a clean close handshake.
#[test]
fn storm_cycles_close_cleanly() {
    let echo = echo_server();
    let url = format!("ws://{}/", echo.addr);
    for backend in BACKENDS {
        let (code, v, text) = load_on(backend, &["storm", &url, "--parallel", "4", "--duration", "500ms"]);
        assert_eq!(code, 0, "{text}");
        assert!(u(&v, "cycles") > 0, "{v}");
        assert_eq!(v["failed"], serde_json::json!({}), "{v}");
        assert_eq!(u(&v, "cycle.count"), u(&v, "cycles"), "{v}");
    }
}

/// `--backend` takes auto, epoll or io_uring; anything else is a usage error that names the
/// choices, before any connection is attempted (the target is a documentation address).
#[test]
fn refuses_an_unknown_backend() {
    let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(["echo", "ws://192.0.2.7:9001/", "--backend", "kqueue"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid value 'kqueue' for '--backend"), "{stderr}");
    assert!(stderr.contains("[possible values: auto, epoll, io_uring]"), "{stderr}");
}

/// Not a test of its own: the server `compare` starts through this test binary's command line
/// (`compare_runs_the_mode_against_each_server`). Without `$PORT` it does nothing.
#[test]
#[ignore = "a server for compare, started by its command line with $PORT set"]
fn serve_echo_on_port() {
    let Ok(port) = std::env::var("PORT") else { return };
    let server = Server::builder()
        .bind(format!("127.0.0.1:{port}").as_str())
        .unwrap()
        .loops(1)
        .on_message(|inline, kind, payload| {
            inline.reply(kind, payload);
            Flow::Consumed
        })
        .start()
        .unwrap();
    // Until `compare` stops the process group.
    for _ in server.events().iter() {}
}

/// `compare` starts each server on its own port, runs the mode against it with its pids (so
/// the server's CPU per message is measured), stops it, and reports both; a server that exits
/// before accepting is an error row, and the exit status says so.
#[test]
fn compare_runs_the_mode_against_each_server() {
    let exe = std::env::current_exe().unwrap();
    let serve = format!("exec '{}' serve_echo_on_port --exact --ignored --nocapture", exe.display());
    let report = std::env::temp_dir().join(format!("throng-load-compare-{}.html", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(["compare", "--server", &format!("first={serve}"), "--server", &format!("second={serve}")])
        .args(["--server", "broken=exit 3", "--report", report.to_str().unwrap(), "--json", "--"])
        .args(["echo", "--conns", "2", "--warmup", "0s", "--duration", "1s", "--timeout", "30s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "the broken server fails the comparison:\n{text}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let servers = v["servers"].as_array().unwrap();
    let names: Vec<&str> = servers.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "second", "broken"], "{text}");
    for s in &servers[..2] {
        assert_eq!((s["ok"].as_bool(), s["exit_code"].as_i64()), (Some(true), Some(0)), "{s}");
        assert!(f(s, "rate") > 0.0 && f(s, "p50_us") > 0.0 && f(s, "p99_us") >= f(s, "p50_us"), "{s}");
        assert!(f(s, "server_cpu_us_per_op") > 0.0, "{s}");
        assert_eq!(u(s, "report.dial.established"), 2);
    }
    assert_ne!(servers[0]["port"], servers[1]["port"]);
    assert!(servers[2]["error"].as_str().unwrap().contains("exited"), "{text}");
    let table: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("  first") || l.starts_with("  second")).collect();
    assert_eq!(table.len(), 2, "{text}");
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(page.contains("<td>first</td>") && page.contains("<td>second</td>") && page.contains("<svg"));
    // Each chart over time has a line of each server.
    for chart in ["sent/s", "p99", "client"] {
        assert!(
            page.contains(&format!(">first {chart}<")) && page.contains(&format!(">second {chart}<")),
            "{chart}"
        );
    }
    // Rate, latency, connections, CPU: all drawn.
    if let Some(drawn) = charts_drawn(&report) {
        assert_eq!(drawn, page.matches("<svg class=\"chart\"").count());
        assert!(drawn >= 4, "{drawn}");
    }
    let _ = std::fs::remove_file(&report);
}

/// Opens the HTML report at `path` in headless Chromium (`$CHROMIUM`, else `chromium`) and
/// returns the number of charts the page says the browser drew (`data-charts-drawn`); `None`,
/// saying so, when Chromium is not installed — except in CI (`CI` set), which installs it
/// before the tests: a skip there would hide a broken report.
fn charts_drawn(path: &std::path::Path) -> Option<usize> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    // Root in a container has no user namespaces for the sandbox; no network to reach.
    let output = Command::new("timeout")
        .args(["120", &chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--no-first-run", "--disable-background-networking", "--disable-component-update"])
        .args(["--disable-sync", "--dump-dom", &format!("file://{}", path.display())])
        .output()
        .expect("timeout(1) runs");
    if output.status.code() == Some(127) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{chromium} not found, and CI installs it before the tests"
        );
        eprintln!(
            "SKIPPED the browser check of {}: {chromium} not found (apt-get install chromium)",
            path.display()
        );
        return None;
    }
    let dom = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{chromium}: {:?}\n{stderr}", output.status);
    let drawn = dom.split("data-charts-drawn=\"").nth(1).and_then(|rest| rest.split('"').next());
    Some(
        drawn
            .unwrap_or_else(|| panic!("no data-charts-drawn in the page Chromium rendered:\n{dom}"))
            .parse()
            .unwrap(),
    )
}

/// A run's report, opened in headless Chromium: the latency histogram and the charts over time
/// (rate, p50/p99 per second, connections, client and server CPU) are all drawn.
#[test]
fn the_html_report_draws_its_charts_in_a_browser() {
    let echo = echo_server();
    let url = format!("ws://{}/", echo.addr);
    let report = std::env::temp_dir().join(format!("throng-load-report-{}.html", std::process::id()));
    let pid = std::process::id().to_string();
    let (code, _, text) = load(&[
        "echo",
        &url,
        "--conns",
        "4",
        "--message-rate",
        "50",
        "--warmup",
        "0s",
        "--duration",
        "3s",
        "--server-pid",
        &pid,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let page = std::fs::read_to_string(&report).unwrap();
    for title in ["Rate:", "Latency per second", "Connections open", "CPU:", ">server<", ">client<", ">p99<"]
    {
        assert!(page.contains(title), "{title}");
    }
    let charts = page.matches("<svg class=\"chart\"").count();
    assert_eq!(charts, 5, "the histogram and four charts over time");
    if let Some(drawn) = charts_drawn(&report) {
        assert_eq!(drawn, charts);
    }
    let _ = std::fs::remove_file(&report);
}

/// `compare -- connect`: the server's memory per connection is in the comparison.
#[test]
fn compare_reports_memory_per_connection_in_connect() {
    let exe = std::env::current_exe().unwrap();
    let serve = format!("exec '{}' serve_echo_on_port --exact --ignored --nocapture", exe.display());
    let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(["compare", "--server", &format!("only={serve}"), "--json", "--"])
        .args(["connect", "--conns", "200", "--hold", "500ms", "--timeout", "30s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let only = &v["servers"][0];
    assert_eq!(u(only, "report.dial.established"), 200);
    assert!(only["server_rss_bytes_per_conn"].is_number(), "{only}");
}

/// `compare --rounds 3`: the servers alternate round by round (the order turns by one each
/// round), every round's figures are in the JSON file, and each server's figures (in the JSON
/// and the table) are the medians of its rounds; `--server-cpu` pins what the command starts.
#[test]
fn compare_alternates_rounds_and_reports_their_medians() {
    let exe = std::env::current_exe().unwrap();
    let serve = format!(
        "grep Cpus_allowed_list /proc/self/status >&2; exec '{}' serve_echo_on_port --exact --ignored --nocapture",
        exe.display()
    );
    let json = std::env::temp_dir().join(format!("throng-load-rounds-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(["compare", "--server", &format!("a={serve}"), "--server", &format!("b={serve}")])
        .args(["--rounds", "3", "--server-cpu", "0", "--client-cpu", "0", "--json", json.to_str().unwrap()])
        .args(["--", "echo", "--conns", "2", "--warmup", "0s", "--duration", "500ms", "--timeout", "30s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let text = format!("{stdout}\n{stderr}");
    assert_eq!(output.status.code(), Some(0), "{text}");
    // Round 1: a, b; round 2: b, a; round 3: a, b.
    let order: Vec<&str> = (stderr.lines())
        .filter_map(|l| l.strip_prefix("throng-load: compare: round "))
        .map(|l| l.split(':').nth(1).unwrap().trim())
        .collect();
    assert_eq!(order, ["a", "b", "b", "a", "a", "b"], "{text}");
    assert_eq!(stderr.matches("Cpus_allowed_list:\t0\n").count(), 6, "{text}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!((v["rounds"].as_u64(), v["ok"].as_bool()), (Some(3), Some(true)), "{v}");
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[1]
    };
    for (s, name) in v["servers"].as_array().unwrap().iter().zip(["a", "b"]) {
        assert_eq!(s["name"], name);
        let runs = s["runs"].as_array().unwrap();
        let rounds: Vec<u64> = runs.iter().map(|r| u(r, "round")).collect();
        assert_eq!(rounds, [1, 2, 3], "{s}");
        for key in ["rate", "p50_us", "server_cpu_us_per_op", "client_cpu_us_per_op", "fresh_rss_kib"] {
            let each: Vec<f64> = runs.iter().map(|r| f(r, key)).collect();
            assert!(each.iter().all(|&x| x > 0.0), "{key}: {each:?}");
            assert_eq!(f(s, key), median(each), "{key} of {name}");
        }
        assert_eq!(u(&runs[2], "report.dial.established"), 2);
        // The table's row: the median rate.
        let row = stdout.lines().find(|l| l.starts_with(&format!("  {name} "))).unwrap();
        assert_eq!(row.split_whitespace().nth(1), Some(format!("{:.0}", f(s, "rate")).as_str()), "{row}");
    }
    assert!(stdout.contains("(medians of 3 rounds)"), "{stdout}");
}

/// A scenario file of the test's, in the temporary directory (removed when dropped).
struct ScenarioFile(std::path::PathBuf);

impl ScenarioFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("throng-load-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        ScenarioFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ScenarioFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The sample scenario (loadtest/scenarios/fleet.toml, slow readers included: the client runs
/// it on epoll) against a loopback echo server: every phase sends and gets its echoes, the
/// connections follow the ramp down and up again, subscribers and slow readers are there, the
/// file's thresholds are judged.
#[test]
fn the_sample_scenario_runs_its_phases() {
    let echo = echo_server();
    let url = format!("ws://{}/", echo.addr);
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/fleet.toml");
    let (code, v, text) = load(&["scenario", &url, sample]);
    assert_eq!(code, 0, "{text}");
    assert_eq!((v["mode"].as_str(), v["backend"].as_str()), (Some("scenario"), Some("epoll")), "{text}");
    let phases = v["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 5, "{v}");
    for phase in &phases[..4] {
        assert!(u(phase, "echoes") > 0, "{phase}");
    }
    // The storm dropped to 10 and the push phase brought them back: more dialled than the peak.
    assert_eq!(u(&v, "peak_open"), 60, "{text}");
    assert!(u(&v, "dialled") > 60 && u(&v, "closed_by_ramp") > 50, "{text}");
    assert_eq!(u(&v, "dialled"), u(&v, "established"));
    assert_eq!(
        (u(&v, "subscribers") > 0, u(&v, "slow_readers") > 0, u(&v, "pushed") > 0),
        (true, true, true)
    );
    assert_eq!((u(&v, "payload_errors"), u(&v, "lost")), (0, 0), "{text}");
    assert_eq!(u(&v, "close.clean"), u(&v, "established"), "{text}");
    assert_ordered(&v, "latency");
    // A slow reader's echoes wait for its next read, up to 200 ms after the last one.
    assert!(f(&v, "latency.max_us") > 50_000.0, "{text}");
    assert_eq!(v["thresholds"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["thresholds_ok"], true);
}

/// A scenario on each client backend: the message rate ramps with the phases, messages have
/// the drawn sizes and the template's fields (checked through the echo's length), and a failed
/// threshold from the file makes the exit status 4.
#[test]
fn scenario_ramps_connections_and_rates_on_each_backend() {
    let file = ScenarioFile::new(
        "ramps",
        r#"thresholds = ["p99<100s", "rate>=100000000/s"]
[message]
kind = "binary"
sizes = [{ bytes = 20 }, { bytes = 3000 }]
template = "{seq}-{ts}"
[[phase]]
duration = "1s"
connections = 20
message_rate = 10
[[phase]]
duration = "1s"
message_rate = 40
[[phase]]
duration = "1s"
connections = 5
"#,
    );
    for backend in BACKENDS {
        let echo = echo_server();
        let url = format!("ws://{}/", echo.addr);
        let (code, v, text) = load_on(backend, &["scenario", &url, file.path()]);
        assert_eq!(code, 4, "{text}");
        assert_eq!(v["ok"], true, "{text}");
        assert_eq!(v["thresholds"][1]["ok"], false, "{v}");
        let sent: Vec<u64> = (0..3).map(|i| u(&v["phases"][i], "sent")).collect();
        // 0 → 10/s over the first second (about 5 per connection), 10 → 40/s in the second.
        assert!(sent[1] > 2 * sent[0], "{sent:?} {text}");
        assert_eq!(u(&v, "peak_open"), 20, "{text}");
        assert!(u(&v, "closed_by_ramp") >= 15, "{text}");
        assert_eq!((u(&v, "payload_errors"), u(&v, "lost"), u(&v, "subscribers")), (0, 0, 0), "{text}");
        assert_eq!(u(&v, "echoes") + u(&v, "abandoned"), u(&v, "sent"), "{text}");
    }
}

/// A bad scenario is refused before anything connects, with the file, the line and the key.
#[test]
fn scenario_errors_name_the_line_and_the_key() {
    let cases = [
        ("[[phase]]\nduration = \"1s\"\nconnections = 5\nconections = 5\n", "line 4", "conections"),
        ("[[phase]]\nduration = \"soon\"\nconnections = 5\n", "line 2", "duration"),
        (
            "[slow_readers]\nshare = 2\npause = \"1s\"\n[[phase]]\nduration = \"1s\"\nconnections = 5\n",
            "line 2",
            "share",
        ),
    ];
    for (text, line, key) in cases {
        let file = ScenarioFile::new("bad", text);
        let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
            .args(["scenario", "ws://127.0.0.1:9/", file.path()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(file.path()) && stderr.contains(line) && stderr.contains(key), "{stderr}");
    }
}

/// `scenario --conns-ramp`: the connection count ramps from the command line, with the message
/// rate of `--ramp`; the file's options are refused beside a file.
#[test]
fn scenario_ramps_connections_from_the_command_line() {
    let echo = echo_server();
    let url = format!("ws://{}/", echo.addr);
    let (code, v, text) = load(&[
        "scenario",
        &url,
        "--conns-ramp",
        "0:12:1s,hold:1s,12:0:1s",
        "--ramp",
        "20:20:3s",
        "--size",
        "100",
    ]);
    assert_eq!(code, 0, "{text}");
    assert_eq!((u(&v, "peak_open"), u(&v, "established")), (12, 12), "{text}");
    // Down towards 0 at the end: the ramp closed the connections (what a late last turn left
    // open, the end did), all cleanly.
    assert!(u(&v, "closed_by_ramp") >= 9, "{text}");
    assert_eq!(u(&v, "close.clean"), 12, "{text}");
    assert!(u(&v, "echoes") > 0 && u(&v, "echoes") + u(&v, "abandoned") == u(&v, "sent"), "{text}");
    assert_eq!(v["phases"].as_array().map(Vec::len), Some(3), "{v}");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/fleet.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(["scenario", &url, sample, "--size", "4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// A scenario against a port nothing listens on: every attempt is refused and counted, the
/// count of connections is retried at the connect rate, and the run fails its checks.
#[test]
fn scenario_counts_refused_connections() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/");
    let (code, v, text) = load(&["scenario", &url, "--conns-ramp", "3:3:1s", "--connect-rate", "20"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!((v["ok"].as_bool(), u(&v, "established")), (Some(false), 0), "{text}");
    let refused = u(&v, "dial_failed.refused");
    assert!(refused >= 3 && refused == u(&v, "dialled"), "{text}");
    assert!(u(&v, "metrics.errors") >= refused, "{text}");
}
