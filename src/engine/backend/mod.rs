//! Event-loop backends: the one place that knows how bytes get in and out of sockets.
//!
//! # The contract every backend fulfils
//! A backend runs one loop thread. It owns the listening socket(s) and the connection sockets, a
//! [`LoopCore`](super::core::LoopCore) and a slab of `(socket, Conn)`, and it drives
//! [`Conn`](super::conn::Conn) with these kinds of news only:
//! - **accepted**: it takes a generation for the slot from `LoopCore::generations` (a slot whose
//!   generations are used up is retired: kept occupied, never reused) and calls
//!   `Conn::on_accepted` with the peer's address (PROXY header and admission start there);
//! - **bytes arrived**: it puts [`Conn::spill`](super::conn::Conn::spill) followed by the new bytes
//!   in one contiguous buffer (the loop's scratch buffer) and calls `Conn::on_bytes`; a read of 0
//!   bytes or a socket error removes the connection. Before reading it asks
//!   `Conn::pause_reading`: while that says yes it leaves the socket unread, and it reads again
//!   when `Conn::written` says the queue drained;
//! - **bytes written**: it writes from `Conn::outbound` (vectored, once per connection per loop
//!   turn, for every connection in `LoopCore::dirty`) and reports with `Conn::written`; when
//!   `Conn::wants_fin` it shuts the write side down and calls `Conn::fin_sent`;
//! - **time passed**: it calls `LoopCore::update_clock` every turn, expires `LoopCore::wheel`
//!   and calls `Conn::on_timer` for every entry whose generation and tick still match.
//!
//! It also drains the loop's command queue (application sends, closes, subscriptions, publishes; at
//! most one queue's capacity per turn), checks the shutdown flag beside it, and removes a
//! connection, calling `Conn::on_removed`, whenever a call answers `Next::Remove`. It stops reading
//! while `LoopCore::workers_behind` and retries the backlog each turn. Everything else — handshake,
//! frames, close handshake, timers' meaning, caps — lives in the connection logic and is shared by
//! all backends.
//!
//! Backends: [`mio`] (epoll/kqueue readiness, the default). A completion-based io_uring backend
//! is planned behind the `io-uring` feature.

pub(crate) mod mio;
