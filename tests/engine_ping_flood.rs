//! Issue: a client that pings as fast as it can and never reads must not grow the server, nor
//! slow down anyone else. Alone in its binary: it loads a core for 8 s.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{frame, TestClient};
use throng::proto::OpCode;

const FLOOD: Duration = Duration::from_secs(8);

/// Resident set size of this process (the server runs in it), in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("rss field");
    pages * 4096
}

#[test]
fn a_ping_flood_without_reading_is_bounded_and_others_keep_their_latency() {
    let server = support::echo_server();
    let addr = server.local_addr();
    let mut flooder = TestClient::connect(addr, "/flood");
    let mut neighbour = TestClient::connect(addr, "/neighbour");
    neighbour.echo("warm up");
    let before = rss();

    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        // Many pings per write; the server's pongs are never read.
        let ping = frame(true, OpCode::Ping, &[b'p'; 125]);
        let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 256).collect();
        flooder.stream.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Once the server stops reading, writes time out: keep trying until told to stop.
                if flooder.stream.write_all(&burst).is_ok() {
                    sent += 256;
                }
            }
            (flooder, sent)
        })
    };

    let started = Instant::now();
    let mut rtts = Vec::new();
    while started.elapsed() < FLOOD {
        let sent = Instant::now();
        neighbour.echo("are you there?");
        rtts.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let (_flooder, pings) = flooding.join().unwrap();
    let grown = rss().saturating_sub(before);
    let stats = server.stats();
    println!("pings sent {pings}, rss grew {} KiB, {stats:?}", grown / 1024);

    assert!(grown < 64 << 20, "the server grew by {} MiB under a ping flood", grown >> 20);
    assert!(stats.read_pauses >= 1, "reading from the flooder never paused: {stats:?}");
    rtts.sort();
    let p99 = rtts[rtts.len() * 99 / 100];
    println!(
        "neighbour echo round trips: {} samples, median {:?}, p99 {p99:?}",
        rtts.len(),
        rtts[rtts.len() / 2]
    );
    assert!(p99 < Duration::from_millis(200), "the neighbour's p99 round trip was {p99:?}");
    neighbour.echo("still here");
}
