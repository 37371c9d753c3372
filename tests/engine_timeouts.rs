//! Timers over real sockets: idle timeout, ping/pong keepalive, close timeout.

mod support;

use std::time::{Duration, Instant};

use support::{connect, echo_builder, next_event, Received};
use throng::proto::OpCode;
use throng::Event;

#[test]
fn idle_connection_is_closed_with_1001() {
    let server = echo_builder().idle_timeout(Duration::from_millis(300)).start().unwrap();
    let mut client = connect(server.local_addr(), "/");
    let started = Instant::now();
    let reason = client.expect_close(1001);
    let elapsed = started.elapsed();
    assert_eq!(reason, "idle timeout");
    assert!(elapsed >= Duration::from_millis(250), "closed too early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "closed too late: {elapsed:?}");
    client.send_close(1001, "");
    client.expect_eof();
    drop(client);
    assert!(support::wait_until(Duration::from_secs(1), || server.stats().connections == 0));
}

#[test]
fn activity_postpones_the_idle_timeout() {
    let server = echo_builder().idle_timeout(Duration::from_millis(300)).start().unwrap();
    let mut client = connect(server.local_addr(), "/");
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(800) {
        client.echo(&format!("keepalive {n}"));
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let silent = Instant::now();
    client.expect_close(1001);
    let elapsed = silent.elapsed();
    assert!(elapsed < Duration::from_secs(3), "closed too late: {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(150), "closed too early after silence: {elapsed:?}");
}

#[test]
fn answered_pings_keep_the_connection_open() {
    let server =
        echo_builder().ping_interval(Duration::from_millis(200), Duration::from_millis(200)).start().unwrap();
    let mut client = connect(server.local_addr(), "/");
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(900) {
        match client.recv_timeout(Duration::from_millis(50)) {
            None => {}
            Some(Received::Ping(payload)) => {
                pings += 1;
                client.send_frame(true, OpCode::Pong, &payload);
            }
            Some(other) => panic!("expected only pings, got {}", support::describe(&other)),
        }
    }
    assert!(pings >= 2, "only {pings} pings in 900 ms with a 200 ms interval");
    assert!(pings <= 5, "{pings} pings in 900 ms with a 200 ms interval");
    client.echo("still here");
    client.close_handshake(1000);
}

#[test]
fn unanswered_ping_drops_the_connection() {
    let server =
        echo_builder().ping_interval(Duration::from_millis(200), Duration::from_millis(200)).start().unwrap();
    let events = server.events();
    let mut client = connect(server.local_addr(), "/");
    let opened = Instant::now();
    let Event::Open { conn, .. } = next_event(&events) else { panic!("expected Open") };
    assert!(matches!(client.recv(), Received::Ping(_)));
    let pinged = opened.elapsed();
    assert!(pinged >= Duration::from_millis(150) && pinged < Duration::from_secs(2), "ping after {pinged:?}");
    let pinged = Instant::now();
    client.expect_eof();
    let dropped = pinged.elapsed();
    assert!(dropped >= Duration::from_millis(150), "dropped too early: {dropped:?}");
    assert!(dropped < Duration::from_secs(2), "dropped too late: {dropped:?}");
    match next_event(&events) {
        Event::Close { conn: closed, code, clean, .. } => {
            assert_eq!(closed, conn);
            assert_eq!(code, 1006);
            assert!(!clean);
        }
        other => panic!("expected Close, got {other:?}"),
    }
}

#[test]
fn peer_that_never_answers_our_close_is_dropped_after_close_timeout() {
    let server = support::builder().close_timeout(Duration::from_millis(300)).start().unwrap();
    let events = server.events();
    let mut client = connect(server.local_addr(), "/");
    let Event::Open { conn, .. } = next_event(&events) else { panic!("expected Open") };
    server.handle().close(conn, 4000, "go away").unwrap();
    assert_eq!(client.expect_close(4000), "go away");
    let started = Instant::now();
    // No answer: the server gives up after the close timeout.
    client.expect_eof();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "dropped after {elapsed:?}");
    match next_event(&events) {
        Event::Close { code, clean, .. } => assert_eq!((code, clean), (1006, false)),
        other => panic!("expected Close, got {other:?}"),
    }
}
