//! An open client connection: masked frames out, decoded messages in, the close handshake.

use std::borrow::Borrow;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::error::{io_error, is_timeout};
use super::{ClientError, ClientOptions};
use crate::proto::frame::{encode_header, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::proto::mask::apply_mask;
use crate::proto::Message;
use crate::proto::{CloseCode, DataKind, FrameWriter, Item, Limits, OpCode, ProtocolError, Role, Session};

/// Size of the read buffer. Data payloads are handed out as they arrive, so between reads it only
/// keeps an unfinished header or control frame (at most 139 bytes).
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// Frames up to this size (header included) go out in one `write`; larger ones are masked and
/// written in pieces of this size, so a large send never holds a second copy of the payload.
const WRITE_CHUNK: usize = 256 * 1024;

/// Called with the payload of every pong that arrives.
type PongHandler = Box<dyn FnMut(&[u8]) + Send>;

/// An open WebSocket connection from [`connect`](super::connect). Blocking; one caller at a time.
///
/// Frames are sent masked with a fresh key, each in one `write` (up to 256 KiB). Received frames
/// are decoded from one 64 KiB read buffer; pings are answered while [`recv`](Self::recv) runs, so
/// keep calling it (a [`read_timeout`](ClientOptions::read_timeout) bounds each call).
///
/// Dropping the connection closes the socket without a close handshake; [`close`](Self::close)
/// does it properly.
pub struct Connection {
    stream: TcpStream,
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
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.stream.peer_addr().ok())
            .field("subprotocol", &self.subprotocol)
            .field("session", &self.session)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection whose handshake completed; `buf[unread]` are frame bytes already received.
    pub(crate) fn new(
        stream: TcpStream,
        buf: Box<[u8]>,
        unread: Range<usize>,
        subprotocol: Option<String>,
        options: &ClientOptions,
    ) -> Self {
        Self {
            stream,
            session: Session::new(Role::Client),
            limits: Limits {
                max_frame_size: options.max_frame_size,
                max_message_size: options.max_message_size,
                allowed_rsv: 0,
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
        }
    }

    /// The subprotocol the server chose among the offered ones, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Our end of the TCP connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The server's end of the TCP connection.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Changes the limit on each blocking read in [`recv`](Self::recv) (`None`: wait forever).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Calls `handler` with the payload of each pong that arrives (during [`recv`](Self::recv)).
    pub fn on_pong(&mut self, handler: impl FnMut(&[u8]) + Send + 'static) {
        self.on_pong = Some(Box::new(handler));
    }

    /// Sends a whole message in one frame; takes a [`Message`] or a `&Message`.
    pub fn send(&mut self, message: impl Borrow<Message>) -> Result<(), ClientError> {
        let message = message.borrow();
        self.send_frame(true, message.kind().opcode(), message.as_bytes())
    }

    /// Sends a text message in one frame.
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send_frame(true, OpCode::Text, text.as_bytes())
    }

    /// Sends a binary message in one frame.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send_frame(true, OpCode::Binary, data)
    }

    /// Sends one message as frames of at most `fragment_size` bytes (at least 1): a `kind` frame,
    /// continuation frames, the last with FIN. Text is cut at byte boundaries, as RFC 6455
    /// allows. An empty payload is one empty frame.
    pub fn send_fragmented(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fragment_size: usize,
    ) -> Result<(), ClientError> {
        let mut pieces = payload.chunks(fragment_size.max(1)).peekable();
        let mut opcode = kind.opcode();
        if pieces.peek().is_none() {
            return self.send_frame(true, opcode, &[]);
        }
        while let Some(piece) = pieces.next() {
            self.send_frame(pieces.peek().is_none(), opcode, piece)?;
            opcode = OpCode::Continuation;
        }
        Ok(())
    }

    /// Sends a ping; the server's pong goes to the [`on_pong`](Self::on_pong) handler. The
    /// payload is at most 125 bytes (`InvalidInput` otherwise).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(invalid_input("a ping payload is at most 125 bytes"));
        }
        self.send_frame(true, OpCode::Ping, payload)
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
                    Some(Item::Data { kind, chunk, first: true, last: true }) => {
                        return Ok(Message::from_parts(kind, chunk.to_vec()));
                    }
                    Some(Item::Data { kind, chunk, last, .. }) => {
                        self.message.extend_from_slice(chunk);
                        if last {
                            return Ok(Message::from_parts(kind, std::mem::take(&mut self.message)));
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
            self.stream.set_read_timeout(Some(left))?;
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
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
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
        let _ = self.stream.shutdown(Shutdown::Both);
        self.pos = 0;
        self.filled = 0;
        self.message = Vec::new();
        self.wbuf = Vec::new();
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

    /// Sends a data or ping/pong frame, refused once a close was sent or the connection ended.
    fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) -> Result<(), ClientError> {
        self.check_open()?;
        if !self.session.can_send() {
            return Err(ClientError::Closed { code: CloseCode::NORMAL.0, reason: String::new() });
        }
        self.write_frame(fin, opcode, payload)
    }

    /// Masks and writes one frame: header and payload in one `write` when it fits in
    /// [`WRITE_CHUNK`]. A failed write ends the connection (part of a frame may have gone out).
    fn write_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) -> Result<(), ClientError> {
        let mask = Role::Client.send_mask();
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = encode_header(&mut header, fin, opcode, mask, payload.len() as u64);
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
