//! The command line: one subcommand per mode, options shared through [`Common`].

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// A WebSocket load generator (ws:// and wss:// targets: loopback or any reachable host).
#[derive(Parser, Debug)]
#[command(name = "throng-load", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// A mode's run, or `compare`.
// Parsed once per process; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    #[command(flatten)]
    Run(Mode),
    /// Run the same mode against several servers in turn, each started by a shell command on a
    /// free port (`$PORT`), and compare them: rate, latency, server CPU per operation, memory
    /// per connection.
    Compare(CompareArgs),
}

/// `compare`.
#[derive(Args, Debug)]
pub(crate) struct CompareArgs {
    /// A server, repeatable: NAME=CMD, CMD run with `sh -c` in a process group of its own,
    /// with the port to listen on (127.0.0.1) in `$PORT`.
    #[arg(long = "server", value_name = "NAME=CMD", required = true, value_parser = parse_server)]
    pub(crate) servers: Vec<(String, String)>,
    /// Write one self-contained HTML page: the table and each server's throughput over time.
    #[arg(long, value_name = "FILE.html")]
    pub(crate) report: Option<std::path::PathBuf>,
    /// One JSON object (every round's figures and report): as the last line of stdout, or
    /// written to FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub(crate) json: Option<std::path::PathBuf>,
    /// Rounds: every server once a round, the order turning by one each round (none always
    /// first or last); the table and the JSON's figures are each server's medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Pin the servers to these CPUs (`0`, `0,2`, `0-3`), whatever they fork.
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub(crate) server_cpu: Option<Cpus>,
    /// Pin the runs (the throng-load child processes) to these CPUs.
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub(crate) client_cpu: Option<Cpus>,
    /// Throng-load arguments for the runs against server NAME only (split at spaces, added to
    /// MODE ARGS; repeatable), e.g. `tls=--ca-file ca.pem --tls-resume off`.
    #[arg(long = "server-args", value_name = "NAME=ARGS", value_parser = parse_server)]
    pub(crate) server_args: Vec<(String, String)>,
    /// A command run with `sh -c` beside each run (e.g. a profiler), with `SERVER_PIDS` (comma
    /// list), `NAME` and `ROUND` set; the run's end waits for it.
    #[arg(long, value_name = "CMD")]
    pub(crate) during: Option<String>,
    /// How long a server has to accept connections on its port.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) start_timeout: Duration,
    /// After SIGTERM, how long a server's processes have before SIGKILL.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) stop_grace: Duration,
    /// After `--`: MODE ARGS…, as for a single run, without the URL (`ws://127.0.0.1:PORT/` is
    /// added) unless an argument holds `{port}`; `{name}` is replaced by the server's name.
    #[arg(last = true, required = true, value_name = "MODE ARGS")]
    pub(crate) run: Vec<String>,
}

/// CPUs to pin to (`--server-cpu`, `--client-cpu`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cpus(pub(crate) Vec<usize>);

/// A CPU list: `0`, `0,2`, `1-3`, or a mix (`0,2-3`).
fn parse_cpus(text: &str) -> Result<Cpus, String> {
    let bad = || format!("{text:?}: CPUs as 0, 0,2 or 1-3");
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let (from, to): (usize, usize) =
            (from.trim().parse().map_err(|_| bad())?, to.trim().parse().map_err(|_| bad())?);
        if from > to {
            return Err(bad());
        }
        cpus.extend(from..=to);
    }
    Ok(Cpus(cpus))
}

/// `NAME=CMD`.
fn parse_server(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, cmd)) if !name.trim().is_empty() && !cmd.trim().is_empty() => {
            Ok((name.trim().to_owned(), cmd.to_owned()))
        }
        _ => Err(format!("{text:?}: NAME=CMD, e.g. throng='target/release/examples/echo 127.0.0.1:$PORT'")),
    }
}

/// What to measure.
// Parsed once per process; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub(crate) enum Mode {
    /// Open N connections, hold them idle, ping a sample, close cleanly (memory per connection).
    Connect(ConnectArgs),
    /// Echo throughput and round-trip latency, payloads checked.
    Echo(EchoArgs),
    /// Connect–upgrade–close cycles per second.
    Storm(StormArgs),
    /// N subscribers of a channel, messages published through the gateway's admin API:
    /// delivery ratio and publish-to-delivery latency.
    Fanout(FanoutArgs),
    /// A run in phases from a TOML file: connections ramping up and down at a connect rate,
    /// an open-loop message rate, payload sizes and template, subscribers, slow readers,
    /// thresholds (see loadtest/README.md).
    Scenario(ScenarioArgs),
}

impl Mode {
    /// The options every mode has.
    pub(crate) fn common(&self) -> &Common {
        match self {
            Mode::Connect(args) => &args.common,
            Mode::Echo(args) => &args.common,
            Mode::Storm(args) => &args.common,
            Mode::Fanout(args) => &args.common,
            Mode::Scenario(args) => &args.common,
        }
    }

    /// The option that counts connections (split between the processes of `--procs`), and its
    /// value.
    pub(crate) fn shard_option(&self) -> (&'static str, usize) {
        match self {
            Mode::Connect(args) => ("--conns", args.conns),
            Mode::Echo(args) => ("--conns", args.conns),
            Mode::Storm(args) => ("--parallel", args.parallel),
            Mode::Fanout(args) => ("--subscribers", args.subscribers),
            // Not split: `main` refuses --procs and --threads for a scenario.
            Mode::Scenario(args) => ("--conns", args.scenario().conns.peak() as usize),
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
            Mode::Fanout(args) => {
                // Setting up: a generous 1,000 subscribers per second.
                let dialing = Duration::from_secs(args.subscribers as u64 / 1000);
                dialing + args.common.connect_timeout + args.duration + args.drain_timeout + margin
            }
            Mode::Scenario(args) => {
                args.scenario().duration() + args.common.connect_timeout + 2 * args.drain_timeout + margin
            }
        }
    }
}

/// Options shared by all modes.
#[derive(Args, Debug)]
pub(crate) struct Common {
    /// Target: `ws://` or `wss://HOST[:PORT][/PATH]` (port 80 or 443 by default), HOST an IPv4
    /// address, `[IPv6]` or a DNS name (the first IPv4 address it resolves to, else the first);
    /// the `Host` header is `HOST[:PORT]`, and for `wss://` HOST is the TLS server name the
    /// certificate must be valid for. `wss://` runs on the epoll backend.
    pub(crate) url: String,
    /// `wss://`: trust the certificate authorities of this PEM file (one or more
    /// certificates) instead of the built-in webpki roots, e.g. the CA of a test certificate.
    #[arg(long, value_name = "PATH")]
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// `wss://`: `on` resumes TLS sessions from the tickets of earlier connections (what
    /// reconnecting clients do: a shorter handshake), `off` makes every handshake a full one
    /// (what a `storm` run then measures is the full handshake cost).
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    pub(crate) tls_resume: OnOff,
    /// Local source addresses, round-robin: `127.0.0.2-127.0.0.40`, or a comma-separated list,
    /// of the target's family. Loopback addresses for a loopback target; for any other target,
    /// addresses of this machine's interfaces (others are refused before connecting). Each
    /// source reaches about 28k ports per destination.
    #[arg(long)]
    pub(crate) sources: Option<String>,
    /// The server's process id(s), comma-separated: report their CPU time and memory (summed)
    /// from /proc.
    #[arg(long, value_delimiter = ',')]
    pub(crate) server_pid: Vec<u32>,
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
    /// Spread the connections over K processes (default: one per 15,000 connections).
    #[arg(long)]
    pub(crate) procs: Option<usize>,
    /// Run K loops (threads) in this one process, the connections split among them as with
    /// `--procs`, their reports merged the same way; not with `--procs` above 1.
    #[arg(long, value_name = "K")]
    pub(crate) threads: Option<usize>,
    /// Write a self-contained HTML report (charts as inline SVG) to this file.
    #[arg(long, value_name = "FILE.html")]
    pub(crate) report: Option<std::path::PathBuf>,
    /// Write the per-second series (the JSON's `series`) to this file as CSV, with a header
    /// line: t_s, open, sent_per_s, ops_per_s, p50_us, p99_us, errors, server_cpu, client_cpu.
    #[arg(long, value_name = "FILE.csv")]
    pub(crate) csv: Option<std::path::PathBuf>,
    /// Pass/fail check, repeatable: `p99<50ms`, `errors<0.1%`, `rate>=1000/s`, `late<1%`.
    /// Metrics: p50 p90 p99 p999 max mean (durations in us, ms, s), errors (a count or a % of
    /// the operations), rate (per second), late (open loop: a count or a % of the sends due);
    /// operators < <= > >=. A failed threshold makes the exit status 4 (1 still wins when the
    /// run itself failed its checks).
    #[arg(long = "threshold", value_name = "CHECK", value_parser = crate::threshold::parse)]
    pub(crate) thresholds: Vec<crate::threshold::Threshold>,
    /// The client loop's kernel interface: `auto` (io_uring when the kernel allows it, else
    /// epoll, saying why on stderr), `epoll`, or `io_uring` (an error when it cannot start).
    /// io_uring receives and sends through the ring (no `read`/`write` per message, one
    /// `io_uring_enter` per turn), so the client spends less CPU per message.
    #[arg(long, value_enum, default_value_t = crate::driver::Backend::Auto)]
    pub(crate) backend: crate::driver::Backend,
    /// Offer permessage-deflate (RFC 7692) with no context takeover either way, and where the
    /// server agrees send every data message compressed and inflate what arrives compressed.
    /// The report then has the negotiated parameters (and the connections the server declined
    /// compression for, which run uncompressed) and the payload bytes before and after
    /// compression.
    #[arg(long)]
    pub(crate) deflate: bool,
    /// `--deflate`, offering context takeover on the server's side (`permessage-deflate;
    /// client_max_window_bits` only): a server that keeps a window per connection (throng's
    /// `dedicated` mode) then does, and each such connection gets an inflater of its own here.
    /// Our compressor still starts every message afresh, which any server accepts.
    #[arg(long)]
    pub(crate) deflate_context: bool,
    /// Internal: run as one of the processes of `--procs` (speaks to the parent on stdin/stdout).
    #[arg(long, hide = true)]
    pub(crate) child: bool,
}

impl Common {
    /// The target of `url`, with the TLS options.
    pub(crate) fn target(&self) -> Result<crate::target::Target, String> {
        crate::target::Target::parse_tls(&self.url, self.ca_file.as_deref(), self.tls_resume == OnOff::On)
    }
}

/// A switch given as `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

/// `connect` mode.
#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Connections to open.
    #[arg(long)]
    pub(crate) conns: usize,
    /// Connection attempts started per second, `500` or `500/s` (default: as fast as
    /// `--concurrency` allows).
    #[arg(long, value_parser = parse_rate)]
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
    /// Closed loop (the default): messages in flight per connection; a new one is sent when an
    /// echo comes back, so a slower server is offered less load.
    #[arg(long, default_value_t = 1)]
    pub(crate) inflight: usize,
    /// Open loop: messages per second sent on each connection on a fixed schedule, whether or
    /// not the echoes come back; latency counts from the scheduled send time, so queueing
    /// behind a slow server is measured. `100` or `100/s`.
    #[arg(long, value_parser = parse_rate, conflicts_with_all = ["inflight", "total_rate"])]
    pub(crate) message_rate: Option<f64>,
    /// Open loop: messages per second for the whole run, spread evenly over the connections
    /// (the same as `--message-rate` of this divided by `--conns`).
    #[arg(long, value_parser = parse_rate, conflicts_with = "inflight")]
    pub(crate) total_rate: Option<f64>,
    /// Open loop with a rate per connection that changes over the run, from the start of the
    /// warm-up: phases `FROM:TO:DURATION` (linear, messages/s per connection) or
    /// `hold:DURATION`, comma-separated, e.g. `0:100/s:30s,hold:60s`; after the last phase its
    /// final rate holds. Latency counts from the scheduled send time, as with `--message-rate`.
    #[arg(long, value_parser = crate::ramp::parse, conflicts_with_all = ["inflight", "message_rate", "total_rate"])]
    pub(crate) ramp: Option<crate::ramp::Ramp>,
    /// Measured time (after the warm-up).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub(crate) warmup: Duration,
    /// Send binary messages (default: text).
    #[arg(long)]
    pub(crate) binary: bool,
    /// What the payloads hold (after the sequence stamp): `letters` (a repeated alphabet),
    /// `json` (a JSON document of records, about as compressible as real API traffic, for
    /// `--deflate`) or `random` (random letters and digits: little for deflate to gain).
    #[arg(long, value_enum, default_value_t = Payload::Letters)]
    pub(crate) payload: Payload,
    /// How long to wait for the last echoes and the close handshakes.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) drain_timeout: Duration,
}

/// `echo --payload`: the payload pattern.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Payload {
    /// `abcd…z` repeated.
    #[default]
    Letters,
    /// `{"seq":"…","items":[{…},…]}`, padded with spaces to the size.
    Json,
    /// Random ASCII letters and digits.
    Random,
}

impl Payload {
    /// The name `--payload` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Payload::Letters => "letters",
            Payload::Json => "json",
            Payload::Random => "random",
        }
    }
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

/// `fanout` mode.
#[derive(Args, Debug)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Subscribed connections (`?channels=C` is added to the URL).
    #[arg(long)]
    pub(crate) subscribers: usize,
    /// The channel to subscribe to and publish on.
    #[arg(long, default_value = "loadtest")]
    pub(crate) channel: String,
    /// The gateway's publish endpoint, `http://HOST[:PORT]/v1/publish` (HOST as in the URL).
    #[arg(long, required_unless_present = "publish_cmd", conflicts_with = "publish_cmd")]
    pub(crate) publish: Option<String>,
    /// Instead of `--publish`: a shell command run once per message, with the channel in
    /// `$THRONG_LOAD_CHANNEL` and the JSON data to publish in `$THRONG_LOAD_DATA`; exit status 0
    /// means published.
    #[arg(long, value_name = "CMD")]
    pub(crate) publish_cmd: Option<String>,
    /// Bearer key for the admin API (also from `THRONG_API_KEY`).
    #[arg(long, env = "THRONG_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Messages published per second, `10` or `10/s`.
    #[arg(long, value_parser = parse_rate, default_value = "10")]
    pub(crate) rate: f64,
    /// How long to publish.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
    /// Extra bytes of padding in each message's data (`"pad":"xxx…"`).
    #[arg(long, default_value_t = 0)]
    pub(crate) pad: usize,
    /// How long to wait for the last deliveries after the last publish.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) drain_timeout: Duration,
}

/// `scenario` mode: a file, or the ramps on the command line.
#[derive(Args, Debug)]
pub(crate) struct ScenarioArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The scenario (TOML), read and checked before anything connects.
    #[arg(
        value_name = "FILE.toml",
        value_parser = crate::scenario::load,
        required_unless_present = "conns_ramp",
        conflicts_with_all = ["conns_ramp", "ramp", "size", "binary", "connect_rate"]
    )]
    pub(crate) file: Option<crate::scenario::Scenario>,
    /// Without a file: the connections open over the run, phases `FROM:TO:DURATION` or
    /// `hold:DURATION` as for `echo --ramp` (counts instead of rates), e.g.
    /// `0:1000:30s,hold:60s,1000:0:10s`; the run lasts as long as its phases.
    #[arg(long, value_name = "RAMP", value_parser = crate::ramp::parse)]
    pub(crate) conns_ramp: Option<crate::ramp::Ramp>,
    /// Without a file: messages per second per connection over the run, as `echo --ramp`
    /// (default: none sent).
    #[arg(long, value_name = "RAMP", value_parser = crate::ramp::parse, requires = "conns_ramp")]
    pub(crate) ramp: Option<crate::ramp::Ramp>,
    /// Without a file: new connections per second at most (default: as fast as
    /// `--concurrency` allows).
    #[arg(long, value_parser = parse_rate, requires = "conns_ramp")]
    pub(crate) connect_rate: Option<f64>,
    /// Without a file: payload bytes per message.
    #[arg(long, default_value_t = 32, requires = "conns_ramp")]
    pub(crate) size: usize,
    /// Without a file: binary messages (default: text).
    #[arg(long, requires = "conns_ramp")]
    pub(crate) binary: bool,
    /// After the last phase, how long to wait for the last echoes, and then for the close
    /// handshakes.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) drain_timeout: Duration,
    /// The scenario of the command-line ramps, made once.
    #[arg(skip)]
    built: std::sync::OnceLock<crate::scenario::Scenario>,
}

impl ScenarioArgs {
    /// The scenario to run: the file's, or the one of `--conns-ramp` and the options beside it.
    pub(crate) fn scenario(&self) -> &crate::scenario::Scenario {
        if let Some(file) = &self.file {
            return file;
        }
        self.built.get_or_init(|| {
            // Unreachable without: clap requires `--conns-ramp` when no file is given.
            let conns = self.conns_ramp.clone().expect("--conns-ramp or FILE");
            crate::scenario::Scenario::from_ramps(
                conns,
                self.ramp.clone(),
                self.connect_rate,
                self.size,
                self.binary,
            )
        })
    }
}

/// `100`, `100/s`, `2.5/s`: a positive rate per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    match crate::ramp::rate(text) {
        Ok(rate) if rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?}: a positive rate per second, e.g. 100 or 100/s")),
    }
}

/// `500ms`, `30s`, `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (use e.g. 30s, 500ms, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_take_single_cpus_commas_and_ranges() {
        assert_eq!(parse_cpus("1"), Ok(Cpus(vec![1])));
        assert_eq!(parse_cpus("0,2-4"), Ok(Cpus(vec![0, 2, 3, 4])));
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(parse_rate("100/s"), Ok(100.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").is_err() && parse_rate("x/s").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn open_loop_rates_exclude_inflight() {
        let base = ["throng-load", "echo", "ws://127.0.0.1:8080/", "--conns", "4"];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        let Command::Run(Mode::Echo(args)) = parse(&["--total-rate", "400/s"]).unwrap().command else {
            panic!()
        };
        assert_eq!((args.total_rate, args.message_rate, args.inflight), (Some(400.0), None, 1));
        assert!(parse(&["--message-rate", "10", "--inflight", "2"]).is_err());
        assert!(parse(&["--total-rate", "10", "--inflight", "2"]).is_err());
        assert!(parse(&["--total-rate", "10", "--message-rate", "2"]).is_err());
        assert!(parse(&["--message-rate", "0"]).is_err());
        let Command::Run(Mode::Echo(args)) = parse(&["--ramp", "0:10:1s,hold:1s"]).unwrap().command else {
            panic!()
        };
        assert_eq!(args.ramp.map(|ramp| ramp.peak()), Some(10.0));
        for other in [["--inflight", "2"], ["--message-rate", "2"], ["--total-rate", "2"]] {
            assert!(parse(&[&["--ramp", "1:2:1s"][..], &other[..]].concat()).is_err(), "{other:?}");
        }
        assert!(parse(&["--ramp", "hold:1s"]).is_err());
    }

    #[test]
    fn deflate_is_common_and_payloads_are_named() {
        let base = ["throng-load", "echo", "ws://127.0.0.1:8080/"];
        let Command::Run(Mode::Echo(args)) = Cli::try_parse_from(base).unwrap().command else { panic!() };
        assert_eq!((args.common.deflate, args.payload), (false, Payload::Letters));
        let with = base.iter().chain(&["--deflate", "--payload", "json"]);
        let Command::Run(Mode::Echo(args)) = Cli::try_parse_from(with).unwrap().command else { panic!() };
        assert_eq!((args.common.deflate, args.payload.name()), (true, "json"));
        assert!(Cli::try_parse_from(base.iter().chain(&["--payload", "zeros"])).is_err());
        let storm = ["throng-load", "storm", "ws://127.0.0.1:8080/", "--deflate"];
        let Command::Run(mode) = Cli::try_parse_from(storm).unwrap().command else { panic!() };
        assert!(mode.common().deflate);
    }

    #[test]
    fn tls_options_are_common() {
        let base = ["throng-load", "storm", "wss://127.0.0.1:4443/"];
        let Command::Run(mode) = Cli::try_parse_from(base).unwrap().command else { panic!() };
        assert_eq!((mode.common().tls_resume, mode.common().ca_file.as_deref()), (OnOff::On, None));
        assert!(mode.common().target().unwrap().tls.is_some());
        let with = base.iter().chain(&["--tls-resume", "off", "--ca-file", "/ca.pem"]);
        let Command::Run(mode) = Cli::try_parse_from(with).unwrap().command else { panic!() };
        assert_eq!(mode.common().tls_resume, OnOff::Off);
        assert_eq!(mode.common().ca_file.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert!(Cli::try_parse_from(base.iter().chain(&["--tls-resume", "maybe"])).is_err());
    }

    #[test]
    fn fanout_needs_a_publisher_and_server_pids_are_a_list() {
        let base = ["throng-load", "fanout", "ws://127.0.0.1:8080/ws", "--subscribers", "10"];
        assert!(Cli::try_parse_from(base).is_err());
        let cli = Cli::try_parse_from(base.iter().chain(&[
            "--publish",
            "http://127.0.0.1:9090/v1/publish",
            "--server-pid",
            "1,2",
        ]))
        .unwrap();
        let Command::Run(mode) = cli.command else { panic!() };
        assert_eq!(mode.common().server_pid, [1, 2]);
        assert_eq!(mode.shard_option(), ("--subscribers", 10));
    }

    #[test]
    fn compare_takes_servers_and_the_run_after_two_dashes() {
        let cli = Cli::try_parse_from([
            "throng-load",
            "compare",
            "--server",
            "a=serve --port $PORT --x=1",
            "--server",
            "b=other",
            "--",
            "echo",
            "--conns",
            "4",
        ])
        .unwrap();
        let Command::Compare(args) = cli.command else { panic!() };
        assert_eq!(args.servers[0], ("a".to_owned(), "serve --port $PORT --x=1".to_owned()));
        assert_eq!(args.servers[1].0, "b");
        assert_eq!(args.run, ["echo", "--conns", "4"]);
        assert!(Cli::try_parse_from(["throng-load", "compare", "--server", "=x", "--", "echo"]).is_err());
        assert!(Cli::try_parse_from(["throng-load", "compare", "--server", "a=x"]).is_err());
    }
}
