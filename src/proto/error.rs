//! Errors of the frame layer: each one knows the close code it is answered with.

use std::fmt;

use super::code::CloseCode;

/// A violation of RFC 6455 by the peer, or a configured limit the peer exceeded.
///
/// Every variant maps to the close code the connection is failed with ([`ProtocolError::close_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// An RSV bit is set that no negotiated extension claimed.
    ReservedBitsSet,
    /// Opcode 3–7 or 11–15.
    ReservedOpcode(u8),
    /// A client sent a frame without a mask (RFC 6455 §5.1).
    UnmaskedFrame,
    /// A server sent a masked frame (RFC 6455 §5.1).
    MaskedFrame,
    /// A 64-bit payload length with the most significant bit set.
    LengthOverflow,
    /// A control frame with more than 125 bytes of payload.
    ControlFrameTooLong,
    /// A control frame without FIN.
    FragmentedControlFrame,
    /// A continuation frame while no fragmented message was in progress.
    ContinuationWithoutStart,
    /// A text or binary frame while a fragmented message was still in progress.
    DataFrameInsideMessage,
    /// A frame larger than the configured maximum frame size.
    FrameTooLarge,
    /// A message larger than the configured maximum message size.
    MessageTooLarge,
    /// A text message (or a close reason) that is not UTF-8.
    InvalidUtf8,
    /// A compressed message (permessage-deflate) that is not valid deflate data.
    InvalidCompressedData,
    /// A close frame whose payload is exactly one byte.
    ClosePayloadTooShort,
    /// A close code that may not be sent on the wire (below 1000, 1004–1006, 1015, undefined).
    InvalidCloseCode(u16),
}

impl ProtocolError {
    /// The close code the connection is failed with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge | Self::MessageTooLarge => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short human reason, suitable as a close reason (always well under 123 bytes).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ReservedBitsSet => "reserved bits set",
            Self::ReservedOpcode(_) => "reserved opcode",
            Self::UnmaskedFrame => "client frame not masked",
            Self::MaskedFrame => "server frame masked",
            Self::LengthOverflow => "payload length overflow",
            Self::ControlFrameTooLong => "control frame too long",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::ContinuationWithoutStart => "continuation without start",
            Self::DataFrameInsideMessage => "data frame inside fragmented message",
            Self::FrameTooLarge => "frame too large",
            Self::MessageTooLarge => "message too large",
            Self::InvalidUtf8 => "invalid utf-8",
            Self::InvalidCompressedData => "invalid compressed data",
            Self::ClosePayloadTooShort => "close payload of one byte",
            Self::InvalidCloseCode(_) => "invalid close code",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}
