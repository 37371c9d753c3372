//! Human-friendly durations (`30s`, `500ms`, `5m`) and sizes (`64KiB`, `1MiB`) for flags,
//! environment variables and the config file alike.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as `<number><unit>` with unit `ms`, `s`, `m` or `h`; a bare number is
/// seconds. `0` means "off" where an option allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("invalid duration {s:?} (e.g. 30s, 500ms, 5m)"))?;
        let d = match unit.trim() {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m or h)")),
        };
        Ok(Span(d))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A byte count written as a number with an optional unit: `B`, `KiB`, `MiB`, `GiB` (powers of
/// 1024) or `KB`, `MB`, `GB` (powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?} (e.g. 64KiB, 1MiB)"))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(format!("invalid size unit in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
        };
        n.checked_mul(factor).map(Size).ok_or_else(|| format!("size {s:?} is too large"))
    }
}

/// Accepts a string (parsed with `FromStr`) or a non-negative integer (seconds or bytes).
struct NumOrStr<T>(std::marker::PhantomData<T>);

impl<T: FromStr<Err = String>> Visitor<'_> for NumOrStr<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string with a unit")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        v.to_string().parse().map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v).map_err(|_| E::custom("must not be negative")).and_then(|v| self.visit_u64(v))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumOrStr(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumOrStr(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("30".parse::<Span>().unwrap().0, Duration::from_secs(30));
        assert_eq!("250ms".parse::<Span>().unwrap().0, Duration::from_millis(250));
        assert_eq!("2m".parse::<Span>().unwrap().0, Duration::from_secs(120));
        assert!("2 weeks".parse::<Span>().is_err());
        assert!("-1s".parse::<Span>().is_err());
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1500ms");
    }

    #[test]
    fn sizes() {
        assert_eq!("64KiB".parse::<Size>().unwrap().0, 65536);
        assert_eq!("1MB".parse::<Size>().unwrap().0, 1_000_000);
        assert_eq!("17".parse::<Size>().unwrap().0, 17);
        assert!("1TiB".parse::<Size>().is_err());
    }
}
