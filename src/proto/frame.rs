//! Frame headers: incremental decode from a borrowed buffer, and encode into a caller buffer.
//!
//! ```text
//!  0                   1                   2                   3
//!  F R R R opcode  M len7   [len16 | len64]          [masking key]     payload …
//! ```
//! A header is 2 to 14 bytes. [`FrameHeader::decode`] answers `Ok(None)` while the header is not
//! complete, so a header cut between reads is never an error.

use super::error::ProtocolError;

/// Which side of the connection we are: decides which frames must be masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We accept connections: frames we receive must be masked, frames we send are not.
    Server,
    /// We dial: frames we receive must not be masked, frames we send are.
    Client,
}

impl Role {
    /// The masking key for a frame we send: a fresh random one for a client (RFC 6455 §5.3),
    /// none for a server. The one place that decides masking per role.
    pub fn send_mask(self) -> Option<[u8; 4]> {
        match self {
            Role::Server => None,
            Role::Client => Some(random_mask()),
        }
    }
}

/// A frame opcode (RFC 6455 §5.2). Reserved opcodes are never represented: they are errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// Continues a fragmented message.
    Continuation = 0x0,
    /// Starts a text message.
    Text = 0x1,
    /// Starts a binary message.
    Binary = 0x2,
    /// Close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xa,
}

impl OpCode {
    /// Parses the low four bits of the first header byte.
    pub fn from_bits(bits: u8) -> Result<Self, ProtocolError> {
        Ok(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The largest header: 2 bytes + 8 bytes of length + 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The payload limit of control frames.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of the message.
    pub fin: bool,
    /// RSV1..RSV3 as the three low bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of the header, `Ok(Some((header, header_len)))`
    /// otherwise. Only what the header alone decides is checked here (reserved opcode, 64-bit length
    /// with the top bit set); role, RSV and size rules are the decoder's.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let (first, second) = match buf {
            [a, b, ..] => (*a, *b),
            _ => return Ok(None),
        };
        let opcode = OpCode::from_bits(first & 0x0f)?;
        let masked = second & 0x80 != 0;
        let (payload_len, mut at) = match second & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(b);
                    let len = u64::from_be_bytes(len);
                    if len >> 63 != 0 {
                        return Err(ProtocolError::LengthOverflow);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            match buf.get(at..at + 4) {
                Some(k) => {
                    at += 4;
                    Some([k[0], k[1], k[2], k[3]])
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        let header = Self { fin: first & 0x80 != 0, rsv: (first >> 4) & 0x7, opcode, mask, payload_len };
        Ok(Some((header, at)))
    }

    /// The encoded size of this header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes this header into `out` and returns its length. Lengths use the shortest form.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// Encodes the header of an unfragmented, unextended frame into `out`; returns its length.
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> usize {
    FrameHeader { fin, rsv: 0, opcode, mask, payload_len }.encode(out)
}

/// Appends a whole frame (header and payload, masked when `mask` is given) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload: &[u8]) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = encode_header(&mut header, fin, opcode, mask, payload.len() as u64);
    out.reserve(header_len + payload.len());
    out.extend_from_slice(&header[..header_len]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        super::mask::apply_mask(&mut out[start..], key, 0);
    }
}

/// A fresh random masking key for a client frame.
///
/// Drawn from a per-thread generator seeded from the OS, so a client does not pay a system call
/// per frame; the key only has to be unpredictable to scripts in the peer's browser, not secret.
pub fn random_mask() -> [u8; 4] {
    fastrand::u32(..).to_ne_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length_form_masked_and_not() {
        for len in [0u64, 1, 125, 126, 127, 0xffff, 0x1_0000, 1 << 40, (1 << 63) - 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                for opcode in [OpCode::Text, OpCode::Binary, OpCode::Continuation, OpCode::Ping] {
                    let header =
                        FrameHeader { fin: len % 2 == 0, rsv: 0b101, opcode, mask, payload_len: len };
                    let mut out = [0u8; MAX_HEADER_LEN];
                    let n = header.encode(&mut out);
                    assert_eq!(n, header.encoded_len());
                    assert_eq!(FrameHeader::decode(&out[..n]).unwrap(), Some((header, n)));
                    for cut in 0..n {
                        assert_eq!(FrameHeader::decode(&out[..cut]).unwrap(), None, "cut {cut} of {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn shortest_length_form_is_used() {
        let mut out = [0u8; MAX_HEADER_LEN];
        assert_eq!(encode_header(&mut out, true, OpCode::Binary, None, 125), 2);
        assert_eq!(encode_header(&mut out, true, OpCode::Binary, None, 126), 4);
        assert_eq!(encode_header(&mut out, true, OpCode::Binary, None, 65535), 4);
        assert_eq!(encode_header(&mut out, true, OpCode::Binary, None, 65536), 10);
        assert_eq!(encode_header(&mut out, true, OpCode::Binary, Some([0; 4]), 65536), 14);
    }

    #[test]
    fn reserved_opcodes_are_errors() {
        for op in (3..=7).chain(11..=15) {
            assert_eq!(FrameHeader::decode(&[0x80 | op, 0]), Err(ProtocolError::ReservedOpcode(op)));
        }
    }

    #[test]
    fn length_with_top_bit_is_an_error() {
        let buf = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(FrameHeader::decode(&buf), Err(ProtocolError::LengthOverflow));
    }

    #[test]
    fn encode_frame_masks_payload() {
        let mut out = Vec::new();
        encode_frame(&mut out, true, OpCode::Text, Some([0xff; 4]), b"\x00\x01");
        assert_eq!(out, [0x81, 0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
    }
}
