//! `apply_mask` (the word-at-a-time fast path) against `apply_mask_naive` (the byte loop).
//!
//! An arbitrary key, starting phase and buffer, cut at arbitrary points: masking piece by piece,
//! each piece starting at the phase the previous one returned, equals masking the whole buffer
//! with the naive loop (bytes and returned phase); each piece's returned phase equals the naive
//! one; and masking twice restores the input. Unaligned starts come from the cut points.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use throng::proto::mask::{apply_mask, apply_mask_naive};

fn assert_eq_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len());
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: byte {i} of {} is {:#04x}, want {:#04x}", got.len(), got[i], want[i]);
    }
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let key: [u8; 4] = u.arbitrary()?;
    // Any phase: only its value mod 4 may matter.
    let phase: usize = u.arbitrary()?;
    let cut_count = u.int_in_range(0..=6)?;
    let mut cuts: Vec<usize> =
        (0..cut_count).map(|_| u.arbitrary::<u16>().map(usize::from)).collect::<Result<_>>()?;
    let original = u.bytes(u.len())?;
    for cut in &mut cuts {
        *cut %= original.len() + 1;
    }
    cuts.sort_unstable();

    let mut expected = original.to_vec();
    let end_phase = apply_mask_naive(&mut expected, key, phase & 3);
    assert_eq!(end_phase, phase.wrapping_add(original.len()) & 3);

    let mut pieces = original.to_vec();
    let mut at = 0;
    let mut p = phase;
    for &cut in cuts.iter().chain(std::iter::once(&original.len())) {
        let mut naive = pieces[at..cut].to_vec();
        let naive_phase = apply_mask_naive(&mut naive, key, p & 3);
        p = apply_mask(&mut pieces[at..cut], key, p);
        assert_eq!(p, naive_phase, "phase after bytes {at}..{cut}");
        assert_eq_bytes(&pieces[at..cut], &naive, &format!("piece {at}..{cut}, phase {p}"));
        at = cut;
    }
    assert_eq!(p, end_phase);
    assert_eq_bytes(&pieces, &expected, &format!("cut at {cuts:?}"));

    // Unmask the whole buffer in one call: the original comes back.
    let back = apply_mask(&mut pieces, key, phase);
    assert_eq!(back, end_phase);
    assert_eq_bytes(&pieces, original, "masked twice");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
