//! HS256 JSON Web Tokens, by hand: the whole of what a gateway needs is one HMAC and a few
//! claims, and doing it here keeps "alg: none" and key confusion out by construction (only
//! `HS256` is ever accepted).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::channels::Pattern;

type HmacSha256 = Hmac<Sha256>;

/// The claims the gateway uses; others are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The user: its connections are subscribed to `user:<sub>`.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch; the connection is closed with 4001 then.
    pub exp: Option<u64>,
    /// Channels the token allows (`*` at the end is a wildcard); `None` allows every channel.
    pub channels: Option<Vec<Pattern>>,
}

/// Why a token was refused; each maps to a 401 reason and a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts, or not JSON.
    Malformed,
    /// `alg` is not HS256.
    Algorithm,
    /// The signature does not match the secret.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// No `sub` claim (or not a string).
    MissingSubject,
}

impl TokenError {
    /// Short text for the 401 body and logs.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "invalid token: malformed",
            TokenError::Algorithm => "invalid token: only HS256 is accepted",
            TokenError::Signature => "invalid token: bad signature",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "invalid token: not valid yet",
            TokenError::MissingSubject => "invalid token: no sub claim",
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    channels: Option<Vec<String>>,
}

/// Checks `token` against `secret` at `now` (Unix seconds) and returns its claims.
pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed);
    let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    let signature = decode(signature)?;
    let signed_len = token.len() - signature_len(token);
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
    mac.update(&token.as_bytes()[..signed_len]);
    // verify_slice compares in constant time.
    mac.verify_slice(&signature).map_err(|_| TokenError::Signature)?;

    let claims: RawClaims = serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
    let exp = claims.exp.map(|e| e.max(0.0) as u64);
    if exp.is_some_and(|exp| now >= exp) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now < nbf.max(0.0) as u64) {
        return Err(TokenError::NotYetValid);
    }
    let sub = claims.sub.filter(|s| !s.is_empty()).ok_or(TokenError::MissingSubject)?;
    let channels = claims.channels.map(|list| list.iter().map(|p| Pattern::new(p)).collect());
    Ok(Claims { sub, exp, channels })
}

/// Length of `.signature` at the end of the token.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

/// Signs `claims` (a JSON object) as an HS256 token: for tests, tooling and the demo.
pub fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn round_trip() {
        let token = sign(&json!({"sub": "alice", "exp": NOW + 60, "channels": ["news.*"]}), b"k");
        let claims = verify(&token, b"k", NOW).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, Some(NOW + 60));
        assert!(claims.channels.unwrap()[0].matches("news.eu"));
    }

    #[test]
    fn refusals() {
        let token = sign(&json!({"sub": "a", "exp": NOW}), b"k");
        assert_eq!(verify(&token, b"k", NOW), Err(TokenError::Expired));
        assert_eq!(verify(&token, b"other", NOW - 10), Err(TokenError::Signature));
        assert_eq!(verify("a.b", b"k", NOW), Err(TokenError::Malformed));
        let no_sub = sign(&json!({"exp": NOW + 5}), b"k");
        assert_eq!(verify(&no_sub, b"k", NOW), Err(TokenError::MissingSubject));
        // alg none: header says so, signature empty.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"a"}"#)
        );
        assert_eq!(verify(&none, b"k", NOW), Err(TokenError::Algorithm));
        let future = sign(&json!({"sub": "a", "nbf": NOW + 100}), b"k");
        assert_eq!(verify(&future, b"k", NOW), Err(TokenError::NotYetValid));
    }
}
