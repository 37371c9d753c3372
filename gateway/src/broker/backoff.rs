//! Capped exponential backoff with jitter for reconnecting to the broker.

use std::time::Duration;

/// The first wait after a failure.
pub(super) const FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
pub(super) const CAP: Duration = Duration::from_secs(5);

/// 100 ms, 200 ms, 400 ms, ... up to 5 s, each less up to a fifth at random so that a fleet
/// restarted together does not reconnect in lockstep.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff { next: FIRST }
    }

    /// The wait before the next attempt; doubles the one after.
    pub(super) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(CAP);
        let jitter = wait.as_micros() as u64 / 5;
        wait - Duration::from_micros(fastrand::u64(0..=jitter))
    }

    /// Back to the first wait, after a connection that worked.
    pub(super) fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits[0] <= FIRST && waits[0] >= FIRST * 4 / 5);
        assert!(waits[1] <= FIRST * 2 && waits[1] >= FIRST * 8 / 5);
        assert!(waits.iter().all(|w| *w <= CAP));
        assert!(waits[9] >= CAP * 4 / 5, "{waits:?}");
        b.reset();
        assert!(b.next_wait() <= FIRST);
    }
}
