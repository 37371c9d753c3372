//! The application's side of a running server: [`Handle`], [`Prepared`] frames and why a
//! command can be refused.

use std::sync::Arc;

use super::mailbox::{Command, Shared};
use super::stats::Stats;
use super::ConnId;
use crate::proto::frame::{encode_header, MAX_HEADER_LEN};
use crate::proto::{CloseCode, Message, OpCode};

/// A message framed once, shareable by any number of connections on any loop.
#[derive(Clone, Debug)]
pub struct Prepared(pub(crate) Arc<[u8]>);

impl Prepared {
    /// Frames `message` for sending from a server.
    pub fn new(message: &Message) -> Self {
        Self::from_parts(message.kind().opcode(), message.as_bytes())
    }

    pub(crate) fn from_parts(opcode: OpCode, payload: &[u8]) -> Self {
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = encode_header(&mut header, true, opcode, None, payload.len() as u64);
        let mut frame = Vec::with_capacity(header_len + payload.len());
        frame.extend_from_slice(&header[..header_len]);
        frame.extend_from_slice(payload);
        Self(Arc::from(frame))
    }

    /// The size of the frame on the wire.
    pub fn wire_len(&self) -> usize {
        self.0.len()
    }
}

/// Why a loop did not take a command from a [`Handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The loop's command queue stayed full for the whole command timeout
    /// ([`crate::ServerBuilder::command_queue`]): the loop is overloaded. Counted in
    /// [`Stats::commands_refused`].
    QueueFull,
    /// The server has stopped.
    Stopped,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CommandError::QueueFull => "the event loop's command queue is full",
            CommandError::Stopped => "the server has stopped",
        })
    }
}

impl std::error::Error for CommandError {}

/// Sends, closes, subscribes and publishes from any thread. Cheap to clone.
///
/// Every call queues a command for the loop that owns the connection. The queues are bounded
/// ([`crate::ServerBuilder::command_queue`]): when a loop's queue is full, a call waits up to
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
        total
    }

    /// The counters of each loop, in loop order (`channel_len` is over all shards, which the
    /// loops share).
    pub fn loop_stats(&self) -> Vec<Stats> {
        let channel_len = self.shared.channel_len();
        self.shared.stats.iter().map(|s| Stats { channel_len, ..s.snapshot() }).collect()
    }

    pub(crate) fn shutdown_all(&self, deadline: std::time::Instant) {
        for mailbox in &self.shared.mailboxes {
            mailbox.request_shutdown(deadline);
        }
    }
}
