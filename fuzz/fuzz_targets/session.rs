//! Raw bytes into a server-role or client-role `Session`, fed whole, in pieces of sizes chosen by
//! the input, and one byte at a time; optionally we send our own close partway through. Checks:
//! - without our close, the session hands out exactly what the bare decoder loop does
//!   (`throng_fuzz::run`): the same messages, pings, pongs, close, or the same first error;
//! - the three runs agree (items and the control frames sent);
//! - every ping handed out was answered with a pong of the same payload, and nothing else sent
//!   a pong; no pong or data after our close; at most one close frame sent, with a valid payload
//!   (the peer's code echoed, none when it had none, or the error's code);
//! - nothing is handed out after the peer's close or an error; after an error the session is
//!   failed and reports the error's code; after the peer's close the handshake is done.
//!
//! Input: [bit 0: client role, bit 1: we close] [where we close: 0-255 of the wire length]
//! [max_frame_size / 16 - 1] [max_message_size / 16 - 1] [piece count, mod 8]
//! [piece size - 1, one byte each] wire...
#![no_main]

use libfuzzer_sys::fuzz_target;
use throng::proto::close::parse_close_payload;
use throng::proto::{CloseCode, DataKind, Item, Limits, OpCode, Role, Session, Transmit};
use throng_fuzz::{assert_same, run, Bytes, Out};

/// Records the control frames the session sends, checking each against what it just handed out.
#[derive(Default)]
struct Sent {
    frames: Vec<(OpCode, Vec<u8>)>,
    closes: usize,
}

impl Transmit for Sent {
    fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        assert!(payload.len() <= 125, "control payload of {} bytes", payload.len());
        match opcode {
            OpCode::Pong => assert_eq!(self.closes, 0, "a pong after our close"),
            OpCode::Close => {
                self.closes += 1;
                assert_eq!(self.closes, 1, "a second close frame");
                assert!(parse_close_payload(payload).is_ok(), "invalid close payload {payload:?}");
            }
            other => panic!("the session sent {other:?}"),
        }
        self.frames.push((opcode, payload.to_vec()));
    }
}

/// One run: what was handed out (messages assembled) and the control frames sent.
fn feed(
    wire: &[u8],
    pieces: &[usize],
    role: Role,
    limits: &Limits,
    close_at: Option<usize>,
) -> (Vec<Out>, Vec<(OpCode, Vec<u8>)>) {
    let mut session = Session::new(role);
    let mut sent = Sent::default();
    let mut out = Vec::new();
    let mut message: Vec<u8> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut sizes = pieces.iter().cycle();
    let mut at = 0;
    let mut ended = false;
    while at < wire.len() && !ended {
        if close_at.is_some_and(|c| at >= c) && session.can_send() {
            assert!(session.close(CloseCode::NORMAL, "fuzz", &mut sent));
        }
        // Pieces never cross the close point, so that every run closes after the same bytes.
        let limit = close_at.filter(|&c| c > at).unwrap_or(wire.len());
        let n = (*sizes.next().unwrap_or(&usize::MAX)).clamp(1, limit - at);
        pending.extend_from_slice(&wire[at..at + n]);
        at += n;
        let mut used = 0;
        while used < pending.len() {
            let sent_before = sent.frames.len();
            let closed_before = sent.closes > 0;
            let read = session.handle_read(&mut pending[used..], limits, &mut sent);
            let (n, item) = match read {
                Err(e) => {
                    assert!(session.is_failed() && session.is_done());
                    assert_eq!(session.close_code(), Some(e.close_code()));
                    if sent_before < sent.frames.len() {
                        let (_, payload) = &sent.frames[sent_before];
                        assert_eq!(payload[..2], e.close_code().0.to_be_bytes());
                    }
                    out.push(Out::Error(e));
                    ended = true;
                    break;
                }
                Ok(ok) => ok,
            };
            used += n;
            let Some(item) = item else { break };
            let nothing_sent = sent.frames.len() == sent_before;
            match item {
                Item::Data { kind, chunk, first, last } => {
                    assert!(session.can_send(), "data handed out after our close");
                    assert!(nothing_sent, "a control frame sent for data");
                    if first {
                        message.clear();
                    }
                    message.extend_from_slice(chunk);
                    if last {
                        if kind == DataKind::Text {
                            assert!(std::str::from_utf8(&message).is_ok());
                        }
                        out.push(Out::Message(kind, std::mem::take(&mut message)));
                    }
                }
                Item::Ping(p) => {
                    assert_eq!(sent.frames[sent_before..], [(OpCode::Pong, p.to_vec())], "ping not answered");
                    out.push(Out::Ping(p.to_vec()));
                }
                Item::Pong(p) => {
                    assert!(nothing_sent, "a control frame sent for a pong");
                    out.push(Out::Pong(p.to_vec()));
                }
                Item::Close { code, reason } => {
                    assert!(session.close_handshake_done() && session.is_done());
                    assert_eq!(session.close_code(), Some(code.unwrap_or(CloseCode::NO_STATUS)));
                    if closed_before {
                        assert!(nothing_sent, "our close went already");
                    } else {
                        let (opcode, payload) = &sent.frames[sent_before];
                        assert_eq!(*opcode, OpCode::Close);
                        let echoed = code.map(|c| c.0.to_be_bytes().to_vec()).unwrap_or_default();
                        assert_eq!(*payload, echoed, "the close was not echoed");
                    }
                    out.push(Out::Close(code.map(|c| c.0), reason.to_owned()));
                    ended = true;
                }
            }
        }
        pending.drain(..used);
    }
    (out, sent.frames)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let flags = input.byte();
    let role = if flags & 1 != 0 { Role::Client } else { Role::Server };
    let close_fraction = usize::from(input.byte());
    let max_frame_size = 16 * (u64::from(input.byte()) + 1);
    let max_message_size = 16 * (u64::from(input.byte()) + 1);
    let limits = Limits { max_frame_size, max_message_size, allowed_rsv: 0 };
    let pieces = input.piece_sizes();
    let wire = input.rest();
    let close_at = (flags & 2 != 0).then(|| wire.len() * close_fraction / 256);

    let whole = feed(wire, &[usize::MAX], role, &limits, close_at);
    if close_at.is_none() {
        assert_same(&whole.0, &run(wire, &[usize::MAX], role, &limits), "session vs decoder loop");
    }
    let in_pieces = feed(wire, &pieces, role, &limits, close_at);
    assert_same(&whole.0, &in_pieces.0, &format!("whole vs pieces {pieces:?}"));
    assert_eq!(whole.1, in_pieces.1, "control frames, whole vs pieces {pieces:?}");
    let bytewise = feed(wire, &[1], role, &limits, close_at);
    assert_same(&whole.0, &bytewise.0, "whole vs one byte at a time");
    assert_eq!(whole.1, bytewise.1, "control frames, whole vs one byte at a time");
});
