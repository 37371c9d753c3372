//! Closes connections with 4001 when their token expires: one thread sleeping until the
//! earliest `exp` in a heap. Entries of connections that closed earlier are skipped when they
//! come up (a closed id is never reused: ids carry a generation).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::metrics::Counters;
use super::registry::Registry;
use crate::{ConnId, Handle};

/// The close code for an expired token (private-use range 4000–4999, RFC 6455 §7.4.2).
pub const TOKEN_EXPIRED: u16 = 4001;

#[derive(Default)]
pub(crate) struct Expiry {
    heap: Mutex<BinaryHeap<Reverse<(u64, u64)>>>,
    wake: Condvar,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Expiry {
    /// Schedules `conn` to be closed at `exp` (Unix seconds).
    pub(crate) fn schedule(&self, conn: ConnId, exp: u64) {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = heap.peek().is_none_or(|Reverse((first, _))| exp < *first);
        heap.push(Reverse((exp, conn.as_u64())));
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Runs the timer on its own thread for the life of the process.
    pub(crate) fn spawn(self: Arc<Self>, handle: Handle, registry: Arc<Registry>, counters: Arc<Counters>) {
        let spawned = std::thread::Builder::new().name("throng-expiry".into()).spawn(move || {
            let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let now = unix_now();
                while let Some(&Reverse((exp, conn))) = heap.peek() {
                    if exp > now {
                        break;
                    }
                    heap.pop();
                    if registry.contains(conn) {
                        counters.inc(&counters.token_expired_closes);
                        // Refused only by an overloaded loop, which counts it.
                        let _ = handle.close(ConnId::from_u64(conn), TOKEN_EXPIRED, "token expired");
                    }
                }
                // Second resolution is what `exp` has; wake at least every second regardless, so
                // a clock step does not delay closes much.
                let wait = heap.peek().map_or(Duration::from_secs(60), |Reverse((exp, _))| {
                    Duration::from_secs(exp.saturating_sub(now)).min(Duration::from_secs(1))
                });
                heap = self.wake.wait_timeout(heap, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the token expiry thread: {e}");
        }
    }
}
