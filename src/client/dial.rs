//! Dialing: resolve, connect, write the upgrade request, read the 101.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::conn::{Connection, READ_BUFFER};
use super::error::{io_error, is_timeout};
use super::url::{self, Target};
use super::{ClientError, ClientOptions};
use crate::proto::deflate;
use crate::proto::handshake::{ClientRequest, HandshakeError, Parsed};

/// The header that carries extension offers and answers.
const EXTENSIONS: &str = "Sec-WebSocket-Extensions";

/// Opens a WebSocket connection to a `ws://host[:port][/path][?query]` URL.
///
/// Resolves the host, connects (within [`ClientOptions::connect_timeout`], trying each address in
/// turn), sends the upgrade request and checks the server's 101 response (within
/// [`ClientOptions::handshake_timeout`]). Errors: [`ClientError::InvalidUrl`] or
/// [`ClientError::TlsUnsupported`] before any I/O; [`ClientError::Io`] when the connect fails
/// (e.g. `ConnectionRefused`); [`ClientError::Handshake`] when the server answers anything but
/// a valid 101 (e.g. `BadStatus(403)`, or an invalid permessage-deflate answer to
/// [`ClientOptions::deflate`]); [`ClientError::Timeout`].
pub fn connect(url: &str, options: &ClientOptions) -> Result<Connection, ClientError> {
    let target = url::parse(url)?;
    let stream = dial(&target, options.connect_timeout)?;
    handshake(stream, &target, options)
}

/// The time left until `deadline`, or [`ClientError::Timeout`] if none is.
pub(crate) fn left(deadline: Option<Instant>) -> Result<Option<Duration>, ClientError> {
    match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
        Some(left) if left.is_zero() => Err(ClientError::Timeout),
        other => Ok(other),
    }
}

fn dial(target: &Target, timeout: Option<Duration>) -> Result<TcpStream, ClientError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut last_error = None;
    for addr in (target.host.as_str(), target.port).to_socket_addrs()? {
        let attempt = match left(deadline)? {
            Some(left) => TcpStream::connect_timeout(&addr, left),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => io_error(e),
        None => ClientError::Io(io::Error::new(io::ErrorKind::NotFound, "host resolved to no address")),
    })
}

fn handshake(
    mut stream: TcpStream,
    target: &Target,
    options: &ClientOptions,
) -> Result<Connection, ClientError> {
    let deadline = options.handshake_timeout.map(|t| Instant::now() + t);
    stream.set_nodelay(true)?;

    let protocols: Vec<&str> = options.subprotocols.iter().map(String::as_str).collect();
    let mut headers: Vec<(&str, &str)> =
        options.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    if options.deflate {
        // The offer is ours: another one of the caller's would make the answer ambiguous.
        if headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(EXTENSIONS)) {
            return Err(ClientError::Handshake(HandshakeError::ReservedHeader));
        }
        headers.push((EXTENSIONS, deflate::client_offer(false)));
    }
    let request = ClientRequest {
        host: &target.authority,
        path_and_query: &target.path_and_query,
        origin: options.origin.as_deref(),
        subprotocols: &protocols,
        extra_headers: &headers,
    };
    let mut out = Vec::new();
    let expected = request.write(&mut out)?;
    stream.set_write_timeout(left(deadline)?)?;
    stream.write_all(&out).map_err(io_error)?;

    // The response is read straight into what becomes the connection's read buffer, so frames the
    // server sent right behind its 101 stay where the decoder will look for them.
    let mut buf = vec![0u8; READ_BUFFER].into_boxed_slice();
    let mut filled = 0;
    let (head_len, subprotocol, compression) = loop {
        if filled > 0 {
            if let Parsed::Complete(response) = expected.parse_response(&buf[..filled])? {
                // Without our offer, extensions the caller offered are theirs to judge (none is
                // applied); with it, the answer must be a valid permessage-deflate or nothing.
                let compression =
                    if options.deflate { deflate::accept_response(response.extensions())? } else { None };
                break (response.len(), response.subprotocol().map(str::to_owned), compression);
            }
        }
        stream.set_read_timeout(left(deadline)?)?;
        // The parser refuses a head longer than its limit (8 KiB) well before the buffer is full.
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                let why = "server closed the connection during the handshake";
                return Err(ClientError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ClientError::Timeout),
            Err(e) => return Err(ClientError::Io(e)),
        }
    };
    stream.set_read_timeout(options.read_timeout)?;
    stream.set_write_timeout(options.write_timeout)?;
    Ok(Connection::new(stream, buf, head_len..filled, subprotocol, compression, options))
}
