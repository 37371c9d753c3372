//! What the subscriber takes from a real `redis-server`, which anyone who can `PUBLISH` there
//! writes to: messages over `broker_max_message_size` are dropped and counted, and a payload
//! without the gateway's envelope reaches a `user:` topic only with `broker_raw_user_topics`.

mod broker_support;
mod gateway_support;

use std::time::Duration;

use broker_support::{assert_alive, node, wait_for, wait_ready, Redis};
use gateway_support::{now, token, Got, Upgrade, SECRET};
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

fn publish(redis: &Redis, channel: &str, payload: &[u8]) {
    let _: i64 = redis.query(redis::cmd("PUBLISH").arg(channel).arg(payload));
}

#[test]
fn oversize_messages_from_redis_are_dropped_and_counted() {
    let redis = Redis::start();
    let mut gw = node(&redis.url(), &["--broker-max-message-size", "1KiB"]);
    wait_ready(&gw, 200, Duration::from_secs(5));
    let mut ws = gw.connect("/ws?channels=news");
    redis.wait_numsub("throng:ch:news", 1);

    publish(&redis, "throng:ch:news", &[b'x'; 1025]);
    ws.expect_silence(QUIET);
    assert_eq!(gw.metric("throng_broker_dropped_total{reason=\"oversize\"}"), 1);
    publish(&redis, "throng:ch:news", &[b'y'; 1024]);
    assert_eq!(ws.recv(), Got::Text("y".repeat(1024)));

    // Many more: all counted, the warning logged once for the burst.
    for _ in 0..50 {
        publish(&redis, "throng:ch:news", &[b'z'; 4096]);
    }
    wait_for(Duration::from_secs(5), "51 oversize drops", || {
        gw.metric("throng_broker_dropped_total{reason=\"oversize\"}") == 51
    });
    ws.expect_silence(QUIET);
    let warnings = gw.log_text().matches("over broker_max_message_size").count();
    assert_eq!(warnings, 1, "{}", gw.log_text());
    assert_eq!(gw.get("/v1/stats").json()["broker_stats"]["dropped_oversize"], 51);
    assert_alive(&mut gw);
}

#[test]
fn raw_publishes_reach_user_topics_only_when_allowed() {
    let redis = Redis::start();
    let url = redis.url();
    let auth = ["--jwt-secret", SECRET];
    let (mut a, b) = (node(&url, &auth), node(&url, &auth));
    for gw in [&a, &b] {
        wait_ready(gw, 200, Duration::from_secs(5));
    }
    let t = token(json!({"sub": "ann", "exp": now() + 60}));
    let mut ann = a.try_connect(&Upgrade::new(&format!("/ws?token={t}&channels=news"))).unwrap();
    redis.wait_numsub("throng:ch:user:ann", 1);

    publish(&redis, "throng:ch:user:ann", b"forged");
    ann.expect_silence(QUIET);
    assert_eq!(a.metric("throng_broker_dropped_total{reason=\"raw_user_topic\"}"), 1);
    a.wait_log("raw PUBLISH to a user topic");
    // Raw publishes to ordinary channels still work, and so do the fleet's own user messages.
    publish(&redis, "throng:ch:news", b"raw news");
    assert_eq!(ann.recv(), Got::Text("raw news".into()));
    assert_eq!(b.post("/v1/users/ann", "from node b").status, 200);
    assert_eq!(ann.recv(), Got::Text("from node b".into()));
    assert_alive(&mut a);

    // Opted in: raw payloads reach user topics too.
    let c = node(&url, &["--jwt-secret", SECRET, "--broker-raw-user-topics", "true"]);
    wait_ready(&c, 200, Duration::from_secs(5));
    let mut ann_c = c.try_connect(&Upgrade::new(&format!("/ws?token={t}"))).unwrap();
    redis.wait_numsub("throng:ch:user:ann", 2);
    publish(&redis, "throng:ch:user:ann", b"raw for ann");
    assert_eq!(ann_c.recv(), Got::Text("raw for ann".into()));
    ann.expect_silence(QUIET);
    assert_eq!(c.metric("throng_broker_dropped_total{reason=\"raw_user_topic\"}"), 0);
}
