//! An open client connection: masked frames out, decoded messages in, the close handshake.

use std::borrow::Borrow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use super::error::{io_error, is_timeout};
use super::stream::Stream;
use super::{ClientError, ClientOptions};
use crate::proto::deflate::{Deflater, Inflater, Params, RSV1};
use crate::proto::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::proto::mask::apply_mask;
use crate::proto::Message;
use crate::proto::{CloseCode, DataKind, FrameWriter, Item, Limits, OpCode, ProtocolError, Role, Session};

/// Size of the read buffer. Data payloads are handed out as they arrive, so between reads it only
/// keeps an unfinished header or control frame (at most 139 bytes).
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// Frames up to this size (header included) go out in one `write`; larger ones are masked and
/// written in pieces of this size, so a large send never holds a second copy of the payload.
const WRITE_CHUNK: usize = 256 * 1024;

/// The compressed-message buffer is kept between sends up to this capacity; a larger one (a
/// large message went out) is freed after its send.
const KEEP_COMPRESSED: usize = WRITE_CHUNK;

/// The deflate level messages are compressed at (zlib's default).
const DEFLATE_LEVEL: u8 = 6;

/// Called with the payload of every pong that arrives.
type PongHandler = Box<dyn FnMut(&[u8]) + Send>;

/// The permessage-deflate state of a connection that negotiated it: one compressor and one
/// inflater, each keeping its window between messages unless the parameters say otherwise.
struct Deflate {
    params: Params,
    deflater: Deflater,
    inflater: Inflater,
    /// The compressed form of the message being sent.
    out: Vec<u8>,
}

impl Deflate {
    fn new(params: Params) -> Self {
        Self {
            params,
            // Our messages may only refer back as far as the window the server inflates with.
            deflater: Deflater::new(DEFLATE_LEVEL, params.client_max_window_bits),
            inflater: Inflater::new(params.server_max_window_bits),
            out: Vec::new(),
        }
    }

    /// Inflates one whole compressed message (its frames' payloads joined), at most `limit`
    /// bytes of it; a text message is checked to be UTF-8.
    fn inflate(&mut self, kind: DataKind, compressed: &[u8], limit: u64) -> Result<Message, ProtocolError> {
        let mut out = Vec::new();
        let reset = self.params.server_no_context_takeover;
        self.inflater.inflate(compressed, kind, limit, &mut out, reset)?;
        Ok(Message::from_parts(kind, out))
    }
}

/// Inflates a received compressed message with the connection's state.
fn inflate(
    deflate: Option<&mut Deflate>,
    kind: DataKind,
    compressed: &[u8],
    limit: u64,
) -> Result<Message, ProtocolError> {
    match deflate {
        Some(deflate) => deflate.inflate(kind, compressed, limit),
        // The decoder takes RSV1 only when permessage-deflate was agreed, which made the state.
        None => Err(ProtocolError::ReservedBitsSet),
    }
}

/// An open WebSocket connection from [`connect`](super::connect). Blocking; one caller at a time.
///
/// Frames are sent masked with a fresh key, each in one `write` (up to 256 KiB). Received frames
/// are decoded from one 64 KiB read buffer; pings are answered while [`recv`](Self::recv) runs, so
/// keep calling it (a [`read_timeout`](ClientOptions::read_timeout) bounds each call).
///
/// With permessage-deflate agreed ([`ClientOptions::deflate`], [`compression`](Self::compression)),
/// every data message is sent compressed and compressed messages are inflated on receipt.
///
/// Dropping the connection closes the socket without a close handshake; [`close`](Self::close)
/// does it properly.
///
/// A `wss://` connection runs the same way over TLS; closing it (or its end, whoever started
/// it) sends TLS close_notify before the TCP shutdown.
pub struct Connection {
    stream: Stream,
    /// The protocol rules: pings answered, the close handshake, failures.
    session: Session,
    limits: Limits,
    /// Bytes `pos..filled` were read and not decoded yet.
    rbuf: Box<[u8]>,
    pos: usize,
    filled: usize,
    /// The data message being assembled from its pieces.
    message: Vec<u8>,
    /// The frame (or frame piece) being written, or the control frames the session sent.
    wbuf: Vec<u8>,
    close_timeout: Duration,
    /// How the connection ended (code, reason), once it has: every later call reports it.
    ended: Option<(u16, String)>,
    subprotocol: Option<String>,
    on_pong: Option<PongHandler>,
    /// What permessage-deflate agreement the handshake reached, if any.
    compression: Option<Params>,
    /// The compressor and inflater, while the connection is open and compression was agreed.
    deflate: Option<Box<Deflate>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.stream.tcp().peer_addr().ok())
            .field("tls", &matches!(self.stream, Stream::Tls(_)))
            .field("subprotocol", &self.subprotocol)
            .field("compression", &self.compression)
            .field("session", &self.session)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection whose handshake completed; `buf[unread]` are frame bytes already received.
    pub(crate) fn new(
        stream: Stream,
        buf: Box<[u8]>,
        unread: Range<usize>,
        subprotocol: Option<String>,
        compression: Option<Params>,
        options: &ClientOptions,
    ) -> Self {
        Self {
            stream,
            session: Session::new(Role::Client),
            limits: Limits {
                max_frame_size: options.max_frame_size,
                max_message_size: options.max_message_size,
                allowed_rsv: if compression.is_some() { RSV1 } else { 0 },
            },
            rbuf: buf,
            pos: unread.start,
            filled: unread.end,
            message: Vec::new(),
            wbuf: Vec::new(),
            close_timeout: options.close_timeout,
            ended: None,
            subprotocol,
            on_pong: None,
            compression,
            deflate: compression.map(|params| Box::new(Deflate::new(params))),
        }
    }

    /// The permessage-deflate parameters agreed with the server, or `None` when the connection
    /// runs uncompressed ([`ClientOptions::deflate`] was off, or the server declined).
    pub fn compression(&self) -> Option<Params> {
        self.compression
    }

    /// The subprotocol the server chose among the offered ones, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Our end of the TCP connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp().local_addr()
    }

    /// The server's end of the TCP connection.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp().peer_addr()
    }

    /// Changes the limit on each blocking read in [`recv`](Self::recv) (`None`: wait forever).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.tcp().set_read_timeout(timeout)
    }

    /// Calls `handler` with the payload of each pong that arrives (during [`recv`](Self::recv)).
    pub fn on_pong(&mut self, handler: impl FnMut(&[u8]) + Send + 'static) {
        self.on_pong = Some(Box::new(handler));
    }

    /// Sends a whole message in one frame (compressed when permessage-deflate was agreed);
    /// takes a [`Message`] or a `&Message`.
    pub fn send(&mut self, message: impl Borrow<Message>) -> Result<(), ClientError> {
        let message = message.borrow();
        self.send_message(message.kind(), message.as_bytes(), usize::MAX)
    }

    /// Sends a text message in one frame (compressed when permessage-deflate was agreed).
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send_message(DataKind::Text, text.as_bytes(), usize::MAX)
    }

    /// Sends a binary message in one frame (compressed when permessage-deflate was agreed).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send_message(DataKind::Binary, data, usize::MAX)
    }

    /// Sends one message as frames of at most `fragment_size` bytes (at least 1): a `kind` frame,
    /// continuation frames, the last with FIN. Text is cut at byte boundaries, as RFC 6455
    /// allows. An empty payload is one empty frame. With permessage-deflate agreed, the whole
    /// message is compressed first and the compressed bytes are cut into frames.
    pub fn send_fragmented(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fragment_size: usize,
    ) -> Result<(), ClientError> {
        self.send_message(kind, payload, fragment_size)
    }

    /// Sends a ping; the server's pong goes to the [`on_pong`](Self::on_pong) handler. The
    /// payload is at most 125 bytes (`InvalidInput` otherwise).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(invalid_input("a ping payload is at most 125 bytes"));
        }
        self.send_frame(true, OpCode::Ping, 0, payload)
    }

    /// Waits for the next whole message, assembling fragments and answering pings on the way.
    ///
    /// When the server closes, its close is answered (echoing its code) and the server's TCP
    /// close awaited (up to [`close_timeout`](ClientOptions::close_timeout)); then this returns
    /// [`ClientError::Closed`] with the server's code and reason, as does every later call. A
    /// protocol violation sends a close with the error's code and returns
    /// [`ClientError::Protocol`]. A [`read_timeout`](ClientOptions::read_timeout) expiring
    /// returns [`ClientError::Timeout`] and leaves the connection usable.
    pub fn recv(&mut self) -> Result<Message, ClientError> {
        self.check_open()?;
        loop {
            while self.pos < self.filled {
                let decoded = self.session.handle_read(
                    &mut self.rbuf[self.pos..self.filled],
                    &self.limits,
                    &mut FrameWriter::new(&mut self.wbuf, Role::Client),
                );
                let (used, item) = match decoded {
                    Ok(decoded) => decoded,
                    Err(error) => return Err(self.fail(error)),
                };
                self.pos += used;
                match item {
                    None => break,
                    // A whole compressed frame is inflated from the read buffer, without a copy.
                    Some(Item::Data { kind, chunk, first: true, last: true })
                        if self.session.compressed() =>
                    {
                        let limit = self.limits.max_message_size;
                        return match inflate(self.deflate.as_deref_mut(), kind, chunk, limit) {
                            Ok(message) => Ok(message),
                            Err(error) => Err(self.fail_inflate(error)),
                        };
                    }
                    Some(Item::Data { kind, chunk, first: true, last: true }) => {
                        return Ok(Message::from_parts(kind, chunk.to_vec()));
                    }
                    Some(Item::Data { kind, chunk, last, .. }) => {
                        self.message.extend_from_slice(chunk);
                        if last {
                            return self.finish_message(kind);
                        }
                    }
                    // The session framed the pong.
                    Some(Item::Ping(_)) => self.write_control()?,
                    Some(Item::Pong(payload)) => {
                        if let Some(handler) = self.on_pong.as_mut() {
                            handler(payload);
                        }
                    }
                    Some(Item::Close { code, reason }) => {
                        let reason = reason.to_owned();
                        return Err(self.peer_closed(code, reason));
                    }
                }
            }
            match self.fill() {
                Ok(0) => return Err(self.end(CloseCode::ABNORMAL.0, "")),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(ClientError::Timeout),
                Err(e) => {
                    self.end(CloseCode::ABNORMAL.0, "");
                    return Err(ClientError::Io(e));
                }
            }
        }
    }

    /// Closes the connection: sends a close frame with `code` (1000–1003, 1007–1011 or
    /// 3000–4999; `InvalidInput` otherwise) and `reason` (cut to 123 bytes), waits up to
    /// [`close_timeout`](ClientOptions::close_timeout) for the server's close frame (messages
    /// still arriving are dropped) and for the server to close TCP, then closes the socket.
    ///
    /// `Ok` means the close handshake completed. Errors: [`ClientError::Timeout`] if the server's
    /// close did not arrive in time, `Closed { code: 1006, .. }` if the server dropped the
    /// connection without one. Calling it on a connection that already ended does nothing.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), ClientError> {
        if self.ended.is_some() {
            return Ok(());
        }
        if !CloseCode(code).is_sendable() {
            return Err(invalid_input("close code must be 1000-1003, 1007-1011 or 3000-4999"));
        }
        let deadline = Instant::now() + self.close_timeout;
        self.session.close(CloseCode(code), reason, &mut FrameWriter::new(&mut self.wbuf, Role::Client));
        let result = match self.write_control() {
            Ok(()) => self.await_peer_close(deadline),
            Err(e) => Err(e),
        };
        self.end(code, reason);
        result
    }

    fn await_peer_close(&mut self, deadline: Instant) -> Result<(), ClientError> {
        loop {
            while self.pos < self.filled {
                // After our close the session sends nothing: no pong, no second close.
                let (used, item) = self.session.handle_read(
                    &mut self.rbuf[self.pos..self.filled],
                    &self.limits,
                    &mut FrameWriter::new(&mut self.wbuf, Role::Client),
                )?;
                self.pos += used;
                match item {
                    None => break,
                    Some(Item::Close { .. }) => {
                        self.linger(deadline);
                        return Ok(());
                    }
                    Some(_) => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.stream.tcp().set_read_timeout(Some(left))?;
            match self.fill() {
                Ok(0) => {
                    return Err(ClientError::Closed { code: CloseCode::ABNORMAL.0, reason: String::new() })
                }
                Ok(_) => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    /// The server's close frame arrived during `recv` (the session answered it, echoing its
    /// code): send the answer, wait for the server's TCP close.
    fn peer_closed(&mut self, code: Option<CloseCode>, reason: String) -> ClientError {
        let deadline = Instant::now() + self.close_timeout;
        if !self.wbuf.is_empty() {
            // The server may be gone already; the close ends the connection either way.
            let _ = self.write_control();
            self.linger(deadline);
        }
        let code = code.unwrap_or(CloseCode::NO_STATUS).0;
        self.end(code, &reason);
        ClientError::Closed { code, reason }
    }

    /// The last piece of an assembled message arrived: hand it out, inflated if compressed.
    fn finish_message(&mut self, kind: DataKind) -> Result<Message, ClientError> {
        if !self.session.compressed() {
            return Ok(Message::from_parts(kind, std::mem::take(&mut self.message)));
        }
        let limit = self.limits.max_message_size;
        let inflated = inflate(self.deflate.as_deref_mut(), kind, &self.message, limit);
        // The compressed bytes are done with; a small buffer is kept for the next message.
        self.message.clear();
        if self.message.capacity() > READ_BUFFER {
            self.message = Vec::new();
        }
        inflated.map_err(|error| self.fail_inflate(error))
    }

    /// A compressed message could not be inflated (bad data, too large once inflated, not UTF-8):
    /// fail the connection through the session, as for an error the decoder found.
    fn fail_inflate(&mut self, error: ProtocolError) -> ClientError {
        let mut tx = FrameWriter::new(&mut self.wbuf, Role::Client);
        self.session.fail(error.close_code(), error.reason(), &mut tx);
        self.fail(error)
    }

    /// The session failed the connection: send the close frame it framed with the error's code
    /// (if it had not sent one), then wait for the TCP close.
    fn fail(&mut self, error: ProtocolError) -> ClientError {
        let deadline = Instant::now() + self.close_timeout;
        let code = error.close_code();
        if !self.wbuf.is_empty() && self.write_control().is_ok() {
            self.linger(deadline);
        }
        self.end(code.0, error.reason());
        ClientError::Protocol(error)
    }

    /// Reads and drops everything until the server closes TCP (the server closes first, RFC 6455
    /// §7.1.1, so the TIME_WAIT state stays on its side) or the deadline passes.
    fn linger(&mut self, deadline: Instant) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.tcp().set_read_timeout(Some(left)).is_err() {
                return;
            }
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Marks the connection ended with `code` and `reason` and closes the socket.
    fn end(&mut self, code: u16, reason: &str) -> ClientError {
        self.stream.shutdown(self.close_timeout);
        self.pos = 0;
        self.filled = 0;
        self.message = Vec::new();
        self.wbuf = Vec::new();
        // The compression windows are large and no message will use them again.
        self.deflate = None;
        let (code, reason) = self.ended.get_or_insert_with(|| (code, reason.to_owned()));
        ClientError::Closed { code: *code, reason: reason.clone() }
    }

    fn check_open(&self) -> Result<(), ClientError> {
        match &self.ended {
            Some((code, reason)) => Err(ClientError::Closed { code: *code, reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Compacts the unread bytes to the front of the read buffer and reads more after them.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.rbuf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        loop {
            match self.stream.read(&mut self.rbuf[self.filled..]) {
                Ok(n) => {
                    self.filled += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the control frames the session framed into `wbuf` (nothing if none). A failed
    /// write ends the connection.
    fn write_control(&mut self) -> Result<(), ClientError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let written = self.stream.write_all(&self.wbuf);
        self.wbuf.clear();
        written.map_err(|e| {
            self.end(CloseCode::ABNORMAL.0, "");
            io_error(e)
        })
    }

    /// Sends a data message as frames of at most `fragment_size` bytes: compressed first (RSV1
    /// on its first frame) when permessage-deflate was agreed, as given otherwise.
    fn send_message(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fragment_size: usize,
    ) -> Result<(), ClientError> {
        // Checked before compressing: a message that is not sent must not enter the window the
        // server's inflater mirrors.
        self.check_sendable()?;
        let Some(deflate) = self.deflate.as_deref_mut() else {
            return self.send_pieces(kind, 0, payload, fragment_size);
        };
        let mut compressed = std::mem::take(&mut deflate.out);
        compressed.clear();
        let reset = deflate.params.client_no_context_takeover;
        deflate.deflater.compress(payload, &mut compressed, reset);
        let sent = self.send_pieces(kind, RSV1, &compressed, fragment_size);
        if let Some(deflate) = self.deflate.as_deref_mut() {
            if compressed.capacity() <= KEEP_COMPRESSED {
                deflate.out = compressed;
            }
        }
        sent
    }

    /// Sends a message's bytes as frames of at most `fragment_size` bytes (at least 1), `rsv` on
    /// the first; an empty payload is one empty frame.
    fn send_pieces(
        &mut self,
        kind: DataKind,
        rsv: u8,
        payload: &[u8],
        fragment_size: usize,
    ) -> Result<(), ClientError> {
        let mut pieces = payload.chunks(fragment_size.max(1)).peekable();
        let (mut opcode, mut rsv) = (kind.opcode(), rsv);
        if pieces.peek().is_none() {
            return self.send_frame(true, opcode, rsv, &[]);
        }
        while let Some(piece) = pieces.next() {
            self.send_frame(pieces.peek().is_none(), opcode, rsv, piece)?;
            // RSV1 marks the message, on its first frame only (RFC 7692 §6.1).
            (opcode, rsv) = (OpCode::Continuation, 0);
        }
        Ok(())
    }

    /// Sends a data or ping/pong frame, refused once a close was sent or the connection ended.
    fn send_frame(&mut self, fin: bool, opcode: OpCode, rsv: u8, payload: &[u8]) -> Result<(), ClientError> {
        self.check_sendable()?;
        self.write_frame(fin, opcode, rsv, payload)
    }

    /// Data and pings may go out: the connection is open and our close was not sent.
    fn check_sendable(&self) -> Result<(), ClientError> {
        self.check_open()?;
        if !self.session.can_send() {
            return Err(ClientError::Closed { code: CloseCode::NORMAL.0, reason: String::new() });
        }
        Ok(())
    }

    /// Masks and writes one frame: header and payload in one `write` when it fits in
    /// [`WRITE_CHUNK`]. A failed write ends the connection (part of a frame may have gone out).
    fn write_frame(&mut self, fin: bool, opcode: OpCode, rsv: u8, payload: &[u8]) -> Result<(), ClientError> {
        let mask = Role::Client.send_mask();
        let mut header = [0u8; MAX_HEADER_LEN];
        let frame = FrameHeader { fin, rsv, opcode, mask, payload_len: payload.len() as u64 };
        let header_len = frame.encode(&mut header);
        self.wbuf.clear();
        self.wbuf.reserve((header_len + payload.len()).min(WRITE_CHUNK));
        self.wbuf.extend_from_slice(&header[..header_len]);
        let (mut rest, mut phase) = (payload, 0);
        loop {
            let take = rest.len().min(WRITE_CHUNK - self.wbuf.len());
            let start = self.wbuf.len();
            self.wbuf.extend_from_slice(&rest[..take]);
            if let Some(key) = mask {
                phase = apply_mask(&mut self.wbuf[start..], key, phase);
            }
            rest = &rest[take..];
            if let Err(e) = self.stream.write_all(&self.wbuf) {
                self.end(CloseCode::ABNORMAL.0, "");
                return Err(io_error(e));
            }
            self.wbuf.clear();
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

fn invalid_input(why: &'static str) -> ClientError {
    ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, why))
}
