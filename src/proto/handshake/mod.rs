//! The HTTP/1.1 upgrade handshake of RFC 6455 §4, sans-IO.
//!
//! **Server side**: feed the read buffer to [`parse_request`] after every read. It answers
//! [`Parsed::Partial`] until the whole header block is there, then a borrowed [`UpgradeRequest`]
//! (or a [`HandshakeError`] whose [`status`](HandshakeError::status) is the answer to send with
//! [`write_error`]). Decide (path, origin, [`select_subprotocol`]), then [`write_accept`] or
//! [`write_rejection`].
//!
//! **Client side**: [`ClientRequest::write`] writes the GET and returns a [`ClientHandshake`];
//! feed the read buffer to [`ClientHandshake::parse_response`] until it is complete.
//!
//! Rules every parser here follows:
//! - **`len()` is the head only.** [`UpgradeRequest::len`] / [`ServerResponse::len`] count the
//!   bytes up to and including the blank line; `buf[len..]` are the first frame bytes a peer may
//!   have sent in the same read. Keep them.
//! - **Strict CRLF.** A bare LF line ending is rejected (400), never tolerated, so there is exactly
//!   one place where the head can end. A lone CR anywhere is a control character (400).
//! - **No obs-fold**: a header line starting with SP/HTAB is rejected (400).
//! - **Limits are checked while data is partial**: once the buffer holds more than
//!   [`RequestLimits::max_header_bytes`] without a complete head, the answer is 431, never
//!   `Partial`. Limits above [`MAX_HEAD_BYTES`] / [`MAX_HEADERS`] are clamped.
//! - **No allocation, no panic** on the parse path: headers are byte ranges into the caller's
//!   buffer, stored in a fixed table of [`MAX_HEADERS`] entries.
//! - The parsers rescan from the start on every call (like `httparse`), which is cheap for heads
//!   of a few hundred bytes and keeps them stateless.
//!
//! ```
//! use throng::proto::handshake::{parse_request, write_accept, Parsed, RequestLimits};
//!
//! let buf = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n\x81\x80";
//! let Parsed::Complete(req) = parse_request(buf, &RequestLimits::default()).unwrap() else {
//!     unreachable!("the head is complete");
//! };
//! assert_eq!((req.path(), req.query()), ("/chat", Some("room=1")));
//! assert_eq!(&buf[req.len()..], b"\x81\x80"); // the first frame bytes
//!
//! let protocol = req.select_subprotocol(&["superchat"]);
//! let mut out = Vec::new();
//! write_accept(&mut out, req.key().as_bytes(), protocol, &[]).unwrap();
//! assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! ```

mod accept;
mod client;
mod error;
mod head;
mod request;
mod response;

pub use accept::{accept_key, accept_key_str, WEBSOCKET_GUID};
pub use client::{ClientHandshake, ClientRequest, ServerResponse};
pub use error::{HandshakeError, Rejection};
pub use request::{parse_request, UpgradeRequest};
pub use response::{select_subprotocol, write_accept, write_error, write_rejection, Accept};

use std::fmt;

/// The most header lines a parsed head can hold (the size of the fixed header table).
pub const MAX_HEADERS: usize = 64;

/// The largest header block the parsers accept, whatever the limits say (offsets are 16-bit).
pub const MAX_HEAD_BYTES: usize = u16::MAX as usize;

/// The outcome of feeding a buffer to a push parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The head is complete; the value borrows from the buffer.
    Complete(T),
    /// More bytes are needed; call again with the same bytes plus what arrives next.
    Partial,
}

impl<T> Parsed<T> {
    /// Whether the head was complete.
    pub fn is_complete(&self) -> bool {
        matches!(self, Parsed::Complete(_))
    }

    /// The parsed value, or `None` when partial.
    pub fn complete(self) -> Option<T> {
        match self {
            Parsed::Complete(value) => Some(value),
            Parsed::Partial => None,
        }
    }
}

/// Limits on a head, applied to requests (server) and responses (client) alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest header block in bytes, request line and final blank line included (431 above it).
    /// Clamped to [`MAX_HEAD_BYTES`].
    pub max_header_bytes: usize,
    /// Most header lines (431 above it). Clamped to [`MAX_HEADERS`].
    pub max_headers: usize,
    /// Longest single line, CRLF excluded (431 above it).
    pub max_line: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_header_bytes: 8192, max_headers: MAX_HEADERS, max_line: 8192 }
    }
}

/// One header line as received: the name as sent (a token) and the value with surrounding
/// whitespace trimmed. Values may hold obs-text (bytes ≥ 0x80), never control characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header<'b> {
    /// The field name, original case.
    pub name: &'b str,
    /// The field value, trimmed.
    pub value: &'b [u8],
}

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.value.escape_ascii())
    }
}

#[cfg(test)]
mod tests;
