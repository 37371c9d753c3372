//! A panic in a worker is caught, counted and logged with the connection id; the connection
//! closes with 1011 and the worker keeps serving; a worker thread that dies anyway turns
//! `/healthz` to 503 naming it. The faults are injected through variables that only debug
//! builds read (`workers.rs`, `mod fault`), so these tests exist only there.
#![cfg(all(feature = "gateway", debug_assertions))]

mod gateway_support;

use gateway_support::Gateway;
use serde_json::json;

#[test]
fn a_panicking_event_costs_its_connection_only() {
    let gw = Gateway::start_with_env(None, &["--workers", "1"], &[("THRONG_TEST_PANIC_CHANNEL", "boom")]);
    let mut victim = gw.connect("/ws");
    let mut other = gw.connect("/ws?channels=news");
    victim.send_text(&json!({"op": "subscribe", "channel": "boom"}).to_string());
    assert_eq!(victim.expect_close(), (1011, "internal error".to_owned()));
    assert_eq!(gw.metric("throng_worker_panics_total"), 1);
    let log = gw.log_text();
    assert!(log.contains("panic while handling an event") && log.contains(&victim.conn()), "{log}");

    // The only worker still serves: commands, publishes, new connections.
    let reply = other.command(json!({"op": "subscribe", "channel": "extra"}));
    assert_eq!(reply, json!({"type": "subscribed", "channel": "extra"}));
    assert_eq!(gw.post("/v1/channels/news", "still here").json()["queued"], 1);
    assert_eq!(other.recv_text(), "still here");
    let _late = gw.connect("/ws");
    let health = gw.get("/healthz");
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    assert_eq!(gw.metric("throng_workers_dead"), 0);
}

#[test]
fn a_dead_worker_turns_healthz_503() {
    let gw = Gateway::start_with_env(None, &["--workers", "2"], &[("THRONG_TEST_KILL_WORKER", "1")]);
    // The worker dies on its own thread, maybe after the start line: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut health = gw.get("/healthz");
    while health.status == 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        health = gw.get("/healthz");
    }
    assert_eq!(
        (health.status, health.json()),
        (503, json!({"status": "unhealthy", "dead_workers": [1], "workers": 2}))
    );
    assert_eq!(gw.metric("throng_workers_dead"), 1);
    assert!(gw.log_text().contains("worker thread died"), "{}", gw.log_text());
}
