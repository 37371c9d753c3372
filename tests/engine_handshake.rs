//! The upgrade over real sockets: cut into pieces, malformed, refused, too slow.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use support::{
    connect, echo_builder, echo_server, raw_http, read_http, tcp_connect, upgrade_request, TestClient,
};
use throng::{Accepted, Rejection};

#[test]
fn handshake_split_across_many_reads() {
    let server = echo_server();
    let mut client = TestClient::connect_with(server.local_addr(), "/split?x=1", |stream, request| {
        support::write_bytewise(stream, request, Duration::from_micros(500))
    });
    client.echo("after a slow upgrade");
    client.close_handshake(1000);
    let stats = server.stats();
    assert_eq!((stats.handshakes_ok, stats.handshakes_failed), (1, 0), "{stats:?}");
}

fn request_without(addr: std::net::SocketAddr, skip: &str) -> Vec<u8> {
    let (request, _) = upgrade_request(addr, "/");
    let text = String::from_utf8(request).unwrap();
    let kept: Vec<&str> =
        text.split("\r\n").filter(|line| !line.to_ascii_lowercase().starts_with(skip)).collect();
    kept.join("\r\n").into_bytes()
}

fn request_replacing(addr: std::net::SocketAddr, from: &str, to: &str) -> Vec<u8> {
    let (request, _) = upgrade_request(addr, "/");
    let text = String::from_utf8(request).unwrap();
    assert!(text.contains(from), "{text:?} has no {from:?}");
    text.replacen(from, to, 1).into_bytes()
}

#[test]
fn malformed_handshakes_get_http_errors_and_others_carry_on() {
    let server = echo_builder()
        .on_upgrade(|request, _peer| match request.path() {
            "/forbidden" => Err(Rejection::new(403, "not for you")),
            _ => Ok(Accepted::default()),
        })
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut survivor = connect(addr, "/");
    survivor.echo("before");

    let missing_key = raw_http(addr, &request_without(addr, "sec-websocket-key"));
    assert_eq!(missing_key.status, 400, "{missing_key:?}");
    assert_eq!(missing_key.body, "missing Sec-WebSocket-Key");

    let post = raw_http(addr, &request_replacing(addr, "GET ", "POST "));
    assert_eq!(post.status, 405, "{post:?}");
    assert_eq!(post.header("allow"), Some("GET"));

    let old_version =
        raw_http(addr, &request_replacing(addr, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"));
    assert_eq!(old_version.status, 426, "{old_version:?}");
    assert_eq!(old_version.header("sec-websocket-version"), Some("13"));

    let no_upgrade = raw_http(addr, &request_without(addr, "upgrade:"));
    assert_eq!(no_upgrade.status, 400, "{no_upgrade:?}");

    let http10 = raw_http(addr, &request_replacing(addr, "HTTP/1.1", "HTTP/1.0"));
    assert_eq!(http10.status, 400, "{http10:?}");

    let huge = request_replacing(addr, "\r\n\r\n", &format!("\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000)));
    let huge = raw_http(addr, &huge);
    assert_eq!(huge.status, 431, "{huge:?}");

    // Many headers, each small: the block as a whole is too large.
    let many: String = (0..200).map(|i| format!("X-H{i}: {}\r\n", "v".repeat(50))).collect();
    let many = raw_http(addr, &request_replacing(addr, "\r\n\r\n", &format!("\r\n{many}\r\n")));
    assert_eq!(many.status, 431, "{many:?}");

    let garbage = raw_http(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n");
    assert_eq!(garbage.status, 400, "{garbage:?}");

    let (forbidden, _) = upgrade_request(addr, "/forbidden");
    let forbidden = raw_http(addr, &forbidden);
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    assert_eq!(forbidden.body, "not for you");

    survivor.echo("after");
    let mut fresh = connect(addr, "/fine");
    fresh.echo("fresh");
    fresh.close_handshake(1000);
    survivor.close_handshake(1000);
    let stats = server.stats();
    assert_eq!((stats.handshakes_ok, stats.handshakes_failed), (2, 9), "{stats:?}");
}

#[test]
fn hook_headers_subprotocol_and_bad_header_values() {
    let server = echo_builder()
        .on_upgrade(|request, _peer| {
            if request.path() == "/evil" {
                return Ok(Accepted {
                    headers: vec![("X-Evil".into(), "a\r\nSet-Cookie: x".into())],
                    ..Accepted::default()
                });
            }
            let subprotocol = request.select_subprotocol(&["chat.v2"]).map(str::to_owned);
            Ok(Accepted {
                subprotocol,
                headers: vec![("X-Served-By".into(), "throng".into())],
                ..Accepted::default()
            })
        })
        .start()
        .unwrap();
    let addr = server.local_addr();

    let mut stream = tcp_connect(addr);
    let mut request = Vec::new();
    let handshake = throng::proto::handshake::ClientRequest {
        subprotocols: &["chat.v1", "chat.v2"],
        ..throng::proto::handshake::ClientRequest::new("localhost", "/")
    }
    .write(&mut request)
    .unwrap();
    stream.write_all(&request).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let response = loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(r) = handshake.parse_response(&buf).unwrap().complete() {
            break r;
        }
    };
    assert_eq!(response.subprotocol(), Some("chat.v2"));
    assert_eq!(response.header("x-served-by"), Some(&b"throng"[..]));

    let (evil, _) = upgrade_request(addr, "/evil");
    let evil = raw_http(addr, &evil);
    assert_eq!(evil.status, 500, "{evil:?}");
    assert!(!evil.head.to_ascii_lowercase().contains("set-cookie"), "{evil:?}");
}

#[test]
fn silent_socket_is_dropped_after_handshake_timeout() {
    let server = echo_builder().handshake_timeout(Duration::from_millis(200)).start().unwrap();
    let mut stream = tcp_connect(server.local_addr());
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let n = stream.read(&mut byte).unwrap_or(0);
    let elapsed = started.elapsed();
    assert_eq!(n, 0, "the server sent something to a silent socket");
    assert!(elapsed >= Duration::from_millis(150), "closed too early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "closed too late: {elapsed:?}");
    assert!(support::wait_until(Duration::from_secs(1), || server.stats().connections == 0));
    assert_eq!(server.stats().handshakes_failed, 1, "{:?}", server.stats());

    // A partial request does not stop the clock either.
    let mut stream = tcp_connect(server.local_addr());
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let n = stream.read(&mut byte).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(2), "closed too late: {:?}", started.elapsed());
}

/// A slowloris client trickles its request a byte at a time: the handshake timeout must bound
/// the whole upgrade ("how long a new connection may take to send its upgrade request"), not the
/// gap between reads.
#[test]
fn trickled_request_is_dropped_after_handshake_timeout() {
    let server = echo_builder().handshake_timeout(Duration::from_millis(300)).start().unwrap();
    let mut stream = tcp_connect(server.local_addr());
    stream.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let started = Instant::now();
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'X', 4000));
    let mut byte = [0u8; 1];
    let mut sent = request.iter();
    let closed_after = loop {
        if started.elapsed() > Duration::from_secs(5) {
            break None;
        }
        let Some(b) = sent.next() else { break None };
        if stream.write_all(std::slice::from_ref(b)).is_err() {
            break Some(started.elapsed());
        }
        match stream.read(&mut byte) {
            Ok(0) => break Some(started.elapsed()),
            Ok(_) => panic!("the server answered an incomplete request"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break Some(started.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(40));
    };
    let closed_after = closed_after.expect("a trickling client was still connected after 5 s");
    assert!(closed_after < Duration::from_secs(3), "closed after {closed_after:?}");
}

#[test]
fn rejected_connection_reads_answer_then_eof() {
    let server =
        echo_builder().on_upgrade(|_, _| Err::<Accepted, _>(Rejection::forbidden())).start().unwrap();
    let (request, _) = upgrade_request(server.local_addr(), "/");
    let mut stream = tcp_connect(server.local_addr());
    stream.write_all(&request).unwrap();
    let response = read_http(&mut stream);
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.header("content-length"), Some(response.body.len().to_string().as_str()));
    drop(stream);
    assert!(support::wait_until(Duration::from_secs(2), || server.stats().connections == 0));
}

/// A value an upgrade hook attaches, counting its drops.
#[derive(Debug)]
struct Tracked(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_refusal_after_the_hook_accepted_drops_its_value_and_emits_no_event() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let dropped = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = dropped.clone();
    // One loop and one shard: an event for the refused connection would come before the next
    // connection's Open.
    let server = echo_builder()
        .on_upgrade(move |request, _peer| {
            let headers = match request.path() {
                "/evil" => vec![("X-Evil".into(), "a\r\nSet-Cookie: x".into())],
                _ => Vec::new(),
            };
            Ok(Accepted { headers, ..Accepted::new(Tracked(counter.clone())) })
        })
        .start()
        .unwrap();
    let (events, addr) = (server.events(), server.local_addr());

    let (evil, _) = upgrade_request(addr, "/evil");
    let evil = raw_http(addr, &evil);
    assert_eq!(evil.status, 500, "{evil:?}");
    assert_eq!(dropped.load(SeqCst), 1, "the refused connection's value is dropped on the loop");

    let mut client = connect(addr, "/good");
    let conn = match support::next_event(&events) {
        throng::Event::Open { conn, path, value, .. } => {
            assert_eq!(path, "/good", "the refused connection had no Open");
            assert_eq!(dropped.load(SeqCst), 1, "the accepted value travels in its Open");
            drop(value);
            assert_eq!(dropped.load(SeqCst), 2);
            conn
        }
        other => panic!("expected the good connection's Open, got {other:?}"),
    };
    client.close_handshake(1000);
    match support::next_event(&events) {
        throng::Event::Close { conn: closed, .. } => assert_eq!(closed, conn),
        other => panic!("expected Close, got {other:?}"),
    }
    assert!(events.try_recv().is_err(), "no Close for the refused connection either");
    let stats = server.stats();
    assert_eq!((stats.handshakes_ok, stats.handshakes_failed), (1, 1), "{stats:?}");
}
