//! The gateway under one hostile client: a flood of commands is cut by the per-connection rate
//! limit, and the other connections (pinged, answering) carry on.

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

/// Writes an upgrade request for `/ws` (after `prefix`) and returns the status of the answer.
fn upgrade_status(stream: &mut std::net::TcpStream, prefix: &[u8], addr: std::net::SocketAddr) -> u16 {
    use std::io::Read;
    let host = addr.to_string();
    let mut request = prefix.to_vec();
    throng::proto::handshake::ClientRequest::new(&host, "/ws").write(&mut request).unwrap();
    stream.write_all(&request).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

fn tcp(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
}

#[test]
fn sockets_still_in_their_handshake_count_toward_the_per_ip_limit() {
    let gw = Gateway::start(None, &["--max-connections-per-ip", "2", "--handshake-timeout", "30s"]);
    let silent: Vec<_> = (0..2).map(|_| tcp(gw.ws)).collect();
    let wait = Instant::now() + Duration::from_secs(5);
    while gw.metric("throng_connections") < 2 && Instant::now() < wait {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(upgrade_status(&mut tcp(gw.ws), b"", gw.ws), 429);
    assert_eq!(gw.metric("throng_upgrade_rejections_total{reason=\"per_ip_limit\"}"), 1);
    drop(silent);
    let mut admitted = None;
    let wait = Instant::now() + Duration::from_secs(5);
    while admitted.is_none() && Instant::now() < wait {
        let mut stream = tcp(gw.ws);
        if upgrade_status(&mut stream, b"", gw.ws) == 101 {
            admitted = Some(stream);
        }
    }
    assert!(admitted.is_some(), "the slots of the silent sockets were not given back");
}

#[test]
fn behind_a_balancer_the_limit_sees_the_client_address() {
    let gw = Gateway::start(
        None,
        &["--proxy-protocol", "true", "--proxy-trusted", "127.0.0.1", "--max-connections-per-ip", "1"],
    );
    let header = |client: &str| format!("PROXY TCP4 {client} 192.0.2.1 5000 443\r\n").into_bytes();
    let mut first = tcp(gw.ws);
    assert_eq!(upgrade_status(&mut first, &header("198.51.100.1"), gw.ws), 101);
    let mut second = tcp(gw.ws);
    assert_eq!(upgrade_status(&mut second, &header("198.51.100.1"), gw.ws), 429);
    let mut other = tcp(gw.ws);
    assert_eq!(upgrade_status(&mut other, &header("198.51.100.2"), gw.ws), 101);
    // Without a header the balancer itself gets a 400 naming what is missing.
    assert_eq!(upgrade_status(&mut tcp(gw.ws), b"", gw.ws), 400);
}

#[test]
fn proxy_protocol_without_trusted_balancers_refuses_to_start() {
    let out =
        gateway_support::command(&["--proxy-protocol", "true", "--print-config"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("proxy_trusted"), "{out:?}");
}
