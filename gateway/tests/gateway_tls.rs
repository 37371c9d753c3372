//! TLS on both listeners, with certificates made at test time: `wss://` from an independent
//! client (Python `websockets`, trusting the certificate through `ssl.create_default_context`),
//! the admin API over `https://`, and certificate reloads (`POST /v1/tls/reload` and SIGHUP)
//! that keep open connections working while new handshakes get the new certificate, and keep
//! the old certificate when the new files are bad.

mod gateway_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use gateway_support::{metric_in, parse_response, temp_dir, write_cert, Gateway, Resp, TIMEOUT};
use serde_json::{json, Value};
use throng::tls::rustls::pki_types::ServerName;
use throng::tls::rustls::{ClientConnection, StreamOwned};

const KEY: &str = "tls-test-key";

/// A directory removed on drop, holding the certificates of one test.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two certificate pairs, and the files the gateway is told to read (`live.crt`, `live.key`),
/// which start as copies of the first.
struct Certs {
    _dir: Dir,
    one: (PathBuf, PathBuf),
    two: (PathBuf, PathBuf),
    live: (PathBuf, PathBuf),
}

impl Certs {
    fn new() -> Certs {
        let dir = temp_dir();
        let one = write_cert(&dir, "one");
        let two = write_cert(&dir, "two");
        let live = (dir.join("live.crt"), dir.join("live.key"));
        let certs = Certs { _dir: Dir(dir), one, two, live };
        certs.serve(&certs.one);
        certs
    }

    /// Puts `pair` where the gateway reads its files.
    fn serve(&self, pair: &(PathBuf, PathBuf)) {
        std::fs::copy(&pair.0, &self.live.0).expect("copy the certificate");
        std::fs::copy(&pair.1, &self.live.1).expect("copy the key");
    }

    fn live_args(&self, prefix: &str) -> Vec<String> {
        vec![
            format!("--{prefix}tls-cert"),
            self.live.0.display().to_string(),
            format!("--{prefix}tls-key"),
            self.live.1.display().to_string(),
        ]
    }
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS session to `addr` that trusts only `ca` (the server must present it), handshake done.
fn tls_connect(addr: SocketAddr, ca: &Path) -> Result<Tls, String> {
    let config = throng::tls::client_config(Some(ca)).expect("client config");
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

/// One request on a session, `keep_alive` or not, read back by its `Content-Length`.
fn exchange(tls: &mut Tls, method: &str, path: &str, auth: bool, keep_alive: bool) -> Resp {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n");
    if method == "POST" {
        request.push_str("Content-Type: application/json\r\n");
    }
    if auth {
        request.push_str(&format!("Authorization: Bearer {KEY}\r\n"));
    }
    if !keep_alive {
        request.push_str("Connection: close\r\n");
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = (head.lines())
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("Content-Length");
            if raw.len() >= end + 4 + length {
                break;
            }
        }
        let n = tls.read(&mut chunk).expect("read the response");
        assert!(n > 0, "the admin API closed before answering: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&chunk[..n]);
    }
    if !keep_alive {
        // The answer ends with the server's close_notify: a clean end, not a cut.
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).expect("a close_notify after the answer");
        assert!(rest.is_empty(), "bytes after the answer: {rest:?}");
    }
    parse_response(&raw)
}

/// One request on a fresh `https://` session trusting `ca`.
fn https(addr: SocketAddr, ca: &Path, method: &str, path: &str, auth: bool) -> Resp {
    let mut tls = tls_connect(addr, ca).unwrap_or_else(|e| panic!("handshake with {addr}: {e}"));
    exchange(&mut tls, method, path, auth, false)
}

/// Polls `/metrics` (through `get`) until `name` has `want`, within `TIMEOUT`.
fn wait_metric(mut get: impl FnMut() -> Resp, name: &str, want: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = metric_in(&get().body, name);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {got}, want {want}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn admin_api_over_https_reloads_its_certificate_without_dropping_connections() {
    let certs = Certs::new();
    let mut args = certs.live_args("admin-");
    args.extend(["--api-key".to_owned(), KEY.to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = Gateway::start(None, &args);
    let (one, two) = (&certs.one.0, &certs.two.0);
    assert!(gw.log_text().contains(&format!("admin_url=https://{}", gw.admin)), "{}", gw.log_text());
    let metrics = |ca: &Path| https(gw.admin, ca, "GET", "/metrics", true);

    // Plain HTTP on the TLS port gets no answer, and is counted.
    let mut plain = TcpStream::connect(gw.admin).unwrap();
    plain.set_read_timeout(Some(TIMEOUT)).unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP answered: {:?}", String::from_utf8_lossy(&answer));
    wait_metric(|| metrics(one), "throng_admin_tls_handshake_failures_total", 1);

    let mut held = tls_connect(gw.admin, one).expect("the first certificate");
    assert_eq!(exchange(&mut held, "GET", "/healthz", false, true).status, 200);
    // Authenticated like every admin write.
    assert_eq!(https(gw.admin, one, "POST", "/v1/tls/reload", false).status, 401);

    certs.serve(&certs.two);
    let resp = https(gw.admin, one, "POST", "/v1/tls/reload", true);
    assert_eq!((resp.status, resp.json()), (200, json!({ "reloaded": ["admin"] })), "{}", resp.body);
    let Err(refused) = tls_connect(gw.admin, one) else { panic!("the old certificate is still presented") };
    assert!(refused.contains("certificate"), "{refused}");
    assert_eq!(https(gw.admin, two, "GET", "/healthz", false).status, 200);
    // The session from before the reload carries on.
    assert_eq!(exchange(&mut held, "GET", "/v1/stats", true, true).status, 200);

    // A bad file: 500 naming it, and the second certificate stays.
    std::fs::write(&certs.live.0, "not a certificate\n").unwrap();
    let resp = https(gw.admin, two, "POST", "/v1/tls/reload", true);
    assert_eq!((resp.status, resp.json()["error"].as_str()), (500, Some("reload_failed")), "{}", resp.body);
    let message = resp.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains(&certs.live.0.display().to_string()), "{message}");
    assert!(message.contains("previous certificate stays"), "{message}");
    gw.wait_log("TLS reload failed");
    assert_eq!(https(gw.admin, two, "GET", "/healthz", false).status, 200);

    // SIGHUP re-reads the files too.
    certs.serve(&certs.one);
    gw.signal(libc::SIGHUP);
    // Asked on the session from before every reload: a new handshake would race the signal.
    let ok = "throng_tls_reloads_total{result=\"ok\"}";
    wait_metric(|| exchange(&mut held, "GET", "/metrics", true, true), ok, 2);
    assert!(tls_connect(gw.admin, two).is_err(), "the second certificate is no longer presented");
    let text = metrics(one).body;
    assert_eq!(metric_in(&text, "throng_tls_reloads_total{result=\"error\"}"), 1);
    assert!(!text.contains("throng_tls_handshakes_total"), "the client listener has no TLS: {text}");
    assert_eq!(exchange(&mut held, "GET", "/healthz", false, true).status, 200);
}

#[test]
fn reload_without_tls_is_a_conflict() {
    let gw = Gateway::start(None, &[]);
    let resp = gw.post("/v1/tls/reload", "");
    assert_eq!((resp.status, resp.json()["error"].as_str()), (409, Some("tls_off")), "{}", resp.body);
    assert!(!gw.get("/metrics").body.contains("throng_tls_"), "no TLS families without TLS");
}

/// The Python side: reads commands on stdin, answers one line each on stdout.
/// `open N CA`: N more connections to the URL trusting CA, each read up to its welcome.
/// `recv`: the next message of every open connection, as a JSON list.
/// `try CA`: a new connection trusting CA: `ok`, or `refused` and why.
const CLIENT: &str = r#"
import contextlib, json, ssl, sys
from websockets.sync.client import connect

url = sys.argv[1]
conns = []
# The connections outlive each command: entered here, closed when the script ends.
held = contextlib.ExitStack()

def dial(ca):
    ws = held.enter_context(connect(url, ssl=ssl.create_default_context(cafile=ca), open_timeout=5))
    welcome = json.loads(ws.recv(timeout=5))
    assert welcome["type"] == "welcome", welcome
    return ws

for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "open":
        conns += [dial(args[1]) for _ in range(int(args[0]))]
        print("opened", len(conns), flush=True)
    elif cmd == "recv":
        print(json.dumps([json.loads(ws.recv(timeout=5)) for ws in conns]), flush=True)
    elif cmd == "try":
        try:
            dial(args[0]).close()
            print("ok", flush=True)
        except Exception as e:
            print("refused", type(e).__name__, str(e).replace("\n", " "), flush=True)
"#;

/// Whether `websockets` can be imported, installing it with pip if needed; `Err` says why not.
fn python_ready() -> Result<(), String> {
    let works = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&["-c", "import websockets.sync.client"]) {
        return Ok(());
    }
    if !works(&["-m", "pip", "--version"]) {
        return Err("python3 with pip is not available".into());
    }
    assert!(works(&["-m", "pip", "install", "--quiet", "websockets"]), "pip install websockets failed");
    Ok(())
}

/// The Python client process; killed on drop.
struct Python {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    _dir: Dir,
}

impl Python {
    fn start(url: &str) -> Option<Python> {
        if let Err(reason) = python_ready() {
            eprintln!("skipping: {reason}");
            return None;
        }
        let dir = temp_dir();
        let script = dir.join("client.py");
        std::fs::write(&script, CLIENT).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Some(Python { child, input, output, _dir: Dir(dir) })
    }

    /// Sends one command and returns its answer line. Every command the script runs is bounded
    /// by its own timeouts (5 s), so the line comes, or the script dies and the pipe ends.
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.input, "{command}").expect("write to python");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("read from python");
        assert!(!line.is_empty(), "the python client died on {command:?}");
        line.trim_end().to_owned()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `n` to `news` and checks that every Python connection got it.
fn publish_reaches_all(gw: &Gateway, py: &mut Python, n: u64, open: usize) {
    let resp = gw.post("/v1/publish", &json!({ "channel": "news", "data": { "n": n } }).to_string());
    assert_eq!(resp.status, 200, "{}", resp.body);
    let got: Value = serde_json::from_str(&py.ask("recv")).expect("a JSON list");
    let got = got.as_array().expect("a list");
    assert_eq!(got.len(), open);
    for message in got {
        assert_eq!((message["channel"].as_str(), message["data"]["n"].as_u64()), (Some("news"), Some(n)));
    }
}

#[test]
fn wss_clients_keep_their_connections_across_certificate_reloads() {
    let certs = Certs::new();
    let args = certs.live_args("");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = Gateway::start(None, &args);
    let url = format!("wss://127.0.0.1:{}/ws?channels=news", gw.ws.port());
    assert!(gw.log_text().contains(&format!("ws_url=wss://{}/ws", gw.ws)), "{}", gw.log_text());
    let Some(mut py) = Python::start(&url) else { return };
    let (one, two) = (certs.one.0.display().to_string(), certs.two.0.display().to_string());
    const OPEN: usize = 4;

    assert_eq!(py.ask(&format!("open {OPEN} {one}")), format!("opened {OPEN}"));
    gw.wait_subscribers("news", OPEN as u64);
    publish_reaches_all(&gw, &mut py, 1, OPEN);

    // The endpoint: new handshakes get the second certificate, the open connections carry on.
    certs.serve(&certs.two);
    let resp = gw.post("/v1/tls/reload", "");
    assert_eq!((resp.status, resp.json()), (200, json!({ "reloaded": ["client"] })), "{}", resp.body);
    let refused = py.ask(&format!("try {one}"));
    assert!(refused.starts_with("refused SSLCertVerificationError"), "{refused}");
    assert_eq!(py.ask(&format!("try {two}")), "ok");
    assert!(tls_connect(gw.ws, &certs.two.0).is_ok(), "the second certificate, to rustls too");
    publish_reaches_all(&gw, &mut py, 2, OPEN);

    // A bad key: refused, the second certificate stays.
    std::fs::write(&certs.live.1, "not a key\n").unwrap();
    let resp = gw.post("/v1/tls/reload", "");
    assert_eq!(resp.status, 500, "{}", resp.body);
    assert!(resp.body.contains(&certs.live.1.display().to_string()), "{}", resp.body);
    assert_eq!(py.ask(&format!("try {two}")), "ok");
    publish_reaches_all(&gw, &mut py, 3, OPEN);

    // SIGHUP: back to the first certificate, the same way.
    certs.serve(&certs.one);
    gw.signal(libc::SIGHUP);
    wait_metric(|| gw.get("/metrics"), "throng_tls_reloads_total{result=\"ok\"}", 2);
    assert_eq!(py.ask(&format!("try {one}")), "ok");
    assert!(py.ask(&format!("try {two}")).starts_with("refused"), "the second certificate is gone");
    assert_eq!(py.ask(&format!("open 1 {one}")), format!("opened {}", OPEN + 1));
    gw.wait_subscribers("news", OPEN as u64 + 1);
    publish_reaches_all(&gw, &mut py, 4, OPEN + 1);

    let text = gw.get("/metrics").body;
    assert_eq!(metric_in(&text, "throng_tls_reloads_total{result=\"error\"}"), 1);
    // Every accepted connection so far: OPEN + 1 opened, 3 tries that passed, one rustls check.
    assert!(metric_in(&text, "throng_tls_handshakes_total") >= OPEN as u64 + 5, "{text}");
    let _ = metric_in(&text, "throng_tls_resumed_total");
    for reason in ["not_tls", "protocol", "incompatible", "peer_alert", "closed", "timeout"] {
        let _ = metric_in(&text, &format!("throng_tls_handshake_failures_total{{reason=\"{reason}\"}}"));
    }
    // The refused tries: Python says why with an alert.
    assert!(metric_in(&text, "throng_tls_handshake_failures_total{reason=\"peer_alert\"}") >= 2, "{text}");
    // Typed counters with their help, as every family.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    for family in [
        "throng_tls_handshakes_total",
        "throng_tls_resumed_total",
        "throng_tls_handshake_failures_total",
        "throng_tls_reloads_total",
    ] {
        assert!(scrape.docs.contains_key(family), "no HELP for {family}");
        let samples: Vec<_> = scrape.samples.iter().filter(|s| s.metric == family).collect();
        assert!(!samples.is_empty(), "no samples of {family}");
        for s in samples {
            assert!(matches!(s.value, prometheus_parse::Value::Counter(_)), "{family} is not a counter");
        }
    }
}
