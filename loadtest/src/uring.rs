//! The client loop's io_uring backend (`--backend io_uring`): a completion design, one ring per
//! [`Driver`](crate::driver::Driver), created and used on its thread (`SINGLE_ISSUER` +
//! `DEFER_TASKRUN`: completions are reaped only inside our own `io_uring_enter`, one per turn,
//! which also submits the turn's sends and waits with the turn's timeout).
//!
//! - **Connect**: the connect itself is the same non-blocking `connect(2)` as on epoll; a
//!   one-shot `POLL_ADD` (`POLLOUT`) says when it finished.
//! - **Receive**: then one multishot `RECV` per connection, into buffers the kernel picks from a
//!   provided-buffer ring ([`Bufs`]), so an idle connection holds no buffer and a busy one costs
//!   no `read(2)`. A buffer handed to the driver goes back into the ring at the next [`Ring::wait`].
//! - **Send**: one `SEND` in flight per connection over bytes the connection handed over (its
//!   whole queue), which the ring owns until the completion, so a connection dropped meanwhile
//!   cannot pull them from under the kernel; a short send is sent on from where it stopped.
//! - **Close**: dropping a connection cancels what it has armed (the kernel holds the socket
//!   while an operation is pending, so the FIN would otherwise wait).
//!
//! `unsafe` is confined to this module: pushing submission entries (whose buffers must outlive
//! the operation) and the provided-buffer memory shared with the kernel. Each use says why it
//! holds.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use mio::net::TcpStream;
use nix::libc;

/// Submission queue entries; a turn with more to submit submits in batches.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries (the kernel keeps any overflow for the next enter).
const CQ_ENTRIES: u32 = 16 * 1024;
/// Receive buffers (a power of two) and their size: 16 MiB of address space, of which only the
/// buffers in use are touched (see [`Bufs`]).
const BUF_COUNT: u16 = 4096;
const BUF_SIZE: u32 = 4096;
/// Buffers kept in the kernel's ring at first; doubled whenever a receive finds none.
const BUF_TARGET: usize = 64;
/// The buffer group of the receive buffers (one group per ring).
const BUF_GROUP: u16 = 0;
/// No SIGPIPE for a server that went; MSG_WAITALL: the kernel sends on after a short send
/// itself rather than completing early.
const SEND_FLAGS: i32 = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
/// Send buffers kept for reuse at most.
const POOL: usize = 1024;

// What a completion is about: the top 4 bits of its `user_data`.
const OP_CONNECT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
/// Cancellations: their completions say nothing.
const OP_IGNORE: u64 = 4;
/// The generation bits a `user_data` carries: a completion of a slot's predecessor 2^28
/// generations back would be taken for current, which cannot happen in practice.
const GEN_MASK: u32 = (1 << 28) - 1;

fn user_data(op: u64, key: u32, generation: u32) -> u64 {
    (op << 60) | (u64::from(generation & GEN_MASK) << 32) | u64::from(key)
}

fn decode(user_data: u64) -> (u64, u32, u32) {
    (user_data >> 60, user_data as u32, ((user_data >> 32) as u32) & GEN_MASK)
}

/// What happened to a connection, as [`Ring::wait`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// The connect finished (or failed: the socket says which).
    Connected,
    /// `len` bytes arrived in buffer `bid`, readable with [`Ring::data`] until the next wait.
    Received { bid: u16, len: u32 },
    /// The server's FIN.
    Eof,
    /// A receive or send failed with this errno.
    Failed(i32),
    /// Everything handed to [`Ring::send`] went out.
    Sent,
}

/// Why io_uring cannot run here, or `Ok`: the engine's own probe (probed once per process).
pub(crate) fn probe() -> Result<(), String> {
    throng::uring::probe()
}

/// The receive buffers, lent to the kernel through a provided-buffer ring.
///
/// The kernel takes buffers in the order they were added. So that a busy loop keeps touching
/// the same few pages (and cache lines), only `target` buffers sit in the ring at a time,
/// refilled from a stack of free ones, the most recently used on top; a receive that found the
/// ring empty (`ENOBUFS`) doubles `target`, up to all of them.
struct Bufs {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    memory: NonNull<u8>,
    memory_layout: Layout,
    size: u32,
    count: u16,
    /// Our tail of the ring (the kernel's head follows it).
    tail: u16,
    /// Buffers neither in the ring nor lent: the last given back on top.
    free: Vec<u16>,
    /// Buffers in the ring and not yet used by a completion.
    in_ring: usize,
    target: usize,
}

impl Bufs {
    fn new(count: u16, size: u32) -> io::Result<Self> {
        let count = count.clamp(2, 1 << 15).next_power_of_two();
        let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "provided buffers too large");
        // The ring must be page aligned (io_uring_register_buf_ring(3)).
        let entries_layout =
            Layout::from_size_align(usize::from(count) * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(invalid)?;
        let memory_layout =
            Layout::from_size_align(usize::from(count) * size.max(1) as usize, 4096).map_err(invalid)?;
        // SAFETY: both layouts have a non-zero size (count >= 2, size >= 1).
        let entries = NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) }.cast::<BufRingEntry>());
        // SAFETY: as above.
        let memory = NonNull::new(unsafe { alloc::alloc(memory_layout) });
        let (entries, memory) = match (entries, memory) {
            (Some(entries), Some(memory)) => (entries, memory),
            (entries, memory) => {
                // SAFETY: whichever allocation succeeded was made above with this layout.
                unsafe {
                    if let Some(entries) = entries {
                        alloc::dealloc(entries.as_ptr().cast(), entries_layout);
                    }
                    if let Some(memory) = memory {
                        alloc::dealloc(memory.as_ptr(), memory_layout);
                    }
                }
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "provided buffers"));
            }
        };
        Ok(Self {
            entries,
            entries_layout,
            memory,
            memory_layout,
            size: size.max(1),
            count,
            tail: 0,
            free: (0..count).rev().collect(),
            in_ring: 0,
            target: usize::from(count).min(BUF_TARGET),
        })
    }

    fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the ring memory is ours, page aligned and `count` entries long, and stays
        // allocated until this `Bufs` drops, which `Ring` orders after the ring.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                BUF_GROUP,
                0,
            )
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed to us.
    fn data(&self, bid: u16, len: u32) -> &[u8] {
        let len = len.min(self.size) as usize;
        let at = usize::from(bid % self.count) * self.size as usize;
        // SAFETY: buffer `bid` lies inside the allocation; from its completion until `give_back`
        // and the next `refill` the kernel does not touch it (it is out of the ring), and `Ring`
        // hands out a slice of it only in that window (see `Ring::data`).
        unsafe { std::slice::from_raw_parts(self.memory.as_ptr().add(at), len) }
    }

    /// Tops the ring up to `target` from the free stack; returns whether it holds any buffer.
    fn refill(&mut self) -> bool {
        let mask = self.count - 1;
        let mut added = false;
        while self.in_ring < self.target {
            let Some(bid) = self.free.pop() else { break };
            let at = usize::from(self.tail & mask);
            // SAFETY: `at` < count; entries past the kernel's head are ours to write until the
            // tail is published below.
            let entry = unsafe { &mut *self.entries.as_ptr().add(at) };
            let offset = usize::from(bid) * self.size as usize;
            // SAFETY: the offset stays inside the allocation (bid < count).
            entry.set_addr(unsafe { self.memory.as_ptr().add(offset) } as u64);
            entry.set_len(self.size);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            self.in_ring += 1;
            added = true;
        }
        if added {
            // SAFETY: the tail field lives in the first entry's reserved bytes; the kernel reads
            // it, so it is published with release ordering after the entries.
            let tail = unsafe { &*BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
            tail.store(self.tail, Ordering::Release);
        }
        self.in_ring > 0
    }
}

impl Drop for Bufs {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring that used them is gone.
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.memory.as_ptr(), self.memory_layout);
        }
    }
}

/// A connection the ring has operations for.
struct Watch {
    generation: u32,
    fd: RawFd,
    /// A connect poll is armed.
    polling: bool,
    /// A multishot receive is armed.
    receiving: bool,
    /// The send in flight (its key in `sends`).
    sending: Option<usize>,
}

/// A send in flight: the ring owns its bytes until the completion.
struct SendOp {
    key: u32,
    generation: u32,
    bytes: Vec<u8>,
    /// Bytes of `bytes` already sent (after a short send).
    sent: usize,
    fd: RawFd,
}

/// One driver's ring, receive buffers and operations in flight.
pub(crate) struct Ring {
    // Declared first so that it drops first: nothing may use the buffers below after the ring.
    ring: IoUring,
    bufs: Bufs,
    /// Which `wait` this is: a buffer handed out by one is readable until the next.
    turn: u64,
    /// Buffers handed out by the last `wait`, back into the ring at the next.
    lent: Vec<u16>,
    /// By connection key (the driver's slab keys: dense).
    watches: Vec<Option<Watch>>,
    /// At most one per connection, kept after the connection went until the kernel is done
    /// with the bytes; the slab key is in the send's `user_data`.
    sends: slab::Slab<SendOp>,
    pool: Vec<Vec<u8>>,
    /// Connections whose multishot receive ended with more to come, to arm again.
    rearm: Vec<u32>,
    /// Connections whose receive ended for want of buffers: armed again once some are back.
    starved: Vec<u32>,
    /// The completions of a wait, reused.
    reaped: Vec<(u64, i32, u32)>,
}

impl Ring {
    /// A ring, on the thread that will use it (the ring is single-issuer).
    pub(crate) fn new() -> io::Result<Self> {
        let ring = throng::uring::build_ring(SQ_ENTRIES, CQ_ENTRIES)?;
        let mut bufs = Bufs::new(BUF_COUNT, BUF_SIZE)?;
        bufs.register(&ring)?;
        bufs.refill();
        Ok(Ring {
            ring,
            bufs,
            turn: 0,
            lent: Vec::new(),
            watches: Vec::new(),
            sends: slab::Slab::new(),
            pool: Vec::new(),
            rearm: Vec::new(),
            starved: Vec::new(),
            reaped: Vec::with_capacity(1024),
        })
    }

    fn watch_mut(&mut self, key: u32) -> Option<&mut Watch> {
        self.watches.get_mut(key as usize)?.as_mut()
    }

    /// Queues a submission, submitting what is queued first when the queue is full.
    ///
    /// # Safety
    /// Every buffer `entry` points at must stay valid and unmoved until its completion arrives
    /// (or the ring is gone).
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller vouches for the entry's buffers.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.kind() == io::ErrorKind::Interrupted => {
                }
                // The ring itself is broken: nothing submitted will complete, and the run's
                // connections time out and are counted as such.
                Err(_) => return,
            }
        }
    }

    /// Queues a cancellation of the operation with `target` as its `user_data`.
    fn cancel(&mut self, target: u64) {
        let entry = opcode::AsyncCancel::new(target).build().user_data(OP_IGNORE << 60);
        // SAFETY: a cancellation points at no memory.
        unsafe { self.push(&entry) };
    }

    /// Watches connection `key`, whose non-blocking connect is in progress, for its end
    /// (reported as [`Completion::Connected`]); call it again if the connect was not over yet.
    pub(crate) fn watch_connect(&mut self, key: usize, generation: u32, stream: &TcpStream) {
        let fd = stream.as_raw_fd();
        if self.watches.len() <= key {
            self.watches.resize_with(key + 1, || None);
        }
        // Nothing is sent before the connect is over: no send to carry over.
        self.watches[key] = Some(Watch { generation, fd, polling: true, receiving: false, sending: None });
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(user_data(OP_CONNECT, key as u32, generation));
        // SAFETY: a poll points at no memory.
        unsafe { self.push(&entry) };
    }

    /// Connection `key` is connected: receive on it from now on.
    pub(crate) fn start_receiving(&mut self, key: usize, stream: &TcpStream) -> io::Result<()> {
        // The ring waits on the socket itself: a non-blocking one would fail receives (and
        // sends) with EAGAIN instead.
        socket2::SockRef::from(stream).set_nonblocking(false)?;
        self.arm_recv(key as u32);
        Ok(())
    }

    fn arm_recv(&mut self, key: u32) {
        let Some(watch) = self.watch_mut(key) else { return };
        if watch.receiving {
            return;
        }
        watch.receiving = true;
        let entry = opcode::RecvMulti::new(Fd(watch.fd), BUF_GROUP).build().user_data(user_data(
            OP_RECV,
            key,
            watch.generation,
        ));
        // SAFETY: the buffers come from the registered ring, which outlives every operation.
        unsafe { self.push(&entry) };
    }

    /// An empty buffer for a connection's next bytes to queue (a used one when there is one).
    pub(crate) fn spare(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }

    /// Sends `bytes` on connection `key` (one send at a time per connection: the next waits
    /// for [`Completion::Sent`]). The ring keeps them until the kernel is done with them.
    pub(crate) fn send(&mut self, key: usize, generation: u32, stream: &TcpStream, bytes: Vec<u8>) {
        let fd = stream.as_raw_fd();
        let Some(watch) = self.watch_mut(key as u32).filter(|w| w.generation == generation) else { return };
        if watch.sending.is_some() {
            return; // One at a time (the driver sees to it): the bytes would go out of order.
        }
        let index = self.sends.insert(SendOp { key: key as u32, generation, bytes, sent: 0, fd });
        if let Some(watch) = self.watch_mut(key as u32) {
            watch.sending = Some(index);
        }
        self.submit_send(index);
    }

    fn submit_send(&mut self, index: usize) {
        let data = user_data(OP_SEND, index as u32, 0);
        let Some(op) = self.sends.get(index) else { return };
        let rest = &op.bytes[op.sent..];
        let entry = opcode::Send::new(Fd(op.fd), rest.as_ptr(), rest.len() as u32)
            .flags(SEND_FLAGS)
            .build()
            .user_data(data);
        // SAFETY: the bytes live in `sends` (a Vec's heap buffer does not move when the Vec
        // does, and it is not touched) until this send's completion removes them.
        unsafe { self.push(&entry) };
    }

    /// Connection `key` goes: cancels what it has armed. Its socket may be closed right after
    /// (the cancellations are submitted with the next wait; the kernel holds the socket open
    /// until then).
    pub(crate) fn forget(&mut self, key: usize) {
        let key = key as u32;
        let Some(watch) = self.watches.get_mut(key as usize).and_then(Option::take) else { return };
        if watch.polling {
            self.cancel(user_data(OP_CONNECT, key, watch.generation));
        }
        if watch.receiving {
            self.cancel(user_data(OP_RECV, key, watch.generation));
        }
        if let Some(index) = watch.sending {
            self.cancel(user_data(OP_SEND, index as u32, 0));
        }
    }

    /// The bytes of a [`Completion::Received`] from wait number `turn` ([`turn`](Self::turn)),
    /// or `None` once a later wait has given the buffer back to the kernel.
    pub(crate) fn data(&self, turn: u64, bid: u16, len: u32) -> Option<&[u8]> {
        (turn == self.turn).then(|| self.bufs.data(bid, len))
    }

    /// The number of the last wait.
    pub(crate) fn turn(&self) -> u64 {
        self.turn
    }

    /// Submits what is queued and waits up to `timeout` for completions; appends those of live
    /// connections to `out` as `(key, generation, what)`. Buffers the previous wait handed out
    /// go back to the kernel first.
    pub(crate) fn wait(
        &mut self,
        timeout: Duration,
        out: &mut Vec<(usize, u32, Completion)>,
    ) -> io::Result<()> {
        self.turn += 1;
        self.bufs.free.append(&mut self.lent);
        if self.bufs.refill() && !self.starved.is_empty() {
            let starved = std::mem::take(&mut self.starved);
            self.rearm.extend(starved);
        }
        for key in std::mem::take(&mut self.rearm) {
            self.arm_recv(key);
        }
        let ts = Timespec::from(timeout);
        match self.ring.submitter().submit_with_args(1, &SubmitArgs::new().timespec(&ts)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        let mut reaped = std::mem::take(&mut self.reaped);
        loop {
            reaped.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            if reaped.is_empty() {
                break;
            }
            for &(data, res, flags) in &reaped {
                self.complete(data, res, flags, out);
            }
            reaped.clear();
        }
        self.reaped = reaped;
        Ok(())
    }

    fn complete(&mut self, data: u64, res: i32, flags: u32, out: &mut Vec<(usize, u32, Completion)>) {
        let (op, key, generation) = decode(data);
        let live = |watches: &[Option<Watch>], key: u32, generation: u32| {
            let watch = watches.get(key as usize)?.as_ref()?;
            (watch.generation & GEN_MASK == generation & GEN_MASK).then_some(watch.generation)
        };
        match op {
            OP_CONNECT => {
                let Some(generation) = live(&self.watches, key, generation) else { return };
                if let Some(watch) = self.watch_mut(key) {
                    watch.polling = false;
                }
                out.push((key as usize, generation, Completion::Connected));
            }
            OP_RECV => {
                let bid = cqueue::buffer_select(flags);
                if bid.is_some() {
                    self.bufs.in_ring = self.bufs.in_ring.saturating_sub(1);
                }
                let Some(generation) = live(&self.watches, key, generation) else {
                    self.bufs.free.extend(bid);
                    return;
                };
                if !cqueue::more(flags) {
                    if let Some(watch) = self.watch_mut(key) {
                        watch.receiving = false;
                    }
                    if res == -libc::ENOBUFS {
                        self.bufs.target = (self.bufs.target * 2).min(usize::from(self.bufs.count));
                        self.starved.push(key);
                    } else if res > 0 || res == -libc::ECANCELED {
                        // The kernel ended it with data (or cancelled it on its own): go on.
                        self.rearm.push(key);
                    }
                }
                let what = match (res, bid) {
                    (n, Some(bid)) if n > 0 => {
                        self.lent.push(bid);
                        Completion::Received { bid, len: n as u32 }
                    }
                    (n, bid) if n == -libc::ENOBUFS || n == -libc::ECANCELED => {
                        self.bufs.free.extend(bid);
                        return;
                    }
                    (0, bid) => {
                        self.bufs.free.extend(bid);
                        Completion::Eof
                    }
                    (n, bid) => {
                        self.bufs.free.extend(bid);
                        Completion::Failed(-n)
                    }
                };
                out.push((key as usize, generation, what));
            }
            OP_SEND => {
                // For a send, `key` is its index in `sends`.
                let index = key as usize;
                let Some(op) = self.sends.get_mut(index) else { return };
                let (key, generation) = (op.key, op.generation);
                let live = live(&self.watches, key, generation).filter(|&g| g == generation);
                if res > 0 && op.sent + (res as usize) < op.bytes.len() && live.is_some() {
                    op.sent += res as usize;
                    self.submit_send(index);
                    return;
                }
                let mut op = self.sends.remove(index);
                if self.pool.len() < POOL {
                    op.bytes.clear();
                    self.pool.push(op.bytes);
                }
                let Some(watch) = live.and_then(|_| self.watch_mut(key)) else { return };
                watch.sending = None;
                let what = if res < 0 { Completion::Failed(-res) } else { Completion::Sent };
                out.push((key as usize, generation, what));
            }
            _ => {}
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Nothing may be in flight on memory this ring frees: cancel everything and wait.
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(Timespec::from(Duration::from_millis(500))), CancelBuilder::any());
    }
}
