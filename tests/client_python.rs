//! The client against an independent implementation: a Python `websockets` echo server.
//!
//! The test installs `websockets` with pip when it is missing; it is skipped (with a printed
//! reason) only when python3 or pip itself is unavailable.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use throng::client::{connect, ClientError, ClientOptions, Connection};
use throng::proto::deflate::Params;
use throng::{DataKind, Message};

/// The server: echoes everything; on text commands it closes with 4002, sends a fragmented
/// message, pings us and reports the pong, or names the extensions in use. Prints `PORT <n>`
/// once listening. It accepts permessage-deflate (websockets' default); with the argument
/// `strict` it asks for no context takeover both ways and small windows.
const SERVER: &str = r#"
import asyncio, sys
import websockets
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

def extensions(ws):
    # The asyncio implementation keeps them on its protocol object, the legacy one on itself.
    found = getattr(getattr(ws, "protocol", None), "extensions", None)
    if found is None:
        found = ws.extensions
    return ",".join(e.name for e in found) or "none"

async def handler(ws, *_):
    try:
        async for msg in ws:
            if msg == "close-me":
                await ws.close(4002, "as requested")
                return
            if msg == "fragments-please":
                await ws.send(["frag", "mented ", "ok ✓"])
                continue
            if msg == "ping-me":
                waiter = await ws.ping(b"from python")
                await asyncio.wait_for(waiter, 5)
                await ws.send("pong received")
                continue
            if msg == "extensions?":
                await ws.send(extensions(ws))
                continue
            await ws.send(msg)
    except websockets.ConnectionClosed:
        pass

async def main():
    options = {}
    if sys.argv[1:] == ["strict"]:
        options["compression"] = None
        options["extensions"] = [ServerPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True,
            server_max_window_bits=10, client_max_window_bits=9)]
    async with websockets.serve(handler, "127.0.0.1", 0, subprotocols=["chat"], max_size=None,
                                **options) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print("PORT", port, flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

fn succeeds(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure `websockets` is importable: `Err(reason)` only when python3 or pip is missing.
fn python_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            if succeeds("python3", &["-c", "import websockets"]) {
                return Ok(());
            }
            if !succeeds("python3", &["-m", "pip", "--version"]) {
                return Err("python3 with pip is not available".into());
            }
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "websockets"])
                .status()
                .expect("run pip");
            assert!(status.success(), "pip install websockets failed: {status}");
            assert!(
                succeeds("python3", &["-c", "import websockets"]),
                "websockets installed but not importable"
            );
            Ok(())
        })
        .clone()
}

/// The running Python server; killed on drop.
struct PyServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the server, or `None` (after printing why) when Python cannot run it.
fn python_server() -> Option<PyServer> {
    python_server_with(&[])
}

/// [`python_server`] with arguments for the script.
fn python_server_with(args: &[&str]) -> Option<PyServer> {
    if let Err(reason) = python_ready() {
        eprintln!("skipping: {reason}");
        return None;
    }
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("throng-client-python-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("echo_server.py");
    std::fs::write(&script, SERVER).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("the python server to start");
    let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok());
    let server = PyServer { child, port: port.unwrap_or(0), _dir: TempDir(dir) };
    assert!(port.is_some(), "unexpected first line from the python server: {line:?}");
    Some(server)
}

fn options() -> ClientOptions {
    ClientOptions {
        subprotocols: vec!["superchat".into(), "chat".into()],
        read_timeout: Some(Duration::from_secs(5)),
        ..ClientOptions::default()
    }
}

fn dial(server: &PyServer) -> Connection {
    connect(&format!("ws://127.0.0.1:{}/any/path?x=y", server.port), &options()).expect("connect to python")
}

fn dial_deflate(server: &PyServer) -> Connection {
    let options = ClientOptions { deflate: true, ..options() };
    connect(&format!("ws://127.0.0.1:{}/", server.port), &options).expect("connect to python")
}

/// Bytes deflate cannot shrink (an xorshift stream).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Text and binary both ways, small to large, compressible or not, whole and fragmented; the
/// large message is `large_copies` times 52 bytes.
fn echo_compressed(conn: &mut Connection, large_copies: usize) {
    for len in [0, 1, 125, 126, 65536, 1 << 20] {
        let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        conn.send_text(&text).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Text(text), "text of {len}");
        let binary = noise(len);
        conn.send_binary(&binary).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Binary(binary), "binary of {len}");
    }
    // A large message, compressed many times over.
    let large = "zażółć gęślą jaźń, large and compressible. ".repeat(large_copies);
    conn.send(Message::Text(large.clone())).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text(large));
    let text = "zażółć gęślą jaźń ".repeat(500);
    conn.send_fragmented(DataKind::Text, text.as_bytes(), 5).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text(text));
    let binary = noise(200_000);
    conn.send_fragmented(DataKind::Binary, &binary, 4096).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Binary(binary));
    conn.send_text("fragments-please").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("fragmented ok ✓".into()));
    conn.send_text("ping-me").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("pong received".into()));
}

#[test]
fn handshake_and_echo() {
    let Some(server) = python_server() else { return };
    let mut conn = dial(&server);
    assert_eq!(conn.subprotocol(), Some("chat"));
    for len in [0, 125, 126, 65536, 100 << 10, 1 << 20] {
        let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        conn.send_text(&text).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Text(text), "text of {len}");
        let binary: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        conn.send_binary(&binary).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Binary(binary), "binary of {len}");
    }
    conn.close(1000, "done").expect("clean close");
}

#[test]
fn fragmentation_both_ways() {
    let Some(server) = python_server() else { return };
    let mut conn = dial(&server);
    let text = "zażółć gęślą jaźń ".repeat(500);
    conn.send_fragmented(DataKind::Text, text.as_bytes(), 5).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text(text));
    let binary: Vec<u8> = (0..200_000).map(|i| (i % 13) as u8).collect();
    conn.send_fragmented(DataKind::Binary, &binary, 4096).unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Binary(binary));
    conn.send_text("fragments-please").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("fragmented ok ✓".into()));
    conn.close(1000, "").unwrap();
}

#[test]
fn pings_both_ways() {
    let Some(server) = python_server() else { return };
    let mut conn = dial(&server);
    let (tx, pongs) = mpsc::channel();
    conn.on_pong(move |payload| tx.send(payload.to_vec()).unwrap());
    conn.ping(b"from rust").unwrap();
    conn.send_text("echo after ping").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("echo after ping".into()));
    assert_eq!(pongs.try_recv().unwrap(), b"from rust");
    // The server pings and waits for our pong before answering.
    conn.send_text("ping-me").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("pong received".into()));
    conn.close(1000, "").unwrap();
}

#[test]
fn server_close_with_code_and_reason() {
    let Some(server) = python_server() else { return };
    let mut conn = dial(&server);
    conn.send_text("close-me").unwrap();
    match conn.recv() {
        Err(ClientError::Closed { code: 4002, reason }) => assert_eq!(reason, "as requested"),
        other => panic!("expected Closed(4002), got {other:?}"),
    }
    assert!(matches!(conn.send_text("late"), Err(ClientError::Closed { code: 4002, .. })));
}

#[test]
fn permessage_deflate_with_context_takeover() {
    let Some(server) = python_server() else { return };
    let mut conn = dial_deflate(&server);
    let params = conn.compression().expect("websockets accepts permessage-deflate");
    assert!(!params.client_no_context_takeover, "{params:?}");
    conn.send_text("extensions?").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("permessage-deflate".into()));
    // 9 MiB.
    echo_compressed(&mut conn, 180_000);
    conn.close(1000, "done").expect("clean close");
}

#[test]
fn permessage_deflate_without_context_takeover_and_small_windows() {
    let Some(server) = python_server_with(&["strict"]) else { return };
    let mut conn = dial_deflate(&server);
    let agreed = Params {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 10,
        client_max_window_bits: 9,
    };
    assert_eq!(conn.compression(), Some(agreed));
    // 1 MiB: deflate with a 512-byte window is slow on repetitive text in a debug build.
    echo_compressed(&mut conn, 20_000);
    conn.close(1000, "").expect("clean close");
}

#[test]
fn without_the_option_nothing_is_offered() {
    let Some(server) = python_server() else { return };
    let mut conn = dial(&server);
    assert_eq!(conn.compression(), None);
    conn.send_text("extensions?").unwrap();
    assert_eq!(conn.recv().unwrap(), Message::Text("none".into()));
    conn.close(1000, "").unwrap();
}
