//! What can go wrong in a handshake, and the HTTP answer each failure deserves.

use std::borrow::Cow;
use std::fmt;

/// Why a handshake failed.
///
/// Variants come in three groups:
/// - **peer errors on the server side** (the client's request is bad): [`status`] is the 4xx the
///   server answers with, see [`write_error`](super::write_error);
/// - **peer errors on the client side** (the server's response is bad): nothing is sent back, the
///   connection is dropped; [`status`] is 502 for them (what a proxy would report);
/// - **local errors** (our own caller passed something unsendable): [`status`] is 500.
///
/// [`status`]: HandshakeError::status
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request or response is not well-formed HTTP/1.1; the text says what was wrong.
    Malformed(&'static str),
    /// The request method is not `GET` (405).
    MethodNotAllowed,
    /// The HTTP version is not `HTTP/1.1` (HTTP/1.0 included).
    UnsupportedHttpVersion,
    /// No `Host` header, or an empty one.
    MissingHost,
    /// No `Upgrade` header containing the token `websocket`.
    MissingUpgrade,
    /// No `Connection` header containing the token `upgrade`.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not exactly `13` (426).
    UnsupportedWebSocketVersion,
    /// No `Sec-WebSocket-Key` header.
    MissingKey,
    /// `Sec-WebSocket-Key` repeated or not the base64 of exactly 16 bytes.
    InvalidKey,
    /// The header block does not fit in [`RequestLimits::max_header_bytes`](super::RequestLimits).
    HeaderTooLarge,
    /// More header lines than [`RequestLimits::max_headers`](super::RequestLimits).
    TooManyHeaders,
    /// One line is longer than [`RequestLimits::max_line`](super::RequestLimits).
    LineTooLong,
    /// The application refused the origin (403).
    Forbidden,
    /// The application has nothing at this path (404).
    NotFound,
    /// Client side: the server answered with this status instead of 101.
    BadStatus(u16),
    /// Client side: `Sec-WebSocket-Accept` missing, repeated or not the value our key implies.
    AcceptMismatch,
    /// Client side: the server chose a subprotocol we did not offer, or more than one.
    UnexpectedProtocol,
    /// Client side: the server answered with extensions although we offered none.
    UnexpectedExtension,
    /// Client side: the server's permessage-deflate answer breaks RFC 7692 §7 (an unknown,
    /// repeated or invalid parameter, or one we did not offer), or names it twice.
    InvalidExtensionResponse,
    /// Local: a header name to be written is not an HTTP token.
    InvalidHeaderName,
    /// Local: a header value to be written contains CR, LF, NUL or another control character,
    /// or a subprotocol to be written is not a token.
    InvalidHeaderValue,
    /// Local: an extra header would duplicate one the handshake writes itself.
    ReservedHeader,
    /// Local: the client's path is not an origin-form target (`/…`, visible ASCII, no `#`).
    InvalidRequestTarget,
    /// Local: a rejection status outside 400..=599.
    InvalidStatus,
    /// Local: the operating system's random source failed while making a key.
    RandomUnavailable,
}

impl HandshakeError {
    /// The HTTP status a server answers this error with (502 for client-side errors, 500 for
    /// local ones).
    pub fn status(&self) -> u16 {
        use HandshakeError::*;
        match self {
            Malformed(_)
            | UnsupportedHttpVersion
            | MissingHost
            | MissingUpgrade
            | MissingConnectionUpgrade
            | MissingKey
            | InvalidKey => 400,
            Forbidden => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            UnsupportedWebSocketVersion => 426,
            HeaderTooLarge | TooManyHeaders | LineTooLong => 431,
            BadStatus(_)
            | AcceptMismatch
            | UnexpectedProtocol
            | UnexpectedExtension
            | InvalidExtensionResponse => 502,
            InvalidHeaderName | InvalidHeaderValue | ReservedHeader | InvalidRequestTarget
            | InvalidStatus | RandomUnavailable => 500,
        }
    }

    /// A short human explanation, fit for a response body.
    pub fn reason(&self) -> &'static str {
        use HandshakeError::*;
        match self {
            Malformed(what) => what,
            MethodNotAllowed => "method must be GET",
            UnsupportedHttpVersion => "HTTP version must be HTTP/1.1",
            MissingHost => "missing Host header",
            MissingUpgrade => "missing Upgrade: websocket",
            MissingConnectionUpgrade => "missing Connection: upgrade",
            UnsupportedWebSocketVersion => "Sec-WebSocket-Version must be 13",
            MissingKey => "missing Sec-WebSocket-Key",
            InvalidKey => "invalid Sec-WebSocket-Key",
            HeaderTooLarge => "request header block too large",
            TooManyHeaders => "too many header fields",
            LineTooLong => "header line too long",
            Forbidden => "origin not allowed",
            NotFound => "no WebSocket endpoint at this path",
            BadStatus(_) => "server did not answer 101 Switching Protocols",
            AcceptMismatch => "wrong or missing Sec-WebSocket-Accept",
            UnexpectedProtocol => "server chose a subprotocol that was not offered",
            UnexpectedExtension => "server chose an extension that was not offered",
            InvalidExtensionResponse => "server's permessage-deflate parameters are invalid",
            InvalidHeaderName => "header name is not a token",
            InvalidHeaderValue => "header value contains a control character",
            ReservedHeader => "header is written by the handshake itself",
            InvalidRequestTarget => "request target must be /path?query in visible ASCII",
            InvalidStatus => "rejection status must be 400..=599",
            RandomUnavailable => "random source unavailable",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadStatus(code) => write!(f, "{} (got {code})", self.reason()),
            HandshakeError::Malformed(what) => write!(f, "malformed handshake: {what}"),
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// An application's refusal of an upgrade: any 4xx/5xx status and a short reason for the body.
///
/// Statuses outside 400..=599 are coerced to 500 by [`Rejection::new`], so a hook can never make
/// the server write a success or an interim response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    status: u16,
    reason: Cow<'static, str>,
}

impl Rejection {
    /// A rejection with this status (400..=599, otherwise 500) and body text.
    pub fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        let status = if (400..=599).contains(&status) { status } else { 500 };
        Rejection { status, reason: reason.into() }
    }

    /// 403: the origin (or credentials) are not acceptable.
    pub fn forbidden() -> Self {
        HandshakeError::Forbidden.into()
    }

    /// 404: nothing to upgrade at this path.
    pub fn not_found() -> Self {
        HandshakeError::NotFound.into()
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body text.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Appends the full HTTP response to `out`; see [`write_rejection`](super::write_rejection).
    pub fn write(&self, out: &mut Vec<u8>) {
        // The status is in range by construction, so this cannot fail.
        let _ = super::write_rejection(out, self.status, &self.reason);
    }
}

impl From<HandshakeError> for Rejection {
    fn from(err: HandshakeError) -> Self {
        Rejection::new(err.status(), err.reason())
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(HandshakeError::Malformed("x").status(), 400);
        assert_eq!(HandshakeError::Malformed("x").reason(), "x");
        assert_eq!(HandshakeError::Forbidden.status(), 403);
        assert_eq!(HandshakeError::NotFound.status(), 404);
        assert_eq!(HandshakeError::BadStatus(404).status(), 502);
        assert_eq!(HandshakeError::InvalidStatus.status(), 500);
        assert!(HandshakeError::BadStatus(302).to_string().contains("302"));
    }

    #[test]
    fn rejection_coerces_status() {
        assert_eq!(Rejection::new(200, "ok?").status(), 500);
        assert_eq!(Rejection::new(101, "no").status(), 500);
        assert_eq!(Rejection::new(401, "login").status(), 401);
        assert_eq!(Rejection::new(503, String::from("busy")).reason(), "busy");
        assert_eq!(Rejection::forbidden().status(), 403);
        assert_eq!(Rejection::not_found().to_string(), "404 no WebSocket endpoint at this path");
    }
}
