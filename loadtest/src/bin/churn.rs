//! `throng-churn`: the gateway's CPU per subscribe and unsubscribe command.
//!
//! Opens `--conns` connections to a `throng` gateway, then for `--rounds` rounds sends every
//! connection a `subscribe` command (channel `c<round % channels>`) and reads every reply, then
//! an `unsubscribe` for the same channel and reads every reply: all connections have one
//! command in flight at a time, so the server sees `conns` at once. Every reply is checked
//! (`subscribed` / `unsubscribed`). Prints one JSON line with the server's CPU time (all its
//! threads, from `/proc/PID/task/*/schedstat`) per command:
//! `{"conns":…,"commands":…,"server_us_per_command":…,"client_us_per_command":…,"wall_s":…}`.
//! Pin it (taskset) away from the server. Loopback only; bounded by its arguments and a read
//! timeout on every connection.
//!
//! Usage: throng-churn ws://127.0.0.1:8080/ws --server-pid PID [--conns 200] [--rounds 200]
//! [--channels 8]

use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use throng::client::{connect, ClientOptions, Connection};
use throng::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| -> usize {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| die(&format!("{name} takes a number, got {v}")))
        })
    };
    let url =
        args.get(1).filter(|u| u.starts_with("ws://")).unwrap_or_else(|| die("the first argument is ws://…"));
    let pid = value("--server-pid", 0);
    if pid == 0 {
        die("--server-pid PID is required");
    }
    let conns = value("--conns", 200);
    let rounds = value("--rounds", 200);
    let channels = value("--channels", 8).max(1);
    let _ = throng::raise_nofile_limit();

    let mut open: Vec<Connection> = (0..conns)
        .map(|i| {
            let mut c = connect(url, &ClientOptions::default())
                .unwrap_or_else(|e| die(&format!("connection {i}: {e}")));
            c.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap_or_else(|e| die(&format!("timeout: {e}")));
            expect(&mut c, "welcome");
            c
        })
        .collect();

    let server_before = server_cpu_ns(pid);
    let client_before = client_cpu_us();
    let started = Instant::now();
    for round in 0..rounds {
        let channel = format!("c{}", round % channels);
        for (op, reply) in [("subscribe", "subscribed"), ("unsubscribe", "unsubscribed")] {
            let command = format!(r#"{{"op":"{op}","channel":"{channel}"}}"#);
            for c in &mut open {
                c.send_text(&command).unwrap_or_else(|e| die(&format!("send: {e}")));
            }
            for c in &mut open {
                expect(c, reply);
            }
        }
    }
    let wall = started.elapsed();
    let server_ns = server_cpu_ns(pid).saturating_sub(server_before);
    let client_us = client_cpu_us() - client_before;
    let commands = (conns * rounds * 2) as f64;
    println!(
        r#"{{"conns":{conns},"commands":{commands},"server_us_per_command":{:.3},"client_us_per_command":{:.3},"wall_s":{:.3}}}"#,
        server_ns as f64 / 1000.0 / commands,
        client_us / commands,
        wall.as_secs_f64()
    );
    for mut c in open {
        let _ = c.close(1000, "");
    }
}

/// Reads the next message and checks that it is a JSON object of `"type": kind`.
fn expect(c: &mut Connection, kind: &str) {
    match c.recv() {
        Ok(Message::Text(text)) if text.contains(&format!(r#""type":"{kind}""#)) => {}
        Ok(other) => die(&format!("expected a {kind} reply, got {other:?}")),
        Err(e) => die(&format!("expected a {kind} reply: {e}")),
    }
}

/// CPU time of every thread of `pid` so far, in ns (the first field of each thread's schedstat).
fn server_cpu_ns(pid: usize) -> u64 {
    let tasks =
        std::fs::read_dir(format!("/proc/{pid}/task")).unwrap_or_else(|e| die(&format!("pid {pid}: {e}")));
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// This process's user + system CPU so far, in µs.
fn client_cpu_us() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap_or_else(|e| die(&format!("getrusage: {e}")));
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    us(usage.user_time()) + us(usage.system_time())
}

fn die(message: &str) -> ! {
    eprintln!("throng-churn: {message}");
    std::process::exit(2);
}
