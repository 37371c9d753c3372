//! Several gateway processes sharing one real `redis-server`: a publish through any node
//! reaches every subscribed connection on every node exactly once, subscriptions follow the
//! local subscribers, presence counts span the fleet, and client messages land in a stream.

mod broker_support;
mod gateway_support;

use std::time::Duration;

use broker_support::{node, wait_for, wait_ready, Redis};
use gateway_support::Got;
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn publish_on_one_node_reaches_every_node_once() {
    let redis = Redis::start();
    let url = redis.url();
    let (a, b, c) = (node(&url, &[]), node(&url, &[]), node(&url, &[]));
    for gw in [&a, &b, &c] {
        assert_eq!(
            wait_ready(gw, 200, Duration::from_secs(5)),
            json!({"status": "ready", "broker": "connected"})
        );
    }
    let mut on_a = a.connect("/ws?channels=news");
    let mut on_b = b.connect("/ws?channels=news");
    let mut on_c = c.connect("/ws?channels=news,other");
    // One Redis subscription per node with a subscriber, whatever its local count.
    let mut on_c2 = c.connect("/ws?channels=news");
    redis.wait_numsub("throng:ch:news", 3);
    redis.wait_numsub("throng:ch:other", 1);

    let reply = a.post("/v1/publish", r#"{"channel":"news","data":{"n":1}}"#).json();
    assert_eq!(reply["queued"], 1, "the reply counts this node's subscribers");
    for ws in [&mut on_a, &mut on_b, &mut on_c, &mut on_c2] {
        let got = ws.recv_json();
        assert_eq!((got["channel"].as_str(), &got["data"]), (Some("news"), &json!({"n": 1})));
    }
    // Binary bodies stay binary across nodes; the publishing node is no different.
    b.post("/v1/channels/other", "text from b");
    assert_eq!(on_c.recv(), Got::Text("text from b".into()));
    let binary = gateway_support::http(c.admin, "POST", "/v1/channels/news", &[], &[0xff, 0x00, 0x80]);
    assert_eq!(binary.status, 200);
    for ws in [&mut on_a, &mut on_b, &mut on_c, &mut on_c2] {
        assert_eq!(ws.recv(), Got::Binary(vec![0xff, 0x00, 0x80]));
    }
    // Exactly once: the publishing node delivered locally and skipped its echo from Redis.
    for ws in [&mut on_a, &mut on_b, &mut on_c, &mut on_c2] {
        ws.expect_silence(QUIET);
    }
    // A backend may also PUBLISH to Redis directly, without the gateway's envelope.
    let _: i64 = redis.query(redis::cmd("PUBLISH").arg("throng:ch:other").arg("from redis"));
    assert_eq!(on_c.recv(), Got::Text("from redis".into()));

    assert!(a.metric("throng_broker_sent_total") >= 1);
    assert!(b.metric("throng_broker_received_total") >= 2);
    assert_eq!(a.metric("throng_broker_state{state=\"connected\"}"), 1);
    assert_eq!(a.metric("throng_broker_dropped_total{reason=\"queue_full\"}"), 0);
}

#[test]
fn unsubscribe_propagates() {
    let redis = Redis::start();
    let url = redis.url();
    let (a, b) = (node(&url, &["--broker-prefix", "fleet7"]), node(&url, &["--broker-prefix", "fleet7"]));
    wait_ready(&a, 200, Duration::from_secs(5));
    wait_ready(&b, 200, Duration::from_secs(5));
    let mut first = b.connect("/ws");
    let mut second = b.connect("/ws?channels=live");
    assert_eq!(first.command(json!({"op": "subscribe", "channel": "live"}))["type"], "subscribed");
    redis.wait_numsub("fleet7:ch:live", 1);
    a.post("/v1/channels/live", "one");
    assert_eq!(first.recv_text(), "one");
    assert_eq!(second.recv_text(), "one");

    // The first leaves by command: B still has a subscriber, so it stays subscribed upstream.
    assert_eq!(first.command(json!({"op": "unsubscribe", "channel": "live"}))["type"], "unsubscribed");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(redis.numsub("fleet7:ch:live"), 1);
    a.post("/v1/channels/live", "two");
    assert_eq!(second.recv_text(), "two");
    first.expect_silence(QUIET);

    // The last one leaves by closing: B unsubscribes upstream and receives nothing more.
    second.send_close(1000);
    second.expect_close();
    redis.wait_numsub("fleet7:ch:live", 0);
    a.post("/v1/channels/live", "three");
    first.expect_silence(QUIET);
    assert_eq!(b.metric("throng_broker_received_total"), 2);

    // A subscriber again: the subscription comes back.
    assert_eq!(first.command(json!({"op": "subscribe", "channel": "live"}))["type"], "subscribed");
    redis.wait_numsub("fleet7:ch:live", 1);
    a.post("/v1/channels/live", "four");
    assert_eq!(first.recv_text(), "four");
}

#[test]
fn presence_counts_span_the_fleet() {
    let redis = Redis::start();
    let url = redis.url();
    let (a, b) = (node(&url, &[]), node(&url, &[]));
    wait_ready(&a, 200, Duration::from_secs(5));
    wait_ready(&b, 200, Duration::from_secs(5));
    let _a1 = a.connect("/ws?channels=room");
    let _b1 = b.connect("/ws?channels=room");
    let b2 = b.connect("/ws?channels=room");
    let presence = |gw: &gateway_support::Gateway| gw.get("/v1/channels/room").json();
    wait_for(Duration::from_secs(5), "presence 3 on node A", || presence(&a)["subscribers"] == 3);
    let seen = presence(&a);
    assert_eq!(seen["local"], 1);
    assert_eq!(seen["nodes"], 2);
    assert_eq!(seen["cluster"], true);
    // Each node counts its own subscribers live and the others' from their last record.
    wait_for(Duration::from_secs(5), "presence 3 on node B", || presence(&b)["subscribers"] == 3);

    drop(b2);
    wait_for(Duration::from_secs(5), "presence 2 after a close", || presence(&a)["subscribers"] == 2);
    let empty = a.get("/v1/channels/nobody").json();
    assert_eq!((empty["subscribers"].as_u64(), empty["nodes"].as_u64()), (Some(0), Some(0)));
    // Publishing on the same path is still POST.
    assert_eq!(a.post("/v1/channels/room", "hi").json()["queued"], 1);
}

#[test]
fn client_messages_are_forwarded_to_a_stream() {
    let redis = Redis::start();
    let a = node(&redis.url(), &["--client-messages", "forward"]);
    wait_ready(&a, 200, Duration::from_secs(5));
    let mut ws = a.connect("/ws");
    ws.send_text("hello backend");
    ws.send_binary(&[1, 2, 3]);
    type Entry = (String, Vec<(String, Vec<u8>)>); // id, fields
    let read = || -> Vec<Entry> { redis.query(redis::cmd("XRANGE").arg("throng:client").arg("-").arg("+")) };
    wait_for(Duration::from_secs(5), "two stream entries", || read().len() == 2);
    let entries = read();
    let field = |i: usize, name: &str| {
        entries[i].1.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    assert_eq!(field(0, "data"), b"hello backend");
    assert_eq!(field(0, "kind"), b"text");
    assert_eq!(field(0, "conn"), ws.conn().as_bytes());
    assert_eq!(field(1, "data"), [1, 2, 3]);
    assert_eq!(field(1, "kind"), b"binary");
}
