//! permessage-deflate in the client against a scripted server: the offer, the server's answer
//! (accepted, declined, invalid), compressed frames both ways with and without context
//! takeover, and compressed messages the client must refuse (a bomb, bad deflate data, bad
//! UTF-8).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use throng::client::{connect, ClientError, ClientOptions, Connection};
use throng::proto::deflate::{Deflater, Inflater, Params, RSV1};
use throng::proto::frame::{FrameHeader, MAX_HEADER_LEN};
use throng::proto::handshake::{parse_request, write_accept, HandshakeError, Parsed, RequestLimits};
use throng::proto::mask::apply_mask;
use throng::proto::{DataKind, OpCode, ProtocolError};
use throng::Message;

fn options() -> ClientOptions {
    ClientOptions {
        deflate: true,
        read_timeout: Some(Duration::from_secs(5)),
        close_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

/// The offer `options().deflate` makes.
const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// [`scripted_offers`] for a client that offers [`OFFER`].
fn scripted<F>(extensions: Option<&'static str>, script: F) -> (String, thread::JoinHandle<()>)
where
    F: FnOnce(&mut TcpStream) + Send + 'static,
{
    scripted_offers(&[OFFER], extensions, script)
}

/// A one-connection server on a thread: reads the upgrade request, checks it offered `offers`,
/// answers 101 with `extensions` (if any), then runs `script`.
fn scripted_offers<F>(
    offers: &'static [&'static str],
    extensions: Option<&'static str>,
    script: F,
) -> (String, thread::JoinHandle<()>)
where
    F: FnOnce(&mut TcpStream) + Send + 'static,
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
            assert!(n > 0, "the client closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Parsed::Complete(request) = parse_request(&buf, &RequestLimits::default()).unwrap() {
                assert_eq!(request.extensions().collect::<Vec<_>>(), offers);
                let headers: Vec<(&str, &str)> =
                    extensions.iter().map(|value| ("Sec-WebSocket-Extensions", *value)).collect();
                let mut out = Vec::new();
                write_accept(&mut out, request.key().as_bytes(), None, &headers).unwrap();
                break out;
            }
        };
        stream.write_all(&accept).unwrap();
        script(&mut stream);
    });
    (url, server)
}

/// One data message as the server saw it: its kind, the RSV bits of its first frame, how many
/// frames it took, and its payload (unmasked).
#[derive(Debug)]
struct Received {
    kind: DataKind,
    rsv: u8,
    frames: usize,
    payload: Vec<u8>,
}

/// Reads one whole client frame: its header and unmasked payload.
fn read_frame(stream: &mut TcpStream) -> (FrameHeader, Vec<u8>) {
    let mut head = Vec::with_capacity(MAX_HEADER_LEN);
    let header = loop {
        if let Some((header, _)) = FrameHeader::decode(&head).expect("a valid header") {
            break header;
        }
        let mut byte = [0u8];
        stream.read_exact(&mut byte).expect("a client frame");
        head.push(byte[0]);
    };
    let key = header.mask.expect("client frames are masked");
    let mut payload = vec![0u8; usize::try_from(header.payload_len).unwrap()];
    stream.read_exact(&mut payload).expect("the frame's payload");
    apply_mask(&mut payload, key, 0);
    (header, payload)
}

/// Reads client frames until a whole data message (pongs are skipped) or a close (`Err` with
/// its code). RSV1 may only be on a message's first frame.
fn next_message(stream: &mut TcpStream) -> Result<Received, u16> {
    let mut message: Option<Received> = None;
    loop {
        let (header, payload) = read_frame(stream);
        match header.opcode {
            OpCode::Pong => continue,
            OpCode::Close => {
                let code = payload.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                return Err(code);
            }
            OpCode::Text | OpCode::Binary => {
                assert!(message.is_none(), "a new message inside a message");
                let kind = if header.opcode == OpCode::Text { DataKind::Text } else { DataKind::Binary };
                message = Some(Received { kind, rsv: header.rsv, frames: 0, payload: Vec::new() });
            }
            OpCode::Continuation => assert_eq!(header.rsv, 0, "RSV bits on a continuation frame"),
            OpCode::Ping => panic!("the client pinged"),
        }
        let received = message.as_mut().expect("a continuation without a message");
        received.frames += 1;
        received.payload.extend_from_slice(&payload);
        if header.fin {
            return Ok(message.take().unwrap_or_else(|| unreachable!()));
        }
    }
}

/// A server frame (unmasked) with the given RSV bits.
fn frame(out: &mut Vec<u8>, fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let len =
        FrameHeader { fin, rsv, opcode, mask: None, payload_len: payload.len() as u64 }.encode(&mut header);
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
}

fn compressed(deflater: &mut Deflater, payload: &[u8], reset: bool) -> Vec<u8> {
    let mut out = Vec::new();
    deflater.compress(payload, &mut out, reset);
    out
}

fn inflated(inflater: &mut Inflater, received: &Received, reset: bool) -> Vec<u8> {
    assert_eq!(received.rsv, 0b100, "a compressed message has RSV1 on its first frame");
    let mut out = Vec::new();
    inflater.inflate(&received.payload, received.kind, u64::MAX, &mut out, reset).unwrap();
    out
}

/// The server closes with 1000 and reads the client's answer.
fn close_from_server(stream: &mut TcpStream) {
    let mut out = Vec::new();
    frame(&mut out, true, 0, OpCode::Close, &1000u16.to_be_bytes());
    stream.write_all(&out).unwrap();
    assert_eq!(next_message(stream).unwrap_err(), 1000);
}

fn expect_closed(conn: &mut Connection, code: u16) {
    match conn.recv() {
        Err(ClientError::Closed { code: got, .. }) => assert_eq!(got, code),
        other => panic!("expected Closed({code}), got {other:?}"),
    }
}

#[test]
fn compressed_both_ways_with_context_takeover() {
    let text = "permessage-deflate keeps its window between messages. ".repeat(40);
    let expected = text.clone();
    let (url, server) = scripted(Some("permessage-deflate"), move |stream| {
        let mut inflater = Inflater::new(15);
        let mut deflater = Deflater::new(6, 15);
        // The same text twice: with context takeover the second refers back to the first.
        let first = next_message(stream).unwrap();
        let second = next_message(stream).unwrap();
        assert_eq!((first.kind, first.frames), (DataKind::Text, 1));
        assert!(first.payload.len() < expected.len() / 4, "compressed: {}", first.payload.len());
        assert!(second.payload.len() < first.payload.len() / 2, "the window was kept");
        assert_eq!(inflated(&mut inflater, &first, false), expected.as_bytes());
        assert_eq!(inflated(&mut inflater, &second, false), expected.as_bytes());
        // Binary, sent fragmented: compressed as one, cut into frames, RSV1 on the first only
        // (the decoder refuses it on a continuation).
        let third = next_message(stream).unwrap();
        assert_eq!(third.kind, DataKind::Binary);
        assert!(third.frames > 1, "{} frames", third.frames);
        let binary: Vec<u8> = (0..20_000u32).map(|i| (i % 7) as u8).collect();
        assert_eq!(inflated(&mut inflater, &third, false), binary);
        // An empty message.
        let empty = next_message(stream).unwrap();
        assert_eq!(inflated(&mut inflater, &empty, false), b"");

        // Server to client: whole, fragmented (with a ping inside), and relying on the window.
        let mut out = Vec::new();
        let hello = compressed(&mut deflater, expected.as_bytes(), false);
        frame(&mut out, true, RSV1, OpCode::Text, &hello);
        let again = compressed(&mut deflater, expected.as_bytes(), false);
        assert!(again.len() < hello.len() / 2);
        let (a, b) = again.split_at(again.len() / 2);
        frame(&mut out, false, RSV1, OpCode::Text, a);
        frame(&mut out, true, 0, OpCode::Ping, b"in between");
        frame(&mut out, true, 0, OpCode::Continuation, b);
        // An uncompressed message is still fine.
        frame(&mut out, true, 0, OpCode::Binary, b"plain");
        let zeros = compressed(&mut deflater, &[0u8; 100_000], false);
        frame(&mut out, true, RSV1, OpCode::Binary, &zeros);
        stream.write_all(&out).unwrap();
        close_from_server(stream);
    });
    let mut conn = connect(&url, &options()).expect("connect");
    assert_eq!(conn.compression(), Some(Params::default()));
    conn.send_text(&text).unwrap();
    conn.send(Message::Text(text.clone())).unwrap();
    let binary: Vec<u8> = (0..20_000u32).map(|i| (i % 7) as u8).collect();
    conn.send_fragmented(DataKind::Binary, &binary, 7).unwrap();
    conn.send_binary(b"").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text(text.clone()));
    assert_eq!(conn.recv().unwrap(), Message::Text(text));
    assert_eq!(conn.recv().unwrap(), Message::Binary(b"plain".to_vec()));
    assert_eq!(conn.recv().unwrap(), Message::Binary(vec![0; 100_000]));
    expect_closed(&mut conn, 1000);
    server.join().unwrap();
}

#[test]
fn no_context_takeover_and_window_sizes_are_honoured() {
    let answer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
                  server_max_window_bits=9; client_max_window_bits=10";
    let text = "each message starts from an empty window. ".repeat(20);
    let expected = text.clone();
    let (url, server) = scripted(Some(answer), move |stream| {
        // An inflater with a 1 KiB window: the client must not refer further back.
        let mut inflater = Inflater::new(10);
        let first = next_message(stream).unwrap();
        let second = next_message(stream).unwrap();
        assert_eq!(first.payload, second.payload, "no context: the same bytes each time");
        // Each is inflated by a fresh inflater: no reference into an earlier message.
        assert_eq!(inflated(&mut Inflater::new(10), &second, true), expected.as_bytes());
        assert_eq!(inflated(&mut inflater, &first, true), expected.as_bytes());
        // Repeats 3000 bytes apart: a 32 KiB window would shrink them to about one period, a
        // 1 KiB window cannot reach back that far (an inflater does not police the distances,
        // so the size tells).
        let long = next_message(stream).unwrap();
        let pattern: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(long.payload.len() > 4 * pattern.len(), "{} bytes", long.payload.len());
        assert_eq!(inflated(&mut inflater, &long, true), pattern.repeat(30));

        let mut deflater = Deflater::new(6, 9);
        let mut out = Vec::new();
        for _ in 0..2 {
            let bytes = compressed(&mut deflater, expected.as_bytes(), true);
            frame(&mut out, true, RSV1, OpCode::Text, &bytes);
        }
        stream.write_all(&out).unwrap();
        close_from_server(stream);
    });
    let mut conn = connect(&url, &options()).expect("connect");
    let agreed = Params {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 9,
        client_max_window_bits: 10,
    };
    assert_eq!(conn.compression(), Some(agreed));
    conn.send_text(&text).unwrap();
    conn.send_text(&text).unwrap();
    let pattern: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
    conn.send_binary(&pattern.repeat(30)).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text(text.clone()));
    assert_eq!(conn.recv().unwrap(), Message::Text(text));
    expect_closed(&mut conn, 1000);
    server.join().unwrap();
}

#[test]
fn a_declining_server_leaves_the_connection_uncompressed() {
    let (url, server) = scripted(None, |stream| {
        let message = next_message(stream).unwrap();
        assert_eq!((message.rsv, message.payload.as_slice()), (0, &b"as is"[..]));
        // RSV1 was not agreed: a compressed frame from the server is a protocol error.
        let mut out = Vec::new();
        frame(&mut out, true, RSV1, OpCode::Text, b"x");
        stream.write_all(&out).unwrap();
        assert_eq!(next_message(stream).unwrap_err(), 1002);
    });
    let mut conn = connect(&url, &options()).expect("connect");
    assert_eq!(conn.compression(), None);
    conn.send_text("as is").unwrap();
    match conn.recv() {
        Err(ClientError::Protocol(ProtocolError::ReservedBitsSet)) => {}
        other => panic!("expected ReservedBitsSet, got {other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn an_invalid_answer_fails_the_handshake() {
    use HandshakeError::{InvalidExtensionResponse, UnexpectedExtension};
    let cases = [
        ("permessage-deflate; server_max_window_bits=16", InvalidExtensionResponse),
        ("permessage-deflate; server_max_window_bits=08", InvalidExtensionResponse),
        ("permessage-deflate; client_max_window_bits", InvalidExtensionResponse),
        ("permessage-deflate; server_no_context_takeover=1", InvalidExtensionResponse),
        ("permessage-deflate; mystery", InvalidExtensionResponse),
        (
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            InvalidExtensionResponse,
        ),
        ("permessage-deflate, permessage-deflate", InvalidExtensionResponse),
        ("x-webkit-deflate-frame", UnexpectedExtension),
        ("permessage-deflate, x-other", UnexpectedExtension),
    ];
    for (answer, expected) in cases {
        let (url, server) = scripted(Some(answer), |_| {});
        match connect(&url, &options()) {
            Err(ClientError::Handshake(e)) => {
                assert_eq!(e, expected, "{answer}");
                let text = ClientError::Handshake(e).to_string();
                assert!(text.contains("permessage-deflate") || text.contains("extension"), "{text}");
            }
            other => panic!("{answer}: expected a handshake error, got {other:?}"),
        }
        server.join().unwrap();
    }
}

#[test]
fn the_offer_is_ours_when_deflate_is_set() {
    let opts = ClientOptions {
        headers: vec![("sec-websocket-extensions".into(), "permessage-deflate".into())],
        ..options()
    };
    // Refused before the request is written (the TCP connect comes first: the listener's
    // backlog takes it).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    match connect(&url, &opts) {
        Err(ClientError::Handshake(HandshakeError::ReservedHeader)) => {}
        other => panic!("expected ReservedHeader, got {other:?}"),
    }
}

/// Sends `frames` after a 101 accepting permessage-deflate; checks the client fails with
/// `expected` and closes with its code.
fn fails_with(frames: Vec<u8>, opts: ClientOptions, expected: ProtocolError) {
    let code = expected.close_code().0;
    let (url, server) = scripted(Some("permessage-deflate"), move |stream| {
        // The client may fail before the last bytes went in (it stops reading).
        let _ = stream.write_all(&frames);
        assert_eq!(next_message(stream).unwrap_err(), code);
    });
    let mut conn = connect(&url, &opts).expect("connect");
    match conn.recv() {
        Err(ClientError::Protocol(e)) => assert_eq!(e, expected),
        other => panic!("expected {expected:?}, got {other:?}"),
    }
    server.join().unwrap();
    expect_closed(&mut conn, code);
}

#[test]
fn a_deflate_bomb_fails_with_1009() {
    // 8 MiB of zeros compress to about 8 KiB: well within the frame and message limits as sent.
    let bomb = compressed(&mut Deflater::new(9, 15), &vec![0u8; 8 << 20], false);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let opts = ClientOptions { max_message_size: 256 << 10, ..options() };
    // One frame, and the same cut into frames.
    let mut whole = Vec::new();
    frame(&mut whole, true, RSV1, OpCode::Binary, &bomb);
    fails_with(whole, opts.clone(), ProtocolError::MessageTooLarge);
    let mut pieces = Vec::new();
    let mut rsv = RSV1;
    let mut opcode = OpCode::Text;
    let mut chunks = bomb.chunks(1000).peekable();
    while let Some(chunk) = chunks.next() {
        frame(&mut pieces, chunks.peek().is_none(), rsv, opcode, chunk);
        (rsv, opcode) = (0, OpCode::Continuation);
    }
    fails_with(pieces, opts.clone(), ProtocolError::MessageTooLarge);

    // Exactly at the limit is fine.
    let exact = compressed(&mut Deflater::new(6, 15), &vec![7u8; 256 << 10], false);
    let (url, server) = scripted(Some("permessage-deflate"), move |stream| {
        let mut out = Vec::new();
        frame(&mut out, true, RSV1, OpCode::Binary, &exact);
        stream.write_all(&out).unwrap();
        close_from_server(stream);
    });
    let mut conn = connect(&url, &opts).expect("connect");
    assert_eq!(conn.recv().unwrap(), Message::Binary(vec![7; 256 << 10]));
    expect_closed(&mut conn, 1000);
    server.join().unwrap();
}

#[test]
fn bad_compressed_data_and_bad_text_fail_with_1007() {
    let mut garbage = Vec::new();
    // A reserved block type (BTYPE 11).
    frame(&mut garbage, true, RSV1, OpCode::Binary, &[0xff, 0xff, 0xff]);
    fails_with(garbage, options(), ProtocolError::InvalidCompressedData);

    let invalid_utf8 = compressed(&mut Deflater::new(6, 15), b"not \xff utf-8", false);
    let mut text = Vec::new();
    frame(&mut text, true, RSV1, OpCode::Text, &invalid_utf8);
    fails_with(text, options(), ProtocolError::InvalidUtf8);

    // RSV1 on a continuation frame is the decoder's 1002.
    let mut continuation = Vec::new();
    frame(&mut continuation, false, RSV1, OpCode::Text, &compressed(&mut Deflater::new(6, 15), b"a", false));
    frame(&mut continuation, true, RSV1, OpCode::Continuation, b"");
    fails_with(continuation, options(), ProtocolError::ReservedBitsSet);
}

#[test]
fn without_the_option_a_callers_extension_header_is_sent_and_any_answer_taken() {
    let (url, server) = scripted_offers(&["x-custom; p=1"], Some("x-custom"), |stream| {
        let message = next_message(stream).unwrap();
        assert_eq!((message.rsv, message.payload.as_slice()), (0, &b"plain"[..]));
        close_from_server(stream);
    });
    let opts = ClientOptions {
        deflate: false,
        headers: vec![("Sec-WebSocket-Extensions".into(), "x-custom; p=1".into())],
        ..options()
    };
    let mut conn = connect(&url, &opts).expect("connect");
    assert_eq!(conn.compression(), None);
    conn.send_text("plain").unwrap();
    expect_closed(&mut conn, 1000);
    server.join().unwrap();

    // Without the option and without such a header, no extension is offered.
    let (url, server) = scripted_offers(&[], None, close_from_server);
    let mut conn = connect(&url, &ClientOptions { deflate: false, ..options() }).expect("connect");
    assert_eq!(conn.compression(), None);
    expect_closed(&mut conn, 1000);
    server.join().unwrap();
}
