//! The application's commands, run on the loop: sends, closes, subscriptions, publish fan-out,
//! shutdown, and sockets another loop accepted.

use std::sync::atomic::Ordering;

use super::{Loop, LoopCore};
use crate::engine::backend::Backend;
use crate::engine::conn::Conn;
use crate::engine::event::CloseCause;
use crate::engine::ids::ConnId;
use crate::engine::mailbox::{Command, SubscribeWith};
use crate::engine::topics::Joined;
use crate::proto::Message;

impl<S> Loop<S> {
    /// Runs queued commands, at most one queue's capacity per turn so that a stream of commands
    /// cannot keep the loop from its sockets and timers.
    pub(super) fn drain_commands<B: Backend<Socket = S>>(&mut self, backend: &mut B) {
        let mailbox = &self.shared.mailboxes[self.core.loop_id];
        mailbox.wake_pending.store(false, Ordering::Release);
        if let Some(deadline) = mailbox.take_shutdown() {
            self.shutdown(deadline, backend);
        }
        let mut budget = self.core.config.command_capacity;
        self.commands_left = false;
        while let Ok(command) = self.commands.try_recv() {
            self.command(command, backend);
            budget -= 1;
            if budget == 0 {
                self.commands_left = !self.commands.is_empty();
                break;
            }
        }
        self.core.stats.commands_queued.store(self.commands.len(), Ordering::Relaxed);
    }

    /// Runs `f` on the live connection `id` names and returns what it did; stale ids (another
    /// loop, a slot's earlier connection) are ignored (`None`).
    fn with_conn<R>(&mut self, id: ConnId, f: impl FnOnce(&mut Conn, &mut LoopCore, u32) -> R) -> Option<R> {
        let index = id.index() as u32;
        if id.loop_id() != self.core.loop_id || !self.is_live(index, id.generation()) {
            return None;
        }
        let (conn, core) = self.conn(index)?;
        Some(f(conn, core, index))
    }

    /// Queues `message` to connection `id` (under its outbound cap and slow-consumer policy);
    /// dropped if it is gone or closing. Sends and the answers to subscribes all come here.
    fn send(&mut self, id: ConnId, message: &Message) {
        self.with_conn(id, |c, core, i| c.send(core, i, message));
    }

    fn command<B: Backend<Socket = S>>(&mut self, command: Command, backend: &mut B) {
        match command {
            Command::Send(id, message) => self.send(id, &message),
            Command::SendPrepared(id, frame) => {
                self.with_conn(id, |c, core, i| c.send_prepared(core, i, &frame));
            }
            Command::Close(id, code, reason, tag) => {
                let cause = CloseCause::Application(tag);
                self.with_conn(id, |c, core, i| c.close(core, i, code, &reason, cause));
            }
            // The command's pin of the topic goes with it (the loop keeps its own while it
            // holds the topic).
            Command::Subscribe(id, pin) => {
                self.with_conn(id, |c, core, i| c.subscribe(core, i, pin.record(), usize::MAX));
            }
            Command::SubscribeWith(command) => {
                let SubscribeWith { conn, pin, limit, reply } = *command;
                let joined = (self.with_conn(conn, |c, core, i| c.subscribe(core, i, pin.record(), limit)))
                    .unwrap_or(Joined::Closed);
                drop(pin); // before the application's code runs: a refused join releases the record
                if let Some(message) = reply(joined) {
                    self.send(conn, &message);
                }
            }
            Command::Unsubscribe(id, record) => {
                self.with_conn(id, |c, core, _| c.unsubscribe(core, &record));
            }
            Command::UnsubscribeWith(id, record, reply) => {
                let left =
                    record.and_then(|record| self.with_conn(id, |c, core, _| c.unsubscribe(core, &record)));
                if let Some(message) = reply(left.unwrap_or(false)) {
                    self.send(id, &message);
                }
            }
            Command::Publish(record, frame, report) => {
                // The slots first: queueing a frame needs the loop state the index is in.
                let mut subscribers = std::mem::take(&mut self.subscribers);
                subscribers.clear();
                self.core.topics.members(&record, &mut subscribers);
                let mut queued = 0;
                for &index in &subscribers {
                    if let Some((conn, core)) = self.conn(index) {
                        queued += usize::from(conn.send_prepared(core, index, &frame));
                    }
                }
                self.subscribers = subscribers;
                if queued > 0 {
                    frame.delivered();
                }
                if let Some(report) = report {
                    report.add(queued);
                }
            }
            Command::Adopt(socket, peer) => match backend.adopt(socket) {
                // Over a cap the socket is dropped, which closes it.
                Ok(socket) => {
                    self.open(backend, peer, socket);
                }
                Err(e) => log::warn!("loop {}: adopting a socket failed: {e}", self.core.loop_id),
            },
        }
    }
}
