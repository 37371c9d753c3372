//! Upgrade decisions: JWT auth from each place a token can travel, every refusal with its
//! status and reason, the user topic, token expiry, origins and connection caps.

mod gateway_support;

use std::time::Duration;

use gateway_support::{now, token, Gateway, Upgrade, SECRET};
use serde_json::json;

fn auth_gateway() -> Gateway {
    Gateway::start(Some(&format!("jwt_secret = \"{SECRET}\"\n")), &[])
}

fn refused(gw: &Gateway, up: Upgrade) -> (u16, String) {
    match gw.try_connect(&up) {
        Ok(ws) => panic!("accepted: {}", ws.welcome),
        Err(r) => (r.status, r.body),
    }
}

#[test]
fn token_accepted_from_header_query_and_subprotocol() {
    let gw = auth_gateway();
    let t = token(json!({"sub": "alice", "exp": now() + 60}));

    let ws = gw.try_connect(&Upgrade::new("/ws").header("Authorization", &format!("Bearer {t}"))).unwrap();
    assert_eq!(ws.welcome["user"], "alice");

    let ws = gw.try_connect(&Upgrade::new(&format!("/ws?token={t}"))).unwrap();
    assert_eq!(ws.welcome["user"], "alice");

    // What browsers do: the token rides in a subprotocol entry next to the real one.
    let up = Upgrade::new("/ws").protocol("throng.v1").protocol(&format!("bearer.{t}"));
    let ws = gw.try_connect(&up).unwrap();
    assert_eq!(ws.subprotocol.as_deref(), Some("throng.v1"));
    // Offered alone, the token entry is echoed so that browsers accept the answer.
    let ws = gw.try_connect(&Upgrade::new("/ws").protocol(&format!("bearer.{t}"))).unwrap();
    assert_eq!(ws.subprotocol, Some(format!("bearer.{t}")));
}

#[test]
fn rejections_have_status_and_reason() {
    let gw = auth_gateway();
    assert_eq!(refused(&gw, Upgrade::new("/ws")), (401, "missing token".into()));

    let forged = throng_gateway::auth::sign(&json!({"sub": "alice", "exp": now() + 60}), b"not-the-secret");
    let (status, body) = refused(&gw, Upgrade::new(&format!("/ws?token={forged}")));
    assert_eq!((status, body.as_str()), (401, "invalid token: bad signature"));

    // Past the default 30 s leeway.
    let expired = token(json!({"sub": "alice", "exp": now() - 40}));
    assert_eq!(refused(&gw, Upgrade::new(&format!("/ws?token={expired}"))), (401, "token expired".into()));

    assert_eq!(refused(&gw, Upgrade::new("/ws?token=garbage")), (401, "invalid token: malformed".into()));

    let limited = token(json!({"sub": "bob", "exp": now() + 60, "channels": ["news.*"]}));
    let (status, body) = refused(&gw, Upgrade::new(&format!("/ws?token={limited}&channels=news.eu,sports")));
    assert_eq!((status, body.as_str()), (403, "channel not allowed: sports"));
    assert!(gw.try_connect(&Upgrade::new(&format!("/ws?token={limited}&channels=news.eu"))).is_ok());

    let (status, body) = refused(&gw, Upgrade::new(&format!("/ws?token={limited}&channels=user:alice")));
    assert_eq!((status, body.as_str()), (403, "channel is reserved: user:alice"));
    let (status, _) = refused(&gw, Upgrade::new(&format!("/ws?token={limited}&channels=a%20b")));
    assert_eq!(status, 400);

    let (status, body) = refused(&gw, Upgrade::new("/elsewhere"));
    assert_eq!((status, body.as_str()), (404, "no WebSocket endpoint here; use /ws"));

    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"missing_token\"}"), 1);
    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"invalid_token\"}"), 2);
    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"expired_token\"}"), 1);
    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"channel_forbidden\"}"), 2);
    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"not_found\"}"), 1);
    assert!(gw.metric("throng_handshakes_total{result=\"failed\"}") >= 8);
}

#[test]
fn commands_respect_the_token_allow_list() {
    let gw = auth_gateway();
    let t = token(json!({"sub": "carol", "exp": now() + 60, "channels": ["news.*", "chat"]}));
    let mut ws = gw.try_connect(&Upgrade::new(&format!("/ws?token={t}"))).unwrap();
    let ok = ws.command(json!({"op": "subscribe", "channel": "news.eu", "id": 7}));
    assert_eq!(ok, json!({"type": "subscribed", "channel": "news.eu", "id": 7}));
    let denied = ws.command(json!({"op": "subscribe", "channel": "sports"}));
    assert_eq!(denied["type"], "error");
    assert_eq!(denied["error"], "forbidden");
    assert_eq!(denied["message"], "channel not allowed: sports");
}

#[test]
fn user_topic_reaches_every_connection_of_that_user_only() {
    let gw = auth_gateway();
    let alice = token(json!({"sub": "alice", "exp": now() + 60}));
    let bob = token(json!({"sub": "bob", "exp": now() + 60}));
    let mut a1 = gw.try_connect(&Upgrade::new(&format!("/ws?token={alice}"))).unwrap();
    let mut a2 = gw.try_connect(&Upgrade::new(&format!("/ws?token={alice}"))).unwrap();
    let mut b = gw.try_connect(&Upgrade::new(&format!("/ws?token={bob}"))).unwrap();
    let reply = gw.post("/v1/users/alice", "for alice");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"channel": "user:alice", "queued": 2}));
    assert_eq!(a1.recv_text(), "for alice");
    assert_eq!(a2.recv_text(), "for alice");
    b.expect_silence(Duration::from_millis(200));
}

#[test]
fn expired_token_closes_with_4001() {
    // With a leeway of 1 s the connection closes one second after the token's exp.
    let gw = Gateway::start(Some(&format!("jwt_secret = \"{SECRET}\"\njwt_leeway = \"1s\"\n")), &[]);
    let t = token(json!({"sub": "dave", "exp": now() + 1}));
    let mut ws = gw.try_connect(&Upgrade::new(&format!("/ws?token={t}"))).unwrap();
    let (code, reason) = ws.expect_close();
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    assert_eq!(gw.metric("throng_token_expired_closes_total"), 1);
}

#[test]
fn origin_allow_list() {
    let gw = Gateway::start(None, &["--allowed-origins", "https://app.example.com,https://*.example.org"]);
    assert!(gw.try_connect(&Upgrade::new("/ws").origin("https://app.example.com")).is_ok());
    assert!(gw.try_connect(&Upgrade::new("/ws").origin("https://eu.example.org")).is_ok());
    assert!(gw.try_connect(&Upgrade::new("/ws")).is_ok(), "no Origin: not a browser");
    let (status, body) = refused(&gw, Upgrade::new("/ws").origin("https://evil.example.com"));
    assert_eq!((status, body.as_str()), (403, "origin not allowed"));
}

#[test]
fn per_ip_and_global_limits() {
    let gw = Gateway::start(None, &["--max-connections-per-ip", "2"]);
    let a = gw.connect("/ws");
    let _b = gw.connect("/ws");
    let (status, body) = refused(&gw, Upgrade::new("/ws"));
    assert_eq!((status, body.as_str()), (429, "too many connections from this address"));
    drop(a);
    // The slot comes back once the worker has seen the Close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.try_connect(&Upgrade::new("/ws")).is_err() {
        assert!(std::time::Instant::now() < deadline, "slot never released");
        std::thread::sleep(Duration::from_millis(20));
    }

    let gw = Gateway::start(None, &["--max-connections", "1"]);
    let _a = gw.connect("/ws");
    let (status, body) = refused(&gw, Upgrade::new("/ws"));
    assert_eq!((status, body.as_str()), (503, "server at its connection limit"));
    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"global_limit\"}"), 1);
}

#[test]
fn short_secret_refuses_to_start() {
    let out = gateway_support::command(&["--jwt-secret", "only-31-bytes-long-0123456789ab"], &[])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("jwt_secret") && err.contains("at least 32 bytes"), "{err}");
    assert!(!err.contains("only-31-bytes"), "the secret is not echoed: {err}");
}

#[test]
fn token_rules_exp_leeway_audience_issuer() {
    let config = format!(
        "jwt_secret = \"{SECRET}\"\njwt_audience = \"throng\"\njwt_issuer = \"https://auth.example\"\n"
    );
    let gw = Gateway::start(Some(&config), &[]);
    let iss = "https://auth.example";
    let connect = |claims| gw.try_connect(&Upgrade::new(&format!("/ws?token={}", token(claims))));
    let (exp, now) = (now() + 60, now());
    assert!(connect(json!({"sub": "a", "exp": exp, "aud": "throng", "iss": iss})).is_ok());
    assert!(connect(json!({"sub": "a", "exp": exp, "aud": ["other", "throng"], "iss": iss})).is_ok());
    // Expired 10 s ago by the issuer's clock: inside the default 30 s leeway.
    assert!(connect(json!({"sub": "a", "exp": now - 10, "aud": "throng", "iss": iss})).is_ok());
    let refusal = |claims| match connect(claims) {
        Ok(ws) => panic!("accepted: {}", ws.welcome),
        Err(r) => (r.status, r.body),
    };
    let no_exp = refusal(json!({"sub": "a", "aud": "throng", "iss": iss}));
    assert_eq!(no_exp, (401, "invalid token: no exp claim".into()));
    let aud = refusal(json!({"sub": "a", "exp": exp, "aud": "other", "iss": iss}));
    assert_eq!(aud, (401, "invalid token: wrong audience".into()));
    let iss_wrong = refusal(json!({"sub": "a", "exp": exp, "aud": "throng", "iss": "https://evil"}));
    assert_eq!(iss_wrong, (401, "invalid token: wrong issuer".into()));
    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"invalid_token\"}"), 3);

    let gw = Gateway::start(Some(&format!("jwt_secret = \"{SECRET}\"\njwt_require_exp = false\n")), &[]);
    assert!(gw.try_connect(&Upgrade::new(&format!("/ws?token={}", token(json!({"sub": "a"}))))).is_ok());
}

#[test]
fn any_subject_gets_its_user_topic() {
    let gw = auth_gateway();
    let t = token(json!({"sub": "auth0|abc", "exp": now() + 60}));
    let mut ws = gw.try_connect(&Upgrade::new(&format!("/ws?token={t}"))).unwrap();
    assert_eq!(ws.welcome["user"], "auth0|abc");
    // A look-alike subject must not share the topic.
    let other = token(json!({"sub": "auth0%7Cabc", "exp": now() + 60}));
    let mut look_alike = gw.try_connect(&Upgrade::new(&format!("/ws?token={other}"))).unwrap();
    let reply = gw.post("/v1/users/auth0%7Cabc", "for auth0|abc");
    assert_eq!((reply.status, reply.json()), (200, json!({"channel": "user:auth0%7Cabc", "queued": 1})));
    assert_eq!(ws.recv_text(), "for auth0|abc");
    look_alike.expect_silence(Duration::from_millis(200));
    let reply = gw.post("/v1/users/auth0%257Cabc", "for the other one");
    assert_eq!(reply.json()["queued"], 1);
    assert_eq!(look_alike.recv_text(), "for the other one");
}

#[test]
fn expiry_entries_leave_with_their_connections() {
    let gw = auth_gateway();
    let t = token(json!({"sub": "erin", "exp": now() + 3600}));
    let wait_entries = |n: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while gw.metric("throng_token_expiry_entries") != n {
            assert!(std::time::Instant::now() < deadline, "entries never reached {n}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let open: Vec<_> =
        (0..20).map(|_| gw.try_connect(&Upgrade::new(&format!("/ws?token={t}"))).unwrap()).collect();
    wait_entries(20);
    drop(open);
    wait_entries(0);
    // A reconnect loop with the same long-lived token leaves nothing behind.
    for _ in 0..300 {
        let mut ws = gw.try_connect(&Upgrade::new(&format!("/ws?token={t}"))).unwrap();
        ws.send_close(1000);
        let _ = ws.recv_timeout(Duration::from_secs(5));
    }
    wait_entries(0);
    assert_eq!(gw.metric("throng_connections_open"), 0);
}
