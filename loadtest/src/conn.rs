//! One client WebSocket connection on a non-blocking socket: connect, upgrade, frames, close.
//!
//! The protocol work is throng's sans-IO core ([`ClientRequest`], [`Session`], [`encode_frame`]):
//! the session answers pings and the server's close and fails on protocol errors, as throng's
//! own client and server do; this file only moves bytes. Reads go through a scratch buffer
//! shared by all connections, so an idle connection keeps at most a partial frame header.
//!
//! The bytes move one of two ways, chosen by the driver's backend ([`Writes`], [`Source`]): on a
//! readiness backend (epoll) the connection reads and writes its socket itself, with one
//! `write` per flush (what the kernel refuses waits for the next writable event); on a
//! completion backend (io_uring) it is handed the bytes received and hands over what it queued,
//! and never touches the socket's data itself.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use throng::proto::frame::encode_frame;
use throng::proto::handshake::{ClientHandshake, ClientRequest, HandshakeError, Parsed};
use throng::proto::{CloseCode, FrameWriter, Item, Limits, OpCode, Role, Session};

use crate::net;

/// The largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Request written (or queued), waiting for the 101.
    Handshaking,
    /// Upgraded.
    Open,
    /// A close frame was sent or received; waiting for the rest of the close and the FIN.
    Closing,
}

/// What a readiness event reported for a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// Data, EOF or an error may be read.
    pub(crate) readable: bool,
    /// The socket accepts writes (or the connect finished).
    pub(crate) writable: bool,
    /// The peer's FIN arrived: read until the 0, even after a short read (edge-triggered polls
    /// report it only once).
    pub(crate) read_closed: bool,
}

/// Where a readiness event's bytes come from.
#[derive(Debug)]
pub(crate) enum Source<'a> {
    /// The socket: read it until it would block.
    Socket,
    /// Bytes a completion backend received (none: the event carries no data).
    Bytes(&'a [u8]),
    /// The server's FIN, as a completion backend received it.
    Eof,
    /// The socket failed with this errno, as a completion backend learnt.
    Failed(i32),
}

impl Source<'_> {
    /// Reads as `read(2)` on a non-blocking socket would: bytes, then `WouldBlock` (or the 0 of
    /// the FIN, or the error).
    fn read(&mut self, stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Socket => (&*stream).read(buf),
            Source::Bytes([]) => Err(io::ErrorKind::WouldBlock.into()),
            Source::Bytes(bytes) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                *bytes = &bytes[n..];
                Ok(n)
            }
            Source::Eof => Ok(0),
            Source::Failed(errno) => Err(io::Error::from_raw_os_error(*errno)),
        }
    }
}

/// Who writes a connection's queued bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writes {
    /// [`Conn::flush`] writes them to the (non-blocking) socket.
    Direct,
    /// The driver takes them ([`Conn::hand_over`]) for a completion backend to send; flushing
    /// leaves them queued.
    Handed,
}

/// What a readiness event did to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Nothing the caller must act on.
    Busy,
    /// The 101 arrived during this event (frames after it were handled too).
    Opened,
    /// The connection is over: drop it.
    Done(End),
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// We sent a close, the server answered it and closed the TCP connection.
    Clean,
    /// The server started the close handshake with this code (1005: none).
    ServerClosed(u16),
    /// An error; the name is a key for failure counts.
    Failed(&'static str),
}

/// A client connection carrying a mode's per-connection state `S`.
pub(crate) struct Conn<S> {
    stream: TcpStream,
    phase: Phase,
    handshake: Option<Box<ClientHandshake>>,
    /// The protocol rules: pings answered, the close handshake, failures.
    session: Session,
    /// The response head while handshaking; afterwards the bytes of an incomplete frame header.
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    writes: Writes,
    /// Bytes handed over and not yet reported sent ([`Writes::Handed`]).
    in_flight: usize,
    /// We started the close handshake (as opposed to answering the server's).
    we_closed: bool,
    /// When the connect started.
    pub(crate) started: Instant,
    /// Tells a reused slab slot from its previous occupant.
    pub(crate) generation: u32,
    /// Counted as established (see [`crate::driver::Driver::establish`]).
    pub(crate) counted: bool,
    /// The mode's own state.
    pub(crate) state: S,
}

impl<S> Conn<S> {
    /// Wraps a socket whose connect is in progress and queues the upgrade request.
    pub(crate) fn new(
        stream: TcpStream,
        host: &str,
        path: &str,
        generation: u32,
        writes: Writes,
        state: S,
    ) -> Result<Self, HandshakeError> {
        let mut out = Vec::with_capacity(256);
        // The key only has to be unpredictable enough for a proxy cache; a per-thread generator
        // saves the getrandom system call per connection.
        let nonce: [u8; 16] = fastrand::u128(..).to_ne_bytes();
        let handshake = ClientRequest::new(host, path).write_with_nonce(&mut out, &nonce)?;
        Ok(Conn {
            stream,
            phase: Phase::Connecting,
            handshake: Some(Box::new(handshake)),
            session: Session::new(Role::Client),
            inbuf: Vec::new(),
            out,
            out_pos: 0,
            writes,
            in_flight: 0,
            we_closed: false,
            started: Instant::now(),
            generation,
            counted: false,
            state,
        })
    }

    /// The socket, to register with a poll.
    pub(crate) fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The socket, for a completion backend's operations.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Where the connection is.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Bytes queued (or handed over) and not yet accepted by the kernel.
    pub(crate) fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos + self.in_flight
    }

    /// [`Writes::Handed`]: whether there are queued bytes to hand over now (connected, and
    /// nothing in flight: one send at a time keeps the bytes in order).
    pub(crate) fn has_unsent(&self) -> bool {
        self.writes == Writes::Handed
            && self.phase != Phase::Connecting
            && self.in_flight == 0
            && self.out.len() > self.out_pos
    }

    /// Hands the queued bytes over (see [`has_unsent`](Self::has_unsent)); `spare`, an empty
    /// buffer, takes their place.
    pub(crate) fn hand_over(&mut self, spare: Vec<u8>) -> Vec<u8> {
        let mut bytes = std::mem::replace(&mut self.out, spare);
        bytes.drain(..self.out_pos);
        self.out_pos = 0;
        self.in_flight = bytes.len();
        bytes
    }

    /// What was handed over went out.
    pub(crate) fn sent(&mut self) {
        self.in_flight = 0;
    }

    /// Queues a masked data frame or ping (call [`flush`](Self::flush) after a batch). Dropped
    /// once a close frame went (the session says what may still be sent).
    pub(crate) fn queue(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.session.can_send() {
            encode_frame(&mut self.out, true, opcode, Role::Client.send_mask(), payload);
        }
    }

    /// Starts the close handshake with 1000 and flushes. Does nothing unless open.
    pub(crate) fn close(&mut self) -> Result<(), &'static str> {
        if self.phase != Phase::Open {
            return Ok(());
        }
        if self.session.close(CloseCode::NORMAL, "", &mut FrameWriter::new(&mut self.out, Role::Client)) {
            self.we_closed = true;
            self.phase = Phase::Closing;
        }
        self.flush()
    }

    /// Writes what is queued with one `write` (a short write means the kernel buffer is full:
    /// the rest goes out on the next writable event). With [`Writes::Handed`], does nothing:
    /// the driver hands the bytes over after each call into the connection.
    pub(crate) fn flush(&mut self) -> Result<(), &'static str> {
        if self.phase == Phase::Connecting || self.writes == Writes::Handed {
            return Ok(());
        }
        while self.out_pos < self.out.len() {
            match (&self.stream).write(&self.out[self.out_pos..]) {
                Ok(n) => {
                    self.out_pos += n;
                    if self.out_pos < self.out.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(net::cause(&e)),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Handles a readiness event, reading from `source`. `on_item` sees every frame received
    /// (pings are answered and close frames completed here as well).
    pub(crate) fn on_ready(
        &mut self,
        ready: Readiness,
        mut source: Source<'_>,
        scratch: &mut [u8],
        limits: &Limits,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> Status {
        match self.drive(ready, &mut source, scratch, limits, on_item) {
            Ok(status) => status,
            Err(cause) => Status::Done(End::Failed(cause)),
        }
    }

    fn drive(
        &mut self,
        ready: Readiness,
        source: &mut Source<'_>,
        scratch: &mut [u8],
        limits: &Limits,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> Result<Status, &'static str> {
        if self.phase == Phase::Connecting {
            if let Some(e) = self.stream.take_error().map_err(|e| net::cause(&e))? {
                return Err(net::cause(&e));
            }
            match self.stream.peer_addr() {
                Ok(_) => {
                    self.phase = Phase::Handshaking;
                    self.flush()?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(Status::Busy),
                Err(e) => return Err(net::cause(&e)),
            }
        } else if ready.writable && self.pending_out() > 0 {
            self.flush()?;
        }
        if !ready.readable {
            return Ok(Status::Busy);
        }
        let mut status = Status::Busy;
        let mut may_read = true;
        if self.phase == Phase::Handshaking {
            match self.read_head(source, ready.read_closed)? {
                None => return Ok(Status::Busy),
                Some(drained) => {
                    status = Status::Opened;
                    may_read = !drained || ready.read_closed;
                }
            }
        }
        if let Some(end) = self.read_frames(source, scratch, limits, may_read, ready.read_closed, on_item)? {
            return Ok(Status::Done(end));
        }
        Ok(status)
    }

    /// Reads the response head. `Some(drained)` once upgraded (frame bytes after the head are
    /// left in `inbuf`); `None` while incomplete.
    fn read_head(
        &mut self,
        source: &mut Source<'_>,
        read_closed: bool,
    ) -> Result<Option<bool>, &'static str> {
        loop {
            let filled = self.inbuf.len();
            let room = 1024.min(MAX_HEAD + 1 - filled);
            self.inbuf.resize(filled + room, 0);
            let result = source.read(&self.stream, &mut self.inbuf[filled..]);
            let n = match result {
                Ok(0) => return Err("eof_in_handshake"),
                Ok(n) => n,
                Err(e) => {
                    self.inbuf.truncate(filled);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(None),
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(net::cause(&e)),
                    }
                }
            };
            self.inbuf.truncate(filled + n);
            let drained = n < room;
            let handshake = self.handshake.as_ref().ok_or("handshake_state")?;
            match handshake.parse_response(&self.inbuf) {
                Ok(Parsed::Complete(response)) => {
                    let len = response.len();
                    self.inbuf.drain(..len);
                    self.inbuf.shrink_to(16);
                    self.handshake = None;
                    self.phase = Phase::Open;
                    return Ok(Some(drained));
                }
                Ok(Parsed::Partial) if self.inbuf.len() > MAX_HEAD => return Err("handshake_too_large"),
                Ok(Parsed::Partial) if drained && !read_closed => return Ok(None),
                Ok(Parsed::Partial) => {}
                Err(HandshakeError::BadStatus(_)) => return Err("handshake_rejected"),
                Err(_) => return Err("handshake_invalid"),
            }
        }
    }

    /// Reads and decodes frames until the socket is drained (or only decodes what `inbuf`
    /// holds when `may_read` is false). A short read means drained, unless the FIN arrived
    /// (`read_closed`): then reading goes on to the 0. `Some(end)` when the connection is over.
    fn read_frames(
        &mut self,
        source: &mut Source<'_>,
        scratch: &mut [u8],
        limits: &Limits,
        may_read: bool,
        read_closed: bool,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> Result<Option<End>, &'static str> {
        let mut filled = self.inbuf.len();
        scratch[..filled].copy_from_slice(&self.inbuf);
        self.inbuf.clear();
        let mut eof = false;
        // Whether the session framed an answer (a pong, a close) to flush.
        let queued = self.out.len();
        loop {
            let mut drained = !may_read;
            if may_read {
                match source.read(&self.stream, &mut scratch[filled..]) {
                    Ok(0) => {
                        eof = true;
                        drained = true;
                    }
                    Ok(n) => {
                        filled += n;
                        drained = filled < scratch.len() && !read_closed;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(net::cause(&e)),
                }
            }
            let mut pos = 0;
            while pos < filled {
                let read = self.session.handle_read(
                    &mut scratch[pos..filled],
                    limits,
                    &mut FrameWriter::new(&mut self.out, Role::Client),
                );
                let Ok((used, item)) = read else {
                    // Best effort: the session framed a close with the error's code.
                    let _ = self.flush();
                    return Err("protocol_error");
                };
                pos += used;
                let Some(item) = item else {
                    if used == 0 {
                        break;
                    }
                    continue;
                };
                if let Item::Close { .. } = item {
                    self.phase = Phase::Closing;
                }
                on_item(&mut self.state, &item);
            }
            scratch.copy_within(pos..filled, 0);
            filled -= pos;
            if drained {
                break;
            }
        }
        self.inbuf.extend_from_slice(&scratch[..filled]);
        if self.out.len() != queued {
            self.flush()?;
        }
        if !eof {
            return Ok(None);
        }
        let session = &self.session;
        Ok(Some(if session.peer_closed() && !self.we_closed {
            End::ServerClosed(session.close_code().unwrap_or(CloseCode::NO_STATUS).0)
        } else if session.close_handshake_done() {
            End::Clean
        } else if self.we_closed {
            End::Failed("eof_before_close_reply")
        } else {
            End::Failed("eof")
        }))
    }
}
