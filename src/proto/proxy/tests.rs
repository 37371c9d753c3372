use super::*;

use ProxyError::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A v2 header: signature, `ver_cmd`, `family`, the length of `block`, `block`.
fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(family);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// The address block of TCP over IPv4 or IPv6 (source, destination, ports).
fn tcp_block(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// `header` is complete with `source`, every shorter prefix is `Partial`, and bytes after it are
/// not looked at.
fn complete(header: &[u8], source: Option<SocketAddr>) {
    let want = Ok(Status::Complete { len: header.len(), source });
    assert_eq!(parse(header), want, "{:?}", header.escape_ascii().to_string());
    for cut in 0..header.len() {
        assert_eq!(
            parse(&header[..cut]),
            Ok(Status::Partial),
            "prefix {cut} of {:?}",
            header.escape_ascii().to_string()
        );
        assert!(is_proxy_prefix(&header[..cut]));
    }
    let mut more = header.to_vec();
    more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(parse(&more), want);
    more.truncate(header.len());
    more.extend_from_slice(&[0xFF; 600]);
    assert_eq!(parse(&more), want);
}

/// `input` fails with `err`, and every prefix is `Partial` or fails with the same error.
fn fails(input: &[u8], err: ProxyError) {
    assert_eq!(parse(input), Err(err), "{:?}", input.escape_ascii().to_string());
    for cut in 0..input.len() {
        match parse(&input[..cut]) {
            Ok(Status::Partial) => {}
            Err(e) => assert_eq!(e, err, "prefix {cut} of {:?}", input.escape_ascii().to_string()),
            Ok(c) => panic!("prefix {cut} of {:?} is {c:?}", input.escape_ascii().to_string()),
        }
    }
}

#[test]
fn v1_tcp4_and_tcp6() {
    complete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", Some(addr("192.168.0.1:56324")));
    complete(
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        Some(addr("255.255.255.255:65535")),
    );
    complete(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", Some(addr("0.0.0.0:0")));
    complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n", Some(addr("[2001:db8::1]:1234")));
    complete(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 80 81\r\n", Some(addr("[::ffff:192.0.2.1]:80")));
    let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), 104);
    complete(longest, Some(addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")));
}

#[test]
fn v1_unknown() {
    complete(b"PROXY UNKNOWN\r\n", None);
    complete(b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", None);
    complete(b"PROXY UNKNOWN anything \x01 at all\r\n", None);
    let worst = format!("PROXY UNKNOWN {0} {0} 65535 65535\r\n", "ffff:".repeat(7) + "ffff");
    assert_eq!(worst.len(), V1_MAX_LEN);
    complete(worst.as_bytes(), None);
}

#[test]
fn v1_limits() {
    // 107 bytes without the CRLF in them: too long, whatever follows.
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX_LEN, b'x');
    assert_eq!(parse(&long[..V1_MAX_LEN - 1]), Ok(Status::Partial));
    fails(&long, V1TooLong);
    long.extend_from_slice(b"\r\n");
    fails(&long, V1TooLong);
    // CR at 106 and LF at 107: one byte over.
    let mut over = b"PROXY UNKNOWN ".to_vec();
    over.resize(V1_MAX_LEN - 1, b'x');
    over.extend_from_slice(b"\r\n");
    fails(&over, V1TooLong);
}

#[test]
fn v1_malformed() {
    fails(b"GET / HTTP/1.1\r\n", NotProxy);
    fails(b"PROXX TCP4", NotProxy);
    fails(b"proxy TCP4", NotProxy);
    fails(b"PROXYTCP4 1.2.3.4", V1Syntax);
    fails(b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax);
    fails(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol);
    fails(b"PROXY TCPX", V1Protocol);
    fails(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol);
    fails(b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", V1Protocol);
    fails(b"PROXY UNKNOWNX\r\n", V1Protocol);
    fails(b"PROXY TCP4\r\n", V1Syntax);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1Syntax);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", V1Syntax);
    fails(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1Syntax);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1Syntax);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", V1Syntax);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", V1Syntax);
    fails(b"PROXY UNKNOWN\n", V1Syntax);
    fails(b"PROXY UNKNOWN\rX", V1Syntax);
    fails(b"PROXY UNKNOWN stuff\n", V1Syntax);
    fails(b"PROXY UNKNOWN stuff\rX", V1Syntax);
    fails(b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V1Address);
    fails(b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", V1Address);
    fails(b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", V1Address);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n", V1Address);
    fails(b"PROXY TCP4 1111.2222.3333.4444 5.6.7.8 1 2\r\n", V1Address);
    fails(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", V1Address);
    fails(b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", V1Address);
    fails(b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", V1Address);
    fails(b"PROXY TCP6 ::1::2 ::1 1 2\r\n", V1Address);
    fails(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", V1Address);
    fails(format!("PROXY TCP6 {} ::1 1 2\r\n", "0:".repeat(20)).as_bytes(), V1Address);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", V1Port);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", V1Port);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", V1Port);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", V1Port);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", V1Port);
    fails(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", V1Port);
}

#[test]
fn v2_proxy_tcp() {
    let (src, dst) = (addr("203.0.113.7:51234"), addr("192.0.2.1:443"));
    complete(&v2(0x21, 0x11, &tcp_block(src, dst)), Some(src));
    let (src, dst) = (addr("[2001:db8::7]:51234"), addr("[2001:db8::1]:443"));
    complete(&v2(0x21, 0x21, &tcp_block(src, dst)), Some(src));
}

#[test]
fn v2_tlvs_are_skipped() {
    let src = addr("203.0.113.7:1");
    let mut block = tcp_block(src, addr("192.0.2.1:2"));
    block.extend_from_slice(&[0x04, 0, 0]); // NOOP, empty
    block.extend_from_slice(&[0xEA, 0, 5, b'v', b'p', b'c', b'e', b'1']); // a cloud endpoint id
    block.extend_from_slice(&[0x03, 0, 4, 1, 2, 3, 4]); // CRC32C, not verified
    complete(&v2(0x21, 0x11, &block), Some(src));

    // Bytes that do not make whole TLVs.
    for tail in [&[0x04][..], &[0x04, 0], &[0x04, 0, 1], &[0x04, 0, 0, 0x01, 0, 2, 9]] {
        let mut bad = tcp_block(src, addr("192.0.2.1:2"));
        bad.extend_from_slice(tail);
        fails(&v2(0x21, 0x11, &bad), V2Tlv);
    }
}

#[test]
fn v2_local_and_unspec() {
    // LOCAL: no addresses, or any block (skipped, even with a family byte that PROXY may not use).
    complete(&v2(0x20, 0x00, &[]), None);
    complete(&v2(0x20, 0x11, &tcp_block(addr("1.2.3.4:5"), addr("6.7.8.9:10"))), None);
    complete(&v2(0x20, 0xFF, &[1, 2, 3]), None);
    // PROXY with UNSPEC, UDP or UNIX: the spec's fallback to UNSPEC.
    complete(&v2(0x21, 0x00, &[]), None);
    complete(&v2(0x21, 0x00, &[9; 12]), None);
    complete(&v2(0x21, 0x12, &tcp_block(addr("1.2.3.4:5"), addr("6.7.8.9:10"))), None);
    complete(&v2(0x21, 0x22, &[0; 36]), None);
    complete(&v2(0x21, 0x31, &[0; 216]), None);
    complete(&v2(0x21, 0x32, &[0; 216]), None);
}

#[test]
fn v2_length_cap() {
    let mut block = tcp_block(addr("1.2.3.4:5"), addr("6.7.8.9:10"));
    let tlv_len = V2_MAX_BLOCK_LEN - block.len() - 3;
    block.push(0x04);
    block.extend_from_slice(&(tlv_len as u16).to_be_bytes());
    block.resize(V2_MAX_BLOCK_LEN, 0);
    assert_eq!(V2_FIXED_LEN + V2_MAX_BLOCK_LEN, V2_MAX_LEN);
    complete(&v2(0x21, 0x11, &block), Some(addr("1.2.3.4:5")));
    // One byte over is refused as soon as the length field is there.
    let mut over = v2(0x21, 0x11, &[]);
    over[14..16].copy_from_slice(&(V2_MAX_BLOCK_LEN as u16 + 1).to_be_bytes());
    fails(&over, V2TooLong);
    over[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    fails(&over, V2TooLong);
    let mut local = v2(0x20, 0x00, &[]);
    local[14..16].copy_from_slice(&(V2_MAX_BLOCK_LEN as u16 + 1).to_be_bytes());
    fails(&local, V2TooLong);
}

#[test]
fn v2_malformed() {
    fails(b"\r\n\r\n\0\r\nQUIX\n", NotProxy);
    fails(b"\r\nGET", NotProxy);
    fails(&v2(0x11, 0x11, &[0; 12]), V2Version);
    fails(&v2(0x31, 0x11, &[0; 12]), V2Version);
    fails(&v2(0x22, 0x11, &[0; 12]), V2Command);
    fails(&v2(0x2F, 0x11, &[0; 12]), V2Command);
    fails(&v2(0x21, 0x41, &[0; 12]), V2Family);
    fails(&v2(0x21, 0x13, &[0; 12]), V2Family);
    fails(&v2(0x21, 0x11, &[0; 11]), V2AddressTruncated);
    fails(&v2(0x21, 0x21, &[0; 12]), V2AddressTruncated);
    fails(&v2(0x21, 0x21, &[]), V2AddressTruncated);
}

#[test]
fn v2_needs_the_whole_block() {
    let header = v2(0x21, 0x11, &tcp_block(addr("1.2.3.4:5"), addr("6.7.8.9:10")));
    assert_eq!(parse(&header[..16]), Ok(Status::Partial));
    assert_eq!(parse(&header[..27]), Ok(Status::Partial));
}

#[test]
fn prefix_detection() {
    assert!(is_proxy_prefix(b""));
    assert!(is_proxy_prefix(b"PRO"));
    assert!(is_proxy_prefix(b"PROXY TCP4"));
    assert!(is_proxy_prefix(b"PROXYZ"));
    assert!(is_proxy_prefix(b"\r\n\r\n\0"));
    assert!(is_proxy_prefix(&v2(0x21, 0x11, &[])));
    assert!(!is_proxy_prefix(b"GET / HTTP/1.1"));
    assert!(!is_proxy_prefix(b"PRX"));
    assert!(!is_proxy_prefix(b"\r\n\r\n\x01"));
    assert!(!is_proxy_prefix(b"\r\n\r\n\0\r\nQUIX\n"));
}

#[test]
fn reasons_are_short_and_distinct() {
    let all = [
        NotProxy,
        V1TooLong,
        V1Syntax,
        V1Protocol,
        V1Address,
        V1Port,
        V2Version,
        V2Command,
        V2Family,
        V2TooLong,
        V2AddressTruncated,
        V2Tlv,
    ];
    let mut seen = std::collections::HashSet::new();
    for e in all {
        assert!(seen.insert(e.reason()), "{e:?} shares its reason");
        assert!(!e.reason().is_empty() && e.reason().len() < 64);
        assert_eq!(e.to_string(), e.reason());
    }
    assert!(V2TooLong.reason().contains(&V2_MAX_LEN.to_string()));
    assert!(V1TooLong.reason().contains(&V1_MAX_LEN.to_string()));
}

/// Every input up to a few bytes, and every mutation of one byte of valid headers: no panic, and
/// `Complete` only within the input.
#[test]
fn no_panic_on_mutations() {
    let headers = [
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2(0x21, 0x11, &tcp_block(addr("1.2.3.4:5"), addr("6.7.8.9:10"))),
        v2(0x21, 0x21, &tcp_block(addr("[::1]:5"), addr("[::2]:10"))),
        v2(0x20, 0x00, &[]),
    ];
    for header in &headers {
        for at in 0..header.len() {
            for b in 0..=255u8 {
                let mut m = header.clone();
                m[at] = b;
                if let Ok(Status::Complete { len, .. }) = parse(&m) {
                    assert!(len <= m.len());
                }
                let _ = is_proxy_prefix(&m);
            }
        }
    }
}
