//! `throng-send-floor`: the machine's floor for fan-out, the CPU one `send()` of a small frame to
//! each of N loopback sockets costs, to hold a server's CPU per delivery against.
//!
//! The process accepts `--sockets` connections from a child of its own (the same binary with
//! `--drain`, on its own set of descriptors, because the open-files limit is per process), which
//! reads everything with one epoll loop as a fan-out client would. Then it sends `--messages`
//! rounds of one `--size`-byte unmasked binary frame to every socket, one blocking `send()` each,
//! and prints its own CPU time (user + system, `getrusage`) per send as one JSON line:
//! `{"sockets":…,"messages":…,"size":…,"sends":…,"us_per_send":…,"user_us_per_send":…}`.
//! Pin it (taskset) as the server would be pinned. Loopback only; it ends by itself.
//!
//! `--rate R/s` starts a round every 1/R seconds instead of back to back, as a fan-out publishing
//! at `--rate R/s` does: between bursts the core idles and its caches go cold, which a send
//! pays for. Without it the rounds run back to back (the warmest, lowest floor).
//!
//! Usage: throng-send-floor [--sockets 15000] [--messages 20] [--size 66] [--rate R/s] [--drain-cpu N]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use nix::sys::resource::{getrusage, UsageWho};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| -> usize {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| die(&format!("{name} takes a number, got {v}")))
        })
    };
    let sockets = value("--sockets", 15_000);
    let messages = value("--messages", 20);
    let size = value("--size", 66).max(2);
    let interval = args.iter().position(|a| a == "--rate").and_then(|i| args.get(i + 1)).map(|v| {
        let rate: f64 =
            v.trim_end_matches("/s").parse().unwrap_or_else(|_| die(&format!("--rate takes R/s, got {v}")));
        if !(rate > 0.0 && rate.is_finite()) {
            die(&format!("--rate takes a positive R/s, got {v}"));
        }
        Duration::from_secs_f64(1.0 / rate)
    });
    if let Some(i) = args.iter().position(|a| a == "--drain") {
        let addr = args.get(i + 1).unwrap_or_else(|| die("--drain takes an address"));
        drain(addr, sockets);
        return;
    }
    let _ = throng::raise_nofile_limit();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("bind: {e}")));
    let addr = listener.local_addr().unwrap_or_else(|e| die(&format!("local_addr: {e}")));
    let me = std::env::current_exe().unwrap_or_else(|e| die(&format!("current_exe: {e}")));
    // `--drain-cpu N`: the reader on its own core (as a fan-out's client is), through taskset.
    let drain_args = ["--drain".to_string(), addr.to_string(), "--sockets".into(), sockets.to_string()];
    let mut command = match args.iter().position(|a| a == "--drain-cpu").and_then(|i| args.get(i + 1)) {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(&me);
            c
        }
        None => Command::new(&me),
    };
    let mut child = command
        .args(drain_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| die(&format!("spawning the drain: {e}")));
    let mut peers: Vec<TcpStream> = Vec::with_capacity(sockets);
    while peers.len() < sockets {
        let (s, _) = listener.accept().unwrap_or_else(|e| die(&format!("accept: {e}")));
        let _ = s.set_nodelay(true);
        peers.push(s);
    }
    // The frame a server would send: FIN + binary, 7-bit length, payload.
    let mut frame = vec![0u8; size];
    frame[0] = 0x82;
    frame[1] = (size - 2).min(125) as u8;
    let start = std::time::Instant::now();
    let before = cpu();
    for round in 0..messages {
        if let Some(interval) = interval {
            // Sleeping costs no CPU of ours, so pacing does not add to the figure.
            let due = start + interval * round as u32;
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
        for s in &mut peers {
            s.write_all(&frame).unwrap_or_else(|e| die(&format!("send: {e}")));
        }
    }
    let after = cpu();
    // The drain says when it has read every byte (so none of the kernel's work is left over).
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let expected = sockets * messages * size;
    writeln!(child.stdin.take().expect("piped"), "{expected}")
        .unwrap_or_else(|e| die(&format!("drain: {e}")));
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    let _ = child.wait();
    let sends = (sockets * messages) as f64;
    println!(
        "{{\"sockets\":{sockets},\"messages\":{messages},\"size\":{size},\"sends\":{},\"us_per_send\":{:.3},\"user_us_per_send\":{:.3},\"drained\":{}}}",
        sockets * messages,
        (after.0 - before.0) / sends,
        (after.1 - before.1) / sends,
        line.trim() == expected.to_string()
    );
}

/// (user + system, user) CPU microseconds of this process so far.
fn cpu() -> (f64, f64) {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap_or_else(|e| die(&format!("getrusage: {e}")));
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    (us(u.user_time()) + us(u.system_time()), us(u.user_time()))
}

/// The child: `sockets` connections to `addr`, read until stdin names the total, then says
/// how many bytes it read.
fn drain(addr: &str, sockets: usize) {
    let _ = throng::raise_nofile_limit();
    let addr: std::net::SocketAddr = addr.parse().unwrap_or_else(|_| die("--drain takes ip:port"));
    let mut poll = Poll::new().unwrap_or_else(|e| die(&format!("epoll: {e}")));
    let mut conns = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| die(&format!("connect: {e}")));
        s.set_nonblocking(true).unwrap_or_else(|e| die(&format!("nonblocking: {e}")));
        let mut s = MioStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .unwrap_or_else(|e| die(&format!("register: {e}")));
        conns.push(s);
    }
    // Read as the sends arrive (a fan-out's client is waiting in epoll, and waking it is part
    // of a send's cost); stdin names the total once the sender is done.
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(line.trim().parse().unwrap_or(0));
    });
    let mut expected = usize::MAX;
    let mut read = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut idle = 0;
    // Readiness is edge-triggered: read each ready socket dry. A drained sender needs no
    // deadline of ours, but a lost byte must not hang the run: ten idle seconds end it.
    while read < expected && idle < 10 {
        let _ = poll.poll(&mut events, Some(Duration::from_secs(1)));
        if let Ok(total) = rx.try_recv() {
            expected = total;
        }
        if events.is_empty() && expected != usize::MAX {
            idle += 1;
        }
        for event in &events {
            let s = &mut conns[event.token().0];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
    println!("{read}");
}

fn die(msg: &str) -> ! {
    eprintln!("throng-send-floor: {msg}");
    std::process::exit(2)
}
