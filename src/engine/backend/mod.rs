//! Event-loop backends: the one place that knows how bytes get in and out of sockets.
//!
//! # The contract
//! A backend runs under one loop thread and owns that loop's listening socket(s), its
//! connection sockets (by slot index), its wake-up mechanism and its read buffer. The
//! [`Loop`](crate::engine::core::Loop) owns everything else: the connections and their
//! generations, the caps at accept, the commands, the timers, the dirty list and when a
//! connection goes. The core never touches a socket; the backend never decides anything about a
//! connection. Every backend runs under the one driver, [`Loop::turn`], which per turn calls, in
//! this order:
//!
//! 1. [`Backend::now`], then [`Backend::poll`] with the longest the core may wait (the backend
//!    shortens it for its own pending work), then [`Backend::now`] again. The core never reads
//!    the clock itself: a test backend hands it a clock the test moves.
//! 2. [`Backend::dispatch`]: the backend delivers what poll found, through the core:
//!    - **accept**: [`Loop::open`] with the peer's address answers a slot index (or `None`: over
//!      a cap, drop the socket). From then on the index names that socket until the core calls
//!      [`Backend::close`] for it. If the backend cannot take the socket after all, it calls
//!      [`Loop::remove`].
//!    - **read**: [`Loop::reading`] says whether to read now; if so it copied the connection's
//!      leftover bytes to the front of the buffer it was given and says how many. The backend
//!      puts the new bytes right after them and hands the whole run to [`Loop::on_bytes`]. A
//!      read of 0 bytes (the peer's FIN) or a socket error: [`Loop::remove`].
//!    - **writable**: [`Loop::on_writable`].
//! 3. The core runs commands (one queue's capacity at most), then [`Backend::retry`] (the
//!    backend's own deferred work: reads it put off, paused accepts), then expires timers, then
//!    flushes every dirty connection once, then checks whether a shutdown is complete.
//!
//! While the core runs, it calls the backend only through the per-slot methods:
//! [`Backend::write`] (the chunks of one connection's queue, from `Outbound::io_slices`;
//! called once per dirty connection per turn, and again while it answers `Wrote`),
//! [`Backend::shutdown_write`], [`Backend::close`] (the core removed the connection; the index
//! may name a new socket right after), [`Backend::adopt`] (a socket another loop accepted),
//! [`Backend::resume_reading`] (reading was paused for a full queue and may go on) and
//! [`Backend::stop_accepting`] (shutdown).
//!
//! # Readiness and completion
//! A readiness backend ([`mio`]: epoll/kqueue, edge-triggered) reads a ready socket until a
//! short read or `WouldBlock` within a per-wake-up budget, keeps a list of sockets it must come
//! back to (over budget, or told to wait by [`Reading::Later`]) and retries them in `retry`;
//! `write` is a `writev` that answers the bytes taken, and a writable event is
//! [`Loop::on_writable`].
//!
//! A completion backend (io_uring, planned) maps onto the same calls: `dispatch` walks the
//! completion queue, whose entries carry the slot index and generation in their `user_data`
//! (a completion for a generation [`Loop::is_live`] denies is dropped); a multishot accept's
//! completion is `open`; a multishot recv with provided buffers is `reading` + `on_bytes`
//! (copying into a buffer of its own only when the connection has leftover bytes to put in
//! front); `write` submits one send for the chunks and answers [`Write::Later`], and the send's
//! completion reports the bytes the way `Wrote` does and flushes again. `poll` is
//! `submit_and_wait` with a timeout.
//!
//! Backends: [`mio`] (the default) and, for the engine's own tests, `memory`: no sockets, a
//! clock the test controls.
//!
//! [`Loop::turn`]: crate::engine::core::Loop::turn
//! [`Loop::open`]: crate::engine::core::Loop::open
//! [`Loop::remove`]: crate::engine::core::Loop::remove
//! [`Loop::reading`]: crate::engine::core::Loop::reading
//! [`Loop::on_bytes`]: crate::engine::core::Loop::on_bytes
//! [`Loop::on_writable`]: crate::engine::core::Loop::on_writable
//! [`Loop::is_live`]: crate::engine::core::Loop::is_live
//! [`Reading::Later`]: crate::engine::core::Reading::Later

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use crate::engine::core::Loop;

#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod mio;

/// What became of a [`Backend::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// The socket took this many bytes now (the core advances the queue and may write again).
    Wrote(usize),
    /// Nothing more this time: the socket is full (readiness: the writable event flushes again)
    /// or the write was submitted (completion: its completion reports the bytes).
    Later,
    /// The socket failed: the core removes the connection.
    Failed,
}

/// Moves one loop's bytes. See the [module documentation](self) for the contract.
pub(crate) trait Backend: Sized {
    /// The backend's handle on one connection's socket (a descriptor, a fixed-file index, a
    /// test's peer). The core keeps it beside the connection, in the slot's entry, and hands it
    /// back for every call about that connection; it never looks inside.
    type Socket;

    /// The time now, for the loop's clock.
    fn now(&self) -> Instant;

    /// Waits for I/O for at most `timeout` (`None`: until something happens), less if the
    /// backend has work of its own pending.
    fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Delivers what the last poll found: accepts, reads, write readiness (or completions).
    fn dispatch(&mut self, core: &mut Loop<Self::Socket>);

    /// Runs the work the backend deferred: reads put off while `workers_caught_up` was false or
    /// the read budget was spent, accepts paused after an error.
    fn retry(&mut self, core: &mut Loop<Self::Socket>, workers_caught_up: bool);

    /// Starts watching `socket`, the new connection in slot `index` (e.g. registers it with
    /// the poller under that index). An error removes the connection.
    fn attach(&mut self, index: u32, socket: &mut Self::Socket) -> io::Result<()>;

    /// Writes (or submits) `chunks`, the front of slot `index`'s queue, to its socket.
    fn write(&mut self, index: u32, socket: &Self::Socket, chunks: &[IoSlice<'_>]) -> Write;

    /// Shuts the socket's write side down (sends FIN).
    fn shutdown_write(&mut self, socket: &Self::Socket);

    /// The core removed slot `index`'s connection: close its socket. The index may name a new
    /// connection right after.
    fn close(&mut self, index: u32, socket: Self::Socket);

    /// Turns a socket another loop accepted into one of this backend's (it then goes through
    /// [`Loop::open`](crate::engine::core::Loop::open) like an accepted one).
    fn adopt(&mut self, socket: std::net::TcpStream) -> io::Result<Self::Socket>;

    /// Reading from slot `index` (holding `generation`) was paused for a full queue and may go
    /// on: the peer's bytes may be waiting without a new readiness edge.
    fn resume_reading(&mut self, index: u32, generation: u32);

    /// The server is shutting down: accept no more connections.
    fn stop_accepting(&mut self);
}

/// `a` or `b`, whichever is sooner (`None`: no limit).
pub(crate) fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
