//! The client against our own server over loopback: handshake, echo, fragments, pings, close.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use throng::client::{connect, ClientError, ClientOptions, Connection};
use throng::{Accepted, DataKind, Event, Flow, Message, Rejection, Server, ServerBuilder};

const WAIT: Duration = Duration::from_secs(5);

/// An echo server on one loop; `"close-me"` goes to the workers instead of being echoed.
fn echo() -> ServerBuilder {
    Server::builder().bind("127.0.0.1:0").expect("bind").loops(1).on_message(|inline, kind, payload| {
        if payload == b"close-me" {
            return Flow::Forward;
        }
        inline.reply(kind, payload);
        Flow::Consumed
    })
}

fn options() -> ClientOptions {
    ClientOptions { read_timeout: Some(WAIT), ..ClientOptions::default() }
}

fn dial(server: &Server, path: &str) -> Connection {
    connect(&format!("ws://{}{path}", server.local_addr()), &options()).expect("connect")
}

/// The next `Close` event of the server, skipping others.
fn server_close(server: &Server) -> (u16, String, bool) {
    let events = server.events();
    loop {
        match events.recv_timeout(WAIT).expect("a close event") {
            Event::Close { code, reason, clean, .. } => return (code, reason, clean),
            _ => continue,
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

#[test]
fn handshake_negotiates_a_subprotocol_and_passes_headers() {
    let server = echo()
        .on_upgrade(|request, _peer| {
            if request.header_str("x-token") != Some("secret")
                || request.origin() != Some("https://a.example")
            {
                return Err(Rejection::forbidden());
            }
            assert_eq!((request.path(), request.query()), ("/chat", Some("room=7")));
            let subprotocol = request.select_subprotocol(&["chat", "superchat"]).map(str::to_owned);
            Ok(Accepted { subprotocol, ..Accepted::default() })
        })
        .start()
        .unwrap();
    let url = format!("ws://{}/chat?room=7", server.local_addr());
    let good = ClientOptions {
        subprotocols: vec!["superchat".into(), "chat".into()],
        origin: Some("https://a.example".into()),
        headers: vec![("X-Token".into(), "secret".into())],
        ..options()
    };
    let mut conn = connect(&url, &good).expect("connect");
    assert_eq!(conn.subprotocol(), Some("chat"));
    assert_eq!(conn.peer_addr().unwrap(), server.local_addr());
    assert!(conn.local_addr().unwrap().ip().is_loopback());
    conn.send_text("hi").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("hi".into()));

    let none = ClientOptions { subprotocols: vec!["mqtt".into()], ..good.clone() };
    assert_eq!(connect(&url, &none).expect("connect").subprotocol(), None);

    let no_token = ClientOptions { headers: Vec::new(), ..good.clone() };
    match connect(&url, &no_token) {
        Err(ClientError::Handshake(throng::proto::handshake::HandshakeError::BadStatus(403))) => {}
        other => panic!("expected a 403, got {other:?}"),
    }
    let reserved = ClientOptions { headers: vec![("Sec-WebSocket-Key".into(), "x".into())], ..good };
    assert!(matches!(connect(&url, &reserved), Err(ClientError::Handshake(_))));
}

#[test]
fn echoes_text_and_binary_of_every_size() {
    let server = echo().start().unwrap();
    let mut conn = dial(&server, "/");
    for len in [0, 1, 125, 126, 65535, 65536, 100 << 10, 1 << 20] {
        let binary = pattern(len);
        conn.send_binary(&binary).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Binary(binary), "binary of {len}");
        let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        conn.send(Message::Text(text.clone())).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Text(text), "text of {len}");
    }
    let multibyte = "żółw 🐢 ".repeat(20_000);
    conn.send_text(&multibyte).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text(multibyte));
}

#[test]
fn fragmented_messages_are_assembled_by_the_server() {
    let server = echo().start().unwrap();
    let mut conn = dial(&server, "/");
    let text = "fragmented ✓ ".repeat(1000);
    // 7-byte fragments cut the multi-byte characters: the server must validate across frames.
    conn.send_fragmented(DataKind::Text, text.as_bytes(), 7).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text(text));
    let binary = pattern(300_000);
    conn.send_fragmented(DataKind::Binary, &binary, 65_536).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Binary(binary));
    conn.send_fragmented(DataKind::Binary, b"", 10).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Binary(Vec::new()));
    conn.send_fragmented(DataKind::Text, b"one", 0).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("one".into()));
}

#[test]
fn our_pings_get_pongs_and_server_pings_get_answered() {
    let server = echo().ping_interval(Duration::from_millis(50), Duration::from_millis(300)).start().unwrap();
    let mut conn = dial(&server, "/");
    let (tx, pongs) = mpsc::channel();
    conn.on_pong(move |payload| tx.send(payload.to_vec()).unwrap());
    conn.ping(b"are you there").unwrap();
    conn.send_text("after the ping").unwrap();
    // The server answers in order: the pong comes before the echo.
    assert_eq!(conn.recv().unwrap(), Message::Text("after the ping".into()));
    assert_eq!(pongs.try_recv().unwrap(), b"are you there");
    assert!(
        matches!(conn.ping(&[0; 126]), Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput)
    );

    // Idle for many ping intervals: recv answers the server's pings, so it keeps the connection.
    conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    for _ in 0..10 {
        assert!(matches!(conn.recv(), Err(ClientError::Timeout)));
    }
    conn.send_text("still here").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("still here".into()));
}

#[test]
fn server_close_reaches_the_client_with_its_code_and_reason() {
    let server = echo().start().unwrap();
    let handle = server.handle();
    let events = server.events();
    let worker = thread::spawn(move || loop {
        match events.recv_timeout(WAIT).expect("an event") {
            Event::Message { conn, message } => {
                assert_eq!(message, Message::Text("close-me".into()));
                handle.close(conn, 4001, "bye").unwrap();
            }
            Event::Close { code, reason, clean, .. } => return (code, reason, clean),
            Event::Open { .. } => {}
        }
    });
    let mut conn = dial(&server, "/");
    conn.send_text("close-me").unwrap();
    match conn.recv() {
        Err(ClientError::Closed { code: 4001, reason }) => assert_eq!(reason, "bye"),
        other => panic!("expected Closed(4001, bye), got {other:?}"),
    }
    // The client echoed the code, so the server saw a clean close.
    let (code, _, clean) = worker.join().unwrap();
    assert_eq!(code, 4001);
    assert!(clean);
    // Every later call reports the same end.
    assert!(matches!(conn.recv(), Err(ClientError::Closed { code: 4001, .. })));
    assert!(matches!(conn.send_text("late"), Err(ClientError::Closed { code: 4001, .. })));
    conn.close(1000, "").expect("closing a closed connection does nothing");
}

#[test]
fn client_close_completes_the_handshake() {
    let server = echo().start().unwrap();
    let mut conn = dial(&server, "/");
    conn.send_binary(b"x").unwrap();
    conn.close(4500, "client done").expect("clean close");
    assert_eq!(server_close(&server), (4500, "client done".to_owned(), true));
    assert!(matches!(conn.recv(), Err(ClientError::Closed { code: 4500, .. })));

    let mut conn = dial(&server, "/");
    let err = conn.close(1005, "").unwrap_err();
    assert!(matches!(err, ClientError::Io(ref e) if e.kind() == std::io::ErrorKind::InvalidInput), "{err}");
    conn.close(1000, "").unwrap();
}

#[test]
fn a_message_over_the_limit_fails_the_connection_with_1009() {
    let server = echo().start().unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let small = ClientOptions { max_message_size: 1000, ..options() };
    let mut conn = connect(&url, &small).unwrap();
    conn.send_binary(&[1; 1000]).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Binary(vec![1; 1000]));
    conn.send_fragmented(DataKind::Binary, &[2; 1001], 600).unwrap();
    match conn.recv() {
        Err(ClientError::Protocol(e)) => assert_eq!(e.close_code().0, 1009),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_eq!(server_close(&server).0, 1009);
}

#[test]
fn many_clients_at_once() {
    let server = echo().loops(2).start().unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                let mut conn = connect(&url, &options()).unwrap();
                for j in 0..50 {
                    let text = format!("client {i} message {j}");
                    conn.send_text(&text).unwrap();
                    assert_eq!(conn.recv().unwrap(), Message::Text(text));
                }
                conn.close(1000, "").unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
