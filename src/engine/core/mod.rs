//! The backend-independent half of one event loop: everything but moving bytes.
//!
//! - [`LoopCore`] (here): the state every connection's logic sees — clock, timer wheel, topics,
//!   the dirty list, the event backlog, counters.
//! - [`Loop`] (`conns.rs`): owns the connections ([`Slots`]: each `Conn` with its slot's
//!   generation and the backend's socket, side by side) and the policy around them: caps at
//!   accept, read gating, flushes, removal, timer expiry, shutdown; `commands.rs` interprets the
//!   application's commands; `turn.rs` is the one driver loop every backend runs under.
//!
//! A [`Backend`](super::backend::Backend) moves bytes: its listeners, poller, read buffer and
//! readiness bookkeeping are its own; a connection's socket it gets back from the core for
//! every call about that connection (the core keeps it, never looks inside).

mod commands;
mod conns;
mod index;
#[cfg(test)]
mod loop_tests;
mod slots;
mod turn;

pub(crate) use self::conns::{Loop, Reading};
pub(crate) use self::index::TopicIndex;
pub(crate) use self::slots::Slots;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::buffers::{spare_room, ColdPool};
use super::compress::LoopDeflate;
use super::config::{Config, FINE};
use super::delivery::{Delivery, Erased, RawEvent};
use super::event::Event;
use super::stats::LoopStats;
use super::timer::{Tick, TimerWheel};
use super::topics::Interner;

pub(crate) struct LoopCore {
    pub(crate) loop_id: usize,
    pub(crate) config: Arc<Config>,
    pub(crate) stats: Arc<LoopStats>,
    /// The worker shards and the events they had no room for. Reading pauses while any is
    /// kept, so the backlog holds at most what one read produced.
    delivery: Delivery,
    pub(crate) wheel: TimerWheel,
    pub(crate) now: Instant,
    pub(crate) now_tick: Tick,
    /// `now` in [`FINE`] units since the loop started, wrapping (the rate limiter's clock).
    pub(crate) now_fine: u32,
    started: Instant,
    /// Who is subscribed to what on this loop (each connection keeps the head of its list).
    pub(crate) topics: TopicIndex,
    /// The upgrade hook's nonzero tags ([`crate::Accepted::user`]) by slot: kept beside the
    /// connections rather than in each, so a connection without one (the common case) does not
    /// carry 8 bytes for it; a tagged one costs a map entry.
    pub(crate) tags: HashMap<u32, u64>,
    /// Handshaking connections' clients by slot, when they came from a PROXY header or hold an
    /// admission slot: kept until the upgrade (for the hook and the Open event) or the close
    /// (to give the slot back).
    pub(crate) clients: HashMap<u32, SocketAddr>,
    /// Connections with bytes queued this turn, flushed at the end of it.
    pub(crate) dirty: Vec<u32>,
    /// The slot and generation of the connection being driven: [`Loop`] sets it before every
    /// call into a `Conn`, so a connection learns its own generation without a table beside
    /// the slab (see [`LoopCore::generation`]).
    pub(crate) driving: (u32, u32),
    /// Bytes held in the assembly buffers of this loop's partial messages.
    pub(crate) assembly_bytes: usize,
    pub(crate) total_connections: Arc<AtomicUsize>,
    pub(crate) shutting_down: Option<Instant>,
    pub(crate) cold_pool: ColdPool,
    /// permessage-deflate: the loop's shared codec and the connections with one of their own.
    pub(crate) deflate: LoopDeflate,
    /// Where a compressed message is inflated before it is delivered.
    pub(crate) inflated: Vec<u8>,
    /// Where the open hook writes a connection's first message.
    pub(crate) greeting: Vec<u8>,
    /// Where a 101 response is written before it is queued: reused, so an upgrade allocates
    /// no response of its own.
    pub(crate) response: Vec<u8>,
}

impl LoopCore {
    pub(crate) fn new(
        loop_id: usize,
        config: Arc<Config>,
        stats: Arc<LoopStats>,
        delivery: impl Into<Delivery>,
        total_connections: Arc<AtomicUsize>,
        interner: Arc<Interner>,
    ) -> Self {
        let now = Instant::now();
        let topics =
            TopicIndex::new(loop_id, interner, config.topic_hook.clone(), config.change_hook.clone());
        let deflate = LoopDeflate::new(config.deflate);
        Self {
            loop_id,
            config,
            stats,
            delivery: delivery.into(),
            wheel: TimerWheel::new(now),
            now,
            now_tick: 0,
            now_fine: 0,
            started: now,
            topics,
            tags: HashMap::new(),
            clients: HashMap::new(),
            dirty: Vec::new(),
            driving: (0, 0),
            assembly_bytes: 0,
            total_connections,
            shutting_down: None,
            cold_pool: ColdPool::default(),
            deflate,
            inflated: Vec::new(),
            greeting: Vec::new(),
            response: Vec::new(),
        }
    }

    /// Keeps a handshaking connection's client (see [`LoopCore::clients`]).
    pub(crate) fn keep_client(&mut self, index: u32, client: SocketAddr) {
        self.clients.insert(index, client);
    }

    /// Takes back a connection's kept client, if any; the map gives its room back after a
    /// burst of handshakes.
    pub(crate) fn forget_client(&mut self, index: u32) -> Option<SocketAddr> {
        let client = self.clients.remove(&index)?;
        if let Some(room) = spare_room(self.clients.len(), self.clients.capacity()) {
            self.clients.shrink_to(room);
        }
        Some(client)
    }

    /// Sets the loop's clock to `now`, which the backend reads (the system clock, or a test's).
    pub(crate) fn update_clock(&mut self, now: Instant) {
        self.now = now;
        self.now_tick = self.wheel.tick_of(self.now);
        let fine = self.now.saturating_duration_since(self.started).as_nanos() / FINE.as_nanos();
        self.now_fine = fine as u32; // wraps every ~5 days; the limiter compares wrap-safely
    }

    /// The generation of the connection in slot `index`. Only the connection being driven asks
    /// (a connection only ever names itself), and [`Loop`] set it before calling in.
    pub(crate) fn generation(&self, index: u32) -> u32 {
        debug_assert_eq!(index, self.driving.0, "a connection asked for another slot's generation");
        self.driving.1
    }

    /// Hands an event to the workers, or keeps it when they are behind; stamped with this
    /// turn's time.
    pub(crate) fn emit(&mut self, event: Event<Erased>) {
        if self.delivery.emit(RawEvent { event, at: self.now }) {
            self.stats.queued_events.store(self.delivery.queued(), Ordering::Relaxed);
        }
    }

    /// Moves what it can of the backlog into the shards. Returns whether it is empty now.
    pub(crate) fn drain_backlog(&mut self) -> bool {
        let empty = self.delivery.drain();
        self.stats.queued_events.store(self.delivery.queued(), Ordering::Relaxed);
        empty
    }

    /// Whether reading must pause because the workers are behind.
    pub(crate) fn workers_behind(&self) -> bool {
        self.delivery.queued() > 0
    }
}
