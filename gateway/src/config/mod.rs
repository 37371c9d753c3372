//! Configuration: defaults, then the TOML file, then `THRONG_*` variables, then flags.
//!
//! [`Options`] holds what one source gave (all `Option`s); [`Settings`] is the merged result with
//! every default filled in, which the rest of the gateway reads.

mod options;
mod source;
mod units;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::options::{
    Cli, ClientMessages, CompressionMode, IoBackend, List, LogFormat, Options, SlowConsumer,
};
pub use self::source::{CliSources, Source, Sources};
pub use self::units::{Size, Span};

/// The effective configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file the settings came from, if any (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
    /// Resolved from [`Options::listen`].
    pub listen: SocketAddr,
    /// Resolved from [`Options::admin_listen`].
    pub admin_listen: SocketAddr,
    /// Resolved from [`Options::admin_max_connections`].
    pub admin_max_connections: usize,
    /// Resolved from [`Options::admin_probe_reserve`].
    pub admin_probe_reserve: usize,
    /// Resolved from [`Options::admin_request_timeout`].
    pub admin_request_timeout: Duration,
    /// Resolved from [`Options::admin_idle_timeout`].
    pub admin_idle_timeout: Duration,
    /// Resolved from [`Options::admin_allowed_hosts`]; empty allows any `Host`.
    pub admin_allowed_hosts: Vec<String>,
    /// Resolved from [`Options::admin_insecure`].
    pub admin_insecure: bool,
    /// Resolved from [`Options::tls_cert`]; see [`Settings::tls`].
    pub tls_cert: Option<PathBuf>,
    /// Resolved from [`Options::tls_key`]; see [`Settings::tls`].
    pub tls_key: Option<PathBuf>,
    /// Resolved from [`Options::admin_tls_cert`]; see [`Settings::admin_tls`].
    pub admin_tls_cert: Option<PathBuf>,
    /// Resolved from [`Options::admin_tls_key`]; see [`Settings::admin_tls`].
    pub admin_tls_key: Option<PathBuf>,
    /// Resolved from [`Options::loops`].
    pub loops: usize,
    /// Resolved from [`Options::backend`].
    pub backend: IoBackend,
    /// Resolved from [`Options::workers`].
    pub workers: usize,
    /// Resolved from [`Options::ws_path`].
    pub ws_path: String,
    /// Resolved from [`Options::jwt_secret`].
    pub jwt_secret: Option<String>,
    /// Resolved from [`Options::jwt_require_exp`], [`Options::jwt_leeway`],
    /// [`Options::jwt_audience`] and [`Options::jwt_issuer`].
    pub jwt_rules: crate::auth::Validation,
    /// Resolved from [`Options::api_key`].
    pub api_key: Option<String>,
    /// Resolved from [`Options::allowed_origins`].
    pub allowed_origins: Vec<String>,
    /// Resolved from [`Options::subprotocols`].
    pub subprotocols: Vec<String>,
    /// Resolved from [`Options::log_format`].
    pub log_format: LogFormat,
    /// Resolved from [`Options::log_level`].
    pub log_level: String,
    /// Resolved from [`Options::max_message_size`].
    pub max_message_size: u64,
    /// Resolved from [`Options::handshake_timeout`].
    pub handshake_timeout: Duration,
    /// Resolved from [`Options::ping_interval`].
    pub ping_interval: Option<Duration>,
    /// Resolved from [`Options::pong_timeout`].
    pub pong_timeout: Duration,
    /// Resolved from [`Options::idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// Resolved from [`Options::max_connections`].
    pub max_connections: usize,
    /// Resolved from [`Options::max_connections_per_ip`].
    pub max_connections_per_ip: Option<usize>,
    /// Resolved from [`Options::max_channels_per_connection`].
    pub max_channels_per_connection: usize,
    /// Resolved from [`Options::max_outbound_bytes`].
    pub max_outbound_bytes: usize,
    /// Resolved from [`Options::slow_consumer`].
    pub slow_consumer: SlowConsumer,
    /// Resolved from [`Options::compression`].
    pub compression: CompressionMode,
    /// Resolved from [`Options::client_messages`].
    pub client_messages: ClientMessages,
    /// Resolved from [`Options::drain_timeout`].
    pub drain_timeout: Duration,
    /// Resolved from [`Options::demo`].
    pub demo: bool,
    /// Resolved from [`Options::event_capacity`].
    pub event_capacity: usize,
    /// Resolved from [`Options::command_capacity`].
    pub command_capacity: usize,
    /// Resolved from [`Options::client_message_rate`] (0: no limit).
    pub client_message_rate: u32,
    /// Resolved from [`Options::client_message_burst`].
    pub client_message_burst: u32,
    /// Resolved from [`Options::message_timeout`].
    pub message_timeout: Option<Duration>,
    /// Resolved from [`Options::max_assembly_bytes`].
    pub max_assembly_bytes: usize,
    /// The balancers trusted to send a PROXY header, when [`Options::proxy_protocol`] is on.
    pub proxy_trusted: Option<throng::net::CidrList>,
    /// Resolved from [`Options::broker`]: a Redis URL, checked; `None` for a single node.
    pub broker: Option<String>,
    /// Resolved from [`Options::broker_prefix`].
    pub broker_prefix: String,
    /// Resolved from [`Options::broker_max_message_size`].
    pub broker_max_message_size: usize,
    /// Resolved from [`Options::broker_raw_user_topics`].
    pub broker_raw_user_topics: bool,
}

/// The certificate chain and key files of a listener with TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsFiles<'a> {
    /// The PEM certificate chain, leaf first.
    pub cert: &'a Path,
    /// The PEM private key of the leaf.
    pub key: &'a Path,
}

/// A configuration that cannot be used, with a message naming the file and key at fault.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses a config file. Unknown keys and bad values are errors naming the key.
pub fn read_file(path: &Path) -> Result<Options, ConfigError> {
    read_file_with_lines(path).map(|(options, _)| options)
}

/// The file's options and the line of each key, for errors that point at it.
fn read_file_with_lines(path: &Path) -> Result<(Options, HashMap<String, usize>), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
    let options =
        toml::from_str(&text).map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
    Ok((options, source::key_lines(&text)))
}

impl Settings {
    /// Merges the command line (flags and environment, already combined by clap) over the
    /// config file it names, over the defaults, and checks the result: an error names the
    /// option and where its value came from. Start-up, `--print-config` and SIGHUP all use it.
    pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
        let (file, lines) = match &cli.config {
            Some(path) => read_file_with_lines(path)?,
            None => (Options::default(), HashMap::new()),
        };
        let sources = Sources::new(cli, &file, cli.config.as_deref(), &lines);
        Settings::resolve(cli.options.clone().or(file), cli.config.clone(), &sources)
    }

    fn resolve(o: Options, config_file: Option<PathBuf>, src: &Sources) -> Result<Settings, ConfigError> {
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        // An empty path (`THRONG_TLS_CERT=`) is not given, as an empty secret is.
        let path = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        let off_if_zero = |s: Option<Span>, default: Duration| {
            let d = s.map_or(default, |s| s.0);
            (!d.is_zero()).then_some(d)
        };
        // Sizes beyond the address space cannot be held anyway; validate() bounds them.
        let size =
            |s: Option<Size>, default: u64| usize::try_from(s.map_or(default, |s| s.0)).unwrap_or(usize::MAX);
        let proxy_trusted = match (o.proxy_protocol.unwrap_or(false), &o.proxy_trusted) {
            (false, _) => None,
            (true, None) => Some(throng::net::CidrList::default()),
            (true, Some(list)) => Some(
                throng::net::CidrList::parse_all(&list.0)
                    .map_err(|e| error(src, &["proxy_trusted"], &e.to_string()))?,
            ),
        };
        let admin_listen = o.admin_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090)));
        let settings = Settings {
            broker: nonempty(o.broker).filter(|b| b != "local"),
            broker_prefix: o.broker_prefix.unwrap_or_else(|| "throng".into()),
            broker_max_message_size: size(o.broker_max_message_size, 2 << 20),
            broker_raw_user_topics: o.broker_raw_user_topics.unwrap_or(false),
            demo: o.demo.unwrap_or(config_file.is_none()),
            config_file,
            listen: o.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            admin_listen,
            admin_max_connections: o.admin_max_connections.unwrap_or(256),
            admin_probe_reserve: o.admin_probe_reserve.unwrap_or(8),
            admin_request_timeout: o.admin_request_timeout.map_or(Duration::from_secs(10), |s| s.0),
            admin_idle_timeout: o.admin_idle_timeout.map_or(Duration::from_secs(30), |s| s.0),
            admin_allowed_hosts: o.admin_allowed_hosts.map(|l| l.0).unwrap_or_default(),
            admin_insecure: o.admin_insecure.unwrap_or(false),
            tls_cert: path(o.tls_cert),
            tls_key: path(o.tls_key),
            admin_tls_cert: path(o.admin_tls_cert),
            admin_tls_key: path(o.admin_tls_key),
            loops: o.loops.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            backend: o.backend.unwrap_or(IoBackend::Auto),
            workers: o.workers.unwrap_or(2),
            ws_path: o.ws_path.unwrap_or_else(|| "/ws".into()),
            jwt_secret: nonempty(o.jwt_secret),
            jwt_rules: crate::auth::Validation {
                require_exp: o.jwt_require_exp.unwrap_or(true),
                leeway: o.jwt_leeway.map_or(30, |s| s.0.as_secs()),
                audience: nonempty(o.jwt_audience),
                issuer: nonempty(o.jwt_issuer),
            },
            api_key: nonempty(o.api_key),
            allowed_origins: o.allowed_origins.map(|l| l.0).unwrap_or_default(),
            subprotocols: o.subprotocols.map_or_else(|| vec!["throng.v1".to_owned()], |l| l.0),
            log_format: o.log_format.unwrap_or(LogFormat::Human),
            log_level: o.log_level.unwrap_or_else(|| "info".into()),
            max_message_size: o.max_message_size.map_or(64 << 10, |s| s.0),
            handshake_timeout: o.handshake_timeout.map_or(Duration::from_secs(10), |s| s.0),
            ping_interval: off_if_zero(o.ping_interval, Duration::from_secs(30)),
            pong_timeout: o.pong_timeout.map_or(Duration::from_secs(10), |s| s.0),
            idle_timeout: off_if_zero(o.idle_timeout, Duration::ZERO),
            max_connections: o.max_connections.unwrap_or(1_000_000),
            max_connections_per_ip: o.max_connections_per_ip.filter(|&n| n > 0),
            max_channels_per_connection: o.max_channels_per_connection.unwrap_or(100),
            max_outbound_bytes: size(o.max_outbound_bytes, 4 << 20),
            slow_consumer: o.slow_consumer.unwrap_or(SlowConsumer::Close),
            compression: o.compression.unwrap_or(CompressionMode::Shared),
            client_messages: o.client_messages.unwrap_or(ClientMessages::Reject),
            drain_timeout: o.drain_timeout.map_or(Duration::from_secs(10), |s| s.0),
            event_capacity: o.event_capacity.unwrap_or(64 * 1024),
            command_capacity: o.command_capacity.unwrap_or(16 * 1024),
            client_message_rate: o.client_message_rate.unwrap_or(50),
            client_message_burst: o.client_message_burst.unwrap_or(100),
            message_timeout: off_if_zero(o.message_timeout, Duration::from_secs(30)),
            max_assembly_bytes: size(o.max_assembly_bytes, 64 << 20),
            proxy_trusted,
        };
        validate(&settings, src)?;
        Ok(settings)
    }

    /// The client listener's certificate and key, when it serves `wss://` (validation makes
    /// sure both or neither are set).
    pub fn tls(&self) -> Option<TlsFiles<'_>> {
        Some(TlsFiles { cert: self.tls_cert.as_deref()?, key: self.tls_key.as_deref()? })
    }

    /// The admin listener's certificate and key, when it serves `https://`.
    pub fn admin_tls(&self) -> Option<TlsFiles<'_>> {
        Some(TlsFiles { cert: self.admin_tls_cert.as_deref()?, key: self.admin_tls_key.as_deref()? })
    }

    /// The settings as JSON for `--print-config` and `GET /v1/stats`, secrets redacted.
    pub fn to_json(&self) -> serde_json::Value {
        let secs = |d: Option<Duration>| d.map_or_else(|| "off".to_owned(), |d| Span(d).to_string());
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        serde_json::json!({
            "config_file": self.config_file.as_ref().map(|p| p.display().to_string()),
            "listen": self.listen.to_string(),
            "admin_listen": self.admin_listen.to_string(),
            "admin_max_connections": self.admin_max_connections,
            "admin_probe_reserve": self.admin_probe_reserve,
            "admin_request_timeout": secs(Some(self.admin_request_timeout)),
            "admin_idle_timeout": secs(Some(self.admin_idle_timeout)),
            "admin_allowed_hosts": self.admin_allowed_hosts,
            "admin_insecure": self.admin_insecure,
            "tls_cert": path(&self.tls_cert),
            "tls_key": path(&self.tls_key),
            "admin_tls_cert": path(&self.admin_tls_cert),
            "admin_tls_key": path(&self.admin_tls_key),
            "loops": self.loops,
            "backend": self.backend.to_string(),
            "workers": self.workers,
            "ws_path": self.ws_path,
            "jwt_secret": redacted(&self.jwt_secret),
            "jwt_require_exp": self.jwt_rules.require_exp,
            "jwt_leeway": Span(Duration::from_secs(self.jwt_rules.leeway)).to_string(),
            "jwt_audience": self.jwt_rules.audience,
            "jwt_issuer": self.jwt_rules.issuer,
            "api_key": redacted(&self.api_key),
            "allowed_origins": self.allowed_origins,
            "subprotocols": self.subprotocols,
            "log_format": self.log_format.to_string(),
            "log_level": self.log_level,
            "max_message_size": self.max_message_size,
            "handshake_timeout": secs(Some(self.handshake_timeout)),
            "ping_interval": secs(self.ping_interval),
            "pong_timeout": secs(Some(self.pong_timeout)),
            "idle_timeout": secs(self.idle_timeout),
            "max_connections": self.max_connections,
            "max_connections_per_ip": self.max_connections_per_ip.unwrap_or(0),
            "max_channels_per_connection": self.max_channels_per_connection,
            "max_outbound_bytes": self.max_outbound_bytes,
            "slow_consumer": self.slow_consumer.to_string(),
            "compression": self.compression.to_string(),
            "client_messages": self.client_messages.to_string(),
            "drain_timeout": secs(Some(self.drain_timeout)),
            "demo": self.demo,
            "event_capacity": self.event_capacity,
            "command_capacity": self.command_capacity,
            "client_message_rate": self.client_message_rate,
            "client_message_burst": self.client_message_burst,
            "message_timeout": secs(self.message_timeout),
            "max_assembly_bytes": self.max_assembly_bytes,
            "proxy_protocol": self.proxy_trusted.is_some(),
            "proxy_trusted": self.proxy_trusted.as_ref().map(|l| l.to_string()),
            "broker": self.broker.as_deref().map_or_else(|| "local".to_owned(), crate::broker::redact_url),
            "broker_prefix": self.broker_prefix,
            "broker_max_message_size": self.broker_max_message_size,
            "broker_raw_user_topics": self.broker_raw_user_topics,
        })
    }
}

/// An error about `keys` (the first is the one at fault) that says where each value came from.
fn error(src: &Sources, keys: &[&str], why: &str) -> ConfigError {
    let from: Vec<String> = match keys {
        [key] => vec![src.of(key).to_string()],
        _ => keys.iter().map(|k| format!("{k}: {}", src.of(k))).collect(),
    };
    ConfigError(format!("{}: {why} ({})", keys.first().copied().unwrap_or("config"), from.join("; ")))
}

/// Every rule a configuration must meet to work, in one place: start-up, `--print-config` and
/// SIGHUP reload all get here through [`Settings::load`]. A value that would be accepted but
/// could never work (a zero capacity, a timeout of nothing, an address both listeners want)
/// is refused here rather than discovered in production.
fn validate(s: &Settings, src: &Sources) -> Result<(), ConfigError> {
    let check = |ok: bool, keys: &[&str], why: &str| if ok { Ok(()) } else { Err(error(src, keys, why)) };
    let at_least_1 = "must be at least 1";
    // Listeners. Port 0 picks a free port for each, so only a fixed port can collide; an
    // unspecified address (0.0.0.0, ::) takes the port on every address.
    let (a, c) = (s.admin_listen, s.listen);
    let same_ip = a.ip() == c.ip() || a.ip().is_unspecified() || c.ip().is_unspecified();
    check(
        !(a.port() != 0 && a.port() == c.port() && same_ip),
        &["admin_listen", "listen"],
        &format!("{a} overlaps the client listener {c}: give the admin API its own port"),
    )?;
    // Anyone who can reach a non-loopback admin API could publish to every client and close
    // connections: that needs a key, or an explicit opt-out.
    check(
        a.ip().to_canonical().is_loopback() || s.api_key.is_some() || s.admin_insecure,
        &["admin_listen"],
        &format!(
            "{a} is not a loopback address and no api_key is set: set api_key (--api-key, \
             THRONG_API_KEY) so the admin API needs a key, or admin_insecure = true \
             (--admin-insecure true) to serve it without one"
        ),
    )?;
    check(s.admin_max_connections > 0, &["admin_max_connections"], at_least_1)?;
    check(!s.admin_request_timeout.is_zero(), &["admin_request_timeout"], "must be more than 0")?;
    check(!s.admin_idle_timeout.is_zero(), &["admin_idle_timeout"], "must be more than 0")?;
    if let Some(h) = s.admin_allowed_hosts.iter().find(|h| h.contains(['/', ' ', '@'])) {
        check(false, &["admin_allowed_hosts"], &format!("{h:?} is not a Host value (e.g. localhost:9090)"))?;
    }
    // TLS: a certificate without its key (or a key without its certificate) cannot serve.
    for (cert, key, names) in [
        (&s.tls_cert, &s.tls_key, ["tls_cert", "tls_key"]),
        (&s.admin_tls_cert, &s.admin_tls_key, ["admin_tls_cert", "admin_tls_key"]),
    ] {
        let (given, missing) = if cert.is_some() { (names[0], names[1]) } else { (names[1], names[0]) };
        check(
            cert.is_some() == key.is_some(),
            &[missing, given],
            &format!("{given} is set without it: give both (the listener then serves TLS) or neither"),
        )?;
    }
    // The engine reads no PROXY header ahead of a TLS handshake.
    check(
        !(s.tls_cert.is_some() && s.proxy_trusted.is_some()),
        &["proxy_protocol", "tls_cert"],
        "not with TLS on the client listener: terminate TLS at the balancer, or turn proxy_protocol off",
    )?;
    // Threads.
    let loops = 1..=throng::engine::MAX_LOOPS;
    check(loops.contains(&s.loops), &["loops"], &format!("must be between 1 and {}", loops.end()))?;
    let shards = 1..=throng::engine::MAX_SHARDS;
    check(shards.contains(&s.workers), &["workers"], &format!("must be between 1 and {}", shards.end()))?;
    check(s.event_capacity > 0, &["event_capacity"], at_least_1)?;
    check(s.command_capacity > 0, &["command_capacity"], at_least_1)?;
    // Clients.
    check(
        s.ws_path.starts_with('/') && !s.ws_path.contains('?'),
        &["ws_path"],
        "must start with / and have no query",
    )?;
    if let Some(o) = s.allowed_origins.iter().find(|o| !is_origin(o)) {
        let why =
            format!("{o:?} is not an origin: write scheme://host[:port], e.g. https://app.example.com, or *");
        check(false, &["allowed_origins"], &why)?;
    }
    if let Some(p) = s.subprotocols.iter().find(|p| p.starts_with("bearer.")) {
        check(false, &["subprotocols"], &format!("{p:?}: the bearer. prefix carries tokens"))?;
    }
    if let Some(p) = s.subprotocols.iter().find(|p| !is_token(p)) {
        check(
            false,
            &["subprotocols"],
            &format!("{p:?} is not an HTTP token (no spaces, quotes or separators)"),
        )?;
    }
    if let Some(secret) = &s.jwt_secret {
        let min = crate::auth::MIN_SECRET_LEN;
        let why = format!("an HS256 secret must be at least {min} bytes (try `openssl rand -base64 32`)");
        check(secret.len() >= min, &["jwt_secret"], &why)?;
    }
    check(s.max_connections > 0, &["max_connections"], at_least_1)?;
    check(s.max_message_size > 0, &["max_message_size"], "must be at least 1 byte")?;
    check(s.max_outbound_bytes > 0, &["max_outbound_bytes"], "must be at least 1 byte")?;
    check(
        s.max_assembly_bytes as u64 >= s.max_message_size,
        &["max_assembly_bytes", "max_message_size"],
        "must be at least max_message_size, or a fragmented message of the largest allowed size could never arrive",
    )?;
    check(!s.handshake_timeout.is_zero(), &["handshake_timeout"], "must be more than 0")?;
    if let Some(ping) = s.ping_interval {
        check(
            !s.pong_timeout.is_zero(),
            &["pong_timeout", "ping_interval"],
            "must be more than 0 while pings are on (ping_interval = 0 turns them off)",
        )?;
        if let Some(idle) = s.idle_timeout {
            let why = format!(
                "{} would close a quiet client before the ping at {} could keep it: make it longer, or 0",
                Span(idle),
                Span(ping)
            );
            check(idle > ping, &["idle_timeout", "ping_interval"], &why)?;
        }
    }
    check(
        s.client_message_rate == 0 || s.client_message_burst > 0,
        &["client_message_burst", "client_message_rate"],
        "must be at least 1 while client_message_rate is on (0 turns the rate limit off)",
    )?;
    // Logs.
    crate::logging::check_filter(&s.log_level).map_err(|e| error(src, &["log_level"], &e))?;
    // Balancers and broker.
    if s.proxy_trusted.as_ref().is_some_and(|l| l.is_empty()) {
        check(
            false,
            &["proxy_trusted", "proxy_protocol"],
            "proxy_protocol is on: list the balancers' addresses",
        )?;
    }
    if let Some(url) = &s.broker {
        crate::broker::check_url(url).map_err(|e| error(src, &["broker"], &e))?;
    }
    let prefix = &s.broker_prefix;
    check(
        !prefix.is_empty() && !prefix.bytes().any(|b| b.is_ascii_whitespace() || b == b'*'),
        &["broker_prefix"],
        "must be non-empty, without spaces or *",
    )?;
    let envelope = crate::broker::envelope::HEADER_LEN;
    check(
        s.broker_max_message_size > envelope,
        &["broker_max_message_size"],
        &format!("must be more than the {envelope}-byte envelope, or every message from Redis is dropped"),
    )?;
    Ok(())
}

/// `*`, or `scheme://host[:port]` (a host may start with `*.`): what a browser sends as
/// `Origin`, which has no path.
fn is_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, host)) = o.trim_end_matches('/').split_once("://") else { return false };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    scheme_ok && !host.is_empty() && !host.contains(['/', '?', '#', '@', ' '])
}

/// An HTTP token (RFC 9110), which `Sec-WebSocket-Protocol` values must be.
fn is_token(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_without_anything() {
        let cli = Cli::try_parse_from(["throng"]).unwrap();
        let s = Settings::resolve(cli.options, None, &Sources::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.admin_listen.to_string(), "127.0.0.1:9090");
        assert!(s.demo && s.jwt_secret.is_none());
        assert_eq!(s.ping_interval, Some(Duration::from_secs(30)));
        assert_eq!(s.idle_timeout, None);
    }

    #[test]
    fn flags_beat_file() {
        let cli =
            Cli::try_parse_from(["throng", "--loops", "3", "--allowed-origins", "https://a,http://b:81"])
                .unwrap();
        let file: Options = toml::from_str("loops = 5\nworkers = 4\nping_interval = \"0\"").unwrap();
        let s = Settings::resolve(cli.options.or(file), Some("x.toml".into()), &Sources::default()).unwrap();
        assert_eq!((s.loops, s.workers), (3, 4));
        assert_eq!(s.allowed_origins, ["https://a", "http://b:81"]);
        assert_eq!(s.ping_interval, None);
        assert!(!s.demo, "a config file turns the demo off by default");
    }

    #[test]
    fn broker_url_is_checked_and_redacted() {
        let parse = |args: &[&str]| {
            Settings::resolve(Cli::try_parse_from(args).unwrap().options, None, &Sources::default())
        };
        let s = parse(&["throng"]).unwrap();
        assert_eq!((s.broker.as_deref(), s.broker_prefix.as_str()), (None, "throng"));
        assert_eq!(s.to_json()["broker"], "local");
        let s = parse(&["throng", "--broker", "redis://:pw@10.0.0.9:6379", "--broker-prefix", "f1"]).unwrap();
        assert_eq!(s.broker.as_deref(), Some("redis://:pw@10.0.0.9:6379"));
        assert_eq!(s.to_json()["broker"], "redis://:<redacted>@10.0.0.9:6379");
        assert_eq!(s.to_json()["broker_prefix"], "f1");
        assert_eq!(parse(&["throng", "--broker", "local"]).unwrap().broker, None);
        let err = parse(&["throng", "--broker", "http://x"]).unwrap_err().to_string();
        assert!(err.starts_with("broker: "), "{err}");
        let err = parse(&["throng", "--broker-prefix", "a b"]).unwrap_err().to_string();
        assert!(err.starts_with("broker_prefix: "), "{err}");
    }

    #[test]
    fn jwt_options() {
        let parse = |args: &[&str]| {
            Settings::resolve(Cli::try_parse_from(args).unwrap().options, None, &Sources::default())
        };
        let s = parse(&["throng"]).unwrap();
        assert_eq!(s.jwt_rules, crate::auth::Validation::default());
        let err = parse(&["throng", "--jwt-secret", &"k".repeat(31)]).unwrap_err().to_string();
        assert!(err.starts_with("jwt_secret: ") && err.contains("32 bytes"), "{err}");
        assert!(!err.contains(&"k".repeat(31)), "the secret is not echoed: {err}");
        let args = ["throng", "--jwt-secret", &"k".repeat(32), "--jwt-require-exp", "false"];
        let s = parse(
            &[&args[..], &["--jwt-leeway", "5s", "--jwt-audience", "api", "--jwt-issuer", "me"]].concat(),
        )
        .unwrap();
        let rules = &s.jwt_rules;
        assert_eq!((rules.require_exp, rules.leeway), (false, 5));
        assert_eq!((rules.audience.as_deref(), rules.issuer.as_deref()), (Some("api"), Some("me")));
        assert_eq!(s.to_json()["jwt_leeway"], "5s");
    }

    #[test]
    fn a_public_admin_listener_needs_a_key_or_an_explicit_opt_out() {
        let parse = |args: &[&str]| {
            Settings::resolve(Cli::try_parse_from(args).unwrap().options, None, &Sources::default())
        };
        let err = parse(&["throng", "--admin-listen", "0.0.0.0:9090"]).unwrap_err().to_string();
        assert!(err.starts_with("admin_listen: 0.0.0.0:9090 is not a loopback"), "{err}");
        assert!(err.contains("set api_key") && err.contains("admin_insecure = true"), "{err}");
        assert!(parse(&["throng", "--admin-listen", "10.1.2.3:9090", "--api-key", ""]).is_err());
        assert!(parse(&["throng", "--admin-listen", "[::]:9090"]).is_err());
        let s = parse(&["throng", "--admin-listen", "0.0.0.0:9090", "--api-key", "k"]).unwrap();
        assert!(!s.admin_insecure);
        let s = parse(&["throng", "--admin-listen", "0.0.0.0:9090", "--admin-insecure", "true"]).unwrap();
        assert!(s.admin_insecure);
        for loopback in ["127.0.0.2:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert!(parse(&["throng", "--admin-listen", loopback]).is_ok(), "{loopback}");
        }
    }

    #[test]
    fn admin_limits_resolve_and_refuse_zero() {
        let parse = |args: &[&str]| {
            Settings::resolve(Cli::try_parse_from(args).unwrap().options, None, &Sources::default())
        };
        let s = parse(&["throng"]).unwrap();
        assert_eq!((s.admin_max_connections, s.admin_probe_reserve), (256, 8));
        assert_eq!(s.admin_request_timeout, Duration::from_secs(10));
        assert_eq!(s.admin_idle_timeout, Duration::from_secs(30));
        assert!(s.admin_allowed_hosts.is_empty());
        let s =
            parse(&["throng", "--admin-allowed-hosts", "localhost, a:1", "--admin-request-timeout", "500ms"])
                .unwrap();
        assert_eq!(s.admin_allowed_hosts, ["localhost", "a:1"]);
        assert_eq!(s.admin_request_timeout, Duration::from_millis(500));
        for (flag, key) in [
            ("--admin-max-connections", "admin_max_connections"),
            ("--admin-request-timeout", "admin_request_timeout"),
            ("--admin-idle-timeout", "admin_idle_timeout"),
        ] {
            let err = parse(&["throng", flag, "0"]).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = toml::from_str::<Options>("lisen = \"127.0.0.1:1\"").unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = toml::from_str::<Options>("ping_interval = \"soon\"").unwrap_err().to_string();
        assert!(err.contains("ping_interval") && err.contains("soon"), "{err}");
    }
}
