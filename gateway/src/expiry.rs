//! Closes connections with 4001 when their token expires: one thread sleeping until the
//! earliest expiry in a schedule. A connection's entry leaves the schedule when the connection
//! closes, so the schedule holds one entry per open connection with a token, however many
//! came and went (a reconnect loop with a long-lived token does not grow it).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conns::Conns;
use super::metrics::Counters;
use throng::{ConnId, Handle};

/// The close code for an expired token (private-use range 4000–4999, RFC 6455 §7.4.2).
pub const TOKEN_EXPIRED: u16 = 4001;

/// Expiries ordered by time, and indexed by connection so that a close can remove its own.
#[derive(Default)]
struct Schedule {
    by_time: BTreeSet<(u64, u64)>,
    by_conn: HashMap<u64, u64>,
}

impl Schedule {
    /// Adds (or moves) `conn`'s entry; true when it is now the earliest.
    fn insert(&mut self, conn: u64, exp: u64) -> bool {
        if let Some(old) = self.by_conn.insert(conn, exp) {
            self.by_time.remove(&(old, conn));
        }
        self.by_time.insert((exp, conn));
        self.by_time.first() == Some(&(exp, conn))
    }

    fn remove(&mut self, conn: u64) {
        if let Some(exp) = self.by_conn.remove(&conn) {
            self.by_time.remove(&(exp, conn));
        }
    }

    /// Takes the earliest entry due at `now`.
    fn pop_due(&mut self, now: u64) -> Option<u64> {
        let &(exp, conn) = self.by_time.first()?;
        if exp > now {
            return None;
        }
        self.by_time.pop_first();
        self.by_conn.remove(&conn);
        Some(conn)
    }

    fn next(&self) -> Option<u64> {
        self.by_time.first().map(|&(exp, _)| exp)
    }

    fn len(&self) -> usize {
        self.by_conn.len()
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

    /// Schedules `conn` to be closed at `exp` (Unix seconds).
    pub(crate) fn schedule(&self, conn: ConnId, exp: u64) {
        if self.lock().insert(conn.as_u64(), exp) {
            self.wake.notify_one();
        }
    }

    /// Forgets `conn` (it closed); nothing happens if it had no entry.
    pub(crate) fn cancel(&self, conn: ConnId) {
        self.lock().remove(conn.as_u64());
    }

    /// Entries scheduled: one per open connection whose token has an expiry.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Runs the timer on its own thread for the life of the process.
    pub(crate) fn spawn(self: Arc<Self>, handle: Handle, conns: Arc<Conns>, counters: Arc<Counters>) {
        let spawned = std::thread::Builder::new().name("throng-expiry".into()).spawn(move || {
            let mut schedule = self.lock();
            loop {
                let now = unix_now();
                while let Some(conn) = schedule.pop_due(now) {
                    if conns.contains(ConnId::from_u64(conn)) {
                        counters.inc(&counters.token_expired_closes);
                        // Refused only by an overloaded loop, which counts it.
                        let _ = handle.close(ConnId::from_u64(conn), TOKEN_EXPIRED, "token expired");
                    }
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
    fn entries_leave_when_their_connection_closes() {
        let mut s = Schedule::default();
        // A reconnect loop with one long-lived token: every connection is a new id.
        for conn in 0..100_000u64 {
            s.insert(conn, u64::MAX - 1);
            assert_eq!(s.len(), 1);
            s.remove(conn);
        }
        assert_eq!((s.len(), s.by_time.len(), s.next()), (0, 0, None));
        s.remove(7); // unknown: nothing happens
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn due_entries_come_out_in_order() {
        let mut s = Schedule::default();
        assert!(s.insert(1, 30));
        assert!(s.insert(2, 10), "earlier: the timer must wake");
        assert!(!s.insert(3, 20));
        assert!(s.insert(3, 5), "moved, not duplicated");
        assert_eq!(s.len(), 3);
        assert_eq!(s.pop_due(4), None);
        assert_eq!((s.pop_due(10), s.pop_due(10), s.pop_due(10)), (Some(3), Some(2), None));
        assert_eq!(s.next(), Some(30));
        s.remove(1);
        assert_eq!((s.len(), s.by_time.len()), (0, 0));
    }

    #[test]
    fn cancel_through_the_shared_handle() {
        let expiry = Expiry::default();
        let ids: Vec<ConnId> = (1..=1000u64).map(|i| ConnId::from_u64(i << 32)).collect();
        for &id in &ids {
            expiry.schedule(id, u64::MAX);
        }
        assert_eq!(expiry.len(), 1000);
        for &id in &ids {
            expiry.cancel(id);
        }
        assert_eq!(expiry.len(), 0);
    }
}
