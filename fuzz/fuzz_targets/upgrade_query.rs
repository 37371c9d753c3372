//! The bits of the upgrade query the gateway reads (`throng_gateway::channels`).
//!
//! Input: [max channels] query bytes (lossy UTF-8).
//! - `percent_decode` never panics; it accepts only `%` followed by two hex digits; what it
//!   returns is no longer than its input; it undoes
//!   percent-encoding: encoding any string byte by byte (`%XX` for everything but unreserved
//!   characters, in either case) and decoding gives the string back.
//! - `query_channels(query, max)` agrees with a naive oracle (split the decoded `channels`
//!   value on commas, trim, drop empties, keep first occurrences): the same list when it has at
//!   most `max` entries, an error exactly when it has more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use throng_gateway::channels::{percent_decode, query_channels, query_param};
use throng_fuzz::Bytes;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let max = usize::from(input.byte() % 16);
    let query = String::from_utf8_lossy(input.rest()).into_owned();

    if let Some(decoded) = percent_decode(&query) {
        assert!(decoded.len() <= query.len());
        let b = query.as_bytes();
        let strict = (0..b.len())
            .filter(|&i| b[i] == b'%')
            .all(|i| b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
        // A `%` never sits inside an accepted escape (those are hex digits), so every one of
        // them starts an escape.
        assert!(strict, "accepted a bad escape: {query:?}");
    }
    let mut encoded = String::new();
    for (i, b) in query.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else if i % 2 == 0 {
            encoded.push_str(&format!("%{b:02X}"));
        } else {
            encoded.push_str(&format!("%{b:02x}"));
        }
    }
    assert_eq!(percent_decode(&encoded).as_deref(), Some(query.as_str()), "{encoded}");

    let mut oracle: Vec<String> = Vec::new();
    for name in query_param(&query, "channels").unwrap_or_default().split(',').map(str::trim) {
        if !name.is_empty() && !oracle.iter().any(|n| n == name) {
            oracle.push(name.to_owned());
        }
    }
    match query_channels(&query, max) {
        Ok(list) => assert_eq!(list, oracle),
        Err(_) => assert!(oracle.len() > max, "refused {} names with max {max}", oracle.len()),
    }
});
