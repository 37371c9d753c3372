//! Frames over real sockets: cut anywhere, batched, fragmented, oversized and malformed.

mod support;

use std::io::Write;
use std::time::Duration;

use support::{connect, echo_builder, echo_server, frame, Received, TestClient};
use throng::proto::{DataKind, OpCode};

#[test]
fn request_pipelined_with_first_frames_is_answered() {
    let server = echo_server();
    let mut client = TestClient::connect_with(server.local_addr(), "/", |stream, request| {
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(&frame(true, OpCode::Text, b"first"));
        bytes.extend_from_slice(&frame(true, OpCode::Binary, &[0, 1, 2, 255]));
        stream.write_all(&bytes)
    });
    client.expect_text("first");
    client.expect_binary(&[0, 1, 2, 255]);
    client.close_handshake(1000);
}

#[test]
fn frames_written_one_byte_at_a_time_are_echoed() {
    let server = echo_server();
    let mut client = connect(server.local_addr(), "/");
    let mut bytes = frame(true, OpCode::Text, b"tiny");
    // A 16-bit length header, cut inside the length and inside the mask.
    bytes.extend_from_slice(&frame(true, OpCode::Binary, &[7u8; 300]));
    bytes.extend_from_slice(&frame(true, OpCode::Ping, b"pp"));
    bytes.extend_from_slice(&frame(true, OpCode::Text, "héllo".as_bytes()));
    client.send_bytewise(&bytes, Duration::from_micros(200));
    client.expect_text("tiny");
    client.expect_binary(&[7u8; 300]);
    assert_eq!(client.recv(), Received::Pong(b"pp".to_vec()));
    client.expect_text("héllo");
    client.close_handshake(1000);
}

#[test]
fn thousand_frames_in_one_write_are_echoed_in_order() {
    let server = echo_server();
    let mut client = connect(server.local_addr(), "/");
    let mut bytes = Vec::new();
    for i in 0..1000 {
        // Vary the size so frames straddle the server's read boundaries at many offsets.
        let payload = format!("message {i} {}", "x".repeat(i % 200));
        bytes.extend_from_slice(&frame(true, OpCode::Text, payload.as_bytes()));
    }
    client.send_raw(&bytes);
    for i in 0..1000 {
        client.expect_text(&format!("message {i} {}", "x".repeat(i % 200)));
    }
    client.close_handshake(1000);
}

#[test]
fn large_message_across_many_reads_is_echoed() {
    let server = echo_server();
    let mut client = connect(server.local_addr(), "/");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    client.send_binary(&payload);
    client.expect_binary(&payload);
    client.close_handshake(1000);
}

#[test]
fn fragmented_text_with_interleaved_pings() {
    let server = echo_server();
    let mut client = connect(server.local_addr(), "/");
    // "wö" is cut inside the two-byte "ö".
    let mut bytes = frame(false, OpCode::Text, b"Hel");
    bytes.extend_from_slice(&frame(true, OpCode::Ping, b"p1"));
    bytes.extend_from_slice(&frame(false, OpCode::Continuation, b"lo, w\xc3"));
    bytes.extend_from_slice(&frame(true, OpCode::Ping, b"second ping"));
    bytes.extend_from_slice(&frame(true, OpCode::Continuation, b"\xb6rld"));
    client.send_raw(&bytes);
    assert_eq!(client.recv(), Received::Pong(b"p1".to_vec()));
    assert_eq!(client.recv(), Received::Pong(b"second ping".to_vec()));
    client.expect_text("Hello, wörld");

    // The same, with the fragments in separate writes.
    for part in [
        frame(false, OpCode::Binary, b"ab"),
        frame(true, OpCode::Ping, b""),
        frame(false, OpCode::Continuation, b""),
        frame(true, OpCode::Continuation, b"cd"),
    ] {
        client.send_raw(&part);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(client.recv(), Received::Pong(Vec::new()));
    assert_eq!(client.recv(), Received::Message(DataKind::Binary, b"abcd".to_vec()));
    client.close_handshake(1000);
}

#[test]
fn message_over_max_size_closes_with_1009() {
    let server = echo_builder().max_message_size(1024).start().unwrap();
    let addr = server.local_addr();

    let mut exact = connect(addr, "/");
    exact.send_binary(&[1u8; 1024]);
    exact.expect_binary(&[1u8; 1024]);
    exact.close_handshake(1000);

    let mut whole = connect(addr, "/");
    whole.send_binary(&[2u8; 2000]);
    whole.expect_close(1009);
    whole.expect_eof();

    let mut fragmented = connect(addr, "/");
    fragmented.send_frame(false, OpCode::Text, &[b'a'; 500]);
    fragmented.send_frame(false, OpCode::Continuation, &[b'b'; 500]);
    fragmented.send_frame(true, OpCode::Continuation, &[b'c'; 500]);
    fragmented.expect_close(1009);
    fragmented.expect_eof();
    assert!(server.stats().protocol_errors >= 2, "{:?}", server.stats());
}

#[test]
fn frame_over_max_frame_size_closes_with_1009() {
    let server = echo_builder().max_frame_size(100).start().unwrap();
    let mut client = connect(server.local_addr(), "/");
    client.send_frame(false, OpCode::Binary, &[0u8; 100]);
    client.send_frame(true, OpCode::Continuation, &[0u8; 100]);
    client.expect_binary(&[0u8; 200]);
    client.send_binary(&[0u8; 101]);
    client.expect_close(1009);
    client.expect_eof();
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let server = echo_server();
    let mut client = connect(server.local_addr(), "/");
    client.send_frame(true, OpCode::Text, b"ok \xff\xfe");
    client.expect_close(1007);
    client.expect_eof();

    // Invalid only at the end of a fragmented message: a truncated sequence.
    let mut client = connect(server.local_addr(), "/");
    client.send_frame(false, OpCode::Text, b"abc");
    client.send_frame(true, OpCode::Continuation, b"\xe2\x82");
    client.expect_close(1007);
    client.expect_eof();

    // A close reason is text too.
    let mut client = connect(server.local_addr(), "/");
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bad \xc3\x28");
    client.send_frame(true, OpCode::Close, &payload);
    client.expect_close(1007);
    client.expect_eof();
}

#[test]
fn largest_ping_is_answered_with_identical_pong() {
    let server = echo_server();
    let mut client = connect(server.local_addr(), "/");
    let payload: Vec<u8> = (0..125u8).collect();
    client.send_frame(true, OpCode::Ping, &payload);
    assert_eq!(client.recv(), Received::Pong(payload));
    // Pongs from the client are accepted silently.
    client.send_frame(true, OpCode::Pong, b"unsolicited");
    client.echo("after pong");
    client.close_handshake(1000);
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let server = echo_server();
    let mut client = connect(server.local_addr(), "/");
    let mut unmasked = Vec::new();
    throng::proto::frame::encode_frame(&mut unmasked, true, OpCode::Text, None, b"plain");
    client.send_raw(&unmasked);
    client.expect_close(1002);
    client.expect_eof();
}

#[test]
fn reserved_opcode_closes_with_1002() {
    let server = echo_server();
    for opcode in [0x3u8, 0xb] {
        let mut client = connect(server.local_addr(), "/");
        // FIN + reserved opcode, masked, empty payload.
        client.send_raw(&[0x80 | opcode, 0x80, 1, 2, 3, 4]);
        client.expect_close(1002);
        client.expect_eof();
    }
}

#[test]
fn other_protocol_violations_close_with_1002() {
    let server = echo_server();
    let violations: Vec<(&str, Vec<u8>)> = vec![
        ("continuation without start", frame(true, OpCode::Continuation, b"x")),
        ("fragmented ping", frame(false, OpCode::Ping, b"x")),
        ("ping over 125 bytes", frame(true, OpCode::Ping, &[0u8; 126])),
        ("rsv1 without extension", {
            let mut f = frame(true, OpCode::Text, b"x");
            f[0] |= 0x40;
            f
        }),
        ("text inside fragmented message", {
            let mut f = frame(false, OpCode::Text, b"a");
            f.extend_from_slice(&frame(true, OpCode::Text, b"b"));
            f
        }),
        ("one-byte close payload", frame(true, OpCode::Close, &[3])),
        ("close code 1005 on the wire", frame(true, OpCode::Close, &1005u16.to_be_bytes())),
    ];
    for (what, bytes) in violations {
        let mut client = connect(server.local_addr(), "/");
        client.send_raw(&bytes);
        match client.recv() {
            Received::Close(1002, _) => {}
            other => panic!("{what}: expected close 1002, got {}", support::describe(&other)),
        }
        client.expect_eof();
    }
}

#[test]
fn client_close_is_echoed_and_data_after_it_ignored() {
    let server = echo_server();
    let mut client = connect(server.local_addr(), "/");
    let mut bytes = support::close_frame(1000, "done");
    bytes.extend_from_slice(&frame(true, OpCode::Text, b"after close"));
    client.send_raw(&bytes);
    client.expect_close(1000);
    client.expect_eof();

    // A close without a code is answered without one (reported as 1005).
    let mut client = connect(server.local_addr(), "/");
    client.send_frame(true, OpCode::Close, b"");
    client.expect_close(1005);
    client.expect_eof();
}
