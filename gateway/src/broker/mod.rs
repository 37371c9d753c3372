//! Where publishes go. A [`Broker`] carries a publish to every node of the fleet and hands the
//! copies that arrive back to this node's loops; [`LocalBroker`] is the single-node case, which
//! delivers straight to the loops. [`RedisBroker`] implements the same trait for a fleet: it is
//! told when a topic gains its first or loses its last local subscriber, so it subscribes
//! upstream only to what this node needs (`docs/architecture.md`, "Broker", says why).

mod backoff;
#[doc(hidden)] // public for the fuzz targets only
pub mod envelope;
mod local;
mod presence;
mod publisher;
mod redis;
mod subscriber;

use throng::{Message, PublishReceipt};

pub use self::local::LocalBroker;
pub use self::redis::{RedisBroker, RedisOptions};

/// The broker's health, reported by `/readyz` and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerState {
    /// No broker: this node is the whole fleet.
    Local,
    /// Connected to the upstream broker.
    Connected,
    /// Upstream unreachable: publishes still reach this node's own subscribers.
    Disconnected,
}

impl BrokerState {
    /// The label used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerState::Local => "local",
            BrokerState::Connected => "connected",
            BrokerState::Disconnected => "disconnected",
        }
    }

    /// Whether the node should take traffic.
    pub fn is_ready(self) -> bool {
        self != BrokerState::Disconnected
    }
}

/// Who sent a forwarded client message.
#[derive(Clone, Debug)]
pub struct Sender {
    /// The connection id ([`throng::ConnId::as_u64`]).
    pub conn: u64,
    /// The token's subject, when auth is on.
    pub user: Option<String>,
}

/// Counters of an upstream broker, for `/metrics` and `/v1/stats` (all zero for a single node).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Messages handed to the upstream broker (publishes and forwarded client messages).
    pub sent: u64,
    /// Publishes from other nodes delivered to this node's loops.
    pub received: u64,
    /// Messages dropped because the outgoing queue was full (a long outage or a slow broker).
    pub dropped_queue_full: u64,
    /// Messages lost because the connection failed while they were being sent.
    pub dropped_send_failed: u64,
    /// Messages from upstream that could not be decoded.
    pub dropped_malformed: u64,
    /// Messages still unsent when the drain deadline passed on shutdown.
    pub dropped_drain: u64,
    /// Messages from upstream over `broker_max_message_size`.
    pub dropped_oversize: u64,
    /// Payloads without the envelope aimed at a `user:` topic while `broker_raw_user_topics`
    /// is off.
    pub dropped_raw_user_topic: u64,
    /// Connections (re)established after a failure, both directions counted.
    pub reconnects: u64,
    /// Messages waiting in the outgoing queue now.
    pub queued: u64,
}

/// A channel's subscribers across the fleet, from the presence records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    /// Subscribers on every node, this one included.
    pub subscribers: u64,
    /// Nodes with at least one subscriber.
    pub nodes: u64,
}

/// Carries publishes across the fleet. Implementations must not block the caller for long:
/// they are called from admin API threads and, for the topic notifications, on the engine's
/// loop threads (`ServerBuilder::on_topic`, `on_topic_change`).
pub trait Broker: Send + Sync {
    /// Delivers `message` to every subscriber of `topic` on every node, this one included. An
    /// error says an event loop of this node refused it (its command queue stayed full): that
    /// loop's subscribers miss it, the other loops and nodes still get it.
    /// The receipt counts the connections of this node it reached.
    fn publish(&self, topic: &str, message: Message) -> Result<PublishReceipt, throng::CommandError>;

    /// `topic` gained its first subscriber on this node or lost its last. Level-triggered, as
    /// the engine reports it: act on `Handle::subscribers(topic)` read when acting, not on
    /// the order of these calls. Runs on a loop thread: record it and return.
    fn topic_membership(&self, _topic: &str) {}

    /// `topic`'s count of local subscribers changed. Reported once until someone reads the
    /// count with `Handle::observe(topic)`, which re-arms the report. Runs on a loop thread.
    fn topic_count_changed(&self, _topic: &str) {}

    /// A data message from a client, when `client_messages = "forward"`.
    fn forward(&self, from: &Sender, message: Message);

    /// The connection state for `/readyz` and metrics.
    fn state(&self) -> BrokerState;

    /// Counters for the metrics.
    fn stats(&self) -> BrokerStats {
        BrokerStats::default()
    }

    /// On shutdown: waits until every message accepted so far has been handed upstream, or
    /// until `deadline`; returns how many were not (they are lost, and counted as dropped).
    fn flush(&self, _deadline: std::time::Instant) -> u64 {
        0
    }

    /// The fleet-wide subscriber count of `topic`, given this node's `local` count; `None`
    /// when the broker cannot tell (single node, or upstream unreachable).
    fn presence(&self, _topic: &str, _local: usize) -> Option<Presence> {
        None
    }
}

/// Checks that `url` names a Redis server the broker can use.
pub fn check_url(url: &str) -> Result<(), String> {
    use ::redis::IntoConnectionInfo;
    match url.into_connection_info() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{}: not a Redis URL (redis://[:PASSWORD@]HOST:PORT[/DB])", redact_url(url))),
    }
}

/// `url` with any password replaced, for logs and `--print-config`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:<redacted>@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_redacted() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("redis://127.0.0.1:6379/2").is_ok());
        assert!(check_url("http://example.com").is_err());
        assert!(check_url("not a url").is_err());
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://:pw@host:1/0"), "redis://:<redacted>@host:1/0");
        assert_eq!(redact_url("redis://me:pw@host:1"), "redis://me:<redacted>@host:1");
        let err = check_url("http://me:secret@host").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
