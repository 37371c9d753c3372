//! The client's check of the server's 101 response, on arbitrary bytes, for a handshake with a
//! fixed key that offered subprotocols, once without and once with an extension offer.
//!
//! - No panic.
//! - Complete: the status line is `HTTP/1.1 101`; there is exactly one `Sec-WebSocket-Accept`
//!   and it is the one the key implies; the subprotocol (if any) was offered; no extension header
//!   unless extensions were offered; `len()` is within the input and ends with the blank line;
//!   parsing `input[..len]` gives the same response; every shorter prefix is `Partial`.
//! - Error: every prefix is `Partial` or an error with the same status.
//! - Partial: the input is under the byte limit and every prefix is `Partial` too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use throng::proto::handshake::{ClientHandshake, ClientRequest, Parsed, RequestLimits, ServerResponse};
use throng_fuzz::{clipped, prefixes};

const PROTOCOLS: [&str; 3] = ["chat", "v2.json", "superchat"];

fn handshakes() -> &'static [(ClientHandshake, bool); 2] {
    static HANDSHAKES: OnceLock<[(ClientHandshake, bool); 2]> = OnceLock::new();
    HANDSHAKES.get_or_init(|| {
        let make = |extensions: &[(&str, &str)]| {
            let req = ClientRequest {
                subprotocols: &PROTOCOLS,
                extra_headers: extensions,
                ..ClientRequest::new("example.com", "/chat")
            };
            let hs = req.write_with_nonce(&mut Vec::new(), b"the sample nonce").expect("client request");
            assert_eq!(hs.expected_accept(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            hs
        };
        [(make(&[]), false), (make(&[("Sec-WebSocket-Extensions", "permessage-deflate")]), true)]
    })
}

fn complete(data: &[u8], hs: &ClientHandshake, offers_extensions: bool, resp: &ServerResponse<'_>) {
    assert!(
        data.starts_with(b"HTTP/1.1 101") && matches!(data.get(12), Some(b' ' | b'\r')),
        "complete without a 101 status line: {}",
        clipped(&data.escape_ascii().to_string())
    );
    let accepts: Vec<&[u8]> = resp
        .headers()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value)
        .collect();
    assert_eq!(accepts, [hs.expected_accept().as_bytes()], "accept headers");
    if let Some(p) = resp.subprotocol() {
        assert!(hs.offered_protocols().any(|o| o == p), "subprotocol {p:?} was not offered");
    }
    if !offers_extensions {
        let ext = resp.headers().any(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"));
        assert!(!ext, "extensions accepted although none were offered");
    }
    for h in resp.headers() {
        assert!(!h.value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{h:?}");
    }
    let len = resp.len();
    assert!(len <= data.len() && len <= RequestLimits::default().max_header_bytes, "len {len}");
    assert!(data[..len].ends_with(b"\r\n\r\n"), "head of {len} bytes does not end with CRLF CRLF");
    match hs.parse_response(&data[..len]) {
        Ok(Parsed::Complete(again)) => assert_eq!(format!("{again:?}"), format!("{resp:?}")),
        other => panic!("the head alone parses as {}", clipped(&other)),
    }
    for cut in prefixes(data, len) {
        let r = hs.parse_response(&data[..cut]);
        assert!(matches!(r, Ok(Parsed::Partial)), "prefix {cut} of a {len}-byte head: {}", clipped(&r));
    }
}

fuzz_target!(|data: &[u8]| {
    for (hs, offers_extensions) in handshakes() {
        match hs.parse_response(data) {
            Ok(Parsed::Complete(resp)) => complete(data, hs, *offers_extensions, &resp),
            Ok(Parsed::Partial) => {
                assert!(data.len() < RequestLimits::default().max_header_bytes);
                for cut in prefixes(data, data.len()) {
                    let r = hs.parse_response(&data[..cut]);
                    assert!(
                        matches!(r, Ok(Parsed::Partial)),
                        "prefix {cut} of a partial head: {}",
                        clipped(&r)
                    );
                }
            }
            Err(e) => {
                for cut in prefixes(data, data.len()) {
                    match hs.parse_response(&data[..cut]) {
                        Ok(Parsed::Partial) => {}
                        Err(p) => assert_eq!(p.status(), e.status(), "prefix {cut}: {p:?}, whole: {e:?}"),
                        Ok(Parsed::Complete(r)) => panic!("prefix {cut} complete ({r:?}) but whole: {e:?}"),
                    }
                }
            }
        }
    }
});
