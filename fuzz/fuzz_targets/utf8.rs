//! The incremental UTF-8 validator against `std::str::from_utf8`.
//!
//! Arbitrary bytes cut at arbitrary points and fed piece by piece:
//! - the final verdict (every `feed`, then `finish`) equals `from_utf8(whole).is_ok()`;
//! - fail-fast is exact: `feed` of piece k fails if and only if the bytes up to the end of piece k
//!   are definitely invalid (`from_utf8` fails with `error_len().is_some()`), neither earlier (a
//!   valid prefix cut inside a code point is fine) nor later;
//! - `finish` resets: the validator then accepts a fresh message.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use throng::proto::utf8::{validate, Utf8Validator};

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let cut_count = u.int_in_range(0..=8)?;
    let mut cuts: Vec<usize> =
        (0..cut_count).map(|_| u.arbitrary::<u16>().map(usize::from)).collect::<Result<_>>()?;
    let bytes = u.bytes(u.len())?;
    for cut in &mut cuts {
        *cut %= bytes.len() + 1;
    }
    cuts.sort_unstable();
    let whole_ok = std::str::from_utf8(bytes).is_ok();
    assert_eq!(validate(bytes).is_ok(), whole_ok);

    let mut validator = Utf8Validator::new();
    let mut start = 0;
    let mut failed = false;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let fed = validator.feed(&bytes[start..end]);
        let prefix_possible = match std::str::from_utf8(&bytes[..end]) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        };
        assert_eq!(fed.is_ok(), prefix_possible, "feed of bytes {start}..{end} (cuts {cuts:?})");
        if fed.is_err() {
            failed = true;
            break;
        }
        start = end;
    }
    if failed {
        assert!(!whole_ok);
        return Ok(());
    }
    assert_eq!(validator.finish().is_ok(), whole_ok, "finish (cuts {cuts:?})");
    // Reset by finish: a new message starts clean.
    assert!(validator.feed("é ok".as_bytes()).is_ok());
    assert!(validator.finish().is_ok());
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
