//! TLS for `wss://` (and `https://`), with [rustls] and its `ring` provider.
//!
//! The server side: [`Certificates`] holds the certificate chain and key the listener presents,
//! replaceable while connections run (a reload never touches an established session: each keeps
//! the keys it negotiated), and [`server_config`] builds the rustls configuration the engine
//! takes with [`ServerBuilder::tls`](crate::ServerBuilder::tls): TLS 1.3 and 1.2, ALPN `http/1.1`,
//! session tickets and a session cache for resumption, no 0-RTT (a WebSocket upgrade is not
//! idempotent). The engine drives rustls' unbuffered API between the backend's bytes and the
//! WebSocket session, so an idle TLS connection keeps no plaintext or ciphertext buffer.
//!
//! The client side ([`client_config`]): the webpki roots, or the certificates of a CA file.

mod client;

pub use self::client::client_config;
pub use rustls;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS 1.2 sessions the server remembers for resumption by session id (TLS 1.3 resumes from
/// stateless tickets). An entry is about 200 bytes: 16 Ki of them is a few MiB per server.
const SESSION_CACHE: usize = 16 * 1024;

/// Why a certificate, key or TLS configuration could not be loaded.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        error: io::Error,
    },
    /// A PEM file held nothing usable of what was expected.
    Pem {
        /// What was looked for: "certificate" or "private key".
        what: &'static str,
        /// Where (a path, or "PEM data").
        source: String,
        /// What the PEM parser said.
        detail: String,
    },
    /// rustls refused the key, the chain or the configuration (for instance, a key that does
    /// not match the certificate).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::Pem { what, source, detail } => write!(f, "no {what} in {source}: {detail}"),
            TlsError::Rustls(error) => write!(f, "TLS: {error}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<rustls::Error> for TlsError {
    fn from(error: rustls::Error) -> Self {
        TlsError::Rustls(error)
    }
}

/// The crypto provider every configuration here uses (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_owned(), error })
}

/// The certificates of a PEM chain (leaf first), for a server's chain or a client's CA file.
pub(crate) fn pem_certificates(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |detail: String| TlsError::Pem { what: "certificate", source: source.to_owned(), detail };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error("no CERTIFICATE section".to_owned()));
    }
    Ok(chain)
}

/// A certificate chain and its key, checked against each other.
fn certified_key(chain_pem: &[u8], key_pem: &[u8], source: &str) -> Result<CertifiedKey, TlsError> {
    let chain = pem_certificates(chain_pem, source)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        what: "private key",
        source: source.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// The certificate chain and key a TLS listener presents, replaceable at any time: new
/// handshakes use the new pair, established connections keep theirs.
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}

impl Certificates {
    /// From PEM data: the chain (leaf first, then intermediates) and the private key (PKCS#8,
    /// PKCS#1 or SEC1), which must match the leaf.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Arc<Self>, TlsError> {
        let key = certified_key(chain, key, "PEM data")?;
        Ok(Arc::new(Self { current: RwLock::new(Arc::new(key)) }))
    }

    /// From PEM files (see [`Certificates::from_pem`]).
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Arc<Self>, TlsError> {
        let key = Self::load(chain.as_ref(), key.as_ref())?;
        Ok(Arc::new(Self { current: RwLock::new(Arc::new(key)) }))
    }

    fn load(chain: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
        let source = format!("{} / {}", chain.display(), key.display());
        certified_key(&read(chain)?, &read(key)?, &source)
    }

    /// Replaces the pair with the one in these PEM files. On any error (a file missing, a
    /// chain that does not parse, a key that does not match) the current pair stays.
    pub fn reload_pem_files(&self, chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<(), TlsError> {
        let key = Self::load(chain.as_ref(), key.as_ref())?;
        self.set(key);
        Ok(())
    }

    /// Replaces the pair with this PEM data (see [`Certificates::reload_pem_files`]).
    pub fn reload_pem(&self, chain: &[u8], key: &[u8]) -> Result<(), TlsError> {
        let key = certified_key(chain, key, "PEM data")?;
        self.set(key);
        Ok(())
    }

    fn set(&self, key: CertifiedKey) {
        let key = Arc::new(key);
        match self.current.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server configuration for a WebSocket listener presenting `certificates`: TLS 1.3 and
/// 1.2, ALPN `http/1.1` (a client that offers only other protocols is refused, as RFC 7301
/// asks), session tickets (TLS 1.3, keys rotated every 6 hours) and a session cache (TLS 1.2)
/// for resumption, no early data. Adjust the result before handing it to the engine if
/// needed (it is a plain [`ServerConfig`]).
pub fn server_config(certificates: Arc<Certificates>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.max_early_data_size = 0;
    Ok(config)
}

#[cfg(test)]
mod tests;
