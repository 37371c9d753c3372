//! The engine over TLS (`wss://`), on loopback with certificates made by the test: the
//! handshake and echo, resumption, TLS 1.2, what is refused (plain HTTP, garbage, a client that
//! distrusts the certificate, no common ALPN) and the handshake deadline, each counted by
//! reason. Runs on the backend `THRONG_BACKEND` names, like the rest of the suite.

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use support::{echo_builder, tcp_connect, upgrade_request, wait_until};
use throng::proto::frame::{encode_frame, random_mask};
use throng::proto::handshake::Parsed;
use throng::proto::OpCode;
use throng::tls::{rustls, server_config, Certificates};
use throng::{Server, TlsFailure};

/// A certificate authority and a leaf it signed for `localhost` and 127.0.0.1.
struct Pki {
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    pki_named("throng test CA")
}

/// [`pki`] with a CA of this name (another CA must have another name, or a client reads its
/// certificates as forged ones of the first).
fn pki_named(ca_name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
    let leaf = params.signed_by(&key, &issuer).expect("leaf");
    Pki { ca_pem: ca.pem(), chain_pem: format!("{}{}", leaf.pem(), ca.pem()), key_pem: key.serialize_pem() }
}

fn client_config(pki: &Pki, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn tls_server(pki: &Pki) -> Server {
    tls_builder(pki).start().expect("start")
}

fn tls_builder(pki: &Pki) -> throng::ServerBuilder {
    let certificates =
        Certificates::from_pem(pki.chain_pem.as_bytes(), pki.key_pem.as_bytes()).expect("pair");
    echo_builder()
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20)
        .tls(server_config(certificates).expect("config"))
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr`, handshake done (or its error).
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> io::Result<Tls> {
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let conn = ClientConnection::new(config.clone(), name).expect("client connection");
    let mut tls = StreamOwned::new(conn, tcp_connect(addr));
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// A WebSocket over TLS, upgraded.
fn wss(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let mut tls = tls_connect(addr, config, "localhost").expect("TLS handshake");
    let (request, handshake) = upgrade_request(addr, "/");
    tls.write_all(&request).expect("send the upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).expect("read the answer");
        head.push(byte[0]);
    }
    match handshake.parse_response(&head) {
        Ok(Parsed::Complete(_)) => {}
        other => panic!("upgrade refused: {other:?} in {:?}", String::from_utf8_lossy(&head)),
    }
    tls
}

fn send(tls: &mut Tls, opcode: OpCode, payload: &[u8]) {
    let mut frame = Vec::new();
    encode_frame(&mut frame, true, opcode, Some(random_mask()), payload);
    tls.write_all(&frame).expect("send a frame");
}

/// The next frame from the server (unmasked, unfragmented here): opcode and payload.
fn recv(tls: &mut Tls) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tls.read_exact(&mut head).expect("frame header");
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            tls.read_exact(&mut ext).expect("length");
            u16::from_be_bytes(ext) as usize
        }
        127 => {
            let mut ext = [0u8; 8];
            tls.read_exact(&mut ext).expect("length");
            u64::from_be_bytes(ext) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).expect("payload");
    (head[0] & 0x0f, payload)
}

/// Reads until the server's close_notify (a clean TLS end) or an error; the clean end is Ok.
fn read_to_end(tls: &mut Tls) -> io::Result<Vec<u8>> {
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)?;
    Ok(rest)
}

fn failures(server: &Server, reason: TlsFailure) -> u64 {
    server.stats().tls_failures.get(reason)
}

#[test]
fn echoes_small_and_large_messages_and_closes_cleanly() {
    let pki = pki();
    let server = tls_server(&pki);
    let config = client_config(&pki, rustls::DEFAULT_VERSIONS);
    let mut tls = wss(server.local_addr(), &config);
    send(&mut tls, OpCode::Text, b"hello over tls");
    assert_eq!(recv(&mut tls), (1, b"hello over tls".to_vec()));
    // Several records each way, and more than the encryption runs ahead of the socket.
    let big: Vec<u8> = (0..3 << 20).map(|i| (i * 7 % 251) as u8).collect();
    send(&mut tls, OpCode::Binary, &big);
    let (opcode, echoed) = recv(&mut tls);
    assert_eq!(opcode, 2);
    assert!(echoed == big, "the 3 MiB echo differs");
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    send(&mut tls, OpCode::Close, &close);
    // The server echoes the code.
    assert_eq!(recv(&mut tls), (8, close[..2].to_vec()));
    // Then close_notify: a clean end of the TLS stream, not a truncation.
    assert_eq!(read_to_end(&mut tls).expect("close_notify, then EOF"), Vec::<u8>::new());
    let stats = server.stats();
    assert_eq!((stats.tls_handshakes, stats.handshakes_ok), (1, 1));
    assert_eq!(stats.tls_failures.total(), 0);
    assert!(wait_until(Duration::from_secs(5), || server.stats().connections == 0));
}

#[test]
fn a_second_connection_resumes_and_tls12_works() {
    let pki = pki();
    let server = tls_server(&pki);
    let addr = server.local_addr();
    for versions in [rustls::DEFAULT_VERSIONS, &[&rustls::version::TLS12][..]] {
        let config = client_config(&pki, versions);
        for _ in 0..2 {
            let mut tls = wss(addr, &config);
            send(&mut tls, OpCode::Text, b"x");
            assert_eq!(recv(&mut tls), (1, b"x".to_vec()));
        }
    }
    let stats = server.stats();
    assert_eq!(stats.tls_handshakes, 4);
    // The second connection of each pair resumed (a TLS 1.3 ticket, a TLS 1.2 session).
    assert_eq!(stats.tls_resumed, 2);
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_that_says_why() {
    let pki = pki();
    let server = tls_server(&pki);
    let addr = server.local_addr();
    let config = client_config(&pki, rustls::DEFAULT_VERSIONS);
    let mut bystander = wss(addr, &config);
    let mut plain = tcp_connect(addr);
    plain.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
    let mut answer = String::new();
    plain.read_to_string(&mut answer).expect("answer, then EOF");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use https:// or wss://"), "{answer}");
    assert_eq!(failures(&server, TlsFailure::NotTls), 1);
    // Nobody else noticed.
    send(&mut bystander, OpCode::Text, b"still here");
    assert_eq!(recv(&mut bystander), (1, b"still here".to_vec()));
}

#[test]
fn garbage_gets_an_alert_and_the_connection_ends() {
    let pki = pki();
    let server = tls_server(&pki);
    let mut raw = tcp_connect(server.local_addr());
    // A handshake record header with a version no TLS uses, then noise.
    raw.write_all(&[0x16, 0x09, 0x09, 0x00, 0x05, 1, 2, 3, 4, 5]).expect("send");
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    // An alert record (content type 21), or nothing; never a hang.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    assert!(wait_until(Duration::from_secs(5), || failures(&server, TlsFailure::Protocol) == 1));
    assert!(wait_until(Duration::from_secs(5), || server.stats().connections == 0));
}

#[test]
fn a_client_that_distrusts_the_certificate_is_counted() {
    let pki = pki();
    let server = tls_server(&pki);
    let stranger = pki_named("another CA");
    let config = client_config(&stranger, rustls::DEFAULT_VERSIONS);
    let error = tls_connect(server.local_addr(), &config, "localhost").expect_err("refused");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    assert!(wait_until(Duration::from_secs(5), || failures(&server, TlsFailure::PeerAlert) == 1));
    // The same CA but another name: refused for the name.
    let config = client_config(&pki, rustls::DEFAULT_VERSIONS);
    let error = tls_connect(server.local_addr(), &config, "elsewhere.test").expect_err("refused");
    assert!(error.to_string().contains("not valid for name"), "{error}");
    assert!(wait_until(Duration::from_secs(5), || failures(&server, TlsFailure::PeerAlert) == 2));
}

#[test]
fn no_common_application_protocol_is_incompatible() {
    let pki = pki();
    let server = tls_server(&pki);
    let mut config = (*client_config(&pki, rustls::DEFAULT_VERSIONS)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let error = tls_connect(server.local_addr(), &Arc::new(config), "localhost").expect_err("refused");
    assert!(error.to_string().contains("NoApplicationProtocol"), "{error}");
    assert!(wait_until(Duration::from_secs(5), || failures(&server, TlsFailure::Incompatible) == 1));
}

#[test]
fn a_slow_tls_handshake_is_cut_at_the_deadline() {
    let pki = pki();
    let server = tls_builder(&pki).handshake_timeout(Duration::from_millis(300)).start().expect("start");
    let mut raw = tcp_connect(server.local_addr());
    // The start of a ClientHello record, and then nothing.
    raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).expect("send");
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest); // returns once the server gives up on us
    assert!(wait_until(Duration::from_secs(5), || failures(&server, TlsFailure::Timeout) == 1));
    // Counted by the removal, right after the timeout's count: wait for it too.
    assert!(wait_until(Duration::from_secs(5), || server.stats().handshakes_failed == 1));
    // A connection that goes away mid-handshake is counted as closed, not timed out.
    let mut raw = tcp_connect(server.local_addr());
    raw.write_all(&[0x16, 0x03, 0x01]).expect("send");
    drop(raw);
    assert!(wait_until(Duration::from_secs(5), || failures(&server, TlsFailure::Closed) == 1));
}

/// After a TLS 1.3 handshake the engine runs the session's records itself (rustls keeps the
/// key schedule): key updates either way keep it going, in both directions.
#[test]
fn key_updates_keep_the_session_going() {
    let pki = pki();
    let server = tls_server(&pki);
    let config = client_config(&pki, &[&rustls::version::TLS13]);
    let mut tls = wss(server.local_addr(), &config);
    for round in 0..4u8 {
        // rustls' client asks for the server's key to be updated too: the server answers
        // with its own KeyUpdate before its next record, under its old key.
        tls.conn.refresh_traffic_keys().expect("key update");
        let payload = vec![round; 40_000];
        send(&mut tls, OpCode::Binary, &payload);
        assert_eq!(recv(&mut tls), (2, payload), "round {round}");
    }
    send(&mut tls, OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(recv(&mut tls), (8, 1000u16.to_be_bytes().to_vec()));
    assert_eq!(read_to_end(&mut tls).expect("close_notify, then EOF"), Vec::<u8>::new());
}

/// Records split across many reads (one byte per write) are put together.
#[test]
fn records_split_across_reads_are_joined() {
    let pki = pki();
    let server = tls_server(&pki);
    let config = client_config(&pki, &[&rustls::version::TLS13]);
    let mut tls = wss(server.local_addr(), &config);
    tls.sock.set_nodelay(true).expect("nodelay");
    let mut frame = Vec::new();
    encode_frame(&mut frame, true, OpCode::Text, Some(random_mask()), b"one byte at a time");
    tls.conn.writer().write_all(&frame).expect("plaintext");
    let mut wire = Vec::new();
    tls.conn.write_tls(&mut wire).expect("ciphertext");
    for byte in &wire {
        tls.sock.write_all(std::slice::from_ref(byte)).expect("one byte");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(recv(&mut tls), (1, b"one byte at a time".to_vec()));
}

/// The records of an established session: what breaks them ends that connection with the
/// right alert, and the others carry on.
#[test]
fn a_tampered_or_unprotected_record_gets_its_alert() {
    let pki = pki();
    let server = tls_server(&pki);
    let config = client_config(&pki, &[&rustls::version::TLS13]);
    let mut bystander = wss(server.local_addr(), &config);

    // A flipped bit in a record's ciphertext: bad_record_mac.
    let mut tls = wss(server.local_addr(), &config);
    let mut frame = Vec::new();
    encode_frame(&mut frame, true, OpCode::Text, Some(random_mask()), b"tampered");
    tls.conn.writer().write_all(&frame).expect("plaintext");
    let mut wire = Vec::new();
    tls.conn.write_tls(&mut wire).expect("ciphertext");
    wire[8] ^= 1;
    tls.sock.write_all(&wire).expect("send");
    let error = read_to_end(&mut tls).expect_err("an alert");
    assert!(error.to_string().contains("BadRecordMac"), "{error}");

    // A plaintext alert record after the handshake: unexpected_message.
    let mut tls = wss(server.local_addr(), &config);
    tls.sock.write_all(&[21, 3, 3, 0, 2, 1, 0]).expect("send");
    let error = read_to_end(&mut tls).expect_err("an alert");
    assert!(error.to_string().contains("UnexpectedMessage"), "{error}");

    // A record longer than TLS allows: record_overflow, before its body arrives.
    let mut tls = wss(server.local_addr(), &config);
    tls.sock.write_all(&[23, 3, 3, 0x48, 0x01]).expect("send");
    let error = read_to_end(&mut tls).expect_err("an alert");
    assert!(error.to_string().contains("RecordOverflow"), "{error}");

    send(&mut bystander, OpCode::Text, b"still here");
    assert_eq!(recv(&mut bystander), (1, b"still here".to_vec()));
    // Counted as the connections' protocol violations, not as handshake failures.
    let stats = server.stats();
    assert_eq!((stats.protocol_errors, stats.tls_failures.total()), (3, 0));
}

/// A client that keeps asking for key updates without sending data is cut off (each answer is
/// queued for it whether it reads or not), with unexpected_message.
#[test]
fn a_key_update_flood_is_cut_off() {
    let pki = pki();
    let server = tls_server(&pki);
    let config = client_config(&pki, &[&rustls::version::TLS13]);
    let mut tls = wss(server.local_addr(), &config);
    // Within the allowance, with data between: the session goes on.
    for _ in 0..3 {
        for _ in 0..32 {
            tls.conn.refresh_traffic_keys().expect("key update");
        }
        send(&mut tls, OpCode::Text, b"between");
        assert_eq!(recv(&mut tls), (1, b"between".to_vec()));
    }
    for _ in 0..40 {
        tls.conn.refresh_traffic_keys().expect("key update");
    }
    tls.conn.complete_io(&mut tls.sock).expect("send the updates");
    let error = read_to_end(&mut tls).expect_err("an alert");
    assert!(error.to_string().contains("UnexpectedMessage"), "{error}");
    assert_eq!(server.stats().protocol_errors, 1);
}
