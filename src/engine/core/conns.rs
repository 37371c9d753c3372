//! The loop's connections and what happens to them: accept, read, flush, timers, removal.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::{LoopCore, Slots};
use crate::engine::backend::{Backend, Write};
use crate::engine::conn::{Conn, Next};
use crate::engine::mailbox::{Command, Shared};
use crate::engine::stats::LoopStats;
use crate::engine::timer::TimerEntry;
use crate::engine::tls::LoopTls;
use crate::engine::TlsFailure;

/// Whether a backend may read a connection now (see [`Loop::reading`]).
pub(crate) enum Reading<'a, S> {
    /// Read from `socket`: the first `spill` bytes of the buffer hold the connection's leftover
    /// bytes; put the new ones after them.
    Go { spill: usize, socket: &'a S },
    /// The workers are behind: leave the socket and come back once they caught up
    /// ([`Backend::retry`]), without waiting for a new readiness edge.
    Later,
    /// Leave the socket: its queue is full ([`Backend::resume_reading`] says when to go on) or
    /// the connection is gone.
    Stop,
}

/// One event loop minus its I/O: the connections, their generations, the commands. `S` is the
/// backend's socket, kept beside each connection and handed back to the backend for every call
/// about it; the core never looks inside.
pub(crate) struct Loop<S> {
    pub(crate) core: LoopCore,
    slots: Slots<S>,
    pub(super) commands: Receiver<Command>,
    pub(super) shared: Arc<Shared>,
    due: Vec<TimerEntry>,
    pub(super) subscribers: Vec<u32>,
    /// The command budget ran out with commands still queued: poll without sleeping.
    pub(super) commands_left: bool,
    /// TLS on every connection, when the listener has it: between the backend's bytes and
    /// the connections (see `engine::tls`).
    tls: Option<LoopTls>,
}

impl<S> Loop<S> {
    pub(crate) fn new(core: LoopCore, commands: Receiver<Command>, shared: Arc<Shared>) -> Self {
        let tls = core.config.tls.clone().map(LoopTls::new);
        Self {
            tls,
            core,
            slots: Slots::default(),
            commands,
            shared,
            due: Vec::new(),
            subscribers: Vec::new(),
            commands_left: false,
        }
    }

    /// The connection in slot `index`, with the loop state it is driven with. The one way in
    /// to a connection: it tells the state which generation is being driven.
    pub(super) fn conn(&mut self, index: u32) -> Option<(&mut Conn, &mut LoopCore)> {
        let (conn, _, core) = self.occupant(index)?;
        Some((conn, core))
    }

    /// [`Loop::conn`] with the connection's socket.
    fn occupant(&mut self, index: u32) -> Option<(&mut Conn, &mut S, &mut LoopCore)> {
        let occupant = self.slots.get_mut(index)?;
        self.core.driving = (index, occupant.generation);
        Some((occupant.conn, occupant.socket, &mut self.core))
    }

    /// Slot `index`'s socket, while it holds the connection of `generation` (a completion
    /// backend arms a receive again with it).
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))] // completion backends only
    pub(crate) fn socket(&mut self, index: u32, generation: u32) -> Option<&S> {
        let occupant = self.slots.get_mut(index)?;
        (occupant.generation == generation).then_some(&*occupant.socket)
    }

    /// Connections held.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The generation of the connection in slot `index`, if there is one.
    pub(crate) fn generation(&self, index: u32) -> Option<u32> {
        self.slots.generation(index)
    }

    /// Whether slot `index` still holds the connection of `generation`.
    pub(crate) fn is_live(&self, index: u32, generation: u32) -> bool {
        self.slots.is_live(index, generation)
    }

    /// A backend accepted `socket` from `peer`: the slot that names it from now on, or `None`
    /// when a cap (or shutdown) refuses it (the socket is dropped, which closes it). The
    /// backend's [`Backend::attach`] runs before the connection starts.
    pub(crate) fn open<B: Backend<Socket = S>>(
        &mut self,
        backend: &mut B,
        peer: SocketAddr,
        socket: S,
    ) -> Option<u32> {
        let config = &self.core.config;
        let total = self.core.total_connections.load(Ordering::Relaxed);
        if total >= config.max_connections
            || self.slots.len() >= config.max_connections_per_loop
            || self.core.shutting_down.is_some()
        {
            LoopStats::count(&self.core.stats.rejected_over_limit, 1);
            return None;
        }
        let conn = Conn::new(&mut self.core);
        let Ok((index, generation)) = self.slots.insert(socket, conn) else {
            LoopStats::count(&self.core.stats.rejected_over_limit, 1);
            return None;
        };
        self.core.total_connections.fetch_add(1, Ordering::Relaxed);
        self.core.stats.connections.fetch_add(1, Ordering::Relaxed);
        LoopStats::count(&self.core.stats.accepted, 1);
        let (_, socket, _) = self.occupant(index)?;
        if let Err(e) = backend.attach(index, generation, socket) {
            log::warn!("loop {}: taking a socket failed: {e}", self.core.loop_id);
            self.remove(index, backend);
            return None;
        }
        if let Some(tls) = &mut self.tls {
            if !tls.start(index, &self.core.stats) {
                self.remove(index, backend);
                return None;
            }
        }
        let (conn, core) = self.conn(index)?;
        conn.rearm(core, index);
        conn.on_accepted(core, index, peer);
        Some(index)
    }

    /// Whether to read slot `index` now; on [`Reading::Go`] its leftover bytes were copied to
    /// the front of `buf`.
    pub(crate) fn reading(&mut self, index: u32, buf: &mut [u8]) -> Reading<'_, S> {
        let Some((conn, _, core)) = self.occupant(index) else { return Reading::Stop };
        if core.workers_behind() {
            return Reading::Later;
        }
        if conn.pause_reading(core) {
            return Reading::Stop;
        }
        let spill = match &mut self.tls {
            // With TLS the leftover in front is ciphertext: the start of a record.
            Some(tls) => tls.get(index).map_or(&[][..], |session| session.spill()),
            None => self.slots.get_mut(index).map_or(&[][..], |occupant| occupant.conn.spill()),
        };
        buf[..spill.len()].copy_from_slice(spill);
        let spill = spill.len();
        match self.occupant(index) {
            Some((_, socket, _)) => Reading::Go { spill, socket },
            None => Reading::Stop,
        }
    }

    /// Bytes arrived for slot `index`: `data` is its leftover bytes followed by the new ones.
    /// `peer` gives the socket's peer address, asked only when the upgrade needs it.
    pub(crate) fn on_bytes(&mut self, index: u32, data: &mut [u8], peer: &dyn Fn(&S) -> SocketAddr) {
        if self.tls.is_some() {
            return self.on_ciphertext(index, data, peer);
        }
        if let Some((conn, socket, core)) = self.occupant(index) {
            let socket = &*socket;
            conn.on_bytes(core, index, data, &|| peer(socket));
        }
    }

    /// [`Loop::on_bytes`] with TLS: `data` is ciphertext (the leftover record start, then the
    /// new bytes); its plaintext goes to the connection behind the plaintext leftover.
    fn on_ciphertext(&mut self, index: u32, data: &mut [u8], peer: &dyn Fn(&S) -> SocketAddr) {
        let Some(tls) = &mut self.tls else { return };
        let Some(mut session) = tls.take(index) else { return };
        let mut plain = std::mem::take(&mut tls.plain);
        if let Some((conn, socket, core)) = self.occupant(index) {
            plain.clear();
            plain.extend_from_slice(conn.spill());
            let kept = plain.len();
            let received = session.receive(data, &mut plain, &core.stats);
            if received.queued {
                conn.wants_flush(core, index);
            }
            if plain.len() > kept && !conn.lingering() {
                let socket = &*socket;
                conn.on_bytes(core, index, &mut plain, &|| peer(socket));
            }
            if received.ended {
                conn.abandon(core, index, received.broken);
            }
        }
        if let Some(tls) = &mut self.tls {
            tls.put(index, session);
            tls.plain = plain;
            tls.trim();
        }
    }

    /// Slot `index`'s socket can take bytes.
    pub(crate) fn on_writable<B: Backend<Socket = S>>(&mut self, index: u32, backend: &mut B) {
        self.flush(index, backend);
    }

    /// A completion backend's send for slot `index` (holding `generation`) finished: `Some(n)`
    /// bytes went out (a backend sends the rest of a short send itself), or `None`: it failed.
    /// The queue flushes again: its next chunks, or the FIN.
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))] // completion backends only
    pub(crate) fn on_written<B: Backend<Socket = S>>(
        &mut self,
        index: u32,
        generation: u32,
        written: Option<usize>,
        backend: &mut B,
    ) {
        if !self.is_live(index, generation) {
            return; // The connection went while its bytes were in flight.
        }
        match written {
            Some(n) => {
                self.written(index, n, backend);
                self.flush(index, backend);
            }
            None => self.remove(index, backend),
        }
    }

    /// `n` bytes of slot `index`'s queue reached the socket.
    fn written<B: Backend<Socket = S>>(&mut self, index: u32, n: usize, backend: &mut B) {
        if let Some(tls) = &mut self.tls {
            // The backend writes the ciphertext queue; the plaintext one moved on when it
            // was encrypted.
            if let Some(session) = tls.get(index) {
                session.out.advance(n);
                session.out.trim();
            }
            return;
        }
        self.plain_written(index, n, backend);
    }

    /// `n` bytes of slot `index`'s (plaintext) queue were written, or encrypted.
    fn plain_written<B: Backend<Socket = S>>(&mut self, index: u32, n: usize, backend: &mut B) {
        let Some((conn, core)) = self.conn(index) else { return };
        if conn.written(core, n) {
            // Reading stopped for a full queue; the peer's bytes wait unread.
            backend.resume_reading(index, core.generation(index));
        }
    }

    /// Writes what slot `index` has queued, then sends FIN (and removes it) when it is done.
    fn flush<B: Backend<Socket = S>>(&mut self, index: u32, backend: &mut B) {
        if self.tls.is_some() {
            return self.flush_tls(index, backend);
        }
        loop {
            let Some((conn, socket, core)) = self.occupant(index) else { return };
            let generation = core.generation(index);
            let Some(queue) = conn.outbound(core) else { break };
            match backend.write(index, generation, socket, queue) {
                Write::Wrote(0) | Write::Later => break,
                Write::Wrote(n) => self.written(index, n, backend),
                Write::Failed => {
                    self.remove(index, backend);
                    return;
                }
            }
        }
        self.fin(index, backend);
    }

    /// [`Loop::flush`] with TLS: the plaintext queue is encrypted into the ciphertext queue
    /// ahead of the socket (a bounded amount at a time), which the backend writes; the
    /// close_notify goes before FIN.
    fn flush_tls<B: Backend<Socket = S>>(&mut self, index: u32, backend: &mut B) {
        let Some(mut session) = self.tls.as_mut().and_then(|tls| tls.take(index)) else { return };
        let mut failed = false;
        while let Some((conn, _, core)) = self.occupant(index) {
            let taken = conn.outbound(core).map_or(0, |queue| session.encrypt(queue));
            if taken > 0 {
                self.plain_written(index, taken, backend);
            }
            let Some((conn, socket, core)) = self.occupant(index) else { break };
            if conn.wants_fin() {
                session.close_notify();
            }
            if session.out.is_empty() {
                break;
            }
            match backend.write(index, core.generation(index), socket, &mut session.out) {
                Write::Wrote(0) | Write::Later => break,
                Write::Wrote(n) => {
                    session.out.advance(n);
                    session.out.trim();
                }
                Write::Failed => {
                    failed = true;
                    break;
                }
            }
        }
        let drained = session.out.is_empty();
        if let Some(tls) = &mut self.tls {
            tls.put(index, session);
        }
        if failed {
            self.remove(index, backend);
        } else if drained {
            self.fin(index, backend);
        }
    }

    /// Sends FIN once a lingering connection's queue is written, and removes it when the
    /// close handshake is done.
    fn fin<B: Backend<Socket = S>>(&mut self, index: u32, backend: &mut B) {
        let Some((conn, socket, _)) = self.occupant(index) else { return };
        if conn.wants_fin() {
            backend.shutdown_write(socket);
            conn.fin_sent();
            if conn.close_handshake_done() {
                // Both close frames went through: nothing more may arrive, so closing now cannot
                // turn unread data into a reset. The server closes the TCP connection first.
                self.remove(index, backend);
            }
            // Otherwise (a refused upgrade, a protocol error) the peer may still be sending: wait
            // for its FIN, discarding, so that our answer is not lost to a reset; the linger
            // deadline bounds the wait.
        }
    }

    /// Flushes every connection that queued bytes this turn, once.
    pub(crate) fn flush_dirty<B: Backend<Socket = S>>(&mut self, backend: &mut B) {
        let mut dirty = std::mem::take(&mut self.core.dirty);
        for &index in &dirty {
            if let Some((conn, _)) = self.conn(index) {
                conn.flushed();
                self.flush(index, backend);
            }
        }
        dirty.clear();
        if self.core.dirty.is_empty() {
            self.core.dirty = dirty;
        }
    }

    /// Fires the timers that are due.
    pub(super) fn expire_timers<B: Backend<Socket = S>>(&mut self, backend: &mut B) {
        let mut due = std::mem::take(&mut self.due);
        self.core.wheel.expire(self.core.now, &mut due);
        for entry in due.drain(..) {
            // Stale entries: the slot is empty, or its connection is armed for another tick (it
            // re-armed, or it is a later connection in the slot; see `timer`'s module doc).
            let Some((conn, core)) = self.conn(entry.index) else { continue };
            if !conn.armed_at(entry.tick) {
                continue;
            }
            if conn.on_timer(core, entry.index) == Next::Remove {
                if let Some(session) = self.tls.as_mut().and_then(|tls| tls.get(entry.index)) {
                    session.abandoned(&self.core.stats, TlsFailure::Timeout);
                }
                self.remove(entry.index, backend);
            }
        }
        self.due = due;
    }

    /// Takes slot `index`'s connection out: its socket is closed and the connection reported.
    pub(crate) fn remove<B: Backend<Socket = S>>(&mut self, index: u32, backend: &mut B) {
        let Some((mut conn, socket, generation)) = self.slots.remove(index) else { return };
        backend.close(index, generation, socket);
        if let Some(mut session) = self.tls.as_mut().and_then(|tls| tls.take(index)) {
            // Still negotiating: the peer went away (a timeout was counted before this).
            session.abandoned(&self.core.stats, TlsFailure::Closed);
        }
        self.core.driving = (index, generation);
        conn.on_removed(&mut self.core, index);
    }

    /// Starts the shutdown: no more accepts, 1001 to open connections, half-open ones dropped.
    pub(super) fn shutdown<B: Backend<Socket = S>>(&mut self, deadline: std::time::Instant, backend: &mut B) {
        self.core.shutting_down = Some(deadline);
        backend.stop_accepting();
        for index in self.slots.indices() {
            let Some((conn, core)) = self.conn(index) else { continue };
            if conn.on_shutdown(core, index) == Next::Remove {
                self.remove(index, backend);
            }
        }
    }

    /// Packs the topic index's subscriptions once they take a mostly empty table (between
    /// calls into connections: every list head moves).
    pub(super) fn compact_topics(&mut self) {
        if self.core.topics.compaction_due() {
            self.core.topics.compact(self.slots.conns_mut().map(|conn| &mut conn.topics));
        }
    }

    /// Removes every connection (the loop is stopping).
    pub(super) fn remove_all<B: Backend<Socket = S>>(&mut self, backend: &mut B) {
        for index in self.slots.indices() {
            self.remove(index, backend);
        }
    }
}
