//! The gateway's HS256 JWT check (`throng_gateway::auth::verify`).
//!
//! Input: [mode] rest...
//! - mode even: `rest` (lossy UTF-8) is a whole token, checked with a fixed secret and rules
//!   whose `now`, leeway and `require_exp` come from `rest`'s first bytes. Never panics; an
//!   accepted token's `sub` is not empty and its `exp`, when present, lies after `now`.
//! - mode odd: `rest` is a claims payload, signed with the secret: a payload that is a JSON
//!   object never fails the signature or algorithm check; the same token checked with another
//!   secret always fails the signature; changing one character of the signature always fails
//!   (the signature, or the base64 when the change makes it invalid).
#![no_main]

use libfuzzer_sys::fuzz_target;
use throng_gateway::auth::{sign, verify, TokenError, Validation};
use throng_fuzz::Bytes;

const SECRET: &[u8] = b"fuzz-secret-of-at-least-32-bytes!";

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let mode = input.byte();
    let knobs = input.byte();
    let now = 1_700_000_000 + u64::from(input.byte()) * 1000;
    let rules = Validation {
        require_exp: knobs & 1 != 0,
        leeway: u64::from(knobs >> 1),
        audience: (knobs & 0x40 != 0).then(|| "api".to_owned()),
        issuer: (knobs & 0x80 != 0).then(|| "iss".to_owned()),
    };
    let rest = input.rest();
    if mode & 1 == 0 {
        let token = String::from_utf8_lossy(rest);
        if let Ok(claims) = verify(&token, SECRET, &rules, now) {
            assert!(!claims.sub.is_empty());
            assert!(claims.exp.is_none_or(|exp| exp > now), "accepted at {now}: {claims:?}");
            assert!(claims.exp.is_some() || !rules.require_exp);
        }
        return;
    }
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
    let token = sign(&claims, SECRET);
    let result = verify(&token, SECRET, &rules, now);
    if claims.is_object() {
        assert!(!matches!(result, Err(TokenError::Signature | TokenError::Algorithm)), "{result:?}");
    }
    assert!(matches!(
        verify(&token, b"another-secret-of-32-bytes-length", &rules, now),
        Err(TokenError::Signature)
    ));
    let at = token.len() - 1 - usize::from(mode / 2) % 40;
    let mut forged = token.clone().into_bytes();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ASCII token");
    let result = verify(&forged, SECRET, &rules, now);
    assert!(matches!(result, Err(TokenError::Signature | TokenError::Malformed)), "{forged}: {result:?}");
});
