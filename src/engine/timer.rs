//! A hashed timing wheel: O(1) arm, lazy cancel, no heap entry per connection.
//!
//! Each connection keeps the tick of its one armed deadline; the wheel holds `(index, generation,
//! tick)` entries in buckets. An entry that no longer matches its connection's armed tick (the
//! connection closed, or re-armed earlier) is dropped when its bucket comes round, so cancel is
//! free. Activity does not re-arm: the connection keeps a "last seen" tick and, when its deadline
//! fires, works out the next one — so a busy connection costs the wheel nothing per message.

use std::time::{Duration, Instant};

/// The wheel's resolution.
pub(crate) const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 512;

/// A point in time in ticks since the loop started (wraps after ~497 days).
pub(crate) type Tick = u32;

#[derive(Clone, Copy, Debug)]
pub(crate) struct TimerEntry {
    pub(crate) index: u32,
    pub(crate) generation: u32,
    pub(crate) tick: Tick,
}

pub(crate) struct TimerWheel {
    start: Instant,
    buckets: Vec<Vec<TimerEntry>>,
    /// The last tick whose bucket was processed.
    processed: Tick,
    len: usize,
}

impl TimerWheel {
    pub(crate) fn new(start: Instant) -> Self {
        Self { start, buckets: (0..SLOTS).map(|_| Vec::new()).collect(), processed: 0, len: 0 }
    }

    /// The tick of `now` (rounded down).
    pub(crate) fn tick_of(&self, now: Instant) -> Tick {
        (now.saturating_duration_since(self.start).as_millis() / TICK.as_millis()) as Tick
    }

    /// The tick at or after `now + after`.
    pub(crate) fn deadline(&self, now: Instant, after: Duration) -> Tick {
        let ticks = after.as_millis().div_ceil(TICK.as_millis()).max(1);
        self.tick_of(now).saturating_add(ticks.min(u128::from(u32::MAX / 2)) as Tick)
    }

    /// The instant of a tick.
    pub(crate) fn instant_of(&self, tick: Tick) -> Instant {
        self.start + TICK * tick
    }

    /// Arms an entry and returns the tick it was filed under: deadlines in the past are filed
    /// under the next tick, so they fire on the next [`TimerWheel::expire`].
    pub(crate) fn arm(&mut self, index: u32, generation: u32, tick: Tick) -> Tick {
        let tick = tick.max(self.processed.wrapping_add(1));
        self.buckets[tick as usize % SLOTS].push(TimerEntry { index, generation, tick });
        self.len += 1;
        tick
    }

    /// Moves every entry due at or before `now` into `due`.
    pub(crate) fn expire(&mut self, now: Instant, due: &mut Vec<TimerEntry>) {
        let now_tick = self.tick_of(now);
        // Catching up after a long stall needs no more than one lap of the wheel.
        let from = if now_tick.wrapping_sub(self.processed) as usize > SLOTS {
            now_tick - SLOTS as Tick
        } else {
            self.processed
        };
        let mut tick = from;
        while tick != now_tick {
            tick = tick.wrapping_add(1);
            let bucket = &mut self.buckets[tick as usize % SLOTS];
            let before = bucket.len();
            bucket.retain(|entry| {
                if entry.tick <= now_tick {
                    due.push(*entry);
                    false
                } else {
                    true
                }
            });
            self.len -= before - bucket.len();
        }
        self.processed = now_tick;
    }

    /// How long a poll may sleep before the next possible deadline.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let next = self.instant_of(self.processed.wrapping_add(1));
        Some(next.saturating_duration_since(now))
    }

    /// The number of armed entries, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_deadline_not_before() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(start);
        let at = wheel.deadline(start, Duration::from_millis(50));
        wheel.arm(1, 7, at);
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_millis(40), &mut due);
        assert!(due.is_empty());
        wheel.expire(start + Duration::from_millis(50), &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].index, due[0].generation), (1, 7));
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn deadlines_beyond_one_lap_wait_their_turn() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(start);
        let far = wheel.deadline(start, TICK * (SLOTS as u32 * 3 + 5));
        wheel.arm(2, 0, far);
        let mut due = Vec::new();
        let mut now = start;
        while wheel.len() > 0 {
            now += TICK * 7;
            wheel.expire(now, &mut due);
            assert!(due.is_empty() || wheel.tick_of(now) >= far);
        }
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn a_long_stall_still_fires_everything_due() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(start);
        for i in 0..100u32 {
            let at = wheel.deadline(start, TICK * (i * 13 + 1));
            wheel.arm(i, 0, at);
        }
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_secs(3600), &mut due);
        assert_eq!(due.len(), 100);
    }
}
