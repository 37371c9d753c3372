//! Topics over real sockets on two loops: the first/last reports, the counts, and counted
//! publishes that agree with what the clients receive, also while some of them close; capped
//! subscribes answered in order with the sends, and the re-armable change report.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use support::{builder, connect, next_event, wait_until, Received, TestClient, READ_TIMEOUT};
use throng::{ConnId, Event, Joined, Message, Prepared, Server, ServerBuilder};

/// Two loops, loop 0 handing sockets round-robin (so that both get connections for sure).
fn two_loops() -> ServerBuilder {
    builder().loops(2).reuse_port(false)
}

/// `n` clients and their ids, in connection order.
fn clients(server: &Server, n: usize) -> (Vec<TestClient>, Vec<ConnId>) {
    let events = server.events();
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..n {
        clients.push(connect(server.local_addr(), "/t"));
        match next_event(&events) {
            Event::Open { conn, .. } => ids.push(conn),
            other => panic!("expected Open, got {other:?}"),
        }
    }
    let loops: BTreeSet<usize> = ids.iter().map(|id| id.loop_id()).collect();
    assert_eq!(loops.len(), 2, "connections on both loops: {ids:?}");
    (clients, ids)
}

/// The hook's reports, as a channel.
fn reporting(builder: ServerBuilder) -> (ServerBuilder, Receiver<(String, usize)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (builder.on_topic(move |topic, n| drop(tx.send((topic.to_owned(), n)))), rx)
}

#[test]
fn first_and_last_subscriber_are_reported_and_counts_follow() {
    let (builder, reports) = reporting(two_loops());
    let server = builder.start().unwrap();
    let handle = server.handle();
    let (mut clients, ids) = clients(&server, 4);
    for id in &ids {
        handle.subscribe(*id, "news").unwrap();
        handle.subscribe(*id, "news").unwrap(); // twice: counted once
    }
    handle.subscribe(ids[0], "chat").unwrap();
    assert!(wait_until(READ_TIMEOUT, || handle.subscribers("news") == 4 && handle.subscribers("chat") == 1));
    assert_eq!(handle.topics(), vec![(Arc::from("chat"), 1), (Arc::from("news"), 4)]);
    assert_eq!(handle.subscription_totals(), (2, 5));
    assert_eq!(handle.subscribers("never"), 0);
    let mut first: Vec<(String, usize)> = reports.try_iter().collect();
    first.sort();
    // One report per topic: its first subscriber (read after the change, so perhaps more).
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0], ("chat".to_owned(), 1));
    assert_eq!(first[1].0, "news");
    assert!(first[1].1 >= 1);

    // Leaving: an unsubscribe, a non-member's unsubscribe, and closes (they leave everything).
    handle.unsubscribe(ids[1], "news").unwrap();
    handle.unsubscribe(ids[1], "chat").unwrap();
    assert!(wait_until(READ_TIMEOUT, || handle.subscribers("news") == 3));
    let _stays = clients.remove(1);
    drop(clients); // the peers go: their connections leave every topic
    assert!(wait_until(READ_TIMEOUT, || handle.subscription_totals() == (0, 0)));
    assert!(handle.topics().is_empty());
    let mut last: Vec<(String, usize)> = reports.try_iter().collect();
    last.sort();
    assert_eq!(last, [("chat".to_owned(), 0), ("news".to_owned(), 0)], "one last report each");
}

/// What one client read: the data messages, until the server's close frame or EOF.
fn count_until_closed(client: &mut TestClient) -> usize {
    let mut messages = 0;
    loop {
        match client.recv() {
            Received::Message(..) => messages += 1,
            Received::Close(..) | Received::Eof => return messages,
            Received::Ping(_) | Received::Pong(_) => {}
        }
    }
}

#[test]
fn a_counted_publish_counts_the_connections_that_receive_it() {
    let server = two_loops().start().unwrap();
    let handle = server.handle();
    let (mut clients, ids) = clients(&server, 6);
    for id in &ids[..5] {
        handle.subscribe(*id, "news").unwrap();
    }
    assert!(wait_until(READ_TIMEOUT, || handle.subscribers("news") == 5));
    let frame = Prepared::new(&Message::Text("hello".into()));
    let receipt = handle.publish_counted("news", &frame).unwrap();
    assert_eq!(receipt.wait(READ_TIMEOUT), Some(5));
    for client in &mut clients[..5] {
        client.expect_text("hello");
    }
    clients[5].expect_silence(Duration::from_millis(50));
    let nobody = handle.publish_counted("sports", &frame).unwrap();
    assert_eq!(nobody.wait(Duration::ZERO), Some(0), "nobody subscribed: nothing to wait for");
}

#[test]
fn counted_publishes_agree_with_deliveries_while_connections_close() {
    const CLIENTS: usize = 8;
    const PUBLISHES: usize = 200;
    let server = two_loops().start().unwrap();
    let handle = server.handle();
    let (clients, ids) = clients(&server, CLIENTS);
    for id in &ids {
        handle.subscribe(*id, "feed").unwrap();
    }
    assert!(wait_until(READ_TIMEOUT, || handle.subscribers("feed") == CLIENTS));
    // Every other client starts its close after a few messages, in the middle of the
    // publishes; it still reads what the server queued before its close frame.
    let readers: Vec<_> = (clients.into_iter().enumerate())
        .map(|(i, mut client)| {
            std::thread::spawn(move || {
                if i % 2 == 1 {
                    let mut messages = 0;
                    while messages < 3 + i * 5 {
                        match client.recv() {
                            Received::Message(..) => messages += 1,
                            other => panic!("client {i}: {other:?} before closing"),
                        }
                    }
                    client.send_close(1000, "leaving");
                    messages + count_until_closed(&mut client)
                } else {
                    count_until_closed(&mut client)
                }
            })
        })
        .collect();
    let mut receipts = Vec::new();
    for n in 0..PUBLISHES {
        let frame = Prepared::new(&Message::Text(format!("message {n}")));
        receipts.push(handle.publish_counted("feed", &frame).unwrap());
        if n == PUBLISHES / 2 {
            // The first closer (after 8 messages) is gone before the second half: the rest
            // may close at any point of the stream.
            assert!(wait_until(READ_TIMEOUT, || handle.subscribers("feed") < CLIENTS));
        }
    }
    let counted: usize = receipts.iter().map(|r| r.wait(READ_TIMEOUT).expect("every loop reported")).sum();
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            handle.close(*id, 1000, "done").unwrap();
        }
    }
    let received: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(counted, received, "the receipts count what the clients got");
    assert!(counted < CLIENTS * PUBLISHES, "some connections closed mid-publish");
    assert!(counted >= CLIENTS / 2 * PUBLISHES, "the staying clients got every message");
    assert!(wait_until(READ_TIMEOUT, || handle.subscription_totals() == (0, 0)));
}

/// A reply that answers with the outcome's name.
fn answer<T: std::fmt::Debug>(outcome: T) -> Option<Message> {
    Some(Message::Text(format!("{outcome:?}")))
}

#[test]
fn capped_subscribe_replies_arrive_in_order_with_the_sends() {
    let server = two_loops().start().unwrap();
    let handle = server.handle();
    let (mut clients, ids) = clients(&server, 2);
    for (client, &id) in clients.iter_mut().zip(&ids) {
        handle.send(id, "before").unwrap();
        handle.subscribe_with(id, "a", 2, answer).unwrap();
        handle.send(id, "after").unwrap();
        handle.subscribe_with(id, "a", 2, answer).unwrap();
        handle.subscribe_with(id, "b", 2, answer).unwrap();
        handle.subscribe_with(id, "c", 2, answer).unwrap();
        handle.unsubscribe_with(id, "b", answer).unwrap();
        handle.unsubscribe_with(id, "never", answer).unwrap();
        for text in ["before", "Added", "after", "Already", "Added", "Full", "true", "false"] {
            client.expect_text(text);
        }
    }
    assert_eq!(handle.subscribers("a"), 2, "the replies came after the subscribes");
    assert_eq!(handle.subscribers("b") + handle.subscribers("c"), 0);
    // A reply without a message sends nothing, and a closed connection's reply still runs.
    let (tx, ran) = crossbeam_channel::unbounded();
    handle.subscribe_with(ids[0], "a", 2, |_| None).unwrap();
    handle.send(ids[0], "next").unwrap();
    clients[0].expect_text("next");
    handle.close(ids[1], 1000, "bye").unwrap();
    clients[1].expect_close(1000);
    handle
        .subscribe_with(ids[1], "d", 2, move |joined| {
            let _ = tx.send(joined);
            answer(joined)
        })
        .unwrap();
    assert_eq!(ran.recv_timeout(READ_TIMEOUT), Ok(Joined::Closed));
}

#[test]
fn the_change_report_fires_once_until_observed() {
    let (tx, changes) = crossbeam_channel::unbounded();
    let server = (two_loops().on_topic_change(move |topic| drop(tx.send(topic.to_owned())))).start().unwrap();
    let handle = server.handle();
    let (mut clients, ids) = clients(&server, 3);
    let subscribed = |id: ConnId, client: &mut TestClient| {
        handle.subscribe_with(id, "room", 8, answer).unwrap();
        client.expect_text("Added"); // the count changed before the answer went out
    };
    subscribed(ids[0], &mut clients[0]);
    assert_eq!(changes.recv_timeout(READ_TIMEOUT).as_deref(), Ok("room"));
    subscribed(ids[1], &mut clients[1]);
    assert!(changes.try_recv().is_err(), "reported again before an observe");
    assert_eq!(handle.observe("room"), 2, "a second subscribe is counted, unreported");
    subscribed(ids[2], &mut clients[2]);
    assert_eq!(changes.recv_timeout(READ_TIMEOUT).as_deref(), Ok("room"), "re-armed by observe");
    assert_eq!(handle.observe("room"), 3);
    drop(clients); // the peers go: every connection leaves
    assert_eq!(changes.recv_timeout(READ_TIMEOUT).as_deref(), Ok("room"));
    assert!(wait_until(READ_TIMEOUT, || handle.subscribers("room") == 0));
    assert_eq!(handle.observe("room"), 0);
    assert_eq!(handle.observe("never"), 0);
}
