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

/// The shortest `jwt_secret` the gateway starts with: RFC 7518 §3.2 requires an HS256 key of at
/// least the hash size, and a shorter one can be brute-forced from a single token.
pub const MIN_SECRET_LEN: usize = 32;

/// The claims the gateway uses; others are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The user: its connections are subscribed to `user:<sub>`.
    pub sub: String,
    /// When this node stops honouring the token, seconds since the Unix epoch: its `exp` plus
    /// the leeway. The connection is closed with 4001 then.
    pub exp: Option<u64>,
    /// Channels the token allows (`*` at the end is a wildcard); `None` allows every channel.
    pub channels: Option<Vec<Pattern>>,
}

/// What a token must satisfy beyond its signature, from the `jwt_*` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// Refuse tokens without an `exp` claim (a token without one would be valid forever).
    pub require_exp: bool,
    /// Seconds of clock skew tolerated on `exp` and `nbf` (the issuer's clock may run ahead or
    /// behind this node's).
    pub leeway: u64,
    /// When set, the token's `aud` (a string or an array of strings) must contain it.
    pub audience: Option<String>,
    /// When set, the token's `iss` must equal it.
    pub issuer: Option<String>,
}

impl Default for Validation {
    /// The defaults of the options: `exp` required, 30 s of leeway, no `aud`/`iss` check.
    fn default() -> Self {
        Validation { require_exp: true, leeway: 30, audience: None, issuer: None }
    }
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
    /// No `exp` claim while `jwt_require_exp` is on.
    MissingExpiry,
    /// `aud` does not name `jwt_audience`.
    Audience,
    /// `iss` is not `jwt_issuer`.
    Issuer,
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
            TokenError::MissingExpiry => "invalid token: no exp claim",
            TokenError::Audience => "invalid token: wrong audience",
            TokenError::Issuer => "invalid token: wrong issuer",
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
    aud: Option<Audience>,
    iss: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// Checks `token` against `secret` and `rules` at `now` (Unix seconds) and returns its claims.
/// Never panics, whatever `token` holds.
pub fn verify(token: &str, secret: &[u8], rules: &Validation, now: u64) -> Result<Claims, TokenError> {
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
    // `as u64` saturates: NaN and negatives become 0, huge values u64::MAX.
    let exp = claims.exp.map(|e| e as u64);
    match exp {
        None if rules.require_exp => return Err(TokenError::MissingExpiry),
        Some(exp) if now >= exp.saturating_add(rules.leeway) => return Err(TokenError::Expired),
        _ => {}
    }
    if claims.nbf.is_some_and(|nbf| now.saturating_add(rules.leeway) < nbf as u64) {
        return Err(TokenError::NotYetValid);
    }
    if let Some(wanted) = &rules.audience {
        if !claims.aud.as_ref().is_some_and(|aud| aud.contains(wanted)) {
            return Err(TokenError::Audience);
        }
    }
    if let Some(wanted) = &rules.issuer {
        if claims.iss.as_deref() != Some(wanted.as_str()) {
            return Err(TokenError::Issuer);
        }
    }
    let sub = claims.sub.filter(|s| !s.is_empty()).ok_or(TokenError::MissingSubject)?;
    let channels = claims.channels.map(|list| list.iter().map(|p| Pattern::new(p)).collect());
    Ok(Claims { sub, exp: exp.map(|e| e.saturating_add(rules.leeway)), channels })
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
    const KEY: &[u8] = b"k";

    /// No leeway, `exp` not required: each test below turns on what it checks.
    fn plain() -> Validation {
        Validation { require_exp: false, leeway: 0, audience: None, issuer: None }
    }

    fn check(claims: serde_json::Value, rules: &Validation) -> Result<Claims, TokenError> {
        verify(&sign(&claims, KEY), KEY, rules, NOW)
    }

    #[test]
    fn round_trip() {
        let claims =
            check(json!({"sub": "alice", "exp": NOW + 60, "channels": ["news.*"]}), &plain()).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, Some(NOW + 60));
        assert!(claims.channels.unwrap()[0].matches("news.eu"));
    }

    #[test]
    fn refusals() {
        let token = sign(&json!({"sub": "a", "exp": NOW}), KEY);
        assert_eq!(verify(&token, KEY, &plain(), NOW), Err(TokenError::Expired));
        assert_eq!(verify(&token, b"other", &plain(), NOW - 10), Err(TokenError::Signature));
        assert_eq!(verify("a.b", KEY, &plain(), NOW), Err(TokenError::Malformed));
        assert_eq!(check(json!({"exp": NOW + 5}), &plain()), Err(TokenError::MissingSubject));
        // alg none: header says so, signature empty.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"a"}"#)
        );
        assert_eq!(verify(&none, KEY, &plain(), NOW), Err(TokenError::Algorithm));
        assert_eq!(check(json!({"sub": "a", "nbf": NOW + 100}), &plain()), Err(TokenError::NotYetValid));
    }

    #[test]
    fn exp_is_required_by_default() {
        assert!(Validation::default().require_exp);
        let rules = Validation { require_exp: true, ..plain() };
        assert_eq!(check(json!({"sub": "a"}), &rules), Err(TokenError::MissingExpiry));
        assert!(check(json!({"sub": "a", "exp": NOW + 1}), &rules).is_ok());
        assert!(check(json!({"sub": "a"}), &plain()).is_ok(), "off: a token without exp is accepted");
    }

    #[test]
    fn leeway_applies_to_exp_and_nbf() {
        let rules = Validation { leeway: 30, ..plain() };
        // Expired 29 s ago by the issuer's clock: still inside the leeway, and the connection
        // is closed when the leeway runs out.
        let claims = check(json!({"sub": "a", "exp": NOW - 29}), &rules).unwrap();
        assert_eq!(claims.exp, Some(NOW + 1));
        assert_eq!(check(json!({"sub": "a", "exp": NOW - 30}), &rules), Err(TokenError::Expired));
        assert!(check(json!({"sub": "a", "nbf": NOW + 30}), &rules).is_ok());
        assert_eq!(check(json!({"sub": "a", "nbf": NOW + 31}), &rules), Err(TokenError::NotYetValid));
        // Far-future and negative values saturate instead of wrapping.
        let huge = check(json!({"sub": "a", "exp": 1e300}), &rules).unwrap();
        assert_eq!(huge.exp, Some(u64::MAX));
        assert_eq!(check(json!({"sub": "a", "exp": -5}), &rules), Err(TokenError::Expired));
    }

    #[test]
    fn audience_string_or_array() {
        let rules = Validation { audience: Some("api".into()), ..plain() };
        assert!(check(json!({"sub": "a", "aud": "api"}), &rules).is_ok());
        assert!(check(json!({"sub": "a", "aud": ["web", "api"]}), &rules).is_ok());
        assert_eq!(check(json!({"sub": "a", "aud": "web"}), &rules), Err(TokenError::Audience));
        assert_eq!(check(json!({"sub": "a", "aud": []}), &rules), Err(TokenError::Audience));
        assert_eq!(check(json!({"sub": "a"}), &rules), Err(TokenError::Audience));
        assert!(check(json!({"sub": "a", "aud": "web"}), &plain()).is_ok(), "unchecked when unset");
    }

    #[test]
    fn issuer() {
        let rules = Validation { issuer: Some("https://auth.example.com/".into()), ..plain() };
        assert!(check(json!({"sub": "a", "iss": "https://auth.example.com/"}), &rules).is_ok());
        assert_eq!(check(json!({"sub": "a", "iss": "https://evil/"}), &rules), Err(TokenError::Issuer));
        assert_eq!(check(json!({"sub": "a"}), &rules), Err(TokenError::Issuer));
    }
}
