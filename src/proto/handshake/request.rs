//! Server side: the client's upgrade request, parsed in place from the read buffer.

use std::fmt;

use super::accept::{accept_key, key_is_valid};
use super::head::{has_token, is_ascii_text, is_tchar, is_token, is_vchar, HeaderTable, List, Scanner, Span};
use super::{select_subprotocol, HandshakeError, Header, Parsed, RequestLimits, MAX_HEAD_BYTES};

type Malformed = &'static str;

/// A valid WebSocket upgrade request, borrowing from the read buffer.
///
/// Everything RFC 6455 §4.2.1 requires has been checked: `GET`, `HTTP/1.1`, one `Host`, `Upgrade`
/// with `websocket`, `Connection` with `upgrade`, `Sec-WebSocket-Version: 13`, and one
/// `Sec-WebSocket-Key` of 16 base64 bytes. Path and origin policy are the application's.
#[derive(Clone, PartialEq, Eq)]
pub struct UpgradeRequest<'b> {
    buf: &'b [u8],
    len: u16,
    path: Span,
    query: Option<Span>,
    host: Span,
    origin: Option<Span>,
    key: Span,
    headers: HeaderTable,
}

#[allow(clippy::len_without_is_empty)] // a complete head is never empty
impl<'b> UpgradeRequest<'b> {
    /// Bytes the request occupied in the buffer, final blank line included; `buf[len()..]` are
    /// frame bytes the client pipelined after it.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The path, without the query; `/` for an absolute-form target without one.
    pub fn path(&self) -> &'b str {
        match self.path.str(self.buf) {
            "" => "/",
            path => path,
        }
    }

    /// The query string without its `?`, if the target had one.
    pub fn query(&self) -> Option<&'b str> {
        self.query.map(|q| q.str(self.buf))
    }

    /// The `Host` header (for an absolute-form target too: the target's authority is not used).
    pub fn host(&self) -> &'b str {
        self.host.str(self.buf)
    }

    /// The `Origin` header, if the client sent one (browsers always do).
    pub fn origin(&self) -> Option<&'b str> {
        self.origin.map(|o| o.str(self.buf))
    }

    /// `Sec-WebSocket-Key` as received (24 base64 characters).
    pub fn key(&self) -> &'b str {
        self.key.str(self.buf)
    }

    /// The `Sec-WebSocket-Accept` value answering this request's key.
    pub fn accept_key(&self) -> [u8; 28] {
        accept_key(self.key().as_bytes())
    }

    /// Offered subprotocols in order, across repeated `Sec-WebSocket-Protocol` headers.
    pub fn protocols(&self) -> impl Iterator<Item = &'b str> + '_ {
        self.list("sec-websocket-protocol")
    }

    /// Raw extension offers (`name; param=value`), trimmed, across repeated
    /// `Sec-WebSocket-Extensions` headers.
    pub fn extensions(&self) -> impl Iterator<Item = &'b str> + '_ {
        self.list("sec-websocket-extensions")
    }

    /// The first of `server_preference` the client offered; see [`select_subprotocol`].
    pub fn select_subprotocol<'p>(&self, server_preference: &[&'p str]) -> Option<&'p str> {
        select_subprotocol(self.protocols(), server_preference)
    }

    /// The first value of a header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers.get(self.buf, name)
    }

    /// [`header`](Self::header) as text; `None` also when the value is not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'b str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header line, in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'b>> + '_ {
        self.headers.iter(self.buf)
    }

    fn list(&self, name: &'static str) -> impl Iterator<Item = &'b str> + '_ {
        let buf = self.buf;
        let values = self.headers.values(buf, name);
        // Validated as ASCII at parse time.
        values.flat_map(List::new).map(|e| std::str::from_utf8(e).unwrap_or_default())
    }
}

impl fmt::Debug for UpgradeRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeRequest")
            .field("path", &self.path())
            .field("query", &self.query())
            .field("host", &self.host())
            .field("origin", &self.origin())
            .field("key", &self.key())
            .field("len", &self.len)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

/// Parses an upgrade request from the start of `buf`.
///
/// `Partial` means the head is not complete yet (call again with more bytes); an error means the
/// request must be refused with [`HandshakeError::status`]. Syntax errors in complete lines are
/// reported without waiting for the rest, as is a method that cannot be a token.
pub fn parse_request<'b>(
    buf: &'b [u8],
    limits: &RequestLimits,
) -> Result<Parsed<UpgradeRequest<'b>>, HandshakeError> {
    // Fail fast on bytes that cannot start a request (TLS, binary garbage). Only the bytes the
    // size limits let the first line have are looked at, the same window the line scanner uses:
    // so the answer (400 or 431) does not depend on how many bytes of the garbage have arrived.
    let window =
        buf.len().min(limits.max_line.saturating_add(2)).min(limits.max_header_bytes.min(MAX_HEAD_BYTES));
    let first = &buf[..window];
    let method = first.iter().take_while(|&&b| b != b' ').copied();
    if method.clone().any(|b| !is_tchar(b)) || first.first() == Some(&b' ') {
        return Err(HandshakeError::Malformed("invalid method"));
    }
    let mut scan = Scanner::new(buf, limits);
    let line = match scan.next_line()? {
        Parsed::Complete(line) => line,
        Parsed::Partial => return Ok(Parsed::Partial),
    };
    let (path, query) = request_line(buf, line)?;
    let mut headers = HeaderTable::new();
    let len = match scan.headers(&mut headers)? {
        Parsed::Complete(len) => len,
        Parsed::Partial => return Ok(Parsed::Partial),
    };

    let (mut host, mut origin, mut key) = (None, None, None);
    let (mut upgrade, mut connection) = (false, false);
    let (mut versions, mut keys) = (0u32, 0u32);
    let mut version_13 = false;
    for &(name, value) in headers.spans() {
        let name = name.slice(buf);
        let bytes = value.slice(buf);
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("host") {
            if host.replace(value).is_some() {
                return Err(HandshakeError::Malformed("duplicate Host"));
            }
        } else if is("upgrade") {
            upgrade |= has_token([bytes].into_iter(), "websocket");
        } else if is("connection") {
            connection |= has_token([bytes].into_iter(), "upgrade");
        } else if is("sec-websocket-version") {
            versions += 1;
            version_13 = bytes == b"13";
        } else if is("sec-websocket-key") {
            keys += 1;
            key = Some(value);
        } else if is("origin") {
            if origin.replace(value).is_some() {
                return Err(HandshakeError::Malformed("duplicate Origin"));
            }
            if !is_ascii_text(bytes) {
                return Err(HandshakeError::Malformed("invalid Origin"));
            }
        } else if is("sec-websocket-protocol") {
            if !List::new(bytes).all(is_token) {
                return Err(HandshakeError::Malformed("invalid Sec-WebSocket-Protocol"));
            }
        } else if is("sec-websocket-extensions") && !is_ascii_text(bytes) {
            return Err(HandshakeError::Malformed("invalid Sec-WebSocket-Extensions"));
        }
    }

    let host = host.filter(|h| !h.slice(buf).is_empty()).ok_or(HandshakeError::MissingHost)?;
    if !host.slice(buf).iter().all(|&b| is_vchar(b)) {
        return Err(HandshakeError::Malformed("invalid Host"));
    }
    if !upgrade {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !connection {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if versions != 1 || !version_13 {
        return Err(HandshakeError::UnsupportedWebSocketVersion);
    }
    let key = match (keys, key) {
        (1, Some(key)) if key_is_valid(key.slice(buf)) => key,
        (0, _) => return Err(HandshakeError::MissingKey),
        _ => return Err(HandshakeError::InvalidKey),
    };
    Ok(Parsed::Complete(UpgradeRequest {
        buf,
        len: u16::try_from(len).map_err(|_| HandshakeError::HeaderTooLarge)?,
        path,
        query,
        host,
        origin,
        key,
        headers,
    }))
}

/// `GET SP request-target SP HTTP/1.1`, single spaces; returns the path and query spans.
fn request_line(buf: &[u8], line: Span) -> Result<(Span, Option<Span>), HandshakeError> {
    let bytes = line.slice(buf);
    let mut parts = bytes.splitn(3, |&b| b == b' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m, t, v),
        _ => return Err(HandshakeError::Malformed("request line is not METHOD TARGET VERSION")),
    };
    if !is_token(method) {
        return Err(HandshakeError::Malformed("invalid method"));
    }
    if version != b"HTTP/1.1" {
        return Err(if version.starts_with(b"HTTP/") {
            HandshakeError::UnsupportedHttpVersion
        } else {
            HandshakeError::Malformed("invalid HTTP version")
        });
    }
    if method != b"GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    // The request line is the first line, so the target starts right after "METHOD ".
    let at = method.len() + 1;
    target_spans(target, at).map_err(HandshakeError::Malformed)
}

/// Origin-form `/path?query`, or absolute-form `http[s]://` / `ws[s]://authority/path?query`
/// reduced to its path (RFC 9112 §3.2.2 says servers must accept it).
fn target_spans(target: &[u8], at: usize) -> Result<(Span, Option<Span>), Malformed> {
    if target.is_empty() || !target.iter().all(|&b| is_vchar(b)) {
        return Err("request target must be visible ASCII");
    }
    if target.contains(&b'#') {
        return Err("fragment in request target");
    }
    let path_start = if target.first() == Some(&b'/') {
        0
    } else {
        let scheme = [&b"http://"[..], b"https://", b"ws://", b"wss://"]
            .into_iter()
            .find(|s| target.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s)))
            .ok_or("request target must start with / or be absolute")?;
        let after = target.get(scheme.len()..).unwrap_or_default();
        let authority = after.iter().take_while(|&&b| b != b'/' && b != b'?').count();
        if authority == 0 {
            return Err("absolute request target without authority");
        }
        scheme.len() + authority
    };
    let rest = target.get(path_start..).unwrap_or_default();
    let (path_len, query) = match memchr::memchr(b'?', rest) {
        Some(q) => (q, Some(Span::new(at + path_start + q + 1, at + target.len()))),
        None => (rest.len(), None),
    };
    Ok((Span::new(at + path_start, at + path_start + path_len), query))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
