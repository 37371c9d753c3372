//! Target URLs: `ws://HOST[:PORT][/PATH]` (and the `http://` publish endpoint of `fanout`),
//! HOST an IP literal (`[…]` for IPv6) or a DNS name resolved with the system resolver.

use std::net::{SocketAddr, ToSocketAddrs};

/// Where to connect and what to put in the request.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The URL as given.
    pub(crate) url: String,
    /// The resolved address.
    pub(crate) addr: SocketAddr,
    /// The `Host` header value.
    pub(crate) host: String,
    /// The request target, `/path?query`.
    pub(crate) path: String,
}

impl Target {
    /// Parses and resolves a `ws://` URL (no TLS: `wss://` is refused).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        Self::parse_scheme(url, "ws://", "/")
    }

    /// Parses and resolves `scheme//HOST[:PORT][/PATH]` (port 80 when absent, `default_path`
    /// when there is no path). The `Host` header is the URL's host, with the port unless it is
    /// 80. A name resolving to several addresses gives the first IPv4 one (servers listening on
    /// `127.0.0.1` are reached through `localhost` whatever the resolver lists first), else the
    /// first.
    pub(crate) fn parse_scheme(url: &str, scheme: &str, default_path: &str) -> Result<Self, String> {
        let rest =
            url.strip_prefix(scheme).ok_or_else(|| format!("{url:?}: only {scheme} URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) if rest[at..].starts_with('?') => (&rest[..at], format!("/{}", &rest[at..])),
            Some(at) => (&rest[..at], rest[at..].to_owned()),
            None => (rest, default_path.to_owned()),
        };
        let (host, port) = split_port(authority).ok_or_else(|| format!("{url:?}: bad host or port"))?;
        let addr = resolve(host, port).map_err(|e| format!("{url:?}: {e}"))?;
        let host = if port == 80 { host.to_owned() } else { format!("{host}:{port}") };
        Ok(Target { url: url.to_owned(), addr, host, path })
    }
}

/// Resolves `host` (an IP literal, `[v6]`, or a DNS name) and `port`.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Some(v6) = host.strip_prefix('[') {
        let ip = v6.strip_suffix(']').and_then(|ip| ip.parse().ok());
        return ip.map(|ip| SocketAddr::new(ip, port)).ok_or_else(|| format!("bad IPv6 address {host}"));
    }
    if let Ok(ip) = host.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    // Checked here so that a typo gives a clear message rather than the resolver's.
    let valid_name = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !valid_name || host.len() > 253 {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

/// `host:port`, `[v6]:port` or a bare host (port 80).
fn split_port(authority: &str) -> Option<(&str, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let port_at = match authority.rfind(':') {
        Some(at) if !authority.starts_with('[') || authority[..at].ends_with(']') => Some(at),
        _ => None,
    };
    let (host, port) = match port_at {
        Some(at) => (&authority[..at], authority[at + 1..].parse().ok()?),
        None => (authority, 80),
    };
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literal_urls() {
        let t = Target::parse("ws://127.0.0.1:9001/chat?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!((t.host.as_str(), t.path.as_str()), ("127.0.0.1:9001", "/chat?x=1"));
        assert_eq!(Target::parse("ws://[::1]:9").unwrap().addr, "[::1]:9".parse().unwrap());
        assert_eq!(Target::parse("ws://[::1]:9").unwrap().host, "[::1]:9");
        let t = Target::parse("ws://127.0.0.9").unwrap();
        assert_eq!((t.addr.port(), t.host.as_str(), t.path.as_str()), (80, "127.0.0.9", "/"));
        assert_eq!(Target::parse("ws://127.0.0.9:80/").unwrap().host, "127.0.0.9");
        assert_eq!(Target::parse("ws://127.0.0.1:9?a=b").unwrap().path, "/?a=b");
        // Any address is a target now; parsing one does not contact it.
        let t = Target::parse("ws://192.0.2.7:9001/").unwrap();
        assert!(!t.addr.ip().is_loopback() && t.addr.is_ipv4());
        assert!(Target::parse("ws://[2001:db8::1]:443/").unwrap().addr.is_ipv6());
    }

    #[test]
    fn resolves_names() {
        let t = Target::parse("ws://localhost:9001/ws").unwrap();
        assert!(t.addr.ip().is_loopback(), "{t:?}");
        assert_eq!((t.addr.port(), t.host.as_str()), (9001, "localhost:9001"));
        assert_eq!(Target::parse("ws://LOCALHOST").unwrap().host, "LOCALHOST");
    }

    #[test]
    fn refuses_bad_urls_clearly() {
        for (url, says) in [
            ("wss://127.0.0.1/", "only ws://"),
            ("ws://127.0.0.1:x/", "bad host or port"),
            ("ws://", "bad host or port"),
            ("ws://:9001/", "bad host or port"),
            ("ws://[::1/", "bad"),
            ("ws://user@127.0.0.1/", "bad host or port"),
            ("ws://bad!name:9001/", "neither an IP address nor a host name"),
            ("ws://a..b/", "neither an IP address nor a host name"),
        ] {
            let err = Target::parse(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
