//! Server configuration and its builder.

use std::net::SocketAddr;
use std::time::Duration;

use crate::app::{HttpHook, MessageHook, UpgradeHook};
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

/// Everything a server runs with. Built by [`crate::ServerBuilder`].
#[derive(Clone)]
pub struct Config {
    pub(crate) addr: SocketAddr,
    pub(crate) loops: usize,
    pub(crate) limits: Limits,
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
    pub(crate) read_budget: usize,
    pub(crate) scratch_size: usize,
    pub(crate) open_headers: Vec<String>,
    pub(crate) upgrade_hook: Option<UpgradeHook>,
    pub(crate) message_hook: Option<MessageHook>,
    pub(crate) http_hook: Option<HttpHook>,
    pub(crate) reuse_port: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9001)),
            loops: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: Limits::default(),
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
            read_budget: 16,
            scratch_size: 256 * 1024,
            open_headers: Vec::new(),
            upgrade_hook: None,
            message_hook: None,
            http_hook: None,
            reuse_port: true,
        }
    }
}
