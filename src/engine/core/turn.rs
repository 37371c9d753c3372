//! The one driver loop, the same for every backend: one turn is poll, deliver, commands,
//! deferred work, timers, flush (the order is the backend contract's).

use std::io;
use std::time::Duration;

use super::Loop;
use crate::engine::backend::{sooner, Backend};

impl<S> Loop<S> {
    /// Runs the loop until a shutdown completes, then drops what is left.
    pub(crate) fn run<B: Backend<Socket = S>>(mut self, mut backend: B) {
        while self.turn(&mut backend) {}
        self.finish(&mut backend);
    }

    /// One turn of the loop. Returns false once the loop should stop.
    pub(crate) fn turn<B: Backend<Socket = S>>(&mut self, backend: &mut B) -> bool {
        self.core.update_clock(backend.now());
        if let Err(e) = backend.poll(self.poll_timeout()) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("loop {}: poll failed: {e}", self.core.loop_id);
                return false;
            }
        }
        self.core.update_clock(backend.now());
        backend.dispatch(self);
        self.drain_commands(backend);
        let caught_up = self.core.drain_backlog();
        backend.retry(self, caught_up);
        self.expire_timers(backend);
        self.flush_dirty(backend);
        self.compact_topics();
        match self.core.shutting_down {
            Some(deadline) => self.len() > 0 && self.core.now < deadline,
            None => true,
        }
    }

    /// How long the backend may wait for I/O, as far as the core's own work goes.
    fn poll_timeout(&self) -> Option<Duration> {
        if self.core.workers_behind() {
            return Some(Duration::from_millis(1));
        }
        if self.commands_left {
            return Some(Duration::ZERO);
        }
        let shutdown = self.core.shutting_down.map(|d| d.saturating_duration_since(self.core.now));
        sooner(self.core.wheel.poll_timeout(self.core.now), shutdown)
    }

    /// The loop stops: every connection goes, and the workers get the last events.
    fn finish<B: Backend<Socket = S>>(&mut self, backend: &mut B) {
        self.remove_all(backend);
        // Let the workers see the last Close events even if the channel was full (for about a
        // second: counted in sleeps, so that a test's stopped clock cannot hold the loop).
        for _ in 0..1000 {
            if self.core.drain_backlog() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
