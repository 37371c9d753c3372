//! permessage-deflate on arbitrary bytes: the server's choice among offers, the client's check of
//! an answer, and inflating a peer's compressed message.
//!
//! - No panic.
//! - Negotiation: whatever `accept_offers` accepts has windows of 8–15 bits, `shared` mode always
//!   both no-context-takeover flags, and its answer header is one the client's check accepts
//!   with the same parameters.
//! - Inflate: the output never exceeds the limit (plus nothing: an error instead), text that
//!   comes out is UTF-8, and the inflater works again after any error (a round trip of the
//!   input itself, compressed and inflated, gives the input back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use throng::proto::deflate::{accept_offers, accept_response, Compression, DeflateConfig, Deflater, Inflater};
use throng::proto::{DataKind, ProtocolError};

const LIMIT: u64 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    if selector & 1 == 0 {
        let Ok(header) = std::str::from_utf8(rest) else { return };
        let offers: Vec<&str> = header.split(',').map(str::trim).collect();
        for mode in [Compression::Shared, Compression::Dedicated] {
            let config = DeflateConfig { client_max_window_bits: 9 + selector % 7, ..DeflateConfig::new(mode) };
            let Some((params, answer)) = accept_offers(offers.iter().copied(), &config) else { continue };
            assert!((8..=15).contains(&params.server_max_window_bits), "{params:?}");
            assert!((8..=15).contains(&params.client_max_window_bits), "{params:?}");
            if mode == Compression::Shared {
                assert!(params.server_no_context_takeover && params.client_no_context_takeover);
            }
            assert_eq!(accept_response([answer.as_str()]), Ok(Some(params)), "answer {answer:?}");
        }
        let _ = accept_response(offers.iter().copied());
        return;
    }
    let kind = if selector & 2 == 0 { DataKind::Binary } else { DataKind::Text };
    let mut inflater = Inflater::new(8 + selector % 8);
    let mut out = Vec::new();
    match inflater.inflate(rest, kind, LIMIT, &mut out, selector & 4 == 0) {
        Ok(()) => {
            assert!(out.len() as u64 <= LIMIT, "{} bytes past the limit", out.len());
            if kind == DataKind::Text {
                assert!(std::str::from_utf8(&out).is_ok(), "inflated text is not UTF-8");
            }
        }
        Err(e) => assert!(
            matches!(e, ProtocolError::MessageTooLarge | ProtocolError::InvalidCompressedData | ProtocolError::InvalidUtf8),
            "{e:?}"
        ),
    }
    let mut fresh = Inflater::new(15);
    let mut wire = Vec::new();
    Deflater::new(selector % 10, 8 + (selector >> 4) % 8).compress(rest, &mut wire, true);
    out.clear();
    fresh.inflate(&wire, DataKind::Binary, u64::MAX, &mut out, true).expect("our own output inflates");
    assert_eq!(out, rest, "round trip");
});
