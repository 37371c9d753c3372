//! `throng-load --deflate` end to end on loopback, on both client backends, against a small
//! permessage-deflate server of this file (one thread per connection, throng's sans-IO core and
//! its deflate codec) that can answer three ways: both sides without context, keeping its own
//! context, or declining. It echoes, and for `fanout` speaks the gateway contract of
//! loadtest/README.md (a welcome on open with `?channels=`, `POST /v1/publish`). When Python's
//! `websockets` is installed, an echo run against it as well.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use throng::proto::deflate::{accept_offers, Compression, DeflateConfig, Deflater, Inflater, RSV1};
use throng::proto::frame::MAX_HEADER_LEN;
use throng::proto::handshake::{parse_request, write_accept, Parsed, RequestLimits};
use throng::proto::{DataKind, FrameHeader, FrameWriter, Item, Limits, Role, Session};

const BACKENDS: [&str; 2] = ["epoll", "io_uring"];

/// How the test server answers an offer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Both no-context-takeover parameters (throng's shared mode): nothing kept per connection.
    Shared,
    /// Accepts but keeps its compression window between messages (answers without
    /// `server_no_context_takeover`, although it was offered).
    KeepsContext,
    /// No extension in the 101.
    Declines,
}

/// A connection's sending side: the socket and, when compression was agreed, the compressor.
struct Writer {
    stream: TcpStream,
    deflater: Option<Deflater>,
    /// Reset the compressor after each message (no context kept).
    reset: bool,
}

impl Writer {
    fn send(&mut self, kind: DataKind, payload: &[u8]) {
        let mut compressed = Vec::new();
        let (rsv, body) = match &mut self.deflater {
            Some(deflater) => {
                deflater.compress(payload, &mut compressed, self.reset);
                (RSV1, &compressed[..])
            }
            None => (0, payload),
        };
        let header =
            FrameHeader { fin: true, rsv, opcode: kind.opcode(), mask: None, payload_len: body.len() as u64 };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let _ = self.stream.write_all(&[&head[..n], body].concat());
    }
}

type Subscribers = Arc<Mutex<Vec<Arc<Mutex<Writer>>>>>;

/// The server's WebSocket address and its publish endpoint's, for the life of the test process.
fn server(answer: Answer) -> (SocketAddr, SocketAddr) {
    let subscribers: Subscribers = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ws = listener.local_addr().unwrap();
    let subs = subscribers.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let subs = subs.clone();
            std::thread::spawn(move || serve_ws(stream, answer, &subs));
        }
    });
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in admin.incoming().flatten() {
            let subs = subscribers.clone();
            std::thread::spawn(move || serve_admin(stream, &subs));
        }
    });
    (ws, admin_addr)
}

fn serve_ws(mut stream: TcpStream, answer: Answer, subscribers: &Subscribers) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (len, params, query) = loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let Ok(parsed) = parse_request(&buf, &RequestLimits::default()) else { return };
        let Parsed::Complete(request) = parsed else { continue };
        let agreed = match answer {
            Answer::Declines => None,
            Answer::Shared => accept_offers(request.extensions(), &DeflateConfig::new(Compression::Shared)),
            Answer::KeepsContext => {
                accept_offers(request.extensions(), &DeflateConfig::new(Compression::Shared))
                    .map(|(params, _)| (params, "permessage-deflate; client_no_context_takeover".to_owned()))
            }
        };
        let mut out = Vec::new();
        let headers: Vec<(&str, &str)> =
            agreed.iter().map(|(_, header)| ("Sec-WebSocket-Extensions", header.as_str())).collect();
        write_accept(&mut out, request.key().as_bytes(), None, &headers).unwrap();
        stream.write_all(&out).unwrap();
        break (request.len(), agreed.is_some(), request.query().map(str::to_owned));
    };
    let writer = Arc::new(Mutex::new(Writer {
        stream: stream.try_clone().unwrap(),
        deflater: params.then(|| Deflater::new(6, 15)),
        reset: answer == Answer::Shared,
    }));
    if let Some(channels) = query.as_deref().and_then(|q| q.strip_prefix("channels=")) {
        // Joined before the welcome goes out, as the gateway does: a publish made once the
        // client has its welcome must reach it.
        subscribers.lock().unwrap().push(writer.clone());
        let welcome = format!(r#"{{"type":"welcome","channels":["{channels}"]}}"#);
        writer.lock().unwrap().send(DataKind::Text, welcome.as_bytes());
    }
    buf.drain(..len);
    let limits = Limits { allowed_rsv: if params { RSV1 } else { 0 }, ..Limits::default() };
    let mut session = Session::new(Role::Server);
    let mut inflater = Inflater::new(15);
    let (mut message, mut kind, mut compressed) = (Vec::new(), DataKind::Text, false);
    loop {
        let mut pos = 0;
        let mut control = Vec::new();
        while pos < buf.len() {
            let Ok((used, item)) = session.handle_read(
                &mut buf[pos..],
                &limits,
                &mut FrameWriter::new(&mut control, Role::Server),
            ) else {
                let _ = stream.write_all(&control);
                return;
            };
            pos += used;
            match item {
                None if used == 0 => break,
                Some(Item::Data { kind: k, chunk, first, last }) => {
                    if first {
                        message.clear();
                        (kind, compressed) = (k, session.compressed());
                    }
                    message.extend_from_slice(chunk);
                    if last {
                        let mut inflated = Vec::new();
                        let payload = if compressed {
                            // The client compresses without context (it offered that).
                            inflater.inflate(&message, kind, 1 << 24, &mut inflated, true).unwrap();
                            &inflated
                        } else {
                            &message
                        };
                        writer.lock().unwrap().send(kind, payload);
                    }
                }
                _ => {}
            }
        }
        buf.drain(..pos);
        if !control.is_empty() {
            let _ = writer.lock().unwrap().stream.write_all(&control);
        }
        if session.is_done() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            subscribers.lock().unwrap().retain(|w| !Arc::ptr_eq(w, &writer));
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `POST /v1/publish {"channel","data"}`: `{"channel","data","ts"}` to every subscriber.
fn serve_admin(mut stream: TcpStream, subscribers: &Subscribers) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = (head.lines())
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
        buf.drain(..end + 4 + len);
        let channel = body["channel"].as_str().unwrap().to_owned();
        let envelope = serde_json::json!({ "channel": channel, "data": body["data"], "ts": 0 }).to_string();
        let subs = subscribers.lock().unwrap().clone();
        for sub in &subs {
            sub.lock().unwrap().send(DataKind::Text, envelope.as_bytes());
        }
        let answer = format!(r#"{{"channel":"{channel}","queued":{}}}"#, subs.len());
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
    }
}

/// Runs `throng-load ARGS --backend BACKEND --json`; the exit code, the parsed last line and
/// the output.
fn load_on(backend: &str, args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(args)
        .args(["--backend", backend, "--json", "--timeout", "30s"])
        .output()
        .expect("throng-load runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    let json: Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("no JSON last line ({e}):\n{text}"));
    assert_eq!(json["backend"], backend, "{text}");
    (output.status.code().unwrap_or(-1), json, text)
}

fn u(v: &Value, path: &str) -> u64 {
    path.split('.').fold(v, |v, key| &v[key]).as_u64().unwrap_or_else(|| panic!("{path} in {v}"))
}

const SHARED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// An echo run with `--deflate --payload json` of `size` bytes against `url`.
fn deflate_echo(backend: &str, url: &str, conns: &str, size: &str) -> (i32, Value, String) {
    load_on(
        backend,
        &[
            "echo",
            url,
            "--deflate",
            "--payload",
            "json",
            "--size",
            size,
            "--conns",
            conns,
            "--inflight",
            "2",
            "--warmup",
            "100ms",
            "--duration",
            "700ms",
            "--drain-timeout",
            "20s",
        ],
    )
}

/// Every message went compressed both ways, came back and was checked, and compression paid.
fn assert_compressed_echoes(v: &Value, text: &str, size: u64) {
    assert_eq!((u(v, "payload_errors"), u(v, "lost")), (0, 0), "{text}");
    assert_eq!(v["dropped"], serde_json::json!({}), "{text}");
    let sent = u(v, "total_sent");
    assert!(sent > 0 && u(v, "total_received") == sent, "{text}");
    assert_eq!((u(v, "traffic.messages_sent"), u(v, "traffic.compressed_sent")), (sent, sent), "{text}");
    assert_eq!(
        (u(v, "traffic.messages_received"), u(v, "traffic.compressed_received")),
        (sent, sent),
        "{text}"
    );
    assert_eq!(u(v, "traffic.uncompressed_bytes_sent"), sent * size, "{text}");
    assert_eq!(u(v, "traffic.uncompressed_bytes_received"), sent * size, "{text}");
    // A JSON payload deflates to well under half; the wire carries the compressed frames.
    assert!(u(v, "traffic.payload_bytes_sent") * 2 < sent * size, "{text}");
    assert!(u(v, "traffic.payload_bytes_received") * 2 < sent * size, "{text}");
    assert!(u(v, "traffic.wire_bytes_sent") < sent * size, "{text}");
    assert!(v["traffic"]["ratio_sent"].as_f64().unwrap() < 0.5, "{text}");
    assert_eq!(u(v, "deflate.declined"), 0, "{text}");
    assert!(text.contains("compressed: payload"), "{text}");
}

#[test]
fn echo_compresses_both_ways_and_checks_every_echo() {
    let (ws, _) = server(Answer::Shared);
    let url = format!("ws://{ws}/");
    for backend in BACKENDS {
        let (code, v, text) = deflate_echo(backend, &url, "4", "2000");
        assert_eq!((code, &v["ok"]), (0, &Value::Bool(true)), "{text}");
        assert_compressed_echoes(&v, &text, 2000);
        assert_eq!(v["deflate"]["negotiated"][SHARED], 4, "{text}");
        assert_eq!((u(&v, "deflate.server_context"), u(&v, "deflate.own_inflaters")), (0, 0), "{text}");
        assert!(v["wire_mib_per_s_sent"].as_f64().unwrap() > 0.0, "{text}");
        // Compressed frames of about 45 KiB, which may arrive in pieces. Unoptimised builds
        // compress slowly: the echoes may all fall outside the measured window, so the run's
        // `ok` (which wants some in it) is not asked for.
        let (_, v, text) = deflate_echo(backend, &url, "1", "300000");
        assert_compressed_echoes(&v, &text, 300_000);
    }
}

#[test]
fn echo_runs_uncompressed_when_the_server_declines() {
    let (ws, _) = server(Answer::Declines);
    let url = format!("ws://{ws}/");
    for backend in BACKENDS {
        let (code, v, text) = deflate_echo(backend, &url, "3", "500");
        assert_eq!(code, 0, "{text}");
        assert_eq!(v["ok"], true, "{text}");
        assert_eq!(u(&v, "deflate.declined"), 3, "{text}");
        assert_eq!(v["deflate"]["negotiated"], serde_json::json!({}), "{text}");
        assert_eq!((u(&v, "traffic.compressed_sent"), u(&v, "traffic.compressed_received")), (0, 0));
        let sent = u(&v, "total_sent");
        assert!(sent > 0 && u(&v, "traffic.payload_bytes_sent") == sent * 500, "{text}");
        assert_eq!(u(&v, "traffic.payload_bytes_received"), sent * 500, "{text}");
        assert!(text.contains("0 connections compressed, 3 declined by the server"), "{text}");
    }
}

#[test]
fn a_server_keeping_its_context_gets_an_inflater_per_connection() {
    let (ws, _) = server(Answer::KeepsContext);
    let url = format!("ws://{ws}/");
    for backend in BACKENDS {
        // Every message after a connection's first refers back to the one before: a shared
        // inflater that forgets would fail them.
        let (code, v, text) = deflate_echo(backend, &url, "3", "2000");
        assert_eq!((code, &v["ok"]), (0, &Value::Bool(true)), "{text}");
        assert_compressed_echoes(&v, &text, 2000);
        assert_eq!(v["deflate"]["negotiated"]["permessage-deflate; client_no_context_takeover"], 3, "{text}");
        assert_eq!((u(&v, "deflate.server_context"), u(&v, "deflate.own_inflaters")), (3, 3), "{text}");
        assert!(text.contains("3 where the server keeps its context"), "{text}");
    }
}

#[test]
fn fanout_inflates_compressed_deliveries() {
    let (ws, admin) = server(Answer::Shared);
    let (url, publish) = (format!("ws://{ws}/ws"), format!("http://{admin}/v1/publish"));
    for backend in BACKENDS {
        let (code, v, text) = load_on(
            backend,
            &[
                "fanout",
                &url,
                "--deflate",
                "--subscribers",
                "20",
                "--channel",
                "z",
                "--publish",
                &publish,
                "--rate",
                "20/s",
                "--duration",
                "500ms",
                "--pad",
                "2000",
                "--drain-timeout",
                "3s",
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!((u(&v, "published"), u(&v, "deliveries"), u(&v, "expected")), (10, 200, 200), "{text}");
        assert_eq!(u(&v, "parse_errors"), 0, "{text}");
        // The welcomes and the deliveries, all compressed; the padding deflates to little.
        assert_eq!(u(&v, "traffic.compressed_received"), 220, "{text}");
        assert_eq!(u(&v, "traffic.messages_received"), 220, "{text}");
        assert!(u(&v, "traffic.payload_bytes_received") * 4 < u(&v, "traffic.uncompressed_bytes_received"));
        assert_eq!(v["deflate"]["negotiated"][SHARED], 20, "{text}");
    }
}

/// An echo server on Python's `websockets`, printing its port.
const PYTHON_ECHO: &str = r#"
import asyncio
try:
    from websockets.asyncio.server import serve
except ImportError:
    from websockets import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// Python's `websockets` (if installed) echoing with its default permessage-deflate settings:
/// it agrees to both no-context-takeover parameters and asks for smaller windows.
#[test]
fn echo_against_python_websockets() {
    let spawned = Command::new("python3")
        .args(["-c", PYTHON_ECHO])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut python) = spawned else {
        eprintln!("skipped: no python3");
        return;
    };
    let mut port = String::new();
    let _ = BufReader::new(python.stdout.take().unwrap()).read_line(&mut port);
    let Ok(port) = port.trim().parse::<u16>() else {
        let _ = python.kill();
        let _ = python.wait();
        eprintln!("skipped: python3 has no websockets");
        return;
    };
    let url = format!("ws://127.0.0.1:{port}/");
    let runs: Vec<_> = BACKENDS.iter().map(|backend| deflate_echo(backend, &url, "2", "2000")).collect();
    let _ = python.kill();
    let _ = python.wait();
    for (code, v, text) in runs {
        assert_eq!((code, &v["ok"]), (0, &Value::Bool(true)), "{text}");
        assert_compressed_echoes(&v, &text, 2000);
        let negotiated = v["deflate"]["negotiated"].as_object().unwrap();
        assert_eq!(negotiated.values().filter_map(Value::as_u64).sum::<u64>(), 2, "{text}");
        assert!(negotiated.keys().all(|k| k.starts_with(SHARED)), "{text}");
    }
}
