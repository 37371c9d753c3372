//! TLS on the two listeners: the certificates read at start, re-read on SIGHUP and
//! `POST /v1/tls/reload`, and the rustls configurations built on them once.
//!
//! A reload swaps the pair inside the same [`Certificates`], which both configurations resolve
//! through on every handshake: new handshakes see the new certificate, established connections
//! keep the session they negotiated, and nothing is restarted. A file that does not load keeps
//! the previous pair.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use throng::tls::rustls::ServerConfig;
use throng::tls::{server_config, Certificates, TlsError};

use super::config::{Settings, TlsFiles};
use super::metrics::Counters;

/// One listener's certificate files and what was loaded from them.
struct Pair {
    /// `client` or `admin`: how logs and answers name the listener.
    listener: &'static str,
    /// The options that name the files, for messages the operator can act on.
    keys: &'static str,
    cert: PathBuf,
    key: PathBuf,
    certificates: Arc<Certificates>,
    config: Arc<ServerConfig>,
}

impl Pair {
    fn load(listener: &'static str, keys: &'static str, files: TlsFiles<'_>) -> Result<Pair, String> {
        let fail = |e: TlsError| match e {
            // rustls' refusals (a key that does not match) do not say which files they read.
            TlsError::Rustls(_) => {
                format!("{keys}: {e} ({} / {})", files.cert.display(), files.key.display())
            }
            _ => format!("{keys}: {e}"),
        };
        let certificates = Certificates::from_pem_files(files.cert, files.key).map_err(fail)?;
        let config = Arc::new(server_config(certificates.clone()).map_err(fail)?);
        Ok(Pair {
            listener,
            keys,
            cert: files.cert.to_owned(),
            key: files.key.to_owned(),
            certificates,
            config,
        })
    }

    fn reload(&self) -> Result<(), String> {
        self.certificates.reload_pem_files(&self.cert, &self.key).map_err(|e| {
            let files = format!("{} / {}", self.cert.display(), self.key.display());
            format!("{} listener ({}, {files}): {e}", self.listener, self.keys)
        })
    }
}

/// The listeners' certificates; either listener may have none.
pub(crate) struct Tls {
    client: Option<Pair>,
    admin: Option<Pair>,
}

impl Tls {
    /// Reads the files the settings name. An error names the options and the file at fault:
    /// the gateway does not start on a certificate it cannot serve.
    pub(crate) fn load(s: &Settings) -> Result<Tls, String> {
        let client = s.tls().map(|f| Pair::load("client", "tls_cert, tls_key", f)).transpose()?;
        let admin =
            s.admin_tls().map(|f| Pair::load("admin", "admin_tls_cert, admin_tls_key", f)).transpose()?;
        Ok(Tls { client, admin })
    }

    /// The client listener's configuration, for the engine.
    pub(crate) fn client(&self) -> Option<Arc<ServerConfig>> {
        self.client.as_ref().map(|p| p.config.clone())
    }

    /// The admin listener's configuration.
    pub(crate) fn admin(&self) -> Option<&Arc<ServerConfig>> {
        self.admin.as_ref().map(|p| &p.config)
    }

    /// Whether either listener has TLS.
    pub(crate) fn is_on(&self) -> bool {
        self.client.is_some() || self.admin.is_some()
    }

    /// Re-reads every listener's files (`trigger` says what asked, for the log). Each listener
    /// stands alone: one whose files fail keeps its previous pair while the other takes its new
    /// one. Counted once per reload, as an error when any listener kept its pair. `Ok` holds
    /// the listeners reloaded, `Err` what failed.
    pub(crate) fn reload(&self, counters: &Counters, trigger: &'static str) -> Result<Value, String> {
        let (mut reloaded, mut failed) = (Vec::new(), Vec::new());
        for pair in self.client.iter().chain(&self.admin) {
            match pair.reload() {
                Ok(()) => reloaded.push(pair.listener),
                Err(e) => failed.push(e),
            }
        }
        if failed.is_empty() {
            counters.inc(&counters.tls_reloads_ok);
            tracing::info!(trigger, listeners = ?crate::logging::List(&reloaded), "TLS certificates reloaded");
            return Ok(json!({ "reloaded": reloaded }));
        }
        counters.inc(&counters.tls_reloads_failed);
        let mut why = format!("{}; the previous certificate stays in use", failed.join("; "));
        if !reloaded.is_empty() {
            why.push_str(&format!(" (reloaded: {})", reloaded.join(", ")));
        }
        tracing::error!(trigger, "TLS reload failed: {why}");
        Err(why)
    }
}
