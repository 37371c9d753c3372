//! Connection ids: loop id + slab index + generation, packed in a `u64`.
//!
//! The slab reuses indices as soon as a connection closes; the generation makes an id that
//! outlived its connection refer to nothing, instead of to whoever got the slot next.

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

    pub(crate) fn generation(self) -> u32 {
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

/// The generation of every slot of one loop's slab.
///
/// A slot's generation goes up by one for each connection it holds, so an id stays unique for
/// 2^32 - 1 connections *of that slot* (the slab reuses the latest freed slot first, so a busy
/// slot can see most of the loop's churn). When a slot's generations are used up it is retired
/// for the life of the loop rather than wrapped: no id is ever issued twice, however long the
/// server runs. Generation 0 is never issued.
#[derive(Default)]
pub(crate) struct Generations {
    of_slot: Vec<u32>,
}

impl Generations {
    /// The generation of the connection slot `index` holds (or last held).
    pub(crate) fn get(&self, index: u32) -> u32 {
        self.of_slot.get(index as usize).copied().unwrap_or(0)
    }

    /// Takes the next generation for a new connection in slot `index`; `None` when the slot is
    /// used up and must be retired.
    pub(crate) fn next(&mut self, index: usize) -> Option<u32> {
        if self.of_slot.len() <= index {
            self.of_slot.resize(index + 1, 0);
        }
        let generation = self.of_slot[index].checked_add(1)?;
        self.of_slot[index] = generation;
        Some(generation)
    }

    /// Whether `id`'s generation is the one slot `index` holds now.
    pub(crate) fn matches(&self, index: u32, generation: u32) -> bool {
        generation != 0 && self.get(index) == generation
    }

    /// Starts slot `index` at `generation` (boundary tests).
    #[cfg(test)]
    pub(crate) fn set(&mut self, index: usize, generation: u32) {
        if self.of_slot.len() <= index {
            self.of_slot.resize(index + 1, 0);
        }
        self.of_slot[index] = generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_never_repeat_a_slot_and_retire_at_the_end() {
        let mut g = Generations::default();
        assert_eq!(g.next(3), Some(1));
        assert_eq!(g.next(3), Some(2));
        assert!(g.matches(3, 2) && !g.matches(3, 1) && !g.matches(0, 0));
        g.set(5, u32::MAX - 1);
        assert_eq!(g.next(5), Some(u32::MAX));
        assert_eq!(g.next(5), None, "a used-up slot is retired, not wrapped to 0 or 1");
        assert_eq!(g.get(5), u32::MAX);
        assert!(!g.matches(5, 1));
    }

    #[test]
    fn packs_and_unpacks() {
        let id = ConnId::new(255, MAX_CONNS_PER_LOOP - 1, u32::MAX);
        assert_eq!((id.loop_id(), id.index(), id.generation()), (255, MAX_CONNS_PER_LOOP - 1, u32::MAX));
        let id = ConnId::new(3, 17, 9);
        assert_eq!(ConnId::from_u64(id.as_u64()), id);
        assert_ne!(ConnId::new(3, 17, 10), id, "a new generation is a different id");
    }
}
