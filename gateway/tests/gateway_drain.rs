//! The drain loses nothing it accepted: from SIGTERM on publishes are refused with 503 and
//! `Retry-After`, what was accepted before is flushed to Redis before the process exits (a
//! real `redis-server`, a second node receiving), what could not be is counted in the log, and
//! the log tells how many connections were still open at the deadline.

mod broker_support;
mod gateway_support;

use std::time::Duration;

use broker_support::{node, wait_for, wait_ready, Redis};
use gateway_support::{http, Gateway};
use serde_json::json;

#[test]
fn publishes_accepted_before_sigterm_reach_the_other_node() {
    let redis = Redis::start();
    let url = redis.url();
    let mut a = node(&url, &["--drain-timeout", "10s"]);
    let b = node(&url, &[]);
    for gw in [&a, &b] {
        wait_ready(gw, 200, Duration::from_secs(5));
    }
    let mut on_b = b.connect("/ws?channels=news");
    redis.wait_numsub("throng:ch:news", 1);
    // Hold every PUBLISH in Redis for a second (less than the broker's command timeout), so
    // that node A's messages are still in its queue, or in flight, when SIGTERM comes.
    let _: () = redis.query(redis::cmd("CLIENT").arg("PAUSE").arg(1000).arg("WRITE"));
    const N: u64 = 50;
    for n in 0..N {
        let reply = a.post("/v1/publish", &json!({"channel": "news", "data": n}).to_string());
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    a.signal(libc::SIGTERM);
    for n in 0..N {
        let got = on_b.recv_json();
        assert_eq!((got["channel"].as_str(), &got["data"]), (Some("news"), &json!(n)));
    }
    let status = a.wait_exit(Duration::from_secs(15)).expect("node A exited");
    assert!(status.success(), "{status}");
    let log = a.log_text();
    assert!(log.contains("broker_unsent=0"), "{log}");
}

#[test]
fn publishes_after_sigterm_get_503_and_the_log_counts_who_was_cut() {
    let mut gw = Gateway::start(None, &["--drain-timeout", "3s"]);
    // Never answers the close: keeps the drain going until the deadline, then is dropped.
    let _silent = gw.connect("/ws?channels=news");
    gw.signal(libc::SIGTERM);
    wait_ready(&gw, 503, Duration::from_secs(5));
    for (path, body) in [("/v1/publish", r#"{"channel":"news","data":1}"#), ("/v1/channels/news", "x")] {
        let resp = gw.post(path, body);
        assert_eq!((resp.status, resp.json()["error"].as_str()), (503, Some("draining")), "{path}");
        assert_eq!(resp.header("retry-after"), Some("1"));
    }
    let batch = json!({"messages": [{"channel": "news", "data": 1}]}).to_string();
    assert_eq!(http(gw.admin, "POST", "/v1/publish/batch", &[], batch.as_bytes()).status, 503);
    assert_eq!(gw.metric("throng_admin_limits_total{limit=\"draining\"}"), 3);
    assert_eq!(gw.metric("throng_publishes_total"), 0);
    let status = gw.wait_exit(Duration::from_secs(15)).expect("exited");
    assert!(status.success());
    let log = gw.log_text();
    let stopped = log.lines().find(|l| l.contains("throng stopped")).unwrap_or_else(|| panic!("{log}"));
    assert!(stopped.contains("left=1"), "{stopped}");
    // Each publish refused while draining is a refusal logged at info with its limit.
    let refused =
        log.lines().filter(|l| l.contains("admin request refused") && l.contains("limit=\"draining\""));
    assert_eq!(refused.count(), 3, "{log}");
}

#[test]
fn messages_redis_never_took_are_counted_at_the_drain_deadline() {
    let mut redis = Redis::start();
    let mut gw = node(&redis.url(), &["--drain-timeout", "1s"]);
    wait_ready(&gw, 200, Duration::from_secs(5));
    redis.kill();
    wait_ready(&gw, 503, Duration::from_secs(10));
    // The first publishes may meet the publisher's dead connection (lost in sending, counted
    // as such); once it is reconnecting, they wait in its queue.
    let mut n = 0;
    wait_for(Duration::from_secs(10), "publishes queued", || {
        n += 1;
        let reply = gw.post("/v1/publish", &json!({"channel": "news", "data": n}).to_string());
        assert_eq!(reply.status, 200);
        gw.metric("throng_broker_queue") >= 3
    });
    let queued = gw.metric("throng_broker_queue");
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(15)).expect("exited");
    assert!(status.success());
    let log = gw.log_text();
    let lost = format!("unsent={queued}");
    assert!(log.contains(&format!(" {lost}")) && log.contains(&format!("broker_{lost}")), "{log}");
}
