//! The balancer examples in `deploy/` proxy real WebSockets to the gateway: Debian's nginx and
//! HAProxy on loopback, run from the shipped files with only the addresses and paths changed.
//! Through `deploy/nginx-stream.conf` and `deploy/haproxy.cfg` the client's address reaches the
//! gateway in a PROXY header (the per-IP limit sees two clients, not one balancer). Skipped with
//! a message when a program is not installed; `scripts/test` installs them, so CI runs them.

mod gateway_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_support::{temp_dir, Gateway};

const NGINX: &str = "/usr/sbin/nginx";
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
const HAPROXY: &str = "/usr/sbin/haproxy";

/// A balancer in the foreground on a free loopback port, killed on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether nginx (and the stream module, if `stream`) is installed; prints why not.
fn available(stream: bool) -> bool {
    installed(NGINX, stream)
}

fn installed(program: &str, stream: bool) -> bool {
    let missing = if !Path::new(program).exists() {
        Some(program)
    } else if program != NGINX {
        None
    } else if !Path::new(NGINX).exists() {
        Some("nginx")
    } else if stream && !Path::new(STREAM_MODULE).exists() {
        Some("nginx's stream module (libnginx-mod-stream)")
    } else {
        None
    };
    if let Some(what) = missing {
        eprintln!("skipped: {what} is not installed (scripts/test installs it)");
    }
    missing.is_none()
}

/// Replaces `from` in `text`, insisting that it is there: the test must follow the file.
fn edit(text: String, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the example no longer has {from:?}");
    text.replace(from, to)
}

/// Starts nginx from `deploy/{file}` with its listener moved to a free port, its upstream to
/// `upstream` and its pid and log files to a temporary directory.
fn nginx(file: &str, listen: &str, upstream: SocketAddr) -> Proxy {
    let dir = temp_dir();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)).unwrap();
    let text = edit(text, listen, &format!("listen {addr};"));
    let text = edit(text, "server 127.0.0.1:8080;", &format!("server {upstream};"));
    let text = edit(text, "pid /run/nginx.pid;", &format!("pid {};", dir.join("nginx.pid").display()));
    let log = dir.join("error.log");
    let text =
        edit(text, "error_log /var/log/nginx/error.log warn;", &format!("error_log {} info;", log.display()));
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, text).unwrap();
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(&log)
        // One process: the master's workers would outlive the kill of the master on drop.
        .args(["-g", "daemon off; master_process off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nginx");
    let mut nginx = Proxy { child, addr, dir };
    wait_listening(&mut nginx, "nginx");
    nginx
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The text of `deploy/{file}`.
fn example(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)).unwrap()
}

/// Waits until `proxy` accepts connections on its address.
fn wait_listening(proxy: &mut Proxy, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(proxy.addr).is_err() {
        if let Ok(Some(status)) = proxy.child.try_wait() {
            let mut err = String::new();
            let _ = proxy.child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("{what} exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {}", proxy.addr);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts HAProxy from `deploy/haproxy.cfg` with its frontend on a free port and its server
/// (and health check) pointed at the gateway.
fn haproxy(gw: &Gateway) -> Proxy {
    let dir = temp_dir();
    let addr = free_port();
    let text = edit(example("haproxy.cfg"), "bind :80", &format!("bind {addr}"));
    // The example's maxconn needs a million descriptors, more than a test process may have.
    let text = edit(text, "maxconn 500000", "maxconn 1000");
    let server = format!("server throng1 {} send-proxy-v2 check port {} inter 5s", gw.ws, gw.admin.port());
    let text = edit(text, "server throng1 127.0.0.1:8080 send-proxy-v2 check port 9090 inter 5s", &server);
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, text).unwrap();
    let child = Command::new(HAPROXY)
        .arg("-db")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn haproxy");
    let mut proxy = Proxy { child, addr, dir };
    wait_listening(&mut proxy, "haproxy");
    proxy
}

/// Checks, through `proxy`, that the per-IP limit of 1 counts clients by the address in the
/// PROXY header: every socket reaches the gateway from the balancer's 127.0.0.1.
fn the_limit_sees_each_client(proxy: &Proxy) {
    let (client_a, client_b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let mut first = connect_from(client_a, proxy.addr);
    assert_eq!(upgrade(&mut first, proxy.addr), 101);
    // A second socket from the same client is over the limit...
    let mut again = connect_from(client_a, proxy.addr);
    assert_eq!(upgrade(&mut again, proxy.addr), 429);
    // ...and another client is not.
    let mut other = connect_from(client_b, proxy.addr);
    assert_eq!(upgrade(&mut other, proxy.addr), 101);
}

/// A connection to `to` from the loopback address `from`, so clients can differ by address.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Sends an upgrade for `/ws` and returns the status; on 101 also waits for the gateway's
/// welcome message, which proves that frames flow through the proxy after the upgrade.
fn upgrade(stream: &mut TcpStream, host: SocketAddr) -> u16 {
    let mut request = Vec::new();
    throng::proto::handshake::ClientRequest::new(&host.to_string(), "/ws").write(&mut request).unwrap();
    stream.write_all(&request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let status = text.get(9..12).and_then(|s| s.parse().ok());
        match status {
            Some(101) if text.contains("\"welcome\"") => return 101,
            Some(code) if code != 101 && text.contains("\r\n\r\n") => return code,
            _ => {}
        }
        assert!(n > 0 && Instant::now() < deadline, "no complete answer through the proxy: {text:?}");
    }
}

#[test]
fn nginx_stream_sends_the_client_address_by_proxy_protocol() {
    if !available(true) {
        return;
    }
    let gw = Gateway::start(
        None,
        &["--proxy-protocol", "true", "--proxy-trusted", "127.0.0.1", "--max-connections-per-ip", "1"],
    );
    let nginx = nginx("nginx-stream.conf", "listen 80;", gw.ws);
    the_limit_sees_each_client(&nginx);
}

#[test]
fn nginx_http_proxies_the_upgrade() {
    if !available(false) {
        return;
    }
    let gw = Gateway::start(None, &[]);
    let nginx = nginx("nginx.conf", "listen 80;", gw.ws);
    let mut ws = connect_from(Ipv4Addr::LOCALHOST, nginx.addr);
    assert_eq!(upgrade(&mut ws, nginx.addr), 101, "Upgrade and Connection reach the gateway");
    // Paths other than the WebSocket's are not proxied: the admin API is not on this side.
    let mut other = connect_from(Ipv4Addr::LOCALHOST, nginx.addr);
    other.write_all(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[test]
fn haproxy_sends_the_client_address_by_proxy_protocol() {
    if !installed(HAPROXY, false) {
        return;
    }
    let gw = Gateway::start(
        None,
        &["--proxy-protocol", "true", "--proxy-trusted", "127.0.0.1", "--max-connections-per-ip", "1"],
    );
    let proxy = haproxy(&gw);
    the_limit_sees_each_client(&proxy);
}
