//! The PROXY protocol header parser (`proto::proxy::parse`) on arbitrary bytes, and on headers
//! built from the input's first bytes.
//!
//! Raw input:
//! - Complete: `0 < len <= input.len()` and `len <= MAX_LEN` (v1: `<= V1_MAX_LEN`, ends with
//!   CRLF); `input[..len]` alone parses the same; every shorter prefix of it is `Partial`.
//! - Partial: the input is shorter than `MAX_LEN` (v1: `V1_MAX_LEN`), and its prefixes are
//!   `Partial` too.
//! - Error: every prefix is `Partial` or the same error (the answer does not depend on how the
//!   bytes were cut into reads).
//! - `is_proxy_prefix(input)` is true exactly when the answer is not `NotProxy`.
//!
//! Built input (when there are at least 19 bytes): byte 0 picks IPv4 or IPv6, the next 16 the
//! address, the next 2 the port; a v1 line and a v2 header (with the rest of the input as one TLV)
//! for that source both parse as `Complete` with exactly that source.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use throng::proto::proxy::{is_proxy_prefix, parse, ProxyError, Status, MAX_LEN, V1_MAX_LEN};
use throng_fuzz::{clipped, prefixes, Short};

fn check_raw(data: &[u8]) {
    let result = parse(data);
    assert_eq!(
        is_proxy_prefix(data),
        result != Err(ProxyError::NotProxy),
        "is_proxy_prefix disagrees with {result:?} on {:?}",
        Short(data)
    );
    let v1 = data.first() == Some(&b'P');
    let cap = if v1 { V1_MAX_LEN } else { MAX_LEN };
    match result {
        Ok(Status::Complete { len, source }) => {
            assert!(len > 0 && len <= data.len() && len <= cap, "len {len} of {} bytes", data.len());
            if v1 {
                assert!(data[..len].ends_with(b"\r\n"), "v1 header does not end with CRLF");
            }
            assert_eq!(parse(&data[..len]), result, "the header alone parses differently");
            for cut in prefixes(data, len) {
                let r = parse(&data[..cut]);
                assert_eq!(r, Ok(Status::Partial), "prefix {cut} of a {len}-byte header ({source:?})");
            }
        }
        Ok(Status::Partial) => {
            assert!(data.len() < cap, "Partial with {} bytes", data.len());
            for cut in prefixes(data, data.len()) {
                let r = parse(&data[..cut]);
                assert_eq!(r, Ok(Status::Partial), "prefix {cut} of a partial header: {}", clipped(&r));
            }
        }
        Err(e) => {
            assert!(!e.reason().is_empty());
            for cut in prefixes(data, data.len()) {
                match parse(&data[..cut]) {
                    Ok(Status::Partial) => {}
                    Err(p) => assert_eq!(p, e, "prefix {cut} fails differently from the whole"),
                    Ok(c) => panic!("prefix {cut} is {c:?} but the whole fails with {e:?}"),
                }
            }
        }
    }
}

/// Headers built for a source taken from the input must give back exactly that source.
fn check_built(data: &[u8]) {
    let (Some(&pick), Some(ip), Some(port), Some(tlv)) =
        (data.first(), data.get(1..17), data.get(17..19), data.get(19..))
    else {
        return;
    };
    let ip16: [u8; 16] = ip.try_into().unwrap();
    let ip = if pick & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(ip16[0], ip16[1], ip16[2], ip16[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(ip16))
    };
    let source = SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]]));
    let dest: SocketAddr = match ip {
        IpAddr::V4(_) => "192.0.2.1:443".parse().unwrap(),
        IpAddr::V6(_) => "[2001:db8::1]:443".parse().unwrap(),
    };

    let family = if ip.is_ipv4() { "TCP4" } else { "TCP6" };
    let line = format!("PROXY {family} {} {} {} {}\r\n", source.ip(), dest.ip(), source.port(), dest.port());
    let mut wire = line.clone().into_bytes();
    wire.extend_from_slice(tlv);
    let want = Ok(Status::Complete { len: line.len(), source: Some(source) });
    assert_eq!(parse(&wire), want, "v1 line {line:?}");

    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21".to_vec();
    let mut block = Vec::new();
    match (source.ip(), dest.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            header.push(0x11);
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            header.push(0x21);
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&dest.port().to_be_bytes());
    let value = &tlv[..tlv.len().min(400)];
    block.push(0xE0);
    block.extend_from_slice(&(value.len() as u16).to_be_bytes());
    block.extend_from_slice(value);
    header.extend_from_slice(&(block.len() as u16).to_be_bytes());
    header.extend_from_slice(&block);
    let len = header.len();
    header.extend_from_slice(tlv);
    assert_eq!(parse(&header), Ok(Status::Complete { len, source: Some(source) }), "v2 header");
}

fuzz_target!(|data: &[u8]| {
    check_raw(data);
    check_built(data);
});
