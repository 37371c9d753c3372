//! The broker of a single node: publishes go straight to this node's loops.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Broker, BrokerState, Sender};
use throng::{Handle, Message, Prepared, PublishReceipt};

/// Delivers to this node only. Forwarded client messages are logged at debug level and counted.
pub struct LocalBroker {
    handle: Handle,
    forwarded: AtomicU64,
}

impl LocalBroker {
    /// A broker publishing through `handle`.
    pub fn new(handle: Handle) -> Self {
        LocalBroker { handle, forwarded: AtomicU64::new(0) }
    }

    /// Client messages forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Broker for LocalBroker {
    fn publish(&self, topic: &str, message: Message) -> Result<PublishReceipt, throng::CommandError> {
        self.handle.publish_counted(topic, &Prepared::new(&message))
    }

    fn forward(&self, from: &Sender, message: Message) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            conn = from.conn,
            user = from.user.as_deref(),
            bytes = message.as_bytes().len(),
            "client message"
        );
    }

    fn state(&self) -> BrokerState {
        BrokerState::Local
    }
}
