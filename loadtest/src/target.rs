//! Target URLs: `ws://` or `wss://HOST[:PORT][/PATH]` (and the `http://` publish endpoint of
//! `fanout`), HOST an IP literal (`[…]` for IPv6) or a DNS name resolved with the system
//! resolver.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use throng::tls::rustls::client::Resumption;
use throng::tls::rustls::pki_types::ServerName;
use throng::tls::rustls::ClientConfig;

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
    /// `wss://`: how every connection runs TLS.
    pub(crate) tls: Option<Tls>,
}

/// The TLS side of a `wss://` target.
#[derive(Clone, Debug)]
pub(crate) struct Tls {
    /// Shared by all the connections of a loop: with resumption on, its session cache is what
    /// lets a new connection resume an earlier one's session.
    pub(crate) config: Arc<ClientConfig>,
    /// Sent (SNI, for a name) and checked against the certificate: the URL's host.
    pub(crate) name: ServerName<'static>,
}

impl Target {
    /// Parses and resolves a `ws://` or `wss://` URL, TLS with the webpki roots and session
    /// resumption.
    #[cfg(test)]
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        Self::parse_tls(url, None, true)
    }

    /// Parses and resolves a `ws://` or `wss://` URL (port 80 or 443 when absent); a `wss://`
    /// one trusts the CAs of `ca_file` (else the webpki roots) and resumes sessions with
    /// `resume`. `ca_file` with a `ws://` URL is an error: it would be silently unused.
    pub(crate) fn parse_tls(url: &str, ca_file: Option<&Path>, resume: bool) -> Result<Self, String> {
        if url.starts_with("ws://") {
            if ca_file.is_some() {
                return Err(format!("{url:?}: --ca-file is for wss:// targets"));
            }
            return Self::parse_scheme(url, "ws://", "/", 80);
        }
        if !url.starts_with("wss://") {
            return Err(format!("{url:?}: only ws:// and wss:// URLs are supported"));
        }
        let mut target = Self::parse_scheme(url, "wss://", "/", 443)?;
        let mut config = throng::tls::client_config(ca_file).map_err(|e| format!("--ca-file: {e}"))?;
        if !resume {
            // Every handshake a full one: what a connect-cycle run then measures.
            Arc::make_mut(&mut config).resumption = Resumption::disabled();
        }
        let host = target.host_name();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{url:?}: {host:?} is not a valid TLS server name"))?;
        target.tls = Some(Tls { config, name });
        Ok(target)
    }

    /// Parses and resolves `scheme//HOST[:PORT][/PATH]` (`default_port` when absent,
    /// `default_path` when there is no path). The `Host` header is the URL's host, with the
    /// port unless it is the default. A name resolving to several addresses gives the first
    /// IPv4 one (servers listening on `127.0.0.1` are reached through `localhost` whatever the
    /// resolver lists first), else the first.
    pub(crate) fn parse_scheme(
        url: &str,
        scheme: &str,
        default_path: &str,
        default_port: u16,
    ) -> Result<Self, String> {
        let rest =
            url.strip_prefix(scheme).ok_or_else(|| format!("{url:?}: only {scheme} URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) if rest[at..].starts_with('?') => (&rest[..at], format!("/{}", &rest[at..])),
            Some(at) => (&rest[..at], rest[at..].to_owned()),
            None => (rest, default_path.to_owned()),
        };
        let (host, port) =
            split_port(authority, default_port).ok_or_else(|| format!("{url:?}: bad host or port"))?;
        let addr = resolve(host, port).map_err(|e| format!("{url:?}: {e}"))?;
        let host = if port == default_port { host.to_owned() } else { format!("{host}:{port}") };
        Ok(Target { url: url.to_owned(), addr, host, path, tls: None })
    }

    /// The host of the `Host` header without port or IPv6 brackets: the TLS server name.
    fn host_name(&self) -> &str {
        let host = match self.host.rfind(':') {
            Some(at) if !self.host.starts_with('[') || self.host[..at].ends_with(']') => &self.host[..at],
            _ => &self.host,
        };
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
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

/// `host:port`, `[v6]:port` or a bare host (`default_port`).
fn split_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let port_at = match authority.rfind(':') {
        Some(at) if !authority.starts_with('[') || authority[..at].ends_with(']') => Some(at),
        _ => None,
    };
    let (host, port) = match port_at {
        Some(at) => (&authority[..at], authority[at + 1..].parse().ok()?),
        None => (authority, default_port),
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
    fn parses_wss_urls() {
        let t = Target::parse("wss://127.0.0.1:4443/chat").unwrap();
        assert_eq!((t.addr.port(), t.host.as_str(), t.path.as_str()), (4443, "127.0.0.1:4443", "/chat"));
        let tls = t.tls.expect("TLS");
        assert_eq!(tls.name, ServerName::try_from("127.0.0.1").unwrap());
        assert_eq!(tls.config.alpn_protocols, [b"http/1.1".to_vec()]);
        let t = Target::parse("wss://localhost").unwrap();
        assert_eq!((t.addr.port(), t.host.as_str(), t.path.as_str()), (443, "localhost", "/"));
        assert_eq!(t.tls.unwrap().name, ServerName::try_from("localhost").unwrap());
        assert_eq!(Target::parse("wss://localhost:443/").unwrap().host, "localhost");
        assert_eq!(Target::parse("wss://127.0.0.1:80/").unwrap().host, "127.0.0.1:80");
        let t = Target::parse("wss://[::1]:8443/?x").unwrap();
        assert_eq!((t.host.as_str(), t.path.as_str()), ("[::1]:8443", "/?x"));
        assert_eq!(t.tls.unwrap().name, ServerName::try_from("::1").unwrap());
        assert_eq!(
            Target::parse("wss://[::1]").unwrap().tls.unwrap().name,
            ServerName::try_from("::1").unwrap()
        );
        assert!(Target::parse("ws://127.0.0.1/").unwrap().tls.is_none());
    }

    #[test]
    fn tls_options_shape_the_configuration() {
        let off = Target::parse_tls("wss://127.0.0.1/", None, false).unwrap().tls.unwrap();
        let on = Target::parse_tls("wss://127.0.0.1/", None, true).unwrap().tls.unwrap();
        // A disabled resumption keeps no session store: nothing is offered for a later handshake.
        let store = |tls: &Tls| format!("{:?}", tls.config.resumption);
        assert_ne!(store(&off), store(&on));
        assert_eq!(store(&off), format!("{:?}", Resumption::disabled()));
        let err =
            Target::parse_tls("wss://127.0.0.1/", Some(Path::new("/nonexistent.pem")), true).unwrap_err();
        assert!(err.contains("--ca-file: cannot read /nonexistent.pem"), "{err}");
        let err =
            Target::parse_tls("ws://127.0.0.1/", Some(Path::new("/nonexistent.pem")), true).unwrap_err();
        assert!(err.contains("--ca-file is for wss:// targets"), "{err}");
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
            ("http://127.0.0.1/", "only ws:// and wss://"),
            ("wss://127.0.0.1:x/", "bad host or port"),
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
