//! End-to-end tests: real browser requests, every prefix, the fuzz seeds, client ↔ server.

use super::*;

const CHROME: &[u8] = include_bytes!("../../../fuzz/corpus/upgrade_request/chrome.txt");
const FIREFOX: &[u8] = include_bytes!("../../../fuzz/corpus/upgrade_request/firefox.txt");

fn complete(buf: &[u8]) -> UpgradeRequest<'_> {
    match parse_request(buf, &RequestLimits::default()) {
        Ok(Parsed::Complete(req)) => req,
        other => panic!("{other:?}"),
    }
}

#[test]
fn chrome_request() {
    let req = complete(CHROME);
    assert_eq!(req.len(), CHROME.len());
    assert_eq!((req.path(), req.query()), ("/chat", Some("room=lobby&v=2")));
    assert_eq!(req.host(), "gateway.example.com:8443");
    assert_eq!(req.origin(), Some("https://app.example.com"));
    assert_eq!(req.key(), "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(req.protocols().collect::<Vec<_>>(), ["v2.json", "v1.json"]);
    let extensions: Vec<_> = req.extensions().collect();
    assert_eq!(extensions, ["permessage-deflate; client_max_window_bits"]);
    assert_eq!(req.headers().count(), 14);
    assert_eq!(req.header_str("cookie").map(|c| c.starts_with("session=")), Some(true));
    assert_eq!(req.header("PRAGMA"), Some(&b"no-cache"[..]));
    assert_eq!(req.header("x-missing"), None);

    let req = complete(FIREFOX);
    assert_eq!((req.path(), req.origin()), ("/socket", Some("http://localhost:9001")));
}

#[test]
fn every_prefix_is_partial() {
    for full in [CHROME, FIREFOX] {
        for end in 0..full.len() {
            let got = parse_request(&full[..end], &RequestLimits::default());
            assert_eq!(got.map(|p| p.is_complete()), Ok(false), "prefix {end}");
        }
        assert!(complete(full).len() == full.len());
    }
}

#[test]
fn seeds_parse_as_expected() {
    let seed = |name: &str| {
        std::fs::read(format!("{}/fuzz/corpus/upgrade_request/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let parse =
        |buf: &[u8]| parse_request(buf, &RequestLimits::default()).map(|p| p.complete().map(|r| r.len()));
    let minimal = seed("minimal.txt");
    assert_eq!(parse(&minimal), Ok(Some(minimal.len())));
    assert_eq!(parse(&seed("bad_version.txt")), Err(HandshakeError::UnsupportedWebSocketVersion));
    assert_eq!(parse(&seed("too_long_header.txt")), Err(HandshakeError::LineTooLong));
    let pipelined = seed("pipelined_frame.txt");
    assert_eq!(parse(&pipelined), Ok(Some(pipelined.len() - 11)));
    let absolute = seed("absolute_form.txt");
    let req = complete(&absolute);
    assert_eq!((req.path(), req.query()), ("/live", Some("x=1")));
    assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat", "v2"]);
}

#[test]
fn client_server_round_trip() {
    let request = ClientRequest {
        origin: Some("https://app.example.com"),
        subprotocols: &["v2.json", "v1.json"],
        extra_headers: &[("Cookie", "session=1")],
        ..ClientRequest::new("gateway.example.com", "/live?room=7")
    };
    let mut wire = Vec::new();
    let client = request.write(&mut wire).unwrap();
    wire.extend_from_slice(b"\x81\x80\0\0\0\0"); // the client's first frame, same write

    let req = complete(&wire);
    assert_eq!((req.path(), req.query(), req.host()), ("/live", Some("room=7"), "gateway.example.com"));
    assert_eq!(req.key(), client.key());
    assert_eq!(&wire[req.len()..], b"\x81\x80\0\0\0\0");
    assert_eq!(req.header_str("cookie"), Some("session=1"));
    let accept = Accept { subprotocol: req.select_subprotocol(&["v1.json"]), extra_headers: &[] };

    let mut reply = Vec::new();
    accept.write(&mut reply, req.key().as_bytes()).unwrap();
    let head = reply.len();
    reply.extend_from_slice(b"\x89\x00"); // a ping right behind the 101
    let res = client.parse_response(&reply).unwrap().complete().unwrap();
    assert_eq!((res.len(), res.subprotocol()), (head, Some("v1.json")));
    assert_eq!(res.header("sec-websocket-accept"), Some(client.expected_accept().as_bytes()));
}

#[test]
fn response_seeds() {
    let seed = |name: &str| {
        std::fs::read(format!("{}/fuzz/corpus/upgrade_response/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let nonce = b"the sample nonce";
    let plain = ClientRequest::new("h", "/").write_with_nonce(&mut Vec::new(), nonce).unwrap();
    let accept = seed("accept.txt");
    assert_eq!(plain.parse_response(&accept).unwrap().complete().map(|r| r.len()), Some(accept.len()));
    let json = ClientRequest { subprotocols: &["v2.json"], ..ClientRequest::new("h", "/") };
    let json = json.write_with_nonce(&mut Vec::new(), nonce).unwrap();
    let framed = seed("accept_protocol_frame.txt");
    let res = json.parse_response(&framed).unwrap().complete().unwrap();
    assert_eq!((res.subprotocol(), &framed[res.len()..]), (Some("v2.json"), &b"\x81\x02hi"[..]));
    assert_eq!(plain.parse_response(&seed("forbidden.txt")), Err(HandshakeError::BadStatus(403)));
}

#[test]
fn errors_become_responses() {
    let mut out = Vec::new();
    let err = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &RequestLimits::default());
    let err = err.unwrap_err();
    assert_eq!((err, err.status()), (HandshakeError::MissingUpgrade, 400));
    write_error(&mut out, &err);
    assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    out.clear();
    Rejection::from(HandshakeError::UnsupportedWebSocketVersion).write(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
}

/// A poor man's fuzzer (the real one lives in fuzz/): mutated seeds never panic, and a complete
/// parse never claims more bytes than it was given.
#[test]
fn mutated_seeds_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x7410);
    let nonce = b"the sample nonce";
    let client = ClientRequest::new("h", "/").write_with_nonce(&mut Vec::new(), nonce).unwrap();
    let response = include_bytes!("../../../fuzz/corpus/upgrade_response/accept.txt");
    let limits = RequestLimits { max_header_bytes: 600, max_headers: 12, max_line: 120 };
    for round in 0..20_000 {
        let seed: &[u8] = [CHROME, FIREFOX, response].get(round % 3).copied().unwrap_or(CHROME);
        let mut buf = seed.to_vec();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..buf.len());
            match rng.u8(..4) {
                0 => buf[at] = rng.u8(..),
                1 => buf.insert(at, [b'\r', b'\n', b' ', b',', b':', 0][rng.usize(..6)]),
                2 => drop(buf.remove(at)),
                _ => buf.truncate(at),
            }
            if buf.is_empty() {
                buf.push(b'G');
            }
        }
        for limits in [RequestLimits::default(), limits] {
            if let Ok(Parsed::Complete(req)) = parse_request(&buf, &limits) {
                assert!(req.len() <= buf.len());
                let _ = (req.path(), req.query(), req.protocols().count(), req.extensions().count());
            }
            if let Ok(Parsed::Complete(res)) = client.parse_response_with_limits(&buf, &limits) {
                assert!(res.len() <= buf.len() && res.subprotocol().is_none());
            }
        }
    }
}
