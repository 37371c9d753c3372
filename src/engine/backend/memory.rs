//! An in-memory backend for the engine's own tests: no sockets, and a clock the test moves.
//!
//! A test opens fake connections ([`Memory::connect`]), pushes the peer's bytes in
//! ([`Memory::push`]), reads what the core wrote ([`Memory::take_written`]), hangs up
//! ([`Memory::hang_up`]) and advances time ([`Memory::advance`]); each [`Loop::turn`] then runs
//! the core exactly as under a real backend. Everything a peer sent is delivered on the next
//! turn; writes are always taken whole (a peer that reads everything at once).
//!
//! [`Loop::turn`]: crate::engine::core::Loop::turn

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Backend, Write};
use crate::engine::core::{Loop, Reading};
use crate::engine::outbound::{Outbound, MAX_IOVECS};

/// A fake connection, by the order the test opened it.
pub(crate) type PeerId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting to be accepted on the next turn.
    Connecting,
    /// Accepted into this slot.
    Open(u32),
    /// Refused at accept, or closed by the core.
    Closed,
}

struct Peer {
    addr: SocketAddr,
    state: State,
    /// Bytes the peer sent that the core has not read yet.
    inbound: Vec<u8>,
    /// The peer sent FIN (after `inbound`).
    hung_up: bool,
    /// Bytes the core wrote and the test has not taken yet.
    written: Vec<u8>,
    /// The core shut its write side down.
    fin: bool,
}

/// The in-memory backend. Its clock starts where the core's did and moves only when the test
/// says so.
pub(crate) struct Memory {
    now: Instant,
    peers: Vec<Peer>,
    /// Slot index → the peer in it (the core keeps the same as each slot's socket; this is
    /// for walking the open connections).
    by_slot: Vec<Option<PeerId>>,
    scratch: Vec<u8>,
    accepting: bool,
}

impl Memory {
    pub(crate) fn new(now: Instant, scratch_size: usize) -> Self {
        Self { now, peers: Vec::new(), by_slot: Vec::new(), scratch: vec![0; scratch_size], accepting: true }
    }

    /// A new connection from `addr`, accepted on the next turn.
    pub(crate) fn connect(&mut self, addr: SocketAddr) -> PeerId {
        let peer = Peer {
            addr,
            state: State::Connecting,
            inbound: Vec::new(),
            hung_up: false,
            written: Vec::new(),
            fin: false,
        };
        self.peers.push(peer);
        self.peers.len() - 1
    }

    /// The peer sends `bytes`.
    pub(crate) fn push(&mut self, peer: PeerId, bytes: &[u8]) {
        self.peers[peer].inbound.extend_from_slice(bytes);
    }

    /// The peer sends FIN.
    pub(crate) fn hang_up(&mut self, peer: PeerId) {
        self.peers[peer].hung_up = true;
    }

    /// What the core wrote to the peer since the last call.
    pub(crate) fn take_written(&mut self, peer: PeerId) -> Vec<u8> {
        std::mem::take(&mut self.peers[peer].written)
    }

    /// Whether the connection is gone (refused, or closed by the core).
    pub(crate) fn is_closed(&self, peer: PeerId) -> bool {
        self.peers[peer].state == State::Closed
    }

    /// Whether the core sent FIN.
    pub(crate) fn got_fin(&self, peer: PeerId) -> bool {
        self.peers[peer].fin
    }

    /// The slot the core gave the peer, while it is open.
    pub(crate) fn slot(&self, peer: PeerId) -> Option<u32> {
        match self.peers[peer].state {
            State::Open(index) => Some(index),
            _ => None,
        }
    }

    /// Moves the clock on.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn read(&mut self, core: &mut Loop<PeerId>, index: u32, id: PeerId) {
        while !self.peers[id].inbound.is_empty() {
            let spill = match core.reading(index, &mut self.scratch) {
                Reading::Go { spill, socket } if *socket == id => spill,
                Reading::Go { .. } => panic!("slot {index} holds another peer's socket"),
                Reading::Later | Reading::Stop => return,
            };
            let peer = &mut self.peers[id];
            let n = peer.inbound.len().min(self.scratch.len() - spill);
            self.scratch[spill..spill + n].copy_from_slice(&peer.inbound[..n]);
            peer.inbound.drain(..n);
            let addr = peer.addr;
            core.on_bytes(index, &mut self.scratch[..spill + n], &|_| addr);
            if self.peers[id].state != State::Open(index) {
                return;
            }
        }
        if self.peers[id].hung_up {
            core.remove(index, self);
        }
    }
}

impl Backend for Memory {
    type Socket = PeerId;

    fn now(&self) -> Instant {
        self.now
    }

    fn poll(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(()) // Time moves only when the test says so.
    }

    fn dispatch(&mut self, core: &mut Loop<PeerId>) {
        for id in 0..self.peers.len() {
            if self.peers[id].state != State::Connecting {
                continue;
            }
            // `attach` marks it open; refused, it stays closed.
            self.peers[id].state = State::Closed;
            if self.accepting {
                core.open(self, self.peers[id].addr, id);
            }
        }
        for index in 0..self.by_slot.len() as u32 {
            if let Some(id) = self.by_slot[index as usize] {
                self.read(core, index, id);
            }
        }
    }

    fn retry(&mut self, _core: &mut Loop<PeerId>, _workers_caught_up: bool) {
        // Nothing deferred: `dispatch` offers every pending byte on every turn.
    }

    fn attach(&mut self, index: u32, _generation: u32, id: &mut PeerId) -> io::Result<()> {
        let at = index as usize;
        if self.by_slot.len() <= at {
            self.by_slot.resize(at + 1, None);
        }
        self.by_slot[at] = Some(*id);
        self.peers[*id].state = State::Open(index);
        Ok(())
    }

    fn write(&mut self, _index: u32, _generation: u32, id: &PeerId, queue: &mut Outbound) -> Write {
        let mut chunks = [IoSlice::new(&[]); MAX_IOVECS];
        let n = queue.io_slices(&mut chunks);
        let peer = &mut self.peers[*id];
        let before = peer.written.len();
        for chunk in &chunks[..n] {
            peer.written.extend_from_slice(chunk);
        }
        Write::Wrote(peer.written.len() - before)
    }

    fn shutdown_write(&mut self, id: &PeerId) {
        self.peers[*id].fin = true;
    }

    fn close(&mut self, index: u32, _generation: u32, id: PeerId) {
        self.peers[id].state = State::Closed;
        if let Some(slot) = self.by_slot.get_mut(index as usize) {
            *slot = None;
        }
    }

    fn adopt(&mut self, _socket: std::net::TcpStream) -> io::Result<PeerId> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the memory backend holds no sockets"))
    }

    fn resume_reading(&mut self, _index: u32, _generation: u32) {
        // `dispatch` offers every pending byte on every turn.
    }

    fn stop_accepting(&mut self) {
        self.accepting = false;
    }
}
