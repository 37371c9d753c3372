// The JSON documents of the gateway's stats and settings are larger than serde_json's macro
// expands by default.
#![recursion_limit = "256"]
//! The `throng` gateway: what the binary runs, on top of the engine.
//!
//! ```text
//!  clients ──/ws──▶ loops ──upgrade hook (origin, JWT, channels, caps)──▶ 101 or 4xx
//!                     │ Event::{Open (claims, channels), Message, Close}, one shard per worker
//!                     ▼
//!               workers: per-connection entries (conns.rs), commands, token expiry,
//!                        admission release
//!  backend ──admin HTTP──▶ routes ──▶ Broker::publish ──▶ Handle::publish (framed once)
//! ```
//!
//! Publishes go through a [`broker::Broker`]; [`broker::LocalBroker`] serves a single node and
//! [`broker::RedisBroker`] a fleet of nodes sharing a Redis (`--broker redis://...`).
//! Configuration is described in `docs/configuration.md`.

pub mod auth;
pub mod broker;
pub mod channels;
pub mod config;

mod admin;
mod admission;
mod conns;
mod demo;
mod expiry;
mod logging;
mod metrics;
mod origin;
mod process;
mod state;
mod tls;
mod upgrade;
mod workers;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use self::broker::{Broker, LocalBroker, RedisBroker, RedisOptions};
use self::config::{Cli, Settings, SlowConsumer};
use self::conns::Conns;
use self::expiry::Expiry;
use self::state::{Ctx, Front, Live};
use self::upgrade::Opening;
use throng::{Server, SlowConsumerPolicy};

pub use self::expiry::TOKEN_EXPIRED;

/// Entry points for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::admin::http::{read_all as admin_read_all, Reading as AdminReading};
}
pub use self::upgrade::BEARER_PROTOCOL;

/// Runs the gateway until SIGTERM or SIGINT, then drains and returns. Errors are for the
/// operator: a bad configuration, a port in use.
pub fn run(cli: Cli) -> Result<(), String> {
    let settings = Settings::load(&cli).map_err(|e| e.to_string())?;
    // Before --print-config returns, so that it refuses a certificate the start would refuse.
    let tls = tls::Tls::load(&settings)?;
    if cli.print_config {
        println!("{:#}", settings.to_json());
        return Ok(());
    }
    let log = logging::init(settings.log_format, &settings.log_level)?;
    let admin = TcpListener::bind(settings.admin_listen)
        .map_err(|e| format!("admin_listen {}: {e}", settings.admin_listen))?;
    let front = Arc::new(Front::new(settings.clone()));
    let admin_addr = admin.local_addr().map_err(|e| format!("admin listener: {e}"))?;
    // The engine reports topics' first and last subscribers (and count changes) from its loops;
    // the broker that hears them exists only once the engine runs.
    let topic_reports: TopicReports = Arc::default();
    // Made before the engine: its loops record connections in them as they open.
    let conns = Arc::new(Conns::new(settings.loops));
    let expiry = Arc::new(Expiry::default());
    let opens = (conns.clone(), expiry.clone());
    let server = start_engine(&settings, front.clone(), admin_addr, topic_reports.clone(), &tls, opens)?;
    let handle = server.handle();
    let broker: Arc<dyn Broker> = match &settings.broker {
        None => Arc::new(LocalBroker::new(handle.clone())),
        Some(url) => {
            let options = RedisOptions {
                url: url.clone(),
                prefix: settings.broker_prefix.clone(),
                max_message_size: settings.broker_max_message_size,
                raw_user_topics: settings.broker_raw_user_topics,
            };
            Arc::new(RedisBroker::start(options, handle.clone())?)
        }
    };
    // Nothing subscribes before the workers run (below), so no report is missed.
    let _ = topic_reports.set(broker.clone());
    let broker_name = settings.broker.as_deref().map_or_else(|| "local".to_owned(), broker::redact_url);
    let ctx = Arc::new(Ctx {
        front,
        handle: handle.clone(),
        conns: conns.clone(),
        expiry: expiry.clone(),
        broker,
        draining: AtomicBool::new(false),
        publishing: AtomicUsize::new(0),
        started: Instant::now(),
        nofile: server.nofile_limits(),
        ws_addr: server.local_addr(),
        tls,
    });
    fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
        move |e| format!("cannot start {what}: {e}")
    }
    workers::spawn(ctx.clone(), server.shards()).map_err(io("workers"))?;
    expiry.spawn(handle, conns, ctx.front.counters.clone());
    admin::start(ctx.clone(), admin).map_err(io("admin listener"))?;

    // Registered before "throng started" is announced: a supervisor (or a test) that stops the
    // gateway as soon as it says it started must reach the drain, not the default action.
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|e| format!("signals: {e}"))?;
    let (soft, hard) = server.nofile_limits().map_or((None, None), |(s, h)| (Some(s), Some(h)));
    let page = demo::page_scheme(&ctx.front);
    let ws = if settings.tls().is_some() { "wss" } else { "ws" };
    let admin_scheme = demo::admin_scheme(&ctx.front);
    // `listen` and `admin` stay bare addresses (scripts read them); the URLs say the scheme.
    let ws_url = format!("{ws}://{}{}", server.local_addr(), settings.ws_path);
    let demo_url = settings.demo.then(|| format!("{page}://{}/", server.local_addr()));
    tracing::info!(
        listen = %server.local_addr(),
        admin = %admin_addr,
        ws_url = %ws_url,
        admin_url = %format!("{admin_scheme}://{admin_addr}"),
        demo_url = demo_url.as_ref().map(tracing::field::display),
        ws_path = %settings.ws_path,
        loops = settings.loops,
        backend = %server.backend(),
        workers = settings.workers,
        auth = settings.jwt_secret.is_some(),
        demo = settings.demo,
        nofile_soft = soft,
        nofile_hard = hard,
        broker = %broker_name,
        version = env!("CARGO_PKG_VERSION"),
        "throng started"
    );
    if settings.admin_insecure && !settings.admin_listen.ip().to_canonical().is_loopback() {
        let warning = if settings.api_key.is_some() { "" } else { " and without an api_key" };
        tracing::warn!(admin = %admin_addr, "admin API on a non-loopback address{warning} (admin_insecure = true)");
    }
    if soft.zip(hard).is_some_and(|(s, h)| s.max(h) < 65536) {
        tracing::warn!("the open-files limit is low for a gateway; see docs/tuning.md (LimitNOFILE)");
    }
    wait_for_signals(signals, &cli, &ctx, &log, server)
}

/// Where the engine's topic reports go: the broker, once it exists.
type TopicReports = Arc<std::sync::OnceLock<Arc<dyn Broker>>>;

fn start_engine(
    s: &Settings,
    front: Arc<Front>,
    admin_addr: std::net::SocketAddr,
    reports: TopicReports,
    tls: &tls::Tls,
    (conns, expiry): (Arc<Conns>, Arc<Expiry>),
) -> Result<Server<Opening>, String> {
    let page_front = front.clone();
    let close_front = front.clone();
    let changes = reports.clone();
    let mut builder = Server::builder()
        .bind(s.listen)
        .map_err(|e| format!("listen {}: {e}", s.listen))?
        .loops(s.loops)
        .backend(s.backend.into())
        .max_message_size(s.max_message_size)
        .max_frame_size(s.max_message_size)
        .handshake_timeout(s.handshake_timeout)
        .max_outbound_bytes(s.max_outbound_bytes)
        .slow_consumer(match s.slow_consumer {
            SlowConsumer::Close => SlowConsumerPolicy::Close,
            SlowConsumer::Drop => SlowConsumerPolicy::Drop,
        })
        .compression(s.compression.into())
        // The gateway answers over-limit upgrades with 503 itself; the engine's cap is only a
        // backstop against sockets that never finish a handshake.
        .max_connections(s.max_connections.saturating_add(s.max_connections / 10 + 1024))
        .event_capacity(s.event_capacity)
        // One shard per worker: a connection's events all reach one worker, in order.
        .event_shards(s.workers)
        .command_queue(s.command_capacity, Duration::from_millis(100))
        .max_message_rate(s.client_message_rate, s.client_message_burst)
        .message_timeout(s.message_timeout)
        .max_assembly_bytes(s.max_assembly_bytes)
        .admission(Arc::new(admission::Gate(front.clone())))
        .on_upgrade(move |req, peer| upgrade::decide(&front, req, peer))
        .on_open({
            let (conns, expiry) = (conns.clone(), expiry.clone());
            move |conn, opening, out| upgrade::opened(&conns, &expiry, conn, opening, out)
        })
        .on_close(move |conn, code, reason, clean, cause| {
            let ended = upgrade::Ended { code, reason, clean, cause };
            upgrade::closed(&close_front, &conns, &expiry, conn, &ended)
        })
        .on_topic(move |topic, _| {
            if let Some(broker) = reports.get() {
                broker.topic_membership(topic);
            }
        })
        .on_topic_change(move |topic| {
            if let Some(broker) = changes.get() {
                broker.topic_count_changed(topic);
            }
        })
        .on_http(move |target, _head| {
            let path = target.split('?').next().unwrap_or(target);
            (path == "/" && page_front.live().demo).then(|| demo::client_page(&page_front, admin_addr))
        });
    if let Some(trusted) = &s.proxy_trusted {
        builder = builder.proxy_protocol(trusted.clone());
    }
    if let Some(config) = tls.client() {
        builder = builder.tls(config);
    }
    if let Some(interval) = s.ping_interval {
        builder = builder.ping_interval(interval, s.pong_timeout);
    }
    if let Some(idle) = s.idle_timeout {
        builder = builder.idle_timeout(idle);
    }
    builder.start().map_err(|e| format!("listen {}: {e}", s.listen))
}

fn wait_for_signals(
    mut signals: Signals,
    cli: &Cli,
    ctx: &Arc<Ctx>,
    log: &logging::LogControl,
    server: Server<Opening>,
) -> Result<(), String> {
    let mut server = Some(server);
    for signal in signals.forever() {
        match (signal, server.take()) {
            (SIGHUP, running) => {
                reload(cli, ctx, log);
                // The certificates are re-read whatever became of the file: a renewal must not
                // wait for a config file to parse. The error is logged and counted there.
                if ctx.tls.is_on() {
                    let _ = ctx.tls.reload(ctx.counters(), "SIGHUP");
                }
                server = running;
            }
            (_, Some(server)) => drain(ctx.clone(), server, signal),
            (_, None) => {
                tracing::warn!(signal, "second stop signal: exiting without waiting for the drain");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// Refuses new publishes, stops accepting, closes every connection with 1001, flushes the
/// broker's outgoing queue and exits 0 once all is done or the drain timeout has passed. Runs
/// on its own thread so a second signal can cut it short.
fn drain(ctx: Arc<Ctx>, server: Server<Opening>, signal: i32) {
    let grace = ctx.front.settings.drain_timeout;
    let started = Instant::now();
    let deadline = started + grace;
    let open = ctx.conns.len();
    tracing::info!(signal, connections = open, deadline = ?grace, "throng draining");
    let spawned = std::thread::Builder::new().name("throng-drain".into()).spawn(move || {
        ctx.stop_publishes(deadline);
        let left_for_clients = deadline.saturating_duration_since(Instant::now());
        let engine = std::thread::Builder::new()
            .name("throng-drain-engine".into())
            .spawn(move || server.shutdown(left_for_clients));
        // The publisher keeps sending while the clients close.
        let unsent = ctx.broker.flush(deadline);
        let left = match &engine {
            Ok(engine) => open_at_deadline(&ctx, engine, deadline),
            Err(_) => ctx.handle.stats().connections,
        };
        if let Ok(engine) = engine {
            let _ = engine.join();
        }
        if unsent > 0 {
            tracing::warn!(unsent, "broker: messages not sent upstream by the drain deadline are lost");
        }
        if left > 0 {
            tracing::warn!(left, "connections still open at the drain deadline were dropped");
        }
        let stats = ctx.handle.stats();
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            left,
            broker_unsent = unsent,
            messages_out = stats.messages_out,
            "throng stopped"
        );
        std::process::exit(0);
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the drain: {e}");
        std::process::exit(1);
    }
}

/// The connections still open when the drain deadline passed: 0 if the engine finished
/// before it (it returns early only once every connection closed), else the count seen at the
/// deadline, before the engine drops them (the last count seen before it, should the engine
/// have dropped them already).
fn open_at_deadline(ctx: &Ctx, engine: &std::thread::JoinHandle<()>, deadline: Instant) -> usize {
    let mut last = ctx.handle.stats().connections;
    loop {
        let finished = engine.is_finished();
        let now = Instant::now();
        if finished && now < deadline {
            return 0;
        }
        let seen = ctx.handle.stats().connections;
        if finished || now >= deadline {
            return if seen > 0 { seen } else { last };
        }
        last = seen;
        std::thread::sleep(deadline.saturating_duration_since(now).min(Duration::from_millis(5)));
    }
}

/// Options SIGHUP applies; every other change needs a restart.
const RELOADABLE: [&str; 6] =
    ["log_level", "jwt_secret", "api_key", "allowed_origins", "max_connections_per_ip", "demo"];

fn reload(cli: &Cli, ctx: &Ctx, log: &logging::LogControl) {
    let counters = ctx.counters();
    let new = match Settings::load(cli) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            return;
        }
    };
    if let Err(e) = log.set_level(&new.log_level) {
        tracing::error!("reload: {e}");
    }
    let old = &ctx.front.settings;
    let (old_json, new_json) = (old.to_json(), new.to_json());
    let ignored: Vec<&str> = (new_json.as_object().into_iter().flatten())
        .filter(|(key, value)| {
            !RELOADABLE.contains(&key.as_str()) && old_json.get(key.as_str()) != Some(value)
        })
        .map(|(key, _)| key.as_str())
        .collect();
    if !ignored.is_empty() {
        tracing::warn!(ignored = ?logging::List(&ignored), "reload: these changes need a restart");
    }
    ctx.front.set_live(Live { max_connections: old.max_connections, ..Live::from_settings(&new) });
    counters.inc(&counters.reloads);
    tracing::info!(
        auth = new.jwt_secret.is_some(),
        api_key = new.api_key.is_some(),
        origins = new.allowed_origins.len(),
        log_level = %new.log_level,
        "throng reloaded"
    );
}
