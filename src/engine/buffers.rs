//! The per-loop pool of per-connection buffers.
//!
//! A connection needs buffers only while something is in flight: a partial frame or upgrade
//! request, a message arriving in pieces, bytes the kernel has not taken. It takes a [`Cold`] box
//! from its loop's pool for that time and gives it back when everything drained, so idle
//! connections hold none and busy ones do not hit the allocator on every message.

use super::outbound::Outbound;

/// The room a table of `len` entries should shrink to, once it is under a quarter full: twice
/// its entries, so that a table that shrank does not grow again at the next few inserts. The
/// engine's one rule for giving back a table's room (the io_uring backend's tables, the topic
/// index).
pub(crate) fn spare_room(len: usize, capacity: usize) -> Option<usize> {
    (len * 4 < capacity).then_some(len * 2)
}

/// Boxes kept for reuse per loop; more are freed. A box is 192 bytes plus the small buffers it
/// keeps: keeping 1024 held ~225 KiB per loop after a handshake storm (15 B per connection of a
/// 15,000-connection gateway, measured), while the allocator serves a burst past 64 about as
/// fast as the pool.
const POOL_MAX: usize = 64;
/// Buffers that grew beyond this are not kept (a 16 MiB message must not stay cached).
const KEEP_CAPACITY: usize = 64 * 1024;

/// State that only some connections need for a while; boxed so that an idle one pays 8 bytes.
#[derive(Default)]
pub(crate) struct Cold {
    /// Bytes of an incomplete upgrade request, frame header or control frame.
    pub(crate) spill: Vec<u8>,
    /// Pieces of a message that did not arrive in one read.
    pub(crate) message: Vec<u8>,
    pub(crate) outbound: Outbound,
    pub(crate) close_reason: String,
    /// The payload of the latest ping not answered yet because the queue was full.
    pub(crate) pong: Option<Vec<u8>>,
    /// The tick the message being assembled started at (its deadline runs from there).
    pub(crate) message_started: Option<super::timer::Tick>,
}

impl Cold {
    pub(crate) fn is_idle(&self) -> bool {
        self.spill.is_empty()
            && self.message.is_empty()
            && self.outbound.is_empty()
            && self.close_reason.is_empty()
            && self.pong.is_none()
            && self.message_started.is_none()
    }
}

#[derive(Default)]
pub(crate) struct ColdPool {
    // The boxes themselves are what is reused: a connection holds a `Box<Cold>`.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Cold>>,
}

impl ColdPool {
    pub(crate) fn take(&mut self) -> Box<Cold> {
        self.free.pop().unwrap_or_default()
    }

    /// Takes back an idle box, keeping its buffers when they are small.
    pub(crate) fn give_back(&mut self, mut cold: Box<Cold>) {
        if self.free.len() >= POOL_MAX {
            return;
        }
        for buffer in [&mut cold.spill, &mut cold.message] {
            buffer.clear();
            if buffer.capacity() > KEEP_CAPACITY {
                *buffer = Vec::new();
            }
        }
        cold.close_reason = String::new();
        cold.outbound.reset();
        cold.pong = None;
        cold.message_started = None;
        self.free.push(cold);
    }

    /// Frees all but `keep` pooled boxes, so that a loop a burst left idle does not hold them,
    /// and the large send buffers the kept ones hold; returns whether any box went.
    pub(crate) fn trim(&mut self, keep: usize) -> bool {
        let had = self.free.len();
        self.free.truncate(keep);
        for cold in &mut self.free {
            cold.outbound.shed_large_spare();
        }
        if let Some(room) = spare_room(self.free.len(), self.free.capacity()) {
            self.free.shrink_to(room);
        }
        had > keep
    }
}
