//! The counts the admin API gives — a publish's `queued`, `/v1/channels`, a channel's presence,
//! `/v1/stats` — agree with what the connections actually receive, while some of them close in
//! the middle of the publishes. The engine's topic index is the one record of who is
//! subscribed, so there is no second copy to drift from it.

mod gateway_support;

use std::thread;
use std::time::Duration;

use gateway_support::{http, Gateway, Got, Ws};
use serde_json::Value;

const SUBSCRIBERS: usize = 40;
const CLOSING: usize = 16;
const PUBLISHES: usize = 80;

/// Data messages until the server's close frame (the connection sent its own close first).
fn count_until_closed(ws: &mut Ws) -> usize {
    let mut n = 0;
    loop {
        match ws.recv() {
            Got::Text(_) | Got::Binary(_) => n += 1,
            Got::Close(..) => return n,
            Got::Eof => panic!("EOF before the server's close frame"),
        }
    }
}

/// Data messages until the text `end`.
fn count_until_end(ws: &mut Ws) -> usize {
    let mut n = 0;
    loop {
        match ws.recv() {
            Got::Text(t) if t == "end" => return n,
            Got::Text(_) | Got::Binary(_) => n += 1,
            other => panic!("expected data, got {other:?}"),
        }
    }
}

fn queued(reply: &gateway_support::Resp) -> usize {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["queued"].as_u64().expect("queued") as usize
}

#[test]
fn publish_counts_presence_and_channels_agree_with_deliveries_while_connections_close() {
    let gw = Gateway::start(None, &[]);
    let mut conns: Vec<Ws> = (0..SUBSCRIBERS).map(|_| gw.connect("/ws?channels=news")).collect();
    gw.wait_subscribers("news", SUBSCRIBERS as u64);
    let mut staying = conns.split_off(CLOSING);

    let admin = gw.admin;
    let publisher = thread::spawn(move || {
        (0..PUBLISHES)
            .map(|i| queued(&http(admin, "POST", "/v1/channels/news", &[], format!("m{i}").as_bytes())))
            .sum::<usize>()
    });
    // Each closing connection says goodbye at its own moment during the publishes and counts
    // what reached it before the server's close frame: what the server queued before it saw
    // the close comes ahead of its close frame; what it did not queue it does not count.
    let closers: Vec<_> = (conns.into_iter().enumerate())
        .map(|(i, mut ws)| {
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(2 * i as u64));
                ws.send_close(1000);
                count_until_closed(&mut ws)
            })
        })
        .collect();
    let published = publisher.join().unwrap();
    let closed_got: usize = closers.into_iter().map(|c| c.join().unwrap()).sum();
    gw.wait_subscribers("news", (SUBSCRIBERS - CLOSING) as u64);

    let end = queued(&gw.post("/v1/channels/news", "end"));
    assert_eq!(end, SUBSCRIBERS - CLOSING, "the last publish reached every connection still open");
    let staying_got: usize = (staying.iter_mut())
        .map(|ws| {
            let n = count_until_end(ws);
            assert_eq!(n, PUBLISHES, "a connection that stayed got every publish");
            n
        })
        .sum();
    assert_eq!(published, staying_got + closed_got, "the publishes' counts are the deliveries");
    assert!(closed_got < CLOSING * PUBLISHES, "some publishes came after a close: {closed_got}");

    let channels = gw.get("/v1/channels").json();
    let news: Vec<&Value> =
        channels["channels"].as_array().unwrap().iter().filter(|c| c["name"] == "news").collect();
    assert_eq!(news.len(), 1, "{channels}");
    assert_eq!(news[0]["subscribers"], (SUBSCRIBERS - CLOSING) as u64);
    let presence = gw.get("/v1/channels/news").json();
    let open = (SUBSCRIBERS - CLOSING) as u64;
    assert_eq!((presence["local"].as_u64(), presence["subscribers"].as_u64()), (Some(open), Some(open)));
    let stats = gw.get("/v1/stats").json();
    assert_eq!(stats["subscriptions"], (SUBSCRIBERS - CLOSING) as u64, "{stats}");
    assert_eq!(stats["channels"], 1, "{stats}");
    assert_eq!(stats["fanout"], (published + end) as u64, "{stats}");
}
