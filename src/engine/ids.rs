//! Connection ids: loop id + slab index + generation, packed in a `u64`.
//!
//! The slab reuses indices as soon as a connection closes; the generation makes an id that
//! outlived its connection refer to nothing, instead of to whoever got the slot next (the
//! generations live beside the connections, in [`crate::engine::core::Slots`]).

use std::fmt;

/// Identifies one connection for the lifetime of the server. Cheap to copy, hash and send.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

/// The most event loops a server can run (the loop id takes 8 bits).
pub const MAX_LOOPS: usize = 256;
/// The most connections one loop can hold (the slab index takes 24 bits).
pub const MAX_CONNS_PER_LOOP: usize = 1 << 24;

impl ConnId {
    pub(crate) fn new(loop_id: usize, index: usize, generation: u32) -> Self {
        debug_assert!(loop_id < MAX_LOOPS && index < MAX_CONNS_PER_LOOP);
        Self(((loop_id as u64) << 56) | ((index as u64 & 0xff_ffff) << 32) | u64::from(generation))
    }

    /// The event loop that owns the connection.
    pub fn loop_id(self) -> usize {
        (self.0 >> 56) as usize
    }

    pub(crate) fn index(self) -> usize {
        ((self.0 >> 32) & 0xff_ffff) as usize
    }

    /// The connection's slot in its loop: small and dense (slots are reused), so an embedder
    /// can keep its own per-connection state in a vector per loop indexed by it, checked
    /// against [`ConnId::generation`].
    pub fn slot(self) -> usize {
        self.index()
    }

    /// Which use of its slot this connection is (never 0): two connections that held the same
    /// slot differ in it.
    pub fn generation(self) -> u32 {
        self.0 as u32
    }

    /// The id as a number (stable for the server's lifetime), e.g. for an admin API.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`ConnId::as_u64`]. An id that names no live connection is harmless:
    /// commands sent to it are ignored.
    pub fn from_u64(raw: u64) -> Self {
        Self(raw)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}:{}:{})", self.loop_id(), self.index(), self.generation())
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        let id = ConnId::new(255, MAX_CONNS_PER_LOOP - 1, u32::MAX);
        assert_eq!((id.loop_id(), id.index(), id.generation()), (255, MAX_CONNS_PER_LOOP - 1, u32::MAX));
        let id = ConnId::new(3, 17, 9);
        assert_eq!(ConnId::from_u64(id.as_u64()), id);
        assert_ne!(ConnId::new(3, 17, 10), id, "a new generation is a different id");
    }
}
