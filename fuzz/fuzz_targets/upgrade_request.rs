//! The server's upgrade-request parser on arbitrary bytes, with default limits and with tight
//! limits derived from the input's last byte.
//!
//! - Complete: `len()` is within the input and the limits and ends with the blank line; parsing
//!   `input[..len]` gives the same request; every shorter prefix is `Partial`; the key is base64 of
//!   16 bytes; no parsed field holds CR, LF or NUL; `write_accept` for it succeeds and writes
//!   exactly the expected header lines (no bare CR/LF), also when a received header is echoed
//!   back (refused only for the names the handshake writes itself).
//! - Error: a 4xx status, and every prefix is `Partial` or an error with the same status.
//! - Partial: the input is under the byte limit and every prefix is `Partial` too.
//! - `write_accept` with a header or subprotocol cut from the raw input either fails having written
//!   nothing, or writes a head with exactly one more line (no response splitting).
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use throng::proto::handshake::{
    accept_key, parse_request, write_accept, HandshakeError, Parsed, RequestLimits, UpgradeRequest,
    MAX_HEADERS, MAX_HEAD_BYTES,
};
use throng_fuzz::{assert_head_lines, clipped, prefixes};

const RESERVED: [&str; 4] = ["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol"];

fn no_line_breaks(what: &str, bytes: &[u8]) {
    assert!(
        !bytes.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
        "{what} holds CR, LF or NUL: {}",
        clipped(&bytes)
    );
}

fn complete(data: &[u8], limits: &RequestLimits, req: &UpgradeRequest<'_>) {
    let len = req.len();
    assert!(len <= data.len() && len <= limits.max_header_bytes.min(MAX_HEAD_BYTES), "len {len}");
    assert!(data[..len].ends_with(b"\r\n\r\n"), "head of {len} bytes does not end with CRLF CRLF");
    match parse_request(&data[..len], limits) {
        Ok(Parsed::Complete(again)) => assert_eq!(format!("{again:?}"), format!("{req:?}")),
        other => panic!("the head alone parses as {}", clipped(&other)),
    }
    for cut in prefixes(data, len) {
        let r = parse_request(&data[..cut], limits);
        assert!(matches!(r, Ok(Parsed::Partial)), "prefix {cut} of a {len}-byte head: {}", clipped(&r));
    }

    let key = req.key();
    assert_eq!(STANDARD.decode(key).map(|k| k.len()), Ok(16), "key {key:?}");
    assert_eq!(req.accept_key(), accept_key(key.as_bytes()));
    assert!(req.path().starts_with('/'), "path {:?}", req.path());
    no_line_breaks("path", req.path().as_bytes());
    no_line_breaks("query", req.query().unwrap_or_default().as_bytes());
    no_line_breaks("host", req.host().as_bytes());
    assert!(!req.host().is_empty());
    no_line_breaks("origin", req.origin().unwrap_or_default().as_bytes());
    assert!(req.headers().count() <= limits.max_headers.min(MAX_HEADERS));
    for header in req.headers() {
        no_line_breaks("header name", header.name.as_bytes());
        no_line_breaks("header value", header.value);
    }

    // Accept it, choosing the first offered subprotocol.
    let offered = req.protocols().next();
    let chosen = offered.and_then(|p| req.select_subprotocol(&[p]));
    assert_eq!(chosen, offered);
    let mut out = Vec::new();
    write_accept(&mut out, key.as_bytes(), chosen, &[]).expect("write_accept of a parsed request");
    assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    let accept = req.accept_key();
    assert!(out.windows(accept.len()).any(|w| w == accept), "accept value missing");
    assert_head_lines(&out, 4 + usize::from(chosen.is_some()));

    // Echo received headers back: refused only for the names the handshake writes itself.
    for header in req.headers().take(8) {
        let Ok(value) = std::str::from_utf8(header.value) else { continue };
        let mut out = Vec::new();
        match write_accept(&mut out, key.as_bytes(), None, &[(header.name, value)]) {
            Ok(()) => assert_head_lines(&out, 5),
            Err(e) => {
                assert!(out.is_empty(), "{e:?} but wrote {} bytes", out.len());
                let reserved = RESERVED.iter().any(|r| header.name.eq_ignore_ascii_case(r));
                assert!(reserved && e == HandshakeError::ReservedHeader, "echoing {header:?}: {e:?}");
            }
        }
    }
}

fn check(data: &[u8], limits: &RequestLimits) {
    let cap = limits.max_header_bytes.min(MAX_HEAD_BYTES);
    match parse_request(data, limits) {
        Ok(Parsed::Complete(req)) => complete(data, limits, &req),
        Ok(Parsed::Partial) => {
            assert!(data.len() < cap, "Partial with {} bytes, limit {cap}", data.len());
            for cut in prefixes(data, data.len()) {
                let r = parse_request(&data[..cut], limits);
                assert!(matches!(r, Ok(Parsed::Partial)), "prefix {cut} of a partial head: {}", clipped(&r));
            }
        }
        Err(e) => {
            assert!((400..500).contains(&e.status()), "{e:?} answered with {}", e.status());
            for cut in prefixes(data, data.len()) {
                match parse_request(&data[..cut], limits) {
                    Ok(Parsed::Partial) => {}
                    Err(p) => assert_eq!(p.status(), e.status(), "prefix {cut}: {p:?}, whole: {e:?}"),
                    Ok(Parsed::Complete(req)) => panic!("prefix {cut} complete ({req:?}) but whole: {e:?}"),
                }
            }
        }
    }
}

/// Response splitting: extra header and subprotocol values taken from the raw input.
fn write_raw(data: &[u8]) {
    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
    let (name, value) = data.split_at(data.len() / 3);
    let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else { return };
    let mut out = Vec::new();
    match write_accept(&mut out, KEY, None, &[(name, value)]) {
        Ok(()) => assert_head_lines(&out, 5),
        Err(e) => assert!(out.is_empty(), "{e:?} but wrote {} bytes", out.len()),
    }
    let mut out = Vec::new();
    match write_accept(&mut out, KEY, Some(value), &[]) {
        Ok(()) => assert_head_lines(&out, 5),
        Err(e) => assert!(out.is_empty(), "{e:?} but wrote {} bytes", out.len()),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, &RequestLimits::default());
    let b = usize::from(data.last().copied().unwrap_or(0));
    let tight = RequestLimits { max_header_bytes: 24 + 4 * b, max_line: 16 + b, max_headers: b % 12 };
    check(data, &tight);
    write_raw(data);
});
