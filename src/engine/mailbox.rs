//! The queues from the application to the loops: commands, one mailbox per loop, the shared
//! table [`Handle`](super::Handle) posts through, and why a command can be refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use super::delivery::RawEvent;
use super::outbound::Prepared;
use super::stats::LoopStats;
use super::topics::{Interner, Joined, Pin, Report, TopicShared};
use super::ConnId;
use crate::proto::{CloseCode, Message};

/// A command from the application to a loop.
pub(crate) enum Command {
    Send(ConnId, Message),
    SendPrepared(ConnId, Prepared),
    /// With the application's tag for [`CloseCause::Application`](super::CloseCause::Application).
    Close(ConnId, CloseCode, String, u8),
    Subscribe(ConnId, Pin),
    /// A capped subscribe with its answer (boxed: the command stays the size of a send).
    SubscribeWith(Box<SubscribeWith>),
    Unsubscribe(ConnId, Arc<TopicShared>),
    /// An unsubscribe with its answer; without a record (nobody subscribed) it only answers,
    /// on the connection's loop, so that the answer keeps its place among the sends.
    UnsubscribeWith(ConnId, Option<Arc<TopicShared>>, LeaveReply),
    /// A frame for the topic's subscribers; with a [`Report`], the loop says how many it
    /// queued it to.
    Publish(Arc<TopicShared>, Prepared, Option<Report>),
    /// A socket accepted by another loop (only without `SO_REUSEPORT`), handed over as a std
    /// socket so that any backend can take it.
    Adopt(std::net::TcpStream, SocketAddr),
}

/// The answer to a capped subscribe, run on the loop: the message to queue to the connection.
pub(crate) type JoinReply = Box<dyn FnOnce(Joined) -> Option<Message> + Send>;

/// The answer to an unsubscribe (whether the connection was in the topic), run on the loop.
pub(crate) type LeaveReply = Box<dyn FnOnce(bool) -> Option<Message> + Send>;

/// What [`Command::SubscribeWith`] carries.
pub(crate) struct SubscribeWith {
    pub(crate) conn: ConnId,
    pub(crate) pin: Pin,
    pub(crate) limit: usize,
    pub(crate) reply: JoinReply,
}

/// Why a loop did not take a command from a [`Handle`](super::Handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The loop's command queue stayed full for the whole command timeout
    /// ([`ServerBuilder::command_queue`](super::ServerBuilder::command_queue)): the loop is overloaded. Counted in
    /// [`Stats::commands_refused`](super::Stats::commands_refused).
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

/// Wakes a loop blocked in its backend's poll: each backend brings its own (mio's waker, an
/// eventfd the ring reads).
pub(crate) trait Wake: Send + Sync {
    /// Makes the loop's next (or current) poll return.
    fn wake(&self) -> std::io::Result<()>;
}

impl Wake for mio::Waker {
    fn wake(&self) -> std::io::Result<()> {
        mio::Waker::wake(self)
    }
}

/// The sending side of one loop's command queue (bounded).
pub(crate) struct LoopMailbox {
    pub(crate) commands: Sender<Command>,
    pub(crate) waker: Arc<dyn Wake>,
    /// Set while a wake-up is on its way, so that a burst of commands wakes the loop once.
    pub(crate) wake_pending: AtomicBool,
    /// A shutdown request: outside the queue, so that a full queue cannot hold it up.
    shutdown: Mutex<Option<std::time::Instant>>,
    shutdown_pending: AtomicBool,
}

impl LoopMailbox {
    pub(crate) fn new(commands: Sender<Command>, waker: Arc<dyn Wake>) -> Self {
        Self {
            commands,
            waker,
            wake_pending: AtomicBool::new(false),
            shutdown: Mutex::new(None),
            shutdown_pending: AtomicBool::new(false),
        }
    }

    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A failed wake-up means the loop is gone; nothing to do.
            let _ = self.waker.wake();
        }
    }

    /// Queues `command`, waiting up to `wait` for room.
    pub(crate) fn post(&self, command: Command, wait: std::time::Duration) -> Result<(), CommandError> {
        let result = match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(CommandError::Stopped),
            Err(TrySendError::Full(command)) if !wait.is_zero() => {
                self.wake();
                self.commands.send_timeout(command, wait).map_err(|e| match e {
                    SendTimeoutError::Timeout(_) => CommandError::QueueFull,
                    SendTimeoutError::Disconnected(_) => CommandError::Stopped,
                })
            }
            Err(TrySendError::Full(_)) => Err(CommandError::QueueFull),
        };
        self.wake();
        result
    }

    pub(crate) fn request_shutdown(&self, deadline: std::time::Instant) {
        *self.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.shutdown_pending.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    /// The shutdown deadline, once, if one was requested.
    pub(crate) fn take_shutdown(&self) -> Option<std::time::Instant> {
        if !self.shutdown_pending.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.shutdown.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

pub(crate) struct Shared {
    pub(crate) mailboxes: Vec<LoopMailbox>,
    pub(crate) stats: Vec<Arc<LoopStats>>,
    /// The shards, only to read their lengths: holding a sender here would keep the workers'
    /// `events.iter()` from ending after shutdown.
    pub(crate) events: Vec<Receiver<RawEvent>>,
    /// How long a [`Handle`] call waits for room in a full command queue.
    pub(crate) command_timeout: std::time::Duration,
    /// The backend the loops run on.
    pub(crate) backend: super::config::Backend,
    /// The topics of all loops, by name.
    pub(crate) interner: Arc<Interner>,
    /// Publishes by time to their frame's last write (one per publish, from any loop).
    pub(crate) publish_duration: Arc<super::stats::AtomicHistogram>,
}

impl Shared {
    /// The events waiting in all shards.
    pub(crate) fn channel_len(&self) -> usize {
        self.events.iter().map(Receiver::len).sum()
    }

    /// Queues a command for loop `loop_id`, waiting up to the command timeout; a refusal is
    /// counted on that loop.
    pub(crate) fn post(&self, loop_id: usize, command: Command) -> Result<(), CommandError> {
        self.post_within(loop_id, command, self.command_timeout)
    }

    /// Queues a command without waiting (a loop posting to another loop must never block).
    pub(crate) fn try_post(&self, loop_id: usize, command: Command) -> Result<(), CommandError> {
        self.post_within(loop_id, command, std::time::Duration::ZERO)
    }

    fn post_within(
        &self,
        loop_id: usize,
        command: Command,
        wait: std::time::Duration,
    ) -> Result<(), CommandError> {
        // An id that names no loop names no connection: like any stale id, nothing to do.
        let Some(mailbox) = self.mailboxes.get(loop_id) else { return Ok(()) };
        let result = mailbox.post(command, wait);
        if result == Err(CommandError::QueueFull) {
            LoopStats::add(&self.stats[loop_id].commands_refused, 1);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_command_stays_the_size_of_a_send() {
        let size = std::mem::size_of::<super::Command>();
        println!("size_of::<Command>() = {size}");
        assert!(size <= 48, "Command grew to {size} bytes");
    }
}
