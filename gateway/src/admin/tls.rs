//! The admin listener over TLS: a buffered rustls [`ServerConnection`] on the blocking socket
//! (the admin API has few connections, so the buffers do not matter).
//!
//! rustls' own `StreamOwned` reads the socket until a whole record is in, however slowly its
//! bytes arrive, and drives the handshake to its end the same way: a peer trickling bytes
//! would hold the thread past every deadline. Here the handshake has a deadline of its own,
//! and a read returns after each socket read (`WouldBlock` when no plaintext came of it), so
//! the request and idle limits of [`super::http::read_request`] hold over TLS as they do
//! without it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use throng::tls::rustls::{ServerConfig, ServerConnection};

use super::http::Stream;

/// An admin connection after its TLS handshake.
pub(crate) struct TlsStream {
    conn: ServerConnection,
    sock: TcpStream,
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The handshake did not finish in time.
    Timeout,
    /// The peer closed, or the socket failed.
    Io(io::Error),
    /// rustls refused what the peer sent (not TLS, no common parameters, an alert).
    Tls(throng::tls::rustls::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Timeout => f.write_str("the TLS handshake did not finish in time"),
            HandshakeError::Io(e) => write!(f, "TLS handshake: {e}"),
            HandshakeError::Tls(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

impl TlsStream {
    /// Runs the server side of the handshake on `sock` (whose write timeout bounds each write)
    /// within `within`, however the peer's bytes trickle in.
    pub(crate) fn accept(
        config: Arc<ServerConfig>,
        mut sock: TcpStream,
        within: Duration,
    ) -> Result<TlsStream, HandshakeError> {
        let deadline = Instant::now() + within;
        let mut conn = ServerConnection::new(config).map_err(HandshakeError::Tls)?;
        loop {
            while conn.wants_write() {
                conn.write_tls(&mut sock).map_err(HandshakeError::Io)?;
            }
            if !conn.is_handshaking() {
                return Ok(TlsStream { conn, sock });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandshakeError::Timeout);
            }
            sock.set_read_timeout(Some(left)).map_err(HandshakeError::Io)?;
            match conn.read_tls(&mut sock) {
                Ok(0) => return Err(HandshakeError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HandshakeError::Io(e)),
            }
            if let Err(e) = conn.process_new_packets() {
                // The alert that says why is queued: send it, as far as the socket takes it.
                let _ = conn.write_tls(&mut sock);
                return Err(HandshakeError::Tls(e));
            }
        }
    }

    /// The socket under the session, for shutting it down and draining it.
    pub(crate) fn socket(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// Ends the session with a `close_notify`, so the peer knows the answer was whole.
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.write_out();
    }

    fn write_out(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl Read for TlsStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // One socket read (its timeout set by the caller), then back to the caller unless it
            // brought plaintext or the end.
            let n = self.conn.read_tls(&mut self.sock)?;
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    let _ = self.write_out();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            // A key update or other post-handshake message may want an answer.
            self.write_out()?;
            if n == 0 {
                // The end: what is left, then Ok(0) after a close_notify or UnexpectedEof
                // without one.
                return match self.conn.reader().read(out) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    other => other,
                };
            }
            if state.plaintext_bytes_to_read() == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(bytes)?;
        self.write_out()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        self.write_out()
    }
}

impl Stream for TlsStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.sock.set_read_timeout(Some(timeout))
    }
}
