//! With its descriptor table full, the server must not spin on `accept`, must keep serving the
//! connections it has, and must come back to the connections waiting in the listen backlog once
//! descriptors free up — with edge-triggered readiness no new event would announce them. The server runs in a child process (this test binary re-executed) whose
//! open-files limit is lowered with `prlimit`, so that the client sockets are not counted in it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use throng::proto::frame::encode_frame;
use throng::proto::handshake::{ClientHandshake, ClientRequest, Parsed};
use throng::proto::OpCode;
use throng::{Flow, Server};

const CHILD_ENV: &str = "THRONG_EMFILE_CHILD";
const FD_LIMIT: u32 = 64;

/// The child: lower the limit (soft and hard, so the server cannot raise it back), serve echo.
#[test]
fn emfile_child_server() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return; // Only meaningful when re-executed by the test below.
    }
    let pid = std::process::id().to_string();
    let limit = format!("--nofile={FD_LIMIT}:{FD_LIMIT}");
    let status = Command::new("prlimit").args(["--pid", &pid, &limit]).status().expect("run prlimit");
    assert!(status.success());
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .loops(1)
        // Silent connections are dropped quickly, which frees descriptors during the test.
        .handshake_timeout(Duration::from_millis(300))
        .on_message(|inline, kind, payload| {
            inline.reply(kind, payload);
            Flow::Consumed
        })
        .start()
        .unwrap();
    println!("PORT {}", server.local_addr().port());
    // Serve until the parent closes our stdin.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    println!("ACCEPT_ERRORS {}", server.stats().accept_errors);
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn upgrade(addr: SocketAddr) -> TcpStream {
    let (stream, handshake) = send_upgrade(addr, TcpStream::connect(addr).unwrap());
    finish_upgrade(stream, &handshake)
}

fn send_upgrade(addr: SocketAddr, mut stream: TcpStream) -> (TcpStream, ClientHandshake) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let host = addr.to_string();
    let mut request = Vec::new();
    let handshake = ClientRequest::new(&host, "/").write(&mut request).unwrap();
    stream.write_all(&request).unwrap();
    (stream, handshake)
}

fn finish_upgrade(mut stream: TcpStream, handshake: &ClientHandshake) -> TcpStream {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Parsed::Complete(_) = handshake.parse_response(&buf).unwrap() {
            return stream;
        }
    }
}

fn echo_once(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_frame(&mut frame, true, OpCode::Binary, Some([1, 2, 3, 4]), payload);
    stream.write_all(&frame).unwrap();
    let mut reply = vec![0u8; 2 + payload.len()];
    stream.read_exact(&mut reply).unwrap();
    reply.split_off(2)
}

#[test]
fn full_descriptor_table_backs_off_and_keeps_serving() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["emfile_child_server", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("re-execute the test binary");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "child exited before printing its port");
        // libtest prints "test name ... " on the same line before the test's own output.
        if let Some((_, port)) = line.trim().split_once("PORT ") {
            break port.parse::<u16>().unwrap();
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let mut first = upgrade(addr);
    assert_eq!(echo_once(&mut first, b"before"), b"before");

    // Far more connections than the child has descriptors: the kernel completes them into the
    // listen backlog, and the server's accept fails with EMFILE.
    let mut extra: Vec<TcpStream> = (0..3 * FD_LIMIT).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    assert!(extra.len() as u32 > 2 * FD_LIMIT, "only {} connects succeeded", extra.len());
    // Its request waits in the socket until the server gets round to accepting it.
    let (last, last_handshake) = send_upgrade(addr, extra.pop().unwrap());

    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(child.id());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(child.id()) - before;
    let ticks_per_second = 100; // USER_HZ on Linux.
    let elapsed_ticks = started.elapsed().as_secs_f64() * ticks_per_second as f64;
    assert!(
        (used as f64) < elapsed_ticks * 0.5,
        "the server spun: {used} ticks of CPU in {elapsed_ticks:.0} ticks of wall time"
    );

    // The connection it already had still works.
    assert_eq!(echo_once(&mut first, b"after"), b"after");
    // The silent ones time out, freeing descriptors; the server must then accept again from the
    // backlog by itself, all the way to the last connection, and upgrade it.
    let mut last = finish_upgrade(last, &last_handshake);
    assert_eq!(echo_once(&mut last, b"from the backlog"), b"from the backlog");
    drop(extra);
    drop(child.stdin.take());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let errors: u64 = rest
        .lines()
        .find_map(|l| l.split_once("ACCEPT_ERRORS ").map(|(_, n)| n))
        .expect("child reported its accept errors")
        .trim()
        .parse()
        .unwrap();
    assert!(errors >= 1, "the server never hit EMFILE, so the test proved nothing");
    assert!(child.wait().unwrap().success());
}
