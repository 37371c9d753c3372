//! One loop's connections: a slab whose entries keep the slot's generation and the backend's
//! socket beside the `Conn`.
//!
//! A slot's generation goes up by one for each connection it holds, so an id stays unique for
//! 2^32 - 1 connections *of that slot* (the latest freed slot is reused first, so a busy slot
//! can see most of the loop's churn). When a slot's generations are used up it is retired for
//! the life of the loop rather than wrapped: no id is ever issued twice, however long the server
//! runs. Generation 0 is never issued. Keeping the generation in the entry, rather than in a
//! table of its own, puts it (with the socket) in the 8 bytes after the `Conn`, where a read or
//! a write of the connection looks anyway; the entry is no bigger than a `Conn` and a socket
//! were alone.

use crate::engine::conn::Conn;
use crate::engine::ids::MAX_CONNS_PER_LOOP;

enum State<S> {
    /// Free; `next` is the next free slot (a LIFO list, like `slab`'s).
    Vacant { generation: u32, next: Option<u32> },
    /// The generation and the backend's socket sit in the 8 bytes after the `Conn` (64): one
    /// cache-line neighbourhood for everything a read or a write of this connection touches.
    Occupied { generation: u32, socket: S, conn: Conn },
    /// Its generations are used up: occupied forever, by nothing.
    Retired,
}

/// A slot: the connection it holds, its generation and its socket (or the generation it last
/// held). `S` is the backend's socket; this module only keeps it.
pub(crate) struct Entry<S> {
    state: State<S>,
}

pub(crate) struct Slots<S> {
    entries: Vec<Entry<S>>,
    free: Option<u32>,
    /// Connections held (retired slots are not connections).
    len: usize,
}

impl<S> Default for Slots<S> {
    fn default() -> Self {
        Self { entries: Vec::new(), free: None, len: 0 }
    }
}

/// One connection and what sits beside it.
pub(crate) struct Occupant<'a, S> {
    pub(crate) conn: &'a mut Conn,
    pub(crate) socket: &'a mut S,
    pub(crate) generation: u32,
}

impl<S> Slots<S> {
    /// Connections held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Puts `conn` and its socket in a free slot; returns the slot and the connection's
    /// generation, or gives the socket back when every slot an id can name is taken.
    pub(crate) fn insert(&mut self, socket: S, conn: Conn) -> Result<(u32, u32), S> {
        let (index, next, last) = match self.free {
            Some(index) => match self.entries.get(index as usize).map(|e| &e.state) {
                Some(&State::Vacant { generation, next }) => (index, next, generation),
                _ => return Err(socket),
            },
            None if self.entries.len() < MAX_CONNS_PER_LOOP => {
                self.entries.push(Entry { state: State::Vacant { generation: 0, next: None } });
                ((self.entries.len() - 1) as u32, None, 0)
            }
            None => return Err(socket),
        };
        // A vacant slot's generation is below `u32::MAX`: a used-up one is retired instead.
        let generation = last + 1;
        self.free = next;
        self.entries[index as usize].state = State::Occupied { generation, socket, conn };
        self.len += 1;
        Ok((index, generation))
    }

    /// The connection in slot `index`, its socket and its generation.
    pub(crate) fn get_mut(&mut self, index: u32) -> Option<Occupant<'_, S>> {
        match &mut self.entries.get_mut(index as usize)?.state {
            State::Occupied { generation, socket, conn } => {
                Some(Occupant { conn, socket, generation: *generation })
            }
            _ => None,
        }
    }

    /// The generation of the connection slot `index` holds, if it holds one.
    pub(crate) fn generation(&self, index: u32) -> Option<u32> {
        match self.entries.get(index as usize)?.state {
            State::Occupied { generation, .. } => Some(generation),
            _ => None,
        }
    }

    /// Whether slot `index` holds the connection of `generation` now (what makes an id live).
    pub(crate) fn is_live(&self, index: u32, generation: u32) -> bool {
        generation != 0 && self.generation(index) == Some(generation)
    }

    /// The slots holding a connection.
    pub(crate) fn indices(&self) -> Vec<u32> {
        let occupied =
            |(i, e): (usize, &Entry<S>)| matches!(e.state, State::Occupied { .. }).then_some(i as u32);
        self.entries.iter().enumerate().filter_map(occupied).collect()
    }

    /// Every connection held.
    pub(crate) fn conns_mut(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.entries.iter_mut().filter_map(|e| match &mut e.state {
            State::Occupied { conn, .. } => Some(conn),
            _ => None,
        })
    }

    /// Takes the connection and its socket out of slot `index`, with its generation. The slot
    /// is free again, unless its generations are used up: then it is retired and never handed
    /// out again.
    pub(crate) fn remove(&mut self, index: u32) -> Option<(Conn, S, u32)> {
        let entry = self.entries.get_mut(index as usize)?;
        let State::Occupied { generation, .. } = entry.state else { return None };
        let after = if generation == u32::MAX {
            State::Retired
        } else {
            State::Vacant { generation, next: self.free.replace(index) }
        };
        let State::Occupied { socket, conn, .. } = std::mem::replace(&mut entry.state, after) else {
            return None;
        };
        self.len -= 1;
        Some((conn, socket, generation))
    }

    /// Adds a free slot whose last connection had `generation` (boundary tests).
    #[cfg(test)]
    pub(crate) fn push_vacant(&mut self, generation: u32) {
        let next = self.free.replace(self.entries.len() as u32);
        self.entries.push(Entry { state: State::Vacant { generation, next } });
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
        let mut core = LoopCore::new(
            0,
            Arc::new(Config::default()),
            Arc::default(),
            tx,
            Arc::default(),
            Arc::new(crate::engine::topics::Interner::new(1)),
        );
        Conn::new(&mut core)
    }

    #[test]
    fn generations_go_up_per_slot_and_old_ones_are_not_live() {
        let mut slots = Slots::<u32>::default();
        assert_eq!(slots.insert(7, conn()).ok(), Some((0, 1)));
        assert_eq!(slots.insert(7, conn()).ok(), Some((1, 1)));
        assert!(slots.remove(0).is_some());
        assert!(!slots.is_live(0, 1) && slots.generation(0).is_none());
        assert_eq!(slots.insert(7, conn()).ok(), Some((0, 2)), "the latest freed slot is reused first");
        assert!(slots.is_live(0, 2) && !slots.is_live(0, 1) && !slots.is_live(0, 0));
        assert_eq!(slots.len(), 2);
        assert_eq!(slots.indices(), vec![0, 1]);
    }

    #[test]
    fn a_used_up_slot_is_retired_and_never_handed_out_again() {
        let mut slots = Slots::<u32>::default();
        slots.push_vacant(u32::MAX - 1);
        assert_eq!(slots.insert(7, conn()).ok(), Some((0, u32::MAX)), "the last generation is still used");
        assert!(slots.remove(0).is_some());
        // Slot 0 is now used up: the next connection gets slot 1, and slot 0 stays taken.
        assert_eq!(slots.insert(7, conn()).ok(), Some((1, 1)));
        assert_eq!(slots.len(), 1, "a retired slot is not a connection");
        assert!(slots.get_mut(0).is_none() && slots.indices() == vec![1]);
        assert!(slots.remove(0).is_none(), "removing a retired slot does nothing");
        assert!(!slots.is_live(0, u32::MAX));
        assert!(slots.remove(1).is_some());
        assert_eq!(slots.insert(7, conn()).ok(), Some((1, 2)), "a retired slot is never reused");
    }

    #[test]
    fn the_generation_and_the_socket_sit_in_the_entry_without_growing_it() {
        // The generation and a 4-byte socket fill the 8 bytes after the Conn, and the entry's
        // state hides in the Conn's niche: a whole slot costs what a Conn (64) and a socket
        // cost together, rounded to 8.
        let entry = std::mem::size_of::<Entry<u32>>();
        println!(
            "size_of::<slots::Entry<u32>>() = {entry}, size_of::<Conn>() = {}",
            std::mem::size_of::<Conn>()
        );
        assert!(entry <= 72, "a slab entry grew to {entry} bytes");
        // A mio socket is that 4-byte descriptor in release builds (debug builds add a
        // registration check to it).
        #[cfg(not(debug_assertions))]
        assert_eq!(std::mem::size_of::<Entry<mio::net::TcpStream>>(), entry);
    }
}
