//! What a publish looks like on a Redis channel: a 12-byte header naming the node that
//! published it and the message kind, then the payload as it is.
//!
//! ```text
//!  0      1      2        3      4 .. 12          12 ..
//!  0x00   'T'    version  kind   node id (BE u64)  payload
//!                (1)      (1 text, 2 binary)
//! ```
//! A node skips the copies it published itself (it delivered them locally already). A payload
//! without the header (a backend's own `PUBLISH throng:ch:news hello`) is delivered as text when
//! it is UTF-8 and as binary otherwise, so other programs can publish through Redis directly.
//!
//! Public (hidden) only so that the fuzz target `broker_envelope` can reach it.

use throng::proto::OpCode;
use throng::Message;

const MAGIC: [u8; 2] = [0x00, b'T'];
const VERSION: u8 = 1;
const TEXT: u8 = 1;
const BINARY: u8 = 2;
/// Header bytes before the payload.
pub const HEADER_LEN: usize = 12;

/// Frames `message` from `node` for Redis.
pub fn encode(node: u64, message: &Message) -> Vec<u8> {
    let kind = match message {
        Message::Text(_) => TEXT,
        Message::Binary(_) => BINARY,
    };
    let payload = message.as_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A message read from Redis.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The publishing node; `None` for a payload published without the header.
    pub node: Option<u64>,
    /// Text or binary.
    pub opcode: OpCode,
    /// The message, as the clients receive it.
    pub payload: &'a [u8],
}

/// Why a message from Redis was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// A header from a newer (or broken) node.
    Header,
    /// Marked as text but not UTF-8.
    Utf8,
}

/// Reads a message taken from Redis; never panics, whatever `bytes` holds.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, Malformed> {
    if !bytes.starts_with(&MAGIC) {
        let opcode = if std::str::from_utf8(bytes).is_ok() { OpCode::Text } else { OpCode::Binary };
        return Ok(Decoded { node: None, opcode, payload: bytes });
    }
    let header = bytes.get(..HEADER_LEN).ok_or(Malformed::Header)?;
    let payload = &bytes[HEADER_LEN..];
    if header[2] != VERSION {
        return Err(Malformed::Header);
    }
    let opcode = match header[3] {
        TEXT => OpCode::Text,
        BINARY => OpCode::Binary,
        _ => return Err(Malformed::Header),
    };
    if opcode == OpCode::Text && std::str::from_utf8(payload).is_err() {
        return Err(Malformed::Utf8);
    }
    let mut node = [0u8; 8];
    node.copy_from_slice(&header[4..HEADER_LEN]);
    Ok(Decoded { node: Some(u64::from_be_bytes(node)), opcode, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let text = encode(7, &Message::Text("héllo".into()));
        assert_eq!(
            decode(&text),
            Ok(Decoded { node: Some(7), opcode: OpCode::Text, payload: "héllo".as_bytes() })
        );
        let binary = encode(u64::MAX, &Message::Binary(vec![0, 0xff]));
        assert_eq!(
            decode(&binary),
            Ok(Decoded { node: Some(u64::MAX), opcode: OpCode::Binary, payload: &[0, 0xff] })
        );
        let empty = encode(1, &Message::Text(String::new()));
        assert_eq!(empty.len(), HEADER_LEN);
        assert_eq!(decode(&empty).unwrap().payload, b"");
    }

    #[test]
    fn foreign_payloads_are_delivered_as_they_are() {
        assert_eq!(decode(b"hello"), Ok(Decoded { node: None, opcode: OpCode::Text, payload: b"hello" }));
        assert_eq!(decode(b""), Ok(Decoded { node: None, opcode: OpCode::Text, payload: b"" }));
        let raw = [0xc3, 0x28];
        assert_eq!(decode(&raw), Ok(Decoded { node: None, opcode: OpCode::Binary, payload: &raw }));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(decode(&[0x00, b'T', 1]), Err(Malformed::Header));
        let mut bad_version = encode(1, &Message::Text("x".into()));
        bad_version[2] = 9;
        assert_eq!(decode(&bad_version), Err(Malformed::Header));
        let mut bad_kind = encode(1, &Message::Text("x".into()));
        bad_kind[3] = 3;
        assert_eq!(decode(&bad_kind), Err(Malformed::Header));
        let mut bad_text = encode(1, &Message::Binary(vec![0xff]));
        bad_text[3] = TEXT;
        assert_eq!(decode(&bad_text), Err(Malformed::Utf8));
    }
}
