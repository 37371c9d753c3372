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
//!
//! With `--deflate` ([`Wire::deflate`]) the request offers permessage-deflate and, where the
//! server agrees, data messages go out compressed (RSV1) and compressed messages are inflated
//! here before the mode sees them: a mode's `on_item` always gets plain payloads, on either
//! backend. Every byte through the socket and every data message is counted ([`Traffic`]).
//!
//! A `wss://` connection ([`Conn::with_tls`], epoll only) runs rustls' buffered
//! `ClientConnection` between the socket and the rest: what comes in goes through `read_tls` /
//! `process_new_packets` / `reader` before the response parser and the session see it, and
//! what is queued goes through `writer` / `write_tls`. Everything above that is the same.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use throng::proto::deflate::RSV1;
use throng::proto::frame::{encode_frame, MAX_HEADER_LEN};
use throng::proto::handshake::{ClientHandshake, ClientRequest, HandshakeError, Parsed};
use throng::proto::mask::apply_mask;
use throng::proto::{CloseCode, FrameHeader, FrameWriter, Item, Limits, OpCode, Role, Session};
use throng::tls::rustls::{ClientConnection, HandshakeKind};

use crate::deflate::{Codec, ConnDeflate};
use crate::net;
use crate::stats::Traffic;

/// The largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// What the connections of one loop share: the read buffer, the limits, the compression state
/// and the byte counts.
#[derive(Debug)]
pub(crate) struct Wire {
    /// The read buffer: a connection keeps only an incomplete frame header between events.
    pub(crate) scratch: Vec<u8>,
    pub(crate) limits: Limits,
    /// `--deflate`: every connection offers permessage-deflate, and these serve them all.
    pub(crate) deflate: Option<Codec>,
    pub(crate) traffic: Traffic,
}

impl Wire {
    /// `scratch` bytes of read buffer, default limits, compression offered or not.
    pub(crate) fn new(scratch: usize, deflate: bool) -> Self {
        Wire {
            scratch: vec![0; scratch],
            limits: Limits::default(),
            deflate: deflate.then(Codec::default),
            traffic: Traffic::default(),
        }
    }
}

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

/// A [`Source`] as the `io::Read` rustls' `read_tls` takes.
struct SourceReader<'s, 'a> {
    source: &'s mut Source<'a>,
    stream: &'s TcpStream,
}

impl Read for SourceReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.source.read(self.stream, buf)
    }
}

/// Reads what the server sent into `buf`, as `read(2)` on a non-blocking socket would, counting
/// the bytes off the wire: the socket's bytes as they are, or over TLS the plaintext rustls
/// decrypted from them (reading the socket only when rustls holds none). A TLS failure is an
/// `InvalidData` error carrying rustls' error ([`net::cause`] names it).
fn read_in(
    stream: &TcpStream,
    tls: Option<&mut ClientConnection>,
    source: &mut Source<'_>,
    buf: &mut [u8],
    traffic: &mut Traffic,
) -> io::Result<usize> {
    let Some(tls) = tls else {
        let n = source.read(stream, buf)?;
        traffic.wire_bytes_received += n as u64;
        return Ok(n);
    };
    loop {
        match tls.reader().read(buf) {
            // A server that closes TCP without close_notify, as many do after the close
            // handshake, ends the stream like one that sends it: the WebSocket close frame is
            // what tells a clean end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        let n = tls.read_tls(&mut SourceReader { source: &mut *source, stream })?;
        traffic.wire_bytes_received += n as u64;
        let handshaking = tls.is_handshaking();
        if let Err(error) = tls.process_new_packets() {
            // The alert rustls queued tells the server why; the error stands either way.
            let _ = write_tls(tls, stream, traffic);
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        if handshaking && !tls.is_handshaking() {
            traffic.tls_handshakes += 1;
            traffic.tls_resumed += u64::from(tls.handshake_kind() == Some(HandshakeKind::Resumed));
        }
        // The handshake's next flight, or the request that waited for the handshake to end.
        write_tls(tls, stream, traffic)?;
    }
}

/// Writes the TLS records rustls holds until the socket refuses more; `Ok(true)` when it did.
fn write_tls(tls: &mut ClientConnection, stream: &TcpStream, traffic: &mut Traffic) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(&mut &*stream) {
            Ok(n) => traffic.wire_bytes_sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
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
    /// `wss://`: the TLS state between the socket and everything else. Boxed: it is large, and
    /// a `ws://` connection should not carry its room.
    tls: Option<Box<ClientConnection>>,
    phase: Phase,
    handshake: Option<Box<ClientHandshake>>,
    /// The protocol rules: pings answered, the close handshake, failures.
    session: Session,
    /// permessage-deflate, when the server agreed to it.
    deflate: Option<Box<ConnDeflate>>,
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
    /// Wraps a socket whose connect is in progress and queues the upgrade request (offering
    /// permessage-deflate with `offer_deflate`).
    pub(crate) fn new(
        stream: TcpStream,
        host: &str,
        path: &str,
        generation: u32,
        writes: Writes,
        offer_deflate: bool,
        state: S,
    ) -> Result<Self, HandshakeError> {
        let mut out = Vec::with_capacity(256);
        // The key only has to be unpredictable enough for a proxy cache; a per-thread generator
        // saves the getrandom system call per connection.
        let nonce: [u8; 16] = fastrand::u128(..).to_ne_bytes();
        let offer = [("Sec-WebSocket-Extensions", crate::deflate::offer())];
        let extra: &[(&str, &str)] = if offer_deflate { &offer } else { &[] };
        let request = ClientRequest { extra_headers: extra, ..ClientRequest::new(host, path) };
        let handshake = request.write_with_nonce(&mut out, &nonce)?;
        Ok(Conn {
            stream,
            tls: None,
            phase: Phase::Connecting,
            handshake: Some(Box::new(handshake)),
            session: Session::new(Role::Client),
            deflate: None,
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

    /// Runs the connection over TLS (the epoll backend's [`Writes::Direct`] only): the upgrade
    /// request waits in `tls` for the handshake, which starts once TCP connects.
    pub(crate) fn with_tls(self, tls: Box<ClientConnection>) -> Self {
        Conn { tls: Some(tls), ..self }
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

    /// Bytes queued (or handed over) and not yet accepted by the kernel; over TLS, plus one
    /// while rustls holds records the socket refused (it does not say how many bytes).
    pub(crate) fn pending_out(&self) -> usize {
        let tls = self.tls.as_ref().is_some_and(|tls| tls.wants_write());
        self.out.len() - self.out_pos + self.in_flight + usize::from(tls)
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

    /// Queues a masked data frame or ping (call [`flush`](Self::flush) after a batch); a data
    /// message is compressed when the connection agreed on permessage-deflate. Dropped once a
    /// close frame went (the session says what may still be sent).
    pub(crate) fn queue(&mut self, opcode: OpCode, payload: &[u8], wire: &mut Wire) {
        if !self.session.can_send() {
            return;
        }
        let mask = Role::Client.send_mask();
        if opcode.is_control() {
            encode_frame(&mut self.out, true, opcode, mask, payload);
            return;
        }
        let traffic = &mut wire.traffic;
        traffic.messages_sent += 1;
        traffic.uncompressed_bytes_sent += payload.len() as u64;
        match (self.deflate.as_deref(), wire.deflate.as_mut()) {
            (Some(conn), Some(codec)) => {
                let compressed = codec.compress(&conn.params, payload);
                encode_compressed(&mut self.out, opcode, mask, compressed);
                traffic.compressed_sent += 1;
                traffic.payload_bytes_sent += compressed.len() as u64;
            }
            _ => {
                encode_frame(&mut self.out, true, opcode, mask, payload);
                traffic.payload_bytes_sent += payload.len() as u64;
            }
        }
    }

    /// Starts the close handshake with 1000 and flushes. Does nothing unless open.
    pub(crate) fn close(&mut self, traffic: &mut Traffic) -> Result<(), &'static str> {
        if self.phase != Phase::Open {
            return Ok(());
        }
        if self.session.close(CloseCode::NORMAL, "", &mut FrameWriter::new(&mut self.out, Role::Client)) {
            self.we_closed = true;
            self.phase = Phase::Closing;
        }
        self.flush(traffic)
    }

    /// Writes what is queued with one `write` (a short write means the kernel buffer is full:
    /// the rest goes out on the next writable event). With [`Writes::Handed`], does nothing:
    /// the driver hands the bytes over after each call into the connection.
    pub(crate) fn flush(&mut self, traffic: &mut Traffic) -> Result<(), &'static str> {
        if self.phase == Phase::Connecting || self.writes == Writes::Handed {
            return Ok(());
        }
        if self.tls.is_some() {
            return self.flush_tls(traffic).map_err(|e| net::cause(&e));
        }
        while self.out_pos < self.out.len() {
            match (&self.stream).write(&self.out[self.out_pos..]) {
                Ok(n) => {
                    self.out_pos += n;
                    traffic.wire_bytes_sent += n as u64;
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

    /// [`flush`](Self::flush) over TLS: the queued bytes go to rustls (up to its buffer limit,
    /// 64 KiB: the rest waits here, as it would for a full socket) and its records to the
    /// socket. Once our close frame is in, close_notify follows it: nothing else is sent after.
    fn flush_tls(&mut self, traffic: &mut Traffic) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else { return Ok(()) };
        loop {
            let took = tls.writer().write(&self.out[self.out_pos..])?;
            self.out_pos += took;
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                if self.session.close_sent() {
                    tls.send_close_notify();
                }
            }
            let sent_before = traffic.wire_bytes_sent;
            let blocked = write_tls(tls, &self.stream, traffic)?;
            // Done when the socket is full, nothing is left, or rustls takes no more (during the
            // handshake it holds the request until the handshake ends).
            if blocked || self.out.is_empty() || (took == 0 && traffic.wire_bytes_sent == sent_before) {
                return Ok(());
            }
        }
    }

    /// Handles a readiness event, reading from `source`. `on_item` sees every frame received
    /// (pings are answered and close frames completed here as well).
    pub(crate) fn on_ready(
        &mut self,
        ready: Readiness,
        mut source: Source<'_>,
        wire: &mut Wire,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> Status {
        match self.drive(ready, &mut source, wire, on_item) {
            Ok(status) => status,
            Err(cause) => Status::Done(End::Failed(cause)),
        }
    }

    fn drive(
        &mut self,
        ready: Readiness,
        source: &mut Source<'_>,
        wire: &mut Wire,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> Result<Status, &'static str> {
        if self.phase == Phase::Connecting {
            if let Some(e) = self.stream.take_error().map_err(|e| net::cause(&e))? {
                return Err(net::cause(&e));
            }
            match self.stream.peer_addr() {
                Ok(_) => {
                    self.phase = Phase::Handshaking;
                    self.flush(&mut wire.traffic)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(Status::Busy),
                Err(e) => return Err(net::cause(&e)),
            }
        } else if ready.writable && self.pending_out() > 0 {
            self.flush(&mut wire.traffic)?;
        }
        if !ready.readable {
            return Ok(Status::Busy);
        }
        let mut status = Status::Busy;
        let mut may_read = true;
        if self.phase == Phase::Handshaking {
            match self.read_head(source, ready.read_closed, wire)? {
                None => return Ok(Status::Busy),
                Some(drained) => {
                    status = Status::Opened;
                    may_read = !drained || ready.read_closed;
                }
            }
        }
        if let Some(end) = self.read_frames(source, wire, may_read, ready.read_closed, on_item)? {
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
        wire: &mut Wire,
    ) -> Result<Option<bool>, &'static str> {
        loop {
            let filled = self.inbuf.len();
            let room = 1024.min(MAX_HEAD + 1 - filled);
            self.inbuf.resize(filled + room, 0);
            let result = read_in(
                &self.stream,
                self.tls.as_deref_mut(),
                source,
                &mut self.inbuf[filled..],
                &mut wire.traffic,
            );
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
            // A short read drains a socket, not rustls: over TLS only `WouldBlock` says so.
            let drained = n < room && self.tls.is_none();
            let handshake = self.handshake.as_ref().ok_or("handshake_state")?;
            match handshake.parse_response(&self.inbuf) {
                Ok(Parsed::Complete(response)) => {
                    if let Some(codec) = wire.deflate.as_mut() {
                        self.deflate =
                            codec.negotiate(response.extensions()).map_err(|_| "bad_extension_response")?;
                    }
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
        wire: &mut Wire,
        may_read: bool,
        read_closed: bool,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> Result<Option<End>, &'static str> {
        let Wire { scratch, limits, deflate, traffic } = wire;
        // RSV1 is permessage-deflate's on the connections that agreed to it, an error elsewhere.
        let limits = match self.deflate {
            Some(_) => Limits { allowed_rsv: limits.allowed_rsv | RSV1, ..*limits },
            None => *limits,
        };
        let mut filled = self.inbuf.len();
        scratch[..filled].copy_from_slice(&self.inbuf);
        self.inbuf.clear();
        let mut eof = false;
        // Whether the session framed an answer (a pong, a close) to flush.
        let queued = self.out.len();
        loop {
            let mut drained = !may_read;
            if may_read {
                match read_in(&self.stream, self.tls.as_deref_mut(), source, &mut scratch[filled..], traffic)
                {
                    Ok(0) => {
                        eof = true;
                        drained = true;
                    }
                    Ok(n) => {
                        filled += n;
                        drained = filled < scratch.len() && !read_closed && self.tls.is_none();
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
                    &limits,
                    &mut FrameWriter::new(&mut self.out, Role::Client),
                );
                let Ok((used, item)) = read else {
                    // Best effort: the session framed a close with the error's code.
                    let _ = self.flush(traffic);
                    return Err("protocol_error");
                };
                pos += used;
                let Some(item) = item else {
                    if used == 0 {
                        break;
                    }
                    continue;
                };
                match item {
                    Item::Close { .. } => self.phase = Phase::Closing,
                    Item::Data { kind, chunk, first, last } => {
                        traffic.payload_bytes_received += chunk.len() as u64;
                        let codec = deflate.as_mut().filter(|_| self.session.compressed());
                        if let (Some(conn), Some(codec)) = (self.deflate.as_deref_mut(), codec) {
                            // A compressed message is inflated once whole; the mode sees it in
                            // one piece.
                            let partial;
                            let whole = if first && last {
                                chunk
                            } else {
                                if first {
                                    conn.partial.clear();
                                }
                                // Bounded: the decoder holds a message to `max_message_size`.
                                conn.partial.extend_from_slice(chunk);
                                if !last {
                                    continue;
                                }
                                partial = std::mem::take(&mut conn.partial);
                                &partial[..]
                            };
                            match codec.inflate(conn, whole, kind, limits.max_message_size) {
                                Ok(message) => {
                                    traffic.messages_received += 1;
                                    traffic.compressed_received += 1;
                                    traffic.uncompressed_bytes_received += message.len() as u64;
                                    let item = Item::Data { kind, chunk: message, first: true, last: true };
                                    on_item(&mut self.state, &item);
                                }
                                Err(error) => {
                                    let tx = &mut FrameWriter::new(&mut self.out, Role::Client);
                                    self.session.fail(error.close_code(), error.reason(), tx);
                                    let _ = self.flush(traffic);
                                    return Err("deflate_error");
                                }
                            }
                            continue;
                        }
                        traffic.uncompressed_bytes_received += chunk.len() as u64;
                        traffic.messages_received += u64::from(last);
                    }
                    _ => {}
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
            self.flush(traffic)?;
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

/// Appends a whole compressed data frame: RSV1 set, masked when `mask` is given.
fn encode_compressed(out: &mut Vec<u8>, opcode: OpCode, mask: Option<[u8; 4]>, payload: &[u8]) {
    let header = FrameHeader { fin: true, rsv: RSV1, opcode, mask, payload_len: payload.len() as u64 };
    let mut head = [0u8; MAX_HEADER_LEN];
    let head_len = header.encode(&mut head);
    out.reserve(head_len + payload.len());
    out.extend_from_slice(&head[..head_len]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use throng::proto::deflate::{Deflater, Inflater};
    use throng::proto::DataKind;

    /// A connection whose TCP connect has completed (to a listener that never reads), with
    /// its request handed over rather than written, as on io_uring: bytes are fed by hand.
    fn connection(wire: &Wire) -> Conn<Vec<Vec<u8>>> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        stream.set_nonblocking(true).unwrap();
        let stream = TcpStream::from_std(stream);
        std::mem::forget(listener);
        Conn::new(stream, "127.0.0.1", "/", 1, Writes::Handed, wire.deflate.is_some(), Vec::new()).unwrap()
    }

    /// Feeds `bytes` as one receive; the messages the mode saw are in the state.
    fn feed(conn: &mut Conn<Vec<Vec<u8>>>, wire: &mut Wire, bytes: &[u8]) -> Status {
        let ready = Readiness { readable: true, writable: true, read_closed: false };
        conn.on_ready(ready, Source::Bytes(bytes), wire, &mut |seen, item| {
            if let Item::Data { chunk, first, last, .. } = item {
                assert!(*first && *last, "the mode sees whole messages");
                seen.push(chunk.to_vec());
            }
        })
    }

    fn upgrade(conn: &mut Conn<Vec<Vec<u8>>>, wire: &mut Wire, extensions: Option<&str>) {
        let accept = conn.handshake.as_ref().unwrap().expected_accept().to_owned();
        let mut head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
        );
        if let Some(value) = extensions {
            head.push_str(&format!("Sec-WebSocket-Extensions: {value}\r\n"));
        }
        head.push_str("\r\n");
        assert_eq!(feed(conn, wire, head.as_bytes()), Status::Opened);
    }

    /// A server's unmasked frame with `rsv`.
    fn frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader { fin, rsv, opcode, mask: None, payload_len: payload.len() as u64 };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        [&head[..n], payload].concat()
    }

    #[test]
    fn compressed_messages_are_inflated_whole_however_they_arrive() {
        let mut wire = Wire::new(4096, true);
        let mut conn = connection(&wire);
        assert!(String::from_utf8_lossy(&conn.out).contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ));
        upgrade(
            &mut conn,
            &mut wire,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        );
        let message = br#"{"channel":"c","data":{"seq":1,"t":2,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        let mut compressed = Vec::new();
        Deflater::new(6, 15).compress(message, &mut compressed, true);
        // Whole, then in two frames cut across three receives, then uncompressed.
        assert_eq!(feed(&mut conn, &mut wire, &frame(true, RSV1, OpCode::Text, &compressed)), Status::Busy);
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let bytes = [frame(false, RSV1, OpCode::Text, a), frame(true, 0, OpCode::Continuation, b)].concat();
        for piece in [&bytes[..3], &bytes[3..a.len() + 4], &bytes[a.len() + 4..]] {
            assert_eq!(feed(&mut conn, &mut wire, piece), Status::Busy);
        }
        assert_eq!(feed(&mut conn, &mut wire, &frame(true, 0, OpCode::Text, b"plain")), Status::Busy);
        assert_eq!(conn.state, [&message[..], message, b"plain"]);
        let t = &wire.traffic;
        assert_eq!((t.messages_received, t.compressed_received), (3, 2));
        assert_eq!(t.payload_bytes_received, 2 * compressed.len() as u64 + 5);
        assert_eq!(t.uncompressed_bytes_received, 2 * message.len() as u64 + 5);
        assert!(conn.deflate.as_ref().is_some_and(|d| d.partial.capacity() == 0), "assembly given back");

        // What we send goes out compressed, masked, RSV1 on the first frame only.
        conn.out.clear();
        conn.queue(OpCode::Binary, message, &mut wire);
        conn.queue(OpCode::Ping, b"p", &mut wire);
        let (header, at) = FrameHeader::decode(&conn.out).unwrap().unwrap();
        assert_eq!((header.rsv, header.opcode, header.fin), (RSV1, OpCode::Binary, true));
        let mut payload = conn.out[at..at + header.payload_len as usize].to_vec();
        apply_mask(&mut payload, header.mask.unwrap(), 0);
        let mut inflated = Vec::new();
        Inflater::new(15).inflate(&payload, DataKind::Binary, 1 << 20, &mut inflated, true).unwrap();
        assert_eq!(inflated, message);
        let (ping, _) = FrameHeader::decode(&conn.out[at + payload.len()..]).unwrap().unwrap();
        assert_eq!((ping.rsv, ping.opcode), (0, OpCode::Ping));
        assert_eq!((wire.traffic.messages_sent, wire.traffic.compressed_sent), (1, 1));

        // Bytes that do not inflate fail the connection with 1007.
        conn.out.clear();
        let status = feed(&mut conn, &mut wire, &frame(true, RSV1, OpCode::Text, &[0xff; 8]));
        assert_eq!(status, Status::Done(End::Failed("deflate_error")));
        assert_eq!(conn.session.close_code(), Some(CloseCode::INVALID_PAYLOAD));
        assert_eq!(wire.deflate.as_ref().unwrap().report().negotiated.values().sum::<u64>(), 1);
    }

    #[test]
    fn a_declined_offer_runs_uncompressed_and_refuses_rsv1() {
        let mut wire = Wire::new(4096, true);
        let mut conn = connection(&wire);
        upgrade(&mut conn, &mut wire, None);
        assert!(conn.deflate.is_none());
        assert_eq!(wire.deflate.as_ref().unwrap().report().declined, 1);
        conn.queue(OpCode::Text, b"hello", &mut wire);
        assert_eq!((wire.traffic.compressed_sent, wire.traffic.payload_bytes_sent), (0, 5));
        let status = feed(&mut conn, &mut wire, &frame(true, RSV1, OpCode::Text, b"x"));
        assert_eq!(status, Status::Done(End::Failed("protocol_error")));

        // Without --deflate nothing is offered, and an answer naming an extension fails.
        let mut wire = Wire::new(4096, false);
        let mut conn = connection(&wire);
        assert!(!String::from_utf8_lossy(&conn.out).contains("Sec-WebSocket-Extensions"));
        let accept = conn.handshake.as_ref().unwrap().expected_accept().to_owned();
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        );
        assert_eq!(
            feed(&mut conn, &mut wire, head.as_bytes()),
            Status::Done(End::Failed("handshake_invalid"))
        );
    }

    #[test]
    fn an_invalid_extension_answer_fails_the_connection() {
        let mut wire = Wire::new(4096, true);
        let mut conn = connection(&wire);
        let accept = conn.handshake.as_ref().unwrap().expected_accept().to_owned();
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate; x=1\r\n\r\n"
        );
        let status = feed(&mut conn, &mut wire, head.as_bytes());
        assert_eq!(status, Status::Done(End::Failed("bad_extension_response")));
    }
}
