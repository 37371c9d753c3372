//! One WebSocket connection's protocol rules, for either role: frames in, what the application
//! must see out, and the control frames the rules call for sent through the caller.
//!
//! A [`Session`] holds the [`Decoder`] and where the close handshake stands (we sent our close,
//! the peer sent theirs, both, or we failed the connection). It decides, in one place for the
//! server engine and the clients alike:
//!
//! - a ping is answered with a pong carrying the same payload, unless we sent our close already;
//! - the peer's close is answered once, echoing its code (a close without a code is answered
//!   without one, RFC 6455 §5.5.1); once both closes went, the session is done;
//! - data arriving after our close is discarded;
//! - a protocol error is answered with a close carrying the error's
//!   [`close_code`](ProtocolError::close_code) and [`reason`](ProtocolError::reason), unless we
//!   sent a close already, and is reported to the caller;
//! - our own close (an application close, a shutdown, a timeout, a policy) goes out at most once,
//!   and [`Session::can_send`] says whether data and pings may still be sent.
//!
//! Sans-IO, in the shape of quinn-proto: [`Session::handle_read`] feeds it what arrived and
//! [`Session::close`] / [`Session::fail`] what the caller decided; what to do comes back as the
//! returned [`Item`] and as [`Transmit`] calls, made during those calls (a session holds nothing
//! to poll for later, so an idle one owns no buffer). It owns no buffer, socket, thread or clock:
//! bytes are decoded (and unmasked) in place in the caller's buffer, control frames are handed to
//! the caller's [`Transmit`], which frames them into whatever queue it owns ([`FrameWriter`]
//! appends them to a `Vec<u8>`), and deadlines (how long to wait for the peer's close) are the
//! caller's: the session needs no time.
//!
//! Call order:
//! 1. [`Session::new`] once the upgrade completed.
//! 2. For the bytes that arrived: [`Session::handle_read`] repeatedly on the unused part of the
//!    buffer until it returns `None` (keep the bytes after the used ones for the next read) or
//!    an error (the connection is failed; its close went to the [`Transmit`]).
//!    Each [`Item`] it returns is for the caller to act on: data pieces (see below), a ping
//!    (already answered), a pong, the peer's close (already answered when needed).
//! 3. Before sending data or a ping: [`Session::can_send`].
//! 4. To end the connection: [`Session::close`] (then wait for the peer's close, reading on with
//!    step 2, up to a deadline of the caller's) or [`Session::fail`] (nothing more is read).
//! 5. [`Session::is_done`] once nothing more will be read; [`Session::close_code`] is the code to
//!    report.
//!
//! Messages: a data message that arrived in one piece comes as one [`Item::Data`] with `first`
//! and `last` set, still in the caller's buffer: use it in place, no copy. A message arriving in
//! pieces comes as several, `first` on the first, `last` on the last: the caller appends each
//! piece to an assembly buffer it owns (under whatever budget and deadline it keeps) and, at
//! `last`, holds the whole message, which for text has been checked to be UTF-8.

use super::close::{CloseCode, ClosePayload, CLOSE_SENT, FAILED};
use super::decoder::{Decoder, Item, Limits};
use super::error::ProtocolError;
use super::frame::{encode_frame, OpCode, Role};

/// Where the caller sends the control frames a [`Session`] decides on.
pub trait Transmit {
    /// Sends a pong or a close frame whose payload (at most 125 bytes) the session built. The
    /// frame must be masked as the session's role requires ([`Role::send_mask`]).
    fn control(&mut self, opcode: OpCode, payload: &[u8]);
}

/// A [`Transmit`] that appends whole frames to a byte buffer, masked as `role` requires: for
/// callers that write the bytes themselves (the client, a load generator).
pub struct FrameWriter<'a> {
    out: &'a mut Vec<u8>,
    role: Role,
}

impl<'a> FrameWriter<'a> {
    /// Appends frames to `out` for a session of the given role.
    pub fn new(out: &'a mut Vec<u8>, role: Role) -> Self {
        Self { out, role }
    }
}

impl Transmit for FrameWriter<'_> {
    fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        encode_frame(self.out, true, opcode, self.role.send_mask(), payload);
    }
}

/// One connection's protocol state: the decoder and the close handshake. The same size as a
/// [`Decoder`] (32 bytes); no heap.
#[derive(Clone, Debug)]
pub struct Session {
    decoder: Decoder,
}

/// What [`Session::read_closing`] kept, without a borrow of the buffer (an item returned from
/// inside its decode loop would keep the buffer borrowed for the next turn): an item's bytes end
/// where the used bytes end, so a length is enough to find them again.
enum Kept {
    Pong(usize),
    Close { code: Option<CloseCode>, len: usize },
}

impl Kept {
    /// The item again, from the used bytes `used`.
    fn item(self, used: &[u8]) -> Item<'_> {
        let tail = |len: usize| &used[used.len().saturating_sub(len)..];
        match self {
            Kept::Pong(len) => Item::Pong(tail(len)),
            // The decoder checked the reason is UTF-8; the fallback is never taken.
            Kept::Close { code, len } => {
                Item::Close { code, reason: std::str::from_utf8(tail(len)).unwrap_or("") }
            }
        }
    }
}

impl Session {
    /// A session for the given side of a connection whose upgrade completed.
    pub fn new(role: Role) -> Self {
        Self { decoder: Decoder::new(role) }
    }

    /// The side of the connection this session speaks for.
    pub fn role(&self) -> Role {
        self.decoder.role()
    }

    fn has(&self, flag: u8) -> bool {
        self.decoder.close.flags & flag != 0
    }

    fn set(&mut self, flag: u8) {
        self.decoder.close.flags |= flag;
    }

    /// Keeps `code` as the one to report, unless one was kept already.
    fn record(&mut self, code: CloseCode) {
        if self.decoder.close.code == 0 {
            self.decoder.close.code = code.0;
        }
    }

    /// Decodes the next item the caller must see from `buf` (the bytes that arrived, not used
    /// yet), unmasking in place and applying the rules of the module doc on the way: pings are
    /// answered, the peer's close is echoed and data after our close is skipped, with the
    /// control frames going to `tx`.
    ///
    /// Returns how many bytes of `buf` were used and the item, or `None` when the bytes after the
    /// used ones are incomplete (keep them, call again once more arrived) or the session reads
    /// nothing more (after the peer's close or a failure, everything is used and dropped).
    ///
    /// A protocol error fails the session: a close with the error's code went to `tx` (unless we
    /// had sent one), the error is returned and later calls read nothing.
    // Inlined: on the hot path the session is a thin layer over the decoder.
    #[inline]
    pub fn handle_read<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
        tx: &mut impl Transmit,
    ) -> Result<(usize, Option<Item<'a>>), ProtocolError> {
        if self.has(FAILED) {
            return Ok((buf.len(), None));
        }
        if self.has(CLOSE_SENT) {
            return self.read_closing(buf, limits, tx);
        }
        // Open both ways, every item is handed out: the decoder's answer is ours (the hot path,
        // with nothing added but the control frames' answers).
        match self.decoder.decode(buf, limits) {
            Err(error) => {
                self.fail(error.close_code(), error.reason(), tx);
                Err(error)
            }
            Ok((used, item)) => {
                match item {
                    Some(Item::Ping(payload)) => tx.control(OpCode::Pong, payload),
                    Some(Item::Close { code, .. }) => self.peer_close(code, tx),
                    _ => {}
                }
                Ok((used, item))
            }
        }
    }

    /// The peer's close arrived: keep its code to report, answer it unless our close went.
    fn peer_close(&mut self, code: Option<CloseCode>, tx: &mut impl Transmit) {
        self.record(code.unwrap_or(CloseCode::NO_STATUS));
        if !self.has(CLOSE_SENT) {
            self.set(CLOSE_SENT);
            // Echo their code; a close without a code is answered without one.
            match code {
                Some(code) => tx.control(OpCode::Close, &code.0.to_be_bytes()),
                None => tx.control(OpCode::Close, &[]),
            }
        }
    }

    /// [`Session::handle_read`] after our close: data and pings are skipped (RFC 6455 §1.4: we
    /// are closing), so several items may be decoded before one is handed out.
    fn read_closing<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
        tx: &mut impl Transmit,
    ) -> Result<(usize, Option<Item<'a>>), ProtocolError> {
        let mut used = 0;
        loop {
            let kept = match self.decoder.decode(&mut buf[used..], limits) {
                Err(error) => {
                    self.fail(error.close_code(), error.reason(), tx);
                    return Err(error);
                }
                Ok((n, item)) => {
                    used += n;
                    match item {
                        None => return Ok((used, None)),
                        Some(Item::Data { .. } | Item::Ping(_)) => None,
                        Some(Item::Pong(payload)) => Some(Kept::Pong(payload.len())),
                        Some(Item::Close { code, reason }) => {
                            self.peer_close(code, tx);
                            Some(Kept::Close { code, len: reason.len() })
                        }
                    }
                }
            };
            if let Some(kept) = kept {
                return Ok((used, Some(kept.item(&buf[..used]))));
            }
        }
    }

    /// Starts our side of the close handshake: a close frame with `code` and `reason` (cut to
    /// 123 bytes at a character boundary) goes to `tx`, unless one was sent already. Returns
    /// whether it was sent. Then wait for the peer's close (up to a deadline of the caller's).
    pub fn close(&mut self, code: CloseCode, reason: &str, tx: &mut impl Transmit) -> bool {
        if self.has(CLOSE_SENT) {
            return false;
        }
        self.set(CLOSE_SENT);
        tx.control(OpCode::Close, ClosePayload::new(code, reason).as_bytes());
        true
    }

    /// Fails the connection: our close with `code` and `reason` (if none was sent), `code`
    /// kept to report (if none was), and nothing more is read.
    pub fn fail(&mut self, code: CloseCode, reason: &str, tx: &mut impl Transmit) {
        self.close(code, reason, tx);
        self.record(code);
        self.set(FAILED);
    }

    /// Whether data frames and pings may still be sent: not after our close.
    pub fn can_send(&self) -> bool {
        !self.has(CLOSE_SENT)
    }

    /// Whether our close frame went out (our own, or the answer to the peer's).
    pub fn close_sent(&self) -> bool {
        self.has(CLOSE_SENT)
    }

    /// Whether the peer's close frame arrived.
    pub fn peer_closed(&self) -> bool {
        self.decoder.is_closed()
    }

    /// Whether both close frames went (a clean close).
    pub fn close_handshake_done(&self) -> bool {
        self.has(CLOSE_SENT) && self.decoder.is_closed()
    }

    /// Whether nothing more will be read: both closes went, or the connection was failed.
    pub fn is_done(&self) -> bool {
        self.has(FAILED) || self.close_handshake_done()
    }

    /// Whether the connection was failed (a protocol error, or [`Session::fail`]).
    pub fn is_failed(&self) -> bool {
        self.has(FAILED)
    }

    /// The code to report for the connection's end, once known: the peer's close code (1005 when
    /// its close had none) when its close arrived before a failure, else the failure's code.
    /// `None` while neither happened (a dropped connection reports 1006).
    pub fn close_code(&self) -> Option<CloseCode> {
        let code = self.decoder.close.code;
        (code != 0).then_some(CloseCode(code))
    }

    /// Whether a message has started and not ended (its pieces are in the caller's buffer).
    pub fn in_message(&self) -> bool {
        self.decoder.in_message()
    }

    /// Whether the message of the last [`Item::Data`] is compressed ([`Decoder::compressed`]).
    pub fn compressed(&self) -> bool {
        self.decoder.compressed()
    }
}

#[cfg(test)]
mod tests;
