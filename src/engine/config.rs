//! Server configuration and its builder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::delivery::Erased;
use super::event::{Admission, CloseHook, HttpHook, MessageHook, OpenHook, UpgradeHook};
use super::topics::{ChangeHook, TopicHook};
use crate::net::CidrList;
use crate::proto::deflate::DeflateConfig;
use crate::proto::handshake::RequestLimits;
use crate::proto::Limits;

/// What happens to a connection whose queued outbound bytes would exceed the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close it with 1008 (policy violation). The default: a consumer that cannot keep up with a
    /// push stream is better reconnected than silently starved.
    Close,
    /// Drop the message for that connection and carry on.
    Drop,
}

/// How a server's loops move bytes ([`ServerBuilder::backend`](super::ServerBuilder::backend)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring where the kernel offers what the engine needs, epoll otherwise (with one log
    /// line saying why). The environment variable `THRONG_BACKEND` (`auto`, `epoll` or
    /// `io_uring`) overrides it, so that a deployment or a test run can choose without a code
    /// change; an explicit choice in code is never overridden.
    #[default]
    Auto,
    /// Readiness with edge-triggered epoll (kqueue elsewhere), through `mio`.
    Epoll,
    /// A completion ring per loop (Linux, the `io-uring` feature). A kernel that cannot run it
    /// (disabled by sysctl, refused by a seccomp profile, too old) is an error at start.
    IoUring,
}

impl Backend {
    /// The name used in configuration, flags and metrics: `auto`, `epoll` or `io_uring`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Epoll => "epoll",
            Backend::IoUring => "io_uring",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Backend::Auto),
            "epoll" => Ok(Backend::Epoll),
            "io_uring" | "io-uring" | "iouring" => Ok(Backend::IoUring),
            other => Err(format!("unknown backend {other:?} (expected auto, epoll or io_uring)")),
        }
    }
}

/// Everything a server runs with. Built by [`ServerBuilder`](super::ServerBuilder).
#[derive(Clone)]
pub struct Config {
    pub(crate) addr: SocketAddr,
    pub(crate) loops: usize,
    pub(crate) limits: Limits,
    pub(crate) deflate: DeflateConfig,
    pub(crate) request_limits: RequestLimits,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) max_outbound_bytes: usize,
    pub(crate) slow_consumer: SlowConsumerPolicy,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_loop: usize,
    pub(crate) event_capacity: usize,
    pub(crate) event_shards: usize,
    pub(crate) command_capacity: usize,
    pub(crate) command_timeout: Duration,
    pub(crate) message_timeout: Option<Duration>,
    pub(crate) max_assembly_bytes: usize,
    pub(crate) message_rate: Option<RateLimit>,
    pub(crate) proxy_trusted: Option<CidrList>,
    /// TLS on the listener: every connection starts with a TLS handshake.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) admission: Option<Arc<dyn Admission>>,
    pub(crate) read_budget: usize,
    pub(crate) scratch_size: usize,
    pub(crate) open_headers: Vec<String>,
    /// Returns the application's value erased; [`crate::ServerBuilder::on_upgrade`] wraps it.
    pub(crate) upgrade_hook: Option<UpgradeHook<Erased>>,
    pub(crate) message_hook: Option<MessageHook>,
    pub(crate) http_hook: Option<HttpHook>,
    /// Whether [`Event::Open`](super::Event::Open) and [`Event::Close`](super::Event::Close)
    /// are queued to the workers ([`ServerBuilder::lifecycle_events`](super::ServerBuilder::lifecycle_events)).
    pub(crate) lifecycle_events: bool,
    pub(crate) open_hook: Option<OpenHook>,
    pub(crate) close_hook: Option<CloseHook>,
    pub(crate) topic_hook: Option<TopicHook>,
    pub(crate) change_hook: Option<ChangeHook>,
    pub(crate) reuse_port: bool,
    pub(crate) backend: Backend,
    /// io_uring: the provided receive buffers of each loop (count, bytes each).
    pub(crate) recv_buffers: (u16, u32),
    /// io_uring: the most slots of each loop's registered-file table.
    pub(crate) registered_files: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9001)),
            loops: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: Limits::default(),
            deflate: DeflateConfig::default(),
            request_limits: RequestLimits::default(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: None,
            ping_interval: None,
            pong_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_outbound_bytes: 4 << 20,
            slow_consumer: SlowConsumerPolicy::Close,
            max_connections: 1 << 24,
            max_connections_per_loop: 1 << 22,
            event_capacity: 64 * 1024,
            event_shards: 1,
            command_capacity: 16 * 1024,
            command_timeout: Duration::from_millis(100),
            message_timeout: Some(Duration::from_secs(60)),
            max_assembly_bytes: 256 << 20,
            message_rate: None,
            proxy_trusted: None,
            tls: None,
            admission: None,
            read_budget: 16,
            scratch_size: 256 * 1024,
            open_headers: Vec::new(),
            upgrade_hook: None,
            message_hook: None,
            lifecycle_events: true,
            open_hook: None,
            close_hook: None,
            http_hook: None,
            topic_hook: None,
            change_hook: None,
            reuse_port: true,
            backend: Backend::Auto,
            recv_buffers: (256, 128 * 1024),
            registered_files: 1 << 16,
        }
    }
}

/// A per-connection limit on messages (and pings) received: `per_second` on average, bursts of
/// up to `burst`. Kept as a GCRA (one timestamp per connection) in units of [`FINE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimit {
    /// Units of [`FINE`] between two messages at the sustained rate.
    interval: u32,
    /// How far ahead of now the theoretical arrival time may run: `(burst - 1) * interval`.
    tolerance: u32,
}

/// The resolution of the rate limiter's clock (so at most 10,000 messages per second can be
/// told apart; higher rates are held to that).
pub(crate) const FINE: Duration = Duration::from_micros(100);

impl RateLimit {
    /// The limit, or `None` for a rate of zero (no limit).
    pub(crate) fn new(per_second: u32, burst: u32) -> Option<Self> {
        if per_second == 0 {
            return None;
        }
        let per_fine_second = (Duration::from_secs(1).as_nanos() / FINE.as_nanos()) as u32;
        let interval = (per_fine_second / per_second).max(1);
        // Bounded so that the window stays far inside the wrap-safe half of the u32 clock.
        let tolerance = u64::from(burst.max(1) - 1) * u64::from(interval);
        Some(Self { interval, tolerance: tolerance.min(1 << 30) as u32 })
    }

    pub(crate) fn interval(&self) -> u32 {
        self.interval
    }

    pub(crate) fn tolerance(&self) -> u32 {
        self.tolerance
    }

    /// The span the limiter's state matters for: after that long without a message the bucket
    /// is full again whatever the state says.
    pub(crate) fn window(&self) -> u32 {
        self.tolerance + self.interval
    }

    /// [`RateLimit::window`] as a duration.
    pub(crate) fn memory(&self) -> Duration {
        FINE * self.window()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_units() {
        let r = RateLimit::new(100, 20).unwrap();
        assert_eq!(r.interval(), 100); // 10 ms in 0.1 ms units
        assert_eq!(r.tolerance(), 1900);
        assert_eq!(r.memory(), Duration::from_millis(200));
        assert_eq!(RateLimit::new(0, 5), None);
        assert_eq!(RateLimit::new(1_000_000, 1).unwrap().interval(), 1);
    }
}
