//! The fuzzers' seed corpora replayed through a running engine (on whichever backend the run
//! asked for: scripts/test runs this once per backend): upgrade requests and PROXY headers as a
//! connection's first bytes, frame inputs after an upgrade. Each input must end with an answer
//! or a close, never a hang or a crash, and a bystander connection keeps echoing throughout.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use support::{echo_builder, tcp_connect, upgrade_request, Received, TestClient};
use throng::net::CidrList;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("read corpus file");
            (path.file_name().unwrap_or_default().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus {target}");
    inputs
}

/// Writes `input`, sends FIN and reads until the server closes; returns what it answered.
fn replay(mut stream: TcpStream, input: &[u8], name: &str) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    // The server may close before taking everything (a refusal): a failed write is fine.
    let _ = stream.write_all(input);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return answer,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return answer,
            Err(e) => panic!("{name}: the server neither answered nor closed: {e}"),
        }
    }
}

fn still_echoes(bystander: &mut TestClient, name: &str) {
    bystander.send_text(name);
    assert_eq!(bystander.recv(), Received::text(name), "the bystander after {name}");
}

/// An upgrade request (or garbage) as a connection's first bytes: an HTTP answer, or none.
fn check_http_answer(answer: &[u8], name: &str) {
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "{name}: {:?}",
        String::from_utf8_lossy(answer)
    );
}

fn upgraded(addr: SocketAddr) -> TcpStream {
    let mut stream = tcp_connect(addr);
    let (request, _) = upgrade_request(addr, "/");
    stream.write_all(&request).expect("upgrade request");
    // Read the 101 head; frames follow only what we send.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("101"), 1, "closed during the upgrade");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{:?}", String::from_utf8_lossy(&head));
    stream
}

#[test]
fn upgrade_request_inputs_are_answered_or_closed() {
    let server = echo_builder().start().expect("start");
    let addr = server.local_addr();
    let mut bystander = TestClient::connect(addr, "/");
    for (name, input) in corpus("upgrade_request").into_iter().chain(corpus("upgrade_query")) {
        check_http_answer(&replay(tcp_connect(addr), &input, &name), &name);
        still_echoes(&mut bystander, &name);
    }
}

#[test]
fn proxy_header_inputs_from_a_trusted_peer_are_answered_or_closed() {
    let trusted: CidrList = "127.0.0.0/8".parse().expect("cidr");
    let server = echo_builder().proxy_protocol(trusted).start().expect("start");
    let addr = server.local_addr();
    for (name, input) in corpus("proxy_header") {
        check_http_answer(&replay(tcp_connect(addr), &input, &name), &name);
    }
    // A well-formed PROXY header and upgrade still work after all of them.
    let mut stream = tcp_connect(addr);
    stream.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\n").expect("header");
    let client = TestClient::upgrade(stream, addr, "/", |s, request| s.write_all(request));
    drop(client);
}

#[test]
fn frame_inputs_after_an_upgrade_end_in_an_echo_or_a_close() {
    let server = echo_builder().max_message_size(1 << 20).start().expect("start");
    let addr = server.local_addr();
    let mut bystander = TestClient::connect(addr, "/");
    let inputs = ["frame_decode", "message_assembly", "session", "utf8", "frame_roundtrip", "mask"]
        .into_iter()
        .flat_map(corpus);
    for (name, input) in inputs {
        replay(upgraded(addr), &input, &name);
        still_echoes(&mut bystander, &name);
    }
    let stats = server.stats();
    assert_eq!(stats.connections, 1, "only the bystander is left: {stats:?}");
}
