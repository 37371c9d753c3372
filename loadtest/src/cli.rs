//! The command line: one subcommand per mode, options shared through [`Common`].

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// A WebSocket load generator for loopback targets.
#[derive(Parser, Debug)]
#[command(name = "throng-load", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) mode: Mode,
}

/// What to measure.
#[derive(Subcommand, Debug)]
pub(crate) enum Mode {
    /// Open N connections, hold them idle, ping a sample, close cleanly (memory per connection).
    Connect(ConnectArgs),
    /// Echo throughput and round-trip latency, payloads checked.
    Echo(EchoArgs),
    /// Connect–upgrade–close cycles per second.
    Storm(StormArgs),
}

impl Mode {
    /// The options every mode has.
    pub(crate) fn common(&self) -> &Common {
        match self {
            Mode::Connect(args) => &args.common,
            Mode::Echo(args) => &args.common,
            Mode::Storm(args) => &args.common,
        }
    }

    /// A hard limit on the whole run when `--timeout` is not given: the planned time plus margin.
    pub(crate) fn default_timeout(&self) -> Duration {
        let margin = Duration::from_secs(60);
        match self {
            Mode::Connect(args) => {
                let dialing = match args.rate {
                    Some(rate) if rate > 0.0 => Duration::from_secs_f64(args.conns as f64 / rate),
                    _ => Duration::ZERO,
                };
                dialing + args.common.connect_timeout + args.hold + args.close_timeout + margin
            }
            Mode::Echo(args) => args.common.connect_timeout + args.warmup + args.duration + margin,
            Mode::Storm(args) => args.common.connect_timeout + args.duration + margin,
        }
    }
}

/// Options shared by all modes.
#[derive(Args, Debug)]
pub(crate) struct Common {
    /// Target: `ws://HOST:PORT/PATH`, HOST a loopback address (or `localhost`).
    pub(crate) url: String,
    /// Local source addresses, round-robin: `127.0.0.2-127.0.0.40`, or a comma-separated list.
    /// Each source reaches about 28k ports per destination.
    #[arg(long)]
    pub(crate) sources: Option<String>,
    /// The server's process id: report its CPU time and memory from /proc.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Hard limit on the whole run (default: the planned duration plus a minute).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Give up on a connection whose TCP connect and upgrade take longer than this.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) connect_timeout: Duration,
    /// Most connections being set up at once.
    #[arg(long, default_value_t = 1000)]
    pub(crate) concurrency: usize,
}

/// `connect` mode.
#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Connections to open.
    #[arg(long)]
    pub(crate) conns: usize,
    /// Connection attempts started per second (default: as fast as `--concurrency` allows).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// How long to hold the connections idle once all are set up.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) hold: Duration,
    /// Connections pinged at the end to check they are alive (0: none).
    #[arg(long, default_value_t = 1000)]
    pub(crate) ping_sample: usize,
    /// How long to wait for the close handshakes.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) close_timeout: Duration,
    /// Mappings listed in the server's memory growth (with `--server-pid`).
    #[arg(long, default_value_t = 5)]
    pub(crate) smaps_top: usize,
}

/// `echo` mode.
#[derive(Args, Debug)]
pub(crate) struct EchoArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    pub(crate) conns: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub(crate) inflight: usize,
    /// Measured time (after the warm-up).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub(crate) warmup: Duration,
    /// Send binary messages (default: text).
    #[arg(long)]
    pub(crate) binary: bool,
    /// How long to wait for the last echoes and the close handshakes.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) drain_timeout: Duration,
}

/// `storm` mode.
#[derive(Args, Debug)]
pub(crate) struct StormArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// How long to start new cycles.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
    /// Cycles in progress at once.
    #[arg(long, default_value_t = 16)]
    pub(crate) parallel: usize,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (use e.g. 30s, 500ms, 2m)"))
}
