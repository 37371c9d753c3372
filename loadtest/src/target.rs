//! The target URL: `ws://HOST[:PORT][/PATH]`, restricted to loopback addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Where to connect and what to put in the request.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The URL as given.
    pub(crate) url: String,
    /// The resolved loopback address.
    pub(crate) addr: SocketAddr,
    /// The `Host` header value.
    pub(crate) host: String,
    /// The request target, `/path?query`.
    pub(crate) path: String,
}

impl Target {
    /// Parses `url`; only `ws://` to a loopback IP literal or `localhost` is accepted: this tool
    /// never sends load anywhere else.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest =
            url.strip_prefix("ws://").ok_or_else(|| format!("{url:?}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = split_port(authority).ok_or_else(|| format!("{url:?}: bad host or port"))?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("{url:?}: the host must be an IP literal or localhost"))?
        };
        if !ip.is_loopback() {
            return Err(format!("{url:?}: only loopback targets are allowed"));
        }
        Ok(Target {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// `host:port`, `[v6]:port` or a bare host (port 80).
fn split_port(authority: &str) -> Option<(&str, u16)> {
    if authority.is_empty() {
        return None;
    }
    let port_at = match authority.rfind(':') {
        Some(at) if !authority.starts_with('[') || authority[..at].ends_with(']') => Some(at),
        _ => None,
    };
    match port_at {
        Some(at) => Some((&authority[..at], authority[at + 1..].parse().ok()?)),
        None => Some((authority, 80)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t = Target::parse("ws://127.0.0.1:9001/chat?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!((t.host.as_str(), t.path.as_str()), ("127.0.0.1:9001", "/chat?x=1"));
        assert_eq!(Target::parse("ws://localhost:80").unwrap().path, "/");
        assert_eq!(Target::parse("ws://[::1]:9").unwrap().addr, "[::1]:9".parse().unwrap());
        assert_eq!(Target::parse("ws://127.0.0.9").unwrap().addr.port(), 80);
    }

    #[test]
    fn refuses_other_targets() {
        for url in
            ["wss://127.0.0.1/", "ws://10.0.0.1:9001/", "ws://example.com/", "ws://127.0.0.1:x/", "ws://"]
        {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }
}
