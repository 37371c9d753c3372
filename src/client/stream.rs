//! The connection's bytes: plain TCP for `ws://`, TLS over TCP for `wss://`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

/// The socket a [`Connection`](super::Connection) reads and writes, with or without TLS.
///
/// An enum rather than a trait object: the plain path costs one branch per call and no
/// indirection.
pub(crate) enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`, handshake done. Boxed: the TLS state and its buffers are large next to a socket.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket, for addresses and timeouts.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(stream) => stream,
            Stream::Tls(tls) => &tls.sock,
        }
    }

    /// Reads plaintext as `TcpStream::read` does: `Ok(0)` at the end of the stream.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buf),
            Stream::Tls(tls) => match tls.read(buf) {
                // The server closed TCP without close_notify. Many do after the close handshake;
                // a WebSocket's own framing and close frame already tell a truncated stream from
                // a finished one, so this is the end of the stream like any other.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }

    /// Writes all of `bytes`; over TLS, the records too (rustls would otherwise keep what the
    /// socket did not take for the next call, and report a failed write only then).
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.write_all(bytes),
            Stream::Tls(tls) => {
                tls.write_all(bytes)?;
                tls.flush()
            }
        }
    }

    /// Ends the stream: over TLS a close_notify first (best effort, within `timeout`: the
    /// server may be gone or not reading), then the TCP shutdown.
    pub(crate) fn shutdown(&mut self, timeout: Duration) {
        if let Stream::Tls(tls) = self {
            tls.conn.send_close_notify();
            // A zero timeout is refused by the socket; the alert is a few dozen bytes anyway.
            if tls.sock.set_write_timeout(Some(timeout.max(Duration::from_millis(1)))).is_ok() {
                while tls.conn.wants_write() {
                    if !matches!(tls.conn.write_tls(&mut tls.sock), Ok(n) if n > 0) {
                        break;
                    }
                }
            }
        }
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}
