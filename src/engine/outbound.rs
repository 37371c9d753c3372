//! The per-connection outbound queue: what the kernel has not taken yet.
//!
//! Frames written during a loop turn are appended here and flushed once at the end of the turn
//! with one `writev`, so a burst of small messages costs one system call per connection, not one
//! per message. Consecutive owned frames are coalesced into one buffer; a broadcast frame is an
//! `Arc` shared with every other subscriber, never copied. An empty queue is dropped, so an idle
//! connection owns nothing here.
//!
//! A published frame also times its own fan-out (the publish-to-last-write histogram,
//! [`Stats::publish_duration`](super::Stats::publish_duration)): the publish reads the clock once
//! and stamps the shared frame, and whoever drops the frame's last reference (the last queue
//! done with it: its write taken by the kernel, on io_uring the send completed, or its
//! connection gone) reads the clock once more and counts it. So a publish costs two clock reads
//! and one histogram count whatever its fan-out, and a delivery costs nothing more than the
//! `Arc` clone it already made. These clock reads sit outside the protocol core, which only
//! sees the loop's `now`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::stats::{AtomicHistogram, LoopStats};
use crate::proto::deflate::RSV1;
use crate::proto::frame::{encode_header, FrameHeader, MAX_HEADER_LEN};
use crate::proto::{Message, OpCode};

/// A message framed once, shareable by any number of connections on any loop.
///
/// With permessage-deflate, the first loop that sends it to a connection sharing the loop's
/// compressor compresses it once, and every such connection on every loop gets that
/// compressed frame; the others get the uncompressed one.
///
/// Published ([`Handle::publish_prepared`](super::Handle::publish_prepared) and the like), it
/// is timed from its first publish until its last clone is dropped, which is when the last
/// connection it was queued to is done with it: drop yours once it is published, and publish
/// a new one per message, or the time includes how long you kept it.
#[derive(Clone, Debug)]
pub struct Prepared {
    shared: Arc<Framed>,
}

/// What the clones of a [`Prepared`] share: both forms of the frame and the publish stamp.
#[derive(Debug)]
pub(crate) struct Framed {
    plain: Box<[u8]>,
    deflated: OnceLock<Option<Box<[u8]>>>,
    /// When it was first published, and the histogram its fan-out time goes to.
    published: OnceLock<(Instant, Arc<AtomicHistogram>)>,
    /// Whether a publish queued it to a connection (a publish that reached nobody is not timed).
    delivered: AtomicBool,
}

impl Drop for Framed {
    fn drop(&mut self) {
        if let Some((at, histogram)) = self.published.get() {
            if self.delivered.load(Ordering::Relaxed) {
                histogram.observe(at.elapsed());
            }
        }
    }
}

/// Which form of a shared frame a queue holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    Plain,
    Deflated,
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
        let shared = Framed {
            plain: frame.into_boxed_slice(),
            deflated: OnceLock::new(),
            published: OnceLock::new(),
            delivered: AtomicBool::new(false),
        };
        Self { shared: Arc::new(shared) }
    }

    /// The size of the uncompressed frame on the wire.
    pub fn wire_len(&self) -> usize {
        self.shared.plain.len()
    }

    /// Makes the frame time its fan-out into `histogram`, from now (its first publish only).
    pub(crate) fn stamp(&self, histogram: &Arc<AtomicHistogram>) {
        if self.shared.published.get().is_none() {
            let _ = self.shared.published.set((Instant::now(), histogram.clone()));
        }
    }

    /// A publish queued it to at least one connection: its fan-out is timed.
    pub(crate) fn delivered(&self) {
        self.shared.delivered.store(true, Ordering::Relaxed);
    }

    /// The frame to queue: the compressed one when `compress` (run on first use) makes one
    /// and `deflate` asks for it, else the plain one.
    pub(crate) fn chunk(&self, deflate: bool, compress: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Chunk {
        let form = if deflate
            && (self.shared.deflated.get_or_init(|| compress(&self.shared.plain).map(Vec::into_boxed_slice)))
                .is_some()
        {
            Form::Deflated
        } else {
            Form::Plain
        };
        Chunk::Shared(self.shared.clone(), form)
    }
}

impl Framed {
    fn bytes(&self, form: Form) -> &[u8] {
        match form {
            Form::Plain => &self.plain,
            // A `Deflated` chunk is only made once the compressed form exists ([`Prepared::chunk`]);
            // it is never unset again, so the fallback is never taken.
            Form::Deflated => self.deflated.get().and_then(Option::as_deref).unwrap_or(&self.plain),
        }
    }
}

/// How many chunks one `writev` takes at most.
pub(crate) const MAX_IOVECS: usize = 64;

/// One piece of a queue: frames coalesced into an owned buffer, or a broadcast frame shared with
/// other connections.
pub(crate) enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<Framed>, Form),
}

impl Chunk {
    /// The chunk's bytes; their address does not change when the chunk is moved (both kinds
    /// live on the heap), which is what lets a completion backend send from them in flight.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(frame, form) => frame.bytes(*form),
        }
    }
}

/// An owned buffer written out is kept for the next frames when it is at most this large, and
/// the chunk ring when it has at most [`KEEP_CHUNKS`] slots: a connection echoing or answering
/// then frames into memory it already has instead of two allocations and frees per message
/// (measured: 3.7 % of the server's CPU at 512 B echoes). What is kept goes with the queue's
/// [`Cold`](super::buffers::Cold) box back to the loop's bounded pool once it drained, so an idle
/// connection still owns none of it; a queue that stays with its connection calls
/// [`Outbound::trim`].
const KEEP_OWNED: usize = 16 * 1024;
const KEEP_CHUNKS: usize = 8;

/// How large an owned buffer a completion backend's send op keeps for the next queue it takes
/// from ([`Outbound::hand_off`]). Larger than [`KEEP_OWNED`] because such a send holds its
/// buffer until the kernel completes it: with 40 large echoes in flight, freeing each reply and
/// allocating the next one made the allocator trim its heap and fault it back in (12 % of the
/// server in page faults at 64 KiB, measured), where a buffer kept by the op is framed into
/// again. Kept large buffers are bounded by the loop's pools (send ops and [`Cold`] boxes) and
/// shed once the loop is quiet ([`Outbound::shed_large_spare`]).
///
/// [`Cold`]: super::buffers::Cold
pub(crate) const KEEP_IN_FLIGHT: usize = 256 * 1024;

/// Keeps a written (or dropped) chunk's buffer in `spare` when it is owned, at most `limit`
/// bytes ([`KEEP_OWNED`] for a queue, [`KEEP_IN_FLIGHT`] for a send op) and `spare` holds none;
/// anything else is dropped. The one rule for what a queue (or a completion backend's send,
/// [`Outbound::hand_off`]) keeps for reuse.
pub(crate) fn keep_spare(spare: &mut Vec<u8>, chunk: Chunk, limit: usize) {
    if let Chunk::Owned(mut buffer) = chunk {
        if spare.capacity() == 0 && buffer.capacity() <= limit {
            buffer.clear();
            *spare = buffer;
        }
    }
}

/// Drops `spare` when it is larger than a queue keeps ([`KEEP_OWNED`]): what a quiet loop does
/// with the large buffers its send ops and pooled boxes held through a burst.
pub(crate) fn shed_large(spare: &mut Vec<u8>) {
    if spare.capacity() > KEEP_OWNED {
        *spare = Vec::new();
    }
}

/// Queued bytes for one connection, in order.
#[derive(Default)]
pub(crate) struct Outbound {
    chunks: VecDeque<Chunk>,
    /// An empty owned buffer kept from a written chunk, the next owned tail (see [`KEEP_OWNED`]).
    spare: Vec<u8>,
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
            LoopStats::count(&stats.outbound_queued, self.queued as u64);
            self.loop_stats = Some(stats.clone());
        }
    }

    fn untrack(&self, len: usize) {
        if let Some(stats) = &self.loop_stats {
            LoopStats::uncount(&stats.outbound_queued, len as u64);
        }
    }

    /// Empties the queue, keeping the small buffers [`KEEP_OWNED`] allows (for a pooled box);
    /// the gauge link stays.
    pub(crate) fn reset(&mut self) {
        self.untrack(self.queued);
        while let Some(chunk) = self.chunks.pop_front() {
            self.keep(chunk);
        }
        self.front_written = 0;
        self.queued = 0;
        self.handed = 0;
        self.trim_ring();
    }

    /// Gives back the memory an empty queue kept for reuse: for a queue that stays with an idle
    /// connection (the TLS ciphertext queue), where keeping it would cost every connection.
    pub(crate) fn trim(&mut self) {
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
            self.spare = Vec::new();
        }
    }

    fn keep(&mut self, chunk: Chunk) {
        keep_spare(&mut self.spare, chunk, KEEP_OWNED);
    }

    /// Gives back a spare buffer larger than a queue keeps, which a completion backend's send op
    /// handed over ([`KEEP_IN_FLIGHT`]): for a pooled box of a loop gone quiet.
    pub(crate) fn shed_large_spare(&mut self) {
        shed_large(&mut self.spare);
    }

    /// An empty ring that grew past [`KEEP_CHUNKS`] is given back.
    fn trim_ring(&mut self) {
        if self.chunks.is_empty() && self.chunks.capacity() > KEEP_CHUNKS {
            self.chunks = VecDeque::new();
        }
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

    /// A buffer to append `len` bytes of owned frames to: the back chunk when it is owned and
    /// takes them without growing past [`KEEP_OWNED`] (or has the room already), so that small
    /// frames coalesce into one write; a new chunk otherwise, so that a large frame queued
    /// behind another is never copied by a growing buffer (measured: echoes of 64 KiB with
    /// sends in flight spent 8 % of the server in `realloc` copies and their page faults). The
    /// caller appends; call [`Outbound::commit`] after.
    pub(crate) fn owned_tail(&mut self, len: usize) -> &mut Vec<u8> {
        let coalesce = match self.chunks.back() {
            Some(Chunk::Owned(v)) => v.capacity() - v.len() >= len || v.len() + len <= KEEP_OWNED,
            _ => false,
        };
        if !coalesce {
            let mut buffer = std::mem::take(&mut self.spare);
            buffer.reserve_exact(len);
            self.chunks.push_back(Chunk::Owned(buffer));
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
            LoopStats::count(&stats.outbound_queued, len as u64);
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
        let tail = self.owned_tail(header_len + payload.len());
        tail.reserve(header_len + payload.len());
        tail.extend_from_slice(&header[..header_len]);
        tail.extend_from_slice(payload);
        self.commit(header_len + payload.len());
        header_len + payload.len()
    }

    /// Queues a shared frame (a [`Chunk::Shared`] from [`Prepared::chunk`]).
    pub(crate) fn push_shared(&mut self, chunk: Chunk) {
        self.commit(chunk.bytes().len());
        self.chunks.push_back(chunk);
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
    ///
    /// `spare` is a buffer the backend kept from an earlier send's chunks ([`keep_spare`]): the
    /// queue takes it for its next owned frames when it has none, so sending on a completion
    /// backend allocates no more per message than writing does on a readiness one.
    pub(crate) fn hand_off(&mut self, into: &mut Vec<Chunk>, spare: &mut Vec<u8>) -> (usize, usize) {
        if self.spare.capacity() == 0 {
            std::mem::swap(&mut self.spare, spare);
        }
        let skip = std::mem::take(&mut self.front_written);
        let mut bytes = 0;
        while into.len() < MAX_IOVECS {
            let Some(chunk) = self.chunks.pop_front() else { break };
            bytes += chunk.bytes().len();
            into.push(chunk);
        }
        let bytes = bytes - skip;
        self.handed += bytes;
        self.trim_ring();
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
                self.pop_front();
            } else {
                self.front_written += written;
                written = 0;
            }
        }
        // Drop empty chunks left by empty frames so that the queue can be released.
        while matches!(self.chunks.front(), Some(c) if c.bytes().len() == self.front_written) {
            self.pop_front();
        }
        self.trim_ring();
    }

    fn pop_front(&mut self) {
        if let Some(chunk) = self.chunks.pop_front() {
            self.keep(chunk);
        }
        self.front_written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared chunk of exactly `bytes` (no frame header, unlike [`Prepared`]).
    fn shared(bytes: &[u8]) -> Chunk {
        let framed = Framed {
            plain: bytes.into(),
            deflated: OnceLock::new(),
            published: OnceLock::new(),
            delivered: AtomicBool::new(false),
        };
        Chunk::Shared(Arc::new(framed), Form::Plain)
    }

    #[test]
    fn a_published_frame_is_timed_once_when_its_last_queue_lets_go() {
        let histogram = Arc::new(AtomicHistogram::default());
        let count = || histogram.snapshot().count();
        let frame = Prepared::new(&Message::Text("hi".into()));
        frame.stamp(&histogram);
        frame.stamp(&histogram); // a second publish of the same frame keeps the first stamp
        frame.delivered();
        let (mut a, mut b) = (Outbound::default(), Outbound::default());
        a.push_shared(frame.chunk(false, |_| None));
        b.push_shared(frame.chunk(true, |plain| Some(plain.to_vec())));
        assert_eq!(gather(&b), [0x81, 2, b'h', b'i'], "the compressed form, as compress made it");
        drop(frame);
        a.advance(4);
        assert_eq!(count(), 0, "b still holds it");
        // A queue dropped unwritten (its connection gone) lets go too.
        drop(b);
        assert_eq!(count(), 1);
        // Published to nobody: not timed.
        let nobody = Prepared::new(&Message::Text("hi".into()));
        nobody.stamp(&histogram);
        drop(nobody);
        assert_eq!(count(), 1);
    }

    fn gather(out: &Outbound) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = out.io_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn coalesces_owned_and_keeps_order_with_shared() {
        let mut out = Outbound::default();
        out.owned_tail(0).extend_from_slice(b"ab");
        out.commit(2);
        out.owned_tail(0).extend_from_slice(b"cd");
        out.commit(2);
        out.push_shared(shared(b"SHARED"));
        out.owned_tail(0).extend_from_slice(b"ef");
        out.commit(2);
        assert_eq!(out.chunks.len(), 3);
        assert_eq!(gather(&out), b"abcdSHAREDef");
        out.advance(3);
        assert_eq!(gather(&out), b"dSHAREDef");
        // Appending while the front is half written must not disturb it.
        out.advance(7);
        assert_eq!(gather(&out), b"ef");
        out.owned_tail(0).extend_from_slice(b"g");
        out.commit(1);
        assert_eq!(gather(&out), b"efg");
        out.advance(3);
        assert!(out.is_empty());
        assert_eq!(out.queued(), 0);
    }

    #[test]
    fn a_written_small_buffer_is_reused_and_trim_gives_everything_back() {
        let mut out = Outbound::default();
        out.push_frame(OpCode::Text, &[b'a'; 100]);
        let first = out.owned_tail(0).as_ptr();
        out.advance(102);
        assert!(out.is_empty());
        // The next frame goes into the same memory: no allocation per echoed message.
        out.push_frame(OpCode::Text, b"next");
        assert_eq!(out.owned_tail(0).as_ptr(), first);
        assert_eq!(gather(&out), [0x81, 4, b'n', b'e', b'x', b't']);
        // A reset (the pool taking the box back) keeps it as well.
        out.reset();
        out.push_frame(OpCode::Text, b"x");
        assert_eq!(out.owned_tail(0).as_ptr(), first);
        out.advance(3);
        // A buffer that grew past the keep size is not kept.
        out.spare = Vec::new();
        out.push_frame(OpCode::Binary, &vec![0; KEEP_OWNED + 1]);
        out.advance(out.queued());
        assert_eq!(out.spare.capacity(), 0);
        // Trim gives back the ring and the spare: a queue that stays with an idle connection.
        out.push_frame(OpCode::Text, b"y");
        out.advance(3);
        assert!(out.spare.capacity() > 0 && out.chunks.capacity() > 0);
        out.trim();
        assert_eq!((out.spare.capacity(), out.chunks.capacity()), (0, 0));
    }

    #[test]
    fn a_large_frame_behind_another_gets_its_own_chunk_and_small_ones_coalesce() {
        let mut out = Outbound::default();
        out.push_frame(OpCode::Binary, &vec![1; KEEP_OWNED]);
        let first = out.owned_tail(0).as_ptr();
        out.push_frame(OpCode::Binary, &vec![2; KEEP_OWNED]);
        // The first buffer was not grown (and so moved and copied) to take the second.
        assert_eq!(out.chunks.len(), 2);
        assert_eq!(out.chunks.front().map(|c| c.bytes().as_ptr()), Some(first));
        out.push_frame(OpCode::Text, b"a");
        out.push_frame(OpCode::Text, b"b");
        assert_eq!(out.chunks.len(), 3, "two small frames share one new chunk");
        let bytes = gather(&out);
        let frame = KEEP_OWNED + 4;
        assert_eq!(bytes.len(), 2 * frame + 6);
        assert!(bytes[4..frame].iter().all(|&b| b == 1));
        assert!(bytes[frame + 4..2 * frame].iter().all(|&b| b == 2));
        assert_eq!(&bytes[2 * frame..], [0x81, 1, b'a', 0x81, 1, b'b']);
    }

    #[test]
    fn a_send_op_keeps_a_large_buffer_a_queue_does_not_and_shedding_drops_it() {
        let large = || Chunk::Owned(Vec::with_capacity(KEEP_OWNED * 4));
        let mut queue_spare = Vec::new();
        keep_spare(&mut queue_spare, large(), KEEP_OWNED);
        assert_eq!(queue_spare.capacity(), 0);
        let mut op_spare = Vec::new();
        keep_spare(&mut op_spare, large(), KEEP_IN_FLIGHT);
        assert!(op_spare.capacity() >= KEEP_OWNED * 4);
        keep_spare(&mut op_spare, Chunk::Owned(Vec::with_capacity(KEEP_IN_FLIGHT + 1)), KEEP_IN_FLIGHT);
        assert!(op_spare.capacity() < KEEP_IN_FLIGHT, "one spare, and never past the bound");
        let mut out = Outbound::default();
        let mut empty = Vec::new();
        out.spare = op_spare;
        out.hand_off(&mut Vec::new(), &mut empty);
        out.shed_large_spare();
        assert_eq!(out.spare.capacity(), 0);
        let mut small = Vec::with_capacity(100);
        shed_large(&mut small);
        assert_eq!(small.capacity(), 100);
    }

    #[test]
    fn the_loop_gauge_follows_queued_written_and_dropped_bytes() {
        let stats = Arc::new(LoopStats::default());
        let gauge = || stats.outbound_queued.load(Ordering::Relaxed);
        let mut a = Outbound::default();
        a.owned_tail(0).extend_from_slice(b"ab");
        a.commit(2);
        // Bytes queued before the link are counted when it is made, and only once.
        a.track(&stats);
        a.track(&stats);
        assert_eq!(gauge(), 2);
        a.push_frame(OpCode::Text, b"hello");
        a.push_shared(shared(b"SHARED"));
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
