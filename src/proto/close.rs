//! Close codes and close payloads. The close handshake itself is the [`Session`](super::Session)'s.

use super::error::ProtocolError;
use super::utf8;

/// A close status code (RFC 6455 §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present. Never sent on the wire.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection dropped without a close frame. Never sent on the wire.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: payload data inconsistent with the message type (invalid UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation (e.g. a slow consumer over its outbound cap).
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: message too big.
    pub const TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);

    /// Whether a peer may send this code in a close frame: 1000–1003, 1007–1011, 3000–4999.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
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
    fn sendable_codes() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(CloseCode(code).is_sendable(), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(code).is_sendable(), "{code}");
        }
    }

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
