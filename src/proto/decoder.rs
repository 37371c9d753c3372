//! The receive side of a connection: frames in, message pieces out, every RFC 6455 rule enforced.
//!
//! [`Decoder::decode`] takes the bytes that arrived (in the loop's shared read buffer), unmasks
//! payloads in place and returns one [`Item`] at a time with the number of bytes it used. A data
//! frame's payload is handed out as it arrives, in chunks, so that a text message is checked for
//! UTF-8 as soon as its bytes are seen and a large message never sits twice in memory; control
//! frames are handed out whole. When the bytes end inside a header or a control frame, `decode`
//! returns `None`: the caller keeps the unused bytes (at most 139) and calls again with more.
//!
//! The decoder is small (a few words) and holds no buffer: it is made to live in every connection.

use super::close::{parse_close_payload, CloseBits, CloseCode};
use super::deflate::RSV1;
use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode, Role, MAX_CONTROL_PAYLOAD};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Size limits and negotiated extension bits. Shared by all connections of a loop, so not stored
/// in each decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame payload accepted; larger frames fail with 1009.
    pub max_frame_size: u64,
    /// The largest message accepted (all its frames together); larger ones fail with 1009.
    pub max_message_size: u64,
    /// RSV bits an extension claimed (RSV1 = 0b100); any other set bit fails with 1002.
    /// RSV1 is permessage-deflate's ([`deflate::RSV1`](super::deflate::RSV1)): allowed on the
    /// first frame of a data message only (on a control or continuation frame it fails with
    /// 1002), it marks the message compressed ([`Decoder::compressed`]).
    pub allowed_rsv: u8,
}

impl Default for Limits {
    /// 16 MiB frames and messages, no extension.
    fn default() -> Self {
        Self { max_frame_size: 16 << 20, max_message_size: 16 << 20, allowed_rsv: 0 }
    }
}

/// The type of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// UTF-8 text.
    Text,
    /// Binary.
    Binary,
}

impl DataKind {
    /// The opcode that starts a message of this kind.
    pub fn opcode(self) -> OpCode {
        match self {
            DataKind::Text => OpCode::Text,
            DataKind::Binary => OpCode::Binary,
        }
    }
}

/// One thing the decoder found in the bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A piece of a data message, unmasked (and for text, UTF-8 checked so far).
    ///
    /// `first && last` means the whole message arrived in one piece: it can be used in place.
    Data {
        /// Text or binary: the kind of the message this piece belongs to.
        kind: DataKind,
        /// The payload bytes, unmasked in the caller's buffer.
        chunk: &'a [u8],
        /// The first piece of its message.
        first: bool,
        /// The last piece of its message: the message is complete (and for text, valid UTF-8).
        last: bool,
    },
    /// A ping with its payload (at most 125 bytes): answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong with its payload.
    Pong(&'a [u8]),
    /// The peer's close frame: `code` is `None` when it carried no code (report it as 1005).
    Close {
        /// The peer's close code.
        code: Option<CloseCode>,
        /// The peer's reason, valid UTF-8.
        reason: &'a str,
    },
}

const IN_FRAME: u8 = 1 << 0;
const FRAME_FIN: u8 = 1 << 1;
const FRAME_MASKED: u8 = 1 << 2;
const IN_MESSAGE: u8 = 1 << 3;
const MESSAGE_TEXT: u8 = 1 << 4;
const FIRST_PENDING: u8 = 1 << 5;
const CLOSED: u8 = 1 << 6;
const ROLE_CLIENT: u8 = 1 << 7;

/// The per-connection receive state. 32 bytes; no heap.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// Payload bytes of the current data frame not seen yet.
    frame_remaining: u64,
    /// Payload bytes of the current message so far, announced by frame headers.
    message_len: u64,
    mask: [u8; 4],
    utf8: Utf8Validator,
    mask_phase: u8,
    flags: u8,
    /// The current message is compressed (its first frame had RSV1): its pieces are deflate
    /// data, checked for UTF-8 only once inflated, by the caller.
    compressed: bool,
    /// The close handshake of the [`Session`](super::session::Session) that owns this decoder.
    /// The decoder never reads it: it sits here, in what would otherwise be padding, so that a
    /// session is no larger than its decoder (the engine keeps one per connection).
    pub(super) close: CloseBits,
}

impl Decoder {
    /// A decoder for the given side of the connection.
    pub fn new(role: Role) -> Self {
        let flags = if role == Role::Client { ROLE_CLIENT } else { 0 };
        Self {
            frame_remaining: 0,
            message_len: 0,
            mask: [0; 4],
            utf8: Utf8Validator::new(),
            mask_phase: 0,
            flags,
            compressed: false,
            close: CloseBits::default(),
        }
    }

    /// The side of the connection this decoder reads for.
    pub fn role(&self) -> Role {
        if self.has(ROLE_CLIENT) {
            Role::Client
        } else {
            Role::Server
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Whether the peer's close frame was received (everything after it is discarded).
    pub fn is_closed(&self) -> bool {
        self.has(CLOSED)
    }

    /// Whether a message has started and not ended (its pieces must be kept by the caller).
    pub fn in_message(&self) -> bool {
        self.has(IN_MESSAGE)
    }

    /// Whether the message the last [`Item::Data`] belongs to is compressed (permessage-deflate):
    /// its pieces are deflate data to inflate (see [`crate::proto::deflate::Inflater`]), and a
    /// text message is checked for UTF-8 only then.
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Decodes the next item from `buf`, unmasking in place.
    ///
    /// Returns how many bytes of `buf` were used and the item found, or `None` when the bytes after
    /// the used ones are an incomplete header or control frame: keep them and call again once more
    /// bytes arrived. On error the connection must be failed with [`ProtocolError::close_code`].
    pub fn decode<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
    ) -> Result<(usize, Option<Item<'a>>), ProtocolError> {
        if self.has(CLOSED) {
            // Nothing may follow a close frame; what does is dropped.
            return Ok((buf.len(), None));
        }
        if self.has(IN_FRAME) {
            return self.payload(buf, 0);
        }
        let Some((header, header_len)) = FrameHeader::decode(buf)? else {
            return Ok((0, None));
        };
        self.check_header(&header, limits)?;
        if header.opcode.is_control() {
            return self.control(buf, header, header_len);
        }
        self.start_data_frame(&header, limits)?;
        self.payload(buf, header_len)
    }

    fn check_header(&self, header: &FrameHeader, limits: &Limits) -> Result<(), ProtocolError> {
        if header.rsv & !limits.allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        // permessage-deflate marks a message on its first frame only (RFC 7692 §6.1).
        if header.rsv & RSV1 != 0 && (header.opcode.is_control() || header.opcode == OpCode::Continuation) {
            return Err(ProtocolError::ReservedBitsSet);
        }
        match (self.has(ROLE_CLIENT), header.mask.is_some()) {
            (false, false) => return Err(ProtocolError::UnmaskedFrame),
            (true, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
        } else if header.payload_len > limits.max_frame_size {
            return Err(ProtocolError::FrameTooLarge);
        }
        Ok(())
    }

    fn control<'a>(
        &mut self,
        buf: &'a mut [u8],
        header: FrameHeader,
        header_len: usize,
    ) -> Result<(usize, Option<Item<'a>>), ProtocolError> {
        // Bounded by the 125-byte check above.
        let total = header_len + header.payload_len as usize;
        let Some(frame) = buf.get_mut(..total) else {
            return Ok((0, None));
        };
        let payload = &mut frame[header_len..];
        if let Some(key) = header.mask {
            apply_mask(payload, key, 0);
        }
        let payload: &'a [u8] = payload;
        let item = match header.opcode {
            OpCode::Ping => Item::Ping(payload),
            OpCode::Pong => Item::Pong(payload),
            _ => {
                let parsed = parse_close_payload(payload)?;
                self.set(CLOSED, true);
                match parsed {
                    Some((code, reason)) => Item::Close { code: Some(code), reason },
                    None => Item::Close { code: None, reason: "" },
                }
            }
        };
        Ok((total, Some(item)))
    }

    fn start_data_frame(&mut self, header: &FrameHeader, limits: &Limits) -> Result<(), ProtocolError> {
        match (header.opcode, self.has(IN_MESSAGE)) {
            (OpCode::Continuation, false) => return Err(ProtocolError::ContinuationWithoutStart),
            (OpCode::Continuation, true) => {}
            (_, true) => return Err(ProtocolError::DataFrameInsideMessage),
            (opcode, false) => {
                self.set(IN_MESSAGE, true);
                self.set(MESSAGE_TEXT, opcode == OpCode::Text);
                self.set(FIRST_PENDING, true);
                self.compressed = header.rsv & RSV1 != 0;
                self.message_len = 0;
                self.utf8.reset();
            }
        }
        self.message_len = self.message_len.saturating_add(header.payload_len);
        if self.message_len > limits.max_message_size {
            return Err(ProtocolError::MessageTooLarge);
        }
        self.frame_remaining = header.payload_len;
        self.mask = header.mask.unwrap_or([0; 4]);
        self.mask_phase = 0;
        self.set(FRAME_MASKED, header.mask.is_some());
        self.set(FRAME_FIN, header.fin);
        self.set(IN_FRAME, true);
        Ok(())
    }

    /// Hands out the payload of the current data frame found at `buf[start..]`.
    fn payload<'a>(
        &mut self,
        buf: &'a mut [u8],
        start: usize,
    ) -> Result<(usize, Option<Item<'a>>), ProtocolError> {
        let available = buf.len().saturating_sub(start);
        let take =
            usize::try_from(self.frame_remaining).map_or(available, |remaining| remaining.min(available));
        if take == 0 && self.frame_remaining > 0 {
            return Ok((start, None));
        }
        let chunk = &mut buf[start..start + take];
        if self.has(FRAME_MASKED) {
            self.mask_phase = apply_mask(chunk, self.mask, usize::from(self.mask_phase)) as u8;
        }
        self.frame_remaining -= take as u64;
        let text = self.has(MESSAGE_TEXT);
        // A compressed text message is checked once inflated.
        let check_utf8 = text && !self.compressed;
        if check_utf8 {
            self.utf8.feed(chunk).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let frame_done = self.frame_remaining == 0;
        let last = frame_done && self.has(FRAME_FIN);
        if frame_done {
            self.set(IN_FRAME, false);
        }
        if last {
            self.set(IN_MESSAGE, false);
            if check_utf8 {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        let first = self.has(FIRST_PENDING);
        self.set(FIRST_PENDING, false);
        let kind = if text { DataKind::Text } else { DataKind::Binary };
        Ok((start + take, Some(Item::Data { kind, chunk, first, last })))
    }
}

#[cfg(test)]
mod tests;
