//! What can go wrong for a client connection.

use std::{fmt, io};

use crate::proto::handshake::HandshakeError;
use crate::proto::ProtocolError;

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed: name resolution, connect (e.g. `ConnectionRefused`), read or write.
    /// Local misuse (a ping over 125 bytes, an unsendable close code) is `InvalidInput`.
    Io(io::Error),
    /// The URL is not `ws[s]://host[:port][/path][?query]`; the text says what is wrong.
    InvalidUrl(&'static str),
    /// The upgrade failed: the server answered something other than a valid 101
    /// ([`HandshakeError::BadStatus`] carries its status), or an option cannot be sent.
    Handshake(HandshakeError),
    /// The server broke RFC 6455 (or a configured limit). The connection was failed: a close
    /// frame with [`ProtocolError::close_code`] was sent and the socket closed.
    Protocol(ProtocolError),
    /// The connection is closed: the server's close code and reason (1005 when its close frame
    /// had no code, 1006 when the connection dropped without one). Every call after the end of a
    /// connection reports how it ended this way.
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A deadline passed: connect, handshake, or a read with
    /// [`ClientOptions::read_timeout`](super::ClientOptions::read_timeout) (the connection stays
    /// usable after a read timeout), or the wait for the server's close frame.
    Timeout,
    /// The TLS handshake of a `wss://` connection failed: the server's certificate was refused
    /// (expired, not valid for the URL's host, issued by an authority the
    /// [`tls_config`](super::ClientOptions::tls_config) does not trust) or the server answered
    /// with an alert or something that is not TLS. The socket was closed.
    Tls {
        /// Whom the handshake was with: the URL's host and the address dialed.
        server: String,
        /// What rustls said, e.g. `invalid peer certificate: UnknownIssuer`.
        error: rustls::Error,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::InvalidUrl(why) => write!(f, "invalid WebSocket URL: {why}"),
            Self::Handshake(e) => write!(f, "WebSocket handshake failed: {e}"),
            Self::Protocol(e) => {
                write!(f, "WebSocket protocol error: {e} (closed with {})", e.close_code().0)
            }
            Self::Closed { code, reason } if reason.is_empty() => write!(f, "connection closed ({code})"),
            Self::Closed { code, reason } => write!(f, "connection closed ({code}: {reason})"),
            Self::Timeout => f.write_str("timed out"),
            Self::Tls { server, error } => write!(f, "TLS handshake with {server} failed: {error}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Handshake(e) => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Tls { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> Self {
        Self::Handshake(e)
    }
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

/// Whether a socket error is an expired read or write timeout (`EAGAIN` on a blocking socket).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// An I/O error, with timeouts reported as [`ClientError::Timeout`].
pub(crate) fn io_error(e: io::Error) -> ClientError {
    if is_timeout(&e) {
        ClientError::Timeout
    } else {
        ClientError::Io(e)
    }
}
