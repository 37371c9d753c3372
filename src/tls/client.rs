//! The client side's configuration: which certificate authorities a `wss://` client trusts.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use super::{pem_certificates, provider, read, TlsError};

/// A client configuration trusting the certificates of `ca_file` (PEM; one or more), or, without
/// one, the webpki roots (Mozilla's list, built in: no system files needed). TLS 1.3 and 1.2,
/// ALPN `http/1.1`, sessions resumed from the server's tickets.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let source = path.display().to_string();
            for certificate in pem_certificates(&read(path)?, &source)? {
                roots.add(certificate)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
