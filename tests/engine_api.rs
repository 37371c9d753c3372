//! The application side over real sockets: events, the handle, topics, ids and shutdown.

mod support;

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use support::{builder, connect, echo_builder, next_event, tcp_connect, EventSource, Received, TestClient};
use throng::{CloseCause, ConnId, Event, Message, Prepared, Server};

/// The slab index inside a `ConnId`'s debug form `ConnId(loop:index:generation)`.
fn slot_of(id: ConnId) -> String {
    let text = format!("{id:?}");
    text.trim_start_matches("ConnId(").trim_end_matches(')').split(':').take(2).collect::<Vec<_>>().join(":")
}

fn expect_open(events: &impl EventSource) -> (ConnId, String) {
    match next_event(events) {
        Event::Open { conn, path, .. } => (conn, path),
        other => panic!("expected Open, got {other:?}"),
    }
}

fn expect_close_event(events: &impl EventSource, conn: ConnId) -> (u16, String, bool) {
    match next_event(events) {
        Event::Close { conn: closed, code, reason, clean, .. } => {
            assert_eq!(closed, conn);
            (code, reason, clean)
        }
        other => panic!("expected Close, got {other:?}"),
    }
}

/// A worker that echoes every message through the handle and forwards the other events.
fn spawn_echo_worker(server: &Server) -> Receiver<Event> {
    let (events, handle) = (server.events(), server.handle());
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for event in events.iter() {
            match event {
                Event::Message { conn, message } => handle.send(conn, message).unwrap(),
                other => {
                    if tx.send(other).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

#[test]
fn worker_path_echoes_and_reports_open_and_close() {
    let server = builder().loops(2).start().unwrap();
    let events = spawn_echo_worker(&server);
    let mut client = connect(server.local_addr(), "/chat?room=1&x=2");
    match next_event(&events) {
        Event::Open { path, query, peer, subprotocol, headers, value: (), .. } => {
            assert_eq!(path, "/chat");
            assert_eq!(query.as_deref(), Some("room=1&x=2"));
            assert_eq!(peer, client.local_addr());
            assert_eq!((subprotocol, headers), (None, vec![]));
        }
        other => panic!("expected Open, got {other:?}"),
    }
    client.echo("through a worker");
    client.send_binary(&[0xff; 70_000]);
    client.expect_binary(&[0xff; 70_000]);
    client.send_frame(false, throng::proto::OpCode::Text, b"frag");
    client.send_frame(true, throng::proto::OpCode::Continuation, b"mented");
    client.expect_text("fragmented");

    client.send_close(1000, "bye");
    assert_eq!(client.expect_close(1000), "");
    client.expect_eof();
    drop(client);
    match next_event(&events) {
        Event::Close { code, reason, clean, .. } => {
            assert_eq!((code, reason.as_str(), clean), (1000, "bye", true));
        }
        other => panic!("expected Close, got {other:?}"),
    }
    let stats = server.stats();
    assert_eq!((stats.messages_in, stats.messages_out), (3, 3), "{stats:?}");
}

#[test]
fn server_initiated_close_reports_the_peers_answer() {
    let server = builder().start().unwrap();
    let events = server.events();
    let mut client = connect(server.local_addr(), "/");
    let (conn, _) = expect_open(&events);
    server.handle().close(conn, 4001, "kicked").unwrap();
    assert_eq!(client.expect_close(4001), "kicked");
    client.send_close(4001, "ok");
    client.expect_eof();
    drop(client);
    assert_eq!(expect_close_event(&events, conn), (4001, "ok".to_owned(), true));
    // An unsendable code becomes 1000.
    let mut client = connect(server.local_addr(), "/");
    let (conn, _) = expect_open(&events);
    server.handle().close(conn, 1006, "").unwrap();
    client.expect_close(1000);
    // A long reason is cut to fit a control frame, on a character boundary.
    let mut client = connect(server.local_addr(), "/");
    let (conn, _) = loop {
        if let Event::Open { conn, path, .. } = next_event(&events) {
            break (conn, path);
        }
    };
    server.handle().close(conn, 4002, &"é".repeat(100)).unwrap();
    let reason = client.expect_close(4002);
    assert!(reason.len() <= 123 && reason.len() >= 120, "reason of {} bytes", reason.len());
    assert!(reason.chars().all(|c| c == 'é'));
}

#[test]
fn stale_connection_id_reaches_nobody() {
    let server = builder().start().unwrap();
    let events = server.events();
    let handle = server.handle();

    let mut a = connect(server.local_addr(), "/a");
    let (a_id, _) = expect_open(&events);
    a.close_handshake(1000);
    drop(a);
    assert_eq!(expect_close_event(&events, a_id).0, 1000);

    let mut b = connect(server.local_addr(), "/b");
    let (b_id, _) = expect_open(&events);
    assert_ne!(a_id, b_id);
    assert_eq!(slot_of(a_id), slot_of(b_id), "B should reuse A's slab slot for this test to mean much");

    handle.send(a_id, "for A").unwrap();
    handle.subscribe(a_id, "t").unwrap();
    handle.close(a_id, 1000, "closing A").unwrap();
    handle.publish("t", "for subscribers of t").unwrap();
    // Ids that never named anything: another loop, another slot.
    handle.send(ConnId::from_u64(u64::MAX), "nobody").unwrap();
    handle.send(ConnId::from_u64(b_id.as_u64() + (1 << 32)), "nobody either").unwrap();
    handle.send(b_id, "for B").unwrap();
    // Commands to one loop run in order: anything meant for A would arrive before this.
    b.expect_text("for B");
    b.expect_silence(Duration::from_millis(300));
    b.echo_via(&handle, b_id, "still open");
    b.close_handshake(1000);
}

trait EchoVia {
    fn echo_via(&mut self, handle: &throng::Handle, conn: ConnId, text: &str);
}

impl EchoVia for TestClient {
    fn echo_via(&mut self, handle: &throng::Handle, conn: ConnId, text: &str) {
        handle.send(conn, text).unwrap();
        self.expect_text(text);
    }
}

#[test]
fn publish_reaches_exactly_the_subscribers() {
    let server = builder().loops(2).start().unwrap();
    let events = server.events();
    let handle = server.handle();
    let addr = server.local_addr();

    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for path in ["/news", "/news", "/other"] {
        clients.push(connect(addr, path));
        let (id, opened) = expect_open(&events);
        assert_eq!(opened, path);
        if opened == "/news" {
            handle.subscribe(id, "news").unwrap();
            handle.subscribe(id, "news").unwrap(); // twice: still one delivery
        }
        ids.push(id);
    }
    let [c1, c2, c3] = &mut clients[..] else { unreachable!() };

    handle.publish("news", "headline 1").unwrap();
    c1.expect_text("headline 1");
    c2.expect_text("headline 1");
    handle.send(ids[2], "marker").unwrap();
    c3.expect_text("marker");
    for (client, &id) in [&mut *c1, &mut *c2].into_iter().zip(&ids) {
        handle.send(id, "marker").unwrap();
        client.expect_text("marker");
    }

    let prepared = Prepared::new(&Message::Binary(vec![1, 2, 3]));
    handle.publish_prepared("news", &prepared).unwrap();
    c1.expect_binary(&[1, 2, 3]);
    c2.expect_binary(&[1, 2, 3]);

    handle.unsubscribe(ids[0], "news").unwrap();
    handle.publish("news", "headline 2").unwrap();
    handle.publish("sports", "nobody listens").unwrap();
    c2.expect_text("headline 2");
    for (client, &id) in [&mut *c1, &mut *c3].into_iter().zip([&ids[0], &ids[2]]) {
        handle.send(id, "marker 2").unwrap();
        client.expect_text("marker 2");
    }

    // A subscriber that closes leaves its topics: a later connection (perhaps in its slot) hears
    // nothing.
    c2.close_handshake(1000);
    clients.remove(1);
    let stats_before = server.stats();
    handle.publish("news", "after close").unwrap();
    let mut c4 = connect(addr, "/late");
    let (c4_id, _) = loop {
        match next_event(&events) {
            Event::Open { conn, path, .. } => break (conn, path),
            Event::Close { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    handle.publish("news", "after reopen").unwrap();
    handle.send(c4_id, "marker 3").unwrap();
    c4.expect_text("marker 3");
    assert!(support::wait_until(Duration::from_secs(1), || server.stats().messages_out
        > stats_before.messages_out));
    assert_eq!(server.stats().messages_out, stats_before.messages_out + 1, "only the marker was sent");
}

#[test]
fn shutdown_closes_everyone_with_1001() {
    let server = echo_builder().loops(2).start().unwrap();
    let addr = server.local_addr();
    let mut clients: Vec<TestClient> = (0..2).map(|_| connect(addr, "/")).collect();
    for client in &mut clients {
        client.echo("before shutdown");
    }
    // Connected but never upgraded: dropped at once.
    let mut half_open = tcp_connect(addr);
    assert!(support::wait_until(Duration::from_secs(2), || server.stats().connections == 3));

    let started = Instant::now();
    let stopper = std::thread::spawn(move || {
        server.shutdown(Duration::from_secs(2));
        started.elapsed()
    });
    for client in &mut clients {
        assert_eq!(client.expect_close(1001), "server shutting down");
        client.send_close(1001, "");
        client.expect_eof();
    }
    let mut byte = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut half_open, &mut byte).unwrap_or(0), 0);
    drop(clients);
    let took = stopper.join().unwrap();
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    // Nobody listens any more.
    match std::net::TcpStream::connect(addr) {
        Err(_) => {}
        Ok(mut stream) => {
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            assert_eq!(std::io::Read::read(&mut stream, &mut byte).unwrap_or(0), 0);
        }
    }
}

#[test]
fn shutdown_gives_up_on_silent_peers_at_the_deadline() {
    let server = echo_builder().start().unwrap();
    let mut client = connect(server.local_addr(), "/");
    client.echo("hi");
    let started = Instant::now();
    server.shutdown(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "shutdown returned after {took:?}");
    assert!(took < Duration::from_secs(3), "shutdown returned after {took:?}");
    client.expect_close(1001);
    assert_eq!(client.recv(), Received::Eof);
}

/// Writes `bytes` and the FIN in one segment (TCP_CORK holds the data until the shutdown), so
/// that the server finds both queued on its socket at once.
fn send_with_fin(stream: &mut std::net::TcpStream, bytes: &[u8]) {
    let sock = socket2::SockRef::from(&*stream);
    sock.set_nodelay(false).unwrap();
    sock.set_cork(true).unwrap();
    std::io::Write::write_all(stream, bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
}

#[test]
fn peer_half_close_right_after_data_is_noticed() {
    let server = echo_builder().start().unwrap();
    let events = server.events();
    let mut client = connect(server.local_addr(), "/");
    let (conn, _) = expect_open(&events);
    // The message and the FIN reach the server's socket together.
    let mut bytes = support::frame(true, throng::proto::OpCode::Text, b"last words");
    bytes.extend_from_slice(&support::frame(true, throng::proto::OpCode::Text, b"really last"));
    send_with_fin(&mut client.stream, &bytes);
    // The echo may or may not make it; the server must notice the FIN and let go.
    loop {
        match client.recv_timeout(Duration::from_millis(1500)) {
            Some(Received::Message(..)) => {}
            Some(Received::Eof) => break,
            None => panic!("the server did not notice the FIN: {:?}", server.stats()),
            Some(other) => panic!("expected echoes then EOF, got {}", support::describe(&other)),
        }
    }
    let (code, _, clean) = expect_close_event(&events, conn);
    assert_eq!((code, clean), (1006, false));
    assert!(support::wait_until(Duration::from_secs(1), || server.stats().connections == 0));
}

#[test]
fn request_followed_by_fin_is_noticed() {
    let server = echo_builder().start().unwrap();
    let mut stream = tcp_connect(server.local_addr());
    let (request, _) = support::upgrade_request(server.local_addr(), "/");
    send_with_fin(&mut stream, &request);
    stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    assert!(
        support::wait_until(Duration::from_secs(1), || server.stats().connections == 0),
        "{:?}",
        server.stats()
    );
}

#[test]
fn slow_workers_pause_reading_without_losing_messages() {
    let server = builder().event_capacity(4).start().unwrap();
    let events = server.events();
    let mut client = connect(server.local_addr(), "/");
    let mut bytes = Vec::new();
    for i in 0..2000 {
        bytes.extend_from_slice(&support::frame(
            true,
            throng::proto::OpCode::Text,
            format!("m{i}").as_bytes(),
        ));
    }
    client.send_raw(&bytes);
    // The workers are busy for a while; the loop must keep what it read and wait.
    std::thread::sleep(Duration::from_millis(100));
    let (conn, _) = expect_open(&events);
    for i in 0..2000 {
        match next_event(&events) {
            Event::Message { conn: from, message } => {
                assert_eq!(from, conn);
                assert_eq!(message, Message::Text(format!("m{i}")), "message {i}");
            }
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    // A second connection is served meanwhile and afterwards.
    let mut other = connect(server.local_addr(), "/");
    let (other_id, _) = expect_open(&events);
    server.handle().send(other_id, "hello").unwrap();
    other.expect_text("hello");
    client.close_handshake(1000);
}

#[test]
fn forwarded_inline_messages_reach_workers_too() {
    let server = builder()
        .open_headers(["x-token"])
        .on_upgrade(|request, _| {
            // The tag is for the inline hook; the workers get the token itself, typed.
            let token = request.header_str("x-token").unwrap_or_default().to_owned();
            Ok(throng::Accepted { user: token.len() as u64, ..throng::Accepted::new(token) })
        })
        .on_message(|inline, kind, payload| {
            if payload.starts_with(b"inline:") {
                inline.reply(kind, &payload[7..]);
                return throng::Flow::Consumed;
            }
            inline.reply(kind, format!("user {}", inline.user()).as_bytes());
            throng::Flow::Forward
        })
        .start()
        .unwrap();
    let events = server.events();
    let mut client = TestClient::connect_with(server.local_addr(), "/", |stream, request| {
        let mut bytes = request[..request.len() - 2].to_vec();
        bytes.extend_from_slice(b"X-Token: abcd\r\n\r\n");
        std::io::Write::write_all(stream, &bytes)
    });
    match next_event(&events) {
        Event::Open { headers, value, .. } => {
            assert_eq!(headers, vec![("x-token".to_owned(), "abcd".to_owned())]);
            assert_eq!(value, "abcd");
        }
        other => panic!("expected Open, got {other:?}"),
    }
    client.send_text("inline:one");
    client.expect_text("one");
    client.send_text("two");
    client.expect_text("user 4");
    match next_event(&events) {
        Event::Message { message, .. } => assert_eq!(message, Message::Text("two".into())),
        other => panic!("expected Message, got {other:?}"),
    }
    client.close_handshake(1000);
}

#[test]
fn each_connection_keeps_to_one_shard_in_order() {
    const SHARDS: usize = 3;
    const CLIENTS: usize = 12;
    const MESSAGES: usize = 20;
    let server = builder().loops(2).event_shards(SHARDS).event_capacity(8).start().unwrap();
    let shards = server.shards();
    assert_eq!(shards.len(), SHARDS);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // One reader per shard, as a worker each; small channels, so the loops' backlogs are used.
    let readers: Vec<_> = (shards.into_iter().enumerate())
        .map(|(shard, events)| {
            let seen = seen.clone();
            std::thread::spawn(move || {
                for event in events {
                    seen.lock().unwrap().push((shard, event));
                }
            })
        })
        .collect();
    let mut clients: Vec<TestClient> =
        (0..CLIENTS).map(|i| connect(server.local_addr(), &format!("/c{i}"))).collect();
    for round in 0..MESSAGES {
        for (i, client) in clients.iter_mut().enumerate() {
            client.send_text(&format!("{i}:{round}"));
        }
    }
    for client in &mut clients {
        client.close_handshake(1000);
    }
    let expected = CLIENTS * (MESSAGES + 2);
    assert!(
        support::wait_until(Duration::from_secs(10), || seen.lock().unwrap().len() >= expected),
        "{} of {expected} events",
        seen.lock().unwrap().len()
    );

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut by_conn: std::collections::HashMap<ConnId, (usize, Vec<String>)> = Default::default();
    for (shard, event) in seen {
        assert_eq!(shard, server.shard_of(event.conn()), "{event:?} on shard {shard}");
        let (first_shard, log) = by_conn.entry(event.conn()).or_insert((shard, Vec::new()));
        assert_eq!(*first_shard, shard, "one connection, one shard");
        log.push(match event {
            Event::Open { path, .. } => format!("open {path}"),
            Event::Message { message: Message::Text(text), .. } => text,
            Event::Close { code, .. } => format!("close {code}"),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(by_conn.len(), CLIENTS);
    let used: std::collections::HashSet<usize> = by_conn.values().map(|(shard, _)| *shard).collect();
    assert!(used.len() > 1, "the connections spread over the shards: {used:?}");
    for (_, log) in by_conn.values() {
        let i: usize = log[0].strip_prefix("open /c").expect("Open first").parse().unwrap();
        let mut expected = vec![format!("open /c{i}")];
        expected.extend((0..MESSAGES).map(|round| format!("{i}:{round}")));
        expected.push("close 1000".to_owned());
        assert_eq!(log, &expected);
    }
    server.shutdown(Duration::from_secs(1));
    for reader in readers {
        reader.join().unwrap();
    }
}

#[test]
fn topics_joined_at_the_upgrade_and_the_greeting_come_before_anything_else() {
    let removed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let on_close = removed.clone();
    let server = builder()
        .loops(2)
        .on_upgrade(|request, _| {
            let topics =
                request.query().map(|q| q.split(',').map(str::to_owned).collect()).unwrap_or_default();
            Ok(throng::Accepted { topics, ..throng::Accepted::new(request.path().to_owned()) })
        })
        .on_open(|conn, path: &mut String, out| {
            match path.as_str() {
                "/quiet" => {}
                "/broken" => out.extend_from_slice(b"not \xff UTF-8"),
                _ => out.extend_from_slice(format!("hello {} at {path}", conn.as_u64()).as_bytes()),
            }
            // What the hook makes of the value is what the Open event carries.
            path.push_str(" (opened)");
        })
        .on_close(move |conn, code, _reason, clean, cause| {
            on_close.lock().unwrap().push((conn, code, clean, cause))
        })
        .start()
        .unwrap();
    let events = server.events();
    let handle = server.handle();
    let mut client = connect(server.local_addr(), "/room?news,sport");
    let open = |events: &throng::Events<String>| match next_event(events) {
        Event::Open { conn, value, .. } => (conn, value),
        other => panic!("expected Open, got {other:?}"),
    };
    let (id, path) = open(&events);
    assert_eq!(path, "/room (opened)");
    // The greeting is the first message, and once the client has it the topics are joined: a
    // publish from here on reaches it, with no worker's subscribe in between.
    client.expect_text(&format!("hello {} at /room", id.as_u64()));
    assert_eq!(handle.subscribers("news"), 1);
    assert_eq!(handle.subscribers("sport"), 1);
    handle.publish("sport", "goal").unwrap();
    client.expect_text("goal");

    // Nothing written: no greeting. Not UTF-8: not sent. The topics are joined all the same.
    for path in ["/quiet", "/broken"] {
        let mut other = connect(server.local_addr(), &format!("{path}?news"));
        let (other_id, _) = open(&events);
        assert_eq!(handle.subscribers("news"), 2, "{path}");
        handle.publish("news", format!("news for {path}")).unwrap();
        other.expect_text(&format!("news for {path}"));
        other.close_handshake(1000);
        // Its topics are left, and the close hook ran, before its Close event is sent.
        // The hook and the event report the same cause: the client's close came first.
        let cause = CloseCause::Peer;
        assert!(
            matches!(next_event(&events), Event::Close { conn, cause: c, .. } if conn == other_id && c == cause)
        );
        assert_eq!(removed.lock().unwrap().pop(), Some((other_id, 1000, true, cause)));
    }
    client.expect_text("news for /quiet");
    client.expect_text("news for /broken");
    client.close_handshake(1000);
}

#[test]
fn without_lifecycle_events_the_hooks_see_opens_and_closes_and_the_workers_only_messages() {
    let (hooked_tx, hooked) = crossbeam_channel::unbounded();
    let closed_tx = hooked_tx.clone();
    let server = builder()
        .loops(1)
        .event_shards(1)
        .lifecycle_events(false)
        .on_open(move |conn, _: &mut (), out| {
            out.extend_from_slice(b"welcome");
            hooked_tx.send(("open", conn)).unwrap();
        })
        .on_close(move |conn, _, _, _, _| closed_tx.send(("close", conn)).unwrap())
        .on_message(|inline, kind, payload| {
            if payload == b"forward" {
                return throng::Flow::Forward;
            }
            inline.reply(kind, payload);
            throng::Flow::Consumed
        })
        .start()
        .unwrap();
    let events = server.events();
    let mut first = connect(server.local_addr(), "/");
    first.expect_text("welcome");
    let first_id = hooked.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first_id.0, "open");
    first.send_text("echo");
    first.expect_text("echo");
    first.close_handshake(1000);
    assert_eq!(hooked.recv_timeout(Duration::from_secs(10)).unwrap(), ("close", first_id.1));
    // One loop, one shard, in order: had the first connection's Open or Close been queued, it
    // would come before the second connection's forwarded message.
    let mut second = connect(server.local_addr(), "/");
    second.expect_text("welcome");
    second.send_text("forward");
    match next_event(&events) {
        Event::Message { message, .. } => assert_eq!(message, Message::Text("forward".into())),
        other => panic!("expected only the forwarded message, got {other:?}"),
    }
    second.close_handshake(1000);
}
