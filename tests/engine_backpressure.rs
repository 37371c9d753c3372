//! The outbound cap against a client that does not read.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{next_event, Received, TestClient, READ_TIMEOUT};
use throng::proto::DataKind;
use throng::{CloseCause, Event, Server, SlowConsumerPolicy};

const CAP: usize = 64 * 1024;
const MESSAGE: usize = 16 * 1024;

/// A client whose receive buffer is fixed small (no autotuning), so the kernel soaks up little
/// and the server's queue fills quickly.
fn connect_small_window(addr: SocketAddr) -> TestClient {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    TestClient::upgrade(stream, addr, "/slow", |s, request| s.write_all(request))
}

fn start(policy: SlowConsumerPolicy) -> Server {
    support::echo_builder().max_outbound_bytes(CAP).slow_consumer(policy).start().unwrap()
}

/// Sends 16 KiB messages until `stop` holds (checked every 8 sends) or 5 s pass; returns how many.
fn flood(server: &Server, conn: throng::ConnId, stop: impl Fn(&throng::Stats) -> bool) -> u64 {
    let handle = server.handle();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        for _ in 0..8 {
            handle.send(conn, vec![sent as u8; MESSAGE]).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
        if stop(&server.stats()) {
            return sent;
        }
    }
    panic!("no slow-consumer action after {sent} messages: {:?}", server.stats());
}

/// Reads `n` binary messages of `MESSAGE` bytes.
fn drain(client: &mut TestClient, n: u64) {
    for i in 0..n {
        match client.recv() {
            Received::Message(DataKind::Binary, bytes) => assert_eq!(bytes.len(), MESSAGE, "message {i}"),
            other => panic!("message {i} of {n}: got {}", support::describe(&other)),
        }
    }
}

#[test]
fn slow_consumer_is_closed_with_1008() {
    let server = start(SlowConsumerPolicy::Close);
    let events = server.events();
    let mut client = connect_small_window(server.local_addr());
    let Event::Open { conn, .. } = next_event(&events) else { panic!("expected Open") };

    flood(&server, conn, |s| s.slow_consumer_closes >= 1);
    let stats = server.stats();
    assert_eq!(stats.slow_consumer_closes, 1, "{stats:?}");
    assert_eq!(stats.slow_consumer_drops, 0, "{stats:?}");

    // What was admitted before the cap arrives whole, then the 1008 close, then FIN.
    drain(&mut client, stats.messages_out);
    assert_eq!(client.expect_close(1008), "slow consumer");
    client.expect_eof();
    drop(client);
    match next_event(&events) {
        Event::Close { conn: closed, code, clean, cause, .. } => {
            assert_eq!(closed, conn);
            assert_eq!(code, 1008);
            assert!(!clean);
            assert_eq!(cause, CloseCause::SlowConsumer);
        }
        other => panic!("expected Close, got {other:?}"),
    }
}

#[test]
fn slow_consumer_drop_policy_drops_messages_and_keeps_the_connection() {
    let server = start(SlowConsumerPolicy::Drop);
    let events = server.events();
    let mut client = connect_small_window(server.local_addr());
    let Event::Open { conn, .. } = next_event(&events) else { panic!("expected Open") };

    let sent = flood(&server, conn, |s| s.slow_consumer_drops >= 4);
    // Every send was either queued or dropped, none lost otherwise.
    assert!(
        support::wait_until(Duration::from_secs(2), || {
            let s = server.stats();
            s.messages_out + s.slow_consumer_drops == sent
        }),
        "sent {sent}: {:?}",
        server.stats()
    );
    let stats = server.stats();
    assert_eq!(stats.slow_consumer_closes, 0, "{stats:?}");
    assert!(stats.messages_out >= (CAP / MESSAGE) as u64 - 1, "{stats:?}");

    drain(&mut client, stats.messages_out);
    client.echo("still open");
    client.close_handshake(1000);
    drop(client);
    assert!(matches!(next_event(&events), Event::Close { code: 1000, clean: true, .. }));
}

#[test]
fn message_larger_than_the_cap_goes_to_an_empty_queue() {
    let server = start(SlowConsumerPolicy::Close);
    let events = server.events();
    let mut client = support::connect(server.local_addr(), "/");
    let Event::Open { conn, .. } = next_event(&events) else { panic!("expected Open") };
    let big: Vec<u8> = (0..4 * CAP).map(|i| (i % 253) as u8).collect();
    server.handle().send(conn, big.clone()).unwrap();
    client.expect_binary(&big);
    client.echo("still open");
    assert_eq!(server.stats().slow_consumer_closes, 0);
}

#[test]
fn slow_subscriber_is_closed_and_others_keep_receiving() {
    let server = start(SlowConsumerPolicy::Close);
    let events = server.events();
    let handle = server.handle();
    let mut slow = connect_small_window(server.local_addr());
    let Event::Open { conn: slow_id, .. } = next_event(&events) else { panic!("expected Open") };
    let mut fast = support::connect(server.local_addr(), "/");
    let Event::Open { conn: fast_id, .. } = next_event(&events) else { panic!("expected Open") };
    handle.subscribe(slow_id, "feed").unwrap();
    handle.subscribe(fast_id, "feed").unwrap();
    let prepared = throng::Prepared::new(&throng::Message::Binary(vec![9; MESSAGE]));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut published = 0;
    while server.stats().slow_consumer_closes == 0 {
        assert!(Instant::now() < deadline, "no close after {published} publishes: {:?}", server.stats());
        handle.publish_prepared("feed", &prepared).unwrap();
        published += 1;
        // The fast one reads everything as it comes.
        match fast.recv() {
            Received::Message(DataKind::Binary, bytes) => assert_eq!(bytes.len(), MESSAGE),
            other => panic!("fast subscriber got {}", support::describe(&other)),
        }
    }
    handle.publish("feed", "after").unwrap();
    fast.expect_text("after");
    let mut got = 0;
    loop {
        match slow.recv() {
            Received::Message(DataKind::Binary, _) => got += 1,
            Received::Close(code, _) => {
                assert_eq!(code, 1008);
                break;
            }
            other => panic!("slow subscriber got {}", support::describe(&other)),
        }
    }
    assert!(got < published, "the slow one got all {published}");
    slow.expect_eof();
}

/// Inline echo replies obey the cap too: a client that sends without ever reading its echoes
/// must not grow the server's queue past the cap.
#[test]
fn inline_replies_to_a_client_that_never_reads_hit_the_cap() {
    let server = start(SlowConsumerPolicy::Close);
    let mut client = connect_small_window(server.local_addr());
    let payload = vec![7u8; MESSAGE];
    let frame = support::frame(true, throng::proto::OpCode::Binary, &payload);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && server.stats().slow_consumer_closes == 0 {
        // Once the server closed, writes fail: that is the expected end.
        if client.stream.write_all(&frame).is_err() {
            break;
        }
    }
    assert!(
        support::wait_until(Duration::from_secs(5), || server.stats().slow_consumer_closes == 1),
        "the echo queue grew without the slow-consumer policy applying: {:?}",
        server.stats()
    );
}
