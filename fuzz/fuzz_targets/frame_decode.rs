//! Raw bytes into a server decoder, fed whole, in pieces of sizes chosen by the input, and one
//! byte at a time. The three runs must agree (same messages, control frames, close, or the same
//! first error), and the receive loop's invariants hold in each (see `throng_fuzz::run`): kept
//! bytes never exceed 14 + 125, text messages are UTF-8, messages fit `max_message_size`.
//!
//! Input: [max_frame_size / 16 - 1] [max_message_size / 16 - 1] [rsv: bit 7 set allows the RSV
//! bits 0-2] [piece count, mod 8] [piece size - 1, one byte each] wire...
#![no_main]

use libfuzzer_sys::fuzz_target;
use throng::proto::{Limits, Role};
use throng_fuzz::{assert_same, run, Bytes};

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let max_frame_size = 16 * (u64::from(input.byte()) + 1);
    let max_message_size = 16 * (u64::from(input.byte()) + 1);
    let rsv = input.byte();
    let allowed_rsv = if rsv & 0x80 != 0 { rsv & 0x7 } else { 0 };
    let limits = Limits { max_frame_size, max_message_size, allowed_rsv };
    let pieces = input.piece_sizes();
    let wire = input.rest();

    let whole = run(wire, &[usize::MAX], Role::Server, &limits);
    let in_pieces = run(wire, &pieces, Role::Server, &limits);
    assert_same(&whole, &in_pieces, &format!("whole vs pieces {pieces:?}"));
    let bytewise = run(wire, &[1], Role::Server, &limits);
    assert_same(&whole, &bytewise, "whole vs one byte at a time");
});
