//! A panic in a worker is caught, counted and logged with the connection id; the connection
//! closes with 1011 and the worker keeps serving; a worker thread that dies anyway turns
//! `/healthz` to 503 naming it, and its share of the connections is closed with 1011 while the
//! other workers serve on. The faults are injected through variables that only debug
//! builds read (`workers.rs`, `mod fault`), so these tests exist only there.
#![cfg(debug_assertions)]

mod gateway_support;

use gateway_support::{Gateway, Got};
use serde_json::json;

/// Waits (up to 5 s) for `/healthz` to report a dead worker, which dies on its own thread,
/// maybe after the start line.
fn wait_unhealthy(gw: &Gateway) -> gateway_support::Resp {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut health = gw.get("/healthz");
    while health.status == 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        health = gw.get("/healthz");
    }
    health
}

/// Waits until the metric (as printed, with its labels) reads `n`; a sample that is not there
/// yet is a close not counted yet.
fn wait_metric(gw: &Gateway, name: &str, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = gw.get("/metrics").body;
        let seen = text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok());
        if seen == Some(n) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{name}: {seen:?}, want {n}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_panicking_event_costs_its_connection_only() {
    let gw = Gateway::start_with_env(None, &["--workers", "1"], &[("THRONG_TEST_PANIC_CHANNEL", "boom")]);
    let mut victim = gw.connect("/ws");
    let mut other = gw.connect("/ws?channels=news");
    victim.send_text(&json!({"op": "subscribe", "channel": "boom"}).to_string());
    assert_eq!(victim.expect_close(), (1011, "internal error".to_owned()));
    assert_eq!(gw.metric("throng_worker_panics_total"), 1);
    victim.send_close(1011);
    wait_metric(&gw, r#"throng_closes_total{code="1011",reason="worker_panic"}"#, 1);
    let log = gw.wait_log("panic while handling an event");
    assert!(log.contains(&victim.conn()), "{log}");

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
    let health = wait_unhealthy(&gw);
    assert_eq!(
        (health.status, health.json()),
        (503, json!({"status": "unhealthy", "dead_workers": [1], "workers": 2}))
    );
    assert_eq!(gw.metric("throng_workers_dead"), 1);
    gw.wait_log("worker thread died");
}

#[test]
fn a_dead_workers_connections_are_closed_and_the_other_worker_serves_on() {
    // Two events a shard: a dead worker's shard nobody read would be full after one connection
    // and stop the loops from reading.
    let args = ["--workers", "2", "--event-capacity", "4"];
    let gw = Gateway::start_with_env(None, &args, &[("THRONG_TEST_KILL_WORKER", "1")]);
    assert_eq!(wait_unhealthy(&gw).status, 503);
    // Held open (a close frame left unanswered keeps its slot), so each takes a new slot and
    // the connections spread over both shards.
    // The loop welcomes every connection; the dead worker's shard is read for it and its
    // connections closed with 1011, so a command there is answered by that close.
    let (mut welcomed, mut closed) = (Vec::new(), Vec::new());
    for _ in 0..24 {
        let mut ws = gw.upgrade("/ws");
        assert!(ws.recv_text().contains("welcome"));
        ws.send_text(&json!({"op": "subscribe", "channel": "probe"}).to_string());
        match ws.recv() {
            Got::Text(text) if text.contains("subscribed") => welcomed.push(ws),
            Got::Close(1011, reason) if reason == "internal error" => closed.push(ws),
            other => panic!("expected a reply or 1011, got {other:?}"),
        }
    }
    assert!(
        !welcomed.is_empty() && !closed.is_empty(),
        "welcomed {}, closed {}",
        welcomed.len(),
        closed.len()
    );
    for ws in &mut closed {
        ws.send_close(1011);
    }
    wait_metric(&gw, r#"throng_closes_total{code="1011",reason="worker_gone"}"#, closed.len() as u64);
    // The live worker still answers commands.
    let live = &mut welcomed[0];
    let reply = live.command(json!({"op": "subscribe", "channel": "news"}));
    assert_eq!(reply, json!({"type": "subscribed", "channel": "news"}));
    assert_eq!(gw.post("/v1/channels/news", "still here").json()["queued"], 1);
    assert_eq!(live.recv_text(), "still here");
}
