//! Channels joined by query and by command, client data in push-only and forward modes, and
//! publishes through every endpoint reaching exactly the subscribed connections.

mod gateway_support;

use std::time::Duration;

use gateway_support::{Gateway, Got};
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(200);

#[test]
fn query_channels_and_commands() {
    let gw = Gateway::start(None, &[]);
    let mut ws = gw.connect("/ws?channels=news,chat");
    assert_eq!(ws.welcome["channels"], json!(["news", "chat"]));
    assert_eq!(ws.welcome["user"], Value::Null);
    assert!(ws.conn().parse::<u64>().is_ok());

    assert_eq!(
        ws.command(json!({"op": "subscribe", "channel": "extra"})),
        json!({"type": "subscribed", "channel": "extra"})
    );
    assert_eq!(gw.post("/v1/channels/extra", "x").json()["queued"], 1);
    assert_eq!(ws.recv_text(), "x");

    assert_eq!(
        ws.command(json!({"op": "unsubscribe", "channel": "news"})),
        json!({"type": "unsubscribed", "channel": "news"})
    );
    assert_eq!(gw.post("/v1/channels/news", "gone").json()["queued"], 0);
    ws.expect_silence(QUIET);

    let errors = [
        (json!({"op": "subscribe"}), "missing_channel"),
        (json!({"op": "subscribe", "channel": "bad name"}), "invalid_channel"),
        (json!({"op": "subscribe", "channel": "user:someone"}), "reserved_channel"),
        (json!({"op": "dance", "channel": "x"}), "unknown_op"),
    ];
    for (command, code) in errors {
        let reply = ws.command(command.clone());
        assert_eq!(reply["type"], "error", "{command}");
        assert_eq!(reply["error"], code, "{command}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let listing = gw.get("/v1/channels").json();
    assert_eq!(
        listing,
        json!({"channels": [{"name": "chat", "subscribers": 1}, {"name": "extra", "subscribers": 1}]})
    );
    assert_eq!(gw.metric("throng_commands_total{result=\"ok\"}"), 2);
    assert_eq!(gw.metric("throng_commands_total{result=\"error\"}"), 4);
}

#[test]
fn too_many_channels() {
    let gw = Gateway::start(None, &["--max-channels-per-connection", "2"]);
    let mut ws = gw.connect("/ws?channels=a,b");
    let reply = ws.command(json!({"op": "subscribe", "channel": "c"}));
    assert_eq!(reply["error"], "too_many_channels");
    let refused =
        gw.try_connect(&gateway_support::Upgrade::new("/ws?channels=a,b,c")).map(|_| ()).unwrap_err();
    assert_eq!((refused.status, refused.body.as_str()), (400, "too many channels (at most 2)"));
}

/// A query of about 7.5 KiB (the request head is capped at 8 KiB) with thousands of names.
fn long_query(names: impl Iterator<Item = String>) -> String {
    let mut path = String::from("/ws?channels=");
    for name in names {
        if path.len() + name.len() > 7500 {
            break;
        }
        path.push_str(&name);
        path.push(',');
    }
    path
}

#[test]
fn long_channel_lists_collapse_or_hit_the_cap() {
    let gw = Gateway::start(None, &["--max-channels-per-connection", "5000"]);
    // Thousands of repeats of two names: two channels.
    let ws = gw.connect(&long_query(std::iter::repeat(["a".to_owned(), "b".to_owned()]).flatten()));
    assert_eq!(ws.welcome["channels"], json!(["a", "b"]));
    // Over a thousand distinct names, all under the cap: all joined, once each.
    let path = long_query((0..).map(|i| format!("c{i}")));
    let distinct = path.matches(',').count();
    assert!(distinct > 1000, "{distinct}");
    let ws = gw.connect(&path);
    assert_eq!(ws.welcome["channels"].as_array().unwrap().len(), distinct);
    assert_eq!(gw.metric("throng_subscriptions"), 2 + distinct as u64);

    // The same list against the default cap of 100: a 400 saying so, counted by its reason.
    let gw = Gateway::start(None, &[]);
    let refused = gw.try_connect(&gateway_support::Upgrade::new(&path)).map(|_| ()).unwrap_err();
    assert_eq!((refused.status, refused.body.as_str()), (400, "too many channels (at most 100)"));
    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"too_many_channels\"}"), 1);
    // Repeats do not count against the cap.
    let ws = gw.connect(&long_query(std::iter::repeat("news".to_owned())));
    assert_eq!(ws.welcome["channels"], json!(["news"]));
}

#[test]
fn push_only_closes_on_data_with_1003() {
    let gw = Gateway::start(None, &[]);
    let mut ws = gw.connect("/ws");
    ws.send_text("hello?");
    assert_eq!(ws.expect_close().0, 1003);
    let mut ws = gw.connect("/ws");
    ws.send_binary(b"\x00\x01");
    assert_eq!(ws.expect_close().0, 1003);
    assert_eq!(gw.metric("throng_client_messages_total{fate=\"rejected\"}"), 2);
}

#[test]
fn forward_mode_keeps_the_connection() {
    let gw = Gateway::start(None, &["--client-messages", "forward"]);
    let mut ws = gw.connect("/ws?channels=a");
    ws.send_text("to the backend");
    ws.send_binary(b"\x01");
    // Commands still work after data, and nothing closed the connection.
    assert_eq!(ws.command(json!({"op": "subscribe", "channel": "b"}))["type"], "subscribed");
    assert_eq!(gw.metric("throng_client_messages_total{fate=\"forwarded\"}"), 2);
}

/// Three clients on different channel sets; each endpoint's publish reaches exactly the
/// subscribers, and the reply says how many.
#[test]
fn publish_endpoints_reach_exactly_the_subscribers() {
    let gw = Gateway::start(None, &[]);
    let mut news = gw.connect("/ws?channels=news");
    let mut both = gw.connect("/ws?channels=news,sport");
    let mut sport = gw.connect("/ws?channels=sport");

    let reply = gw.post("/v1/publish", r#"{"channel": "news", "data": {"headline": "hi"}}"#);
    assert_eq!((reply.status, reply.json()), (200, json!({"channel": "news", "queued": 2})));
    for ws in [&mut news, &mut both] {
        let got = ws.recv_json();
        assert_eq!(got["channel"], "news");
        assert_eq!(got["data"], json!({"headline": "hi"}));
        assert!(got["ts"].as_u64().unwrap() > 1_600_000_000_000);
    }
    sport.expect_silence(QUIET);

    let reply = gw.post("/v1/channels/sport", "raw goal");
    assert_eq!(reply.json(), json!({"channel": "sport", "queued": 2}));
    assert_eq!(both.recv_text(), "raw goal");
    assert_eq!(sport.recv_text(), "raw goal");
    news.expect_silence(QUIET);

    // A body that is not UTF-8 goes out as a binary message.
    let reply = gateway_support::http(gw.admin, "POST", "/v1/channels/news", &[], b"\xff\x00");
    assert_eq!(reply.json()["queued"], 2);
    assert_eq!(news.recv(), Got::Binary(vec![0xff, 0]));
    assert_eq!(both.recv(), Got::Binary(vec![0xff, 0]));

    let batch = json!({"messages": [
        {"channel": "news", "data": "one"},
        {"channel": "sport", "data": "two"},
        {"channel": "nobody", "data": "three"},
    ]});
    let reply = gw.post("/v1/publish/batch", &batch.to_string());
    assert_eq!(
        reply.json(),
        json!({"results": [
            {"channel": "news", "queued": 2}, {"channel": "sport", "queued": 2}, {"channel": "nobody", "queued": 0}
        ], "queued": 4})
    );
    assert_eq!(news.recv_json()["data"], "one");
    assert_eq!(both.recv_json()["data"], "one");
    assert_eq!(both.recv_json()["data"], "two");
    assert_eq!(sport.recv_json()["data"], "two");
    for ws in [&mut news, &mut both, &mut sport] {
        ws.expect_silence(QUIET);
    }

    assert_eq!(gw.metric("throng_publishes_total"), 6);
    assert_eq!(gw.metric("throng_fanout_total"), 2 + 2 + 2 + 4);
    assert!(gw.metric("throng_messages_out_total") >= 10);
}

/// One publish to a thousand subscribers spread over the loops reaches every one exactly once.
#[test]
fn fanout_reaches_a_thousand_subscribers() {
    let gw = Gateway::start(None, &[]);
    let mut clients: Vec<_> = (0..1000).map(|_| gw.connect("/ws?channels=all")).collect();
    let reply = gw.post("/v1/channels/all", "to everyone");
    assert_eq!(reply.json()["queued"], 1000);
    for ws in &mut clients {
        assert_eq!(ws.recv_text(), "to everyone");
    }
    assert_eq!(gw.metric("throng_fanout_total"), 1000);
}
