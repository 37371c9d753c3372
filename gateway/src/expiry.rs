//! Closes connections with 4001 when their token expires: one thread sleeping until the
//! earliest expiry in a schedule of whole seconds (a token's `exp` has second resolution).
//!
//! The schedule is a wheel of seconds, not an index by connection: each second holds the ids
//! due then, 8 bytes a connection, and a close does not look for its entry. A closed
//! connection's entry is dropped when its second comes (the connection table no longer has
//! it), or sooner by a sweep once stale entries outnumber the live ones: the schedule holds at
//! most about twice the open connections with a token, however many came and went (a
//! reconnect loop with a long-lived token does not grow it).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conns::Conns;
use super::metrics::{CloseReason, Counters};
use throng::{ConnId, Handle};

/// The close code for an expired token (private-use range 4000–4999, RFC 6455 §7.4.2).
pub const TOKEN_EXPIRED: u16 = 4001;

/// Stale entries tolerated on top of one per live connection before a sweep.
const SWEEP_SLACK: usize = 1024;

/// Connection ids by the Unix second their token expires.
#[derive(Default)]
struct Schedule {
    by_second: BTreeMap<u64, Vec<u64>>,
    /// Ids in `by_second`, stale ones included.
    entries: usize,
    /// Connections scheduled that have not closed.
    live: usize,
}

impl Schedule {
    /// Adds `conn`'s expiry; true when it is now the earliest.
    fn insert(&mut self, conn: u64, exp: u64) -> bool {
        self.by_second.entry(exp).or_default().push(conn);
        self.entries += 1;
        self.live += 1;
        self.by_second.first_key_value().is_some_and(|(&first, _)| first == exp)
    }

    /// A scheduled connection closed; sweeps the stale entries (those `is_open` denies) once
    /// they outnumber the live ones.
    fn closed(&mut self, is_open: impl Fn(u64) -> bool) {
        self.live = self.live.saturating_sub(1);
        if self.entries <= 2 * self.live + SWEEP_SLACK {
            return;
        }
        self.by_second.retain(|_, conns| {
            conns.retain(|&c| is_open(c));
            !conns.is_empty()
        });
        self.entries = self.by_second.values().map(Vec::len).sum();
    }

    /// Takes the earliest second's ids if it is due at `now`.
    fn pop_due(&mut self, now: u64) -> Option<Vec<u64>> {
        let entry = self.by_second.first_entry().filter(|e| *e.key() <= now)?;
        let conns = entry.remove();
        self.entries -= conns.len();
        Some(conns)
    }

    fn next(&self) -> Option<u64> {
        self.by_second.first_key_value().map(|(&exp, _)| exp)
    }
}

#[derive(Default)]
pub(crate) struct Expiry {
    schedule: Mutex<Schedule>,
    wake: Condvar,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Expiry {
    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Schedules `conn` to be closed at `exp` (Unix seconds). Each connection is scheduled once,
    /// and reported closed once ([`Expiry::closed`]).
    pub(crate) fn schedule(&self, conn: ConnId, exp: u64) {
        if self.lock().insert(conn.as_u64(), exp) {
            self.wake.notify_one();
        }
    }

    /// A scheduled connection closed (its entry goes later; see the module doc). `conns` says
    /// which connections are still open, for a sweep.
    pub(crate) fn closed(&self, conns: &Conns) {
        self.lock().closed(|c| conns.contains(ConnId::from_u64(c)));
    }

    /// Open connections scheduled to close at their token's expiry (the schedule holds up to
    /// about as many closed ones again, until a sweep or their second).
    pub(crate) fn len(&self) -> usize {
        self.lock().live
    }

    /// Runs the timer on its own thread for the life of the process.
    pub(crate) fn spawn(self: Arc<Self>, handle: Handle, conns: Arc<Conns>, counters: Arc<Counters>) {
        let spawned = std::thread::Builder::new().name("throng-expiry".into()).spawn(move || {
            let mut schedule = self.lock();
            loop {
                let now = unix_now();
                while let Some(due) = schedule.pop_due(now) {
                    // Closed without the lock: the loops take it as connections open and close,
                    // and a close may wait for room in a loop's command queue.
                    drop(schedule);
                    for conn in due.into_iter().map(ConnId::from_u64).filter(|&c| conns.contains(c)) {
                        counters.inc(&counters.token_expired_closes);
                        // Refused only by an overloaded loop, which counts it.
                        let _ = handle.close_tagged(
                            conn,
                            TOKEN_EXPIRED,
                            "token expired",
                            CloseReason::TokenExpired.tag(),
                        );
                    }
                    schedule = self.lock();
                }
                // Second resolution is what `exp` has; wake at least every second regardless, so
                // a clock step does not delay closes much.
                let wait = schedule.next().map_or(Duration::from_secs(60), |exp| {
                    Duration::from_secs(exp.saturating_sub(now)).min(Duration::from_secs(1))
                });
                schedule = self.wake.wait_timeout(schedule, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the token expiry thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_loop_does_not_grow_the_schedule() {
        let mut s = Schedule::default();
        // One long-lived token, a new connection id every time; at most one is open.
        for conn in 0..100_000u64 {
            s.insert(conn, u64::MAX - 1);
            let open = conn;
            s.closed(|c| c == open + 1); // none of the earlier ones is open
            assert!(s.entries <= 2 * s.live + SWEEP_SLACK + 1, "{} entries", s.entries);
        }
        assert_eq!(s.live, 0);
        assert!(s.entries <= SWEEP_SLACK + 1);
    }

    #[test]
    fn a_sweep_keeps_the_open_connections() {
        let mut s = Schedule::default();
        for conn in 0..3000u64 {
            s.insert(conn, 100 + conn % 7);
        }
        // Every odd connection closes: the even ones must all still be scheduled.
        for _ in (1..3000u64).step_by(2) {
            s.closed(|c| c % 2 == 0);
        }
        assert_eq!(s.live, 1500);
        let mut due = Vec::new();
        while let Some(mut batch) = s.pop_due(u64::MAX) {
            due.append(&mut batch);
        }
        due.retain(|c| c % 2 == 0);
        due.sort_unstable();
        assert_eq!(due, (0..3000).step_by(2).collect::<Vec<u64>>());
        assert_eq!(s.entries, 0);
    }

    #[test]
    fn due_entries_come_out_in_order() {
        let mut s = Schedule::default();
        assert!(s.insert(1, 30));
        assert!(s.insert(2, 10), "earlier: the timer must wake");
        assert!(!s.insert(3, 20));
        s.insert(4, 10);
        assert_eq!(s.entries, 4);
        assert_eq!(s.pop_due(9), None);
        assert_eq!(s.pop_due(10), Some(vec![2, 4]));
        assert_eq!(s.pop_due(10), None);
        assert_eq!(s.next(), Some(20));
        assert_eq!((s.pop_due(40), s.pop_due(40), s.pop_due(40)), (Some(vec![3]), Some(vec![1]), None));
        assert_eq!(s.entries, 0);
    }
}
