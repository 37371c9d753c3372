//! permessage-deflate (RFC 7692): what a server and a client agree on, and the codec.
//!
//! Negotiation is sans-IO like the rest of the core: [`accept_offers`] reads a client's
//! `Sec-WebSocket-Extensions` offers and answers the parameters and the response header, or
//! declines; [`client_offer`] and [`accept_response`] are the client's side. The codec
//! ([`Deflater`], [`Inflater`]) wraps `flate2` raw deflate with a sync flush: a message is
//! compressed into one block stream whose 4-byte `00 00 ff ff` tail is removed on the wire and
//! put back before inflating (§7.2.1, §7.2.2).
//!
//! The memory modes ([`Compression`]) are the engine's: in `Shared` mode the server asks both
//! sides not to keep a context between messages (`server_no_context_takeover`,
//! `client_no_context_takeover`), so one compressor and one inflater per loop serve every
//! connection and an idle connection owns nothing for compression. In `Dedicated` mode each
//! connection keeps its own sliding windows (better ratios, tens to hundreds of KiB each).

mod codec;
mod negotiate;

pub use codec::{Deflater, Inflater};
pub use negotiate::{accept_offers, accept_response, client_offer, Params};

/// How a server compresses (and whether it negotiates permessage-deflate at all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// The extension is declined: frames with RSV1 are a protocol error (1002).
    #[default]
    Off,
    /// No per-connection compression state: both sides are asked for no context takeover, and
    /// one compressor and one inflater per loop serve all connections. Broadcasts are
    /// compressed once and the compressed frame is shared.
    Shared,
    /// Per-connection sliding windows (context takeover where the client allows it), created
    /// when a connection first sends or receives a compressed message.
    Dedicated,
}

impl Compression {
    /// Parses `off`, `shared` or `dedicated`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "off" | "none" => Some(Self::Off),
            "shared" => Some(Self::Shared),
            "dedicated" => Some(Self::Dedicated),
            _ => None,
        }
    }

    /// The name [`Compression::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Shared => "shared",
            Self::Dedicated => "dedicated",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The server's compression settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The memory mode, or off.
    pub mode: Compression,
    /// Messages shorter than this go out uncompressed (deflate's headers would outweigh the
    /// saving). Default 64 bytes.
    pub threshold: usize,
    /// The deflate level (0–9) of messages compressed for one connection. Default 1: for the
    /// small messages of a push stream it compresses nearly as well as 6 at a fraction of the
    /// CPU (`cargo bench --bench deflate`).
    pub level: u8,
    /// The level of broadcasts, compressed once for all their subscribers. Default 6.
    pub broadcast_level: u8,
    /// `Dedicated` mode: the largest window our compressors use (8–15; a client may ask for
    /// less). Smaller windows cost less memory per connection and compress less. Default 15.
    pub server_max_window_bits: u8,
    /// `Dedicated` mode: the window we ask the client to compress with, when it offers
    /// `client_max_window_bits` (8–15); our per-connection inflater is that size. Default 15.
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            mode: Compression::Off,
            threshold: 64,
            level: 1,
            broadcast_level: 6,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

impl DeflateConfig {
    /// The default settings in `mode`.
    pub fn new(mode: Compression) -> Self {
        Self { mode, ..Self::default() }
    }

    /// Whether the extension is negotiated at all.
    pub fn enabled(&self) -> bool {
        self.mode != Compression::Off
    }
}

/// The 4 bytes a sync flush ends with, removed from every compressed message on the wire.
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The RSV1 bit as [`FrameHeader::rsv`](super::FrameHeader::rsv) holds it: set on the first
/// frame of a compressed message.
pub const RSV1: u8 = 0b100;

#[cfg(test)]
mod tests;
