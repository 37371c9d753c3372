//! Connection caps, checked by the engine's admission hook from a client's first byte (so that
//! connections still in their handshake count: a client cannot hold thousands of sockets by
//! never finishing its upgrade), answered with HTTP 429 per address or 503 overall. A slot is
//! taken at accept (or once a trusted balancer's PROXY header named the client) and given back
//! by the engine if the connection never opens, or by the worker when it sees the connection's
//! Close event (see [`throng::Admission`]).
//!
//! Per-address counts are kept per [`IpKey`]: an IPv6 client is counted by its /64, since one
//! host usually holds a whole /64 and could otherwise take a new address per connection.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use super::metrics::Reject;

/// What the per-address cap counts by: an IPv4 address (also when it arrives IPv4-mapped, as a
/// dual-stack listener reports it), or the /64 an IPv6 address is in (the usual size of one
/// site's or one host's allocation, RFC 6177).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IpKey {
    /// An IPv4 client.
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 client's address.
    V6Prefix(u64),
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpKey::V4(v4),
            IpAddr::V6(v6) => IpKey::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

impl fmt::Display for IpKey {
    /// `192.0.2.7` or `2001:db8:1:2::/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpKey::V4(v4) => write!(f, "{v4}"),
            IpKey::V6Prefix(prefix) => write!(f, "{}/64", Ipv6Addr::from(u128::from(prefix) << 64)),
        }
    }
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Global,
    PerIp,
}

#[derive(Default)]
pub(crate) struct Admission {
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpKey, usize>,
}

impl Admission {
    /// Takes a slot for `ip` (counted by its [`IpKey`]) unless a cap is reached.
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: Option<usize>,
    ) -> Result<(), Refused> {
        let mut counts = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= max_total {
            return Err(Refused::Global);
        }
        let key = IpKey::from(ip);
        let mine = counts.per_ip.entry(key).or_insert(0);
        if max_per_ip.is_some_and(|max| *mine >= max) {
            if *mine == 0 {
                counts.per_ip.remove(&key);
            }
            return Err(Refused::PerIp);
        }
        *mine += 1;
        counts.total += 1;
        Ok(())
    }

    /// Gives back the slot of a closed connection from `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        self.release_key(IpKey::from(ip));
    }

    /// Gives back the slot of a closed connection counted under `key`.
    pub(crate) fn release_key(&self, key: IpKey) {
        let mut counts = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&key);
            }
        }
    }

    /// Connections counted now.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// The engine's admission hook for the gateway: the caps of the live configuration.
pub(crate) struct Gate(pub(crate) std::sync::Arc<super::state::Front>);

impl throng::Admission for Gate {
    fn admit(&self, client: std::net::SocketAddr) -> Result<(), throng::Rejection> {
        let front = &self.0;
        let live = front.live();
        let refused =
            match front.admission.admit(client.ip(), live.max_connections, live.max_connections_per_ip) {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            };
        let (why, status, text) = match refused {
            Refused::Global => (Reject::GlobalLimit, 503, "server at its connection limit"),
            Refused::PerIp => (Reject::PerIpLimit, 429, "too many connections from this address"),
        };
        front.counters.reject(why, status, text, client);
        Err(throng::Rejection::new(status, text))
    }

    fn release(&self, client: std::net::SocketAddr) {
        self.0.admission.release(client.ip());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        let a = Admission::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        assert_eq!(a.admit(ip, 3, Some(2)), Ok(()));
        assert_eq!(a.admit(ip, 3, Some(2)), Ok(()));
        assert_eq!(a.admit(ip, 3, Some(2)), Err(Refused::PerIp));
        assert_eq!(a.admit(other, 3, Some(2)), Ok(()));
        assert_eq!(a.admit(other, 3, Some(2)), Err(Refused::Global));
        a.release(ip);
        assert_eq!(a.admit(other, 3, Some(2)), Ok(()));
        assert_eq!(a.total(), 3);
    }

    fn key(s: &str) -> IpKey {
        IpKey::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ip_keys() {
        assert_eq!(key("192.0.2.7"), IpKey::V4([192, 0, 2, 7].into()));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        // IPv6: the same /64 is one key, whatever the interface bits.
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(key("2001:db8:1:2::1"), IpKey::V6Prefix(0x2001_0db8_0001_0002));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db9:1:2::1"));
        // IPv4-compatible (::a.b.c.d) is not IPv4-mapped: it stays IPv6, in ::/64.
        assert_eq!(key("::192.0.2.7"), IpKey::V6Prefix(0));
        assert_eq!(key("::1"), key("::2"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::ffff:10.0.0.1").to_string(), "10.0.0.1");
    }

    #[test]
    fn ipv6_counted_per_64() {
        let a = Admission::default();
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:abcd::9".parse().unwrap();
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(a.admit(first, 10, Some(2)), Ok(()));
        assert_eq!(a.admit(same_64, 10, Some(2)), Ok(()));
        assert_eq!(a.admit(same_64, 10, Some(2)), Err(Refused::PerIp));
        assert_eq!(a.admit(next_64, 10, Some(2)), Ok(()));
        // Released under another address of the same /64: the slot comes back all the same.
        a.release(same_64);
        assert_eq!(a.admit(first, 10, Some(2)), Ok(()));
        assert_eq!(a.admit(first, 10, Some(2)), Err(Refused::PerIp));
        assert_eq!(a.total(), 3);
    }

    #[test]
    fn ipv4_mapped_counted_as_ipv4() {
        let a = Admission::default();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(a.admit(v4, 10, Some(1)), Ok(()));
        assert_eq!(a.admit(mapped, 10, Some(1)), Err(Refused::PerIp));
        a.release(mapped);
        assert_eq!(a.admit(mapped, 10, Some(1)), Ok(()));
        assert_eq!(a.total(), 1);
    }
}
