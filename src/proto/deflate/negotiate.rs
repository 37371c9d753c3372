//! The permessage-deflate offer and answer (RFC 7692 §5, §7.1).
//!
//! A server goes through the client's offers in order and accepts the first one it can serve;
//! an offer with an unknown, repeated or invalid parameter is declined (§5: the next one is
//! tried, and with none left the connection simply runs uncompressed). A client fails the
//! handshake on any such answer (§5), and on an answer naming a parameter it did not offer.

use super::{Compression, DeflateConfig};
use crate::proto::handshake::HandshakeError;

/// The extension's token.
const NAME: &str = "permessage-deflate";

/// What both sides agreed on for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The server starts every message with an empty window.
    pub server_no_context_takeover: bool,
    /// The client starts every message with an empty window.
    pub client_no_context_takeover: bool,
    /// The largest window the server compresses with (8–15; 15 when not negotiated).
    pub server_max_window_bits: u8,
    /// The largest window the client compresses with (8–15; 15 when not negotiated).
    pub client_max_window_bits: u8,
}

impl Default for Params {
    /// Context takeover both ways, 32 KiB windows: what `permessage-deflate` alone means.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// One `permessage-deflate` element's parameters as written: each may appear once.
#[derive(Default)]
struct Raw {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// Present, with its value.
    server_max_window_bits: Option<u8>,
    /// Present, with its value if it had one (an offer may leave it out).
    client_max_window_bits: Option<Option<u8>>,
}

/// Why an element is not acceptable (the server declines it, the client fails).
struct Invalid;

/// A parameter's value: a token or a quoted string (§7.1: the same rules after unquoting).
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else { return Some(value.to_owned()) };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// A window size: a decimal 8–15 without leading zeros (§7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    let value = unquote(value)?;
    if value.starts_with('0') || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u8>().ok().filter(|bits| (8..=15).contains(bits))
}

/// Parses one element of the extensions list. `None`: another extension (ignored).
fn parse_element(element: &str) -> Option<Result<Raw, Invalid>> {
    let mut parts = element.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut raw = Raw::default();
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (part, None),
        };
        let ok = match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) => {
                !std::mem::replace(&mut raw.server_no_context_takeover, true)
            }
            ("client_no_context_takeover", None) => {
                !std::mem::replace(&mut raw.client_no_context_takeover, true)
            }
            ("server_max_window_bits", Some(value)) => match window_bits(value) {
                Some(bits) => raw.server_max_window_bits.replace(bits).is_none(),
                None => false,
            },
            ("client_max_window_bits", value) => match value.map(window_bits) {
                Some(None) => false,
                bits => raw.client_max_window_bits.replace(bits.flatten()).is_none(),
            },
            // Unknown, or a value where none is allowed (or none where one is required).
            _ => false,
        };
        if !ok {
            return Some(Err(Invalid));
        }
    }
    Some(Ok(raw))
}

impl Params {
    /// The response header value that states these parameters: the no-context-takeover flags
    /// when set, a window size when it is not 15 or when the offer named it (`echo_server`).
    fn header(&self, echo_server: bool, echo_client: bool) -> String {
        let mut out = String::from(NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if echo_server || self.server_max_window_bits < 15 {
            out.push_str(&format!("; server_max_window_bits={}", self.server_max_window_bits));
        }
        if echo_client || self.client_max_window_bits < 15 {
            out.push_str(&format!("; client_max_window_bits={}", self.client_max_window_bits));
        }
        out
    }
}

/// The server's choice among a request's extension offers (as
/// [`UpgradeRequest::extensions`](crate::proto::handshake::UpgradeRequest::extensions) lists
/// them): the first acceptable `permessage-deflate` offer, with the parameters agreed and the
/// `Sec-WebSocket-Extensions` value to answer with; `None` to run uncompressed (compression off,
/// nothing offered, or every offer declined).
///
/// `Shared` mode always answers with both no-context-takeover parameters (§7.1.1.1 and §7.1.1.2
/// let a server add them to any offer), so that no connection needs a window of its own.
/// `Dedicated` keeps what the client offered and caps the windows at the configured sizes.
pub fn accept_offers<'a>(
    offers: impl IntoIterator<Item = &'a str>,
    config: &DeflateConfig,
) -> Option<(Params, String)> {
    if !config.enabled() {
        return None;
    }
    offers.into_iter().find_map(|offer| {
        let raw = parse_element(offer)?.ok()?;
        let offered_server = raw.server_max_window_bits;
        let mut params = Params { server_max_window_bits: offered_server.unwrap_or(15), ..Params::default() };
        let mut echo_client = false;
        match config.mode {
            Compression::Shared => {
                params.server_no_context_takeover = true;
                params.client_no_context_takeover = true;
            }
            _ => {
                params.server_no_context_takeover = raw.server_no_context_takeover;
                params.client_no_context_takeover = raw.client_no_context_takeover;
                params.server_max_window_bits =
                    params.server_max_window_bits.min(config.server_max_window_bits.clamp(8, 15));
                // Only an offer naming client_max_window_bits lets us limit the client (§7.1.2.2).
                if let Some(offered) = raw.client_max_window_bits {
                    let bits = offered.unwrap_or(15).min(config.client_max_window_bits.clamp(8, 15));
                    params.client_max_window_bits = bits;
                    echo_client = offered.is_some();
                }
            }
        }
        let header = params.header(offered_server.is_some(), echo_client);
        Some((params, header))
    })
}

/// The offer a client sends: `permessage-deflate; client_max_window_bits`, and with
/// `no_context_takeover` both no-context-takeover parameters, asking for a connection that
/// keeps no window between messages on either side.
pub fn client_offer(no_context_takeover: bool) -> &'static str {
    if no_context_takeover {
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
    } else {
        "permessage-deflate; client_max_window_bits"
    }
}

/// The client's check of the server's `Sec-WebSocket-Extensions` values (each a
/// comma-separated list) against an offer from [`client_offer`]: `Ok(None)` when the server
/// declined (no extension), the agreed parameters when it accepted, an error (fail the
/// handshake, §5) for anything else: another extension, two elements, an unknown, repeated or
/// invalid parameter, or `client_max_window_bits` without a value.
pub fn accept_response<'a>(
    elements: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Params>, HandshakeError> {
    let mut agreed = None;
    for element in elements {
        let raw = match parse_element(element) {
            None => return Err(HandshakeError::UnexpectedExtension),
            Some(Err(Invalid)) => return Err(HandshakeError::InvalidExtensionResponse),
            Some(Ok(raw)) => raw,
        };
        if agreed.is_some() || matches!(raw.client_max_window_bits, Some(None)) {
            return Err(HandshakeError::InvalidExtensionResponse);
        }
        agreed = Some(Params {
            server_no_context_takeover: raw.server_no_context_takeover,
            client_no_context_takeover: raw.client_no_context_takeover,
            server_max_window_bits: raw.server_max_window_bits.unwrap_or(15),
            client_max_window_bits: raw.client_max_window_bits.flatten().unwrap_or(15),
        });
    }
    Ok(agreed)
}
