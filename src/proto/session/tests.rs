use super::*;
use crate::proto::frame::encode_frame;
use crate::proto::DataKind;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame as the peer of a `role` session sends it: masked towards a server, plain towards a
/// client.
fn peer_frame(role: Role, fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask = (role == Role::Server).then_some(KEY);
    let mut out = Vec::new();
    encode_frame(&mut out, fin, opcode, mask, payload);
    out
}

/// The control frames a session sent, in order.
#[derive(Default)]
struct Sent(Vec<(OpCode, Vec<u8>)>);

impl Transmit for Sent {
    fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        self.0.push((opcode, payload.to_vec()));
    }
}

/// What the caller saw, owned, with messages assembled as a caller does.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Out {
    Message(DataKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Error(ProtocolError),
}

/// Records one item as a caller sees it, assembling fragments in `message`.
fn record(item: Item<'_>, message: &mut Vec<u8>, out: &mut Vec<Out>) {
    match item {
        Item::Data { kind, chunk, first: true, last: true } => out.push(Out::Message(kind, chunk.to_vec())),
        Item::Data { kind, chunk, first, last } => {
            if first {
                message.clear();
            }
            message.extend_from_slice(chunk);
            if last {
                out.push(Out::Message(kind, std::mem::take(message)));
            }
        }
        Item::Ping(p) => out.push(Out::Ping(p.to_vec())),
        Item::Pong(p) => out.push(Out::Pong(p.to_vec())),
        Item::Close { code, reason } => out.push(Out::Close(code.map(|c| c.0), reason.to_owned())),
    }
}

/// Feeds `wire` to `session` in pieces of `piece` bytes, keeping the unused bytes in front of
/// the next piece as a loop does. Returns what it saw and the control frames sent.
fn feed(session: &mut Session, wire: &[u8], piece: usize) -> (Vec<Out>, Vec<(OpCode, Vec<u8>)>) {
    let mut sent = Sent::default();
    let mut out = Vec::new();
    let mut message = Vec::new();
    let mut pending = Vec::new();
    for chunk in wire.chunks(piece.max(1)) {
        pending.extend_from_slice(chunk);
        let mut used = 0;
        while used < pending.len() {
            match session.handle_read(&mut pending[used..], &Limits::default(), &mut sent) {
                Err(e) => {
                    out.push(Out::Error(e));
                    return (out, sent.0);
                }
                Ok((n, item)) => {
                    used += n;
                    let Some(item) = item else { break };
                    record(item, &mut message, &mut out);
                }
            }
        }
        pending.drain(..used);
    }
    (out, sent.0)
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

const ROLES: [Role; 2] = [Role::Server, Role::Client];

#[test]
fn a_session_is_no_larger_than_its_decoder() {
    assert_eq!(std::mem::size_of::<Session>(), std::mem::size_of::<Decoder>());
    assert!(std::mem::size_of::<Session>() <= 32);
}

#[test]
fn a_ping_is_answered_with_its_payload() {
    for role in ROLES {
        let mut session = Session::new(role);
        let (out, sent) = feed(&mut session, &peer_frame(role, true, OpCode::Ping, b"hi"), usize::MAX);
        assert_eq!(out, [Out::Ping(b"hi".to_vec())], "{role:?}");
        assert_eq!(sent, [(OpCode::Pong, b"hi".to_vec())], "{role:?}");
        assert!(session.can_send());
    }
}

#[test]
fn a_ping_after_our_close_is_not_answered() {
    for role in ROLES {
        let mut session = Session::new(role);
        let mut sent = Sent::default();
        assert!(session.close(CloseCode::NORMAL, "bye", &mut sent));
        assert_eq!(sent.0, [(OpCode::Close, close_payload(1000, "bye"))]);
        assert!(!session.can_send());
        let (out, sent) = feed(&mut session, &peer_frame(role, true, OpCode::Ping, b"hi"), usize::MAX);
        assert_eq!(out, [], "{role:?}");
        assert_eq!(sent, [], "{role:?}");
    }
}

#[test]
fn the_peers_close_is_echoed_with_its_code() {
    for role in ROLES {
        let mut session = Session::new(role);
        let wire = peer_frame(role, true, OpCode::Close, &close_payload(4000, "done"));
        let (out, sent) = feed(&mut session, &wire, usize::MAX);
        assert_eq!(out, [Out::Close(Some(4000), "done".into())], "{role:?}");
        assert_eq!(sent, [(OpCode::Close, 4000u16.to_be_bytes().to_vec())], "{role:?}");
        assert!(session.close_handshake_done() && session.is_done());
        assert_eq!(session.close_code(), Some(CloseCode(4000)));
    }
}

#[test]
fn a_close_without_a_code_is_answered_without_one() {
    for role in ROLES {
        let mut session = Session::new(role);
        let (out, sent) = feed(&mut session, &peer_frame(role, true, OpCode::Close, b""), usize::MAX);
        assert_eq!(out, [Out::Close(None, String::new())], "{role:?}");
        assert_eq!(sent, [(OpCode::Close, Vec::new())], "{role:?}");
        assert_eq!(session.close_code(), Some(CloseCode::NO_STATUS));
        assert!(session.is_done());
    }
}

#[test]
fn a_second_close_and_anything_after_the_first_is_ignored() {
    for role in ROLES {
        let mut session = Session::new(role);
        let mut wire = peer_frame(role, true, OpCode::Close, &close_payload(1000, ""));
        wire.extend(peer_frame(role, true, OpCode::Close, &close_payload(1001, "")));
        wire.extend(peer_frame(role, true, OpCode::Text, b"late"));
        wire.extend(peer_frame(role, true, OpCode::Ping, b"late"));
        let (out, sent) = feed(&mut session, &wire, usize::MAX);
        assert_eq!(out, [Out::Close(Some(1000), String::new())], "{role:?}");
        assert_eq!(sent.len(), 1, "{role:?}: {sent:?}");
        assert_eq!(session.close_code(), Some(CloseCode::NORMAL));
        let mut sent = Sent::default();
        assert!(!session.close(CloseCode::GOING_AWAY, "again", &mut sent), "our close went already");
        assert_eq!(sent.0, []);
    }
}

#[test]
fn their_close_after_ours_completes_the_handshake_without_a_reply() {
    for role in ROLES {
        let mut session = Session::new(role);
        let mut sent = Sent::default();
        session.close(CloseCode::GOING_AWAY, "shutting down", &mut sent);
        assert!(!session.is_done());
        assert_eq!(session.close_code(), None, "our graceful close reports their code");
        let (out, sent) =
            feed(&mut session, &peer_frame(role, true, OpCode::Close, &close_payload(1001, "")), usize::MAX);
        assert_eq!(out, [Out::Close(Some(1001), String::new())]);
        assert_eq!(sent, []);
        assert!(session.close_handshake_done() && session.is_done() && !session.is_failed());
        assert_eq!(session.close_code(), Some(CloseCode::GOING_AWAY));
    }
}

#[test]
fn a_protocol_error_is_answered_with_its_close_code() {
    // An unmasked frame to a server, a masked one to a client.
    for (role, wire, error) in [
        (Role::Server, peer_frame(Role::Client, true, OpCode::Text, b"x"), ProtocolError::UnmaskedFrame),
        (Role::Client, peer_frame(Role::Server, true, OpCode::Text, b"x"), ProtocolError::MaskedFrame),
        (Role::Server, peer_frame(Role::Server, true, OpCode::Text, b"\xff"), ProtocolError::InvalidUtf8),
        (Role::Client, peer_frame(Role::Client, true, OpCode::Text, b"\xff"), ProtocolError::InvalidUtf8),
    ] {
        let mut session = Session::new(role);
        let mut wire = wire;
        wire.extend(peer_frame(role, true, OpCode::Ping, b"after"));
        let (out, sent) = feed(&mut session, &wire, usize::MAX);
        assert_eq!(out, [Out::Error(error)], "{role:?}");
        let code = error.close_code();
        assert_eq!(sent, [(OpCode::Close, close_payload(code.0, error.reason()))], "{role:?}");
        assert!(session.is_failed() && session.is_done() && !session.can_send());
        assert_eq!(session.close_code(), Some(code));
        // Nothing more is read.
        let (out, sent) = feed(&mut session, &peer_frame(role, true, OpCode::Ping, b"x"), usize::MAX);
        assert_eq!((out, sent), (vec![], vec![]));
    }
}

#[test]
fn a_protocol_error_after_our_close_sends_no_second_close() {
    for role in ROLES {
        let mut session = Session::new(role);
        let mut sent = Sent::default();
        session.close(CloseCode::NORMAL, "", &mut sent);
        let (out, sent) = feed(&mut session, &[0x83, 0x80, 0, 0, 0, 0], usize::MAX);
        assert_eq!(out, [Out::Error(ProtocolError::ReservedOpcode(3))]);
        assert_eq!(sent, []);
        assert_eq!(session.close_code(), Some(CloseCode::PROTOCOL_ERROR));
    }
}

#[test]
fn data_after_our_close_is_discarded() {
    for role in ROLES {
        let mut session = Session::new(role);
        let mut wire = peer_frame(role, false, OpCode::Text, b"before ");
        let (out, _) = feed(&mut session, &wire, usize::MAX);
        assert_eq!(out, []);
        let mut sent = Sent::default();
        session.close(CloseCode::NORMAL, "", &mut sent);
        wire = peer_frame(role, true, OpCode::Continuation, b"after");
        wire.extend(peer_frame(role, true, OpCode::Binary, b"whole"));
        wire.extend(peer_frame(role, true, OpCode::Pong, b"p"));
        wire.extend(peer_frame(role, true, OpCode::Close, &close_payload(1000, "")));
        let (out, sent) = feed(&mut session, &wire, usize::MAX);
        // Pongs and the close still count; the data is gone.
        assert_eq!(out, [Out::Pong(b"p".to_vec()), Out::Close(Some(1000), String::new())], "{role:?}");
        assert_eq!(sent, []);
        assert!(session.close_handshake_done());
    }
}

#[test]
fn fail_sends_one_close_and_stops_reading() {
    let mut session = Session::new(Role::Server);
    let mut sent = Sent::default();
    session.fail(CloseCode::POLICY_VIOLATION, "slow consumer", &mut sent);
    session.fail(CloseCode::INTERNAL_ERROR, "again", &mut sent);
    assert!(!session.close(CloseCode::NORMAL, "", &mut sent));
    assert_eq!(sent.0, [(OpCode::Close, close_payload(1008, "slow consumer"))]);
    assert_eq!(session.close_code(), Some(CloseCode::POLICY_VIOLATION));
    let (out, sent) = feed(&mut session, &peer_frame(Role::Server, true, OpCode::Text, b"x"), usize::MAX);
    assert_eq!((out, sent), (vec![], vec![]));
}

#[test]
fn our_close_reason_is_cut_to_fit_a_control_frame() {
    let mut session = Session::new(Role::Server);
    let mut sent = Sent::default();
    session.close(CloseCode::NORMAL, &"é".repeat(100), &mut sent);
    assert_eq!(sent.0[0].1.len(), 2 + 122);
}

/// Two text messages in pieces with controls between them, a binary message whole, a close.
fn conversation(role: Role) -> Vec<u8> {
    let mut wire = Vec::new();
    wire.extend(peer_frame(role, false, OpCode::Text, "frag".as_bytes()));
    wire.extend(peer_frame(role, true, OpCode::Ping, b"in between"));
    wire.extend(peer_frame(role, false, OpCode::Continuation, "mented ".as_bytes()));
    wire.extend(peer_frame(role, true, OpCode::Pong, b""));
    wire.extend(peer_frame(role, true, OpCode::Continuation, "tëxt €".as_bytes()));
    wire.extend(peer_frame(role, true, OpCode::Binary, &[0u8, 1, 2, 255]));
    wire.extend(peer_frame(role, false, OpCode::Binary, &[]));
    wire.extend(peer_frame(role, true, OpCode::Continuation, &[7u8; 300]));
    wire.extend(peer_frame(role, true, OpCode::Close, &close_payload(1000, "bye")));
    wire
}

#[test]
fn a_fragmented_message_is_assembled() {
    for role in ROLES {
        let mut session = Session::new(role);
        let (out, sent) = feed(&mut session, &conversation(role), usize::MAX);
        assert_eq!(
            out,
            [
                Out::Ping(b"in between".to_vec()),
                Out::Pong(Vec::new()),
                Out::Message(DataKind::Text, "fragmented tëxt €".as_bytes().to_vec()),
                Out::Message(DataKind::Binary, vec![0, 1, 2, 255]),
                Out::Message(DataKind::Binary, vec![7; 300]),
                Out::Close(Some(1000), "bye".into()),
            ],
            "{role:?}"
        );
        assert_eq!(
            sent,
            [(OpCode::Pong, b"in between".to_vec()), (OpCode::Close, 1000u16.to_be_bytes().to_vec())]
        );
    }
}

#[test]
fn a_conversation_split_at_every_byte_boundary_gives_the_same_result() {
    for role in ROLES {
        let wire = conversation(role);
        let whole = feed(&mut Session::new(role), &wire, usize::MAX);
        for piece in 1..wire.len() {
            assert_eq!(feed(&mut Session::new(role), &wire, piece), whole, "{role:?}, pieces of {piece}");
        }
        // And cut once at every position.
        for cut in 1..wire.len() {
            let mut session = Session::new(role);
            let mut sent = Sent::default();
            let mut pending = wire[..cut].to_vec();
            let mut out = Vec::new();
            let mut message = Vec::new();
            for next in [&wire[cut..], &[][..]] {
                let mut used = 0;
                while used < pending.len() {
                    let (n, item) =
                        session.handle_read(&mut pending[used..], &Limits::default(), &mut sent).unwrap();
                    used += n;
                    let Some(item) = item else { break };
                    record(item, &mut message, &mut out);
                }
                pending.drain(..used);
                pending.extend_from_slice(next);
            }
            assert_eq!((out, sent.0), whole, "{role:?}, cut at {cut}");
        }
    }
}

#[test]
fn frame_writer_masks_for_a_client_only() {
    for role in ROLES {
        let mut out = Vec::new();
        FrameWriter::new(&mut out, role).control(OpCode::Pong, b"abc");
        assert_eq!(out[1] & 0x80 != 0, role == Role::Client, "{role:?}");
        // The peer's session (the other role) reads it back.
        let other = if role == Role::Server { Role::Client } else { Role::Server };
        let (seen, _) = feed(&mut Session::new(other), &out, usize::MAX);
        assert_eq!(seen, [Out::Pong(b"abc".to_vec())]);
    }
}
