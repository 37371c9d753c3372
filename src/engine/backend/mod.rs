//! Event-loop backends: the one place that knows how bytes get in and out of sockets.
//!
//! # The contract
//! A backend runs under one loop thread. It owns that loop's listening socket(s), its poller and
//! wake-up, its read buffer and its own readiness bookkeeping. The [`Loop`] owns everything
//! else: the connections and their generations, the caps at accept, the commands, the timers,
//! the dirty list and when a connection goes. Each connection's socket is the backend's [`Backend::Socket`]; the core
//! keeps it in the connection's slot, beside the `Conn` and its generation (the 8 bytes after a
//! `Conn` hold both, so a slot costs no table and no second lookup per read or write), and
//! hands it back for every call about that connection. The core never looks inside a socket;
//! the backend decides nothing about a connection.
//!
//! What a backend may assume: a slot index names one socket from [`Loop::open`] until the core
//! gives the socket back through [`Backend::close`] (the index may name a new one right after;
//! anything the backend keeps by index carries the generation, see [`Loop::is_live`]); the core
//! calls it only from inside [`Loop::turn`], and in this order per turn:
//!
//! 1. [`Backend::now`], [`Backend::poll`] with the longest the core may wait (the backend
//!    shortens it for its own pending work), [`Backend::now`] again. The core never reads the
//!    clock itself: the memory backend hands it a clock the test moves.
//! 2. [`Backend::dispatch`]: the backend delivers what poll found, through the core:
//!    - **accept**: [`Loop::open`] with the socket and the peer's address answers the slot index,
//!      after calling [`Backend::attach`] (register it under that index); `None` when a cap
//!      refused it (the socket was dropped, which closes it).
//!    - **read**: [`Loop::reading`] says whether to read now and gives the socket; on `Go` it
//!      copied the connection's leftover bytes to the front of the buffer it was given. The
//!      backend puts the new bytes right after them and hands the whole run to
//!      [`Loop::on_bytes`]. A read of 0 bytes (the peer's FIN) or a socket error:
//!      [`Loop::remove`].
//!    - **writable**: [`Loop::on_writable`].
//! 3. The core runs commands (one queue's capacity at most; a socket another loop accepted
//!    comes through [`Backend::adopt`] and then `open`), then [`Backend::retry`] (reads the
//!    backend put off, paused accepts), then expires timers, then flushes every dirty connection
//!    once, then checks whether a shutdown is complete.
//!
//! While it runs, the core calls the per-connection methods: [`Backend::write`] (the chunks of
//! one connection's queue, from `Outbound::io_slices`: once per dirty connection per turn, and
//! again while it answers `Wrote`), [`Backend::shutdown_write`], [`Backend::close`],
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
//! A completion backend (io_uring, planned) maps onto the same calls: `poll` is
//! `submit_and_wait` with the timeout; `dispatch` walks the completion queue, whose entries
//! carry the slot index and generation in their `user_data` (a completion for a generation
//! [`Loop::is_live`] denies is dropped); a multishot accept's completion is `open`; a multishot
//! recv with provided buffers is `reading` + `on_bytes` (copying into a buffer of its own only
//! when the connection has leftover bytes to put in front; on `Later` or `Stop` it holds the
//! buffer, or cancels the recv, until `retry` or `resume_reading`); `write` submits one send for
//! the chunks and answers [`Write::Later`]. What that backend adds: a `Loop::on_written` for the
//! send's completion (`Conn::written`, then the same flush), and chunks that stay put while a
//! send is in flight (today the queue may append to its last owned chunk).
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

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::engine::core::Loop;
use crate::engine::mailbox::{Command, Shared};
use crate::engine::outbound::Outbound;
use crate::engine::stats::LoopStats;

#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod mio;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) mod uring;

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

/// What a non-blocking write's result means to the core, for every write a backend makes by a
/// syscall (epoll's, and io_uring's first write of a connection): `None` when the socket is full.
pub(crate) fn written(mut write: impl FnMut() -> io::Result<usize>) -> Option<Write> {
    loop {
        return match write() {
            Ok(n) => Some(Write::Wrote(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => Some(Write::Failed),
        };
    }
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
    fn attach(&mut self, index: u32, generation: u32, socket: &mut Self::Socket) -> io::Result<()>;

    /// Writes slot `index`'s queue to its socket: a readiness backend writes the front chunks
    /// (`Outbound::io_slices`) and answers the bytes taken, leaving the queue to the core; a
    /// completion backend takes the front chunks over (`Outbound::hand_off`), submits them and
    /// answers [`Write::Later`] (and `Later` again while that send is in flight).
    fn write(&mut self, index: u32, generation: u32, socket: &Self::Socket, queue: &mut Outbound) -> Write;

    /// Shuts the socket's write side down (sends FIN).
    fn shutdown_write(&mut self, socket: &Self::Socket);

    /// The core removed slot `index`'s connection: close its socket. The index may name a new
    /// connection right after.
    fn close(&mut self, index: u32, generation: u32, socket: Self::Socket);

    /// Turns a socket another loop accepted into one of this backend's (it then goes through
    /// [`Loop::open`](crate::engine::core::Loop::open) like an accepted one).
    fn adopt(&mut self, socket: std::net::TcpStream) -> io::Result<Self::Socket>;

    /// Reading from slot `index` (holding `generation`) was paused for a full queue and may go
    /// on: the peer's bytes may be waiting without a new readiness edge.
    fn resume_reading(&mut self, index: u32, generation: u32);

    /// The server is shutting down: accept no more connections.
    fn stop_accepting(&mut self);
}

/// A loop's listening socket: its own, or (without `SO_REUSEPORT`) loop 0's, which accepts for
/// every loop and hands every n-th socket to loop n.
pub(crate) enum Acceptor<L> {
    /// This loop has its own listener (or none, when another loop accepts for it).
    Own(Option<L>),
    /// This loop accepts and hands every n-th socket to loop n.
    Distributing { listener: L, next: usize },
}

impl<L> Acceptor<L> {
    pub(crate) fn listener_mut(&mut self) -> Option<&mut L> {
        match self {
            Acceptor::Own(listener) => listener.as_mut(),
            Acceptor::Distributing { listener, .. } => Some(listener),
        }
    }

    /// A socket this loop accepted: gives it back when it is this loop's to open, or posts it
    /// to the loop whose turn it is (distributing acceptor). A loop never blocks on another
    /// loop's queue: a full one costs this connection, counted as refused over a limit.
    pub(crate) fn hand_over(
        &mut self,
        shared: &Shared,
        loop_id: usize,
        socket: std::net::TcpStream,
        peer: SocketAddr,
    ) -> Option<std::net::TcpStream> {
        if let Acceptor::Distributing { next, .. } = self {
            let target = *next % shared.mailboxes.len();
            *next = next.wrapping_add(1);
            if target != loop_id {
                if shared.try_post(target, Command::Adopt(socket, peer)).is_err() {
                    LoopStats::count(&shared.stats[loop_id].rejected_over_limit, 1);
                }
                return None;
            }
        }
        Some(socket)
    }
}

/// A socket's peer address, or the unspecified address when the socket cannot say (it was reset
/// meanwhile): asked only when an accept or an upgrade needs it.
pub(crate) fn peer_or_unspecified(peer: io::Result<SocketAddr>) -> SocketAddr {
    peer.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// `a` or `b`, whichever is sooner (`None`: no limit); for durations and instants alike.
pub(crate) fn sooner<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
