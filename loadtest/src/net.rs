//! Sockets: source addresses and non-blocking connects.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mio::net::TcpStream;
use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use throng::tls::rustls;

/// The most source addresses a range may name.
const MAX_SOURCES: usize = 4096;

/// Local addresses to connect from, used round-robin. Empty: let the kernel choose.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources {
    addrs: Vec<IpAddr>,
    next: usize,
}

impl Sources {
    /// Parses `127.0.0.2-127.0.0.40` (IPv4 range), `a,b,c` or one address, of the target's
    /// family. For a loopback target every source must be a loopback address; for any other
    /// target every source must be a non-loopback address of this machine (checked by binding
    /// to it: the connects would fail otherwise, one by one).
    pub(crate) fn new(spec: Option<&str>, target: SocketAddr) -> Result<Self, String> {
        let Some(spec) = spec else { return Ok(Sources::default()) };
        let mut addrs = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((first, last)) => {
                    let bad = || format!("--sources: bad range {part:?}");
                    let first: Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
                    let last: Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
                    let (first, last) = (u32::from(first), u32::from(last));
                    if last < first || (last - first) as usize >= MAX_SOURCES {
                        return Err(format!("--sources: {part:?} is empty or longer than {MAX_SOURCES}"));
                    }
                    addrs.extend((first..=last).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
                }
                None => addrs.push(part.parse().map_err(|_| format!("--sources: not an address: {part:?}"))?),
            }
        }
        if addrs.is_empty() || addrs.len() > MAX_SOURCES {
            return Err(format!("--sources: between 1 and {MAX_SOURCES} addresses"));
        }
        if let Some(bad) = addrs.iter().find(|a| a.is_ipv4() != target.is_ipv4()) {
            return Err(format!("--sources: {bad} is not of the target's address family"));
        }
        if target.ip().is_loopback() {
            if let Some(bad) = addrs.iter().find(|a| !a.is_loopback()) {
                return Err(format!("--sources: {bad} is not a loopback address (the target is loopback)"));
            }
        } else if let Some(bad) = addrs.iter().find(|a| a.is_loopback() || !is_local(**a)) {
            return Err(format!(
                "--sources: {bad} is not an address of this machine's interfaces (the target is not loopback)"
            ));
        }
        Ok(Sources { addrs, next: 0 })
    }

    /// How many addresses there are (0: the kernel's choice).
    pub(crate) fn len(&self) -> usize {
        self.addrs.len()
    }

    /// The addresses, in order.
    pub(crate) fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    fn next(&mut self) -> Option<IpAddr> {
        let addr = *self.addrs.get(self.next)?;
        self.next = (self.next + 1) % self.addrs.len();
        Some(addr)
    }
}

/// Whether `ip` is assigned to this machine: a UDP socket binds to it (nothing is sent).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Starts a non-blocking connect to `dest` from the next source address. The port is chosen at
/// connect time (`IP_BIND_ADDRESS_NO_PORT`), so each source reaches the whole ephemeral range for
/// each destination.
pub(crate) fn connect(sources: &mut Sources, dest: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(dest), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_nodelay(true)?;
    if let Some(source) = sources.next() {
        if source.is_ipv4() {
            setsockopt(&socket, IpBindAddressNoPort, &true).map_err(io::Error::from)?;
        }
        socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    }
    match socket.connect(&SockAddr::from(dest)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// A short name for why a socket operation failed, used as a key in failure counts.
pub(crate) fn cause(e: &io::Error) -> &'static str {
    use nix::errno::Errno;
    // TLS failures come through the connection's reads as `InvalidData` carrying rustls' error.
    if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return tls_cause(tls);
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => return "refused",
        io::ErrorKind::ConnectionReset => return "reset",
        io::ErrorKind::ConnectionAborted => return "aborted",
        io::ErrorKind::AddrNotAvailable => return "addr_not_available",
        io::ErrorKind::TimedOut => return "timeout",
        io::ErrorKind::BrokenPipe => return "broken_pipe",
        _ => {}
    }
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE | Errno::ENFILE) => "too_many_open_files",
        Some(Errno::ENOBUFS | Errno::ENOMEM) => "no_memory",
        Some(Errno::EAGAIN) => "again",
        _ => "io_error",
    }
}

/// A short name for a TLS failure: the certificate problems a misconfigured run meets apart,
/// the rest by kind.
pub(crate) fn tls_cause(e: &rustls::Error) -> &'static str {
    use rustls::{CertificateError as Cert, Error};
    match e {
        Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => "tls_cert_expired",
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "tls_cert_wrong_name"
        }
        Error::InvalidCertificate(Cert::UnknownIssuer) => "tls_cert_unknown_issuer",
        Error::InvalidCertificate(_) => "tls_cert_invalid",
        Error::AlertReceived(_) => "tls_alert_received",
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => "tls_not_tls",
        Error::NoApplicationProtocol => "tls_no_alpn",
        _ => "tls_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SocketAddr {
        "127.0.0.1:9001".parse().unwrap()
    }

    #[test]
    fn tls_failures_are_named_through_io_errors() {
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(cause(&io::Error::new(io::ErrorKind::InvalidData, expired)), "tls_cert_expired");
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(tls_cause(&unknown), "tls_cert_unknown_issuer");
        assert_eq!(tls_cause(&rustls::Error::General("x".into())), "tls_error");
        assert_eq!(cause(&io::Error::new(io::ErrorKind::InvalidData, "not TLS")), "io_error");
    }

    #[test]
    fn parses_ranges_and_lists() {
        let mut s = Sources::new(Some("127.0.0.2-127.0.0.4,127.0.0.9"), target()).unwrap();
        assert_eq!(s.len(), 4);
        let got: Vec<_> = (0..5).map(|_| s.next().unwrap().to_string()).collect();
        assert_eq!(got, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9", "127.0.0.2"]);
        assert_eq!(Sources::new(None, target()).unwrap().len(), 0);
    }

    #[test]
    fn refuses_non_loopback_and_bad_ranges() {
        for spec in ["10.0.0.1", "127.0.0.5-127.0.0.2", "127.0.0.1-127.1.0.0", "::1", "x", ""] {
            assert!(Sources::new(Some(spec), target()).is_err(), "{spec}");
        }
    }

    #[test]
    fn sources_for_a_remote_target_must_be_local_and_not_loopback() {
        // Nothing is contacted: only the checks on the source addresses run.
        let remote: SocketAddr = "192.0.2.7:9001".parse().unwrap();
        let err = Sources::new(Some("127.0.0.2"), remote).unwrap_err();
        assert!(err.contains("not an address of this machine"), "{err}");
        // 192.0.2.0/24 is reserved for documentation: no interface of a test machine has it.
        let err = Sources::new(Some("192.0.2.99"), remote).unwrap_err();
        assert!(err.contains("not an address of this machine"), "{err}");
        assert!(Sources::new(Some("::1"), remote).unwrap_err().contains("family"));
        assert!(!is_local("192.0.2.99".parse().unwrap()));
        assert!(is_local("127.0.0.1".parse().unwrap()));
    }
}
