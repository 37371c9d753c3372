//! Every admin endpoint and error path: status codes and bodies, the API key, keep-alive and
//! the request limits.

mod gateway_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gateway_support::{http, parse_response, Gateway, TIMEOUT};
use serde_json::json;

const KEY: &str = "admin-key";

fn error_code(resp: &gateway_support::Resp) -> String {
    resp.json()["error"].as_str().unwrap().to_owned()
}

#[test]
fn probes_stats_metrics_and_demo() {
    let gw = Gateway::start(None, &[]);
    let health = gw.get("/healthz");
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    assert_eq!(health.header("content-type"), Some("application/json"));
    let ready = gw.get("/readyz");
    assert_eq!((ready.status, ready.json()), (200, json!({"status": "ready", "broker": "local"})));

    let _ws = gw.connect("/ws?channels=a");
    let stats = gw.get("/v1/stats").json();
    assert_eq!(stats["connections_open"], 1);
    assert_eq!(stats["handshakes_ok"], 1);
    assert_eq!(stats["broker"], "local");
    assert_eq!(stats["config"]["ws_path"], "/ws");
    assert_eq!(stats["config"]["jwt_secret"], serde_json::Value::Null);

    let metrics = gw.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    for name in [
        "throng_connections_open 1",
        "throng_handshakes_total{result=\"ok\"} 1",
        "throng_broker_state{state=\"local\"} 1",
        "throng_subscriptions 1",
        "throng_loop_queued_events{loop=\"0\"} 0",
    ] {
        assert!(metrics.body.lines().any(|l| l == name), "missing {name:?}");
    }

    let page = gw.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.body.contains("<title>throng demo</title>"));
    assert!(page.body.contains(&format!("\"wsPort\":{}", gw.ws.port())));
}

#[test]
fn demo_is_off_with_a_config_file() {
    let gw = Gateway::start(Some(""), &[]);
    let page = gw.get("/");
    assert_eq!((page.status, error_code(&page)), (404, "not_found".into()));
    // And the client listener answers a plain GET with the engine's 400, not the page.
    let page = http(gw.ws, "GET", "/", &[], b"");
    assert_eq!(page.status, 400);
}

#[test]
fn client_listener_serves_the_demo_and_the_admin_api_allows_its_origin() {
    let gw = Gateway::start(None, &[]);
    let page = http(gw.ws, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.body.contains("<title>throng demo</title>"));
    assert!(page.body.contains("\"sameOrigin\":true"));
    assert!(page.body.contains(&format!("\"adminBase\":\"http://{}\"", gw.admin)));
    // Other paths on the client listener are not pages.
    assert_eq!(http(gw.ws, "GET", "/other", &[], b"").status, 400);

    let origin = format!("http://{}", gw.ws);
    let preflight = http(gw.admin, "OPTIONS", "/v1/publish", &[("Origin", &origin)], b"");
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some(origin.as_str()));
    let body = br#"{"channel":"news","data":"x"}"#;
    let published = http(gw.admin, "POST", "/v1/publish", &[("Origin", &origin)], body);
    assert_eq!(published.status, 200);
    assert_eq!(published.header("access-control-allow-origin"), Some(origin.as_str()));
    // Any other origin gets no CORS grant.
    let foreign = http(gw.admin, "POST", "/v1/publish", &[("Origin", "http://evil.example")], body);
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

#[test]
fn api_key_guards_everything_but_probes() {
    let gw = Gateway::start(None, &["--api-key", KEY]);
    for (method, path) in
        [("GET", "/v1/stats"), ("GET", "/metrics"), ("GET", "/v1/channels"), ("POST", "/v1/publish")]
    {
        let resp = http(gw.admin, method, path, &[], b"{}");
        assert_eq!(resp.status, 401, "{path}");
        assert_eq!(error_code(&resp), "unauthorized");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
        let wrong = http(gw.admin, method, path, &[("Authorization", "Bearer nope")], b"{}");
        assert_eq!(wrong.status, 401);
    }
    let auth = format!("Bearer {KEY}");
    let ok = http(gw.admin, "GET", "/v1/stats", &[("Authorization", &auth)], b"");
    assert_eq!(ok.status, 200);
    let body = br#"{"channel":"a","data":1}"#;
    let ok = http(gw.admin, "POST", "/v1/publish", &[("Authorization", &auth)], body);
    assert_eq!((ok.status, ok.json()), (200, json!({"channel": "a", "queued": 0})));
    assert_eq!(gw.get("/healthz").status, 200);
    assert_eq!(gw.get("/readyz").status, 200);
    assert_eq!(gw.get("/").status, 200);
}

#[test]
fn client_errors() {
    let gw = Gateway::start(None, &[]);
    let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
        ("GET", "/nope", b"", 404, "not_found"),
        ("GET", "/v1/publish", b"", 405, "method_not_allowed"),
        ("POST", "/v1/stats", b"", 405, "method_not_allowed"),
        ("POST", "/v1/publish", b"{not json", 400, "bad_request"),
        ("POST", "/v1/publish", br#"{"data": 1}"#, 400, "bad_request"),
        ("POST", "/v1/publish", br#"{"channel": "a b", "data": 1}"#, 400, "invalid_channel"),
        ("POST", "/v1/publish", br#"{"channel": "a", "data": 1, "extra": 2}"#, 400, "bad_request"),
        ("POST", "/v1/channels/bad%20name", b"x", 400, "invalid_channel"),
        (
            "POST",
            "/v1/publish/batch",
            br#"{"messages": [{"channel": "ok", "data": 1}, {"channel": "", "data": 2}]}"#,
            400,
            "invalid_channel",
        ),
        ("POST", "/v1/connections/abc/close", b"", 400, "bad_request"),
        ("POST", "/v1/connections/12345/close", b"", 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let resp = http(gw.admin, method, path, &[], body);
        assert_eq!(resp.status, status, "{method} {path}: {}", resp.body);
        assert_eq!(error_code(&resp), code, "{method} {path}");
        assert!(resp.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let resp = http(gw.admin, "GET", "/v1/publish", &[], b"");
    assert_eq!(resp.header("allow"), Some("POST"));
    let too_many: Vec<serde_json::Value> = (0..1001).map(|i| json!({"channel": "a", "data": i})).collect();
    let resp = gw.post("/v1/publish/batch", &json!({ "messages": too_many }).to_string());
    assert_eq!((resp.status, error_code(&resp)), (400, "batch_too_large".into()));
    // Nothing of the refused batch was published.
    assert_eq!(gw.metric("throng_publishes_total"), 0);
}

#[test]
fn limits_413_431_501() {
    let gw = Gateway::start(None, &[]);
    let big = vec![b'x'; (1 << 20) + 1];
    let resp = http(gw.admin, "POST", "/v1/channels/a", &[], &big);
    assert_eq!((resp.status, error_code(&resp)), (413, "body_too_large".into()));

    let long = "v".repeat(17 * 1024);
    let resp = http(gw.admin, "GET", "/healthz", &[("X-Long", &long)], b"");
    assert_eq!((resp.status, error_code(&resp)), (431, "header_too_large".into()));

    let mut stream = TcpStream::connect(gw.admin).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"POST /v1/channels/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let resp = parse_response(&raw);
    assert_eq!((resp.status, error_code(&resp)), (501, "not_implemented".into()));

    let mut stream = TcpStream::connect(gw.admin).unwrap();
    stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response(&raw).status, 400);
}

#[test]
fn keep_alive_and_expect_continue() {
    let gw = Gateway::start(None, &[]);
    let mut stream = TcpStream::connect(gw.admin).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Two pipelined requests on one connection, then one with Expect: 100-continue.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_one(&mut stream);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), None, "keep-alive by default in HTTP/1.1");
    assert_eq!(read_one(&mut stream).json()["status"], "ready");
    let body = br#"{"channel":"a","data":"x"}"#;
    let head = format!("POST /v1/publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).unwrap();
    let mut cont = [0u8; 25];
    stream.read_exact(&mut cont).unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let resp = parse_response(&raw);
    assert_eq!((resp.status, resp.header("connection")), (200, Some("close")));
}

/// Reads one Content-Length response from a keep-alive connection.
fn read_one(stream: &mut TcpStream) -> gateway_support::Resp {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        raw.push(byte[0]);
    }
    let head = parse_response(&raw);
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    raw.extend_from_slice(&body);
    parse_response(&raw)
}

#[test]
fn close_connection_and_channel_listing() {
    let gw =
        Gateway::start(Some(&format!("jwt_secret = \"{}\"\ndemo = true\n", gateway_support::SECRET)), &[]);
    let t = gateway_support::token(json!({"sub": "erin", "exp": gateway_support::now() + 60}));
    let mut ws =
        gw.try_connect(&gateway_support::Upgrade::new(&format!("/ws?token={t}&channels=b,a"))).unwrap();
    let listing = gw.get("/v1/channels").json();
    assert_eq!(
        listing,
        json!({"channels": [{"name": "a", "subscribers": 1}, {"name": "b", "subscribers": 1}]})
    );
    let with_users = gw.get("/v1/channels?users=true").json();
    assert_eq!(with_users["channels"][2], json!({"name": "user:erin", "subscribers": 1}));

    let id = ws.conn();
    let bad = gw.post(&format!("/v1/connections/{id}/close"), r#"{"code": 1006}"#);
    assert_eq!((bad.status, error_code(&bad)), (400, "bad_request".into()));
    let resp = gw.post(&format!("/v1/connections/{id}/close"), r#"{"code": 4000, "reason": "kicked"}"#);
    assert_eq!((resp.status, resp.json()), (200, json!({"conn": id, "code": 4000, "closing": true})));
    assert_eq!(ws.expect_close(), (4000, "kicked".into()));
    assert_eq!(gw.metric("throng_admin_closes_total"), 1);
    ws.send_close(4000);
    drop(ws);
    // Once the Close is seen, the connection is unknown and its channels are empty.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.post(&format!("/v1/connections/{id}/close"), "").status != 404 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(gw.get("/v1/channels").json(), json!({"channels": []}));
}
