//! Tests of the request parser (a child of `request.rs`).

use super::*;
use crate::proto::handshake::MAX_HEADERS;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A valid minimal request with `line` as request line and `extra` header lines, minus any
/// default header whose name appears in `drop`.
fn request(line: &str, drop: &[&str], extra: &[&str]) -> Vec<u8> {
    let defaults = [
        "Host: example.com".to_string(),
        "Upgrade: websocket".into(),
        "Connection: Upgrade".into(),
        format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13".into(),
    ];
    let mut out = format!("{line}\r\n");
    for h in defaults.iter().filter(|h| !drop.iter().any(|d| h.starts_with(d))) {
        out += &format!("{h}\r\n");
    }
    for h in extra {
        out += &format!("{h}\r\n");
    }
    (out + "\r\n").into_bytes()
}

fn parse(buf: &[u8]) -> Result<Parsed<UpgradeRequest<'_>>, HandshakeError> {
    parse_request(buf, &RequestLimits::default())
}

fn ok(buf: &[u8]) -> UpgradeRequest<'_> {
    match parse(buf) {
        Ok(Parsed::Complete(req)) => req,
        other => panic!("{other:?} for {}", buf.escape_ascii()),
    }
}

#[track_caller]
fn fails(buf: &[u8], err: HandshakeError, status: u16) {
    assert_eq!(parse(buf).map(|p| p.is_complete()), Err(err), "{}", buf[..buf.len().min(200)].escape_ascii());
    assert_eq!(err.status(), status);
}

#[test]
fn minimal_request() {
    let buf = request("GET /a/b?x=1&y HTTP/1.1", &[], &[]);
    let req = ok(&buf);
    assert_eq!(req.len(), buf.len());
    assert_eq!((req.path(), req.query(), req.host()), ("/a/b", Some("x=1&y"), "example.com"));
    assert_eq!((req.key(), req.origin()), (KEY, None));
    assert_eq!(&req.accept_key(), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(req.protocols().count() + req.extensions().count(), 0);
    assert_eq!(req.headers().count(), 5);
    assert_eq!(req.header("sec-websocket-VERSION"), Some(&b"13"[..]));
    assert!(format!("{req:?}").contains("/a/b"));
    assert_eq!(ok(&request("GET /? HTTP/1.1", &[], &[])).query(), Some(""));
    assert_eq!(ok(&request("GET / HTTP/1.1", &[], &[])).query(), None);
}

#[test]
fn absolute_form_targets() {
    let req_path = |target: &str| {
        let buf = request(&format!("GET {target} HTTP/1.1"), &[], &[]);
        let req = ok(&buf);
        (req.path().to_string(), req.query().map(str::to_string))
    };
    assert_eq!(req_path("http://h:1/p/q?z"), ("/p/q".into(), Some("z".into())));
    assert_eq!(req_path("WSS://h"), ("/".into(), None));
    assert_eq!(req_path("ws://h?q"), ("/".into(), Some("q".into())));
    for bad in ["ftp://h/", "http:///p", "*", "p", "/a#frag", "/caf\u{e9}"] {
        let buf = request(&format!("GET {bad} HTTP/1.1"), &[], &[]);
        assert!(matches!(parse(&buf), Err(HandshakeError::Malformed(_))), "{bad}");
    }
}

#[test]
fn token_lists() {
    for (connection, upgrade) in [
        (vec!["Connection: keep-alive, Upgrade"], "Upgrade: websocket"),
        (vec!["connection:upgrade"], "UPGRADE: WebSocket"),
        (vec!["Connection: \tkeep-alive ,  UPGRADE\t"], "Upgrade: h2c, websocket"),
        (vec!["Connection: keep-alive", "Connection: Upgrade"], "Upgrade: ,websocket,"),
    ] {
        let mut extra = connection.clone();
        extra.push(upgrade);
        let buf = request("GET / HTTP/1.1", &["Connection", "Upgrade"], &extra);
        ok(&buf);
    }
    let buf = request(
        "GET / HTTP/1.1",
        &[],
        &[
            "Sec-WebSocket-Protocol: chat, superchat",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo",
            "sec-websocket-protocol:v2",
            "Sec-WebSocket-Extensions:  bar; p=\"a,b\"  ",
        ],
    );
    let req = ok(&buf);
    assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat", "v2"]);
    let extensions = req.extensions().collect::<Vec<_>>();
    assert_eq!(extensions, ["permessage-deflate; client_max_window_bits", "x-foo", "bar; p=\"a,b\""]);
    assert_eq!(req.select_subprotocol(&["v2", "chat"]), Some("v2"));
}

#[test]
fn request_line_errors() {
    use HandshakeError::*;
    let line = |l: &str| request(l, &[], &[]);
    fails(&line("POST / HTTP/1.1"), MethodNotAllowed, 405);
    fails(&line("get / HTTP/1.1"), MethodNotAllowed, 405);
    fails(&line("GET / HTTP/1.0"), UnsupportedHttpVersion, 400);
    fails(&line("GET / HTTP/2.0"), UnsupportedHttpVersion, 400);
    fails(&line("GET / http/1.1"), Malformed("invalid HTTP version"), 400);
    fails(&line("GET /  HTTP/1.1"), Malformed("invalid HTTP version"), 400);
    fails(&line("GET /"), Malformed("request line is not METHOD TARGET VERSION"), 400);
    fails(&line("G(T / HTTP/1.1"), Malformed("invalid method"), 400);
    fails(&line(" GET / HTTP/1.1"), Malformed("invalid method"), 400);
    fails(&line("GET  / HTTP/1.1"), Malformed("invalid HTTP version"), 400);
    fails(&line("GET /\x01 HTTP/1.1"), Malformed("request target must be visible ASCII"), 400);
    // Garbage is refused before the line is complete.
    fails(b"\x16\x03\x01\x02\x00\x01\x00", Malformed("invalid method"), 400);
    fails(b"GE\0", Malformed("invalid method"), 400);
}

#[test]
fn header_errors() {
    use HandshakeError::*;
    let base = "GET / HTTP/1.1";
    fails(&request(base, &["Host"], &[]), MissingHost, 400);
    fails(&request(base, &["Host"], &["Host:  "]), MissingHost, 400);
    fails(&request(base, &[], &["Host: b"]), Malformed("duplicate Host"), 400);
    fails(&request(base, &["Host"], &["Host: a b"]), Malformed("invalid Host"), 400);
    fails(&request(base, &["Upgrade"], &[]), MissingUpgrade, 400);
    fails(&request(base, &["Upgrade"], &["Upgrade: websockets"]), MissingUpgrade, 400);
    fails(&request(base, &["Connection"], &[]), MissingConnectionUpgrade, 400);
    let keep_alive = ["Connection: keep-alive"];
    fails(&request(base, &["Connection"], &keep_alive), MissingConnectionUpgrade, 400);
    fails(&request(base, &["Sec-WebSocket-Version"], &[]), UnsupportedWebSocketVersion, 426);
    let v8 = ["Sec-WebSocket-Version: 8"];
    fails(&request(base, &["Sec-WebSocket-Version"], &v8), UnsupportedWebSocketVersion, 426);
    fails(&request(base, &[], &v8), UnsupportedWebSocketVersion, 426);
    let list = ["Sec-WebSocket-Version: 13, 8"];
    fails(&request(base, &["Sec-WebSocket-Version"], &list), UnsupportedWebSocketVersion, 426);
    fails(&request(base, &["Sec-WebSocket-Key"], &[]), MissingKey, 400);
    let dup = [format!("Sec-WebSocket-Key: {KEY}")];
    fails(&request(base, &[], &[dup[0].as_str()]), InvalidKey, 400);
    for key in ["", "abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZXM=", "!!!!!!!!!!!!!!!!!!!!!!=="] {
        let line = format!("Sec-WebSocket-Key: {key}");
        fails(&request(base, &["Sec-WebSocket-Key"], &[&line]), InvalidKey, 400);
    }
    let origin = ["Origin: https://a", "Origin: https://b"];
    fails(&request(base, &[], &origin), Malformed("duplicate Origin"), 400);
    fails(&request(base, &[], &["Origin: h\u{e9}"]), Malformed("invalid Origin"), 400);
    let protocol = ["Sec-WebSocket-Protocol: chat, a b"];
    fails(&request(base, &[], &protocol), Malformed("invalid Sec-WebSocket-Protocol"), 400);
    let ext = ["Sec-WebSocket-Extensions: x\u{e9}"];
    fails(&request(base, &[], &ext), Malformed("invalid Sec-WebSocket-Extensions"), 400);
}

#[test]
fn syntax_errors() {
    use HandshakeError::*;
    let base = "GET / HTTP/1.1";
    fails(&request(base, &[], &["X-A: 1", " folded"]), Malformed("obs-fold continuation line"), 400);
    fails(&request(base, &[], &["\tfolded"]), Malformed("obs-fold continuation line"), 400);
    fails(&request(base, &[], &["X-A 1"]), Malformed("header line without colon"), 400);
    fails(&request(base, &[], &["X-A : 1"]), Malformed("invalid header name"), 400);
    fails(&request(base, &[], &[": 1"]), Malformed("invalid header name"), 400);
    fails(&request(base, &[], &["X\u{e9}: 1"]), Malformed("invalid header name"), 400);
    for value in ["a\0b", "a\rb", "a\x7fb", "\x1b[31m"] {
        let line = format!("X-A: {value}");
        fails(&request(base, &[], &[&line]), Malformed("control character in header value"), 400);
    }
    let mut bare = request(base, &[], &[]);
    bare.splice(14..16, *b"\n");
    fails(&bare, Malformed("bare LF line ending"), 400);
    fails(b"GET / HTTP/1.1\r\nHost: a\n", Malformed("bare LF line ending"), 400);
    // obs-text is allowed in values and reachable through `header`, not `header_str`.
    let buf = request(base, &[], &["Cookie: n=caf\u{e9}", "X-Raw: \u{e9}"]);
    let mut raw = buf.clone();
    let at = raw.len() - 5;
    raw[at] = 0xff;
    assert_eq!(ok(&buf).header_str("cookie"), Some("n=caf\u{e9}"));
    assert_eq!(ok(&raw).header_str("x-raw"), None);
    assert!(ok(&raw).header("x-raw").is_some());
}

#[test]
fn limits() {
    use HandshakeError::*;
    let base = "GET / HTTP/1.1";
    let long = format!("X-Long: {}", "a".repeat(8200));
    fails(&request(base, &[], &[&long]), LineTooLong, 431);
    // The same line, still incomplete, is already too long.
    let long_request = request(base, &[], &[&long]);
    fails(&long_request[..long_request.len() - 10], LineTooLong, 431);
    let many: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    fails(&request(base, &[], &many), TooManyHeaders, 431);
    let few = RequestLimits { max_headers: 5, ..RequestLimits::default() };
    let buf = request(base, &[], &[]);
    assert!(parse_request(&buf, &few).unwrap().is_complete());
    assert_eq!(parse_request(&request(base, &[], &["X: 1"]), &few).err(), Some(TooManyHeaders));

    let medium: Vec<String> = (0..40).map(|i| format!("X-{i}: {}", "b".repeat(200))).collect();
    let medium: Vec<&str> = medium.iter().map(String::as_str).collect();
    let buf = request(base, &[], &medium);
    assert!(buf.len() > 8192);
    fails(&buf, HeaderTooLarge, 431);
    fails(&buf[..8192], HeaderTooLarge, 431);
    assert_eq!(parse(&buf[..8191]), Ok(Parsed::Partial));
    let big = RequestLimits { max_header_bytes: 1 << 20, ..RequestLimits::default() };
    assert!(parse_request(&buf, &big).unwrap().is_complete(), "clamped to 64 KiB, still fits");
}

#[test]
fn pipelined_bytes_after_the_head() {
    let head = request("GET /echo HTTP/1.1", &[], &[]);
    let mut buf = head.clone();
    buf.extend_from_slice(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    let req = ok(&buf);
    assert_eq!(req.len(), head.len());
    assert_eq!(&buf[req.len()..], b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    // Even a byte that looks like a header line must not be read as one.
    let mut buf = head.clone();
    buf.extend_from_slice(b"X-Not-A-Header: 1\r\n\r\n");
    assert_eq!(ok(&buf).header("x-not-a-header"), None);
}

#[test]
fn garbage_gets_one_status_however_it_is_split() {
    // A method-like run of letters, then a byte no method may hold, longer than the line limit:
    // every prefix must be Partial or the same error, never 431 for some and 400 for others.
    let tight = RequestLimits { max_line: 16, max_header_bytes: 64, ..RequestLimits::default() };
    for garbage in [&b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\0\0\0 x"[..], b"\0", b"GET\0/ HTTP/1.1"] {
        let mut statuses = Vec::new();
        for cut in 1..=garbage.len() {
            match parse_request(&garbage[..cut], &tight) {
                Ok(Parsed::Partial) => {}
                Ok(Parsed::Complete(_)) => panic!("garbage parsed as a request"),
                Err(e) => statuses.push(e.status()),
            }
        }
        statuses.dedup();
        assert!(statuses.len() <= 1, "{garbage:?} got statuses {statuses:?}");
    }
}
