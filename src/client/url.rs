//! `ws://` and `wss://` URLs: the parts a dialer needs, and nothing more.

use std::net::Ipv6Addr;

use super::ClientError;

/// The default ports of `ws://` and `wss://`.
const WS_PORT: u16 = 80;
const WSS_PORT: u16 = 443;

/// A parsed `ws[s]://host[:port][/path][?query]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// `wss://`: the connection runs over TLS.
    pub(crate) tls: bool,
    /// What the resolver takes, and the TLS server name: a name or an IP literal (IPv6 without
    /// brackets).
    pub(crate) host: String,
    /// The TCP port (80 for `ws://`, 443 for `wss://` when the URL had none).
    pub(crate) port: u16,
    /// The `Host` header value: the authority as written, brackets and explicit port kept.
    pub(crate) authority: String,
    /// The origin-form request target, `/` when the URL had no path.
    pub(crate) path_and_query: String,
}

fn invalid(why: &'static str) -> ClientError {
    ClientError::InvalidUrl(why)
}

/// Parses a `ws://` or `wss://` URL; other schemes, user info, fragments, non-ASCII and
/// whitespace are [`ClientError::InvalidUrl`].
pub(crate) fn parse(url: &str) -> Result<Target, ClientError> {
    let (scheme, rest) = url.split_once("://").ok_or(invalid("expected ws[s]://host[:port]/path"))?;
    let tls = match scheme {
        _ if scheme.eq_ignore_ascii_case("ws") => false,
        _ if scheme.eq_ignore_ascii_case("wss") => true,
        _ => return Err(invalid("scheme must be ws:// or wss://")),
    };
    if rest.contains('#') {
        return Err(invalid("a WebSocket URL has no fragment (RFC 6455 §3)"));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(invalid("user info is not supported; pass an Authorization header"));
    }
    let (host, port) = split_authority(authority, if tls { WSS_PORT } else { WS_PORT })?;
    let path_and_query = match target.as_bytes().first() {
        None => "/".to_owned(),
        Some(b'?') => format!("/{target}"),
        Some(_) => target.to_owned(),
    };
    if !path_and_query.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("path and query must be visible ASCII (percent-encode the rest)"));
    }
    Ok(Target { tls, host, port, authority: authority.to_owned(), path_and_query })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `default_port` when there is none.
fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), ClientError> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']').ok_or(invalid("unclosed [ in host"))?;
        v6.parse::<Ipv6Addr>().map_err(|_| invalid("invalid IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(invalid("unexpected text after ]"))?),
        };
        (v6, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    let name_ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':');
    if !host.bytes().all(name_ok) {
        return Err(invalid("host must be an ASCII name or IP address (use punycode)"));
    }
    let port = match port {
        None => default_port,
        Some(digits) => match digits.parse::<u16>() {
            Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(invalid("port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, u16, String, String) {
        let t = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(!t.tls, "{url}");
        (t.host, t.port, t.authority, t.path_and_query)
    }

    fn tls(url: &str) -> (String, u16, String, String) {
        let t = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(t.tls, "{url}");
        (t.host, t.port, t.authority, t.path_and_query)
    }

    fn err(url: &str) -> String {
        match parse(url) {
            Err(ClientError::InvalidUrl(why)) => why.to_owned(),
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }

    #[test]
    fn accepted_forms() {
        let s = String::from;
        assert_eq!(ok("ws://example.com"), (s("example.com"), 80, s("example.com"), s("/")));
        assert_eq!(ok("WS://h:9001/a/b?x=y&z"), (s("h"), 9001, s("h:9001"), s("/a/b?x=y&z")));
        assert_eq!(ok("ws://h?x=1"), (s("h"), 80, s("h"), s("/?x=1")));
        assert_eq!(ok("ws://127.0.0.1:1/"), (s("127.0.0.1"), 1, s("127.0.0.1:1"), s("/")));
        assert_eq!(ok("ws://[::1]:8080/p"), (s("::1"), 8080, s("[::1]:8080"), s("/p")));
        assert_eq!(ok("ws://[::1]"), (s("::1"), 80, s("[::1]"), s("/")));
        assert_eq!(tls("wss://example.com"), (s("example.com"), 443, s("example.com"), s("/")));
        assert_eq!(tls("WSS://h:4443/x?y"), (s("h"), 4443, s("h:4443"), s("/x?y")));
        assert_eq!(tls("wss://127.0.0.1/"), (s("127.0.0.1"), 443, s("127.0.0.1"), s("/")));
        assert_eq!(tls("wss://[::1]:8443"), (s("::1"), 8443, s("[::1]:8443"), s("/")));
    }

    #[test]
    fn rejected_forms() {
        for url in [
            "h:80/",
            "http://h/",
            "https://h/",
            "wss://",
            "wss://h:0/",
            "wss://u@h/",
            "ws://",
            "ws:///path",
            "ws://:80/",
            "ws://h:/",
            "ws://h:0/",
            "ws://h:65536/",
            "ws://h:+80/",
            "ws://h:x/",
            "ws://h:1:2/",
            "ws://[::1/",
            "ws://[nope]/",
            "ws://[::1]x/",
            "ws://user:pw@h/",
            "ws://h/#frag",
            "ws://h/a b",
            "ws://h/é",
            "ws://hé/",
        ] {
            assert!(!err(url).is_empty(), "{url}");
        }
    }
}
