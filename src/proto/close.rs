//! Close payloads and the bits of close-handshake state a session keeps; the handshake
//! rules themselves are the [`Session`](super::Session)'s. Close codes are in `code.rs`.

pub use super::code::CloseCode;
use super::error::ProtocolError;
use super::utf8;

/// We sent our close frame (our own, or the answer to theirs).
pub(super) const CLOSE_SENT: u8 = 1 << 0;
/// The connection was failed: nothing more is read.
pub(super) const FAILED: u8 = 1 << 1;

/// The close-handshake state of a [`Session`](super::Session): what it sent and the code to
/// report. Kept inside its [`Decoder`](super::Decoder) (see its `close` field), whose padding
/// it fills, so that a session is no larger than a decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CloseBits {
    pub(super) flags: u8,
    /// The close code to report (0: none yet).
    pub(super) code: u16,
}

/// The longest close reason: a control payload is at most 125 bytes, two of which are the code.
pub const MAX_REASON_LEN: usize = 123;

/// Parses a close frame's payload (already unmasked). `None` means no code was given (1005).
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::ClosePayloadTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            utf8::validate(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            // Validated just above; the conversion cannot fail.
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Writes a close payload (code and reason, the reason cut at a character boundary to fit) into `out`.
pub fn write_close_payload(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    out.extend_from_slice(ClosePayload::new(code, reason).as_bytes());
}

/// A close payload built on the stack: the code and the reason cut to fit ([`truncate_reason`]).
pub struct ClosePayload {
    bytes: [u8; 2 + MAX_REASON_LEN],
    len: usize,
}

impl ClosePayload {
    /// The payload for `code` and `reason`.
    pub fn new(code: CloseCode, reason: &str) -> Self {
        let reason = truncate_reason(reason).as_bytes();
        let mut bytes = [0u8; 2 + MAX_REASON_LEN];
        bytes[..2].copy_from_slice(&code.0.to_be_bytes());
        bytes[2..2 + reason.len()].copy_from_slice(reason);
        Self { bytes, len: 2 + reason.len() }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Cuts `reason` to at most [`MAX_REASON_LEN`] bytes at a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payload_rules() {
        assert_eq!(parse_close_payload(b""), Ok(None));
        assert_eq!(parse_close_payload(b"\x03"), Err(ProtocolError::ClosePayloadTooShort));
        assert_eq!(parse_close_payload(b"\x03\xe8"), Ok(Some((CloseCode::NORMAL, ""))));
        assert_eq!(parse_close_payload(b"\x03\xe9bye"), Ok(Some((CloseCode::GOING_AWAY, "bye"))));
        assert_eq!(parse_close_payload(b"\x03\xec"), Err(ProtocolError::InvalidCloseCode(1004)));
        assert_eq!(parse_close_payload(b"\x03\xed"), Err(ProtocolError::InvalidCloseCode(1005)));
        assert_eq!(parse_close_payload(b"\x03\xee"), Err(ProtocolError::InvalidCloseCode(1006)));
        assert_eq!(parse_close_payload(b"\x03\xf7"), Err(ProtocolError::InvalidCloseCode(1015)));
        assert_eq!(parse_close_payload(b"\x00\x00"), Err(ProtocolError::InvalidCloseCode(0)));
        assert_eq!(parse_close_payload(b"\x03\xe8\xff"), Err(ProtocolError::InvalidUtf8));
        assert_eq!(ProtocolError::InvalidCloseCode(1004).close_code(), CloseCode::PROTOCOL_ERROR);
        assert_eq!(ProtocolError::ClosePayloadTooShort.close_code(), CloseCode::PROTOCOL_ERROR);
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn reason_is_truncated_at_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert_eq!(cut.len(), 122);
        let mut out = Vec::new();
        write_close_payload(&mut out, CloseCode::NORMAL, &long);
        assert!(out.len() <= 125);
        assert!(parse_close_payload(&out).is_ok());
    }
}
