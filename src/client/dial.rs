//! Dialing: resolve, connect, the TLS handshake for `wss://`, write the upgrade request, read
//! the 101.

use std::io;
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::conn::{Connection, READ_BUFFER};
use super::error::{io_error, is_timeout};
use super::stream::Stream;
use super::url::{self, Target};
use super::{ClientError, ClientOptions};
use crate::proto::deflate;
use crate::proto::handshake::{ClientRequest, HandshakeError, Parsed};

/// The header that carries extension offers and answers.
const EXTENSIONS: &str = "Sec-WebSocket-Extensions";

/// Opens a WebSocket connection to a `ws://` or `wss://host[:port][/path][?query]` URL.
///
/// Resolves the host, connects (within [`ClientOptions::connect_timeout`], trying each address in
/// turn), for `wss://` runs the TLS handshake with [`ClientOptions::tls`] (server name: the
/// URL's host), sends the upgrade request and checks the server's 101 response (TLS and upgrade
/// within [`ClientOptions::handshake_timeout`]). Errors: [`ClientError::InvalidUrl`] before any
/// I/O; [`ClientError::Io`] when the connect fails (e.g. `ConnectionRefused`);
/// [`ClientError::Tls`] when the TLS handshake does (e.g. the certificate expired, or is not
/// valid for the host); [`ClientError::Handshake`] when the server answers anything but a valid
/// 101 (e.g. `BadStatus(403)`, or an invalid permessage-deflate answer to
/// [`ClientOptions::deflate`]); [`ClientError::Timeout`].
pub fn connect(url: &str, options: &ClientOptions) -> Result<Connection, ClientError> {
    let target = url::parse(url)?;
    let tls = match target.tls {
        true => Some((tls_config(options)?, server_name(&target.host)?)),
        false => None,
    };
    let tcp = dial(&target, options.connect_timeout)?;
    tcp.set_nodelay(true)?;
    let deadline = options.handshake_timeout.map(|t| Instant::now() + t);
    let stream = match tls {
        Some((config, name)) => tls_handshake(tcp, config, name, &target, deadline)?,
        None => Stream::Plain(tcp),
    };
    handshake(stream, &target, options, deadline)
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

/// The configuration `wss://` connections use: the options', or the process-wide default.
fn tls_config(options: &ClientOptions) -> Result<Arc<ClientConfig>, ClientError> {
    static DEFAULT: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    if let Some(config) = &options.tls {
        return Ok(Arc::clone(config));
    }
    // Built once: the webpki roots are parsed into a store of about 150 anchors.
    match DEFAULT.get_or_init(|| crate::tls::client_config(None).map_err(|e| e.to_string())) {
        Ok(config) => Ok(Arc::clone(config)),
        Err(why) => Err(ClientError::Tls {
            server: "any server".to_owned(),
            error: rustls::Error::General(format!("no default TLS configuration: {why}")),
        }),
    }
}

/// The name the TLS handshake sends (SNI, not for an IP address) and the certificate must be
/// valid for.
fn server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| ClientError::InvalidUrl("host is not a valid TLS server name (DNS name or IP address)"))
}

/// Runs the TLS handshake on a connected socket, every read and write bounded by `deadline`.
fn tls_handshake(
    mut tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    target: &Target,
    deadline: Option<Instant>,
) -> Result<Stream, ClientError> {
    let peer = tcp.peer_addr()?;
    // Who the error names: the host as written, and where it led when that was a name.
    let server = || match target.host.parse::<IpAddr>() {
        Ok(_) => peer.to_string(),
        Err(_) => format!("{} ({peer})", target.host),
    };
    let failed = |error| ClientError::Tls { server: server(), error };
    let mut conn = ClientConnection::new(config, name).map_err(failed)?;
    // Stepped by hand rather than with `complete_io`, which reads as often as it needs: each
    // step here gets the time left.
    while conn.is_handshaking() || conn.wants_write() {
        if conn.wants_write() {
            tcp.set_write_timeout(left(deadline)?)?;
            match conn.write_tls(&mut tcp) {
                Ok(0) => return Err(ClientError::Io(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
            continue;
        }
        tcp.set_read_timeout(left(deadline)?)?;
        match conn.read_tls(&mut tcp) {
            Ok(0) => {
                let why = "server closed the connection during the TLS handshake";
                return Err(ClientError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        }
        if let Err(error) = conn.process_new_packets() {
            // Tell the server why (the alert rustls queued); the error is ours either way.
            let _ = conn.write_tls(&mut tcp);
            return Err(failed(error));
        }
    }
    Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
}

fn handshake(
    mut stream: Stream,
    target: &Target,
    options: &ClientOptions,
    deadline: Option<Instant>,
) -> Result<Connection, ClientError> {
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
    stream.tcp().set_write_timeout(left(deadline)?)?;
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
        stream.tcp().set_read_timeout(left(deadline)?)?;
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
    stream.tcp().set_read_timeout(options.read_timeout)?;
    stream.tcp().set_write_timeout(options.write_timeout)?;
    Ok(Connection::new(stream, buf, head_len..filled, subprotocol, compression, options))
}
