//! Where publishes go. A [`Broker`] carries a publish to every node of the fleet and hands the
//! copies that arrive back to this node's loops; [`LocalBroker`] is the single-node case, which
//! delivers straight to the loops. A Redis broker implements the same trait: it is told when a
//! topic gains its first or loses its last local subscriber, so it can subscribe upstream only
//! to what this node needs.

mod local;

use crate::Message;

pub use self::local::LocalBroker;

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
    /// The connection id ([`crate::ConnId::as_u64`]).
    pub conn: u64,
    /// The token's subject, when auth is on.
    pub user: Option<String>,
}

/// Carries publishes across the fleet. Implementations must not block the caller for long:
/// they are called from admin API threads and, for the topic notifications, with the gateway's
/// subscription lock held.
pub trait Broker: Send + Sync {
    /// Delivers `message` to every subscriber of `topic` on every node, this one included.
    fn publish(&self, topic: &str, message: Message);

    /// `topic` gained its first subscriber on this node.
    fn topic_added(&self, _topic: &str) {}

    /// `topic` lost its last subscriber on this node.
    fn topic_removed(&self, _topic: &str) {}

    /// A data message from a client, when `client_messages = "forward"`.
    fn forward(&self, from: &Sender, message: Message);

    /// The connection state for `/readyz` and metrics.
    fn state(&self) -> BrokerState;
}
