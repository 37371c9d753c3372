//! Server side: the 101 answer, HTTP error answers, and subprotocol choice.
//!
//! Writers validate everything first and then append to the caller's `Vec` in one go (reserving
//! the exact size once); on error nothing has been written.

use super::accept::accept_key;
use super::head::{is_field_byte, is_token};
use super::HandshakeError;

/// What an upgrade hook answers to accept: an optional subprotocol and extra response headers
/// (e.g. `Sec-WebSocket-Extensions`, `Set-Cookie`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accept<'a> {
    /// The chosen subprotocol; must be one the client offered (see [`select_subprotocol`]).
    pub subprotocol: Option<&'a str>,
    /// Additional `(name, value)` headers, sanitised by [`write_accept`].
    pub extra_headers: &'a [(&'a str, &'a str)],
}

impl Accept<'_> {
    /// Appends the 101 response for the client's `key`; see [`write_accept`].
    pub fn write(&self, out: &mut Vec<u8>, key: &[u8]) -> Result<(), HandshakeError> {
        write_accept(out, key, self.subprotocol, self.extra_headers)
    }
}

/// Headers [`write_accept`] writes itself and refuses among the extra ones.
const ACCEPT_RESERVED: [&str; 4] =
    ["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol"];

/// Appends `HTTP/1.1 101 Switching Protocols` with `Upgrade`, `Connection` and the
/// `Sec-WebSocket-Accept` for `key` (the client's `Sec-WebSocket-Key` as received, e.g.
/// [`UpgradeRequest::key`](super::UpgradeRequest::key)), plus `Sec-WebSocket-Protocol` when one is
/// chosen and `extra_headers`.
///
/// Errors, with nothing written: a subprotocol that is not a token ([`InvalidHeaderValue`]), an
/// extra header name that is not a token ([`InvalidHeaderName`]) or is one of the above
/// ([`ReservedHeader`]), a value with a control character such as CR, LF or NUL
/// ([`InvalidHeaderValue`]).
///
/// [`InvalidHeaderValue`]: HandshakeError::InvalidHeaderValue
/// [`InvalidHeaderName`]: HandshakeError::InvalidHeaderName
/// [`ReservedHeader`]: HandshakeError::ReservedHeader
pub fn write_accept(
    out: &mut Vec<u8>,
    key: &[u8],
    subprotocol: Option<&str>,
    extra_headers: &[(&str, &str)],
) -> Result<(), HandshakeError> {
    if subprotocol.is_some_and(|p| !is_token(p.as_bytes())) {
        return Err(HandshakeError::InvalidHeaderValue);
    }
    let extra = check_headers(extra_headers, &ACCEPT_RESERVED)?;
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    const PROTOCOL: &[u8] = b"\r\nSec-WebSocket-Protocol: ";
    let protocol_len = subprotocol.map_or(0, |p| PROTOCOL.len() + p.len());
    out.reserve(HEAD.len() + 28 + protocol_len + extra + 4);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(&accept_key(key));
    if let Some(protocol) = subprotocol {
        out.extend_from_slice(PROTOCOL);
        out.extend_from_slice(protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    push_headers(out, extra_headers);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends an HTTP error response: status line, `Content-Type: text/plain; charset=utf-8`,
/// `Content-Length`, `Connection: close` and `reason` as the body. A 426 also carries
/// `Sec-WebSocket-Version: 13` and `Upgrade: websocket` (RFC 6455 §4.4, RFC 9110 §15.5.22), a
/// 405 carries `Allow: GET`. The connection should be closed once it is written.
///
/// The body is length-delimited, so `reason` cannot split the response; only a status outside
/// 400..=599 is refused ([`HandshakeError::InvalidStatus`]).
pub fn write_rejection(out: &mut Vec<u8>, status: u16, reason: &str) -> Result<(), HandshakeError> {
    if !(400..=599).contains(&status) {
        return Err(HandshakeError::InvalidStatus);
    }
    let extra: &[u8] = match status {
        405 => b"Allow: GET\r\nConnection: close\r\n",
        426 => b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n",
        _ => b"Connection: close\r\n",
    };
    let phrase = reason_phrase(status);
    out.reserve(64 + phrase.len() + extra.len() + reason.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(status));
    out.push(b' ');
    out.extend_from_slice(phrase.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra);
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    push_decimal(out, reason.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(reason.as_bytes());
    Ok(())
}

/// [`write_rejection`] with the error's [`status`](HandshakeError::status) and
/// [`reason`](HandshakeError::reason).
pub fn write_error(out: &mut Vec<u8>, err: &HandshakeError) {
    // Every HandshakeError status is in 400..=599, so this cannot fail.
    let _ = write_rejection(out, err.status(), err.reason());
}

/// The first entry of `server_preference` that the client offered, compared case-sensitively
/// (subprotocol names are tokens matched exactly, RFC 6455 §4.2.2). One pass over `offered`, no
/// allocation.
pub fn select_subprotocol<'o, 'p>(
    offered: impl Iterator<Item = &'o str>,
    server_preference: &[&'p str],
) -> Option<&'p str> {
    let mut best: Option<usize> = None;
    for offer in offered {
        let rank = server_preference.iter().position(|p| *p == offer);
        if let Some(rank) = rank {
            best = Some(best.map_or(rank, |b| b.min(rank)));
        }
    }
    best.and_then(|i| server_preference.get(i).copied())
}

/// Validates `(name, value)` pairs for writing; returns their encoded size (`name: value\r\n`).
pub(super) fn check_headers(headers: &[(&str, &str)], reserved: &[&str]) -> Result<usize, HandshakeError> {
    let mut size = 0;
    for (name, value) in headers {
        if !is_token(name.as_bytes()) {
            return Err(HandshakeError::InvalidHeaderName);
        }
        if reserved.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(HandshakeError::ReservedHeader);
        }
        if !value.bytes().all(is_field_byte) {
            return Err(HandshakeError::InvalidHeaderValue);
        }
        size += name.len() + value.len() + 4;
    }
    Ok(size)
}

/// Appends already validated headers.
pub(super) fn push_headers(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ if status < 500 => "Client Error",
        _ => "Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn accept_response() {
        let mut out = b"prefix".to_vec();
        let extra = [("Sec-WebSocket-Extensions", "permessage-deflate"), ("X-A", "b\tc")];
        write_accept(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==", Some("chat"), &extra).unwrap();
        assert_eq!(
            text(&out),
            "prefixHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\nX-A: b\tc\r\n\r\n"
        );
        let accept = Accept { subprotocol: None, extra_headers: &[] };
        out.clear();
        accept.write(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==").unwrap();
        assert!(text(&out).ends_with("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"));
    }

    #[test]
    fn response_splitting_rejected() {
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        let cases: [(Option<&str>, (&str, &str), HandshakeError); 8] = [
            (None, ("X", "a\r\nSet-Cookie: evil=1"), HandshakeError::InvalidHeaderValue),
            (None, ("X", "a\nb"), HandshakeError::InvalidHeaderValue),
            (None, ("X", "a\0b"), HandshakeError::InvalidHeaderValue),
            (None, ("X", "a\rb"), HandshakeError::InvalidHeaderValue),
            (None, ("X\r\nY", "v"), HandshakeError::InvalidHeaderName),
            (None, ("X Y", "v"), HandshakeError::InvalidHeaderName),
            (None, ("connection", "close"), HandshakeError::ReservedHeader),
            (Some("chat\r\nX: y"), ("X", "v"), HandshakeError::InvalidHeaderValue),
        ];
        for (protocol, header, err) in cases {
            let mut out = Vec::new();
            assert_eq!(write_accept(&mut out, key, protocol, &[header]), Err(err), "{header:?}");
            assert_eq!(err.status(), 500);
            assert!(out.is_empty(), "nothing written on error");
        }
        assert_eq!(
            write_accept(&mut Vec::new(), key, None, &[("", "v")]),
            Err(HandshakeError::InvalidHeaderName)
        );
    }

    #[test]
    fn rejections() {
        let mut out = Vec::new();
        write_error(&mut out, &HandshakeError::UnsupportedWebSocketVersion);
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{t}");
        assert!(t.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{t}");
        assert!(t.ends_with("Content-Length: 32\r\n\r\nSec-WebSocket-Version must be 13"), "{t}");

        out.clear();
        write_rejection(&mut out, 403, "origin not allowed").unwrap();
        assert_eq!(
            text(&out),
            "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain; \
             charset=utf-8\r\nContent-Length: 18\r\n\r\norigin not allowed"
        );
        out.clear();
        write_error(&mut out, &HandshakeError::MethodNotAllowed);
        assert!(text(&out).contains("405 Method Not Allowed\r\nAllow: GET\r\n"));
        out.clear();
        write_rejection(&mut out, 599, "").unwrap();
        assert!(text(&out).starts_with("HTTP/1.1 599 Server Error\r\n"));
        assert!(text(&out).ends_with("Content-Length: 0\r\n\r\n"));
        for bad in [0, 101, 200, 399, 600] {
            let mut out = Vec::new();
            assert_eq!(write_rejection(&mut out, bad, "x"), Err(HandshakeError::InvalidStatus));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn subprotocol_choice_follows_server_preference() {
        let offered = ["chat", "superchat", "v2.json"];
        let pick = |prefs: &[&'static str]| select_subprotocol(offered.into_iter(), prefs);
        assert_eq!(pick(&["v2.json", "chat"]), Some("v2.json"));
        assert_eq!(pick(&["mqtt", "superchat"]), Some("superchat"));
        assert_eq!(pick(&["CHAT"]), None, "case-sensitive");
        assert_eq!(pick(&[]), None);
        assert_eq!(select_subprotocol(std::iter::empty(), &["chat"]), None);
    }
}
