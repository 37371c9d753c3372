//! permessage-deflate on the engine: negotiation, compressed echo, broadcasts compressed once,
//! and the hostile inputs (RSV1 where it does not belong, a deflate bomb).

mod support;

use std::time::Duration;

use support::{builder, connect, echo_builder, frame, wait_until, Received, TestClient};
use throng::proto::deflate::{Compression, DeflateConfig, Deflater};
use throng::proto::OpCode;
use throng::Event;

const OFFER: &str = "permessage-deflate; client_max_window_bits";

fn json(len: usize) -> String {
    let mut out = String::from("[");
    let mut i = 0;
    while out.len() < len {
        out.push_str(&format!("{{\"id\":{i},\"channel\":\"news\",\"title\":\"hello world\"}},"));
        i += 1;
    }
    out.truncate(len - 1);
    out.push(']');
    out
}

#[test]
fn shared_mode_answers_without_context_and_echoes_compressed() {
    let server = echo_builder().compression(Compression::Shared).start().unwrap();
    let mut client = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    assert_eq!(
        client.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let big = json(2000);
    for _ in 0..3 {
        client.send_compressed(OpCode::Text, big.as_bytes());
        client.expect_text(&big);
        // Under the threshold it goes out as it is.
        client.send_text("tiny");
        client.expect_text("tiny");
    }
    assert_eq!(client.compressed_received, 3);
    let stats = server.stats();
    assert_eq!((stats.deflate_negotiated, stats.compressed_in, stats.compressed_out), (1, 3, 3));
    client.close_handshake(1000);
}

#[test]
fn dedicated_mode_keeps_a_context_and_compresses_repeats_smaller() {
    let server = echo_builder().compression(Compression::Dedicated).start().unwrap();
    let mut client = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    assert_eq!(client.extensions.as_deref(), Some("permessage-deflate"));
    // Not like itself, so that only a kept window finds the repeat.
    let big: String = (0..2000).map(|_| fastrand::alphanumeric()).collect();
    client.send_text(&big);
    client.expect_text(&big);
    let first = client.wire_bytes;
    client.send_text(&big);
    client.expect_text(&big);
    let second = client.wire_bytes - first;
    // The second copy refers back to the first through the kept window.
    assert!(second * 4 < first, "first {first} B, second {second} B");
    assert_eq!(client.compressed_received, 2);
    client.close_handshake(1000);
}

#[test]
fn compression_off_or_a_bad_offer_runs_uncompressed() {
    let off = echo_builder().start().unwrap();
    let mut client = TestClient::connect_offering(off.local_addr(), "/", OFFER);
    assert_eq!(client.extensions, None);
    client.echo("plain");
    let server = echo_builder().compression(Compression::Shared).start().unwrap();
    // A parameter this server does not know declines the offer; the next one is taken.
    let mut client = TestClient::connect_offering(server.local_addr(), "/", "permessage-deflate; bogus");
    assert_eq!(client.extensions, None);
    client.echo("plain");
    let mut client = TestClient::connect_offering(
        server.local_addr(),
        "/",
        "x-unknown, permessage-deflate; server_max_window_bits=99, permessage-deflate; server_max_window_bits=10",
    );
    assert_eq!(
        client.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    let big = json(3000);
    client.send_text(&big);
    client.expect_text(&big);
    assert_eq!(client.compressed_received, 1);
}

#[test]
fn rsv1_without_negotiation_is_1002() {
    let server = echo_builder().compression(Compression::Shared).start().unwrap();
    // Connected without offering: RSV1 is not ours to use.
    let mut client = connect(server.local_addr(), "/");
    let mut bytes = frame(true, OpCode::Text, b"x");
    bytes[0] |= 0x40;
    client.send_raw(&bytes);
    client.expect_close(1002);
}

#[test]
fn rsv1_on_a_control_or_continuation_frame_is_1002() {
    let server = echo_builder().compression(Compression::Shared).start().unwrap();
    let mut client = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    let mut ping = frame(true, OpCode::Ping, b"p");
    ping[0] |= 0x40;
    client.send_raw(&ping);
    client.expect_close(1002);

    let mut client = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    let mut bytes = frame(false, OpCode::Text, b"a");
    let mut continuation = frame(true, OpCode::Continuation, b"b");
    continuation[0] |= 0x40;
    bytes.extend(continuation);
    client.send_raw(&bytes);
    client.expect_close(1002);
    assert!(wait_until(Duration::from_secs(5), || server.stats().protocol_errors == 2));
}

#[test]
fn a_fragmented_compressed_message_is_inflated_whole() {
    let server = echo_builder().compression(Compression::Shared).start().unwrap();
    let mut client = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    let big = json(5000);
    let mut compressed = Vec::new();
    Deflater::new(6, 15).compress(big.as_bytes(), &mut compressed, true);
    let (a, b) = compressed.split_at(compressed.len() / 2);
    let mut first = frame(false, OpCode::Text, a);
    first[0] |= 0x40;
    client.send_raw(&first);
    client.send_raw(&frame(true, OpCode::Continuation, b));
    client.expect_text(&big);
}

#[test]
fn a_deflate_bomb_closes_with_1009_after_the_limit() {
    let server = echo_builder().compression(Compression::Shared).max_message_size(1 << 20).start().unwrap();
    let mut client = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    // 8 MiB of zeros: a few KiB on the wire, far under the frame limit.
    let mut bomb = Vec::new();
    Deflater::new(9, 15).compress(&vec![0u8; 8 << 20], &mut bomb, true);
    assert!(bomb.len() < 16 << 10, "{} bytes", bomb.len());
    let mut bytes = frame(true, OpCode::Binary, &bomb);
    bytes[0] |= 0x40;
    client.send_raw(&bytes);
    client.expect_close(1009);
    assert!(wait_until(Duration::from_secs(5), || server.stats().inflate_too_large == 1));
    // The loop goes on serving everyone else.
    let mut other = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    let big = json(1000);
    other.send_compressed(OpCode::Text, big.as_bytes());
    other.expect_text(&big);
}

#[test]
fn invalid_compressed_data_or_text_is_1007() {
    let server = echo_builder().compression(Compression::Shared).start().unwrap();
    let mut client = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    let mut bytes = frame(true, OpCode::Binary, &[0xff, 0xff, 0xff, 0xff, 0xff]);
    bytes[0] |= 0x40;
    client.send_raw(&bytes);
    client.expect_close(1007);
    let mut client = TestClient::connect_offering(server.local_addr(), "/", OFFER);
    client.send_compressed(OpCode::Text, &[b'a', 0xc3, 0x28]);
    client.expect_close(1007);
}

#[test]
fn a_broadcast_is_compressed_once_and_shared_by_compressing_subscribers() {
    let server = builder()
        .loops(2)
        .deflate(DeflateConfig { threshold: 16, ..DeflateConfig::new(Compression::Shared) })
        .start()
        .unwrap();
    let events = server.events();
    let handle = server.handle();
    let mut clients = Vec::new();
    for i in 0..6 {
        let client = match i % 3 {
            // A plain client and one that asked for a smaller window get the plain frame.
            0 => connect(server.local_addr(), "/"),
            1 => TestClient::connect_offering(
                server.local_addr(),
                "/",
                "permessage-deflate; server_max_window_bits=9",
            ),
            _ => TestClient::connect_offering(server.local_addr(), "/", OFFER),
        };
        clients.push(client);
        match support::next_event(&events) {
            Event::Open { conn, .. } => handle.subscribe(conn, "news").unwrap(),
            other => panic!("expected open, got {other:?}"),
        }
    }
    assert!(wait_until(Duration::from_secs(5), || handle.subscribers("news") == 6));
    let message = json(1500);
    for _ in 0..3 {
        handle.publish("news", message.clone()).unwrap();
        for client in &mut clients {
            assert_eq!(client.recv(), Received::text(&message));
        }
    }
    let compressed: Vec<u64> = clients.iter().map(|c| c.compressed_received).collect();
    assert_eq!(compressed, [0, 0, 3, 0, 0, 3]);
    assert_eq!(server.stats().compressed_out, 6);
}
