//! PROXY protocol from trusted balancers and admission before the upgrade, on real sockets.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{next_event, read_http, tcp_connect, wait_until, TestClient, READ_TIMEOUT};
use throng::net::CidrList;
use throng::{Admission, Event, Rejection};

fn trusted(list: &str) -> CidrList {
    list.parse().unwrap()
}

/// A PROXY v2 header for TCP over IPv6.
fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V6(s), SocketAddr::V6(d)) = (source, destination) else { panic!("IPv6 only") };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

fn open_peer(events: &throng::Events) -> SocketAddr {
    match next_event(events) {
        Event::Open { peer, .. } => peer,
        other => panic!("expected Open, got {other:?}"),
    }
}

#[test]
fn a_trusted_balancer_names_the_client_with_v1_or_v2() {
    let server = support::echo_builder().proxy_protocol(trusted("127.0.0.0/8")).start().unwrap();
    let events = server.events();
    let addr = server.local_addr();
    let mut v1 = TestClient::connect_with(addr, "/", |s, request| {
        s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n")?;
        s.write_all(request)
    });
    assert_eq!(open_peer(&events), "203.0.113.7:51234".parse().unwrap());
    v1.echo("through the balancer");

    let client: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let header = v2_header(client, "[2001:db8::1]:443".parse().unwrap());
    // Cut into single bytes: the header and the request may arrive in any pieces.
    let mut v2 = TestClient::connect_with(addr, "/", |s, request| {
        let all: Vec<u8> = header.iter().chain(request).copied().collect();
        support::write_bytewise(s, &all, Duration::ZERO)
    });
    assert_eq!(open_peer(&events), client);
    v2.echo("v2");
    assert_eq!(server.stats().proxy_headers, 2);
}

#[test]
fn a_trusted_peer_without_a_header_gets_400() {
    let server = support::echo_builder().proxy_protocol(trusted("127.0.0.1")).start().unwrap();
    let (request, _) = support::upgrade_request(server.local_addr(), "/");
    let response = support::raw_http(server.local_addr(), &request);
    assert_eq!(response.status, 400);
    assert!(response.body.contains("expected a PROXY protocol header"), "{response:?}");
    let broken = support::raw_http(server.local_addr(), b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n");
    assert_eq!(broken.status, 400);
    assert!(broken.body.contains("invalid address in PROXY v1 header"), "{broken:?}");
    assert_eq!(server.stats().proxy_errors, 2);
}

#[test]
fn an_untrusted_peer_cannot_claim_an_address() {
    let server = support::echo_builder().proxy_protocol(trusted("10.0.0.0/8")).start().unwrap();
    let events = server.events();
    let mut forged = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n".to_vec();
    forged.extend(support::upgrade_request(server.local_addr(), "/").0);
    assert_eq!(support::raw_http(server.local_addr(), &forged).status, 400);
    // A direct client is itself.
    let mut direct = TestClient::connect(server.local_addr(), "/");
    assert_eq!(open_peer(&events), direct.local_addr());
    direct.echo("direct");
    assert_eq!(server.stats().proxy_headers, 0);
}

/// At most `max` connections per address, handshakes included.
#[derive(Default)]
struct PerIp {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
    released: Mutex<Vec<SocketAddr>>,
}

impl Admission for PerIp {
    fn admit(&self, client: SocketAddr) -> Result<(), Rejection> {
        let mut counts = self.counts.lock().unwrap();
        let n = counts.entry(client.ip()).or_default();
        if *n >= self.max {
            return Err(Rejection::new(429, "too many connections from this address"));
        }
        *n += 1;
        Ok(())
    }

    fn release(&self, client: SocketAddr) {
        *self.counts.lock().unwrap().get_mut(&client.ip()).unwrap() -= 1;
        self.released.lock().unwrap().push(client);
    }
}

#[test]
fn connections_still_in_their_handshake_hold_an_admission_slot() {
    let admission = Arc::new(PerIp { max: 2, ..Default::default() });
    let server = support::echo_builder()
        .handshake_timeout(Duration::from_secs(30))
        .admission(admission.clone())
        .start()
        .unwrap();
    let addr = server.local_addr();
    // Two silent sockets (a slowloris client) take both slots.
    let silent: Vec<_> = (0..2).map(|_| tcp_connect(addr)).collect();
    assert!(wait_until(READ_TIMEOUT, || server.stats().connections == 2));
    let mut third = tcp_connect(addr);
    let refused = read_http(&mut third);
    assert_eq!(refused.status, 429);
    assert!(refused.body.contains("too many connections"), "{refused:?}");
    drop(third); // else the server lingers for its FIN up to the close timeout
    assert_eq!(server.stats().admission_refused, 1);
    // A silent socket that leaves gives its slot back (once); then a client gets in.
    drop(silent);
    assert!(wait_until(READ_TIMEOUT, || admission.released.lock().unwrap().len() == 2));
    let mut client = TestClient::connect(addr, "/");
    client.echo("admitted");
    // An open connection's slot is the application's to release: the engine does not.
    drop(client);
    assert!(wait_until(READ_TIMEOUT, || server.stats().connections == 0));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(admission.released.lock().unwrap().len(), 2);
    assert_eq!(admission.counts.lock().unwrap()[&addr.ip()], 1);
}

#[test]
fn admission_counts_the_address_a_balancer_names() {
    let admission = Arc::new(PerIp { max: 1, ..Default::default() });
    let server = support::echo_builder()
        .proxy_protocol(trusted("127.0.0.1"))
        .admission(admission.clone())
        .start()
        .unwrap();
    let addr = server.local_addr();
    let via = |client: &str| {
        let mut s = tcp_connect(addr);
        s.write_all(format!("PROXY TCP4 {client} 192.0.2.1 5000 443\r\n").as_bytes()).unwrap();
        s
    };
    let _first = via("198.51.100.1");
    assert!(wait_until(READ_TIMEOUT, || admission
        .counts
        .lock()
        .unwrap()
        .get(&"198.51.100.1".parse().unwrap())
        == Some(&1)));
    let mut second = via("198.51.100.1");
    assert_eq!(read_http(&mut second).status, 429);
    // Another client behind the same balancer is not affected.
    let mut other = via("198.51.100.2");
    let (request, _) = support::upgrade_request(addr, "/");
    other.write_all(&request).unwrap();
    let mut head = [0u8; 12];
    other.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}
