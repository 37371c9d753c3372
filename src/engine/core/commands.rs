//! The application's commands, run on the loop: sends, closes, subscriptions, publish fan-out,
//! shutdown, and sockets another loop accepted.

use std::sync::atomic::Ordering;

use super::{Loop, LoopCore};
use crate::engine::backend::Backend;
use crate::engine::conn::Conn;
use crate::engine::ids::ConnId;
use crate::engine::mailbox::Command;

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

    /// Runs `f` on the live connection `id` names; stale ids (another loop, a slot's earlier
    /// connection) are ignored.
    fn with_conn(&mut self, id: ConnId, f: impl FnOnce(&mut Conn, &mut LoopCore, u32)) {
        let index = id.index() as u32;
        if id.loop_id() != self.core.loop_id || !self.is_live(index, id.generation()) {
            return;
        }
        if let Some((conn, core)) = self.conn(index) {
            f(conn, core, index);
        }
    }

    fn command<B: Backend<Socket = S>>(&mut self, command: Command, backend: &mut B) {
        match command {
            Command::Send(id, message) => self.with_conn(id, |c, core, i| c.send(core, i, &message)),
            Command::SendPrepared(id, frame) => self.with_conn(id, |c, core, i| {
                let _ = c.send_prepared(core, i, &frame);
            }),
            Command::Close(id, code, reason) => {
                self.with_conn(id, |c, core, i| c.close(core, i, code, &reason))
            }
            // The command's pin of the topic goes with it (the loop keeps its own while it
            // holds the topic).
            Command::Subscribe(id, pin) => {
                self.with_conn(id, |c, core, i| c.subscribe(core, i, pin.record()))
            }
            Command::Unsubscribe(id, record) => self.with_conn(id, |c, core, _| c.unsubscribe(core, &record)),
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
