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
#[cfg(test)]
mod loop_tests;
mod slots;
mod turn;

pub(crate) use self::conns::{Loop, Reading};
pub(crate) use self::slots::Slots;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::buffers::ColdPool;
use super::config::{Config, FINE};
use super::delivery::{Delivery, Erased, RawEvent};
use super::event::Event;
use super::stats::LoopStats;
use super::timer::{Tick, TimerWheel};

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
    /// Topic → slab indices of the local subscribers.
    pub(crate) topics: HashMap<Arc<str>, HashSet<u32>>,
    /// Slab index → its topics, only for subscribed connections: kept here rather than in the
    /// connection so that a subscribed but idle connection holds no per-connection box.
    subscriptions: HashMap<u32, Vec<Arc<str>>>,
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
}

impl LoopCore {
    pub(crate) fn new(
        loop_id: usize,
        config: Arc<Config>,
        stats: Arc<LoopStats>,
        delivery: impl Into<Delivery>,
        total_connections: Arc<AtomicUsize>,
    ) -> Self {
        let now = Instant::now();
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
            topics: HashMap::new(),
            subscriptions: HashMap::new(),
            dirty: Vec::new(),
            driving: (0, 0),
            assembly_bytes: 0,
            total_connections,
            shutting_down: None,
            cold_pool: ColdPool::default(),
        }
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

    pub(crate) fn subscribe(&mut self, topic: Arc<str>, index: u32) {
        if self.topics.entry(topic.clone()).or_default().insert(index) {
            self.subscriptions.entry(index).or_default().push(topic);
        }
    }

    pub(crate) fn unsubscribe(&mut self, topic: &str, index: u32) {
        let Some(topics) = self.subscriptions.get_mut(&index) else { return };
        let Some(at) = topics.iter().position(|t| &**t == topic) else { return };
        topics.swap_remove(at);
        if topics.is_empty() {
            self.subscriptions.remove(&index);
        }
        self.leave(topic, index);
    }

    /// A connection leaves the slab: it leaves all its topics.
    pub(crate) fn unsubscribe_all(&mut self, index: u32) {
        for topic in self.subscriptions.remove(&index).unwrap_or_default() {
            self.leave(&topic, index);
        }
    }

    fn leave(&mut self, topic: &str, index: u32) {
        if let Some(subscribers) = self.topics.get_mut(topic) {
            subscribers.remove(&index);
            if subscribers.is_empty() {
                self.topics.remove(topic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> LoopCore {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        LoopCore::new(0, Arc::new(Config::default()), Arc::default(), tx, Arc::default())
    }

    #[test]
    fn topic_index_and_subscriptions_stay_in_step() {
        let mut core = core();
        let (news, chat): (Arc<str>, Arc<str>) = (Arc::from("news"), Arc::from("chat"));
        core.subscribe(news.clone(), 1);
        core.subscribe(news.clone(), 1); // twice: one entry
        core.subscribe(chat.clone(), 1);
        core.subscribe(news.clone(), 2);
        assert_eq!(core.topics["news"].len(), 2);
        assert_eq!(core.subscriptions[&1].len(), 2);
        core.unsubscribe("news", 1);
        core.unsubscribe("never", 1);
        assert_eq!(core.topics["news"].len(), 1);
        core.unsubscribe_all(1);
        assert!(!core.topics.contains_key("chat"), "an empty topic is dropped");
        assert!(!core.subscriptions.contains_key(&1));
        core.unsubscribe_all(2);
        assert!(core.topics.is_empty() && core.subscriptions.is_empty());
    }
}
