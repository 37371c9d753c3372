//! A hashed timing wheel: O(1) arm, lazy cancel, no heap entry per connection.
//!
//! Each connection keeps the tick of its one armed deadline; the wheel holds `(index, tick)`
//! entries in buckets, 8 bytes each. An entry that no longer matches its slot's armed tick (the
//! connection closed, or re-armed earlier) is dropped when its bucket comes round, so cancel is
//! free. No generation is kept: an old connection's entry that matches the armed tick of the
//! slot's next connection is due exactly when that connection's own entry is (same slot, same
//! tick), and the first of the two to fire re-arms it, so the other no longer matches. Activity does not re-arm: the connection keeps a "last seen" tick and, when its deadline
//! fires, works out the next one — so a busy connection costs the wheel nothing per message.
//!
//! Ticks are `u32` (4 bytes in every connection) and wrap after ~497 days of uptime. Every
//! comparison and addition on ticks goes through [`reached`], [`after`] and [`earlier`], which
//! are wrap-safe as long as the two ticks compared are less than 2^31 ticks apart; [`ticks`]
//! caps every duration at [`MAX_SPAN`] (~124 days) to keep them so.

use std::time::{Duration, Instant};

/// The wheel's resolution.
pub(crate) const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 512;
/// The longest span a deadline may be ahead of now, in ticks: a quarter of the tick space, so
/// that wrap-safe comparisons between any two ticks a connection holds stay correct.
pub(crate) const MAX_SPAN: Tick = 1 << 30;

/// A point in time in ticks since the loop started, wrapping.
pub(crate) type Tick = u32;

/// A duration in ticks, rounded up and capped at [`MAX_SPAN`]. The one conversion from time to
/// ticks: every deadline is computed with it.
pub(crate) fn ticks(d: Duration) -> Tick {
    d.as_millis().div_ceil(TICK.as_millis()).min(u128::from(MAX_SPAN)) as Tick
}

/// The tick `d` after `from` (wrapping).
pub(crate) fn after(from: Tick, d: Duration) -> Tick {
    from.wrapping_add(ticks(d))
}

/// Whether `now` is at or past `deadline`, across a wrap.
pub(crate) fn reached(now: Tick, deadline: Tick) -> bool {
    (now.wrapping_sub(deadline) as i32) >= 0
}

/// Whether `a` comes before `b`, across a wrap.
pub(crate) fn earlier(a: Tick, b: Tick) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct TimerEntry {
    pub(crate) index: u32,
    pub(crate) tick: Tick,
}

pub(crate) struct TimerWheel {
    start: Instant,
    /// Added to every tick: zero in production, near the wrap in the boundary tests.
    offset: Tick,
    buckets: Vec<Vec<TimerEntry>>,
    /// Ticks since `start` whose buckets were processed (not wrapping).
    processed: u64,
    len: usize,
}

impl TimerWheel {
    pub(crate) fn new(start: Instant) -> Self {
        Self::with_offset(start, 0)
    }

    /// A wheel whose tick at `start` is `offset` (tests start it just before the wrap).
    pub(crate) fn with_offset(start: Instant, offset: Tick) -> Self {
        Self { start, offset, buckets: (0..SLOTS).map(|_| Vec::new()).collect(), processed: 0, len: 0 }
    }

    fn elapsed_ticks(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_millis() / TICK.as_millis()) as u64
    }

    fn public(&self, elapsed: u64) -> Tick {
        (elapsed as Tick).wrapping_add(self.offset)
    }

    /// The tick of `now` (rounded down).
    pub(crate) fn tick_of(&self, now: Instant) -> Tick {
        self.public(self.elapsed_ticks(now))
    }

    /// The tick at or after `now + after`, at least one tick ahead.
    pub(crate) fn deadline(&self, now: Instant, after: Duration) -> Tick {
        self.tick_of(now).wrapping_add(ticks(after).max(1))
    }

    /// Arms an entry and returns the tick it was filed under: deadlines in the past are filed
    /// under the next tick, so they fire on the next [`TimerWheel::expire`].
    pub(crate) fn arm(&mut self, index: u32, tick: Tick) -> Tick {
        let next = self.public(self.processed + 1);
        let tick = if earlier(tick, next) { next } else { tick };
        self.buckets[tick as usize % SLOTS].push(TimerEntry { index, tick });
        self.len += 1;
        tick
    }

    /// Moves every entry due at or before `now` into `due`.
    pub(crate) fn expire(&mut self, now: Instant, due: &mut Vec<TimerEntry>) {
        let now_elapsed = self.elapsed_ticks(now);
        let now_tick = self.public(now_elapsed);
        // Catching up after a long stall needs no more than one lap of the wheel.
        let mut at = self.processed.max(now_elapsed.saturating_sub(SLOTS as u64));
        while at < now_elapsed {
            at += 1;
            // 2^32 is a multiple of SLOTS, so a bucket's index is the same across the wrap.
            let slot = self.public(at) as usize % SLOTS;
            let bucket = &mut self.buckets[slot];
            let before = bucket.len();
            bucket.retain(|entry| {
                if reached(now_tick, entry.tick) {
                    due.push(*entry);
                    false
                } else {
                    true
                }
            });
            self.len -= before - bucket.len();
        }
        self.processed = self.processed.max(now_elapsed);
    }

    /// How long a poll may sleep before the next possible deadline.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let next = self.start + Duration::from_millis((self.processed + 1) * TICK.as_millis() as u64);
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
        wheel.arm(1, at);
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_millis(40), &mut due);
        assert!(due.is_empty());
        wheel.expire(start + Duration::from_millis(50), &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].index, 1);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn deadlines_beyond_one_lap_wait_their_turn() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(start);
        let far = wheel.deadline(start, TICK * (SLOTS as u32 * 3 + 5));
        wheel.arm(2, far);
        let mut due = Vec::new();
        let mut now = start;
        while wheel.len() > 0 {
            now += TICK * 7;
            wheel.expire(now, &mut due);
            assert!(due.is_empty() || reached(wheel.tick_of(now), far));
        }
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn a_long_stall_still_fires_everything_due() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(start);
        for i in 0..100u32 {
            let at = wheel.deadline(start, TICK * (i * 13 + 1));
            wheel.arm(i, at);
        }
        let mut due = Vec::new();
        wheel.expire(start + Duration::from_secs(3600), &mut due);
        assert_eq!(due.len(), 100);
    }

    #[test]
    fn tick_arithmetic_is_wrap_safe() {
        let before = u32::MAX - 5;
        let later = after(before, TICK * 10); // wraps to 4
        assert_eq!(later, 4);
        assert!(!reached(before, later));
        assert!(reached(later, before));
        assert!(reached(later, later));
        assert!(earlier(before, later) && !earlier(later, before));
        // The cap keeps far deadlines comparable.
        assert_eq!(ticks(Duration::from_secs(u64::MAX / 4)), MAX_SPAN);
        assert!(!reached(before, after(before, Duration::from_secs(u64::MAX / 4))));
    }

    #[test]
    fn the_wheel_fires_in_order_across_the_wrap() {
        let start = Instant::now();
        // Tick u32::MAX - 20 at start: the deadlines below straddle the wrap.
        let mut wheel = TimerWheel::with_offset(start, u32::MAX - 20);
        let mut armed = Vec::new();
        for i in 0..60u32 {
            let at = wheel.deadline(start, TICK * (i + 1));
            armed.push((i, wheel.arm(i, at)));
        }
        assert!(armed.iter().any(|&(_, t)| t < 100) && armed.iter().any(|&(_, t)| t > u32::MAX - 100));
        let mut fired = Vec::new();
        for step in 1..=70u32 {
            let now = start + TICK * step;
            let mut due = Vec::new();
            wheel.expire(now, &mut due);
            for entry in due {
                assert!(reached(wheel.tick_of(now), entry.tick), "fired early");
                assert_eq!(entry.index + 1, step, "fired late or early");
                fired.push(entry.index);
            }
        }
        assert_eq!(fired, (0..60).collect::<Vec<_>>());
        // A deadline already past (before the wrap) is filed under the next tick, not 2^32 ahead.
        let now = start + TICK * 70;
        let past = wheel.tick_of(now).wrapping_sub(50);
        let filed = wheel.arm(99, past);
        assert_eq!(filed, wheel.tick_of(now).wrapping_add(1));
        let mut due = Vec::new();
        wheel.expire(now + TICK, &mut due);
        assert_eq!(due.len(), 1);
    }
}
