//! Tests of the client request writer and response checker (a child of `client.rs`).

use super::*;

const NONCE: &[u8; 16] = b"the sample nonce";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn handshake(protocols: &[&str]) -> ClientHandshake {
    let req = ClientRequest { subprotocols: protocols, ..ClientRequest::new("example.com", "/") };
    req.write_with_nonce(&mut Vec::new(), NONCE).unwrap()
}

fn response(lines: &[&str]) -> Vec<u8> {
    let mut out = lines.join("\r\n");
    out.push_str("\r\n\r\n");
    out.into_bytes()
}

const STATUS: &str = "HTTP/1.1 101 Switching Protocols";
const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const ACCEPT_LINE: &str = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

#[test]
fn writes_the_request() {
    let extra = [("Authorization", "Bearer t"), ("Sec-WebSocket-Extensions", "permessage-deflate")];
    let req = ClientRequest {
        host: "example.com:8080",
        path_and_query: "/chat?room=1",
        origin: Some("https://example.com"),
        subprotocols: &["v2", "v1"],
        extra_headers: &extra,
    };
    let mut out = Vec::new();
    let hs = req.write_with_nonce(&mut out, NONCE).unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nOrigin: https://example.com\r\n\
         Sec-WebSocket-Protocol: v2, v1\r\nAuthorization: Bearer t\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    );
    assert_eq!((hs.key(), hs.expected_accept()), ("dGhlIHNhbXBsZSBub25jZQ==", ACCEPT));
    assert_eq!(hs.offered_protocols().collect::<Vec<_>>(), ["v2", "v1"]);

    let (a, b) = (req.write(&mut Vec::new()).unwrap(), req.write(&mut Vec::new()).unwrap());
    assert_ne!(a.key(), b.key(), "random keys");
    assert_eq!(a.key().len(), 24);
}

#[test]
fn refuses_unsendable_requests() {
    use HandshakeError::*;
    let base = ClientRequest::new("example.com", "/");
    let cases: [(ClientRequest<'_>, HandshakeError); 9] = [
        (ClientRequest { path_and_query: "chat", ..base }, InvalidRequestTarget),
        (ClientRequest { path_and_query: "/a b", ..base }, InvalidRequestTarget),
        (ClientRequest { path_and_query: "/a\r\nX: y", ..base }, InvalidRequestTarget),
        (ClientRequest { path_and_query: "/a#f", ..base }, InvalidRequestTarget),
        (ClientRequest { host: "a\r\nX: y", ..base }, InvalidHeaderValue),
        (ClientRequest { origin: Some("o\nX: y"), ..base }, InvalidHeaderValue),
        (ClientRequest { subprotocols: &["a,b"], ..base }, InvalidHeaderValue),
        (ClientRequest { extra_headers: &[("Host", "x")], ..base }, ReservedHeader),
        (ClientRequest { extra_headers: &[("X", "\0")], ..base }, InvalidHeaderValue),
    ];
    for (req, err) in cases {
        let mut out = Vec::new();
        assert_eq!(req.write_with_nonce(&mut out, NONCE), Err(err), "{req:?}");
        assert!(out.is_empty());
    }
}

#[test]
fn accepts_a_good_response() {
    let hs = handshake(&["v2", "v1"]);
    let mut buf = response(&[
        STATUS,
        "Server: x",
        "UPGRADE: WebSocket",
        "connection: keep-alive, upgrade",
        ACCEPT_LINE,
        "Sec-WebSocket-Protocol: v1",
    ]);
    let head = buf.len();
    buf.extend_from_slice(b"\x81\x02hi");
    let res = hs.parse_response(&buf).unwrap().complete().unwrap();
    assert_eq!((res.len(), res.subprotocol()), (head, Some("v1")));
    assert_eq!(&buf[res.len()..], b"\x81\x02hi");
    assert_eq!(res.header("server"), Some(&b"x"[..]));
    assert_eq!(res.headers().count(), 5);
    assert!(format!("{res:?}").contains("v1"));
    for end in 0..head {
        assert_eq!(hs.parse_response(&buf[..end]), Ok(Parsed::Partial), "prefix {end}");
    }
    let plain = response(&[STATUS, UPGRADE, CONNECTION, ACCEPT_LINE]);
    let res = hs.parse_response(&plain).unwrap();
    assert_eq!(res.complete().unwrap().subprotocol(), None, "server may choose none");
}

#[track_caller]
fn fails(hs: &ClientHandshake, lines: &[&str], err: HandshakeError) {
    assert_eq!(hs.parse_response(&response(lines)).map(|p| p.is_complete()), Err(err));
}

#[test]
fn client_side_failures() {
    use HandshakeError::*;
    let hs = handshake(&["v1"]);
    let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno";
    assert_eq!(hs.parse_response(forbidden), Err(BadStatus(403)));
    assert_eq!(hs.parse_response(b"HTTP/1.1 200 OK\r\n"), Err(BadStatus(200)), "early");
    assert_eq!(BadStatus(403).status(), 502);
    // A status line without a reason phrase is tolerated.
    let bare = response(&["HTTP/1.1 101", UPGRADE, CONNECTION, ACCEPT_LINE]);
    assert!(hs.parse_response(&bare).unwrap().is_complete());
    fails(&hs, &["HTTP/1.0 101 Switching", UPGRADE, CONNECTION, ACCEPT_LINE], UnsupportedHttpVersion);
    fails(&hs, &["HTTP/1.1 1O1 x"], Malformed("invalid status code"));
    fails(&hs, &["HTTP/1.1 1011 x"], Malformed("invalid status code"));
    fails(&hs, &["ICY 200 OK"], Malformed("invalid status line"));
    fails(&hs, &["HTTP/1.1 101 \x01"], Malformed("control character in reason phrase"));
    fails(&hs, &[STATUS, CONNECTION, ACCEPT_LINE], MissingUpgrade);
    fails(&hs, &[STATUS, "Upgrade: h2c", CONNECTION, ACCEPT_LINE], MissingUpgrade);
    fails(&hs, &[STATUS, UPGRADE, ACCEPT_LINE], MissingConnectionUpgrade);
    fails(&hs, &[STATUS, UPGRADE, CONNECTION], AcceptMismatch);
    let wrong = "Sec-WebSocket-Accept: fFBooB7FAkLlXgRSz0BT3v4hq5s=";
    fails(&hs, &[STATUS, UPGRADE, CONNECTION, wrong], AcceptMismatch);
    fails(&hs, &[STATUS, UPGRADE, CONNECTION, ACCEPT_LINE, ACCEPT_LINE], AcceptMismatch);
    for protocol in ["chat", "V1", "v1, v1", "v1,", ""] {
        let line = format!("Sec-WebSocket-Protocol: {protocol}");
        fails(&hs, &[STATUS, UPGRADE, CONNECTION, ACCEPT_LINE, &line], UnexpectedProtocol);
    }
    let twice = "Sec-WebSocket-Protocol: v1";
    fails(&hs, &[STATUS, UPGRADE, CONNECTION, ACCEPT_LINE, twice, twice], UnexpectedProtocol);
    let ext = "Sec-WebSocket-Extensions: permessage-deflate";
    fails(&hs, &[STATUS, UPGRADE, CONNECTION, ACCEPT_LINE, ext], UnexpectedExtension);
    fails(&hs, &[STATUS, "Upgrade: websocket\r\n folded"], Malformed("obs-fold continuation line"));
}

#[test]
fn lists_the_accepted_extensions() {
    let extra = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")];
    let req = ClientRequest { extra_headers: &extra, ..ClientRequest::new("example.com", "/") };
    let hs = req.write_with_nonce(&mut Vec::new(), NONCE).unwrap();
    let buf = response(&[
        STATUS,
        UPGRADE,
        CONNECTION,
        ACCEPT_LINE,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10 , x-other",
        "sec-websocket-extensions: third; p=\"a,b\"",
        "Sec-WebSocket-Extensions: caf\u{e9}",
    ]);
    let res = hs.parse_response(&buf).unwrap().complete().unwrap();
    assert_eq!(
        res.extensions().collect::<Vec<_>>(),
        ["permessage-deflate; client_max_window_bits=10", "x-other", "third; p=\"a,b\"", "caf\u{e9}"]
    );
    // A value byte above 0x7f is allowed (obs-text) but not UTF-8 here.
    let mut latin1 = response(&[STATUS, UPGRADE, CONNECTION, ACCEPT_LINE]);
    latin1.truncate(latin1.len() - 2);
    latin1.extend_from_slice(b"Sec-WebSocket-Extensions: caf\xe9, permessage-deflate\r\n\r\n");
    let res = hs.parse_response(&latin1).unwrap().complete().unwrap();
    assert_eq!(res.extensions().collect::<Vec<_>>(), ["\u{fffd}", "permessage-deflate"]);
    let plain = response(&[STATUS, UPGRADE, CONNECTION, ACCEPT_LINE]);
    assert_eq!(hs.parse_response(&plain).unwrap().complete().unwrap().extensions().count(), 0);
}
