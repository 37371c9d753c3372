//! The PROXY protocol header (HAProxy's `doc/proxy-protocol.txt`, versions 1 and 2), sans-IO.
//!
//! A load balancer that speaks it writes one header at the very start of each connection, before
//! any byte of the client's own protocol, telling the receiver who the client really is. Feed the
//! start of the read buffer to [`parse`] after every read, **before** the HTTP upgrade request:
//!
//! - [`Status::Partial`]: the bytes so far are a valid beginning of a header; keep them and call
//!   again with more. It never says `Partial` for more than [`MAX_LEN`] bytes, so the bytes to keep
//!   are bounded (apply a deadline too: the spec suggests a few seconds).
//! - [`Status::Complete`]: the header is `buf[..len]`; the HTTP request starts at `buf[len]`.
//!   `source` is the client's address, or `None` when the header says to use the socket's own
//!   peer address (v2 `LOCAL`, as load balancers send for health checks; v1 `UNKNOWN`; v2 families
//!   or protocols other than TCP over IPv4/IPv6, which the spec lets a receiver treat as
//!   `UNSPEC`). An IPv4-mapped IPv6 address is returned as sent.
//! - [`ProxyError`]: not a header, or a broken one. Answer 400 with [`ProxyError::reason`] and
//!   close. The spec forbids guessing whether a header is present: a trusted peer that sends none
//!   gets [`ProxyError::NotProxy`].
//!
//! Only ever call it for connections from trusted peers: anyone else could claim any address.
//!
//! Like the other parsers in [`crate::proto`], it rescans from the start on every call, reads no
//! byte past the header (nor past `buf`), allocates nothing and never panics. The answer depends
//! only on the bytes, not on how they were cut into reads: a prefix of a buffer that fails is
//! `Partial` or fails with the same error.
//!
//! ```
//! use throng::proto::proxy::{parse, Status};
//!
//! let buf = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\nGET /chat HTTP/1.1\r\n";
//! let Ok(Status::Complete { len, source }) = parse(buf) else { panic!() };
//! assert_eq!(source, Some("203.0.113.7:51234".parse().unwrap()));
//! assert!(buf[len..].starts_with(b"GET "));
//! assert_eq!(parse(&buf[..20]), Ok(Status::Partial));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest version 1 header, CRLF included (the spec's worst case, `UNKNOWN` with two
/// 39-character IPv6 addresses and two 5-digit ports). No CRLF within it is an error.
pub const V1_MAX_LEN: usize = 107;

/// The most bytes of addresses and TLVs (the length field) a version 2 header may announce.
///
/// The spec designs headers to fit in the smallest segment every TCP host must accept (536
/// bytes), so that they arrive in one read; this cap allows a whole such segment after the
/// 16-byte fixed part. That is room for an IPv6 block (36 bytes) plus the TLVs load balancers
/// send (cloud endpoint ids, ALPN, authority, TLS details), while the length field alone would
/// let a peer make us hold 64 KiB before deciding anything.
pub const V2_MAX_BLOCK_LEN: usize = 536;

/// The longest version 2 header accepted: the fixed 16 bytes and [`V2_MAX_BLOCK_LEN`].
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + V2_MAX_BLOCK_LEN;

/// The longest header of either version. [`parse`] answers [`Status::Partial`] only for fewer bytes
/// than this, so a caller waiting for a header never keeps more.
pub const MAX_LEN: usize = V2_MAX_LEN;

/// What the first bytes of a version 1 header must be.
const V1_MAGIC: &[u8] = b"PROXY";

/// The 12-byte signature that starts a version 2 header (with a NUL: never a C string).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family/protocol, 16-bit length.
const V2_FIXED_LEN: usize = 16;

/// The outcome of [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// A whole, valid header: `buf[..len]`.
    Complete {
        /// The header's length in bytes; what follows it is the client's first byte.
        len: usize,
        /// The client's address and port, or `None` to use the connection's own peer address.
        source: Option<SocketAddr>,
    },
    /// The bytes so far are a valid beginning of a header (possibly none at all); call again with
    /// the same bytes plus what arrives next.
    Partial,
}

/// Why a buffer is not a valid PROXY protocol header. Every variant is answered with HTTP 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// Starts with neither `PROXY` (v1) nor the v2 signature.
    NotProxy,
    /// v1: no CRLF within the first [`V1_MAX_LEN`] bytes.
    V1TooLong,
    /// v1: not `PROXY` then single spaces between the fields and CRLF at the end (a missing or
    /// extra field, a double space, a bare CR or LF).
    V1Syntax,
    /// v1: the protocol is not `TCP4`, `TCP6` or `UNKNOWN`.
    V1Protocol,
    /// v1: an address that is not a canonical address of the announced family.
    V1Address,
    /// v1: a port that is not a decimal number in 0..=65535 without leading zeros.
    V1Port,
    /// v2: the version nibble is not 2.
    V2Version,
    /// v2: the command is neither `LOCAL` (0) nor `PROXY` (1).
    V2Command,
    /// v2 `PROXY`: an address family above 3 (UNIX) or a transport protocol above 2 (DGRAM).
    V2Family,
    /// v2: the announced length is over [`V2_MAX_BLOCK_LEN`].
    V2TooLong,
    /// v2 `PROXY`: the announced length cannot hold the addresses of the announced family.
    V2AddressTruncated,
    /// v2: the bytes after the addresses are not a sequence of whole TLVs.
    V2Tlv,
}

impl ProxyError {
    /// A short human reason, suitable for the body of the 400 answer.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotProxy => "expected a PROXY protocol header",
            Self::V1TooLong => "PROXY v1 header longer than 107 bytes",
            Self::V1Syntax => "malformed PROXY v1 header",
            Self::V1Protocol => "PROXY v1 protocol not TCP4, TCP6 or UNKNOWN",
            Self::V1Address => "invalid address in PROXY v1 header",
            Self::V1Port => "invalid port in PROXY v1 header",
            Self::V2Version => "PROXY v2 header with a version other than 2",
            Self::V2Command => "PROXY v2 command not LOCAL or PROXY",
            Self::V2Family => "PROXY v2 address family or protocol undefined",
            Self::V2TooLong => "PROXY v2 header longer than 552 bytes",
            Self::V2AddressTruncated => "PROXY v2 address block too short for its family",
            Self::V2Tlv => "malformed PROXY v2 TLV",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ProxyError {}

/// Parses a PROXY protocol header (v1 or v2, told apart by the first byte) at the start of `buf`.
/// See the [module docs](self) for what each answer means.
pub fn parse(buf: &[u8]) -> Result<Status, ProxyError> {
    match buf.first() {
        None => Ok(Status::Partial),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// Whether `buf` could be the start of a PROXY header: its first bytes (up to 5 for v1, 12 for
/// v2) match a signature. Cheap; exactly when [`parse`] does not fail with
/// [`ProxyError::NotProxy`]. An empty buffer is a prefix.
pub fn is_proxy_prefix(buf: &[u8]) -> bool {
    let starts = |magic: &[u8]| {
        let n = buf.len().min(magic.len());
        buf[..n] == magic[..n]
    };
    starts(V1_MAGIC) || starts(&V2_SIGNATURE)
}

// ---- version 1 -------------------------------------------------------------------------------

/// Version 1: `PROXY TCP4|TCP6 src dst sport dport\r\n` or `PROXY UNKNOWN[ anything]\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Status, ProxyError> {
    // Scanning never looks past the limit, so a line that is still unfinished there is too long
    // whatever follows; anything wrong before the limit is found first.
    let view = &buf[..buf.len().min(V1_MAX_LEN)];
    match v1_line(view)? {
        Some(status) => Ok(status),
        None if buf.len() >= V1_MAX_LEN => Err(ProxyError::V1TooLong),
        None => Ok(Status::Partial),
    }
}

/// The v1 line in `view`: `Ok(None)` when `view` ends before the CRLF (every byte so far valid).
/// Fields are checked byte by byte as they arrive, so an error is found at the first wrong byte
/// however the line was cut into reads.
fn v1_line(view: &[u8]) -> Result<Option<Status>, ProxyError> {
    let mut line = Line { buf: view, pos: 0 };
    if !line.literal(V1_MAGIC)? || !line.literal(b" ")? {
        return Ok(None);
    }
    let token = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let Some((proto, end)) = line.field(7, token, ProxyError::V1Protocol)? else {
        // Still arriving: it must be on its way to one of the three names.
        let so_far = &view[line.pos..];
        return match PROTOCOLS.iter().any(|p| p.starts_with(so_far)) {
            true => Ok(None),
            false => Err(ProxyError::V1Protocol),
        };
    };
    let family = match proto {
        b"TCP4" => Family::V4,
        b"TCP6" => Family::V6,
        b"UNKNOWN" => return line.unknown_rest(end),
        _ => return Err(ProxyError::V1Protocol),
    };
    line.expect(end, b' ')?;
    let Some(src) = line.address(family, b' ')? else { return Ok(None) };
    let Some(_dst) = line.address(family, b' ')? else { return Ok(None) };
    let Some(sport) = line.port(b' ')? else { return Ok(None) };
    let Some(_dport) = line.port(b'\r')? else { return Ok(None) };
    if !line.literal(b"\n")? {
        return Ok(None);
    }
    Ok(Some(Status::Complete { len: line.pos, source: Some(SocketAddr::new(src, sport)) }))
}

/// The protocol names of a v1 line.
const PROTOCOLS: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];

/// The address family a v1 line announces.
#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// A cursor over the v1 line. Methods answer `Ok(None)` / `Ok(false)` when the bytes run out.
struct Line<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// The bytes that end a v1 field. CR and LF end it too, so that a line cut short is a syntax
/// error rather than a bad value.
fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\r' | b'\n')
}

impl<'a> Line<'a> {
    /// Consumes `text` exactly; `Ok(false)` if the bytes end inside it.
    fn literal(&mut self, text: &[u8]) -> Result<bool, ProxyError> {
        let rest = &self.buf[self.pos..];
        let n = rest.len().min(text.len());
        if rest[..n] != text[..n] {
            return Err(if self.pos == 0 { ProxyError::NotProxy } else { ProxyError::V1Syntax });
        }
        self.pos += n;
        Ok(n == text.len())
    }

    /// A field of 1 to `max` bytes that each pass `ok`, and the separator after it (consumed).
    /// A wrong byte, or one too many, fails with `err` at once; an empty field is a syntax error.
    fn field(
        &mut self,
        max: usize,
        ok: impl Fn(u8) -> bool,
        err: ProxyError,
    ) -> Result<Option<(&'a [u8], u8)>, ProxyError> {
        let rest = &self.buf[self.pos..];
        for (i, &b) in rest.iter().enumerate() {
            if is_separator(b) {
                if i == 0 {
                    return Err(ProxyError::V1Syntax);
                }
                self.pos += i + 1;
                return Ok(Some((&rest[..i], b)));
            }
            if i >= max || !ok(b) {
                return Err(err);
            }
        }
        Ok(None)
    }

    /// The separator that ended a field must be `want`.
    fn expect(&self, got: u8, want: u8) -> Result<(), ProxyError> {
        if got == want {
            Ok(())
        } else {
            Err(ProxyError::V1Syntax)
        }
    }

    /// An address of `family` followed by `sep`.
    fn address(&mut self, family: Family, sep: u8) -> Result<Option<IpAddr>, ProxyError> {
        // Longest canonical forms: 255.255.255.255 and eight groups of four hex digits. A dotted
        // IPv4 tail (::ffff:192.0.2.1) is accepted within the same 39 bytes.
        let (max, ok): (usize, fn(u8) -> bool) = match family {
            Family::V4 => (15, |b| b.is_ascii_digit() || b == b'.'),
            Family::V6 => (39, |b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        };
        let Some((text, end)) = self.field(max, ok, ProxyError::V1Address)? else { return Ok(None) };
        self.expect(end, sep)?;
        // The field holds ASCII only, so it is UTF-8; std's parsers reject leading zeros in IPv4
        // octets, as the spec requires.
        let text = std::str::from_utf8(text).map_err(|_| ProxyError::V1Address)?;
        let ip = match family {
            Family::V4 => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            Family::V6 => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        };
        ip.map(Some).map_err(|_| ProxyError::V1Address)
    }

    /// A decimal port without leading zeros followed by `sep`.
    fn port(&mut self, sep: u8) -> Result<Option<u16>, ProxyError> {
        let Some((digits, end)) = self.field(5, |b| b.is_ascii_digit(), ProxyError::V1Port)? else {
            return Ok(None);
        };
        self.expect(end, sep)?;
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(ProxyError::V1Port);
        }
        let value = digits.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        u16::try_from(value).map(Some).map_err(|_| ProxyError::V1Port)
    }

    /// After `UNKNOWN`: the receiver ignores everything up to the CRLF (but a bare LF, or a CR not
    /// followed by LF, is still not a line end).
    fn unknown_rest(&mut self, end: u8) -> Result<Option<Status>, ProxyError> {
        let mut at = self.pos;
        if end == b' ' {
            match self.buf[at..].iter().position(|&b| b == b'\r' || b == b'\n') {
                None => return Ok(None),
                Some(i) if self.buf[at + i] == b'\n' => return Err(ProxyError::V1Syntax),
                Some(i) => at += i + 1,
            }
        } else if end == b'\n' {
            return Err(ProxyError::V1Syntax);
        }
        match self.buf.get(at) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(Status::Complete { len: at + 1, source: None })),
            Some(_) => Err(ProxyError::V1Syntax),
        }
    }
}

// ---- version 2 -------------------------------------------------------------------------------

/// Version 2: signature, version/command, family/protocol, length, then `length` bytes of
/// addresses and TLVs. Each fixed byte is checked as soon as it is there.
fn parse_v2(buf: &[u8]) -> Result<Status, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::NotProxy);
    }
    let Some(&ver_cmd) = buf.get(12) else { return Ok(Status::Partial) };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version);
    }
    // LOCAL: "the receiver must use the real connection endpoints and discard the protocol block
    // including the family which is ignored", so its family byte is not checked either.
    let proxy = match ver_cmd & 0x0F {
        0 => false,
        1 => true,
        _ => return Err(ProxyError::V2Command),
    };
    let Some(&family) = buf.get(13) else { return Ok(Status::Partial) };
    if proxy && (family >> 4 > 3 || family & 0x0F > 2) {
        return Err(ProxyError::V2Family);
    }
    let Some(&[hi, lo]) = buf.get(14..16) else { return Ok(Status::Partial) };
    let block_len = usize::from(u16::from_be_bytes([hi, lo]));
    if block_len > V2_MAX_BLOCK_LEN {
        return Err(ProxyError::V2TooLong);
    }
    // Only TCP over IPv4 and IPv6 are read; the other valid combinations (UDP, UNIX, UNSPEC)
    // fall back to UNSPEC, which the spec allows: use the connection's own addresses.
    let address_len = match (proxy, family) {
        (true, 0x11) => 12,
        (true, 0x21) => 36,
        _ => 0,
    };
    if block_len < address_len {
        return Err(ProxyError::V2AddressTruncated);
    }
    let Some(block) = buf.get(V2_FIXED_LEN..V2_FIXED_LEN + block_len) else {
        return Ok(Status::Partial);
    };
    let (addresses, tlvs) = block.split_at(address_len);
    let source = v2_source(addresses);
    if source.is_some() {
        check_tlvs(tlvs)?;
    }
    Ok(Status::Complete { len: V2_FIXED_LEN + block_len, source })
}

/// The source of a TCP address block: 12 bytes (IPv4) or 36 (IPv6), else none.
fn v2_source(block: &[u8]) -> Option<SocketAddr> {
    let port = |at: usize| block.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match block.len() {
        12 => {
            let ip: [u8; 4] = block.get(..4)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(ip), port(8)?))
        }
        36 => {
            let ip: [u8; 16] = block.get(..16)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(ip), port(32)?))
        }
        _ => None,
    }
}

/// TLVs are skipped, not interpreted, but they must tile the rest of the block exactly (type,
/// 16-bit length, value), as HAProxy itself requires: a sender whose TLVs do not add up is
/// broken, and its addresses are not to be trusted either. The CRC32C TLV is not verified (the
/// spec makes that optional).
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let Some(&[_kind, hi, lo]) = tlvs.get(..3) else { return Err(ProxyError::V2Tlv) };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        tlvs = tlvs.get(end..).ok_or(ProxyError::V2Tlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
