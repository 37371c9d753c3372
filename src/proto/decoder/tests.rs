use super::*;
use crate::proto::frame::{encode_frame, MAX_HEADER_LEN};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, fin, opcode, Some(KEY), payload);
    out
}

/// What the decoder produced, owned, so that a test can compare runs.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Out {
    Message(DataKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Error(ProtocolError),
}

/// Feeds `wire` to a server decoder in pieces of the given sizes (cycled), the way a loop does:
/// unused bytes are kept and the next piece appended to them.
fn run(wire: &[u8], piece_sizes: &[usize], limits: &Limits) -> Vec<Out> {
    let mut decoder = Decoder::new(Role::Server);
    let mut out = Vec::new();
    let mut message = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut sizes = piece_sizes.iter().cycle();
    while at < wire.len() {
        let n = (*sizes.next().unwrap()).min(wire.len() - at).max(1);
        pending.extend_from_slice(&wire[at..at + n]);
        at += n;
        let mut used = 0;
        loop {
            match decoder.decode(&mut pending[used..], limits) {
                Err(e) => {
                    out.push(Out::Error(e));
                    return out;
                }
                Ok((n, item)) => {
                    used += n;
                    match item {
                        None => break,
                        Some(Item::Data { kind, chunk, first, last }) => {
                            if first {
                                assert!(message.is_empty());
                            }
                            message.extend_from_slice(chunk);
                            if last {
                                out.push(Out::Message(kind, std::mem::take(&mut message)));
                            }
                        }
                        Some(Item::Ping(p)) => out.push(Out::Ping(p.to_vec())),
                        Some(Item::Pong(p)) => out.push(Out::Pong(p.to_vec())),
                        Some(Item::Close { code, reason }) => {
                            out.push(Out::Close(code.map(|c| c.0), reason.to_owned()))
                        }
                    }
                    if used == pending.len() {
                        break;
                    }
                }
            }
        }
        pending.drain(..used);
        assert!(pending.len() <= MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD, "kept {} bytes", pending.len());
    }
    out
}

fn run_whole(wire: &[u8]) -> Vec<Out> {
    run(wire, &[usize::MAX], &Limits::default())
}

fn first_error(wire: &[u8]) -> ProtocolError {
    match run_whole(wire).pop() {
        Some(Out::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn decoder_is_small() {
    assert!(std::mem::size_of::<Decoder>() <= 32, "{}", std::mem::size_of::<Decoder>());
}

#[test]
fn single_frame_message_is_one_piece_in_place() {
    let mut wire = client_frame(true, OpCode::Binary, b"abc");
    let mut decoder = Decoder::new(Role::Server);
    let (n, item) = decoder.decode(&mut wire, &Limits::default()).unwrap();
    assert_eq!(n, 9);
    assert_eq!(item, Some(Item::Data { kind: DataKind::Binary, chunk: b"abc", first: true, last: true }));
}

#[test]
fn any_split_gives_the_same_result() {
    let mut wire = Vec::new();
    wire.extend(client_frame(false, OpCode::Text, "héllo ".as_bytes()));
    wire.extend(client_frame(true, OpCode::Ping, b"p1"));
    wire.extend(client_frame(false, OpCode::Continuation, "wörld".as_bytes()));
    wire.extend(client_frame(true, OpCode::Pong, b""));
    wire.extend(client_frame(true, OpCode::Continuation, "!🎉".as_bytes()));
    wire.extend(client_frame(true, OpCode::Binary, &[7u8; 300]));
    wire.extend(client_frame(true, OpCode::Binary, &vec![9u8; 70_000]));
    wire.extend(client_frame(true, OpCode::Close, b"\x03\xe8bye"));
    let expected = vec![
        Out::Ping(b"p1".to_vec()),
        Out::Pong(vec![]),
        Out::Message(DataKind::Text, "héllo wörld!🎉".as_bytes().to_vec()),
        Out::Message(DataKind::Binary, vec![7u8; 300]),
        Out::Message(DataKind::Binary, vec![9u8; 70_000]),
        Out::Close(Some(1000), "bye".into()),
    ];
    assert_eq!(run_whole(&wire), expected);
    for sizes in [&[1][..], &[2], &[3], &[5, 1, 13], &[64], &[1000, 1]] {
        assert_eq!(run(&wire, sizes, &Limits::default()), expected, "pieces {sizes:?}");
    }
}

#[test]
fn a_thousand_frames_in_one_buffer() {
    let mut wire = Vec::new();
    for i in 0..1000u32 {
        wire.extend(client_frame(true, OpCode::Binary, &i.to_be_bytes()));
    }
    let out = run_whole(&wire);
    assert_eq!(out.len(), 1000);
    assert_eq!(out[999], Out::Message(DataKind::Binary, 999u32.to_be_bytes().to_vec()));
}

#[test]
fn empty_messages() {
    let mut wire = client_frame(true, OpCode::Text, b"");
    wire.extend(client_frame(false, OpCode::Binary, b""));
    wire.extend(client_frame(true, OpCode::Continuation, b""));
    assert_eq!(
        run_whole(&wire),
        vec![Out::Message(DataKind::Text, vec![]), Out::Message(DataKind::Binary, vec![])]
    );
}

#[test]
fn close_without_code_and_data_after_close_dropped() {
    let mut wire = client_frame(true, OpCode::Close, b"");
    wire.extend(client_frame(true, OpCode::Text, b"ignored"));
    assert_eq!(run_whole(&wire), vec![Out::Close(None, String::new())]);
}

#[test]
fn reserved_bits_are_1002_unless_claimed() {
    let mut wire = client_frame(true, OpCode::Text, b"x");
    wire[0] |= 0x40;
    assert_eq!(first_error(&wire), ProtocolError::ReservedBitsSet);
    assert_eq!(ProtocolError::ReservedBitsSet.close_code(), CloseCode::PROTOCOL_ERROR);
    let limits = Limits { allowed_rsv: 0b100, ..Limits::default() };
    let mut claimed = client_frame(true, OpCode::Text, b"x");
    claimed[0] |= 0x40;
    assert_eq!(run(&claimed, &[usize::MAX], &limits), vec![Out::Message(DataKind::Text, b"x".to_vec())]);
}

#[test]
fn rsv1_marks_a_compressed_message_on_its_first_frame_only() {
    let limits = Limits { allowed_rsv: 0b100, ..Limits::default() };
    // Not UTF-8 on the wire: a compressed text message is checked once inflated.
    let mut first = client_frame(false, OpCode::Text, &[0xff, 0xfe]);
    first[0] |= 0x40;
    let mut wire = first.clone();
    wire.extend(client_frame(true, OpCode::Continuation, &[0xc3]));
    let mut decoder = Decoder::new(Role::Server);
    let (used, item) = decoder.decode(&mut wire, &limits).unwrap();
    assert!(matches!(item, Some(Item::Data { first: true, last: false, .. })));
    assert!(decoder.compressed());
    let (_, item) = decoder.decode(&mut wire[used..], &limits).unwrap();
    assert!(matches!(item, Some(Item::Data { last: true, .. })));
    // The next message without RSV1 is plain again, and checked.
    let mut plain = client_frame(true, OpCode::Text, &[0xff]);
    assert_eq!(decoder.decode(&mut plain, &limits), Err(ProtocolError::InvalidUtf8));
    // RSV1 on a continuation or a control frame is 1002 even when deflate was negotiated.
    let mut continuation = client_frame(false, OpCode::Text, b"a");
    let mut second = client_frame(true, OpCode::Continuation, b"b");
    second[0] |= 0x40;
    continuation.extend(second);
    assert_eq!(
        run(&continuation, &[usize::MAX], &limits).last(),
        Some(&Out::Error(ProtocolError::ReservedBitsSet))
    );
    for opcode in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let mut control = client_frame(true, opcode, b"");
        control[0] |= 0x40;
        assert_eq!(run(&control, &[usize::MAX], &limits), vec![Out::Error(ProtocolError::ReservedBitsSet)]);
    }
}

#[test]
fn reserved_opcode_is_1002() {
    for op in [3u8, 7, 11, 15] {
        let wire = [0x80 | op, 0x80, 0, 0, 0, 0];
        assert_eq!(first_error(&wire), ProtocolError::ReservedOpcode(op));
        assert_eq!(ProtocolError::ReservedOpcode(op).close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn unmasked_client_frame_is_1002() {
    let mut wire = Vec::new();
    encode_frame(&mut wire, true, OpCode::Text, None, b"hi");
    assert_eq!(first_error(&wire), ProtocolError::UnmaskedFrame);
    assert_eq!(ProtocolError::UnmaskedFrame.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn masked_server_frame_is_1002_for_a_client() {
    let mut wire = client_frame(true, OpCode::Text, b"hi");
    let mut decoder = Decoder::new(Role::Client);
    assert_eq!(decoder.decode(&mut wire, &Limits::default()), Err(ProtocolError::MaskedFrame));
    let mut plain = Vec::new();
    encode_frame(&mut plain, true, OpCode::Text, None, b"hi");
    let mut decoder = Decoder::new(Role::Client);
    let (_, item) = decoder.decode(&mut plain, &Limits::default()).unwrap();
    assert_eq!(item, Some(Item::Data { kind: DataKind::Text, chunk: b"hi", first: true, last: true }));
}

#[test]
fn length_top_bit_is_1002() {
    let wire = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    assert_eq!(first_error(&wire), ProtocolError::LengthOverflow);
}

#[test]
fn control_frame_rules_are_1002() {
    assert_eq!(first_error(&client_frame(true, OpCode::Ping, &[0; 126])), ProtocolError::ControlFrameTooLong);
    assert_eq!(first_error(&client_frame(false, OpCode::Ping, b"x")), ProtocolError::FragmentedControlFrame);
    assert_eq!(run_whole(&client_frame(true, OpCode::Ping, &[1; 125])), vec![Out::Ping(vec![1; 125])]);
}

#[test]
fn continuation_sequencing_is_1002() {
    assert_eq!(
        first_error(&client_frame(true, OpCode::Continuation, b"x")),
        ProtocolError::ContinuationWithoutStart
    );
    let mut wire = client_frame(false, OpCode::Text, b"a");
    wire.extend(client_frame(true, OpCode::Binary, b"b"));
    assert_eq!(first_error(&wire), ProtocolError::DataFrameInsideMessage);
    assert_eq!(ProtocolError::DataFrameInsideMessage.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn size_limits_are_1009() {
    let limits = Limits { max_frame_size: 10, max_message_size: 15, allowed_rsv: 0 };
    let out = run(&client_frame(true, OpCode::Binary, &[0; 11]), &[usize::MAX], &limits);
    assert_eq!(out, vec![Out::Error(ProtocolError::FrameTooLarge)]);
    let mut wire = client_frame(false, OpCode::Binary, &[0; 10]);
    wire.extend(client_frame(true, OpCode::Continuation, &[0; 6]));
    let out = run(&wire, &[usize::MAX], &limits);
    assert_eq!(out, vec![Out::Error(ProtocolError::MessageTooLarge)]);
    assert_eq!(ProtocolError::FrameTooLarge.close_code(), CloseCode::TOO_BIG);
    assert_eq!(ProtocolError::MessageTooLarge.close_code(), CloseCode::TOO_BIG);
}

#[test]
fn invalid_utf8_is_1007_and_fails_fast_inside_a_frame() {
    assert_eq!(first_error(&client_frame(true, OpCode::Text, b"ok\xff")), ProtocolError::InvalidUtf8);
    // Cut at a fragment boundary inside a code point: fine.
    let euro = "€".as_bytes();
    let mut wire = client_frame(false, OpCode::Text, &euro[..1]);
    wire.extend(client_frame(true, OpCode::Continuation, &euro[1..]));
    assert_eq!(run_whole(&wire), vec![Out::Message(DataKind::Text, euro.to_vec())]);
    // Message ends inside a code point.
    assert_eq!(first_error(&client_frame(true, OpCode::Text, &euro[..2])), ProtocolError::InvalidUtf8);
    // Fail fast: only the first 10 bytes of a 1000-byte frame have arrived, and they are invalid.
    let mut payload = vec![b'a'; 1000];
    payload[5] = 0xc0;
    let mut wire = client_frame(true, OpCode::Text, &payload);
    wire.truncate(8 + 10);
    assert_eq!(first_error(&wire), ProtocolError::InvalidUtf8);
    // Binary messages are not checked.
    assert_eq!(
        run_whole(&client_frame(true, OpCode::Binary, b"\xff")),
        vec![Out::Message(DataKind::Binary, vec![0xff])]
    );
}

#[test]
fn close_payload_errors() {
    assert_eq!(first_error(&client_frame(true, OpCode::Close, b"\x03")), ProtocolError::ClosePayloadTooShort);
    assert_eq!(
        first_error(&client_frame(true, OpCode::Close, b"\x03\xed")),
        ProtocolError::InvalidCloseCode(1005)
    );
    assert_eq!(first_error(&client_frame(true, OpCode::Close, b"\x03\xe8\xc0")), ProtocolError::InvalidUtf8);
    assert_eq!(
        run_whole(&client_frame(true, OpCode::Close, b"\x0f\xa0")),
        vec![Out::Close(Some(4000), String::new())]
    );
}

#[test]
fn partial_control_frame_is_kept_not_consumed() {
    let mut wire = client_frame(true, OpCode::Ping, b"abcdef");
    let mut decoder = Decoder::new(Role::Server);
    let len = wire.len();
    assert_eq!(decoder.decode(&mut wire[..len - 1], &Limits::default()), Ok((0, None)));
    let (n, item) = decoder.decode(&mut wire, &Limits::default()).unwrap();
    assert_eq!((n, item), (len, Some(Item::Ping(b"abcdef"))));
}
