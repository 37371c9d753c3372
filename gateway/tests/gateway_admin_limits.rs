//! The admin API's limits on real sockets: the whole-request deadline against a trickling
//! client, the idle keep-alive limit, the connection cap that leaves the probes answered, the
//! JSON-only POST bodies, the allowed `Host` list, and the refusal to start an unauthenticated
//! admin API on a public address.

mod gateway_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gateway_support::{command, http, metric_in, parse_response, Gateway, Resp, TIMEOUT};

fn error_code(resp: &Resp) -> String {
    resp.json()["error"].as_str().unwrap_or_default().to_owned()
}

/// Sends `request` as it is and reads the answer to the end.
fn raw(addr: SocketAddr, request: &str) -> Resp {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    parse_response(&out)
}

/// Opens a connection that has sent the start of a request and nothing more.
fn slow_client(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /v1/stats HTTP/1.1\r\n").unwrap();
    stream
}

#[test]
fn a_trickling_request_is_cut_at_the_whole_request_deadline() {
    let gw = Gateway::start(None, &["--admin-request-timeout", "1s"]);
    let mut stream = TcpStream::connect(gw.admin).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    // One byte every 100 ms: each read is quick, the request never ends. Give up after 15 s,
    // well past the 1 s deadline.
    let started = Instant::now();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(15) {
        let _ = stream.write_all(b"a");
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    assert!(!answer.is_empty(), "still connected after {:?} of trickling", started.elapsed());
    let resp = parse_response(&answer);
    assert_eq!((resp.status, error_code(&resp)), (408, "request_timeout".into()), "{}", resp.body);
    assert_eq!(gw.metric("throng_admin_limits_total{limit=\"request_timeout\"}"), 1);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let gw = Gateway::start(None, &["--admin-idle-timeout", "1s"]);
    let mut stream = TcpStream::connect(gw.admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    // Keep-alive: the connection stays open for a next request, but not past the idle limit.
    let closed = stream.read(&mut chunk);
    assert!(matches!(closed, Ok(0)), "{closed:?}");
    assert_eq!(gw.metric("throng_admin_limits_total{limit=\"idle_timeout\"}"), 1);
}

#[test]
fn slow_clients_holding_every_slot_do_not_starve_the_probes() {
    let gw = Gateway::start(None, &["--admin-max-connections", "4", "--admin-request-timeout", "60s"]);
    let slow: Vec<TcpStream> = (0..4).map(|_| slow_client(gw.admin)).collect();
    // Connections are taken in order: once the next one is refused, the four hold every slot.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let resp = gw.get("/v1/stats");
        if resp.status == 503 {
            assert_eq!(error_code(&resp), "busy");
            assert_eq!(resp.header("retry-after"), Some("1"));
            break;
        }
        assert!(Instant::now() < deadline, "the four slow clients do not fill the slots");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..20 {
        let health = gw.get("/healthz");
        assert_eq!((health.status, health.header("connection")), (200, Some("close")), "{}", health.body);
        assert_eq!(gw.get("/readyz").json()["status"], "ready");
    }
    // With the reserve taken too, a further probe is refused at once (503, or a reset when its
    // request arrives after the refusal), never left hanging.
    let more: Vec<TcpStream> = (0..8).map(|_| slow_client(gw.admin)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut probe = TcpStream::connect(gw.admin).unwrap();
    probe.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    match probe.read_to_end(&mut answer) {
        Ok(_) => assert!(answer.starts_with(b"HTTP/1.1 503 "), "{:?}", String::from_utf8_lossy(&answer)),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    drop((slow, more));
    // The reserve's one-second deadline frees it; the slow four go when they close.
    let deadline = Instant::now() + Duration::from_secs(10);
    // (Asked of /metrics itself: a slot can still be taken between two requests.)
    let metrics = loop {
        let resp = gw.get("/metrics");
        if resp.status == 200 {
            break resp.body;
        }
        assert!(Instant::now() < deadline, "slots not given back");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(metric_in(&metrics, "throng_admin_limits_total{limit=\"connections\"}") >= 1);
}

#[test]
fn post_bodies_must_be_declared_json() {
    let gw = Gateway::start(None, &[]);
    let body = br#"{"channel":"news","data":1}"#;
    for ty in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let resp = http(gw.admin, "POST", "/v1/publish", &[("Content-Type", ty)], body);
        assert_eq!((resp.status, error_code(&resp)), (415, "unsupported_media_type".into()), "{ty}");
        assert!(resp.json()["message"].as_str().unwrap().contains("application/json"));
    }
    // No Content-Type at all, as a bodiless cross-site fetch sends: refused too.
    let none =
        "POST /v1/connections/1/close HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let resp = raw(gw.admin, none);
    assert_eq!((resp.status, error_code(&resp)), (415, "unsupported_media_type".into()));
    let octet = [("Content-Type", "application/octet-stream")];
    assert_eq!(http(gw.admin, "POST", "/v1/publish", &octet, body).status, 415);
    assert_eq!(gw.metric("throng_admin_limits_total{limit=\"content_type\"}"), 5);
    assert_eq!(gw.metric("throng_publishes_total"), 0, "nothing refused was published");

    let json = [("Content-Type", "Application/JSON; charset=utf-8")];
    assert_eq!(http(gw.admin, "POST", "/v1/publish", &json, body).status, 200);
    // Raw publishes may also say what they are.
    assert_eq!(http(gw.admin, "POST", "/v1/channels/news", &octet, b"\xff\x00").status, 200);
    assert_eq!(http(gw.admin, "POST", "/v1/users/ann", &octet, b"hi").status, 200);
    assert_eq!(gw.metric("throng_publishes_total"), 3);
}

#[test]
fn hosts_outside_the_allowed_list_are_misdirected() {
    let gw = Gateway::start(None, &["--admin-allowed-hosts", "localhost,admin.test:7000"]);
    let get = |path: &str, host: &str| {
        raw(gw.admin, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
    };
    for host in ["localhost", "LOCALHOST:9090", "admin.test:7000"] {
        assert_eq!(get("/v1/stats", host).status, 200, "{host}");
    }
    for host in ["evil.example", "admin.test:7001", "127.0.0.1:9090", "localhost.evil.example"] {
        let resp = get("/v1/stats", host);
        assert_eq!((resp.status, error_code(&resp)), (421, "misdirected_request".into()), "{host}");
        assert!(resp.json()["message"].as_str().unwrap().contains("admin_allowed_hosts"));
    }
    let no_host = raw(gw.admin, "GET /v1/stats HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(no_host.status, 421);
    // Probes are answered whatever the Host: load balancers probe by address.
    assert_eq!(get("/healthz", "10.0.0.1:9090").status, 200);
    assert_eq!(get("/readyz", "10.0.0.1:9090").status, 200);
    let metrics = get("/metrics", "localhost");
    assert!(
        metrics.body.lines().any(|l| l == "throng_admin_limits_total{limit=\"host\"} 5"),
        "{}",
        metrics.body
    );
}

#[test]
fn a_public_admin_listener_without_a_key_refuses_to_start() {
    let out = command(&["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"], &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a loopback address and no api_key is set"), "{err}");
    assert!(err.contains("set api_key") && err.contains("admin_insecure = true"), "{err}");

    let mut gw = Gateway::start(None, &["--admin-listen", "0.0.0.0:0", "--admin-insecure", "true"]);
    let deadline = Instant::now() + TIMEOUT;
    while !gw.log_text().contains("admin_insecure = true") {
        assert!(Instant::now() < deadline, "no warning: {}", gw.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
}

/// A `HEAD` request on its own connection; the whole answer as text.
fn head_request(admin: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "HEAD {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn probes_answer_head_like_get_without_the_body() {
    let gw = Gateway::start(None, &[]);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let get = gw.get(path);
        let text = head_request(gw.admin, path);
        let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
        assert!(head.starts_with(&format!("HTTP/1.1 {} ", get.status)), "{path}: {head}");
        assert!(body.is_empty(), "{path}: HEAD sent a body: {body:?}");
        // Same length as the GET's body (the metrics text may differ by a few counters).
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .expect("Content-Length");
        assert!(length > 0, "{path}");
        if path != "/metrics" {
            assert_eq!(length, get.body.len(), "{path}");
        }
    }
    // Routes that only take POST still refuse HEAD, and say what they take.
    let text = head_request(gw.admin, "/v1/publish");
    assert!(text.starts_with("HTTP/1.1 405 ") && text.contains("Allow: POST"), "{text}");
}
