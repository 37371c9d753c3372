//! One loop's connections: a slab whose entries keep their slot's generation beside the `Conn`.
//!
//! A slot's generation goes up by one for each connection it holds, so an id stays unique for
//! 2^32 - 1 connections *of that slot* (the latest freed slot is reused first, so a busy slot
//! can see most of the loop's churn). When a slot's generations are used up it is retired for
//! the life of the loop rather than wrapped: no id is ever issued twice, however long the server
//! runs. Generation 0 is never issued. Keeping the generation in the entry, rather than in a
//! table of its own, puts it in the padding beside the `Conn` and on the cache line the
//! connection's logic reads anyway.

use crate::engine::conn::Conn;
use crate::engine::ids::MAX_CONNS_PER_LOOP;

enum State {
    /// Free; `next` is the next free slot (a LIFO list, like `slab`'s).
    Vacant {
        next: Option<u32>,
    },
    Occupied(Conn),
    /// Its generations are used up: occupied forever, by nothing.
    Retired,
}

/// A slot: the generation of the connection it holds (or last held), and that connection.
pub(crate) struct Entry {
    generation: u32,
    state: State,
}

#[derive(Default)]
pub(crate) struct Slots {
    entries: Vec<Entry>,
    free: Option<u32>,
    /// Connections held (retired slots are not connections).
    len: usize,
}

impl Slots {
    /// Connections held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Puts `conn` in a free slot; returns the slot and the connection's generation, or `None`
    /// when every slot an id can name is taken.
    pub(crate) fn insert(&mut self, conn: Conn) -> Option<(u32, u32)> {
        let index = match self.free {
            Some(index) => index,
            None if self.entries.len() < MAX_CONNS_PER_LOOP => {
                self.entries.push(Entry { generation: 0, state: State::Vacant { next: None } });
                (self.entries.len() - 1) as u32
            }
            None => return None,
        };
        let entry = self.entries.get_mut(index as usize)?;
        let State::Vacant { next } = entry.state else { return None };
        self.free = next;
        // A vacant slot's generation is below `u32::MAX`: a used-up one is retired instead.
        entry.generation += 1;
        entry.state = State::Occupied(conn);
        self.len += 1;
        Some((index, entry.generation))
    }

    /// The connection in slot `index` and its generation.
    pub(crate) fn get_mut(&mut self, index: u32) -> Option<(&mut Conn, u32)> {
        let entry = self.entries.get_mut(index as usize)?;
        match &mut entry.state {
            State::Occupied(conn) => Some((conn, entry.generation)),
            _ => None,
        }
    }

    /// The generation of the connection slot `index` holds, if it holds one.
    pub(crate) fn generation(&self, index: u32) -> Option<u32> {
        let entry = self.entries.get(index as usize)?;
        matches!(entry.state, State::Occupied(_)).then_some(entry.generation)
    }

    /// Whether slot `index` holds the connection of `generation` now (what makes an id live).
    pub(crate) fn is_live(&self, index: u32, generation: u32) -> bool {
        generation != 0 && self.generation(index) == Some(generation)
    }

    /// The slots holding a connection.
    pub(crate) fn indices(&self) -> Vec<u32> {
        let occupied = |(i, e): (usize, &Entry)| matches!(e.state, State::Occupied(_)).then_some(i as u32);
        self.entries.iter().enumerate().filter_map(occupied).collect()
    }

    /// Takes the connection out of slot `index`, with its generation. The slot is free again,
    /// unless its generations are used up: then it is retired and never handed out again.
    pub(crate) fn remove(&mut self, index: u32) -> Option<(Conn, u32)> {
        let entry = self.entries.get_mut(index as usize)?;
        if !matches!(entry.state, State::Occupied(_)) {
            return None;
        }
        let after = if entry.generation == u32::MAX {
            State::Retired
        } else {
            let next = self.free.replace(index);
            State::Vacant { next }
        };
        let State::Occupied(conn) = std::mem::replace(&mut entry.state, after) else { return None };
        self.len -= 1;
        Some((conn, entry.generation))
    }

    /// Adds a free slot whose last connection had `generation` (boundary tests).
    #[cfg(test)]
    pub(crate) fn push_vacant(&mut self, generation: u32) {
        let next = self.free.replace(self.entries.len() as u32);
        self.entries.push(Entry { generation, state: State::Vacant { next } });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::config::Config;
    use crate::engine::core::LoopCore;

    fn conn() -> Conn {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut core = LoopCore::new(0, Arc::new(Config::default()), Arc::default(), tx, Arc::default());
        Conn::new(&mut core)
    }

    #[test]
    fn generations_go_up_per_slot_and_old_ones_are_not_live() {
        let mut slots = Slots::default();
        assert_eq!(slots.insert(conn()), Some((0, 1)));
        assert_eq!(slots.insert(conn()), Some((1, 1)));
        assert!(slots.remove(0).is_some());
        assert!(!slots.is_live(0, 1) && slots.generation(0).is_none());
        assert_eq!(slots.insert(conn()), Some((0, 2)), "the latest freed slot is reused first");
        assert!(slots.is_live(0, 2) && !slots.is_live(0, 1) && !slots.is_live(0, 0));
        assert_eq!(slots.len(), 2);
        assert_eq!(slots.indices(), vec![0, 1]);
    }

    #[test]
    fn a_used_up_slot_is_retired_and_never_handed_out_again() {
        let mut slots = Slots::default();
        slots.push_vacant(u32::MAX - 1);
        assert_eq!(slots.insert(conn()), Some((0, u32::MAX)), "the last generation is still used");
        assert!(slots.remove(0).is_some());
        // Slot 0 is now used up: the next connection gets slot 1, and slot 0 stays taken.
        assert_eq!(slots.insert(conn()), Some((1, 1)));
        assert_eq!(slots.len(), 1, "a retired slot is not a connection");
        assert!(slots.get_mut(0).is_none() && slots.indices() == vec![1]);
        assert!(slots.remove(0).is_none(), "removing a retired slot does nothing");
        assert!(!slots.is_live(0, u32::MAX));
        assert!(slots.remove(1).is_some());
        assert_eq!(slots.insert(conn()), Some((1, 2)), "a retired slot is never reused");
    }

    #[test]
    fn the_generation_sits_in_the_entry_without_growing_it() {
        let entry = std::mem::size_of::<Entry>();
        println!("size_of::<slots::Entry>() = {entry}, size_of::<Conn>() = {}", std::mem::size_of::<Conn>());
        assert!(entry <= 80, "a slab entry grew to {entry} bytes");
    }
}
