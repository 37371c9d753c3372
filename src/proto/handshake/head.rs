//! The one header-block tokenizer shared by the request parser and the response parser: line
//! splitting (strict CRLF, found with `memchr`), limits, header-line syntax, a fixed header table
//! of byte ranges, and comma-list iteration.

use memchr::memchr;

use super::{HandshakeError, Header, Parsed, RequestLimits, MAX_HEADERS, MAX_HEAD_BYTES};

/// A byte range into the parsed buffer; 16-bit because heads are capped at [`MAX_HEAD_BYTES`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Span {
    start: u16,
    end: u16,
}

impl Span {
    /// Callers only pass offsets below the scan cap, which is at most `u16::MAX`.
    pub(super) fn new(start: usize, end: usize) -> Span {
        let clamp = |x: usize| u16::try_from(x).unwrap_or(u16::MAX);
        Span { start: clamp(start), end: clamp(end) }
    }

    pub(super) fn slice(self, buf: &[u8]) -> &[u8] {
        buf.get(usize::from(self.start)..usize::from(self.end)).unwrap_or_default()
    }

    /// For spans whose bytes the parser validated as ASCII; never panics regardless.
    pub(super) fn str(self, buf: &[u8]) -> &str {
        std::str::from_utf8(self.slice(buf)).unwrap_or_default()
    }
}

/// Header lines as (name, value) byte ranges, in arrival order, without allocation.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct HeaderTable {
    len: u8,
    entries: [(Span, Span); MAX_HEADERS],
}

impl HeaderTable {
    pub(super) const fn new() -> Self {
        const EMPTY: Span = Span { start: 0, end: 0 };
        HeaderTable { len: 0, entries: [(EMPTY, EMPTY); MAX_HEADERS] }
    }

    fn push(&mut self, name: Span, value: Span, max: usize) -> Result<(), HandshakeError> {
        let len = usize::from(self.len);
        match self.entries.get_mut(len) {
            Some(slot) if len < max => {
                *slot = (name, value);
                self.len = self.len.saturating_add(1);
                Ok(())
            }
            _ => Err(HandshakeError::TooManyHeaders),
        }
    }

    /// The raw spans, for one-pass semantic checks.
    pub(super) fn spans(&self) -> &[(Span, Span)] {
        self.entries.get(..usize::from(self.len)).unwrap_or_default()
    }

    pub(super) fn iter<'s, 'b: 's>(&'s self, buf: &'b [u8]) -> impl Iterator<Item = Header<'b>> + 's {
        self.spans().iter().map(move |(n, v)| Header { name: n.str(buf), value: v.slice(buf) })
    }

    /// First value of a header, name matched case-insensitively.
    pub(super) fn get<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.values(buf, name).next()
    }

    /// Every value of a (possibly repeated) header, in order.
    pub(super) fn values<'s, 'b: 's>(
        &'s self,
        buf: &'b [u8],
        name: &'s str,
    ) -> impl Iterator<Item = &'b [u8]> + 's {
        self.spans()
            .iter()
            .filter(move |(n, _)| n.slice(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |(_, v)| v.slice(buf))
    }
}

/// Walks a head line by line within the limits.
pub(super) struct Scanner<'b> {
    buf: &'b [u8],
    pos: usize,
    /// Only `buf[..cap]` may be part of the head.
    cap: usize,
    /// The buffer reaches the byte limit: running out of bytes means "too large", not "partial".
    at_limit: bool,
    max_line: usize,
    max_headers: usize,
}

impl<'b> Scanner<'b> {
    pub(super) fn new(buf: &'b [u8], limits: &RequestLimits) -> Self {
        let max_bytes = limits.max_header_bytes.min(MAX_HEAD_BYTES);
        Scanner {
            buf,
            pos: 0,
            cap: buf.len().min(max_bytes),
            at_limit: buf.len() >= max_bytes,
            max_line: limits.max_line,
            max_headers: limits.max_headers.min(MAX_HEADERS),
        }
    }

    /// The next line without its CRLF.
    pub(super) fn next_line(&mut self) -> Result<Parsed<Span>, HandshakeError> {
        // Look past the byte cap so that an overlong line is reported as such.
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        // A line of `max_line` bytes plus CRLF fits in this window.
        let window = rest.get(..self.max_line.saturating_add(2)).unwrap_or(rest);
        match memchr(b'\n', window) {
            Some(lf) if self.pos + lf >= self.cap => Err(HandshakeError::HeaderTooLarge),
            Some(lf) => {
                let cr = lf.checked_sub(1).and_then(|i| window.get(i));
                if cr != Some(&b'\r') {
                    return Err(HandshakeError::Malformed("bare LF line ending"));
                }
                let start = self.pos;
                self.pos = start + lf + 1;
                Ok(Parsed::Complete(Span::new(start, start + lf - 1)))
            }
            None if window.len() >= self.max_line.saturating_add(2) => Err(HandshakeError::LineTooLong),
            None if self.at_limit => Err(HandshakeError::HeaderTooLarge),
            None => Ok(Parsed::Partial),
        }
    }

    /// Header lines up to and including the blank line; returns the head's total length.
    pub(super) fn headers(&mut self, table: &mut HeaderTable) -> Result<Parsed<usize>, HandshakeError> {
        loop {
            let line = match self.next_line()? {
                Parsed::Complete(line) => line,
                Parsed::Partial => return Ok(Parsed::Partial),
            };
            let bytes = line.slice(self.buf);
            if bytes.is_empty() {
                return Ok(Parsed::Complete(self.pos));
            }
            let (name, value) = split_header(bytes, usize::from(line.start))?;
            table.push(name, value, self.max_headers)?;
        }
    }
}

/// `name ":" OWS value OWS`, validated; spans are offset by `at`.
fn split_header(line: &[u8], at: usize) -> Result<(Span, Span), HandshakeError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HandshakeError::Malformed("obs-fold continuation line"));
    }
    let colon = memchr(b':', line).ok_or(HandshakeError::Malformed("header line without colon"))?;
    let name = line.get(..colon).unwrap_or_default();
    if !is_token(name) {
        return Err(HandshakeError::Malformed("invalid header name"));
    }
    let raw = line.get(colon + 1..).unwrap_or_default();
    if !is_field_value(raw) {
        return Err(HandshakeError::Malformed("control character in header value"));
    }
    let lead = raw.iter().take_while(|b| is_ows(**b)).count();
    let trail = raw.iter().rev().take_while(|b| is_ows(**b)).count();
    let value_start = at + colon + 1 + lead;
    let value_end = (at + colon + 1 + raw.len() - trail).max(value_start);
    Ok((Span::new(at, at + colon), Span::new(value_start, value_end)))
}

const fn token_table() -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
}

static TOKEN: [bool; 256] = token_table();

/// RFC 9110 `tchar`.
pub(super) fn is_tchar(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// A non-empty RFC 9110 token.
pub(super) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

/// May appear in a field value: HTAB, SP, visible ASCII, obs-text. Not NUL, CR, LF, DEL.
pub(super) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Every byte [`is_field_byte`]: eight at a time (SWAR), bytewise only for the tail and for words
/// that hold a byte below SP or DEL (HTAB, or a real offender).
pub(super) fn is_field_value(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        // A failed conversion (impossible) yields zeros, which take the exact bytewise path.
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        // Some byte < 0x20, or some byte == 0x7f (Bit Twiddling Hacks `hasless` / `haszero`).
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let del = x ^ (ONES * 0x7f);
        let del = del.wrapping_sub(ONES) & !del & HIGH;
        if below_space | del != 0 && !chunk.iter().all(|&b| is_field_byte(b)) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| is_field_byte(b))
}

/// Visible ASCII without spaces: request targets, Host.
pub(super) fn is_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Printable ASCII plus HTAB: values the typed accessors hand out as `&str`.
pub(super) fn is_ascii_text(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b))
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Elements of a comma-separated list (`1#element`), trimmed, empty ones skipped; commas inside
/// quoted strings (extension parameters) do not split.
pub(super) struct List<'b> {
    rest: &'b [u8],
}

impl<'b> List<'b> {
    pub(super) fn new(value: &'b [u8]) -> Self {
        List { rest: value }
    }
}

impl<'b> Iterator for List<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        while !self.rest.is_empty() {
            let (mut quoted, mut escaped) = (false, false);
            let mut end = self.rest.len();
            for (i, &b) in self.rest.iter().enumerate() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let item = self.rest.get(..end).unwrap_or_default();
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            let lead = item.iter().take_while(|b| is_ows(**b)).count();
            let trail = item.iter().rev().take_while(|b| is_ows(**b)).count();
            let item = item.get(lead..item.len().saturating_sub(trail)).unwrap_or_default();
            if !item.is_empty() {
                return Some(item);
            }
        }
        None
    }
}

/// Whether any element of any of `values` equals `token`, ignoring ASCII case.
pub(super) fn has_token<'b>(mut values: impl Iterator<Item = &'b [u8]>, token: &str) -> bool {
    values.any(|v| List::new(v).any(|e| e.eq_ignore_ascii_case(token.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &str) -> Vec<&[u8]> {
        List::new(v.as_bytes()).collect()
    }

    #[test]
    fn lists() {
        assert_eq!(list("keep-alive, Upgrade"), [&b"keep-alive"[..], b"Upgrade"]);
        assert_eq!(list(" ,a,,\t b ,"), [&b"a"[..], b"b"]);
        assert_eq!(list(""), Vec::<&[u8]>::new());
        assert_eq!(list(r#"x; p="a,\"b", y"#), [&br#"x; p="a,\"b""#[..], b"y"]);
        assert!(has_token([&b"keep-alive, UPGRADE"[..]].into_iter(), "upgrade"));
        assert!(!has_token([&b"upgrades"[..]].into_iter(), "upgrade"));
    }

    fn scan(buf: &[u8], limits: RequestLimits) -> Result<Parsed<usize>, HandshakeError> {
        let mut s = Scanner::new(buf, &limits);
        let Parsed::Complete(_) = s.next_line()? else { return Ok(Parsed::Partial) };
        s.headers(&mut HeaderTable::new())
    }

    #[test]
    fn line_limits() {
        let limits = RequestLimits { max_line: 10, ..RequestLimits::default() };
        assert_eq!(scan(b"0123456789\r\n\r\n", limits), Ok(Parsed::Complete(14)));
        assert_eq!(scan(b"0123456789\r", limits), Ok(Parsed::Partial));
        assert_eq!(scan(b"0123456789A\r\n\r\n", limits), Err(HandshakeError::LineTooLong));
        assert_eq!(scan(b"0123456789AB", limits), Err(HandshakeError::LineTooLong));
        let limits = RequestLimits { max_header_bytes: 14, ..RequestLimits::default() };
        assert_eq!(scan(b"0123456789\r\n\r\n", limits), Ok(Parsed::Complete(14)));
        assert_eq!(scan(b"0123456789\r\na:", limits), Err(HandshakeError::HeaderTooLarge));
        assert_eq!(scan(b"0123456789\r\na", limits), Ok(Parsed::Partial));
    }

    #[test]
    fn swar_value_check_matches_bytewise_at_every_alignment() {
        let mut rng = fastrand::Rng::with_seed(7);
        let interesting = [0x00, b'\t', b'\n', b'\r', 0x1f, b' ', b'a', 0x7e, 0x7f, 0x80, 0xff];
        for len in 0..40 {
            for _ in 0..200 {
                let mut v: Vec<u8> = (0..len).map(|_| rng.u8(0x20..0x7f)).collect();
                if len > 0 && rng.bool() {
                    let at = rng.usize(..len);
                    v[at] = interesting[rng.usize(..interesting.len())];
                }
                assert_eq!(is_field_value(&v), v.iter().all(|&b| is_field_byte(b)), "{v:?}");
            }
        }
        for b in 0..=255u8 {
            for at in 0..16 {
                let mut v = vec![b'x'; 16];
                v[at] = b;
                assert_eq!(is_field_value(&v), is_field_byte(b), "byte {b:#x} at {at}");
            }
        }
    }

    #[test]
    fn header_values_are_trimmed() {
        let buf = b"X\r\nA:  b c \t\r\nEmpty:\r\n\r\n";
        let mut s = Scanner::new(buf, &RequestLimits::default());
        assert!(s.next_line().unwrap().is_complete());
        let mut t = HeaderTable::new();
        assert_eq!(s.headers(&mut t), Ok(Parsed::Complete(buf.len())));
        assert_eq!(t.get(buf, "a"), Some(&b"b c"[..]));
        assert_eq!(t.get(buf, "EMPTY"), Some(&b""[..]));
        assert_eq!(t.get(buf, "missing"), None);
    }
}
