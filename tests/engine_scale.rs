//! Many connections, several loops.

mod support;

use std::time::{Duration, Instant};

use support::{connect, echo_builder, next_event, TestClient};
use throng::Event;

/// 10,000 connections in all. The process may hold 20,000 descriptors and each connection costs
/// two here (the client socket and the server's), so they are opened in waves of at most 4,000
/// live at once (8,000 descriptors, leaving room for tests running alongside), each wave closed
/// and drained before the next.
#[test]
fn ten_thousand_connections_in_waves() {
    const WAVES: [usize; 3] = [4_000, 4_000, 2_000];
    let server = echo_builder().loops(2).start().unwrap();
    let addr = server.local_addr();
    let started = Instant::now();
    let mut opened = 0u64;
    for (wave, &size) in WAVES.iter().enumerate() {
        let mut clients: Vec<TestClient> = Vec::with_capacity(size);
        for i in 0..size {
            let mut client = connect(addr, "/");
            if i % 97 == 0 {
                client.echo(&format!("wave {wave} client {i}"));
            }
            clients.push(client);
        }
        opened += size as u64;
        let stats = server.stats();
        assert_eq!(stats.connections, size, "wave {wave}: {stats:?}");
        assert_eq!(stats.handshakes_ok, opened, "wave {wave}: {stats:?}");
        // The first and last still work with everybody connected.
        clients[0].echo("first");
        clients[size - 1].echo("last");
        drop(clients);
        assert!(
            support::wait_until(Duration::from_secs(5), || server.stats().connections == 0),
            "wave {wave}: {:?}",
            server.stats()
        );
    }
    let stats = server.stats();
    assert_eq!(
        (stats.accepted, stats.handshakes_ok, stats.handshakes_failed),
        (10_000, 10_000, 0),
        "{stats:?}"
    );
    assert_eq!(
        (stats.protocol_errors, stats.accept_errors, stats.rejected_over_limit),
        (0, 0, 0),
        "{stats:?}"
    );
    eprintln!("10,000 connections in {:?}", started.elapsed());
}

fn loops_used(size: usize, reuse_port: bool) -> [usize; 2] {
    let server = echo_builder().loops(2).reuse_port(reuse_port).start().unwrap();
    let events = server.events();
    let mut clients: Vec<TestClient> = (0..size).map(|_| connect(server.local_addr(), "/")).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.echo(&format!("client {i}"));
    }
    let mut per_loop = [0usize; 2];
    for _ in 0..size {
        match next_event(&events) {
            Event::Open { conn, .. } => per_loop[conn.loop_id()] += 1,
            other => panic!("expected Open, got {other:?}"),
        }
    }
    for client in &mut clients {
        client.close_handshake(1000);
    }
    per_loop
}

#[test]
fn two_loops_share_a_port() {
    let per_loop = loops_used(200, true);
    assert_eq!(per_loop[0] + per_loop[1], 200);
    assert!(per_loop[0] > 0 && per_loop[1] > 0, "one loop took everything: {per_loop:?}");
}

#[test]
fn without_reuse_port_loop_zero_deals_round_robin() {
    assert_eq!(loops_used(50, false), [25, 25]);
}

#[test]
fn connection_caps_refuse_the_excess() {
    let server = echo_builder().max_connections(5).start().unwrap();
    let addr = server.local_addr();
    let mut clients: Vec<TestClient> = (0..5).map(|_| connect(addr, "/")).collect();
    // The sixth is accepted by the kernel and closed by the server without an answer.
    let mut extra = support::tcp_connect(addr);
    std::io::Write::write_all(&mut extra, &support::upgrade_request(addr, "/").0).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut extra, &mut byte).unwrap_or(0), 0);
    assert_eq!(server.stats().rejected_over_limit, 1);
    clients[4].close_handshake(1000);
    clients.pop();
    assert!(support::wait_until(Duration::from_secs(2), || server.stats().connections == 4));
    let mut again = connect(addr, "/");
    again.echo("room again");
    for client in &mut clients {
        client.echo("still fine");
    }
}
