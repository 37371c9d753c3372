//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! A text message may be cut anywhere: between frames, between reads, inside a code point. The
//! validator keeps at most three bytes of an unfinished code point and fails as soon as the bytes
//! seen so far cannot begin valid UTF-8 — not at the end of the message — which is what a strict
//! Autobahn pass (cases 6.4.x) requires. The bulk of each piece is checked by
//! [`std::str::from_utf8`], whose ASCII fast path is hard to beat.

/// The bytes seen so far are not the start of any valid UTF-8 text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error;

/// Validates a byte stream piece by piece. Small: four bytes of state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Validator {
    /// The bytes of an unfinished code point carried over from the previous piece.
    pending: [u8; 3],
    pending_len: u8,
}

/// The total length of a sequence from its lead byte, or `None` for a byte that cannot lead.
fn sequence_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self { pending: [0; 3], pending_len: 0 }
    }

    /// Checks the next piece. Fails as soon as the stream so far cannot be a prefix of valid UTF-8.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), Utf8Error> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]).ok_or(Utf8Error)?;
            let take = (need - have).min(piece.len());
            let mut seq = [0u8; 4];
            seq[..have].copy_from_slice(&self.pending[..have]);
            seq[have..have + take].copy_from_slice(&piece[..take]);
            match std::str::from_utf8(&seq[..have + take]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix and the piece is used up.
                    self.pending = [seq[0], seq[1], seq[2]];
                    self.pending_len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            piece = &piece[take..];
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &piece[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Ends the message: fails if it stopped inside a code point. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.pending_len == 0;
        *self = Self::new();
        if complete {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }

    /// Forgets any partial state.
    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

/// Validates a whole message in one go.
pub fn validate(bytes: &[u8]) -> Result<(), Utf8Error> {
    std::str::from_utf8(bytes).map(|_| ()).map_err(|_| Utf8Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incremental(bytes: &[u8], cut: &[usize]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &c in cut.iter().chain(std::iter::once(&bytes.len())) {
            v.feed(&bytes[start..c])?;
            start = c;
        }
        v.finish()
    }

    const SAMPLES: &[&[u8]] = &[
        b"",
        b"hello",
        "κόσμε".as_bytes(),
        "日本語テキスト".as_bytes(),
        "emoji 🎉🚀".as_bytes(),
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        b"\xf4\x90\x80\x80",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xed\xbf\xbf",
        b"\xf0\x8f\xbf\xbf",
        b"\xf8\x88\x80\x80\x80",
        b"\x80",
        b"abc\xe2\x82",
        b"\xf0\x9f\x98",
    ];

    #[test]
    fn every_two_way_split_agrees_with_std() {
        for sample in SAMPLES {
            let expected = std::str::from_utf8(sample).is_ok();
            for a in 0..=sample.len() {
                for b in a..=sample.len() {
                    assert_eq!(incremental(sample, &[a, b]).is_ok(), expected, "{sample:?} cut {a},{b}");
                }
            }
        }
    }

    #[test]
    fn fails_fast_on_first_impossible_byte() {
        // U+D800 (a surrogate) is impossible from its second byte: ED A0.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok \xed"), Ok(()));
        assert_eq!(v.feed(b"\xa0"), Err(Utf8Error));
        // Above U+10FFFF is impossible from F4 90.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(Utf8Error));
        // A continuation byte with no lead fails at once.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\x80"), Err(Utf8Error));
    }

    #[test]
    fn byte_at_a_time_code_point_is_accepted() {
        let text = "a🎉b".as_bytes();
        let mut v = Utf8Validator::new();
        for byte in text {
            v.feed(std::slice::from_ref(byte)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn message_ending_inside_a_code_point_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(Utf8Error));
        // finish resets, so the next message starts clean.
        v.feed(b"ok").unwrap();
        v.finish().unwrap();
    }
}
