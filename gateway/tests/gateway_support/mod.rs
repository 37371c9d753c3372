//! Helpers for the gateway tests: start the `throng` binary on free ports with a temporary
//! config, a small blocking WebSocket client built from the protocol core, and a one-shot
//! HTTP client for the admin API.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use throng::proto::frame::{encode_frame, random_mask};
use throng::proto::handshake::{ClientRequest, Parsed};
use throng::proto::{DataKind, Decoder, Item, Limits, OpCode, Role};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// At least 32 bytes: the gateway refuses shorter HS256 secrets.
pub(crate) const SECRET: &str = "test-secret-of-at-least-32-bytes";

/// A running gateway process; killed when dropped.
pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) ws: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    /// The thread that copies the process's stderr into `log`; it ends at the pipe's EOF.
    reader: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory for one test's files.
pub(crate) fn temp_dir() -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("throng-gw-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written to `dir` as `NAME.crt`
/// (the chain, here one certificate: clients trust it as its own CA) and `NAME.key`.
pub(crate) fn write_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let made = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, made.cert.pem()).expect("write the certificate");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write the key");
    (cert, key)
}

/// The binary with `args`, `THRONG_*` variables from this environment removed but
/// `THRONG_BACKEND`: the backend the test run asked for (scripts/test runs every test on each).
pub(crate) fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_throng"));
    for (key, _) in std::env::vars() {
        if key.starts_with("THRONG_") && key != "THRONG_BACKEND" {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd
}

impl Gateway {
    /// Starts with `config` (TOML, written to a file) if given, and extra flags. Both
    /// listeners use port 0; the addresses are read from the start log line.
    pub(crate) fn start(config: Option<&str>, args: &[&str]) -> Gateway {
        Gateway::start_with_env(config, args, &[])
    }

    pub(crate) fn start_with_env(config: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let dir = temp_dir();
        let mut all: Vec<String> =
            ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--loops", "2"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        if let Some(config) = config {
            let path = dir.join("throng.toml");
            std::fs::write(&path, config).expect("write config");
            all.push("--config".into());
            all.push(path.display().to_string());
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut child =
            command(&all, env).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn throng");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = loop {
            if let Some(line) = log.lock().unwrap().iter().find(|l| l.contains("throng started")) {
                break line.clone();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("throng exited with {status}: {:?}", log.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "throng did not start: {:?}", log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(10));
        };
        // Human lines say `listen=ADDR`, JSON lines `"listen":"ADDR"`.
        let field = |name: &str| -> SocketAddr {
            let (at, len) = match started.find(&format!("\"{name}\":\"")) {
                Some(at) => (at, name.len() + 4),
                None => (started.find(&format!("{name}=")).expect(name), name.len() + 1),
            };
            let rest = &started[at + len..];
            rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap().parse().expect("address")
        };
        Gateway { ws: field("listen"), admin: field("admin"), child, log, reader: Some(reader), dir }
    }

    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, at most `timeout`; once it has, every line it wrote is in
    /// the log (the reader thread has seen the pipe's end).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once it has a line containing `needle` (the process writes a line before the
    /// effect a test sees, but this process reads the pipe on a thread of its own, so the line
    /// may arrive after the effect did); panics with the log after `TIMEOUT`.
    pub(crate) fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log: {log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn connect(&self, path: &str) -> Ws {
        Ws::connect(self.ws, &Upgrade::new(path)).unwrap_or_else(|r| panic!("refused: {r:?}"))
    }

    pub(crate) fn try_connect(&self, upgrade: &Upgrade) -> Result<Ws, Refused> {
        Ws::connect(self.ws, upgrade)
    }

    /// Upgrades without waiting for the welcome (the first message is the test's to read).
    #[allow(dead_code)] // not every test file reads its own first message
    pub(crate) fn upgrade(&self, path: &str) -> Ws {
        Ws::upgrade(self.ws, &Upgrade::new(path)).unwrap_or_else(|r| panic!("refused: {r:?}"))
    }

    pub(crate) fn get(&self, path: &str) -> Resp {
        http(self.admin, "GET", path, &[], b"")
    }

    pub(crate) fn post(&self, path: &str, body: &str) -> Resp {
        http(self.admin, "POST", path, &[], body.as_bytes())
    }

    /// Waits until the admin API reports `n` subscribers for `channel`.
    pub(crate) fn wait_subscribers(&self, channel: &str, n: u64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let list = self.get("/v1/channels?users=true").json();
            let count = (list["channels"].as_array().unwrap().iter())
                .find(|c| c["name"] == channel)
                .map_or(0, |c| c["subscribers"].as_u64().unwrap());
            if count == n {
                return;
            }
            assert!(Instant::now() < deadline, "{channel} has {count} subscribers, want {n}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A metric's value from `/metrics` (`name` with labels, as printed).
    pub(crate) fn metric(&self, name: &str) -> u64 {
        let resp = self.get("/metrics");
        assert_eq!(resp.status, 200, "/metrics: {}", resp.body);
        metric_in(&resp.body, name)
    }
}

/// A metric's value in a `/metrics` text (`name` with labels, as printed).
#[allow(dead_code)] // Not every test binary reads metrics.
pub(crate) fn metric_in(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '));
    line.unwrap_or_else(|| panic!("no metric {name}")).rsplit(' ').next().unwrap().parse().unwrap()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A signed HS256 token.
pub(crate) fn token(claims: Value) -> String {
    throng_gateway::auth::sign(&claims, SECRET.as_bytes())
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// What to send in the upgrade request.
#[derive(Default, Clone)]
pub(crate) struct Upgrade {
    pub(crate) path: String,
    pub(crate) origin: Option<String>,
    pub(crate) protocols: Vec<String>,
    pub(crate) headers: Vec<(String, String)>,
}

impl Upgrade {
    pub(crate) fn new(path: &str) -> Upgrade {
        Upgrade { path: path.into(), ..Upgrade::default() }
    }
    pub(crate) fn header(mut self, name: &str, value: &str) -> Upgrade {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub(crate) fn origin(mut self, origin: &str) -> Upgrade {
        self.origin = Some(origin.into());
        self
    }
    pub(crate) fn protocol(mut self, protocol: &str) -> Upgrade {
        self.protocols.push(protocol.into());
        self
    }
}

/// An upgrade answered with an HTTP error.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// What the client read.
#[derive(Debug, PartialEq)]
pub(crate) enum Got {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
    Eof,
}

/// A WebSocket client over a blocking socket.
pub(crate) struct Ws {
    pub(crate) stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
    message: Option<(DataKind, Vec<u8>)>,
    /// The gateway's welcome message.
    pub(crate) welcome: Value,
    pub(crate) subprotocol: Option<String>,
}

impl Ws {
    /// Upgrades and reads the welcome.
    pub(crate) fn connect(addr: SocketAddr, up: &Upgrade) -> Result<Ws, Refused> {
        let mut ws = Ws::upgrade(addr, up)?;
        ws.welcome = ws.recv_json();
        assert_eq!(ws.welcome["type"], "welcome");
        Ok(ws)
    }

    /// Upgrades; the welcome is left unread.
    pub(crate) fn upgrade(addr: SocketAddr, up: &Upgrade) -> Result<Ws, Refused> {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let host = addr.to_string();
        let protocols: Vec<&str> = up.protocols.iter().map(String::as_str).collect();
        let headers: Vec<(&str, &str)> = up.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let request = ClientRequest {
            host: &host,
            path_and_query: &up.path,
            origin: up.origin.as_deref(),
            subprotocols: &protocols,
            extra_headers: &headers,
        };
        let mut bytes = Vec::new();
        let handshake = request.write(&mut bytes).expect("valid request");
        stream.write_all(&bytes).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match handshake.parse_response(&buf) {
                Ok(Parsed::Complete(response)) => {
                    let subprotocol = response.subprotocol().map(str::to_owned);
                    let len = response.len();
                    buf.drain(..len);
                    return Ok(Ws {
                        stream,
                        buf,
                        decoder: Decoder::new(Role::Client),
                        message: None,
                        welcome: Value::Null,
                        subprotocol,
                    });
                }
                Ok(Parsed::Partial) => {}
                Err(_) => {
                    // Rejections end with the server closing: read it all, then split it.
                    let _ = stream.read_to_end(&mut buf);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
                    return Err(Refused { status, body });
                }
            }
            let n = stream.read(&mut chunk).expect("read upgrade response");
            assert!(n > 0 || !buf.is_empty(), "server closed during the upgrade");
            if n == 0 {
                continue;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub(crate) fn conn(&self) -> String {
        self.welcome["conn"].as_str().unwrap().to_owned()
    }

    pub(crate) fn send_text(&mut self, text: &str) {
        let mut out = Vec::new();
        encode_frame(&mut out, true, OpCode::Text, Some(random_mask()), text.as_bytes());
        self.stream.write_all(&out).unwrap();
    }

    pub(crate) fn send_binary(&mut self, payload: &[u8]) {
        let mut out = Vec::new();
        encode_frame(&mut out, true, OpCode::Binary, Some(random_mask()), payload);
        self.stream.write_all(&out).unwrap();
    }

    /// Answers (or starts) the close handshake.
    pub(crate) fn send_close(&mut self, code: u16) {
        let mut out = Vec::new();
        encode_frame(&mut out, true, OpCode::Close, Some(random_mask()), &code.to_be_bytes());
        let _ = self.stream.write_all(&out);
    }

    pub(crate) fn command(&mut self, command: Value) -> Value {
        self.send_text(&command.to_string());
        self.recv_json()
    }

    /// The next message or close (pings are skipped), or `None` after `timeout`.
    pub(crate) fn recv_timeout(&mut self, timeout: Duration) -> Option<Got> {
        let deadline = Instant::now() + timeout;
        loop {
            while !self.buf.is_empty() {
                let (used, item) =
                    self.decoder.decode(&mut self.buf, &Limits::default()).expect("valid frame");
                let got = match item {
                    Some(Item::Data { kind, chunk, first, last }) => {
                        if first {
                            self.message = Some((kind, Vec::new()));
                        }
                        self.message.as_mut().unwrap().1.extend_from_slice(chunk);
                        match (last, self.message.take()) {
                            (true, Some((DataKind::Text, b))) => {
                                Some(Got::Text(String::from_utf8(b).unwrap()))
                            }
                            (true, Some((DataKind::Binary, b))) => Some(Got::Binary(b)),
                            (false, m) => {
                                self.message = m;
                                None
                            }
                            (true, None) => None,
                        }
                    }
                    Some(Item::Close { code, reason }) => {
                        Some(Got::Close(code.map_or(1005, |c| c.0), reason.to_owned()))
                    }
                    Some(Item::Ping(payload)) => {
                        // Answered like a browser would, so liveness pings keep us open.
                        let mut out = Vec::new();
                        encode_frame(&mut out, true, OpCode::Pong, Some(random_mask()), payload);
                        let _ = self.stream.write_all(&out);
                        None
                    }
                    Some(_) => None,
                    None if used == 0 => break,
                    None => None,
                };
                self.buf.drain(..used);
                if got.is_some() {
                    return got;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(Got::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return None
                }
                Err(_) => return Some(Got::Eof),
            }
        }
    }

    pub(crate) fn recv(&mut self) -> Got {
        self.recv_timeout(TIMEOUT).expect("nothing received in time")
    }

    pub(crate) fn recv_text(&mut self) -> String {
        match self.recv() {
            Got::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub(crate) fn recv_json(&mut self) -> Value {
        serde_json::from_str(&self.recv_text()).expect("JSON")
    }

    /// Expects the server's close frame; returns (code, reason).
    pub(crate) fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.recv() {
                Got::Close(code, reason) => return (code, reason),
                Got::Text(_) | Got::Binary(_) => continue,
                Got::Eof => panic!("EOF before a close frame"),
            }
        }
    }

    /// Asserts that no data message arrives within `wait`.
    pub(crate) fn expect_silence(&mut self, wait: Duration) {
        if let Some(got) = self.recv_timeout(wait) {
            panic!("expected nothing, got {got:?}");
        }
    }
}

/// An admin API response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`); a POST without a `Content-Type` in
/// `headers` is sent as `application/json`.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    // The admin API takes POST bodies declared as JSON only; tests of that rule name their own.
    let mut all = headers.to_vec();
    if method == "POST" && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        all.push(("Content-Type", "application/json"));
    }
    request(addr, method, path, &all, body)
}

/// One request on a fresh connection (`Connection: close`), with `headers` as given: `Host`
/// and `Content-Length` are the real ones unless `headers` names them.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut stream = TcpStream::connect(addr).expect("connect admin");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !has("host") {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("content-length") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

pub(crate) fn parse_response(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("complete response");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(": ")).map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
    Resp { status, headers, body: body.to_owned() }
}
