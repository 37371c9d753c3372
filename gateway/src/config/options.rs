//! Every option, once: the same struct is parsed from flags and `THRONG_*` variables by clap and
//! from the TOML file by serde, so a key, its flag and its variable cannot drift apart.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, ValueEnum};
use serde::Deserialize;

use super::units::{Size, Span};

/// The command line: the options plus what only makes sense on a command line.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "throng",
    version,
    // A later flag wins over an earlier one, so wrappers can append overrides.
    args_override_self = true,
    about = "A WebSocket connection gateway: clients subscribe to channels, your backend publishes \
             over HTTP.",
    after_help = "Precedence: flags > THRONG_* environment variables > config file > defaults. \
                  Durations take ms/s/m/h (bare number = seconds), sizes take B/KiB/MiB/GiB/KB/MB/GB. \
                  See docs/configuration.md."
)]
pub struct Cli {
    /// TOML config file (keys are the long flag names with `_` for `-`).
    #[arg(long, env = "THRONG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as JSON (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,

    #[allow(missing_docs)] // flattened: the help text is on each option
    #[command(flatten)]
    pub options: Options,

    /// Which options came from a flag and which from a variable; filled by [`Cli::parse_args`].
    #[arg(skip)]
    pub sources: super::source::CliSources,
}

/// The options shared by flags, environment and file. `None` means "not given here".
#[derive(Args, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Address for WebSocket clients [default: 127.0.0.1:8080].
    #[arg(long, env = "THRONG_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Address for the admin HTTP API, metrics and the demo page [default: 127.0.0.1:9090].
    #[arg(long, env = "THRONG_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Most admin connections served at once (the probe reserve aside); more get 503 busy
    /// [default: 256].
    #[arg(long, env = "THRONG_ADMIN_MAX_CONNECTIONS", value_name = "N")]
    pub admin_max_connections: Option<usize>,

    /// Admin connections kept beyond `admin_max_connections` for `/healthz` and `/readyz` only
    /// [default: 8].
    #[arg(long, env = "THRONG_ADMIN_PROBE_RESERVE", value_name = "N")]
    pub admin_probe_reserve: Option<usize>,

    /// Time an admin request has to arrive whole, head and body, from its first byte; over it:
    /// 408 [default: 10s].
    #[arg(long, env = "THRONG_ADMIN_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub admin_request_timeout: Option<Span>,

    /// Time a keep-alive admin connection may sit idle between requests [default: 30s].
    #[arg(long, env = "THRONG_ADMIN_IDLE_TIMEOUT", value_name = "DURATION")]
    pub admin_idle_timeout: Option<Span>,

    /// Comma-separated `Host` values the admin API answers, e.g. localhost,admin.internal:9090;
    /// others get 421 [default: any].
    #[arg(long, env = "THRONG_ADMIN_ALLOWED_HOSTS", value_name = "LIST")]
    pub admin_allowed_hosts: Option<List>,

    /// Serve the admin API on a non-loopback `admin_listen` without an `api_key` [default: false].
    #[arg(long, env = "THRONG_ADMIN_INSECURE", value_name = "BOOL")]
    pub admin_insecure: Option<bool>,

    /// PEM certificate chain (leaf first, then intermediates) the client listener presents:
    /// with `tls_key`, clients connect with `wss://`; re-read on SIGHUP and
    /// `POST /v1/tls/reload` [default: none, plain ws://].
    #[arg(long, env = "THRONG_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert` [default: none].
    #[arg(long, env = "THRONG_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificate chain the admin listener presents: with `admin_tls_key`, the admin API
    /// is served over `https://`; re-read like `tls_cert` [default: none, plain http://].
    #[arg(long, env = "THRONG_ADMIN_TLS_CERT", value_name = "FILE")]
    pub admin_tls_cert: Option<PathBuf>,

    /// PEM private key of `admin_tls_cert` [default: none].
    #[arg(long, env = "THRONG_ADMIN_TLS_KEY", value_name = "FILE")]
    pub admin_tls_key: Option<PathBuf>,

    /// Event loop threads [default: number of cores].
    #[arg(long, env = "THRONG_LOOPS", value_name = "N")]
    pub loops: Option<usize>,

    /// How the event loops move bytes: `auto` (io_uring where the kernel allows it, epoll
    /// otherwise, with a log line saying why), `epoll` or `io_uring` (an error at start when the
    /// kernel cannot run it) [default: auto].
    #[arg(long, env = "THRONG_BACKEND", value_name = "BACKEND")]
    pub backend: Option<IoBackend>,

    /// Worker threads handling opens, closes and client commands, each with its own share of
    /// the connections [default: 2].
    #[arg(long, env = "THRONG_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Path of the WebSocket endpoint [default: /ws].
    #[arg(long, env = "THRONG_WS_PATH", value_name = "PATH")]
    pub ws_path: Option<String>,

    /// HS256 secret for client JWTs; when set, every client must present a valid token
    /// [default: none, auth off].
    #[arg(long, env = "THRONG_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Refuse tokens without an `exp` claim [default: true].
    #[arg(long, env = "THRONG_JWT_REQUIRE_EXP", value_name = "BOOL")]
    pub jwt_require_exp: Option<bool>,

    /// Clock skew tolerated on a token's `exp` and `nbf` [default: 30s].
    #[arg(long, env = "THRONG_JWT_LEEWAY", value_name = "DURATION")]
    pub jwt_leeway: Option<Span>,

    /// When set, a token's `aud` (string or array) must contain this [default: none, unchecked].
    #[arg(long, env = "THRONG_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// When set, a token's `iss` must equal this [default: none, unchecked].
    #[arg(long, env = "THRONG_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// Bearer key required by the admin API [default: none, admin API open].
    #[arg(long, env = "THRONG_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    // The doc is also the `--help` text, where bare URLs read best.
    #[allow(rustdoc::bare_urls)]
    /// Comma-separated browser origins allowed to connect, e.g. https://app.example.com,
    /// https://*.example.com [default: any origin].
    #[arg(long, env = "THRONG_ALLOWED_ORIGINS", value_name = "LIST")]
    pub allowed_origins: Option<List>,

    /// Comma-separated subprotocols the server speaks, most preferred first [default: throng.v1].
    #[arg(long, env = "THRONG_SUBPROTOCOLS", value_name = "LIST")]
    pub subprotocols: Option<List>,

    /// Log format [default: human].
    #[arg(long, env = "THRONG_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. info, debug, throng=debug,warn [default: info].
    #[arg(long, env = "THRONG_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Largest message a client may send; larger ones close with 1009 [default: 64KiB].
    #[arg(long, env = "THRONG_MAX_MESSAGE_SIZE", value_name = "SIZE")]
    pub max_message_size: Option<Size>,

    /// Time a new connection has to complete its upgrade [default: 10s].
    #[arg(long, env = "THRONG_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<Span>,

    /// Ping clients silent for this long; 0 disables pings [default: 30s].
    #[arg(long, env = "THRONG_PING_INTERVAL", value_name = "DURATION")]
    pub ping_interval: Option<Span>,

    /// Close connections that do not answer a ping within this [default: 10s].
    #[arg(long, env = "THRONG_PONG_TIMEOUT", value_name = "DURATION")]
    pub pong_timeout: Option<Span>,

    /// Close connections that sent nothing (pongs included) for this long with 1001; 0 disables
    /// [default: 0].
    #[arg(long, env = "THRONG_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<Span>,

    /// Most open WebSocket connections; more are refused with HTTP 503 [default: 1000000].
    #[arg(long, env = "THRONG_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most open connections from one IP address; more are refused with HTTP 429; 0 = no limit
    /// [default: 0].
    #[arg(long, env = "THRONG_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Most channels one connection may join (user topic not counted) [default: 100].
    #[arg(long, env = "THRONG_MAX_CHANNELS_PER_CONNECTION", value_name = "N")]
    pub max_channels_per_connection: Option<usize>,

    /// Cap on bytes queued for one slow client [default: 4MiB].
    #[arg(long, env = "THRONG_MAX_OUTBOUND_BYTES", value_name = "SIZE")]
    pub max_outbound_bytes: Option<Size>,

    /// What happens to a client over its outbound cap [default: close].
    #[arg(long, env = "THRONG_SLOW_CONSUMER", value_name = "POLICY")]
    pub slow_consumer: Option<SlowConsumer>,

    /// permessage-deflate: `shared` (no compression state per connection; each publish is
    /// compressed once), `dedicated` (a sliding window per connection: better ratios, hundreds
    /// of KiB per connection that uses it) or `off` [default: shared].
    #[arg(long, env = "THRONG_COMPRESSION", value_name = "MODE")]
    pub compression: Option<CompressionMode>,

    /// What happens to data messages from clients (commands are always accepted)
    /// [default: reject].
    #[arg(long, env = "THRONG_CLIENT_MESSAGES", value_name = "MODE")]
    pub client_messages: Option<ClientMessages>,

    /// On SIGTERM/SIGINT, how long clients get to close after the 1001 before the process
    /// exits [default: 10s].
    #[arg(long, env = "THRONG_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<Span>,

    /// Serve the demo page at the admin listener's `/` [default: true without a config file,
    /// false with one].
    #[arg(long, env = "THRONG_DEMO", value_name = "BOOL")]
    pub demo: Option<bool>,

    /// Capacity of the loops-to-workers event channels, over all workers [default: 65536].
    #[arg(long, env = "THRONG_EVENT_CAPACITY", value_name = "N")]
    pub event_capacity: Option<usize>,

    /// Capacity of each event loop's command queue (sends, closes, subscriptions, publishes);
    /// when it stays full for 100 ms the command is refused and counted [default: 16384].
    #[arg(long, env = "THRONG_COMMAND_CAPACITY", value_name = "N")]
    pub command_capacity: Option<usize>,

    /// Messages (commands included) and pings one client may send per second on average; over
    /// it the connection is closed with 1008; 0 = no limit [default: 50].
    #[arg(long, env = "THRONG_CLIENT_MESSAGE_RATE", value_name = "N")]
    pub client_message_rate: Option<u32>,

    /// How many messages a client may send at once above the rate [default: 100].
    #[arg(long, env = "THRONG_CLIENT_MESSAGE_BURST", value_name = "N")]
    pub client_message_burst: Option<u32>,

    /// Time a fragmented client message may take to arrive whole; slower ones close with 1008;
    /// 0 disables [default: 30s].
    #[arg(long, env = "THRONG_MESSAGE_TIMEOUT", value_name = "DURATION")]
    pub message_timeout: Option<Span>,

    /// Bytes one event loop holds for client messages that arrived in pieces, over all its
    /// connections; a piece beyond it closes its connection with 1008 [default: 64MiB].
    #[arg(long, env = "THRONG_MAX_ASSEMBLY_BYTES", value_name = "SIZE")]
    pub max_assembly_bytes: Option<Size>,

    /// Expect a PROXY protocol header (v1 or v2) from the peers in `proxy_trusted`, so that
    /// limits, logs and metrics see the real client address [default: false].
    #[arg(long, env = "THRONG_PROXY_PROTOCOL", value_name = "BOOL")]
    pub proxy_protocol: Option<bool>,

    /// Load balancers allowed to send a PROXY header: addresses or CIDR ranges, e.g.
    /// 10.0.0.0/8,fd00::/8 [default: none].
    #[arg(long, env = "THRONG_PROXY_TRUSTED", value_name = "CIDRS")]
    pub proxy_trusted: Option<List>,

    /// Redis URL of the fleet's broker, e.g. redis://10.0.0.9:6379; publishes then reach every
    /// node that uses the same Redis [default: none, this node alone].
    #[arg(long, env = "THRONG_BROKER", value_name = "URL", hide_env_values = true)]
    pub broker: Option<String>,

    /// Prefix of every Redis key and channel the broker uses (`PREFIX:ch:NAME`), so fleets can
    /// share a Redis [default: throng].
    #[arg(long, env = "THRONG_BROKER_PREFIX", value_name = "PREFIX")]
    pub broker_prefix: Option<String>,

    /// Largest message taken from Redis (12-byte envelope included); larger ones are dropped
    /// and counted [default: 2MiB].
    #[arg(long, env = "THRONG_BROKER_MAX_MESSAGE_SIZE", value_name = "SIZE")]
    pub broker_max_message_size: Option<Size>,

    /// Let a payload published to Redis without the gateway's envelope reach `user:` topics
    /// [default: false].
    #[arg(long, env = "THRONG_BROKER_RAW_USER_TOPICS", value_name = "BOOL")]
    pub broker_raw_user_topics: Option<bool>,
}

/// Calls `$m!` with every option's field name: the one list `or` and `given` share.
macro_rules! with_every_option {
    ($m:ident) => {
        $m!(
            listen,
            admin_listen,
            admin_max_connections,
            admin_probe_reserve,
            admin_request_timeout,
            admin_idle_timeout,
            admin_allowed_hosts,
            admin_insecure,
            tls_cert,
            tls_key,
            admin_tls_cert,
            admin_tls_key,
            loops,
            backend,
            workers,
            ws_path,
            jwt_secret,
            jwt_require_exp,
            jwt_leeway,
            jwt_audience,
            jwt_issuer,
            api_key,
            allowed_origins,
            subprotocols,
            log_format,
            log_level,
            max_message_size,
            handshake_timeout,
            ping_interval,
            pong_timeout,
            idle_timeout,
            max_connections,
            max_connections_per_ip,
            max_channels_per_connection,
            max_outbound_bytes,
            slow_consumer,
            compression,
            client_messages,
            drain_timeout,
            demo,
            event_capacity,
            command_capacity,
            client_message_rate,
            client_message_burst,
            message_timeout,
            max_assembly_bytes,
            proxy_protocol,
            proxy_trusted,
            broker,
            broker_prefix,
            broker_max_message_size,
            broker_raw_user_topics,
        )
    };
}

impl Options {
    /// Each option from `self` if given, else from `lower`.
    pub fn or(self, lower: Options) -> Options {
        macro_rules! pick {
            ($($f:ident),* $(,)?) => { Options { $($f: self.$f.or(lower.$f)),* } };
        }
        with_every_option!(pick)
    }

    /// The keys given here (those that are not `None`).
    pub fn given(&self) -> Vec<&'static str> {
        macro_rules! names {
            ($($f:ident),* $(,)?) => {
                [$((stringify!($f), self.$f.is_some())),*].into_iter().filter(|g| g.1).map(|g| g.0).collect()
            };
        }
        with_every_option!(names)
    }
}

/// A list given as `a,b,c` on the command line or as an array (or that string) in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl FromStr for List {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(List(s.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect()))
    }
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => s.parse().unwrap_or_default(),
            Raw::Many(v) => List(v),
        })
    }
}

/// How logs are written.
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// How the event loops move bytes (`throng::Backend`).
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IoBackend {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    /// Edge-triggered epoll.
    Epoll,
    /// A completion ring per loop.
    #[value(name = "io_uring")]
    IoUring,
}

impl From<IoBackend> for throng::engine::Backend {
    fn from(backend: IoBackend) -> Self {
        match backend {
            IoBackend::Auto => Self::Auto,
            IoBackend::Epoll => Self::Epoll,
            IoBackend::IoUring => Self::IoUring,
        }
    }
}

/// What happens to a client whose outbound queue is over the cap.
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    /// Close it with 1008; it reconnects and catches up.
    Close,
    /// Drop the message for it and carry on.
    Drop,
}

/// permessage-deflate (`throng::proto::deflate::Compression`).
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMode {
    /// Declined: messages go uncompressed.
    Off,
    /// No state per connection; a publish is compressed once for every subscriber.
    Shared,
    /// A sliding window per connection (context takeover).
    Dedicated,
}

impl From<CompressionMode> for throng::proto::deflate::Compression {
    fn from(mode: CompressionMode) -> Self {
        match mode {
            CompressionMode::Off => Self::Off,
            CompressionMode::Shared => Self::Shared,
            CompressionMode::Dedicated => Self::Dedicated,
        }
    }
}

/// What happens to data (non-command) messages sent by clients.
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientMessages {
    /// Push-only: close the connection with 1003.
    Reject,
    /// Hand them to the broker (the local broker logs and counts them).
    Forward,
}

macro_rules! display_as_value_enum {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.to_possible_value() {
                    Some(v) => f.write_str(v.get_name()),
                    None => Ok(()),
                }
            }
        }
    )*};
}
display_as_value_enum!(IoBackend, LogFormat, SlowConsumer, CompressionMode, ClientMessages);
