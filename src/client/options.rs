//! Dialer settings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::tls::TlsError;

/// How [`connect`](super::connect) dials and what the connection accepts.
///
/// Build one with struct update syntax:
/// ```
/// use std::time::Duration;
/// let options = throng::client::ClientOptions {
///     subprotocols: vec!["chat".into()],
///     read_timeout: Some(Duration::from_secs(30)),
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
// Not `PartialEq`: a rustls configuration has no equality.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Subprotocols to offer, most preferred first; each must be an HTTP token.
    pub subprotocols: Vec<String>,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// Extra request headers (e.g. `Authorization`). The handshake's own headers (`Host`,
    /// `Upgrade`, `Sec-WebSocket-*`…) are refused with
    /// [`HandshakeError::ReservedHeader`](crate::proto::handshake::HandshakeError::ReservedHeader).
    pub headers: Vec<(String, String)>,
    /// Limit on the TCP connect, over all resolved addresses (name resolution itself is not
    /// bounded). `None`: the system's limit. Default 10 s.
    pub connect_timeout: Option<Duration>,
    /// Limit on the TLS handshake (`wss://`), writing the upgrade request and reading the 101
    /// response, together. Default 10 s.
    pub handshake_timeout: Option<Duration>,
    /// Limit on each blocking read in [`Connection::recv`](super::Connection::recv); on expiry
    /// `recv` returns [`ClientError::Timeout`](super::ClientError::Timeout) and the connection
    /// stays usable. Default `None` (wait forever).
    pub read_timeout: Option<Duration>,
    /// Limit on each blocking write; a write that times out ends the connection (a frame may be
    /// half sent). Default `None`.
    pub write_timeout: Option<Duration>,
    /// How long [`Connection::close`](super::Connection::close) waits for the server's close frame,
    /// and how long the client then waits for the server to close TCP. Default 5 s.
    pub close_timeout: Duration,
    /// The largest message accepted (all its frames); a larger one fails the connection with 1009.
    /// A compressed message ([`deflate`](Self::deflate)) is held to it both as received and as
    /// inflated (inflating stops there). Default 16 MiB.
    pub max_message_size: u64,
    /// The largest single frame accepted; a larger one fails the connection with 1009.
    /// Default 16 MiB.
    pub max_frame_size: u64,
    /// Offer permessage-deflate (RFC 7692): `permessage-deflate; client_max_window_bits`, which
    /// lets both sides keep their compression window between messages (one compressor and one
    /// inflater per connection, up to about 300 KiB together with 32 KiB windows). When the
    /// server accepts, every data message is sent compressed and compressed messages are
    /// inflated, up to [`max_message_size`](Self::max_message_size) inflated bytes;
    /// [`Connection::compression`](super::Connection::compression) tells what was agreed. A
    /// server that declines leaves the connection uncompressed; an invalid answer fails the
    /// handshake ([`HandshakeError::InvalidExtensionResponse`] or
    /// [`HandshakeError::UnexpectedExtension`]). With it set, a `Sec-WebSocket-Extensions` among
    /// [`headers`](Self::headers) is refused ([`HandshakeError::ReservedHeader`]); without it
    /// such a header is sent as given, any answer is accepted and no extension is applied.
    /// A compressed send holds the compressed copy of the message while it goes out.
    /// Default `false`.
    ///
    /// [`HandshakeError::InvalidExtensionResponse`]: crate::proto::handshake::HandshakeError::InvalidExtensionResponse
    /// [`HandshakeError::UnexpectedExtension`]: crate::proto::handshake::HandshakeError::UnexpectedExtension
    /// [`HandshakeError::ReservedHeader`]: crate::proto::handshake::HandshakeError::ReservedHeader
    pub deflate: bool,
    /// The TLS configuration of `wss://` connections: whom to trust, which versions, session
    /// resumption. `None` (the default): [`tls::client_config(None)`](crate::tls::client_config),
    /// the webpki roots, built once for the process. The server name sent and checked is the
    /// URL's host (a name, or an IP address the certificate must list). Set it with
    /// [`tls_config`](Self::tls_config) or [`ca_file`](Self::ca_file).
    pub tls: Option<Arc<ClientConfig>>,
}

impl ClientOptions {
    /// These options with `config` for `wss://` connections.
    pub fn tls_config(self, config: Arc<ClientConfig>) -> Self {
        Self { tls: Some(config), ..self }
    }

    /// These options trusting only the certificate authorities of `path` (PEM, one or more
    /// certificates) for `wss://` connections, instead of the webpki roots. Fails when the file
    /// cannot be read or holds no certificate.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        Ok(self.tls_config(crate::tls::client_config(Some(path.as_ref()))?))
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            subprotocols: Vec::new(),
            origin: None,
            headers: Vec::new(),
            connect_timeout: Some(Duration::from_secs(10)),
            handshake_timeout: Some(Duration::from_secs(10)),
            read_timeout: None,
            write_timeout: None,
            close_timeout: Duration::from_secs(5),
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            deflate: false,
            tls: None,
        }
    }
}
