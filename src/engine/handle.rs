//! The application's side of a running server: the [`Handle`].

use std::sync::Arc;

use super::mailbox::SubscribeWith;
use super::mailbox::{Command, CommandError, Shared};
use super::outbound::Prepared;
use super::stats::Stats;
use super::topics::{Joined, PublishReceipt};
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
    /// Its cause is reported as [`CloseCause::Application(0)`](super::CloseCause::Application).
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), CommandError> {
        self.close_tagged(conn, code, reason, 0)
    }

    /// [`Handle::close`] with the application's own tag (0..=127; a larger one is kept as 127),
    /// reported as [`CloseCause::Application(tag)`](super::CloseCause::Application) if this close is
    /// what ends the connection (not when the peer's close or another cause came first): the
    /// application says why it closed without keeping anything per connection.
    pub fn close_tagged(&self, conn: ConnId, code: u16, reason: &str, tag: u8) -> Result<(), CommandError> {
        let code = if CloseCode(code).is_sendable() { CloseCode(code) } else { CloseCode::NORMAL };
        self.shared.post(conn.loop_id(), Command::Close(conn, code, reason.to_owned(), tag))
    }

    /// Subscribes a connection to a topic; it leaves every topic when it closes. Subscribing
    /// twice is the same as once.
    pub fn subscribe(&self, conn: ConnId, topic: &str) -> Result<(), CommandError> {
        let pin = self.shared.interner.pin(topic);
        self.shared.post(conn.loop_id(), Command::Subscribe(conn, pin))
    }

    /// Unsubscribes a connection from a topic (nothing happens if it is not subscribed).
    pub fn unsubscribe(&self, conn: ConnId, topic: &str) -> Result<(), CommandError> {
        // No record: nobody is subscribed, and no subscribe is on its way.
        let Some(record) = self.shared.interner.find(topic) else { return Ok(()) };
        self.shared.post(conn.loop_id(), Command::Unsubscribe(conn, record))
    }

    /// Subscribes `conn` to `topic` unless it is in `limit` topics already (all its topics
    /// count), and answers on the loop: `reply(outcome)` runs on the loop thread right after,
    /// and the message it returns, if any, is queued to the connection in order with its other
    /// sends (after anything sent to it before this call, e.g. by [`Handle::send`] from the same
    /// thread), under its outbound cap and slow-consumer policy.
    ///
    /// A subscribe to a topic it is in already is [`Joined::Already`] (and does not count
    /// against the limit). [`Joined::Closed`]: the connection is gone or closing; the closure
    /// still runs (so that the caller can count it), its message is dropped. If the command is
    /// refused (the loop's queue stayed full), the closure is dropped unrun and the error
    /// returned.
    ///
    /// The closure runs in the middle of the loop's work, as the hooks do: it must be cheap and
    /// must not block (no [`Handle`] call that may wait for room in a queue).
    pub fn subscribe_with<F>(
        &self,
        conn: ConnId,
        topic: &str,
        limit: usize,
        reply: F,
    ) -> Result<(), CommandError>
    where
        F: FnOnce(Joined) -> Option<Message> + Send + 'static,
    {
        let pin = self.shared.interner.pin(topic);
        let command = SubscribeWith { conn, pin, limit, reply: Box::new(reply) };
        self.shared.post(conn.loop_id(), Command::SubscribeWith(Box::new(command)))
    }

    /// Unsubscribes `conn` from `topic` and answers on the loop: `reply(was_subscribed)` runs on
    /// the loop thread, its message queued as for [`Handle::subscribe_with`] (`false` also when
    /// the connection is gone; then the message is dropped). Refused: as there.
    pub fn unsubscribe_with<F>(&self, conn: ConnId, topic: &str, reply: F) -> Result<(), CommandError>
    where
        F: FnOnce(bool) -> Option<Message> + Send + 'static,
    {
        // Without a record (nobody subscribed) the loop still answers, in order with the sends.
        let record = self.shared.interner.find(topic);
        self.shared.post(conn.loop_id(), Command::UnsubscribeWith(conn, record, Box::new(reply)))
    }

    /// Sends a message to every subscriber of `topic` on every loop. The frame is encoded once
    /// and shared by all of them.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> Result<(), CommandError> {
        self.publish_prepared(topic, &Prepared::new(&message.into()))
    }

    /// [`Handle::publish`] with a message framed already. Every loop is tried: an error means at
    /// least one loop refused it (its subscribers miss the message; the others get it).
    ///
    /// A topic nobody is subscribed to (and no subscribe to it is on its way) costs a lookup.
    ///
    /// The time from here to the last write of the frame goes to
    /// [`Stats::publish_duration`] (see [`Prepared`] for when it ends).
    pub fn publish_prepared(&self, topic: &str, message: &Prepared) -> Result<(), CommandError> {
        let Some(record) = self.shared.interner.find(topic) else { return Ok(()) };
        message.stamp(&self.shared.publish_duration);
        let mut result = Ok(());
        for loop_id in 0..self.shared.mailboxes.len() {
            let posted = self.shared.post(loop_id, Command::Publish(record.clone(), message.clone(), None));
            result = result.and(posted);
        }
        result
    }

    /// [`Handle::publish_prepared`], with a receipt that tells how many connections the frame
    /// was queued to: each loop reports the subscribers it handed the frame to, after its
    /// outbound cap and slow-consumer policy (a connection closing meanwhile is not counted),
    /// and [`PublishReceipt::wait`] gives the sum once all have. An error means at least one
    /// loop refused the command, as for [`Handle::publish_prepared`]: the others still deliver.
    pub fn publish_counted(&self, topic: &str, message: &Prepared) -> Result<PublishReceipt, CommandError> {
        let Some(record) = self.shared.interner.find(topic) else { return Ok(PublishReceipt::nobody()) };
        message.stamp(&self.shared.publish_duration);
        let (receipt, reports) = PublishReceipt::new(self.shared.mailboxes.len());
        let mut result = Ok(());
        for (loop_id, report) in reports.enumerate() {
            let command = Command::Publish(record.clone(), message.clone(), Some(report));
            result = result.and(self.shared.post(loop_id, command));
        }
        result.map(|()| receipt)
    }

    /// The connections subscribed to `topic`, over all loops.
    pub fn subscribers(&self, topic: &str) -> usize {
        self.shared.interner.subscribers(topic)
    }

    /// The topic's subscribers over all loops, re-arming its change report (see
    /// [`ServerBuilder::on_topic_change`](super::ServerBuilder::on_topic_change)). A topic with
    /// no record gives 0.
    pub fn observe(&self, topic: &str) -> usize {
        self.shared.interner.observe(topic)
    }

    /// Every topic with subscribers, with their number over all loops, sorted by name.
    pub fn topics(&self) -> Vec<(Arc<str>, usize)> {
        self.shared.interner.list()
    }

    /// The topics with subscribers and the subscriptions (a connection in a topic), over all
    /// loops: two counters, read without a lock.
    pub fn subscription_totals(&self) -> (usize, usize) {
        self.shared.interner.totals()
    }

    /// The counters summed over loops.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for s in &self.shared.stats {
            total.add(&s.snapshot());
        }
        total.channel_len = self.shared.channel_len();
        total.backend = self.shared.backend;
        total.publish_duration = self.shared.publish_duration.snapshot();
        total
    }

    /// The counters of each loop, in loop order (`channel_len` is over all shards, which the
    /// loops share, and `publish_duration` over all loops: a publish spans them).
    pub fn loop_stats(&self) -> Vec<Stats> {
        let channel_len = self.shared.channel_len();
        let backend = self.shared.backend;
        let publish_duration = self.shared.publish_duration.snapshot();
        (self.shared.stats.iter())
            .map(|s| Stats { channel_len, backend, publish_duration, ..s.snapshot() })
            .collect()
    }

    pub(crate) fn shutdown_all(&self, deadline: std::time::Instant) {
        for mailbox in &self.shared.mailboxes {
            mailbox.request_shutdown(deadline);
        }
    }
}
