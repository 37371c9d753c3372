//! Address ranges: [`Cidr`] (`10.0.0.0/8`, `2001:db8::/32`, a bare address) and [`CidrList`],
//! e.g. the peers trusted to send a PROXY protocol header ([`crate::proto::proxy`]).
//!
//! An IPv4 address and its IPv4-mapped IPv6 form (`::ffff:10.1.2.3`, what a dual-stack socket
//! reports for an IPv4 peer) are the same address here: `10.0.0.0/8` contains both, and a range
//! written in the mapped form (`::ffff:10.0.0.0/104`) is stored as the IPv4 range it denotes.
//!
//! ```
//! use throng::net::CidrList;
//!
//! let trusted: CidrList = "10.0.0.0/8, 2001:db8::/32, 192.0.2.7".parse()?;
//! assert!(trusted.contains("10.20.30.40".parse()?));
//! assert!(trusted.contains("::ffff:10.20.30.40".parse()?));
//! assert!(trusted.contains("192.0.2.7".parse()?));
//! assert!(!trusted.contains("192.0.2.8".parse()?));
//! assert!("10.1.0.0/8".parse::<CidrList>().is_err()); // host bits set: a typo, most likely
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address whose bits past the prefix length are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The network `addr`/`prefix_len`. Fails if the prefix is longer than the address (32 or
    /// 128 bits) or `addr` has bits set past it. An IPv4-mapped range of /96 or longer becomes
    /// the IPv4 range.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let max = max_prefix(addr);
        if prefix_len > max {
            return Err(CidrError::Prefix { input: format!("{addr}/{prefix_len}"), max });
        }
        let (addr, prefix_len) = match addr {
            IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix_len - 96),
                None => (addr, prefix_len),
            },
            _ => (addr, prefix_len),
        };
        let network = mask(addr, prefix_len);
        if network != addr {
            let suggestion = Cidr { network, prefix_len };
            return Err(CidrError::HostBits { input: format!("{addr}/{prefix_len}"), suggestion });
        }
        Ok(Cidr { network, prefix_len })
    }

    /// The network's first address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in the network; an IPv4 address and its IPv4-mapped form are the same.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let ip = match (self.network, ip) {
            // `::/0` and other IPv6 ranges that cover `::ffff:0:0/96` contain the IPv4 addresses.
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => ip,
        };
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix_len) == self.network
    }
}

/// 32 or 128.
fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// `addr` with the bits past `prefix_len` cleared (`prefix_len` at most the address width).
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & bits))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDRESS/PREFIX` or a bare `ADDRESS` (/32 or /128); surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(CidrError::Empty);
        }
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::Address(s.to_owned()))?;
        let max = max_prefix(addr);
        let prefix_len = match prefix_text {
            None => max,
            // Digits only: `u8::from_str` would also take `+8`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| CidrError::Prefix { input: s.to_owned(), max })?
            }
            Some(_) => return Err(CidrError::Prefix { input: s.to_owned(), max }),
        };
        Cidr::new(addr, prefix_len).map_err(|e| e.with_input(s))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Why a CIDR could not be read; the message quotes the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// An empty entry (e.g. two commas in a row).
    Empty,
    /// The part before `/` is not an IPv4 or IPv6 address.
    Address(String),
    /// The prefix length is not a number from 0 to the address width.
    Prefix {
        /// The entry as written.
        input: String,
        /// 32 or 128.
        max: u8,
    },
    /// Bits are set past the prefix length (`10.1.0.0/8`): refused rather than guessed, since a
    /// trusted range is security relevant and this is most likely a typo.
    HostBits {
        /// The entry as written.
        input: String,
        /// The network the address falls in.
        suggestion: Cidr,
    },
}

impl CidrError {
    /// The same error quoting `input` (what the user wrote rather than its normalized form).
    fn with_input(self, input: &str) -> Self {
        match self {
            Self::Prefix { max, .. } => Self::Prefix { input: input.to_owned(), max },
            Self::HostBits { suggestion, .. } => Self::HostBits { input: input.to_owned(), suggestion },
            other => other,
        }
    }
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty address range (expected e.g. 10.0.0.0/8 or 2001:db8::/32)"),
            Self::Address(input) => {
                write!(f, "`{input}`: not an IP address or range (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")
            }
            Self::Prefix { input, max } => {
                write!(f, "`{input}`: the prefix length after `/` must be a number from 0 to {max}")
            }
            Self::HostBits { input, suggestion } => write!(
                f,
                "`{input}`: the address has bits set past the /{} prefix; did you mean {suggestion}?",
                suggestion.prefix_len
            ),
        }
    }
}

impl std::error::Error for CidrError {}

/// A set of ranges, checked in order (meant for a handful of entries, like a trusted-proxy list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList(Vec<Cidr>);

impl CidrList {
    /// Reads every entry of a list as written in a config file; the first bad one is the error.
    pub fn parse_all<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Result<Self, CidrError> {
        entries.into_iter().map(|e| e.as_ref().parse()).collect()
    }

    /// Whether any range contains `ip` (never, for an empty list).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// Whether the list has no ranges.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Cidr> {
        self.0.iter()
    }
}

impl FromIterator<Cidr> for CidrList {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        CidrList(iter.into_iter().collect())
    }
}

impl From<Vec<Cidr>> for CidrList {
    fn from(cidrs: Vec<Cidr>) -> Self {
        CidrList(cidrs)
    }
}

impl FromStr for CidrList {
    type Err = CidrError;

    /// Entries separated by commas and/or whitespace (as in an environment variable); an empty or
    /// blank string is the empty list.
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(CidrList::default());
        }
        // Split on commas first so that `a,,b` is reported as an empty entry, then on spaces.
        s.split(',')
            .flat_map(|part| {
                let words: Vec<&str> = part.split_whitespace().collect();
                if words.is_empty() {
                    vec![""]
                } else {
                    words
                }
            })
            .map(str::parse)
            .collect()
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, cidr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{cidr}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr(" 192.0.2.7 ").to_string(), "192.0.2.7/32");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("::1/128").to_string(), "::1/128");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::ffff:192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(cidr("10.0.0.0/08").prefix_len(), 8);
        assert_eq!(cidr("10.0.0.0/8").network(), ip("10.0.0.0"));
    }

    #[test]
    fn errors() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err();
        assert_eq!(err(""), CidrError::Empty);
        assert_eq!(err("example.com"), CidrError::Address("example.com".into()));
        assert_eq!(err("10.0.0/8"), CidrError::Address("10.0.0/8".into()));
        assert_eq!(err("[::1]/128"), CidrError::Address("[::1]/128".into()));
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/-1", "10.0.0.0/8/8", "10.0.0.0/0008"]
        {
            assert_eq!(err(bad), CidrError::Prefix { input: bad.into(), max: 32 }, "{bad}");
        }
        assert_eq!(err("::/129"), CidrError::Prefix { input: "::/129".into(), max: 128 });
        assert_eq!(
            err("10.1.0.0/8"),
            CidrError::HostBits { input: "10.1.0.0/8".into(), suggestion: cidr("10.0.0.0/8") }
        );
        assert_eq!(
            err("2001:db8::1/32").to_string(),
            "`2001:db8::1/32`: the address has bits set past the /32 prefix; did you mean 2001:db8::/32?"
        );
        assert_eq!(
            err("10.0.0.0/40").to_string(),
            "`10.0.0.0/40`: the prefix length after `/` must be a number from 0 to 32"
        );
        assert!(err("nope").to_string().contains("`nope`: not an IP address"));
    }

    #[test]
    fn contains() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.0.0.0")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("9.255.255.255")));
        assert!(!net.contains(ip("::a00:1")), "IPv4-compatible is not IPv4-mapped");
        assert!(!net.contains(ip("::1")));

        let one = cidr("192.0.2.7");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.6")));

        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(cidr("::1/128").contains(ip("::1")));
        assert!(!cidr("::1/128").contains(ip("::2")));

        assert!(cidr("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("::ffff:11.1.2.3")));
        let mapped = cidr("::ffff:10.0.0.0/104");
        assert_eq!(mapped, net);
        assert!(mapped.contains(ip("10.1.2.3")));
        // An IPv6 range that covers ::ffff:0:0/96 covers the IPv4 addresses too.
        assert!(cidr("::/0").contains(ip("10.1.2.3")));
        assert!(cidr("::fffe:0:0/95").contains(ip("10.1.2.3")));
        assert!(!cidr("2001:db8::/32").contains(ip("10.1.2.3")));
        assert!(cidr("::ffff:0.0.0.0/96").contains(ip("1.2.3.4")));
        assert_eq!(cidr("::ffff:0.0.0.0/96"), cidr("0.0.0.0/0"));
    }

    #[test]
    fn lists() {
        let list: CidrList = "10.0.0.0/8, 2001:db8::/32 192.0.2.7".parse().unwrap();
        assert_eq!(list.iter().count(), 3);
        assert_eq!(list.to_string(), "10.0.0.0/8, 2001:db8::/32, 192.0.2.7/32");
        assert!(list.contains(ip("10.9.9.9")));
        assert!(list.contains(ip("::ffff:10.9.9.9")));
        assert!(list.contains(ip("2001:db8::5")));
        assert!(list.contains(ip("192.0.2.7")));
        assert!(!list.contains(ip("192.0.2.8")));
        assert!(!list.contains(ip("127.0.0.1")));
        assert_eq!(list.to_string().parse::<CidrList>().unwrap(), list);

        let empty: CidrList = "  ".parse().unwrap();
        assert!(empty.is_empty());
        assert!(!empty.contains(ip("127.0.0.1")));
        assert_eq!("10.0.0.0/8,,::1".parse::<CidrList>(), Err(CidrError::Empty));
        assert_eq!("10.0.0.0/8, x".parse::<CidrList>(), Err(CidrError::Address("x".into())));

        let from_config = CidrList::parse_all(["127.0.0.1", "::1"]).unwrap();
        assert!(from_config.contains(ip("127.0.0.1")) && from_config.contains(ip("::1")));
        assert!(CidrList::parse_all(vec![String::from("10.0.0.1/8")]).is_err());
        assert_eq!(CidrList::from(vec![cidr("::1")]), [cidr("::1")].into_iter().collect());
    }
}
