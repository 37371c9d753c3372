//! The client over `wss://`: certificates made by rcgen for the test, a small TLS server thread
//! on loopback (rustls' `ServerConnection`, then a WebSocket echo on throng's sans-IO pieces),
//! and the failures a client must name: an expired certificate, one for another host, one from
//! an authority it does not trust.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use throng::client::{connect, ClientError, ClientOptions};
use throng::proto::deflate::Compression;
use throng::proto::frame::encode_frame;
use throng::proto::handshake::{parse_request, write_accept, Parsed, RequestLimits};
use throng::proto::{DataKind, FrameWriter, Item, Limits, Message, Role, Session};
use throng::tls::rustls::{self, ServerConfig, ServerConnection, StreamOwned};
use throng::tls::{server_config, Certificates};
use throng::{Flow, Server};

/// Every wait of the test, on either side: nothing here takes more than a few milliseconds.
const WAIT: Duration = Duration::from_secs(5);

/// A message the echo server does not answer (to let a read time out).
const SILENCE: &str = "say nothing";

/// A certificate authority, and the PEM file a client trusts it through.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem_file: PathBuf,
}

impl Authority {
    fn new(name: &str) -> Self {
        static FILES: AtomicUsize = AtomicUsize::new(0);
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("CA certificate");
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let pem_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("client_tls-{}-{n}.pem", std::process::id()));
        std::fs::write(&pem_file, cert.pem()).expect("write the CA file");
        Authority { issuer: Issuer::new(params, key), pem_file }
    }

    /// A server configuration presenting a leaf for `names` issued by this authority, valid now
    /// or (`expired`) for a year that ended long ago.
    fn server(&self, names: &[&str], expired: bool) -> Arc<ServerConfig> {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, "throng test server");
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        let certificates =
            Certificates::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).expect("pair");
        Arc::new(server_config(certificates).expect("server config"))
    }

    fn options(&self) -> ClientOptions {
        let options =
            ClientOptions { read_timeout: Some(WAIT), handshake_timeout: Some(WAIT), ..Default::default() };
        options.ca_file(&self.pem_file).expect("load the CA file")
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pem_file);
    }
}

/// What the server thread saw of its one connection.
#[derive(Debug)]
struct Served {
    /// The TLS handshake's outcome on the server's side (an alert from the client, typically).
    handshake: Result<(), String>,
    /// Messages echoed.
    echoed: usize,
    /// The client ended TLS with close_notify (rather than a bare TCP close).
    close_notify: bool,
}

/// Starts a one-connection TLS server on loopback; `echo` runs a WebSocket echo after the TLS
/// handshake, otherwise the connection ends there. Its report arrives on the receiver.
fn serve(config: Arc<ServerConfig>, echo: bool) -> (SocketAddr, mpsc::Receiver<Served>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else { return };
        let _ = tx.send(run(config, tcp, echo));
    });
    (addr, rx)
}

fn run(config: Arc<ServerConfig>, tcp: TcpStream, echo: bool) -> Served {
    let mut served = Served { handshake: Ok(()), echoed: 0, close_notify: false };
    let setup = tcp.set_read_timeout(Some(WAIT)).and_then(|()| tcp.set_write_timeout(Some(WAIT)));
    let conn = ServerConnection::new(config).expect("server connection");
    let mut tls = StreamOwned::new(conn, tcp);
    if let Err(e) = setup.and_then(|()| tls.conn.complete_io(&mut tls.sock).map(drop)) {
        served.handshake = Err(e.to_string());
        return served;
    }
    if echo {
        if let Err(e) = echo_session(&mut tls, &mut served) {
            served.handshake = Err(format!("echo: {e}"));
        }
    }
    served
}

/// The upgrade, then every message echoed (but [`SILENCE`]) until the client's close, which is
/// answered, followed by our close_notify; then the client's close_notify is awaited.
fn echo_session(tls: &mut StreamOwned<ServerConnection, TcpStream>, served: &mut Served) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut filled = 0;
    let head_len = loop {
        let n = tls.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        if let Parsed::Complete(request) = parse_request(&buf[..filled], &RequestLimits::default())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        {
            let mut out = Vec::new();
            write_accept(&mut out, request.key().as_bytes(), None, &[]).expect("101");
            tls.write_all(&out)?;
            break request.len();
        }
    };
    let mut session = Session::new(Role::Server);
    let limits = Limits { max_frame_size: 4 << 20, max_message_size: 4 << 20, ..Limits::default() };
    let (mut pos, mut message, mut out) = (head_len, Vec::new(), Vec::new());
    loop {
        while pos < filled {
            let (used, item) = session
                .handle_read(&mut buf[pos..filled], &limits, &mut FrameWriter::new(&mut out, Role::Server))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            pos += used;
            match item {
                None => break,
                Some(Item::Data { kind, chunk, last, .. }) => {
                    message.extend_from_slice(chunk);
                    if last {
                        if message != SILENCE.as_bytes() {
                            encode_frame(&mut out, true, kind.opcode(), None, &message);
                            served.echoed += 1;
                        }
                        message.clear();
                    }
                }
                Some(Item::Close { .. }) => {
                    tls.write_all(&out)?;
                    tls.conn.send_close_notify();
                    tls.flush()?;
                    // The client's close_notify is what reading to the end finds; a bare TCP
                    // close would be an UnexpectedEof error.
                    let mut rest = [0u8; 64];
                    served.close_notify = matches!(tls.read(&mut rest), Ok(0));
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        if !out.is_empty() {
            tls.write_all(&out)?;
            out.clear();
        }
        if pos == filled {
            (pos, filled) = (0, 0);
        } else if filled == buf.len() {
            buf.copy_within(pos..filled, 0);
            (pos, filled) = (0, filled - pos);
        }
        let n = tls.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
}

fn report(rx: &mpsc::Receiver<Served>) -> Served {
    rx.recv_timeout(WAIT).expect("the server thread's report")
}

/// The TLS error of a failed connect, as text, with the server's view of the handshake.
fn refused(url: &str, options: &ClientOptions, rx: &mpsc::Receiver<Served>) -> (rustls::Error, String) {
    let err = connect(url, options).expect_err("a refused handshake");
    let text = err.to_string();
    let ClientError::Tls { error, .. } = err else { panic!("{url}: expected a TLS error, got {err:?}") };
    assert!(report(rx).handshake.is_err(), "the server finished a handshake the client refused");
    (error, text)
}

#[test]
fn echo_round_trips_over_wss_with_the_ca_file() {
    let ca = Authority::new("throng test CA");
    let (addr, rx) = serve(ca.server(&["localhost", "127.0.0.1"], false), true);
    let mut conn =
        connect(&format!("wss://localhost:{}/echo?x=1", addr.port()), &ca.options()).expect("wss connect");
    assert_eq!(conn.peer_addr().unwrap(), addr);
    conn.send_text("hello").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("hello".into()));

    // Larger than a TLS record (16 KiB) and than the client's 256 KiB write pieces.
    let big: Vec<u8> = (0..(1usize << 20) + 7).map(|i| (i * 31 + i / 251) as u8).collect();
    conn.send_binary(&big).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Binary(big.clone()));
    conn.send_fragmented(DataKind::Text, "in three pieces".as_bytes(), 5).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("in three pieces".into()));

    // Pongs reach the handler; a read timeout leaves the connection usable.
    let (pong_tx, pong_rx) = mpsc::channel();
    conn.on_pong(move |payload| {
        let _ = pong_tx.send(payload.to_vec());
    });
    conn.ping(b"p1").unwrap();
    conn.send_text(SILENCE).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    assert!(matches!(conn.recv(), Err(ClientError::Timeout)));
    assert_eq!(pong_rx.try_recv().expect("the pong, read before the timeout"), b"p1");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.send_text("still there").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("still there".into()));

    conn.close(1000, "done").expect("close handshake");
    assert!(matches!(conn.recv(), Err(ClientError::Closed { code: 1000, .. })));
    let served = report(&rx);
    assert_eq!(served.handshake, Ok(()));
    assert_eq!(served.echoed, 4);
    assert!(served.close_notify, "the client ends TLS with close_notify");
}

#[test]
fn round_trips_with_the_engine_compressed_and_resumed() {
    let ca = Authority::new("throng test CA");
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .expect("bind")
        .loops(1)
        .compression(Compression::Shared)
        .max_message_size(4 << 20)
        .max_frame_size(4 << 20)
        .on_message(|inline, kind, payload| {
            inline.reply(kind, payload);
            Flow::Consumed
        })
        .tls(ca.server(&["localhost", "127.0.0.1"], false))
        .start()
        .expect("start");
    // One configuration for both connections: its session cache is what the second resumes from.
    let options = ClientOptions { deflate: true, ..ca.options() };
    let url = format!("wss://localhost:{}/", server.local_addr().port());
    let text = "compressible ".repeat(1000);
    for _ in 0..2 {
        let mut conn = connect(&url, &options).expect("wss connect to the engine");
        assert!(conn.compression().is_some(), "permessage-deflate agreed over TLS");
        conn.send_text(&text).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Text(text.clone()));
        let big: Vec<u8> = (0..3usize << 20).map(|i| (i * 7 % 251) as u8).collect();
        conn.send_binary(&big).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Binary(big));
        conn.close(1000, "bye").expect("close handshake with the engine");
    }
    let stats = server.stats();
    assert_eq!((stats.tls_handshakes, stats.tls_resumed), (2, 1));
    assert_eq!(stats.tls_failures.total(), 0);
}

#[test]
fn an_ip_literal_is_checked_against_the_certificate_addresses() {
    let ca = Authority::new("throng test CA");
    let (addr, rx) = serve(ca.server(&["localhost", "127.0.0.1"], false), true);
    let mut conn = connect(&format!("wss://{addr}/"), &ca.options()).expect("wss to an IP literal");
    conn.send_text("by address").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("by address".into()));
    conn.close(1000, "").unwrap();
    assert!(report(&rx).close_notify);

    // A certificate naming only localhost does not cover its address.
    let (addr, rx) = serve(ca.server(&["localhost"], false), false);
    let (error, text) = refused(&format!("wss://{addr}/"), &ca.options(), &rx);
    assert!(matches!(error, rustls::Error::InvalidCertificate(_)), "{error:?}");
    assert!(text.contains(&format!("TLS handshake with {addr} failed")), "{text}");
    assert!(text.contains("not valid for name \"127.0.0.1\""), "{text}");
}

#[test]
fn an_expired_certificate_is_refused_clearly() {
    let ca = Authority::new("throng test CA");
    let (addr, rx) = serve(ca.server(&["localhost", "127.0.0.1"], true), false);
    let (error, text) = refused(&format!("wss://{addr}/"), &ca.options(), &rx);
    assert!(
        matches!(error, rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })),
        "{error:?}"
    );
    assert!(
        text.starts_with(&format!("TLS handshake with {addr} failed: invalid peer certificate: ")),
        "{text}"
    );
    assert!(text.contains("expired"), "{text}");
}

#[test]
fn a_certificate_for_another_host_is_refused_clearly() {
    let ca = Authority::new("throng test CA");
    let (addr, rx) = serve(ca.server(&["wrong.example"], false), false);
    let (error, text) = refused(&format!("wss://localhost:{}/", addr.port()), &ca.options(), &rx);
    assert!(matches!(error, rustls::Error::InvalidCertificate(_)), "{error:?}");
    assert!(text.contains(&format!("TLS handshake with localhost ({addr}) failed")), "{text}");
    assert!(text.contains("not valid for name \"localhost\""), "{text}");
    assert!(text.contains("wrong.example"), "the error lists the names the certificate has: {text}");
}

#[test]
fn an_unknown_authority_is_refused() {
    let trusted = Authority::new("trusted CA");
    let stranger = Authority::new("stranger CA");
    let (addr, rx) = serve(stranger.server(&["localhost"], false), false);
    let (error, text) = refused(&format!("wss://localhost:{}/", addr.port()), &trusted.options(), &rx);
    let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    assert_eq!(error, unknown);
    assert!(text.ends_with("invalid peer certificate: UnknownIssuer"), "{text}");

    // Without a CA file the webpki roots are trusted, which do not include the test's authority.
    let (addr, rx) = serve(stranger.server(&["localhost"], false), false);
    let options = ClientOptions { handshake_timeout: Some(WAIT), ..Default::default() };
    let (error, _) = refused(&format!("wss://localhost:{}/", addr.port()), &options, &rx);
    assert_eq!(error, unknown);
}

#[test]
fn a_plain_server_fails_the_tls_handshake_and_a_bad_ca_file_is_reported() {
    // Something that answers a ClientHello with HTTP: not TLS.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let _ = tcp.read(&mut [0u8; 1024]);
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let ca = Authority::new("throng test CA");
    match connect(&format!("wss://{addr}/"), &ca.options()) {
        Err(ClientError::Tls { error, .. }) => {
            assert!(matches!(error, rustls::Error::InvalidMessage(_)), "{error:?}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    server.join().unwrap();

    let missing = ClientOptions::default().ca_file("/nonexistent/ca.pem").unwrap_err();
    assert!(missing.to_string().contains("cannot read /nonexistent/ca.pem"), "{missing}");
}
