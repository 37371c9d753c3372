//! The per-connection outbound queue: what the kernel has not taken yet.
//!
//! Frames written during a loop turn are appended here and flushed once at the end of the turn
//! with one `writev`, so a burst of small messages costs one system call per connection, not one
//! per message. Consecutive owned frames are coalesced into one buffer; a broadcast frame is an
//! `Arc` shared with every other subscriber, never copied. An empty queue is dropped, so an idle
//! connection owns nothing here.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use super::stats::LoopStats;
use crate::proto::deflate::RSV1;
use crate::proto::frame::{encode_header, FrameHeader, MAX_HEADER_LEN};
use crate::proto::{Message, OpCode};

/// A message framed once, shareable by any number of connections on any loop.
///
/// With permessage-deflate, the first loop that sends it to a connection sharing the loop's
/// compressor compresses it once, and every such connection on every loop gets that
/// compressed frame; the others get the uncompressed one.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub(crate) frame: Arc<[u8]>,
    deflated: Arc<OnceLock<Option<Arc<[u8]>>>>,
}

impl Prepared {
    /// Frames `message` for sending from a server.
    pub fn new(message: &Message) -> Self {
        Self::from_parts(message.kind().opcode(), message.as_bytes())
    }

    /// Frames `payload` as one final frame of `opcode` (a broker hands over decoded parts
    /// without building a [`Message`] first).
    pub fn from_parts(opcode: OpCode, payload: &[u8]) -> Self {
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = encode_header(&mut header, true, opcode, None, payload.len() as u64);
        let mut frame = Vec::with_capacity(header_len + payload.len());
        frame.extend_from_slice(&header[..header_len]);
        frame.extend_from_slice(payload);
        Self { frame: Arc::from(frame), deflated: Arc::default() }
    }

    /// The size of the uncompressed frame on the wire.
    pub fn wire_len(&self) -> usize {
        self.frame.len()
    }

    /// The compressed frame, made by `compress` on first use (`None`: it goes uncompressed).
    pub(crate) fn deflated(&self, compress: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Option<&Arc<[u8]>> {
        self.deflated.get_or_init(|| compress(&self.frame).map(Arc::from)).as_ref()
    }
}

/// How many chunks one `writev` takes at most.
pub(crate) const MAX_IOVECS: usize = 64;

/// One piece of a queue: frames coalesced into an owned buffer, or a broadcast frame shared with
/// other connections.
pub(crate) enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    /// The chunk's bytes; their address does not change when the chunk is moved (both kinds
    /// live on the heap), which is what lets a completion backend send from them in flight.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// Queued bytes for one connection, in order.
#[derive(Default)]
pub(crate) struct Outbound {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
    /// Of `queued`, the front bytes a completion backend holds for a send in flight
    /// ([`Outbound::hand_off`]): no longer in `chunks`, still counted against the cap.
    handed: usize,
    /// The loop's counters, where `queued` is also summed over the loop's connections (the
    /// `outbound_queued` gauge): kept by one add or sub where bytes are queued or written, and
    /// by the drop of a queue still holding bytes, never by walking the connections.
    loop_stats: Option<Arc<LoopStats>>,
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.untrack(self.queued);
    }
}

impl Outbound {
    /// Counts this queue in the loop's `outbound_queued` gauge from now on (once).
    pub(crate) fn track(&mut self, stats: &Arc<LoopStats>) {
        if self.loop_stats.is_none() {
            stats.outbound_queued.fetch_add(self.queued as u64, Ordering::Relaxed);
            self.loop_stats = Some(stats.clone());
        }
    }

    fn untrack(&self, len: usize) {
        if let Some(stats) = &self.loop_stats {
            stats.outbound_queued.fetch_sub(len as u64, Ordering::Relaxed);
        }
    }

    /// Empties the queue, giving its memory back; the gauge link stays.
    pub(crate) fn reset(&mut self) {
        self.untrack(self.queued);
        self.chunks = VecDeque::new();
        self.front_written = 0;
        self.queued = 0;
        self.handed = 0;
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// The outbound cap, the one place it is applied: `len` more bytes fit when the total stays
    /// within `cap`, and anything fits an empty queue (a single message larger than the cap is
    /// still sent).
    pub(crate) fn fits(&self, len: usize, cap: usize) -> bool {
        self.queued == 0 || self.queued + len <= cap
    }

    /// A buffer to append an owned frame to: the back chunk when it is owned (so that frames
    /// coalesce), a new one otherwise. The caller appends; call [`Outbound::commit`] after.
    pub(crate) fn owned_tail(&mut self) -> &mut Vec<u8> {
        if !matches!(self.chunks.back(), Some(Chunk::Owned(_))) {
            self.chunks.push_back(Chunk::Owned(Vec::new()));
        }
        match self.chunks.back_mut() {
            Some(Chunk::Owned(v)) => v,
            _ => unreachable!("an owned chunk was just ensured at the back"),
        }
    }

    /// Records that `len` bytes were appended through [`Outbound::owned_tail`].
    pub(crate) fn commit(&mut self, len: usize) {
        self.queued += len;
        if let Some(stats) = &self.loop_stats {
            stats.outbound_queued.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Frames `payload` (server side: unmasked) onto the back of the queue; returns its wire size.
    pub(crate) fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) -> usize {
        self.push_data(opcode, false, payload)
    }

    /// [`Outbound::push_frame`] for a data message, `compressed` (permessage-deflate: RSV1 set)
    /// or not.
    pub(crate) fn push_data(&mut self, opcode: OpCode, compressed: bool, payload: &[u8]) -> usize {
        let rsv = if compressed { RSV1 } else { 0 };
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len =
            FrameHeader { fin: true, rsv, opcode, mask: None, payload_len: payload.len() as u64 }
                .encode(&mut header);
        let tail = self.owned_tail();
        tail.reserve(header_len + payload.len());
        tail.extend_from_slice(&header[..header_len]);
        tail.extend_from_slice(payload);
        self.commit(header_len + payload.len());
        header_len + payload.len()
    }

    /// Queues a shared frame.
    pub(crate) fn push_shared(&mut self, frame: Arc<[u8]>) {
        self.commit(frame.len());
        self.chunks.push_back(Chunk::Shared(frame));
    }

    /// Fills `slices` with the unwritten bytes, front first; returns how many were filled.
    pub(crate) fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
            let bytes = if i == 0 { &chunk.bytes()[self.front_written..] } else { chunk.bytes() };
            slices[n] = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// Bytes a completion backend holds in flight ([`Outbound::hand_off`]).
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))] // completion backends only
    pub(crate) fn handed(&self) -> usize {
        self.handed
    }

    /// Moves the front chunks (at most [`MAX_IOVECS`]) into `into` for a completion backend,
    /// which keeps them alive until the kernel is done with them: the queue may grow and be
    /// dropped meanwhile without touching memory a send reads. Returns the bytes handed over
    /// and how many of the first chunk's bytes were already written (to skip). They stay
    /// counted in [`Outbound::queued`] (and so against the cap) until [`Outbound::advance`]
    /// reports them written.
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))] // completion backends only
    pub(crate) fn hand_off(&mut self, into: &mut Vec<Chunk>) -> (usize, usize) {
        let skip = std::mem::take(&mut self.front_written);
        let mut bytes = 0;
        while into.len() < MAX_IOVECS {
            let Some(chunk) = self.chunks.pop_front() else { break };
            bytes += chunk.bytes().len();
            into.push(chunk);
        }
        let bytes = bytes - skip;
        self.handed += bytes;
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        (bytes, skip)
    }

    /// Drops `written` bytes from the front (first those handed to a backend).
    pub(crate) fn advance(&mut self, mut written: usize) {
        self.queued -= written;
        self.untrack(written);
        let from_handed = written.min(self.handed);
        self.handed -= from_handed;
        written -= from_handed;
        while written > 0 {
            let Some(front) = self.chunks.front() else { break };
            let left = front.bytes().len() - self.front_written;
            if written >= left {
                written -= left;
                self.chunks.pop_front();
                self.front_written = 0;
            } else {
                self.front_written += written;
                written = 0;
            }
        }
        // Drop empty chunks left by empty frames so that the queue can be released.
        while matches!(self.chunks.front(), Some(c) if c.bytes().len() == self.front_written) {
            self.chunks.pop_front();
            self.front_written = 0;
        }
        if self.chunks.is_empty() {
            // Give the ring's memory back: an idle connection keeps nothing.
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(out: &Outbound) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = out.io_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn coalesces_owned_and_keeps_order_with_shared() {
        let mut out = Outbound::default();
        out.owned_tail().extend_from_slice(b"ab");
        out.commit(2);
        out.owned_tail().extend_from_slice(b"cd");
        out.commit(2);
        out.push_shared(Arc::from(&b"SHARED"[..]));
        out.owned_tail().extend_from_slice(b"ef");
        out.commit(2);
        assert_eq!(out.chunks.len(), 3);
        assert_eq!(gather(&out), b"abcdSHAREDef");
        out.advance(3);
        assert_eq!(gather(&out), b"dSHAREDef");
        // Appending while the front is half written must not disturb it.
        out.advance(7);
        assert_eq!(gather(&out), b"ef");
        out.owned_tail().extend_from_slice(b"g");
        out.commit(1);
        assert_eq!(gather(&out), b"efg");
        out.advance(3);
        assert!(out.is_empty());
        assert_eq!(out.queued(), 0);
    }

    #[test]
    fn the_loop_gauge_follows_queued_written_and_dropped_bytes() {
        let stats = Arc::new(LoopStats::default());
        let gauge = || stats.outbound_queued.load(Ordering::Relaxed);
        let mut a = Outbound::default();
        a.owned_tail().extend_from_slice(b"ab");
        a.commit(2);
        // Bytes queued before the link are counted when it is made, and only once.
        a.track(&stats);
        a.track(&stats);
        assert_eq!(gauge(), 2);
        a.push_frame(OpCode::Text, b"hello");
        a.push_shared(Arc::from(&b"SHARED"[..]));
        assert_eq!(gauge(), 2 + 7 + 6);
        a.advance(4);
        assert_eq!(gauge(), 11);
        let mut b = Outbound::default();
        b.track(&stats);
        b.push_frame(OpCode::Binary, &[0; 200]);
        assert_eq!(gauge(), 11 + 204);
        // A queue dropped with bytes in it (its connection gone) takes them off.
        drop(a);
        assert_eq!(gauge(), 204);
        b.reset();
        assert_eq!((gauge(), b.queued()), (0, 0));
        // The link survives the reset (the pool reuses the box).
        b.push_frame(OpCode::Text, b"x");
        assert_eq!(gauge(), 3);
    }
}
