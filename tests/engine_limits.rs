//! The limits around the parser, on real sockets: bounded command queues, the message rate
//! limit, the assembly deadline and budget, and liveness while reading is paused.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{frame, next_event, wait_until, Received, TestClient, READ_TIMEOUT};
use throng::proto::OpCode;
use throng::{CommandError, Event, Flow};

#[test]
fn a_full_command_queue_refuses_with_an_error_and_shutdown_still_gets_through() {
    // The inline hook blocks the loop while `blocked` is set, so its queue fills.
    let blocked = Arc::new(AtomicBool::new(false));
    let hook_blocked = blocked.clone();
    let server = support::builder()
        .command_queue(4, Duration::from_millis(20))
        .on_message(move |_, _, payload| {
            if payload == b"block" {
                hook_blocked.store(true, Ordering::SeqCst);
                while hook_blocked.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Flow::Consumed
        })
        .start()
        .unwrap();
    let events = server.events();
    let mut client = TestClient::connect(server.local_addr(), "/");
    let Event::Open { conn, .. } = next_event(&events) else { panic!("expected Open") };
    let handle = server.handle();
    // A publish to a topic nobody subscribed to never reaches a queue: subscribe first.
    handle.subscribe(conn, "t").unwrap();
    assert!(wait_until(READ_TIMEOUT, || handle.subscribers("t") == 1));
    client.send_text("block");
    assert!(wait_until(READ_TIMEOUT, || blocked.load(Ordering::SeqCst)));

    let results: Vec<_> = (0..6).map(|i| handle.send(conn, format!("m{i}"))).collect();
    assert_eq!(&results[..4], &[Ok(()); 4], "the queue holds four");
    assert_eq!(&results[4..], &[Err(CommandError::QueueFull); 2], "then refuses, after the timeout");
    assert_eq!(handle.publish("t", "x"), Err(CommandError::QueueFull));
    assert_eq!(server.stats().commands_refused, 3);

    blocked.store(false, Ordering::SeqCst);
    for i in 0..4 {
        client.expect_text(&format!("m{i}"));
    }
    // Fill it again and stop the server: shutdown does not queue behind the commands.
    client.send_text("block");
    assert!(wait_until(READ_TIMEOUT, || blocked.load(Ordering::SeqCst)));
    for _ in 0..4 {
        handle.send(conn, "late").unwrap();
    }
    let unblock = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        blocked.store(false, Ordering::SeqCst);
    });
    server.shutdown(Duration::from_secs(2));
    unblock.join().unwrap();
    assert_eq!(handle.send(conn, "after"), Err(CommandError::Stopped));
}

#[test]
fn a_client_over_the_message_rate_is_closed_with_1008() {
    let server = support::echo_builder().max_message_rate(20, 5).start().unwrap();
    let addr = server.local_addr();
    let mut polite = TestClient::connect(addr, "/polite");
    let mut flooder = TestClient::connect(addr, "/flood");
    let burst: Vec<u8> = (0..50).flat_map(|i| frame(true, OpCode::Text, format!("{i}").as_bytes())).collect();
    flooder.send_raw(&burst);
    // The burst allowance is echoed, then the close.
    let mut echoed = 0;
    let reason = loop {
        match flooder.recv() {
            Received::Message(..) => echoed += 1,
            Received::Close(code, reason) => {
                assert_eq!(code, 1008);
                break reason;
            }
            other => panic!("got {}", support::describe(&other)),
        }
    };
    assert_eq!(reason, "message rate limit exceeded");
    assert!((5..=7).contains(&echoed), "{echoed} messages echoed before the limit");
    // A client within the rate is untouched: 10 messages at 5 per second.
    for i in 0..10 {
        polite.echo(&format!("polite {i}"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.stats().rate_limited, 1);
}

#[test]
fn pings_count_against_the_rate_too() {
    let server = support::echo_builder().max_message_rate(10, 3).start().unwrap();
    let mut client = TestClient::connect(server.local_addr(), "/");
    let pings: Vec<u8> = (0..20).flat_map(|_| frame(true, OpCode::Ping, b"")).collect();
    client.send_raw(&pings);
    loop {
        match client.recv() {
            Received::Pong(_) => {}
            Received::Close(code, reason) => {
                assert_eq!((code, reason.as_str()), (1008, "message rate limit exceeded"));
                break;
            }
            other => panic!("got {}", support::describe(&other)),
        }
    }
}

#[test]
fn an_unfinished_fragmented_message_is_closed_at_its_deadline() {
    let server = support::echo_builder().message_timeout(Some(Duration::from_millis(300))).start().unwrap();
    let mut client = TestClient::connect(server.local_addr(), "/");
    client.send_frame(false, OpCode::Text, b"the start of something");
    assert_eq!(client.expect_close(1008), "message not completed in time");
    assert_eq!(server.stats().assembly_timeouts, 1);
    // A message finished in time is not affected.
    let mut other = TestClient::connect(server.local_addr(), "/");
    other.send_frame(false, OpCode::Text, b"quick ");
    other.send_frame(true, OpCode::Continuation, b"finish");
    other.expect_text("quick finish");
}

#[test]
fn an_empty_first_fragment_starts_the_deadline_too() {
    let server = support::echo_builder().message_timeout(Some(Duration::from_millis(300))).start().unwrap();
    let mut client = TestClient::connect(server.local_addr(), "/");
    client.send_frame(false, OpCode::Binary, b"");
    assert_eq!(client.expect_close(1008), "message not completed in time");
}

#[test]
fn partial_messages_share_one_budget_per_loop() {
    let server = support::echo_builder().max_assembly_bytes(1000).start().unwrap();
    let addr = server.local_addr();
    let mut first = TestClient::connect(addr, "/a");
    let mut second = TestClient::connect(addr, "/b");
    first.send_frame(false, OpCode::Binary, &[1; 600]);
    // Make sure the first piece is held before the second arrives.
    first.send_frame(true, OpCode::Ping, b"sync");
    assert_eq!(first.recv(), Received::Pong(b"sync".to_vec()));
    second.send_frame(false, OpCode::Binary, &[2; 600]);
    assert_eq!(second.expect_close(1008), "server busy: too many partial messages");
    // The first carries on, and once it is done the budget is free again.
    first.send_frame(true, OpCode::Continuation, &[1; 300]);
    first.expect_binary(&[1; 900]);
    let mut third = TestClient::connect(addr, "/c");
    third.send_frame(false, OpCode::Binary, &[3; 900]);
    third.send_frame(true, OpCode::Continuation, &[3; 50]);
    third.expect_binary(&[3; 950]);
    assert_eq!(server.stats().assembly_budget_closes, 1);
}

#[test]
fn a_peer_whose_pongs_wait_unread_while_workers_are_behind_is_not_dropped() {
    // One-event channel and no worker for a while: the loop stops reading, so the pongs the
    // client sends sit unread in the socket while the pong deadline passes.
    let server = support::builder()
        .event_capacity(1)
        .ping_interval(Duration::from_millis(50), Duration::from_millis(100))
        .start()
        .unwrap();
    let events = server.events();
    let mut client = TestClient::connect(server.local_addr(), "/");
    // Fill the channel (the Open is in it) and the loop's backlog.
    for i in 0..3 {
        client.send_text(&format!("backlog {i}"));
    }
    // Answer every ping for a while; the server cannot read the answers.
    let answered = std::thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_millis(800);
        let mut pings = 0;
        while std::time::Instant::now() < until {
            match client.recv_timeout(Duration::from_millis(50)) {
                Some(Received::Ping(payload)) => {
                    client.send_frame(true, OpCode::Pong, &payload);
                    pings += 1;
                }
                Some(Received::Eof) => panic!("the server dropped a peer whose pongs it did not read"),
                Some(other) => panic!("got {}", support::describe(&other)),
                None => {}
            }
        }
        (client, pings)
    });
    let (mut client, pings) = answered.join().unwrap();
    assert!(pings >= 1, "no ping was sent");
    // The workers catch up: everything arrives, the connection is alive.
    let Event::Open { conn, .. } = next_event(&events) else { panic!("expected Open") };
    for i in 0..3 {
        match next_event(&events) {
            Event::Message { message, .. } => assert_eq!(message, format!("backlog {i}").as_str().into()),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    server.handle().send(conn, "alive").unwrap();
    loop {
        match client.recv() {
            Received::Ping(payload) => client.send_frame(true, OpCode::Pong, &payload),
            other => {
                assert_eq!(other, Received::text("alive"));
                break;
            }
        }
    }
}
