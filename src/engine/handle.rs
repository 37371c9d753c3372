//! The application's side of a running server: the [`Handle`].

use std::sync::Arc;

use super::mailbox::{Command, CommandError, Shared};
use super::outbound::Prepared;
use super::stats::Stats;
use super::ConnId;
use crate::proto::{CloseCode, Message};

/// Sends, closes, subscribes and publishes from any thread. Cheap to clone.
///
/// Every call queues a command for the loop that owns the connection. The queues are bounded
/// ([`ServerBuilder::command_queue`](super::ServerBuilder::command_queue)): when a loop's queue is full, a call waits up to
/// the command timeout for room and then returns [`CommandError::QueueFull`] (counted in
/// [`Stats::commands_refused`]); nothing grows without bound. A command for a connection that
/// has gone (a stale id) is accepted and ignored.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Sends a message to one connection.
    pub fn send(&self, conn: ConnId, message: impl Into<Message>) -> Result<(), CommandError> {
        self.shared.post(conn.loop_id(), Command::Send(conn, message.into()))
    }

    /// Sends a message framed once with [`Prepared::new`] (for sending the same bytes to many).
    pub fn send_prepared(&self, conn: ConnId, message: &Prepared) -> Result<(), CommandError> {
        self.shared.post(conn.loop_id(), Command::SendPrepared(conn, message.clone()))
    }

    /// Starts the close handshake with `code` (must be sendable, else 1000 is used) and `reason`.
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), CommandError> {
        let code = if CloseCode(code).is_sendable() { CloseCode(code) } else { CloseCode::NORMAL };
        self.shared.post(conn.loop_id(), Command::Close(conn, code, reason.to_owned()))
    }

    /// Subscribes a connection to a topic; it leaves every topic when it closes.
    pub fn subscribe(&self, conn: ConnId, topic: &str) -> Result<(), CommandError> {
        self.shared.post(conn.loop_id(), Command::Subscribe(conn, Arc::from(topic)))
    }

    /// Unsubscribes a connection from a topic.
    pub fn unsubscribe(&self, conn: ConnId, topic: &str) -> Result<(), CommandError> {
        self.shared.post(conn.loop_id(), Command::Unsubscribe(conn, Arc::from(topic)))
    }

    /// Sends a message to every subscriber of `topic` on every loop. The frame is encoded once
    /// and shared by all of them.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> Result<(), CommandError> {
        self.publish_prepared(topic, &Prepared::new(&message.into()))
    }

    /// [`Handle::publish`] with a message framed already. Every loop is tried: an error means at
    /// least one loop refused it (its subscribers miss the message; the others get it).
    pub fn publish_prepared(&self, topic: &str, message: &Prepared) -> Result<(), CommandError> {
        let topic: Arc<str> = Arc::from(topic);
        let mut result = Ok(());
        for loop_id in 0..self.shared.mailboxes.len() {
            let posted = self.shared.post(loop_id, Command::Publish(topic.clone(), message.clone()));
            result = result.and(posted);
        }
        result
    }

    /// The counters summed over loops.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for s in &self.shared.stats {
            total.add(&s.snapshot());
        }
        total.channel_len = self.shared.channel_len();
        total.backend = self.shared.backend;
        total
    }

    /// The counters of each loop, in loop order (`channel_len` is over all shards, which the
    /// loops share).
    pub fn loop_stats(&self) -> Vec<Stats> {
        let channel_len = self.shared.channel_len();
        let backend = self.shared.backend;
        self.shared.stats.iter().map(|s| Stats { channel_len, backend, ..s.snapshot() }).collect()
    }

    pub(crate) fn shutdown_all(&self, deadline: std::time::Instant) {
        for mailbox in &self.shared.mailboxes {
            mailbox.request_shutdown(deadline);
        }
    }
}
