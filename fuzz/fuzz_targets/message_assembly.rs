//! Structured frame sequences against a model of RFC 6455's receive rules.
//!
//! The input describes a sequence of messages (text or binary, cut into fragments, with pings and
//! pongs between the fragments), control frames, a close, and stray frames; a few frames are
//! corrupted (reserved bits, reserved opcode, wrong masking, 64-bit length overflow, invalid UTF-8
//! inserted). They are encoded (masked for a server decoder, plain for a client one) and decoded in
//! pieces of random sizes. What the decoder yields must equal what a straightforward model of the
//! rules predicts: the encoded messages reassembled when the sequence is valid, otherwise the
//! outputs up to the first violation and then exactly the `ProtocolError` it calls for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The generator, the model and the check live in the library (`throng_fuzz::assembly`) so
    // that tools can replay inputs outside libFuzzer.
    throng_fuzz::assembly::check(data);
});
