use super::*;
use crate::proto::handshake::HandshakeError;
use crate::proto::{DataKind, ProtocolError};

fn shared() -> DeflateConfig {
    DeflateConfig::new(Compression::Shared)
}

fn dedicated() -> DeflateConfig {
    DeflateConfig::new(Compression::Dedicated)
}

#[test]
fn off_declines_everything() {
    assert_eq!(accept_offers(["permessage-deflate"], &DeflateConfig::default()), None);
}

#[test]
fn shared_mode_asks_both_sides_for_no_context_takeover() {
    let (params, header) = accept_offers(["permessage-deflate"], &shared()).unwrap();
    assert_eq!(header, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    assert!(params.server_no_context_takeover && params.client_no_context_takeover);
    assert_eq!((params.server_max_window_bits, params.client_max_window_bits), (15, 15));
}

#[test]
fn a_requested_server_window_is_answered_and_kept() {
    let (params, header) =
        accept_offers(["permessage-deflate; server_max_window_bits=10"], &shared()).unwrap();
    assert_eq!(params.server_max_window_bits, 10);
    assert!(header.ends_with("; server_max_window_bits=10"), "{header}");
    let (params, _) = accept_offers(["permessage-deflate; server_max_window_bits=\"8\""], &shared()).unwrap();
    assert_eq!(params.server_max_window_bits, 8);
}

#[test]
fn dedicated_mode_keeps_what_the_client_offered_and_caps_windows() {
    let (params, header) =
        accept_offers(["permessage-deflate; client_max_window_bits"], &dedicated()).unwrap();
    assert_eq!(params, Params::default());
    assert_eq!(header, "permessage-deflate");
    let config = DeflateConfig { server_max_window_bits: 11, client_max_window_bits: 12, ..dedicated() };
    let (params, header) = accept_offers(
        ["permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=13"],
        &config,
    )
    .unwrap();
    assert_eq!(
        params,
        Params {
            server_no_context_takeover: false,
            client_no_context_takeover: true,
            server_max_window_bits: 11,
            client_max_window_bits: 12,
        }
    );
    assert_eq!(
        header,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=12"
    );
    // Without client_max_window_bits in the offer the client cannot be limited.
    let (params, header) = accept_offers(["permessage-deflate"], &config).unwrap();
    assert_eq!(params.client_max_window_bits, 15);
    assert!(!header.contains("client_max_window_bits"), "{header}");
}

#[test]
fn bad_offers_are_declined_and_the_next_one_is_taken() {
    for bad in [
        "permessage-deflate; foo",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=x",
        "permessage-deflate; client_max_window_bits=9; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=\"1\"0\"",
    ] {
        assert_eq!(accept_offers([bad], &shared()), None, "{bad}");
        let (params, _) = accept_offers(
            [bad, "x-webkit-deflate-frame", "permessage-deflate; server_max_window_bits=12"],
            &shared(),
        )
        .unwrap_or_else(|| panic!("the offer after {bad} is taken"));
        assert_eq!(params.server_max_window_bits, 12);
    }
}

#[test]
fn the_client_checks_the_answer() {
    assert_eq!(accept_response([]), Ok(None));
    let params =
        accept_response(["permessage-deflate; server_no_context_takeover; client_max_window_bits=9"])
            .unwrap()
            .unwrap();
    assert!(params.server_no_context_takeover && !params.client_no_context_takeover);
    assert_eq!(params.client_max_window_bits, 9);
    assert_eq!(accept_response(["x-other"]), Err(HandshakeError::UnexpectedExtension));
    for bad in [
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=20",
        "permessage-deflate; bogus",
    ] {
        assert_eq!(accept_response([bad]), Err(HandshakeError::InvalidExtensionResponse), "{bad}");
    }
    assert_eq!(
        accept_response(["permessage-deflate", "permessage-deflate"]),
        Err(HandshakeError::InvalidExtensionResponse)
    );
}

fn round_trip(deflater: &mut Deflater, inflater: &mut Inflater, message: &[u8], reset: bool) {
    let mut wire = Vec::new();
    deflater.compress(message, &mut wire, reset);
    assert!(!wire.ends_with(&[0, 0, 0xff, 0xff]));
    let mut out = Vec::new();
    inflater.inflate(&wire, DataKind::Binary, 1 << 20, &mut out, reset).unwrap();
    assert_eq!(out, message);
}

#[test]
fn messages_round_trip_with_and_without_context() {
    let json =
        br#"{"channel":"news","data":{"id":12345,"title":"hello world","tags":["a","b","c"]}}"#.repeat(20);
    for bits in 8..=15 {
        for reset in [true, false] {
            let (mut d, mut i) = (Deflater::new(6, bits), Inflater::new(bits));
            for _ in 0..3 {
                round_trip(&mut d, &mut i, &json, reset);
                round_trip(&mut d, &mut i, b"", reset);
                round_trip(&mut d, &mut i, &fastrand_bytes(70_000), reset);
            }
        }
    }
}

#[test]
fn context_takeover_makes_a_repeated_message_smaller() {
    let json = br#"{"channel":"news","data":{"id":12345,"title":"hello world"}}"#;
    let mut d = Deflater::new(6, 15);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    d.compress(json, &mut first, false);
    d.compress(json, &mut second, false);
    assert!(second.len() < first.len() / 2, "{} then {}", first.len(), second.len());
}

fn fastrand_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::u8(..)).collect()
}

#[test]
fn a_bomb_stops_at_the_limit() {
    let mut d = Deflater::new(9, 15);
    let mut bomb = Vec::new();
    d.compress(&vec![0u8; 8 << 20], &mut bomb, true);
    assert!(bomb.len() < 16 << 10, "8 MiB of zeros compress to {} bytes", bomb.len());
    let mut i = Inflater::new(15);
    let mut out = Vec::new();
    assert_eq!(
        i.inflate(&bomb, DataKind::Binary, 1 << 20, &mut out, true),
        Err(ProtocolError::MessageTooLarge)
    );
    assert!(out.len() <= (1 << 20) + (16 << 10), "inflated {} bytes before stopping", out.len());
    // Exactly at the limit is fine.
    let mut exact = Vec::new();
    d.compress(&vec![7u8; 1000], &mut exact, true);
    out.clear();
    i.inflate(&exact, DataKind::Binary, 1000, &mut out, true).unwrap();
    assert_eq!(out.len(), 1000);
    out.clear();
    assert_eq!(i.inflate(&exact, DataKind::Binary, 999, &mut out, true), Err(ProtocolError::MessageTooLarge));
}

#[test]
fn garbage_and_bad_text_are_refused_with_their_codes() {
    let mut i = Inflater::new(15);
    let mut out = Vec::new();
    let err = i.inflate(&[0xff, 0xff, 0xff, 0xff], DataKind::Binary, 1 << 20, &mut out, true).unwrap_err();
    assert_eq!(err, ProtocolError::InvalidCompressedData);
    assert_eq!(err.close_code().0, 1007);
    let mut d = Deflater::new(6, 15);
    let mut wire = Vec::new();
    d.compress(&[0xc3, 0x28], &mut wire, true);
    out.clear();
    assert_eq!(i.inflate(&wire, DataKind::Text, 1 << 20, &mut out, true), Err(ProtocolError::InvalidUtf8));
    // The inflater is usable again after an error.
    round_trip(&mut d, &mut i, b"fine again", true);
}
