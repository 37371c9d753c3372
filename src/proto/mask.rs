//! Unmasking in place, with the key phase carried across calls.
//!
//! A frame's payload may arrive in several reads, so [`apply_mask`] takes the offset of the first byte
//! within the payload (its phase) and returns the phase for the next call. The fast path XORs eight
//! bytes at a time with a key rotated to the phase; [`apply_mask_naive`] is the byte-loop oracle the
//! tests and benchmarks compare against.

/// XORs `buf` with `key`, the first byte of `buf` being at payload offset `phase` (mod 4).
/// Returns the phase of the byte after `buf`.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let phase = phase & 3;
    let end_phase = (phase + buf.len()) & 3;
    if key == [0; 4] {
        return end_phase;
    }
    // The key as seen from the first byte of `buf`, repeated over a word: XOR works byte by byte
    // in memory order, so this is independent of endianness.
    let rotated: [u8; 4] = std::array::from_fn(|i| key[(phase + i) & 3]);
    let mut word_key = [0u8; 8];
    word_key[..4].copy_from_slice(&rotated);
    word_key[4..].copy_from_slice(&rotated);
    let key64 = u64::from_ne_bytes(word_key);
    let mut chunks = buf.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for word in chunk.chunks_exact_mut(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ key64).to_ne_bytes());
        }
    }
    let rest = chunks.into_remainder();
    for (i, byte) in rest.iter_mut().enumerate() {
        *byte ^= rotated[i & 3];
    }
    end_phase
}

/// The plain byte loop: the oracle for [`apply_mask`].
pub fn apply_mask_naive(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(phase + i) & 3];
    }
    (phase + buf.len()) & 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn matches_naive_at_every_alignment_length_and_phase() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let backing = pattern(300);
        for offset in 0..16 {
            for len in 0..(300 - offset) {
                for phase in 0..4 {
                    let mut fast = backing.clone();
                    let mut slow = backing.clone();
                    let p1 = apply_mask(&mut fast[offset..offset + len], key, phase);
                    let p2 = apply_mask_naive(&mut slow[offset..offset + len], key, phase);
                    assert_eq!(p1, p2);
                    assert_eq!(fast, slow, "offset {offset} len {len} phase {phase}");
                }
            }
        }
    }

    #[test]
    fn split_calls_equal_one_call() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let original = pattern(1000);
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        for split in [1, 2, 3, 5, 8, 33, 999] {
            let mut parts = original.clone();
            let (a, b) = parts.split_at_mut(split);
            let phase = apply_mask(a, key, 0);
            apply_mask(b, key, phase);
            assert_eq!(parts, whole, "split {split}");
        }
    }

    #[test]
    fn mask_twice_is_identity() {
        let key = [9, 8, 7, 6];
        let original = pattern(77);
        let mut buf = original.clone();
        apply_mask(&mut buf, key, 3);
        assert_ne!(buf, original);
        apply_mask(&mut buf, key, 3);
        assert_eq!(buf, original);
    }
}
