//! Encode/decode round trips of frame headers and whole frames.
//!
//! - Raw input as a header: if `FrameHeader::decode` finds one, every shorter prefix is
//!   "incomplete" (never an error), re-encoding gives a header no longer than the input's (the
//!   byte-identical one when the input used the shortest length form) which decodes back equal.
//! - A structured header (fin, rsv, opcode, mask, length < 2^63): `encode` uses the shortest length
//!   form, `encoded_len` agrees, decode gives it back, every prefix is incomplete.
//! - A structured frame (fin, valid opcode, mask or not, payload): `encode_frame` then a decoder of
//!   the matching role (server for masked) gives back the header and payload, or exactly the error
//!   RFC 6455 requires (long or fragmented control frame, bad close payload, invalid UTF-8).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use throng::proto::close::parse_close_payload;
use throng::proto::frame::{encode_frame, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use throng::proto::mask::apply_mask_naive;
use throng::proto::{DataKind, Decoder, FrameHeader, Item, Limits, OpCode, ProtocolError, Role};
use throng_fuzz::clipped;

const OPCODES: [OpCode; 6] =
    [OpCode::Continuation, OpCode::Text, OpCode::Binary, OpCode::Close, OpCode::Ping, OpCode::Pong];

fn raw_header(data: &[u8]) {
    match FrameHeader::decode(data) {
        Ok(None) => assert!(data.len() < MAX_HEADER_LEN, "a {}-byte buffer is not a header", data.len()),
        Ok(Some((header, n))) => {
            assert!((2..=MAX_HEADER_LEN).contains(&n) && n <= data.len());
            assert!(header.rsv < 8 && header.payload_len >> 63 == 0);
            for cut in 0..n {
                assert_eq!(FrameHeader::decode(&data[..cut]), Ok(None), "prefix {cut} of {n}");
            }
            let mut out = [0u8; MAX_HEADER_LEN];
            let m = header.encode(&mut out);
            assert_eq!(m, header.encoded_len());
            assert!(m <= n, "re-encoded header longer ({m}) than the input's ({n})");
            if m == n {
                assert_eq!(out[..m], data[..n]);
            }
            assert_eq!(FrameHeader::decode(&out[..m]), Ok(Some((header, m))));
        }
        Err(e) => {
            for cut in 0..data.len().min(MAX_HEADER_LEN) {
                let r = FrameHeader::decode(&data[..cut]);
                assert!(r == Ok(None) || r == Err(e), "prefix {cut}: {r:?} but whole: {e:?}");
            }
        }
    }
}

fn structured_header(u: &mut Unstructured<'_>) -> Result<()> {
    let payload_len = match u.int_in_range(0..=3)? {
        0 => u.int_in_range(0..=130)?,
        1 => u.int_in_range(0xfff0..=0x1_0010)?,
        _ => u.arbitrary::<u64>()? >> 1,
    };
    let header = FrameHeader {
        fin: u.arbitrary()?,
        rsv: u.int_in_range(0..=7)?,
        opcode: *u.choose(&OPCODES)?,
        mask: u.arbitrary()?,
        payload_len,
    };
    let mut out = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut out);
    assert_eq!(n, header.encoded_len());
    let length_form = match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    assert_eq!(n, length_form + if header.mask.is_some() { 4 } else { 0 }, "not the shortest form");
    assert_eq!(FrameHeader::decode(&out[..n]), Ok(Some((header, n))));
    for cut in 0..n {
        assert_eq!(FrameHeader::decode(&out[..cut]), Ok(None), "prefix {cut} of {n}");
    }
    Ok(())
}

fn structured_frame(u: &mut Unstructured<'_>) -> Result<()> {
    let fin: bool = u.arbitrary()?;
    let opcode = *u.choose(&OPCODES)?;
    let mask: Option<[u8; 4]> = u.arbitrary()?;
    let start_kind = if u.arbitrary()? { DataKind::Text } else { DataKind::Binary };
    let payload = u.bytes(u.len())?;
    let role = if mask.is_some() { Role::Server } else { Role::Client };

    let mut wire = Vec::new();
    encode_frame(&mut wire, fin, opcode, mask, payload);
    let Ok(Some((header, header_len))) = FrameHeader::decode(&wire) else {
        panic!("encode_frame wrote no header: {wire:?}");
    };
    let expected = FrameHeader { fin, rsv: 0, opcode, mask, payload_len: payload.len() as u64 };
    assert_eq!(header, expected);
    assert_eq!(header_len + payload.len(), wire.len());
    let mut body = wire[header_len..].to_vec();
    if let Some(key) = mask {
        apply_mask_naive(&mut body, key, 0);
    }
    assert_eq!(body, payload, "payload not masked with the key");

    let limits = Limits::default();
    let mut decoder = Decoder::new(role);
    if opcode == OpCode::Continuation {
        // Start a message first, with an empty non-final frame.
        let start = if start_kind == DataKind::Text { OpCode::Text } else { OpCode::Binary };
        let mut first = Vec::new();
        encode_frame(&mut first, false, start, mask, b"");
        let len = first.len();
        let item = decoder.decode(&mut first, &limits);
        let want = Item::Data { kind: start_kind, chunk: &[][..], first: true, last: false };
        assert_eq!(item, Ok((len, Some(want))));
    }

    let kind = match opcode {
        OpCode::Text => DataKind::Text,
        OpCode::Binary => DataKind::Binary,
        _ => start_kind,
    };
    let want: std::result::Result<Item<'_>, ProtocolError> = if opcode.is_control() {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            Err(ProtocolError::ControlFrameTooLong)
        } else if !fin {
            Err(ProtocolError::FragmentedControlFrame)
        } else {
            match opcode {
                OpCode::Ping => Ok(Item::Ping(payload)),
                OpCode::Pong => Ok(Item::Pong(payload)),
                _ => parse_close_payload(payload).map(|parsed| match parsed {
                    Some((code, reason)) => Item::Close { code: Some(code), reason },
                    None => Item::Close { code: None, reason: "" },
                }),
            }
        }
    } else {
        let utf8_ok = match std::str::from_utf8(payload) {
            Ok(_) => true,
            // A non-final frame may end inside a code point.
            Err(e) => !fin && e.error_len().is_none(),
        };
        if kind == DataKind::Text && !utf8_ok {
            Err(ProtocolError::InvalidUtf8)
        } else {
            let first = opcode != OpCode::Continuation;
            Ok(Item::Data { kind, chunk: payload, first, last: fin })
        }
    };
    let len = wire.len();
    let got = decoder.decode(&mut wire, &limits);
    let want = want.map(|item| (len, Some(item)));
    assert!(got == want, "{expected:?}: decoded {}, want {}", clipped(&got), clipped(&want));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    raw_header(data);
    let mut u = Unstructured::new(data);
    let _ = structured_header(&mut u);
    let _ = structured_frame(&mut u);
});
