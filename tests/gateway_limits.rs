//! The gateway under one hostile client: a flood of commands is cut by the per-connection rate
//! limit, and the other connections (pinged, answering) carry on.
#![cfg(feature = "gateway")] // the binary and `throng::gateway` exist only with it

mod gateway_support;

use std::io::Write;
use std::time::{Duration, Instant};

use gateway_support::{Gateway, Got};
use serde_json::json;
use throng::proto::frame::{encode_frame, random_mask};
use throng::proto::OpCode;

#[test]
fn a_subscribe_flood_is_closed_with_1008_and_pinged_neighbours_stay() {
    let gw = Gateway::start(
        None,
        &[
            "--ping-interval",
            "200ms",
            "--pong-timeout",
            "300ms",
            "--workers",
            "1",
            "--event-capacity",
            "16",
            "--client-message-rate",
            "20",
            "--client-message-burst",
            "40",
        ],
    );
    let neighbours: Vec<_> = (0..5)
        .map(|_| {
            let mut ws = gw.connect("/ws");
            std::thread::spawn(move || {
                // Read (and so answer pings) for 3 s; the connection must stay open throughout.
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    match ws.recv_timeout(Duration::from_millis(50)) {
                        None => {}
                        Some(Got::Eof) | Some(Got::Close(..)) => panic!("a neighbour was dropped"),
                        Some(other) => panic!("unexpected {other:?}"),
                    }
                }
                ws
            })
        })
        .collect();

    let mut flooder = gw.connect("/ws");
    let mut burst = Vec::new();
    for i in 0..5000 {
        let command = json!({"op": "subscribe", "channel": format!("c{}", i % 50)}).to_string();
        encode_frame(&mut burst, true, OpCode::Text, Some(random_mask()), command.as_bytes());
    }
    let _ = flooder.stream.write_all(&burst); // the server may close before it has read all
    assert_eq!(flooder.expect_close(), (1008, "message rate limit exceeded".to_owned()));

    for neighbour in neighbours {
        let mut ws = neighbour.join().expect("a neighbour was dropped");
        assert_eq!(
            ws.command(json!({"op": "subscribe", "channel": "after"})),
            json!({"type": "subscribed", "channel": "after"})
        );
    }
    assert_eq!(gw.metric("throng_engine_refusals_total{reason=\"rate_limited\"}"), 1);
}
