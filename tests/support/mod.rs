//! A small blocking WebSocket client for the engine tests, built from the sans-IO protocol core,
//! plus helpers to start servers on loopback.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use throng::proto::deflate::{self, Deflater, Inflater};
use throng::proto::frame::{encode_frame, random_mask};
use throng::proto::handshake::{ClientRequest, Parsed};
use throng::proto::{DataKind, Decoder, Item, Limits, OpCode, Role};
use throng::{Flow, Server, ServerBuilder};

/// How long any single blocking read in a test may take before the test fails.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the client read from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A whole data message (fragments assembled).
    Message(DataKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The server's close frame: its code (1005 when it had none) and reason.
    Close(u16, String),
    /// The server closed the TCP connection (FIN, or a reset).
    Eof,
}

impl Received {
    pub(crate) fn text(s: &str) -> Self {
        Received::Message(DataKind::Text, s.as_bytes().to_vec())
    }

    pub(crate) fn binary(b: &[u8]) -> Self {
        Received::Message(DataKind::Binary, b.to_vec())
    }
}

/// A masked client frame.
pub(crate) fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, fin, opcode, Some(random_mask()), payload);
    out
}

/// A masked close frame with `code` and `reason`.
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(true, OpCode::Close, &payload)
}

/// A well-formed upgrade request and the handshake state to check its answer with.
pub(crate) fn upgrade_request(
    addr: SocketAddr,
    path: &str,
) -> (Vec<u8>, throng::proto::handshake::ClientHandshake) {
    upgrade_request_with(addr, path, &[])
}

/// [`upgrade_request`] with extra headers (e.g. an extension offer).
pub(crate) fn upgrade_request_with(
    addr: SocketAddr,
    path: &str,
    extra_headers: &[(&str, &str)],
) -> (Vec<u8>, throng::proto::handshake::ClientHandshake) {
    let host = addr.to_string();
    let mut out = Vec::new();
    let request = ClientRequest { extra_headers, ..ClientRequest::new(&host, path) };
    let handshake = request.write(&mut out).expect("valid request");
    (out, handshake)
}

pub(crate) fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("set read timeout");
    stream.set_write_timeout(Some(READ_TIMEOUT)).expect("set write timeout");
    stream.set_nodelay(true).expect("set nodelay");
    stream
}

pub(crate) struct TestClient {
    pub(crate) stream: TcpStream,
    /// Bytes read and not decoded yet.
    buf: Vec<u8>,
    decoder: Decoder,
    /// The kind and pieces of a fragmented message in progress.
    message: Option<(DataKind, Vec<u8>)>,
    limits: Limits,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    pub(crate) extensions: Option<String>,
    /// permessage-deflate, when the server accepted it: the inflater and whether the server
    /// keeps a context between messages.
    inflater: Option<(Inflater, bool)>,
    /// Messages received compressed so far.
    pub(crate) compressed_received: u64,
    /// Bytes read after the upgrade response.
    pub(crate) wire_bytes: u64,
}

/// Connects to `addr` and upgrades on `path`; panics unless the server answers 101.
pub(crate) fn connect(addr: SocketAddr, path: &str) -> TestClient {
    TestClient::connect(addr, path)
}

impl TestClient {
    pub(crate) fn connect(addr: SocketAddr, path: &str) -> Self {
        Self::connect_with(addr, path, |stream, request| stream.write_all(request))
    }

    /// Connects offering extensions (`Sec-WebSocket-Extensions: offer`); when the server accepts
    /// permessage-deflate, compressed messages are inflated on receipt.
    pub(crate) fn connect_offering(addr: SocketAddr, path: &str, offer: &str) -> Self {
        let request = upgrade_request_with(addr, path, &[("Sec-WebSocket-Extensions", offer)]);
        Self::upgrade_request(tcp_connect(addr), request, |stream, request| stream.write_all(request))
    }

    /// Connects and upgrades, letting `write` put the request on the wire (e.g. byte by byte,
    /// or followed by frames).
    pub(crate) fn connect_with(
        addr: SocketAddr,
        path: &str,
        write: impl FnOnce(&mut TcpStream, &[u8]) -> io::Result<()>,
    ) -> Self {
        Self::upgrade(tcp_connect(addr), addr, path, write)
    }

    /// Upgrades an already connected stream.
    pub(crate) fn upgrade(
        stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        write: impl FnOnce(&mut TcpStream, &[u8]) -> io::Result<()>,
    ) -> Self {
        Self::upgrade_request(stream, upgrade_request(addr, path), write)
    }

    fn upgrade_request(
        mut stream: TcpStream,
        (request, handshake): (Vec<u8>, throng::proto::handshake::ClientHandshake),
        write: impl FnOnce(&mut TcpStream, &[u8]) -> io::Result<()>,
    ) -> Self {
        write(&mut stream, &request).expect("write upgrade request");
        let extensions;
        let params;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match handshake.parse_response(&buf) {
                Ok(Parsed::Complete(response)) => {
                    let len = response.len();
                    extensions = response
                        .header("sec-websocket-extensions")
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    params = deflate::accept_response(response.extensions())
                        .expect("a valid permessage-deflate answer");
                    buf.drain(..len);
                    break;
                }
                Ok(Parsed::Partial) => {}
                Err(e) => panic!("upgrade refused: {e}: {:?}", String::from_utf8_lossy(&buf)),
            }
            let n = stream.read(&mut chunk).expect("read upgrade response");
            assert!(n > 0, "server closed during the upgrade: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut limits = Limits::default();
        if params.is_some() {
            limits.allowed_rsv = deflate::RSV1;
        }
        TestClient {
            stream,
            buf,
            decoder: Decoder::new(Role::Client),
            message: None,
            limits,
            extensions,
            inflater: params
                .map(|p| (Inflater::new(p.server_max_window_bits), !p.server_no_context_takeover)),
            compressed_received: 0,
            wire_bytes: 0,
        }
    }

    /// Sends a message compressed (RSV1, deflated without context).
    pub(crate) fn send_compressed(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut compressed = Vec::new();
        Deflater::new(6, 15).compress(payload, &mut compressed, true);
        let mut bytes = frame(true, opcode, &compressed);
        bytes[0] |= 0x40;
        self.send_raw(&bytes);
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Writes `bytes` one at a time, flushing (and yielding briefly) between them.
    pub(crate) fn send_bytewise(&mut self, bytes: &[u8], pause: Duration) {
        write_bytewise(&mut self.stream, bytes, pause).expect("write to server");
    }

    /// A masked frame with a random key.
    pub(crate) fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.send_raw(&frame(fin, opcode, payload));
    }

    pub(crate) fn send_text(&mut self, text: &str) {
        self.send_frame(true, OpCode::Text, text.as_bytes());
    }

    pub(crate) fn send_binary(&mut self, payload: &[u8]) {
        self.send_frame(true, OpCode::Binary, payload);
    }

    /// [`TestClient::send_binary`] for a peer that may have closed: a failed write is an error,
    /// not a panic.
    pub(crate) fn try_send_binary(&mut self, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&frame(true, OpCode::Binary, payload))
    }

    pub(crate) fn send_close(&mut self, code: u16, reason: &str) {
        self.send_raw(&close_frame(code, reason));
    }

    /// The next thing from the server; panics if nothing arrives within [`READ_TIMEOUT`].
    pub(crate) fn recv(&mut self) -> Received {
        match self.recv_timeout(READ_TIMEOUT) {
            Some(received) => received,
            None => panic!("nothing received within {READ_TIMEOUT:?}"),
        }
    }

    /// The next thing from the server, or `None` if nothing complete arrives within `timeout`.
    pub(crate) fn recv_timeout(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.buf.is_empty() {
                let (used, out) = self.decode_one();
                if out.is_some() {
                    return out;
                }
                if used > 0 {
                    continue;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("set read timeout");
            let mut chunk = [0u8; 64 * 1024];
            let result = self.stream.read(&mut chunk);
            self.stream.set_read_timeout(Some(READ_TIMEOUT)).expect("set read timeout");
            match result {
                Ok(0) => return Some(Received::Eof),
                Ok(n) => {
                    self.wire_bytes += n as u64;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Some(Received::Eof),
                Err(e) => panic!("read from server failed: {e}"),
            }
        }
    }

    /// Decodes at most one item from the buffer: (bytes used, what completed).
    fn decode_one(&mut self) -> (usize, Option<Received>) {
        let (used, item) = match self.decoder.decode(&mut self.buf, &self.limits) {
            Ok(decoded) => decoded,
            Err(e) => panic!("server sent an invalid frame: {e}"),
        };
        let out = match item {
            None => None,
            Some(Item::Data { kind, chunk, first, last }) => {
                if first {
                    assert!(self.message.is_none(), "a new message started inside another");
                    self.message = Some((kind, Vec::new()));
                }
                let (_, bytes) = self.message.as_mut().expect("data piece outside a message");
                bytes.extend_from_slice(chunk);
                match self.message.take() {
                    Some((kind, bytes)) if last && self.decoder.compressed() => {
                        let (inflater, context) = self.inflater.as_mut().expect("compressed without deflate");
                        let mut out = Vec::new();
                        inflater
                            .inflate(&bytes, kind, 1 << 30, &mut out, !*context)
                            .expect("valid compressed message");
                        self.compressed_received += 1;
                        Some(Received::Message(kind, out))
                    }
                    Some((kind, bytes)) if last => Some(Received::Message(kind, bytes)),
                    unfinished => {
                        self.message = unfinished;
                        None
                    }
                }
            }
            Some(Item::Ping(p)) => Some(Received::Ping(p.to_vec())),
            Some(Item::Pong(p)) => Some(Received::Pong(p.to_vec())),
            Some(Item::Close { code, reason }) => {
                Some(Received::Close(code.map_or(1005, |c| c.0), reason.to_owned()))
            }
        };
        self.buf.drain(..used);
        (used, out)
    }

    /// Expects the server's close frame with `code`; returns its reason.
    pub(crate) fn expect_close(&mut self, code: u16) -> String {
        match self.recv() {
            Received::Close(got, reason) => {
                assert_eq!(got, code, "close code (reason {reason:?})");
                reason
            }
            other => panic!("expected close {code}, got {}", describe(&other)),
        }
    }

    /// Expects the server to close the TCP connection.
    pub(crate) fn expect_eof(&mut self) {
        match self.recv() {
            Received::Eof => {}
            other => panic!("expected EOF, got {}", describe(&other)),
        }
    }

    pub(crate) fn expect_text(&mut self, text: &str) {
        match self.recv() {
            Received::Message(DataKind::Text, bytes) => assert_eq!(String::from_utf8_lossy(&bytes), text),
            other => panic!("expected text {text:?}, got {}", describe(&other)),
        }
    }

    pub(crate) fn expect_binary(&mut self, payload: &[u8]) {
        match self.recv() {
            Received::Message(DataKind::Binary, bytes) => assert!(bytes == payload, "binary payload differs"),
            other => panic!("expected {} binary bytes, got {}", payload.len(), describe(&other)),
        }
    }

    /// Expects nothing at all to arrive for `wait`.
    pub(crate) fn expect_silence(&mut self, wait: Duration) {
        if let Some(got) = self.recv_timeout(wait) {
            panic!("expected nothing, got {}", describe(&got));
        }
    }

    /// Sends a text message and expects it back.
    pub(crate) fn echo(&mut self, text: &str) {
        self.send_text(text);
        self.expect_text(text);
    }

    /// Client-initiated close handshake: sends `code`, expects it echoed, then the server's FIN.
    pub(crate) fn close_handshake(&mut self, code: u16) {
        self.send_close(code, "bye");
        self.expect_close(code);
        self.expect_eof();
    }
}

/// A short description of what arrived (payloads abbreviated).
pub(crate) fn describe(received: &Received) -> String {
    match received {
        Received::Message(kind, bytes) if bytes.len() > 64 => {
            format!("{kind:?} message of {} bytes", bytes.len())
        }
        Received::Message(kind, bytes) => format!("{kind:?} {:?}", String::from_utf8_lossy(bytes)),
        other => format!("{other:?}"),
    }
}

pub(crate) fn write_bytewise(stream: &mut TcpStream, bytes: &[u8], pause: Duration) -> io::Result<()> {
    for b in bytes {
        stream.write_all(std::slice::from_ref(b))?;
        stream.flush()?;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    Ok(())
}

/// An HTTP response read to the end of the connection.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl HttpResponse {
    /// The first value of a header, name matched case-insensitively.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends raw request bytes on a new connection and reads the answer until the server closes.
pub(crate) fn raw_http(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = tcp_connect(addr);
    stream.write_all(request).expect("write request");
    read_http(&mut stream)
}

/// Reads an HTTP response until the server closes the connection.
pub(crate) fn read_http(stream: &mut TcpStream) -> HttpResponse {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset after the answer still leaves the answer readable.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !bytes.is_empty() => break,
            Err(e) => {
                panic!("reading the HTTP answer failed: {e} (got {:?})", String::from_utf8_lossy(&bytes))
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no complete head: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    HttpResponse { status, head: head.to_owned(), body: body.to_owned() }
}

/// A builder on a free loopback port with one loop.
pub(crate) fn builder() -> ServerBuilder {
    Server::builder().bind("127.0.0.1:0").expect("bind address").loops(1)
}

/// [`builder`] with the inline echo hook (like examples/echo.rs).
pub(crate) fn echo_builder() -> ServerBuilder {
    builder().on_message(|inline, kind, payload| {
        inline.reply(kind, payload);
        Flow::Consumed
    })
}

/// An echo server with one loop and default options.
pub(crate) fn echo_server() -> Server {
    echo_builder().start().expect("start server")
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where a test takes events from: the server's receivers, or a channel a test worker forwards
/// them to.
pub(crate) trait EventSource<T = ()> {
    fn recv_within(&self, timeout: Duration) -> Option<throng::Event<T>>;
}

impl<T: Send + 'static> EventSource<T> for throng::Events<T> {
    fn recv_within(&self, timeout: Duration) -> Option<throng::Event<T>> {
        self.recv_timeout(timeout).ok()
    }
}

impl EventSource for crossbeam_channel::Receiver<throng::Event> {
    fn recv_within(&self, timeout: Duration) -> Option<throng::Event> {
        self.recv_timeout(timeout).ok()
    }
}

/// The next event, or a panic after [`READ_TIMEOUT`].
pub(crate) fn next_event<T>(events: &impl EventSource<T>) -> throng::Event<T> {
    events.recv_within(READ_TIMEOUT).expect("an event within the timeout")
}
