//! The readiness backend on `mio` (epoll on Linux): one `Poll`, one `SO_REUSEPORT` listener and
//! one slab of connections per loop thread. Edge-triggered: a socket is read until it returns
//! fewer bytes than asked (the kernel queue is empty then, see epoll(7)) or `WouldBlock`, within
//! a budget per wake-up for fairness; connections over budget go on the ready list for next turn.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::engine::conn::{Conn, Next};
use crate::engine::core::LoopCore;
use crate::engine::ids::MAX_CONNS_PER_LOOP;
use crate::engine::mailbox::{Command, Shared};
use crate::engine::outbound::MAX_IOVECS;
use crate::engine::stats::LoopStats;
use crate::engine::timer::TimerEntry;

pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);

/// How long accepting pauses after EMFILE/ENFILE, so that a full descriptor table does not spin
/// the loop at 100 % CPU while existing connections carry on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

struct Slot {
    socket: TcpStream,
    conn: Conn,
}

/// The loop's slab, with slots whose generations are used up kept occupied (`None`) forever so
/// that no connection id is ever issued twice (see [`crate::engine::ids::Generations`]).
#[derive(Default)]
struct Slots {
    slab: Slab<Option<Slot>>,
    retired: usize,
}

impl Slots {
    fn get(&self, index: usize) -> Option<&Slot> {
        self.slab.get(index)?.as_ref()
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Slot> {
        self.slab.get_mut(index)?.as_mut()
    }

    /// Connections held (retired slots are not connections).
    fn len(&self) -> usize {
        self.slab.len() - self.retired
    }

    fn indices(&self) -> Vec<usize> {
        self.slab.iter().filter(|(_, s)| s.is_some()).map(|(i, _)| i).collect()
    }

    /// Takes a connection out; a retired slot stays where it is.
    fn remove(&mut self, index: usize) -> Option<Slot> {
        let slot = self.slab.get_mut(index)?.take()?;
        self.slab.remove(index);
        Some(slot)
    }

    /// A free slot and the generation of the connection it will hold.
    fn vacant(&mut self, core: &mut LoopCore) -> (slab::VacantEntry<'_, Option<Slot>>, u32) {
        loop {
            let index = self.slab.vacant_key();
            match core.generations.next(index) {
                Some(generation) => return (self.slab.vacant_entry(), generation),
                None => {
                    self.slab.insert(None);
                    self.retired += 1;
                }
            }
        }
    }
}

/// Where accepted sockets go when there is no `SO_REUSEPORT`: loop 0 accepts for everyone.
pub(crate) enum Acceptor {
    /// This loop has its own listener (or none, when another loop accepts for it).
    Own(Option<TcpListener>),
    /// This loop accepts and hands every n-th socket to loop n.
    Distributing { listener: TcpListener, next: usize },
}

impl Acceptor {
    fn listener_mut(&mut self) -> Option<&mut TcpListener> {
        match self {
            Acceptor::Own(listener) => listener.as_mut(),
            Acceptor::Distributing { listener, .. } => Some(listener),
        }
    }
}

pub(crate) struct MioLoop {
    poll: Poll,
    acceptor: Acceptor,
    slab: Slots,
    core: LoopCore,
    scratch: Vec<u8>,
    commands: Receiver<Command>,
    shared: Arc<Shared>,
    /// Connections that may have unread bytes: over their read budget, or paused for workers.
    ready: Vec<(u32, u32)>,
    accept_paused_until: Option<Instant>,
    due: Vec<TimerEntry>,
    subscribers: Vec<u32>,
    /// The command budget ran out with commands still queued: poll without sleeping.
    commands_left: bool,
}

impl MioLoop {
    pub(crate) fn new(
        poll: Poll,
        acceptor: Acceptor,
        core: LoopCore,
        commands: Receiver<Command>,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let mut this = Self {
            poll,
            acceptor,
            slab: Slots::default(),
            scratch: vec![0; core.config.scratch_size],
            core,
            commands,
            shared,
            ready: Vec::new(),
            accept_paused_until: None,
            due: Vec::new(),
            subscribers: Vec::new(),
            commands_left: false,
        };
        if let Some(listener) = this.acceptor.listener_mut() {
            this.poll.registry().register(listener, LISTENER, Interest::READABLE)?;
        }
        Ok(this)
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            self.core.update_clock();
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("loop {}: poll failed: {e}", self.core.loop_id);
                    break;
                }
            }
            self.core.update_clock();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(index) => {
                        let peer_done = event.is_read_closed() || event.is_error();
                        if event.is_readable() || peer_done {
                            self.read(index, peer_done);
                        }
                        if event.is_writable() {
                            self.flush(index);
                        }
                    }
                }
            }
            self.drain_commands();
            if self.core.drain_backlog() && !self.ready.is_empty() {
                for (index, generation) in std::mem::take(&mut self.ready) {
                    if self.slab.get(index as usize).is_some()
                        && self.core.generations.matches(index, generation)
                    {
                        self.read(index as usize, true);
                    }
                }
            }
            self.expire_timers();
            if self.accept_paused_until.is_some_and(|until| self.core.now >= until) {
                self.accept_paused_until = None;
                self.accept();
            }
            self.flush_dirty();
            if let Some(deadline) = self.core.shutting_down {
                if self.slab.len() == 0 || self.core.now >= deadline {
                    break;
                }
            }
        }
        for index in self.slab.indices() {
            self.remove(index);
        }
        // Let the workers see the last Close events even if the channel was full.
        let give_up = Instant::now() + Duration::from_secs(1);
        while !self.core.drain_backlog() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.core.workers_behind() {
            return Some(Duration::from_millis(1));
        }
        if !self.ready.is_empty() || self.commands_left {
            return Some(Duration::ZERO);
        }
        let mut timeout = self.core.wheel.poll_timeout(self.core.now);
        let mut consider = |at: Instant| {
            let d = at.saturating_duration_since(self.core.now);
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        };
        if let Some(until) = self.accept_paused_until {
            consider(until);
        }
        if let Some(deadline) = self.core.shutting_down {
            consider(deadline);
        }
        timeout
    }

    fn accept(&mut self) {
        if self.accept_paused_until.is_some() || self.core.shutting_down.is_some() {
            return;
        }
        loop {
            let accepted = match &self.acceptor {
                Acceptor::Own(Some(listener)) | Acceptor::Distributing { listener, .. } => listener.accept(),
                Acceptor::Own(None) => return,
            };
            match accepted {
                Ok((socket, peer)) => self.route(socket, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: the pending connection stays in the backlog;
                    // try again shortly instead of spinning on it.
                    LoopStats::add(&self.core.stats.accept_errors, 1);
                    log::warn!(
                        "loop {}: accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?}",
                        self.core.loop_id
                    );
                    self.accept_paused_until = Some(self.core.now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn route(&mut self, socket: TcpStream, peer: SocketAddr) {
        if let Acceptor::Distributing { next, .. } = &mut self.acceptor {
            let target = *next % self.shared.mailboxes.len();
            *next = next.wrapping_add(1);
            if target != self.core.loop_id {
                // Never block a loop on another loop's queue: a full one costs this connection.
                if self.shared.try_post(target, Command::Adopt(socket, peer)).is_err() {
                    LoopStats::add(&self.core.stats.rejected_over_limit, 1);
                }
                return;
            }
        }
        self.adopt(socket, peer);
    }

    fn adopt(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        let config = &self.core.config;
        let total = self.core.total_connections.load(Ordering::Relaxed);
        if total >= config.max_connections
            || self.slab.len() >= config.max_connections_per_loop.min(MAX_CONNS_PER_LOOP)
            || self.core.shutting_down.is_some()
        {
            LoopStats::add(&self.core.stats.rejected_over_limit, 1);
            return; // Dropping the socket closes it.
        }
        // Small frames must not wait for Nagle; failure only costs latency.
        let _ = socket.set_nodelay(true);
        let (entry, _generation) = self.slab.vacant(&mut self.core);
        let index = entry.key();
        if let Err(e) =
            self.poll.registry().register(&mut socket, Token(index), Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("loop {}: register failed: {e}", self.core.loop_id);
            return;
        }
        let mut conn = Conn::new(&mut self.core);
        conn.rearm(&mut self.core, index as u32);
        entry.insert(Some(Slot { socket, conn }));
        if let Some(slot) = self.slab.get_mut(index) {
            slot.conn.on_accepted(&mut self.core, index as u32, peer);
        }
        self.core.total_connections.fetch_add(1, Ordering::Relaxed);
        self.core.stats.connections.fetch_add(1, Ordering::Relaxed);
        LoopStats::add(&self.core.stats.accepted, 1);
    }

    /// Reads what the socket holds. `to_the_end`: keep reading after a short read, because the
    /// peer's FIN (or an error) is queued behind the data and no new edge will announce it.
    fn read(&mut self, index: usize, to_the_end: bool) {
        let mut budget = self.core.config.read_budget;
        loop {
            let Some(slot) = self.slab.get_mut(index) else { return };
            if self.core.workers_behind() {
                self.ready.push((index as u32, self.core.generations.get(index as u32)));
                return;
            }
            if slot.conn.pause_reading(&self.core) {
                return; // `flush` puts it on the ready list once the queue has room.
            }
            let spill_len = slot.conn.spill().len();
            self.scratch[..spill_len].copy_from_slice(slot.conn.spill());
            let room = self.scratch.len() - spill_len;
            match (&slot.socket).read(&mut self.scratch[spill_len..]) {
                Ok(0) => {
                    // The peer closed (or reset): whatever phase we were in, it is over.
                    self.remove(index);
                    return;
                }
                Ok(n) => {
                    let socket = &slot.socket;
                    let peer = || socket.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    let data = &mut self.scratch[..spill_len + n];
                    slot.conn.on_bytes(&mut self.core, index as u32, data, &peer);
                    if n < room && !to_the_end {
                        return;
                    }
                    budget -= 1;
                    if budget == 0 {
                        self.ready.push((index as u32, self.core.generations.get(index as u32)));
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(index);
                    return;
                }
            }
        }
    }

    fn flush(&mut self, index: usize) {
        let Some(slot) = self.slab.get_mut(index) else { return };
        while let Some(outbound) = slot.conn.outbound(&self.core) {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = outbound.io_slices(&mut slices);
            match (&slot.socket).write_vectored(&slices[..n]) {
                Ok(0) => break,
                Ok(written) => {
                    if slot.conn.written(&mut self.core, written) {
                        // Reading stopped for a full queue; the peer's bytes wait unread.
                        self.ready.push((index as u32, self.core.generations.get(index as u32)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(index);
                    return;
                }
            }
        }
        if slot.conn.wants_fin() {
            let _ = slot.socket.shutdown(Shutdown::Write);
            slot.conn.fin_sent();
            if slot.conn.close_handshake_done() {
                // Both close frames went through: nothing more may arrive, so closing now cannot
                // turn unread data into a reset. The server closes the TCP connection first.
                self.remove(index);
            }
            // Otherwise (a refused upgrade, a protocol error) the peer may still be sending: wait
            // for its FIN, discarding, so that our answer is not lost to a reset; the linger
            // deadline bounds the wait.
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.core.dirty);
        for &index in &dirty {
            if let Some(slot) = self.slab.get_mut(index as usize) {
                slot.conn.flushed();
                self.flush(index as usize);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.core.dirty.is_empty() {
            self.core.dirty = dirty;
        }
    }

    fn expire_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.core.wheel.expire(self.core.now, &mut due);
        for entry in due.drain(..) {
            let Some(slot) = self.slab.get_mut(entry.index as usize) else { continue };
            if !self.core.generations.matches(entry.index, entry.generation)
                || !slot.conn.armed_at(entry.tick)
            {
                continue; // Stale: the connection is gone or re-armed earlier.
            }
            if slot.conn.on_timer(&mut self.core, entry.index) == Next::Remove {
                self.remove(entry.index as usize);
            }
        }
        self.due = due;
    }

    fn remove(&mut self, index: usize) {
        let Some(mut slot) = self.slab.remove(index) else { return };
        let _ = self.poll.registry().deregister(&mut slot.socket);
        slot.conn.on_removed(&mut self.core, index as u32);
    }

    /// Runs queued commands, at most one queue's capacity per turn so that a stream of commands
    /// cannot keep the loop from its sockets and timers.
    fn drain_commands(&mut self) {
        let mailbox = &self.shared.mailboxes[self.core.loop_id];
        mailbox.wake_pending.store(false, Ordering::Release);
        if let Some(deadline) = mailbox.take_shutdown() {
            self.shutdown(deadline);
        }
        let mut budget = self.core.config.command_capacity;
        self.commands_left = false;
        while let Ok(command) = self.commands.try_recv() {
            self.command(command);
            budget -= 1;
            if budget == 0 {
                self.commands_left = !self.commands.is_empty();
                break;
            }
        }
        self.core.stats.commands_queued.store(self.commands.len(), Ordering::Relaxed);
    }

    fn conn_index(&self, id: crate::engine::ConnId) -> Option<usize> {
        let index = id.index();
        self.slab.get(index)?;
        let live =
            id.loop_id() == self.core.loop_id && self.core.generations.matches(index as u32, id.generation());
        live.then_some(index)
    }

    /// Runs `f` on the live connection `id` names; stale ids are ignored.
    fn with_conn(&mut self, id: crate::engine::ConnId, f: impl FnOnce(&mut Conn, &mut LoopCore, u32)) {
        if let Some(index) = self.conn_index(id) {
            if let Some(slot) = self.slab.get_mut(index) {
                f(&mut slot.conn, &mut self.core, index as u32);
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Send(id, message) => self.with_conn(id, |c, core, i| c.send(core, i, &message)),
            Command::SendPrepared(id, frame) => {
                self.with_conn(id, |c, core, i| c.send_prepared(core, i, &frame))
            }
            Command::Close(id, code, reason) => {
                self.with_conn(id, |c, core, i| c.close(core, i, code, &reason))
            }
            Command::Subscribe(id, topic) => self.with_conn(id, |c, core, i| c.subscribe(core, i, topic)),
            Command::Unsubscribe(id, topic) => self.with_conn(id, |_, core, i| core.unsubscribe(&topic, i)),
            Command::Publish(topic, frame) => {
                self.subscribers.clear();
                if let Some(subscribers) = self.core.topics.get(&topic) {
                    self.subscribers.extend(subscribers.iter().copied());
                }
                for &index in &self.subscribers {
                    if let Some(slot) = self.slab.get_mut(index as usize) {
                        slot.conn.send_prepared(&mut self.core, index, &frame);
                    }
                }
            }
            Command::Adopt(socket, peer) => self.adopt(socket, peer),
        }
    }

    fn shutdown(&mut self, deadline: Instant) {
        self.core.shutting_down = Some(deadline);
        if let Some(listener) = self.acceptor.listener_mut() {
            let _ = self.poll.registry().deregister(listener);
        }
        self.acceptor = Acceptor::Own(None);
        for index in self.slab.indices() {
            let Some(slot) = self.slab.get_mut(index) else { continue };
            if slot.conn.on_shutdown(&mut self.core, index as u32) == Next::Remove {
                self.remove(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::Config;

    #[test]
    fn a_used_up_slot_is_retired_and_never_handed_out_again() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut core = LoopCore::new(0, Arc::new(Config::default()), Arc::default(), tx, Arc::default());
        let mut slots = Slots::default();
        core.generations.set(0, u32::MAX - 1);
        let (entry, generation) = slots.vacant(&mut core);
        assert_eq!((entry.key(), generation), (0, u32::MAX), "the last generation is still used");
        // Slot 0 is now used up: the next connection gets slot 1, and slot 0 stays taken.
        let (entry, generation) = slots.vacant(&mut core);
        assert_eq!((entry.key(), generation), (1, 1));
        assert_eq!(slots.len(), 0, "a retired slot is not a connection");
        assert!(slots.get(0).is_none() && slots.indices().is_empty());
        assert!(slots.remove(0).is_none());
        let (entry, _) = slots.vacant(&mut core);
        assert_eq!(entry.key(), 1, "removing a retired slot does not free it");
    }
}
