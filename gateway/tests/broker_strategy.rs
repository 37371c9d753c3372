//! The measurement behind the broker's subscribe strategy (docs/architecture.md, "Broker"):
//! per-channel SUBSCRIBE against one PSUBSCRIBE `prefix:ch:*` per node, with K simulated nodes
//! on a real `redis-server`. Not run by default (it takes about ten seconds and its figures are
//! for reading, not asserting):
//!
//! ```text
//! cargo test --release --test broker_strategy -- --ignored --nocapture
//! ```

mod broker_support;
mod gateway_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use broker_support::Redis;

/// Redis's own CPU seconds (user + system) so far.
fn redis_cpu(redis: &Redis) -> f64 {
    let info: String = redis.query(redis::cmd("INFO").arg("cpu"));
    (info.lines())
        .filter_map(|l| l.strip_prefix("used_cpu_sys:").or_else(|| l.strip_prefix("used_cpu_user:")))
        .map(|v| v.trim().parse::<f64>().unwrap())
        .sum()
}

/// One run: `nodes` subscribers, `channels` channels each wanted by one node (`shared` false,
/// like user topics) or all of them by every node (`shared` true, a broadcast), `messages`
/// publishes of 100 bytes spread over the channels.
fn run(redis: &Redis, pattern: bool, nodes: usize, channels: usize, shared: bool, messages: usize) {
    let client = redis::Client::open(redis.url()).unwrap();
    let wanted: Vec<Arc<AtomicU64>> = (0..nodes).map(|_| Arc::default()).collect();
    let bytes: Vec<Arc<AtomicU64>> = (0..nodes).map(|_| Arc::default()).collect();
    let (ready_tx, ready_rx) = mpsc::channel();
    let subscribe_started = Instant::now();
    let threads: Vec<_> = (0..nodes)
        .map(|n| {
            let (client, wanted, bytes, ready) =
                (client.clone(), wanted[n].clone(), bytes[n].clone(), ready_tx.clone());
            std::thread::spawn(move || {
                let mut con = client.get_connection().unwrap();
                let mut pubsub = con.as_pubsub();
                pubsub.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let mine = |c: usize| shared || c % nodes == n;
                if pattern {
                    pubsub.psubscribe("bench:ch:*").unwrap();
                } else {
                    let names: Vec<String> =
                        (0..channels).filter(|&c| mine(c)).map(|c| format!("bench:ch:{c}")).collect();
                    for chunk in names.chunks(1000) {
                        pubsub.subscribe(chunk).unwrap();
                    }
                }
                ready.send(()).unwrap();
                loop {
                    match pubsub.get_message() {
                        Ok(m) if m.get_payload_bytes() == b"STOP" => return,
                        Ok(m) => {
                            let c: usize = m.get_channel_name().rsplit(':').next().unwrap().parse().unwrap();
                            bytes.fetch_add(m.get_payload_bytes().len() as u64, Ordering::Relaxed);
                            // A node discards what none of its connections subscribed to.
                            if mine(c) {
                                wanted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) if e.is_timeout() => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for _ in 0..nodes {
        ready_rx.recv().unwrap();
    }
    let subscribe_ms = subscribe_started.elapsed().as_secs_f64() * 1e3;
    let cpu_before = redis_cpu(redis);
    let mut publisher = client.get_connection().unwrap();
    let payload = [b'x'; 100];
    let started = Instant::now();
    for batch in (0..messages).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for &i in batch {
            pipe.cmd("PUBLISH").arg(format!("bench:ch:{}", i % channels)).arg(&payload[..]).ignore();
        }
        pipe.query::<()>(&mut publisher).unwrap();
    }
    let expected = if shared { messages * nodes } else { messages } as u64;
    while wanted.iter().map(|w| w.load(Ordering::Relaxed)).sum::<u64>() < expected {
        assert!(started.elapsed() < Duration::from_secs(60), "deliveries missing");
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = redis_cpu(redis) - cpu_before;
    let received: u64 = bytes.iter().map(|b| b.load(Ordering::Relaxed)).sum();
    for c in 0..channels.min(nodes) {
        let _: () =
            redis::cmd("PUBLISH").arg(format!("bench:ch:{c}")).arg("STOP").query(&mut publisher).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "| {} | {nodes} | {channels} ({}) | {subscribe_ms:.1} | {:.0} | {:.2} | {:.1} |",
        if pattern { "PSUBSCRIBE" } else { "SUBSCRIBE" },
        if shared { "all nodes" } else { "one node each" },
        messages as f64 / elapsed,
        cpu * 1e6 / messages as f64,
        received as f64 / 1e6,
    );
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn subscribe_strategy() {
    let redis = Redis::start();
    println!(
        "| mode | nodes | channels | subscribe ms | delivered msg/s | Redis CPU µs/publish | MB to nodes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (nodes, channels, shared) in [(3, 3000, false), (6, 3000, false), (3, 150_000, false), (3, 1, true)] {
        for pattern in [false, true] {
            run(&redis, pattern, nodes, channels, shared, 300_000);
        }
    }
}
