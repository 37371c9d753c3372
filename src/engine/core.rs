//! The backend-independent state of one event loop: clock, timers, topics, the event backlog.
//!
//! A backend owns a [`LoopCore`] next to its sockets and hands it to the connection logic.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};

use super::buffers::ColdPool;
use super::config::Config;
use super::timer::{Tick, TimerWheel};
use crate::app::{Event, LoopStats};

pub(crate) struct LoopCore {
    pub(crate) loop_id: usize,
    pub(crate) config: Arc<Config>,
    pub(crate) stats: Arc<LoopStats>,
    events: Sender<Event>,
    /// Events the worker channel had no room for. Reading pauses while it is non-empty, so it
    /// holds at most what one read produced.
    backlog: VecDeque<Event>,
    pub(crate) wheel: TimerWheel,
    pub(crate) now: Instant,
    pub(crate) now_tick: Tick,
    /// Topic → slab indices of the local subscribers.
    pub(crate) topics: HashMap<Arc<str>, HashSet<u32>>,
    /// Connections with bytes queued this turn, flushed at the end of it.
    pub(crate) dirty: Vec<u32>,
    next_generation: u32,
    pub(crate) total_connections: Arc<AtomicUsize>,
    pub(crate) shutting_down: Option<Instant>,
    pub(crate) cold_pool: ColdPool,
}

impl LoopCore {
    pub(crate) fn new(
        loop_id: usize,
        config: Arc<Config>,
        stats: Arc<LoopStats>,
        events: Sender<Event>,
        total_connections: Arc<AtomicUsize>,
    ) -> Self {
        let now = Instant::now();
        Self {
            loop_id,
            config,
            stats,
            events,
            backlog: VecDeque::new(),
            wheel: TimerWheel::new(now),
            now,
            now_tick: 0,
            topics: HashMap::new(),
            dirty: Vec::new(),
            next_generation: 0,
            total_connections,
            shutting_down: None,
            cold_pool: ColdPool::default(),
        }
    }

    pub(crate) fn update_clock(&mut self) {
        self.now = Instant::now();
        self.now_tick = self.wheel.tick_of(self.now);
    }

    pub(crate) fn next_generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// Hands an event to the workers, or keeps it when they are behind.
    pub(crate) fn emit(&mut self, event: Event) {
        if self.backlog.is_empty() {
            match self.events.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(event)) => self.backlog.push_back(event),
            }
        } else {
            self.backlog.push_back(event);
        }
        self.stats.queued_events.store(self.backlog.len(), Ordering::Relaxed);
    }

    /// Moves what it can of the backlog into the channel. Returns whether it is empty now.
    pub(crate) fn drain_backlog(&mut self) -> bool {
        while let Some(event) = self.backlog.pop_front() {
            match self.events.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    break;
                }
            }
        }
        self.stats.queued_events.store(self.backlog.len(), Ordering::Relaxed);
        self.backlog.is_empty()
    }

    /// Whether reading must pause because the workers are behind.
    pub(crate) fn workers_behind(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub(crate) fn subscribe(&mut self, topic: Arc<str>, index: u32) -> bool {
        self.topics.entry(topic).or_default().insert(index)
    }

    pub(crate) fn unsubscribe(&mut self, topic: &str, index: u32) {
        if let Some(subscribers) = self.topics.get_mut(topic) {
            subscribers.remove(&index);
            if subscribers.is_empty() {
                self.topics.remove(topic);
            }
        }
    }
}
