//! Client side: the upgrade request we send and the server's 101 response we check.

use std::fmt;

use super::accept::{accept_key, accept_key_str, encode_nonce};
use super::head::{has_token, is_field_byte, is_token, is_vchar, HeaderTable, List, Scanner, Span};
use super::response::{check_headers, push_headers};
use super::{HandshakeError, Header, Parsed, RequestLimits};

/// Headers [`ClientRequest`] writes itself and refuses among the extra ones.
const REQUEST_RESERVED: [&str; 7] = [
    "host",
    "upgrade",
    "connection",
    "origin",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
];

/// An upgrade request to write (RFC 6455 §4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientRequest<'a> {
    /// `Host` value: `host` or `host:port`, visible ASCII.
    pub host: &'a str,
    /// Origin-form target: `/path?query`.
    pub path_and_query: &'a str,
    /// `Origin`, if any (browsers send one; other clients need not).
    pub origin: Option<&'a str>,
    /// Subprotocols to offer, most preferred first; each must be a token.
    pub subprotocols: &'a [&'a str],
    /// Additional headers (e.g. `Authorization`, `Sec-WebSocket-Extensions`), sanitised.
    pub extra_headers: &'a [(&'a str, &'a str)],
}

impl<'a> ClientRequest<'a> {
    /// A request for `path_and_query` on `host` with no options.
    pub fn new(host: &'a str, path_and_query: &'a str) -> Self {
        ClientRequest { host, path_and_query, ..ClientRequest::default() }
    }

    /// Appends the request with a fresh random key from the OS and returns what the response
    /// must match. Errors (nothing written) on unsendable input: see [`write_with_nonce`].
    ///
    /// [`write_with_nonce`]: Self::write_with_nonce
    pub fn write(&self, out: &mut Vec<u8>) -> Result<ClientHandshake, HandshakeError> {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(|_| HandshakeError::RandomUnavailable)?;
        self.write_with_nonce(out, &nonce)
    }

    /// [`write`](Self::write) with a caller-chosen 16-byte nonce (deterministic tests only: real
    /// keys must be random). Errors, with nothing written: [`InvalidRequestTarget`], a host,
    /// origin or extra value with a control character or a subprotocol that is not a token
    /// ([`InvalidHeaderValue`]), a bad or reserved extra header name ([`InvalidHeaderName`],
    /// [`ReservedHeader`]).
    ///
    /// [`InvalidRequestTarget`]: HandshakeError::InvalidRequestTarget
    /// [`InvalidHeaderValue`]: HandshakeError::InvalidHeaderValue
    /// [`InvalidHeaderName`]: HandshakeError::InvalidHeaderName
    /// [`ReservedHeader`]: HandshakeError::ReservedHeader
    pub fn write_with_nonce(
        &self,
        out: &mut Vec<u8>,
        nonce: &[u8; 16],
    ) -> Result<ClientHandshake, HandshakeError> {
        let target = self.path_and_query.as_bytes();
        if target.first() != Some(&b'/') || !target.iter().all(|&b| is_vchar(b) && b != b'#') {
            return Err(HandshakeError::InvalidRequestTarget);
        }
        let host_ok = !self.host.is_empty() && self.host.bytes().all(is_vchar);
        let origin_ok = self.origin.is_none_or(|o| o.bytes().all(is_field_byte));
        let protocols_ok = self.subprotocols.iter().all(|p| is_token(p.as_bytes()));
        if !host_ok || !origin_ok || !protocols_ok {
            return Err(HandshakeError::InvalidHeaderValue);
        }
        let extra = check_headers(self.extra_headers, &REQUEST_RESERVED)?;

        let key = encode_nonce(nonce);
        out.reserve(160 + target.len() + self.host.len() + extra + 64);
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(target);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
        out.extend_from_slice(&key);
        out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\n");
        if let Some(origin) = self.origin {
            push_headers(out, &[("Origin", origin)]);
        }
        for (i, protocol) in self.subprotocols.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"Sec-WebSocket-Protocol: " } else { b", " });
            out.extend_from_slice(protocol.as_bytes());
        }
        if !self.subprotocols.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        push_headers(out, self.extra_headers);
        out.extend_from_slice(b"\r\n");

        let offers_extensions =
            (self.extra_headers.iter()).any(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions"));
        Ok(ClientHandshake {
            key,
            accept: accept_key(&key),
            protocols: self.subprotocols.iter().map(|p| Box::from(*p)).collect(),
            offers_extensions,
        })
    }
}

/// What a written request expects back: the accept value and the offered subprotocols.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHandshake {
    key: [u8; 24],
    accept: [u8; 28],
    protocols: Vec<Box<str>>,
    offers_extensions: bool,
}

impl ClientHandshake {
    /// The `Sec-WebSocket-Key` that was sent.
    pub fn key(&self) -> &str {
        std::str::from_utf8(&self.key).unwrap_or_default()
    }

    /// The `Sec-WebSocket-Accept` the server must answer with.
    pub fn expected_accept(&self) -> &str {
        accept_key_str(&self.accept)
    }

    /// The subprotocols that were offered.
    pub fn offered_protocols(&self) -> impl Iterator<Item = &str> {
        self.protocols.iter().map(|p| &**p)
    }

    /// [`parse_response_with_limits`](Self::parse_response_with_limits) with default limits.
    pub fn parse_response<'b>(&self, buf: &'b [u8]) -> Result<Parsed<ServerResponse<'b>>, HandshakeError> {
        self.parse_response_with_limits(buf, &RequestLimits::default())
    }

    /// Parses and checks the server's answer from the start of `buf`: `HTTP/1.1 101`, `Upgrade`
    /// with `websocket`, `Connection` with `upgrade`, exactly one matching
    /// `Sec-WebSocket-Accept`, at most one `Sec-WebSocket-Protocol` naming one offered protocol,
    /// and no `Sec-WebSocket-Extensions` unless the request offered some (then checking them is
    /// the caller's job). A non-101 status is reported as soon as the status line is complete.
    pub fn parse_response_with_limits<'b>(
        &self,
        buf: &'b [u8],
        limits: &RequestLimits,
    ) -> Result<Parsed<ServerResponse<'b>>, HandshakeError> {
        let mut scan = Scanner::new(buf, limits);
        let Parsed::Complete(line) = scan.next_line()? else { return Ok(Parsed::Partial) };
        status_line(line.slice(buf))?;
        let mut headers = HeaderTable::new();
        let len = match scan.headers(&mut headers)? {
            Parsed::Complete(len) => len,
            Parsed::Partial => return Ok(Parsed::Partial),
        };
        let subprotocol = self.check(buf, &headers)?;
        Ok(Parsed::Complete(ServerResponse {
            buf,
            len: u16::try_from(len).map_err(|_| HandshakeError::HeaderTooLarge)?,
            subprotocol,
            headers,
        }))
    }

    /// The header rules of a 101 response; returns the chosen subprotocol's span.
    fn check(&self, buf: &[u8], headers: &HeaderTable) -> Result<Option<Span>, HandshakeError> {
        let values = |name| headers.values(buf, name);
        if !has_token(values("upgrade"), "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !has_token(values("connection"), "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let mut accepts = values("sec-websocket-accept");
        let accept = (accepts.next(), accepts.next());
        if accept != (Some(&self.accept[..]), None) {
            return Err(HandshakeError::AcceptMismatch);
        }
        if !self.offers_extensions && values("sec-websocket-extensions").next().is_some() {
            return Err(HandshakeError::UnexpectedExtension);
        }
        let mut subprotocol = None;
        for &(name, value) in headers.spans() {
            if !name.slice(buf).eq_ignore_ascii_case(b"sec-websocket-protocol") {
                continue;
            }
            let mut items = List::new(value.slice(buf));
            let chosen = match (items.next(), items.next()) {
                (Some(p), None) if p == value.slice(buf) => p,
                _ => return Err(HandshakeError::UnexpectedProtocol),
            };
            let offered = self.protocols.iter().any(|p| p.as_bytes() == chosen);
            if !offered || subprotocol.replace(value).is_some() {
                return Err(HandshakeError::UnexpectedProtocol);
            }
        }
        Ok(subprotocol)
    }
}

/// `HTTP/1.1 SP 101 [SP reason]`.
fn status_line(line: &[u8]) -> Result<(), HandshakeError> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if version != b"HTTP/1.1" {
        return Err(if version.starts_with(b"HTTP/") {
            HandshakeError::UnsupportedHttpVersion
        } else {
            HandshakeError::Malformed("invalid status line")
        });
    }
    let code = match code {
        [a, b, c] if code.iter().all(u8::is_ascii_digit) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(HandshakeError::Malformed("invalid status code")),
    };
    if !parts.next().unwrap_or_default().iter().all(|&b| is_field_byte(b)) {
        return Err(HandshakeError::Malformed("control character in reason phrase"));
    }
    match code {
        101 => Ok(()),
        code => Err(HandshakeError::BadStatus(code)),
    }
}

/// A checked 101 response, borrowing from the read buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerResponse<'b> {
    buf: &'b [u8],
    len: u16,
    subprotocol: Option<Span>,
    headers: HeaderTable,
}

#[allow(clippy::len_without_is_empty)] // a complete head is never empty
impl<'b> ServerResponse<'b> {
    /// Bytes the response occupied, final blank line included; `buf[len()..]` are frame bytes
    /// the server sent right after it.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The subprotocol the server chose (one we offered), if any.
    pub fn subprotocol(&self) -> Option<&'b str> {
        self.subprotocol.map(|p| p.str(self.buf))
    }

    /// The first value of a header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers.get(self.buf, name)
    }

    /// Every header line, in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'b>> + '_ {
        self.headers.iter(self.buf)
    }

    /// The extensions the server accepted (`name; param=value`), trimmed, across repeated
    /// `Sec-WebSocket-Extensions` headers: what
    /// [`deflate::accept_response`](crate::proto::deflate::accept_response) checks. A response
    /// value may hold non-ASCII bytes (obs-text); an element that is not UTF-8 comes out as
    /// `"\u{fffd}"`, which names no extension.
    pub fn extensions(&self) -> impl Iterator<Item = &'b str> + '_ {
        let values = self.headers.values(self.buf, "sec-websocket-extensions");
        values.flat_map(List::new).map(|e| std::str::from_utf8(e).unwrap_or("\u{fffd}"))
    }
}

impl fmt::Debug for ServerResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerResponse")
            .field("len", &self.len)
            .field("subprotocol", &self.subprotocol())
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
