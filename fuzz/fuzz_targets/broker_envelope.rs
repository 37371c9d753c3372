//! The broker's envelope around a message on a Redis channel
//! (`throng_gateway::broker::envelope`), which anyone who can `PUBLISH` to Redis writes.
//!
//! Input: the bytes of a Redis message.
//! - `decode` never panics;
//! - without the magic bytes the payload is the whole input, text exactly when it is UTF-8;
//! - with them, an accepted message has the 12-byte header, its payload is the rest, a text
//!   payload is UTF-8, and `encode` of what was decoded gives the input back byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use throng_gateway::broker::envelope::{decode, encode, HEADER_LEN};
use throng::proto::OpCode;
use throng::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = decode(data) else {
        assert!(data.starts_with(&[0x00, b'T']), "only enveloped input can be malformed");
        return;
    };
    let Some(node) = d.node else {
        assert_eq!(d.payload, data);
        assert_eq!(d.opcode == OpCode::Text, std::str::from_utf8(data).is_ok());
        return;
    };
    assert!(data.len() >= HEADER_LEN);
    assert_eq!(d.payload, &data[HEADER_LEN..]);
    let message = match d.opcode {
        OpCode::Text => Message::Text(std::str::from_utf8(d.payload).expect("text is UTF-8").to_owned()),
        _ => Message::Binary(d.payload.to_vec()),
    };
    assert_eq!(encode(node, &message), data);
});
