//! The admin API's HTTP/1.1 request reader (`read_request`, keep-alive and pipelining included)
//! on arbitrary bytes. The first byte picks a piece size (1..=64); the rest is the stream, read
//! whole and then in pieces of that size, as a socket might hand it over.
//!
//! - both reads give the same requests and end the same way (the head and body limits do not
//!   depend on how the bytes arrive);
//! - a refusal is 400, 413, 431 or 501;
//! - no body is over 1 MiB, paths start with `/` or are `*`/absolute targets as httparse gives
//!   them, no method, path or query holds CR, LF or NUL;
//! - the requests read never hold more body bytes than the input had.
#![no_main]

use libfuzzer_sys::fuzz_target;
use throng_gateway::fuzzing::admin_read_all;

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else { return };
    let chunk = 1 + usize::from(first % 64);
    let whole = admin_read_all(stream, stream.len().max(1));
    let pieces = admin_read_all(stream, chunk);
    assert_eq!(whole, pieces, "read whole vs in pieces of {chunk}");
    if let Some(status) = whole.refused {
        assert!(matches!(status, 400 | 413 | 431 | 501), "refused with {status}");
    }
    let mut body_bytes = 0;
    for (method, path, query, body) in &whole.requests {
        assert!(*body <= 1 << 20, "body of {body} bytes");
        body_bytes += body;
        for part in [method.as_str(), path.as_str(), query.as_deref().unwrap_or("")] {
            assert!(!part.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{part:?}");
        }
        assert!(!method.is_empty());
    }
    assert!(body_bytes <= stream.len());
});
