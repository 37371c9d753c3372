//! Client failures: bad URLs, refused and silent servers, and a scripted server that breaks the
//! protocol (the client must fail the connection with the right close code).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use throng::client::{connect, ClientError, ClientOptions};
use throng::proto::frame::encode_frame;
use throng::proto::handshake::{parse_request, write_accept, HandshakeError, Parsed, RequestLimits};
use throng::proto::{Decoder, Item, Limits, OpCode, Role};
use throng::Message;

fn options() -> ClientOptions {
    ClientOptions {
        read_timeout: Some(Duration::from_secs(5)),
        close_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

#[test]
fn bad_urls_fail_before_any_io() {
    for url in [
        "",
        "example.com",
        "http://h/",
        "https://h/",
        "ws://",
        "ws://h:99999/",
        "ws://h/#x",
        "ws://u@h/",
        "ws://h/a b",
    ] {
        match connect(url, &options()) {
            Err(ClientError::InvalidUrl(why)) => assert!(!why.is_empty()),
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[test]
fn refused_connect_is_an_io_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    match connect(&format!("ws://127.0.0.1:{port}/"), &options()) {
        Err(ClientError::Io(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
        other => panic!("expected ConnectionRefused, got {other:?}"),
    }
}

#[test]
fn a_silent_server_times_out_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let opts = ClientOptions { handshake_timeout: Some(Duration::from_millis(300)), ..options() };
    let started = Instant::now();
    assert!(matches!(connect(&url, &opts), Err(ClientError::Timeout)));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_non_websocket_answer_is_a_handshake_error() {
    let (url, server) = scripted(|stream, _| {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
    });
    match connect(&url, &options()) {
        Err(ClientError::Handshake(HandshakeError::BadStatus(200))) => {}
        other => panic!("expected BadStatus(200), got {other:?}"),
    }
    server.join().unwrap();

    let (url, server) = scripted(|stream, _| {
        // A 101 with the wrong accept key.
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
            .unwrap();
    });
    assert!(matches!(connect(&url, &options()), Err(ClientError::Handshake(HandshakeError::AcceptMismatch))));
    server.join().unwrap();
}

/// A one-connection server on a thread: reads the upgrade request, then runs `script` with the
/// stream and the accept response to write. Returns the URL and the thread.
fn scripted<F>(script: F) -> (String, thread::JoinHandle<()>)
where
    F: FnOnce(&mut TcpStream, Vec<u8>) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let accept = loop {
            let n = stream.read(&mut chunk).unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if let Parsed::Complete(request) = parse_request(&buf, &RequestLimits::default()).unwrap() {
                let mut out = Vec::new();
                write_accept(&mut out, request.key().as_bytes(), None, &[]).unwrap();
                break out;
            }
        };
        script(&mut stream, accept);
    });
    (url, server)
}

/// Reads frames from the client until its close frame; returns the close code.
fn read_client_close(stream: &mut TcpStream) -> u16 {
    let mut decoder = Decoder::new(Role::Server);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut at = 0;
        while at < buf.len() {
            let (used, item) =
                decoder.decode(&mut buf[at..], &Limits::default()).expect("valid client frames");
            at += used;
            match item {
                None => break,
                Some(Item::Close { code, .. }) => return code.map_or(1005, |c| c.0),
                Some(_) => {}
            }
        }
        buf.drain(..at);
        let n = stream.read(&mut chunk).expect("the client's close");
        assert!(n > 0, "the client closed TCP without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `frames` right behind the 101 and checks the client fails with `expected_code`.
fn fails_with(frames: Vec<u8>, expected_code: u16) {
    let (url, server) = scripted(move |stream, mut accept| {
        accept.extend_from_slice(&frames);
        stream.write_all(&accept).unwrap();
        assert_eq!(read_client_close(stream), expected_code);
        // Closing first, as a server should; the client waits for it.
    });
    let mut conn = connect(&url, &options()).expect("connect");
    let started = Instant::now();
    match conn.recv() {
        Err(ClientError::Protocol(e)) => assert_eq!(e.close_code().0, expected_code, "{e}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "the client waited for the close timeout");
    server.join().unwrap();
    assert!(matches!(conn.recv(), Err(ClientError::Closed { code, .. }) if code == expected_code));
}

fn server_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, fin, opcode, None, payload);
    out
}

#[test]
fn protocol_violations_fail_the_connection_with_their_code() {
    let mut masked = Vec::new();
    encode_frame(&mut masked, true, OpCode::Text, Some([1, 2, 3, 4]), b"masked");
    fails_with(masked, 1002);
    fails_with(server_frame(true, OpCode::Text, b"bad \xff utf-8"), 1007);
    fails_with(server_frame(true, OpCode::Continuation, b"nothing to continue"), 1002);
    fails_with(server_frame(false, OpCode::Ping, b""), 1002);
    let mut rsv = server_frame(true, OpCode::Binary, b"x");
    rsv[0] |= 0x40;
    fails_with(rsv, 1002);
    // A reserved opcode.
    fails_with(vec![0x83, 0x00], 1002);
    // Invalid UTF-8 in the first piece of a frame whose rest never comes: fail fast.
    let mut partial = server_frame(true, OpCode::Text, &[b'a'; 1000]);
    partial[4] = 0xc0;
    partial.truncate(100);
    fails_with(partial, 1007);
}

#[test]
fn server_frames_in_the_handshake_read_and_a_dropped_connection() {
    let (url, server) = scripted(|stream, mut accept| {
        // Frames glued to the 101, a ping inside a fragmented message, then a drop without close.
        accept.extend(server_frame(false, OpCode::Text, b"glued "));
        accept.extend(server_frame(true, OpCode::Ping, b"p"));
        accept.extend(server_frame(true, OpCode::Continuation, b"to the 101"));
        stream.write_all(&accept).unwrap();
        let mut pong = [0u8; 7];
        stream.read_exact(&mut pong).unwrap();
        assert_eq!(pong[..2], [0x8a, 0x81], "a masked pong with one byte");
        assert_eq!(pong[6] ^ pong[2], b'p');
    });
    let mut conn = connect(&url, &options()).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("glued to the 101".into()));
    server.join().unwrap();
    assert!(matches!(conn.recv(), Err(ClientError::Closed { code: 1006, .. })));
}

#[test]
fn a_server_that_never_answers_our_close_times_out() {
    let (url, server) = scripted(|stream, accept| {
        stream.write_all(&accept).unwrap();
        assert_eq!(read_client_close(stream), 1000);
        thread::sleep(Duration::from_millis(800));
    });
    let opts = ClientOptions { close_timeout: Duration::from_millis(300), ..options() };
    let mut conn = connect(&url, &opts).unwrap();
    assert!(matches!(conn.close(1000, ""), Err(ClientError::Timeout)));
    server.join().unwrap();
}

#[test]
fn the_servers_close_is_echoed_and_one_without_a_code_is_answered_without_one() {
    for (payload, answer) in [(&b""[..], 1005), (&b"\x0f\xa0bye"[..], 4000)] {
        let (url, server) = scripted(move |stream, mut accept| {
            accept.extend(server_frame(true, OpCode::Close, payload));
            stream.write_all(&accept).unwrap();
            // 1005: the client's close frame carried no code.
            assert_eq!(read_client_close(stream), answer);
        });
        let mut conn = connect(&url, &options()).unwrap();
        match conn.recv() {
            Err(ClientError::Closed { code, .. }) => assert_eq!(code, answer),
            other => panic!("expected Closed({answer}), got {other:?}"),
        }
        server.join().unwrap();
    }
}
