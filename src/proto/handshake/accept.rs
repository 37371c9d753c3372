//! `Sec-WebSocket-Key` / `Sec-WebSocket-Accept` (RFC 6455 §4.2.2 item 5.4).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key before hashing.
pub const WEBSOCKET_GUID: &[u8; 36] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `base64(SHA-1(key ++ GUID))`: the `Sec-WebSocket-Accept` value for a client's key, as the 28
/// ASCII bytes of its base64 form. Pass the key exactly as received (trimmed), not decoded.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID);
    let digest: [u8; 20] = sha.finalize().into();
    let mut out = [0u8; 28];
    // 20 bytes encode to exactly 28 characters, so this cannot fail.
    let _ = STANDARD.encode_slice(digest, &mut out);
    out
}

/// The accept value as a `&str` (it is always ASCII).
pub fn accept_key_str(accept: &[u8; 28]) -> &str {
    std::str::from_utf8(accept).unwrap_or_default()
}

/// Whether a received key is canonical base64 (24 characters) of exactly 16 bytes.
pub(super) fn key_is_valid(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut decoded) == Ok(16)
}

/// The base64 form of a 16-byte nonce: a client's `Sec-WebSocket-Key`.
pub(super) fn encode_nonce(nonce: &[u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    // 16 bytes encode to exactly 24 characters, so this cannot fail.
    let _ = STANDARD.encode_slice(nonce, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        for (key, accept) in [
            ("dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("sN9cRrP/n9NdMgdcy2VJFQ==", "fFBooB7FAkLlXgRSz0BT3v4hq5s="),
            ("x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
            ("Omt7iN7CaEUxYdm+wlVEaA==", "ggdcU6xoySObbFCh62I2J3eRxu0="),
            ("4uEeKBqa1bL12W9Iazlu7w==", "XwZURdK+N7l+tVt7KVE5Pr4A+Ls="),
        ] {
            assert_eq!(accept_key_str(&accept_key(key.as_bytes())), accept, "key {key}");
            assert!(key_is_valid(key.as_bytes()));
        }
    }

    #[test]
    fn key_validation() {
        assert!(!key_is_valid(b""));
        assert!(!key_is_valid(b"dGhlIHNhbXBsZSBub25jZQ")); // unpadded
        assert!(!key_is_valid(b"dGhlIHNhbXBsZSBub25jZQ===")); // 25 chars
        assert!(!key_is_valid(b"dGhlIHNhbXBsZSBub25jZR==")); // non-canonical trailing bits
        assert!(!key_is_valid(b"dGhlIHNhbXBsZSBub25j!Q==")); // not base64
        assert!(!key_is_valid(b"dGhlIHNhbXBsZSBub25jZXM=")); // 17 bytes
        assert!(!key_is_valid(b"YWJjZGVmZ2hpamtsbW5vcHFy")); // 18 bytes
        assert_eq!(&encode_nonce(b"the sample nonce"), b"dGhlIHNhbXBsZSBub25jZQ==");
    }
}
