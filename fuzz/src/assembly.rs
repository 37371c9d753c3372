//! Structured frame sequences against a model of RFC 6455's receive rules.
//!
//! The input describes a sequence of messages (text or binary, cut into fragments, with pings and
//! pongs between the fragments), control frames, a close, and stray frames; a few frames are
//! corrupted (reserved bits, reserved opcode, wrong masking, 64-bit length overflow, invalid UTF-8
//! inserted). They are encoded (masked for a server decoder, plain for a client one) and decoded in
//! pieces of random sizes. What the decoder yields must equal what a straightforward model of the
//! rules predicts: the encoded messages reassembled when the sequence is valid, otherwise the
//! outputs up to the first violation and then exactly the `ProtocolError` it calls for.

use crate::{assert_same, run, Out, Short};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use throng::proto::frame::{encode_frame, MAX_CONTROL_PAYLOAD};
use throng::proto::{DataKind, Limits, OpCode, ProtocolError, Role};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Corruption {
    None,
    /// These RSV bits set (1 to 7).
    Rsv(u8),
    /// Masked to a client, or unmasked to a server.
    WrongMask,
    /// This reserved opcode instead of the real one.
    ReservedOpcode(u8),
    /// A 64-bit length with the top bit set.
    LengthOverflow,
}

struct Frame {
    opcode: OpCode,
    fin: bool,
    payload: Vec<u8>,
    key: [u8; 4],
    corruption: Corruption,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fin = if self.fin { "fin " } else { "" };
        write!(f, "{fin}{:?} {:?}", self.opcode, Short(&self.payload))?;
        if self.corruption != Corruption::None {
            write!(f, " {:?}", self.corruption)?;
        }
        Ok(())
    }
}

/// True once in `n` draws, and false once the input is used up (so that running out of input
/// ends in plain valid frames, not in a run of rare cases).
fn rare(u: &mut Unstructured<'_>, n: u8) -> Result<bool> {
    Ok(!u.ratio(n - 1, n)?)
}

struct Gen<'u, 'a> {
    u: &'u mut Unstructured<'a>,
    frames: Vec<Frame>,
}

impl Gen<'_, '_> {
    fn frame(&mut self, opcode: OpCode, fin: bool, payload: Vec<u8>) -> Result<()> {
        let key = self.u.arbitrary()?;
        let corruption = if rare(self.u, 24)? {
            match self.u.int_in_range(0..=3)? {
                0 => Corruption::Rsv(self.u.int_in_range(1..=7)?),
                1 => Corruption::WrongMask,
                2 => Corruption::ReservedOpcode(*self.u.choose(&[3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15])?),
                _ => Corruption::LengthOverflow,
            }
        } else {
            Corruption::None
        };
        self.frames.push(Frame { opcode, fin, payload, key, corruption });
        Ok(())
    }

    fn control_payload(&mut self) -> Result<Vec<u8>> {
        let len = if rare(self.u, 16)? { 126 } else { self.u.int_in_range(0..=MAX_CONTROL_PAYLOAD)? };
        Ok(self.u.bytes(len.min(self.u.len()))?.to_vec())
    }

    fn maybe_control(&mut self) -> Result<()> {
        if rare(self.u, 4)? {
            let opcode = if self.u.arbitrary()? { OpCode::Ping } else { OpCode::Pong };
            let payload = self.control_payload()?;
            // Rarely a fragmented control frame.
            let fin = !rare(self.u, 32)?;
            self.frame(opcode, fin, payload)?;
        }
        Ok(())
    }

    fn message(&mut self) -> Result<()> {
        let text: bool = self.u.arbitrary()?;
        let mut payload = if text {
            // Mostly ASCII with any other characters mixed in, so that fragment cuts often fall
            // inside a code point.
            let mut text = String::new();
            for _ in 0..self.u.int_in_range(0..=64)? {
                if self.u.arbitrary()? {
                    text.push(char::from(self.u.int_in_range(0x20u8..=0x7e)?));
                } else {
                    text.push(self.u.arbitrary()?);
                }
            }
            text.into_bytes()
        } else if rare(self.u, 32)? {
            // Long enough for the 16- and 64-bit length forms.
            vec![self.u.arbitrary::<u8>()?; self.u.int_in_range(100..=70_000)?]
        } else {
            self.u.arbitrary::<Vec<u8>>()?
        };
        if text && rare(self.u, 8)? {
            let at = self.u.int_in_range(0..=payload.len())?;
            let byte = *self.u.choose(&[0x80u8, 0xc0, 0xc3, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff])?;
            payload.insert(at, byte);
        }
        let fragments = self.u.int_in_range(1..=4)?;
        let mut cuts: Vec<usize> =
            (1..fragments).map(|_| self.u.int_in_range(0..=payload.len())).collect::<Result<_>>()?;
        cuts.sort_unstable();
        cuts.push(payload.len());
        let mut start = 0;
        for (i, &end) in cuts.iter().enumerate() {
            let opcode = match (i, text) {
                (0, true) => OpCode::Text,
                (0, false) => OpCode::Binary,
                _ => OpCode::Continuation,
            };
            let last = i + 1 == cuts.len();
            self.frame(opcode, last, payload[start..end].to_vec())?;
            start = end;
            if !last {
                self.maybe_control()?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let mut payload = Vec::new();
        match self.u.int_in_range(0..=5)? {
            0 => {}
            1 => payload.push(self.u.arbitrary()?),
            2 => payload.extend_from_slice(&self.u.arbitrary::<u16>()?.to_be_bytes()),
            _ => {
                let codes = [
                    1000u16, 1001, 1002, 1003, 1007, 1011, 3000, 4999, 999, 1004, 1005, 1006, 1012, 1015,
                    5000,
                ];
                payload.extend_from_slice(&self.u.choose(&codes)?.to_be_bytes());
                let reason = self.u.arbitrary::<String>()?;
                payload.extend_from_slice(reason.as_bytes());
                payload.truncate(self.u.int_in_range(2..=MAX_CONTROL_PAYLOAD + 1)?);
            }
        }
        self.frame(OpCode::Close, true, payload)
    }

    fn stray(&mut self) -> Result<()> {
        let opcode = *self.u.choose(&[OpCode::Continuation, OpCode::Text, OpCode::Binary, OpCode::Ping])?;
        let fin = self.u.arbitrary()?;
        let payload = self.control_payload()?;
        self.frame(opcode, fin, payload)
    }
}

fn encode(frames: &[Frame], role: Role) -> Vec<u8> {
    let mut wire = Vec::new();
    for f in frames {
        let masked = (role == Role::Server) != (f.corruption == Corruption::WrongMask);
        let key = masked.then_some(f.key);
        let start = wire.len();
        match f.corruption {
            Corruption::LengthOverflow => {
                wire.push(u8::from(f.fin) << 7 | f.opcode as u8);
                wire.push(if masked { 0x80 | 127 } else { 127 });
                wire.extend_from_slice(&(f.payload.len() as u64 | 1 << 63).to_be_bytes());
                if let Some(key) = key {
                    wire.extend_from_slice(&key);
                }
                wire.extend_from_slice(&f.payload);
            }
            _ => encode_frame(&mut wire, f.fin, f.opcode, key, &f.payload),
        }
        match f.corruption {
            Corruption::Rsv(bits) => wire[start] |= bits << 4,
            Corruption::ReservedOpcode(op) => wire[start] = (wire[start] & 0xf0) | op,
            _ => {}
        }
    }
    wire
}

/// RFC 6455 §7.4.1 plus the private range; what a peer may put in a close frame.
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// What a conforming receiver yields for these frames.
fn model(frames: &[Frame], role: Role, limits: &Limits) -> Vec<Out> {
    let mut out = Vec::new();
    let mut message: Option<(DataKind, Vec<u8>)> = None;
    let mut announced = 0u64;
    // The message's first frame had RSV1 (permessage-deflate): its bytes are deflate data, whose
    // UTF-8 is the inflater's to check, not the decoder's.
    let mut compressed = false;
    for f in frames {
        let fail = |out: &mut Vec<Out>, e| {
            out.push(Out::Error(e));
            std::mem::take(out)
        };
        let rsv = match f.corruption {
            Corruption::ReservedOpcode(op) => return fail(&mut out, ProtocolError::ReservedOpcode(op)),
            Corruption::LengthOverflow => return fail(&mut out, ProtocolError::LengthOverflow),
            Corruption::Rsv(bits) => bits,
            _ => 0,
        };
        if rsv & !limits.allowed_rsv != 0 {
            return fail(&mut out, ProtocolError::ReservedBitsSet);
        }
        // RSV1 marks a message on its first frame only (RFC 7692 §6.1).
        if rsv & 0b100 != 0 && (f.opcode.is_control() || f.opcode == OpCode::Continuation) {
            return fail(&mut out, ProtocolError::ReservedBitsSet);
        }
        if f.corruption == Corruption::WrongMask {
            let e =
                if role == Role::Server { ProtocolError::UnmaskedFrame } else { ProtocolError::MaskedFrame };
            return fail(&mut out, e);
        }
        let len = f.payload.len();
        if f.opcode.is_control() {
            if len > MAX_CONTROL_PAYLOAD {
                return fail(&mut out, ProtocolError::ControlFrameTooLong);
            }
            if !f.fin {
                return fail(&mut out, ProtocolError::FragmentedControlFrame);
            }
        } else if len as u64 > limits.max_frame_size {
            return fail(&mut out, ProtocolError::FrameTooLarge);
        }
        match f.opcode {
            OpCode::Ping => out.push(Out::Ping(f.payload.clone())),
            OpCode::Pong => out.push(Out::Pong(f.payload.clone())),
            OpCode::Close => {
                match &f.payload[..] {
                    [] => out.push(Out::Close(None, String::new())),
                    [_] => return fail(&mut out, ProtocolError::ClosePayloadTooShort),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        if !sendable(code) {
                            return fail(&mut out, ProtocolError::InvalidCloseCode(code));
                        }
                        let Ok(reason) = std::str::from_utf8(reason) else {
                            return fail(&mut out, ProtocolError::InvalidUtf8);
                        };
                        out.push(Out::Close(Some(code), reason.to_owned()));
                    }
                }
                // Everything after the close frame is ignored.
                return out;
            }
            opcode => {
                match (opcode, &message) {
                    (OpCode::Continuation, None) => {
                        return fail(&mut out, ProtocolError::ContinuationWithoutStart)
                    }
                    (OpCode::Continuation, Some(_)) => {}
                    (_, Some(_)) => return fail(&mut out, ProtocolError::DataFrameInsideMessage),
                    (start, None) => {
                        let kind = if start == OpCode::Text { DataKind::Text } else { DataKind::Binary };
                        message = Some((kind, Vec::new()));
                        announced = 0;
                        compressed = rsv & 0b100 != 0;
                    }
                }
                announced += len as u64;
                if announced > limits.max_message_size {
                    return fail(&mut out, ProtocolError::MessageTooLarge);
                }
                let (kind, m) = message.as_mut().unwrap();
                m.extend_from_slice(&f.payload);
                if *kind == DataKind::Text && !compressed {
                    if let Err(e) = std::str::from_utf8(m) {
                        if e.error_len().is_some() || f.fin {
                            return fail(&mut out, ProtocolError::InvalidUtf8);
                        }
                    }
                }
                if f.fin {
                    let (kind, m) = message.take().unwrap();
                    out.push(Out::Message(kind, m));
                }
            }
        }
    }
    out
}

fn check_structured(u: &mut Unstructured<'_>) -> Result<Vec<Out>> {
    let role = if rare(u, 4)? { Role::Client } else { Role::Server };
    let big = 16 << 20;
    let limits = Limits {
        max_frame_size: *u.choose(&[big, 16, 64, 200, 1024])?,
        max_message_size: *u.choose(&[big, 16, 100, 300, 1024])?,
        allowed_rsv: if rare(u, 4)? { u.int_in_range(0..=7)? } else { 0 },
    };
    let pieces: Vec<usize> =
        (0..u.int_in_range(0..=4)?).map(|_| u.int_in_range(1..=300)).collect::<Result<_>>()?;
    let mut gen = Gen { u, frames: Vec::new() };
    for _ in 0..gen.u.int_in_range(0..=8)? {
        match gen.u.int_in_range(0..=15)? {
            0..=8 => gen.message()?,
            9 | 10 => gen.maybe_control()?,
            11 => gen.close()?,
            _ => gen.stray()?,
        }
        if gen.u.is_empty() {
            break;
        }
    }
    let frames = gen.frames;
    let wire = encode(&frames, role);
    let expected = model(&frames, role, &limits);
    let got = run(&wire, &pieces, role, &limits);
    if describe() {
        eprintln!("input: {role:?}, pieces {pieces:?}, {limits:?}\n  frames {frames:?}\n  yields {got:?}");
    }
    assert_same(
        &got,
        &expected,
        &format!("decoder vs model; {role:?}, pieces {pieces:?}, {limits:?}, frames {frames:?}"),
    );
    Ok(got)
}

/// Whether `THRONG_FUZZ_DESCRIBE` is set: then every input is printed as frames and outputs (run
/// the target on corpus files to see what they hold).
fn describe() -> bool {
    static DESCRIBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DESCRIBE.get_or_init(|| std::env::var_os("THRONG_FUZZ_DESCRIBE").is_some())
}

/// Runs one input; returns what the decoder yielded (for picking seeds), after checking it.
pub fn check(data: &[u8]) -> Vec<Out> {
    check_structured(&mut Unstructured::new(data)).unwrap_or_default()
}
