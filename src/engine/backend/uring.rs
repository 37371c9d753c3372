//! The completion backend on io_uring: one ring per loop thread, created on it
//! (`SINGLE_ISSUER` + `DEFER_TASKRUN`, so completions are reaped only when the loop enters the
//! kernel: one `io_uring_enter` per turn submits the turn's sends and waits for the next
//! completions, with the core's timer as its timeout).
//!
//! - **Accept**: one multishot accept on the loop's listener.
//! - **Receive**: one multishot receive per connection, with buffers the kernel picks from the
//!   loop's provided-buffer ring ([`Bufs`]), so an idle connection holds no buffer. A buffer is
//!   handed to the core in place (copied behind the connection's leftover bytes only when it has
//!   some) and given back at once; when the core says wait ([`Reading::Later`], workers behind)
//!   or stop ([`Reading::Stop`], queue full: the receive is cancelled so the peer is pushed back
//!   by TCP, as on epoll), the buffer is held, in arrival order, until it can go on.
//! - **Send**: one `sendmsg` in flight per connection, over chunks the queue handed over
//!   ([`Outbound::hand_off`]), which this backend keeps alive until the completion (shared
//!   broadcast frames included); a short send is sent on from where it stopped.
//! - **Wake-up**: an eventfd the ring reads; **close**: the connection's receive (and send) are
//!   cancelled, which lets the kernel drop its hold on the socket.
//!
//! `unsafe` is confined to this module: pushing submission entries (whose buffers must outlive
//! the operation) and the provided-buffer memory shared with the kernel. Each use says why it
//! holds.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, CancelBuilder, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::{peer_or_unspecified, sooner, written, Acceptor, Backend, Write};
use crate::engine::buffers::spare_room;
use crate::engine::core::{Loop, Reading};
use crate::engine::mailbox::{Shared, Wake};
use crate::engine::outbound::{keep_spare, shed_large, Chunk, Outbound, KEEP_IN_FLIGHT, MAX_IOVECS};
use crate::engine::stats::LoopStats;

/// How long accepting pauses after EMFILE/ENFILE (as on epoll).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Submission queue entries per ring; a turn with more to submit submits in batches.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries: room for a fan-out's sends and the receives of a busy turn (the
/// kernel keeps any overflow and hands it over on the next enter).
const CQ_ENTRIES: u32 = 32 * 1024;
/// No SIGPIPE for a peer that went; MSG_WAITALL: the kernel sends on after a short send itself
/// rather than completing early.
const SEND_FLAGS: u32 = (libc::MSG_NOSIGNAL | libc::MSG_WAITALL) as u32;
/// Send ops kept for reuse (a handshake storm must not leave thousands cached).
const SEND_POOL_MAX: usize = 64;
/// Of the pooled boxes and send ops, how many stay through the once-a-second trim.
const POOL_KEEP: usize = 8;
/// Completions taken from the queue at a time.
const COMPLETION_BATCH: usize = 64;
/// Dirty connections after which a batch of completions is followed by a flush and a submit
/// (see `dispatch`).
const FLUSH_EARLY: usize = 32;
/// The buffer group of the loop's receive buffers (one group per ring).
const BUF_GROUP: u16 = 0;

/// The file an operation names: connection `index`'s registered slot when it has one (`fixed`
/// slots in the table), its descriptor `fd` otherwise. A macro because the crate's file
/// argument is a sealed trait (`Fd` or `Fixed`).
macro_rules! on_file {
    ($fixed:expr, $index:expr, $fd:expr, |$file:ident| $build:expr) => {
        if $index < $fixed {
            let $file = Fixed($index);
            $build
        } else {
            let $file = Fd($fd);
            $build
        }
    };
}

// What a completion is about: the top 4 bits of its `user_data`.
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_WAKE: u64 = 4;
/// Cancellations: their completions say nothing the backend needs.
const OP_IGNORE: u64 = 5;
/// The generation bits a receive's `user_data` carries (28): a stale completion of a slot's
/// predecessor 2^28 generations back would be taken for current, which cannot happen in practice.
const GEN_BITS: u32 = 28;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

fn user_data(op: u64, generation: u32, index: u32) -> u64 {
    (op << 60) | (u64::from(generation & GEN_MASK) << 32) | u64::from(index)
}

fn decode(user_data: u64) -> (u64, u32, u32) {
    (user_data >> 60, ((user_data >> 32) as u32) & GEN_MASK, user_data as u32)
}

/// The loop's wake-up: an eventfd the ring keeps a read on.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // Blocking on purpose: the ring waits for it; a non-blocking file would fail with EAGAIN.
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl Wake for EventFd {
    fn wake(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // An eventfd's counter saturates far beyond any burst of wake-ups: the write never blocks.
        // SAFETY: writes the 8 bytes of a live buffer to a descriptor this value owns.
        let n = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Why io_uring cannot run here (for the `auto` fallback's log line and the `io_uring` error),
/// or `Ok`; probed once per process. `throng-load` asks the same question through
/// [`crate::uring`].
pub fn probe() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            // On a thread of its own: tearing a ring down may queue kernel task work on the
            // thread that made it, which can interrupt that thread's next blocking system call
            // (EINTR) — not the caller's business.
            std::thread::Builder::new()
                .name("throng-io-uring-probe".into())
                .spawn(probe_once)
                .map_err(|e| format!("cannot start the probe thread: {e}"))
                .and_then(|t| t.join().unwrap_or_else(|_| Err("the probe panicked".into())))
        })
        .clone()
}

fn probe_once() -> Result<(), String> {
    let release = kernel_release();
    let ring = build_ring(8, 64).map_err(|e| refusal(&e))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| format!("the opcode probe failed: {e}"))?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::SendMsg::CODE, "sendmsg"),
        (opcode::Send::CODE, "send"),
        (opcode::PollAdd::CODE, "poll"),
        (opcode::AsyncCancel::CODE, "async cancel"),
        (opcode::Read::CODE, "read"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("kernel {release} lacks the {name} opcode"));
        }
    }
    if !ring.params().is_feature_ext_arg() {
        return Err(format!("kernel {release} lacks timed waits (IORING_FEAT_EXT_ARG, 5.11)"));
    }
    // Multishot receive with provided-buffer rings arrived in 6.0; nothing to probe it by but
    // trying, so go by the version.
    if kernel_version() < (6, 0) {
        return Err(format!("kernel {release} is older than 6.0 (multishot receive)"));
    }
    let bufs = Bufs::new(2, 64).map_err(|e| format!("provided buffers: {e}"))?;
    bufs.register(&ring).map_err(|e| format!("registering a provided-buffer ring failed: {e}"))?;
    Ok(())
}

fn refusal(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel has no io_uring (ENOSYS)".into(),
        Some(libc::EPERM) => match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
            Ok(v) if v.trim() == "2" => "disabled by the sysctl kernel.io_uring_disabled = 2".into(),
            Ok(v) if v.trim() == "1" => {
                "restricted by kernel.io_uring_disabled = 1 to the group kernel.io_uring_group".into()
            }
            _ => "refused (EPERM): a seccomp profile (as in default container runtimes) blocks it".into(),
        },
        _ => format!("ring setup failed: {e}"),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "?".into(), |s| s.trim().into())
}

fn kernel_version() -> (u32, u32) {
    let release = kernel_release();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// A ring of `entries` submission and `cq_entries` completion entries with the cheapest
/// task-work mode the kernel has: deferred to our own enter (6.1), else cooperative (5.19), else
/// the default. Single issuer: make it on the thread that uses it.
pub fn build_ring(entries: u32, cq_entries: u32) -> io::Result<IoUring> {
    let cq = cq_entries.max(entries);
    let deferred = IoUring::builder()
        .setup_cqsize(cq)
        .setup_clamp()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(entries);
    match deferred {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        other => return other,
    }
    let cooperative = IoUring::builder()
        .setup_cqsize(cq)
        .setup_clamp()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(entries);
    match cooperative {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        other => return other,
    }
    IoUring::builder().setup_cqsize(cq).setup_clamp().build(entries)
}

/// The loop's receive buffers, lent to the kernel through a provided-buffer ring.
///
/// The kernel takes buffers from the ring in the order they were added, and writes only the
/// bytes it receives: a buffer costs resident memory for the pages a receive touched. So that a
/// loop touches few pages, only `target` buffers sit in the ring at a time, refilled from a stack
/// of free ones, the most recently used first; a receive that found the ring empty (`ENOBUFS`)
/// doubles `target`, up to all of them, and a quiet second halves it again. Once a second the
/// pages of the free buffers beyond the next refill's share are given back to the kernel
/// (`MADV_DONTNEED`), so that a burst of receives (a reconnect storm) does not leave an idle
/// loop holding the whole pool.
struct Bufs {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    memory: NonNull<u8>,
    memory_layout: Layout,
    size: u32,
    count: u16,
    /// Our tail of the ring (the kernel's head follows it).
    tail: u16,
    /// Buffers neither in the ring nor held: the last given back on top.
    free: Vec<u16>,
    /// Buffers in the ring and not yet used by a completion.
    in_ring: usize,
    target: usize,
    /// Buffers written since their pages were last given back.
    dirty: Vec<bool>,
    /// How many of `dirty` are set.
    dirty_count: usize,
    starved_since_trim: bool,
    next_trim: Option<Instant>,
}

/// The fewest buffers kept in the ring.
const MIN_TARGET: usize = 16;
/// Of those, how many keep their written pages through a quiet second: the next receives' (a
/// page given back costs one zero-fill fault when the kernel next writes it, which an idle loop
/// can afford; keeping all `MIN_TARGET` would hold 64 KiB per loop for nothing).
const KEEP_HOT: usize = 2;
/// How often cold buffers' pages go back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(1);

impl Bufs {
    fn new(count: u16, size: u32) -> io::Result<Self> {
        let count = count.clamp(2, 1 << 15).next_power_of_two();
        let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "provided buffers too large");
        // The ring must be page aligned (io_uring_register_buf_ring(3)).
        let entries_layout =
            Layout::from_size_align(usize::from(count) * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(invalid)?;
        let memory_layout =
            Layout::from_size_align(usize::from(count) * size as usize, 4096).map_err(invalid)?;
        // SAFETY: both layouts have a non-zero size (count >= 2, size >= 1 checked by callers'
        // config: a zero size gives a null pointer, refused below).
        let entries = NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) }.cast::<BufRingEntry>());
        // SAFETY: as above.
        let memory = NonNull::new(unsafe { alloc::alloc(memory_layout) });
        let (Some(entries), Some(memory)) = (entries, memory) else {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "provided buffers"));
        };
        let target = usize::from(count).min(MIN_TARGET);
        Ok(Self {
            entries,
            entries_layout,
            memory,
            memory_layout,
            size,
            count,
            tail: 0,
            free: (0..count).rev().collect(),
            in_ring: 0,
            target,
            dirty: vec![false; usize::from(count)],
            dirty_count: 0,
            starved_since_trim: false,
            next_trim: None,
        })
    }

    fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the ring memory is ours, page aligned and `count` entries long, and stays
        // allocated until this `Bufs` drops, which the backend orders after the ring.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                BUF_GROUP,
                0,
            )
        }
    }

    /// Bytes of memory the buffers and their ring take.
    fn footprint(&self) -> usize {
        self.entries_layout.size() + self.memory_layout.size()
    }

    /// A completion used one of the ring's buffers.
    fn taken(&mut self) {
        self.in_ring = self.in_ring.saturating_sub(1);
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed to us.
    fn data(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let len = len.min(self.size as usize);
        let bid = bid % self.count;
        if !std::mem::replace(&mut self.dirty[usize::from(bid)], true) {
            self.dirty_count += 1;
        }
        let at = usize::from(bid) * self.size as usize;
        // SAFETY: buffer `bid` lies inside the allocation; between its completion and
        // `give_back` the kernel does not touch it (it is out of the ring), and the `&mut self`
        // borrow keeps a second slice of it from being made.
        unsafe { std::slice::from_raw_parts_mut(self.memory.as_ptr().add(at), len) }
    }

    fn give_back(&mut self, bid: u16) {
        self.free.push(bid);
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

    /// A receive found the ring empty: keep more buffers in it from now on.
    fn starved(&mut self) {
        self.target = (self.target * 2).min(usize::from(self.count));
        self.starved_since_trim = true;
    }

    /// The fewest buffers the ring keeps (`MIN_TARGET`, or all of a smaller pool).
    fn floor(&self) -> usize {
        MIN_TARGET.min(usize::from(self.count))
    }

    /// When `trim` has work an idle loop must wake for: more written buffers than the next
    /// receives need, or a share to halve. (On a ring without deferred task work the ring's
    /// written buffers stay counted, and an idle loop wakes once a second for nothing much.)
    fn trim_due(&self) -> Option<Instant> {
        if self.dirty_count > KEEP_HOT || self.target > self.floor() {
            self.next_trim
        } else {
            None
        }
    }

    /// Once a second (returns whether it ran): a quiet second (no receive starved) halves
    /// `target`, and the written pages of all but the next `KEEP_HOT` buffers go back to the
    /// kernel (zero-filled if used again); after a starved second, all but the next `target`.
    ///
    /// `ring_quiet()`, asked only when a trim is due: the kernel writes none of the ring's
    /// buffers before our next enter and every buffer it took has reached us as a completion
    /// (its task work is deferred to our enter and the completion queue is drained), so the
    /// ring's unused buffers are as free as the stack's: after a storm spread receives over many
    /// of them, an idle loop gives those pages back too. Otherwise only the stack is trimmed (a
    /// receive may be writing into a ring buffer).
    fn trim(&mut self, now: Instant, ring_quiet: impl FnOnce() -> bool) -> bool {
        match self.next_trim {
            Some(at) if now < at => return false,
            None => {
                self.next_trim = Some(now + TRIM_EVERY);
                return false;
            }
            Some(_) => self.next_trim = Some(now + TRIM_EVERY),
        }
        let floor = self.floor();
        let quiet = !std::mem::take(&mut self.starved_since_trim);
        // A quiet second halves the ring's share (a load that comes back starves less), but keeps
        // only the floor's pages: a page given back costs one zero-fill fault if it is used again.
        let mut hot = self.target;
        if quiet {
            self.target = (self.target / 2).max(floor);
            hot = KEEP_HOT.min(floor);
        }
        if ring_quiet() {
            // The kernel takes the ring's buffers oldest first: the first `hot` are next.
            let mask = self.count - 1;
            let oldest = self.tail.wrapping_sub(self.in_ring as u16);
            for k in hot..self.in_ring {
                let at = usize::from(oldest.wrapping_add(k as u16) & mask);
                // SAFETY: `at` < count; the kernel only reads entries, and not before our enter.
                let bid = unsafe { (*self.entries.as_ptr().add(at)).bid() };
                self.forget(bid);
            }
            hot = hot.saturating_sub(self.in_ring);
        }
        // The stack's top `hot` are the next refill's; the ones below are cold.
        let cold = self.free.len().saturating_sub(hot);
        for i in 0..cold {
            let bid = self.free[i];
            self.forget(bid);
        }
        true
    }

    /// Gives buffer `bid`'s written pages back to the kernel. Only for a buffer no one reads or
    /// writes until it is next handed out: free, or unused in a quiet ring (see `trim`).
    fn forget(&mut self, bid: u16) {
        let bid = usize::from(bid % self.count);
        if !std::mem::take(&mut self.dirty[bid]) {
            return;
        }
        let at = bid * self.size as usize;
        // SAFETY: the range is buffer `bid`, inside the allocation; the caller vouches that no
        // one touches it until it is handed out again, and its contents are garbage until then:
        // the kernel may drop its pages.
        let r = unsafe {
            libc::madvise(self.memory.as_ptr().add(at).cast(), self.size as usize, libc::MADV_DONTNEED)
        };
        if r == 0 {
            self.dirty_count -= 1;
        } else {
            self.dirty[bid] = true; // keep trying next time; nothing is lost
        }
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

/// One `sendmsg` in flight and the chunks it reads, kept until its completion.
struct SendOp {
    index: u32,
    generation: u32,
    fd: RawFd,
    chunks: Vec<Chunk>,
    /// An owned buffer kept from the last send's chunks (up to [`KEEP_IN_FLIGHT`]), for the
    /// next queue this op takes from ([`Outbound::hand_off`]).
    spare: Vec<u8>,
    iov: Vec<libc::iovec>,
    /// Where in `iov` the unsent bytes start (after a short send).
    first: usize,
    left: usize,
    msg: libc::msghdr,
}

impl SendOp {
    fn new() -> Box<Self> {
        Box::new(Self {
            index: 0,
            generation: 0,
            fd: -1,
            chunks: Vec::new(),
            spare: Vec::new(),
            iov: Vec::new(),
            first: 0,
            left: 0,
            // SAFETY: msghdr is a plain C struct for which all zeroes is the empty header.
            msg: unsafe { std::mem::zeroed() },
        })
    }

    /// Points the header at the unsent iovecs (the op is boxed: the header does not move).
    fn aim(&mut self) {
        let rest = &mut self.iov[self.first..];
        self.msg.msg_iov = rest.as_mut_ptr();
        self.msg.msg_iovlen = rest.len() as _;
    }

    /// The submission for what is left: a plain `send` when it is one buffer (the common case:
    /// an echo, a 101, one broadcast frame), which spares the kernel importing a `msghdr` and
    /// its iovecs; `sendmsg` over the iovecs otherwise.
    /// `fixed`: the loop's registered-file slots (`Uring::fixed`); `index` names its file below it.
    fn entry(&self, key: usize, fixed: u32) -> squeue::Entry {
        let entry = match &self.iov[self.first..] {
            [one] => on_file!(fixed, self.index, self.fd, |file| {
                opcode::Send::new(file, one.iov_base.cast::<u8>().cast_const(), one.iov_len as u32)
                    .flags(SEND_FLAGS as i32)
                    .build()
            }),
            _ => on_file!(fixed, self.index, self.fd, |file| {
                opcode::SendMsg::new(file, &self.msg).flags(SEND_FLAGS).build()
            }),
        };
        entry.user_data(user_data(OP_SEND, 0, key as u32))
    }

    /// `n` bytes went: skips them.
    fn advance(&mut self, mut n: usize) {
        self.left -= n.min(self.left);
        while n > 0 && self.first < self.iov.len() {
            let iov = &mut self.iov[self.first];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                self.first += 1;
            } else {
                // SAFETY: `n` < the iovec's length: the new base stays inside the same chunk.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n) }.cast();
                iov.iov_len -= n;
                n = 0;
            }
        }
    }

    fn recycle(&mut self) {
        // Shared frames go now (their last drop times a publish); one owned buffer stays, for
        // the next reply framed while others are still in flight.
        for chunk in self.chunks.drain(..) {
            keep_spare(&mut self.spare, chunk, KEEP_IN_FLIGHT);
        }
        self.iov.clear();
        self.first = 0;
        self.left = 0;
    }
}

/// Received bytes (or the end of the stream) the core could not take yet.
struct Held {
    index: u32,
    generation: u32,
    /// `Some((buffer, length))`, or `None`: the peer closed or the socket failed.
    data: Option<(u16, u32)>,
}

/// Why a connection has no receive armed (connections not listed have one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unarmed {
    /// Cancelled for a full queue; `resume`: arm again once the cancellation completed.
    Cancelling { resume: bool },
    /// Cancelled for a full queue, and done.
    Paused,
    /// Ended for want of buffers: armed again when some come back.
    Starved,
}

/// One loop's ring, buffers and in-flight operations.
pub(crate) struct Uring {
    // Declared first so that it drops first: nothing may use the buffers below after the ring.
    ring: IoUring,
    bufs: Bufs,
    sends: slab::Slab<Box<SendOp>>,
    /// Ops kept for reuse: the boxes themselves (their headers must not move while in flight).
    #[allow(clippy::vec_box)]
    send_pool: Vec<Box<SendOp>>,
    /// Slot index → its send in flight, to cancel at close.
    sending: HashMap<u32, usize>,
    acceptor: Acceptor<TcpListener>,
    accept_armed: bool,
    accept_paused_until: Option<Instant>,
    waker: Arc<EventFd>,
    wake_buf: Box<[u8; 8]>,
    held: VecDeque<Held>,
    /// Slot index → how many `held` entries it has: its new bytes queue behind them.
    held_count: HashMap<u32, u32>,
    unarmed: HashMap<u32, Unarmed>,
    /// Receives to arm at the end of the turn (ended multishots, resumed connections).
    rearm: Vec<(u32, u32)>,
    starved: Vec<(u32, u32)>,
    resumed: Vec<(u32, u32)>,
    scratch: Vec<u8>,
    completions: Vec<(u64, i32, u32)>,
    shared: Arc<Shared>,
    stopping: bool,
    /// Slots of the registered-file table (0: none, the kernel refused one).
    fixed: u32,
    /// A slot's removal is queued and not yet submitted: submit it before a slot is filled
    /// again, or the queued removal would take the new connection's file.
    removals_queued: bool,
    /// One bit per slot: a connection attached whose first write (its 101, or a refusal) was
    /// not made yet; see [`Uring::write_inline`].
    first_write: Vec<u64>,
}

impl Uring {
    /// Sets up a loop's ring; call it on the loop's own thread (the ring is single-issuer).
    pub(crate) fn new(
        acceptor: Acceptor<TcpListener>,
        waker: Arc<EventFd>,
        shared: Arc<Shared>,
        config: &crate::engine::Config,
    ) -> io::Result<Self> {
        let ring = build_ring(SQ_ENTRIES, CQ_ENTRIES)?;
        let (count, size) = config.recv_buffers;
        let bufs = Bufs::new(count, size.max(512))?;
        bufs.register(&ring)?;
        // A connection whose slot index is below `fixed` is registered in the ring's file table
        // under that index, so that its receives and sends name it by index and the kernel skips
        // looking its descriptor up and counting a reference on each (`fget`/`fput`: 2.0–2.6 %
        // of server CPU at 512 B echoes, 0.04 % with the table). The kernel refuses a table
        // larger than the open-files limit (EMFILE).
        let fixed = open_files_limit().min(config.registered_files);
        let fixed = match (fixed > 0).then(|| ring.submitter().register_files_sparse(fixed)) {
            None => 0,
            Some(Ok(())) => fixed,
            Some(Err(e)) => {
                log::debug!("io_uring: no registered-file table ({e}); connections use descriptors");
                0
            }
        };
        let mut acceptor = acceptor;
        if let Some(listener) = acceptor.listener_mut() {
            // The ring waits on it; a non-blocking listener would fail its accept with EAGAIN.
            listener.set_nonblocking(false)?;
        }
        log::debug!(
            "io_uring ring: {} SQ / {} CQ entries, {} receive buffers of {} B ({} KiB with their ring)",
            ring.params().sq_entries(),
            ring.params().cq_entries(),
            bufs.count,
            bufs.size,
            bufs.footprint() / 1024
        );
        let mut backend = Self {
            ring,
            bufs,
            sends: slab::Slab::new(),
            send_pool: Vec::new(),
            sending: HashMap::new(),
            acceptor,
            accept_armed: false,
            accept_paused_until: None,
            waker,
            wake_buf: Box::new([0; 8]),
            held: VecDeque::new(),
            held_count: HashMap::new(),
            unarmed: HashMap::new(),
            rearm: Vec::new(),
            starved: Vec::new(),
            resumed: Vec::new(),
            scratch: vec![0; config.scratch_size.max(2 * size as usize)],
            completions: Vec::with_capacity(COMPLETION_BATCH),
            shared,
            stopping: false,
            fixed,
            removals_queued: false,
            first_write: Vec::new(),
        };
        backend.bufs.refill();
        backend.arm_accept();
        backend.arm_wake();
        Ok(backend)
    }

    /// Queues a submission, submitting what is queued first when the queue is full.
    ///
    /// # Safety
    /// Every buffer and header `entry` points at must stay valid and unmoved until its
    /// completion arrives (or the ring is gone).
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller vouches for the entry's buffers.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.kind() != io::ErrorKind::Interrupted {
                    log::error!("io_uring submit failed: {e}");
                    return;
                }
            }
        }
    }

    /// Queues a cancellation of the operation with `target` as its `user_data`.
    fn cancel(&mut self, target: u64) {
        let entry = opcode::AsyncCancel::new(target).build().user_data(OP_IGNORE << 60);
        // SAFETY: a cancellation points at no memory.
        unsafe { self.push(&entry) };
    }

    fn arm_accept(&mut self) {
        if self.accept_armed || self.stopping {
            return;
        }
        let Some(listener) = self.acceptor.listener_mut() else { return };
        let fd = listener.as_raw_fd();
        let entry = opcode::AcceptMulti::new(Fd(fd)).build().user_data(OP_ACCEPT << 60);
        // SAFETY: no address buffer is given; the listener outlives the operation (it is
        // cancelled before the listener is dropped in `stop_accepting`).
        unsafe { self.push(&entry) };
        self.accept_armed = true;
    }

    fn arm_wake(&mut self) {
        let fd = self.waker.0.as_raw_fd();
        let entry = opcode::Read::new(Fd(fd), self.wake_buf.as_mut_ptr(), 8).build().user_data(OP_WAKE << 60);
        // SAFETY: `wake_buf` is boxed and lives as long as the backend, and so the ring.
        unsafe { self.push(&entry) };
    }

    fn arm_recv(&mut self, index: u32, generation: u32, fd: RawFd) {
        self.unarmed.remove(&index);
        let entry = on_file!(self.fixed, index, fd, |file| opcode::RecvMulti::new(file, BUF_GROUP).build())
            .user_data(user_data(OP_RECV, generation, index));
        // SAFETY: the buffers come from the registered ring, which outlives every operation.
        unsafe { self.push(&entry) };
    }

    /// The full generation of slot `index` when it holds the connection a completion's
    /// truncated generation names.
    fn live(core: &Loop<TcpStream>, index: u32, generation: u32) -> Option<u32> {
        core.generation(index).filter(|g| g & GEN_MASK == generation)
    }

    fn on_accept(&mut self, core: &mut Loop<TcpStream>, res: i32, more: bool) {
        if !more {
            self.accept_armed = false;
        }
        if res >= 0 {
            // SAFETY: the kernel just created this descriptor for us and nothing else owns it.
            let socket = unsafe { TcpStream::from_raw_fd(res) };
            let peer = peer_or_unspecified(socket.peer_addr());
            let loop_id = core.core.loop_id;
            if let Some(socket) = self.acceptor.hand_over(&self.shared, loop_id, socket, peer) {
                // Over a cap the socket is dropped, which closes it.
                core.open(self, peer, socket);
            }
        } else if matches!(-res, libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) {
            LoopStats::count(&core.core.stats.accept_errors, 1);
            let e = io::Error::from_raw_os_error(-res);
            log::warn!(
                "loop {}: accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?}",
                core.core.loop_id
            );
            self.accept_paused_until = Some(core.core.now + ACCEPT_BACKOFF);
            if self.accept_armed {
                self.cancel(OP_ACCEPT << 60);
            }
            return;
        }
        if !self.accept_armed && self.accept_paused_until.is_none() {
            self.arm_accept();
        }
    }

    fn on_recv(&mut self, core: &mut Loop<TcpStream>, generation: u32, index: u32, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.bufs.taken();
        }
        let Some(generation) = Self::live(core, index, generation) else {
            if let Some(bid) = bid {
                self.bufs.give_back(bid);
            }
            return;
        };
        if !cqueue::more(flags) {
            self.recv_ended(core, index, generation, res);
        }
        let data = match (res, bid) {
            (n, Some(bid)) if n > 0 => Some((bid, n as u32)),
            (n, _) if n == -libc::ENOBUFS || n == -libc::ECANCELED => return,
            _ => None, // 0: the peer's FIN; another error: the socket failed.
        };
        let held = Held { index, generation, data };
        if (!self.held.is_empty() && self.held_count.contains_key(&index)) || !self.deliver(core, &held) {
            self.hold(held);
        }
    }

    /// Slot `index`'s multishot receive ended (result `res`): arm it again, or not, and when.
    fn recv_ended(&mut self, core: &Loop<TcpStream>, index: u32, generation: u32, res: i32) {
        match self.unarmed.get(&index).copied() {
            Some(Unarmed::Cancelling { resume: true }) => self.rearm.push((index, generation)),
            Some(Unarmed::Cancelling { resume: false }) => {
                self.unarmed.insert(index, Unarmed::Paused);
            }
            _ if res == -libc::ENOBUFS => {
                LoopStats::count(&core.core.stats.recv_buffers_exhausted, 1);
                self.bufs.starved();
                self.unarmed.insert(index, Unarmed::Starved);
                self.starved.push((index, generation));
            }
            // The kernel ended it with data (or a cancellation we did not ask for): go on.
            _ if res > 0 || res == -libc::ECANCELED => self.rearm.push((index, generation)),
            _ => {} // The stream ended or failed: the connection goes.
        }
    }

    fn hold(&mut self, held: Held) {
        *self.held_count.entry(held.index).or_insert(0) += 1;
        self.held.push_back(held);
    }

    /// Hands received bytes (or the end) to the core. Returns false when they must be held:
    /// the workers are behind, or the connection's queue is full (its receive is cancelled).
    fn deliver(&mut self, core: &mut Loop<TcpStream>, held: &Held) -> bool {
        let Some((bid, len)) = held.data else {
            core.remove(held.index, self);
            return true;
        };
        let len = len as usize;
        let spill = match core.reading(held.index, &mut self.scratch) {
            Reading::Go { spill, .. } => Some(spill),
            Reading::Later => return false,
            Reading::Stop => None,
        };
        let spill = match spill {
            Some(spill) => spill,
            None if core.is_live(held.index, held.generation) => {
                self.pause(held.index, held.generation);
                return false;
            }
            None => {
                self.bufs.give_back(bid);
                return true;
            }
        };
        if spill == 0 {
            core.on_bytes(held.index, self.bufs.data(bid, len), &peer_addr);
        } else {
            // The connection's leftover bytes are in front: the new ones go right after them.
            if self.scratch.len() < spill + len {
                self.scratch.resize(spill + len, 0);
            }
            let data = self.bufs.data(bid, len);
            let len = data.len();
            self.scratch[spill..spill + len].copy_from_slice(data);
            core.on_bytes(held.index, &mut self.scratch[..spill + len], &peer_addr);
        }
        self.bufs.give_back(bid);
        true
    }

    /// Stops receiving for slot `index` (its queue is full): the peer's bytes wait in the kernel.
    fn pause(&mut self, index: u32, generation: u32) {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.unarmed.entry(index) {
            entry.insert(Unarmed::Cancelling { resume: false });
            self.cancel(user_data(OP_RECV, generation, index));
        }
    }

    /// Offers the held bytes again, in order; a connection still blocked keeps its own.
    fn offer_held(&mut self, core: &mut Loop<TcpStream>) {
        let mut blocked: Vec<u32> = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(held) = self.held.pop_front() {
            if !core.is_live(held.index, held.generation) {
                if let Some((bid, _)) = held.data {
                    self.bufs.give_back(bid);
                }
                continue;
            }
            if blocked.contains(&held.index) {
                kept.push_back(held);
                continue;
            }
            if self.deliver(core, &held) {
                if let Some(n) = self.held_count.get_mut(&held.index) {
                    *n -= 1;
                    if *n == 0 {
                        self.held_count.remove(&held.index);
                    }
                }
            } else if core.core.workers_behind() {
                kept.push_back(held);
                kept.extend(self.held.drain(..));
                break;
            } else {
                blocked.push(held.index);
                kept.push_back(held);
            }
        }
        self.held = kept;
    }

    /// Whether `index`'s first write is still to be made (and from now on, it is not).
    fn take_first_write(&mut self, index: u32) -> bool {
        let (word, bit) = first_write_bit(index);
        match self.first_write.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }

    /// A connection's first write (its 101, or a refusal) goes by a plain non-blocking `send`,
    /// as on epoll: the socket takes it whole, so no send op and no buffer is held until a
    /// completion. Through the ring, a handshake storm held a box and an op per upgrade across
    /// turns, and their frees left holes in the loop's heap between the long-lived timer buckets
    /// (measured after 15,000 upgrades: 156 KiB free in 105 pieces through the ring, 30 KiB in
    /// 17 this way).
    /// `None`: the socket took nothing now; the ring sends it.
    fn write_inline(socket: &TcpStream, queue: &mut Outbound) -> Option<Write> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = queue.io_slices(&mut slices);
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        // The ring's sockets are blocking (see `adopt`): MSG_DONTWAIT makes this one call not.
        written(|| socket2::SockRef::from(socket).send_vectored_with_flags(&slices[..n], flags))
    }

    fn on_send(&mut self, core: &mut Loop<TcpStream>, key: u32, res: i32) {
        let key = key as usize;
        let Some(op) = self.sends.get_mut(key) else { return };
        let (index, generation) = (op.index, op.generation);
        if res > 0 && (res as usize) < op.left {
            // A short send: the rest goes from where it stopped, in the same op.
            op.advance(res as usize);
            op.aim();
            let entry = op.entry(key, self.fixed);
            // SAFETY: the op is boxed in `sends` and keeps its chunks until its completion.
            unsafe { self.push(&entry) };
            core.on_written(index, generation, Some(res as usize), self);
            return;
        }
        let mut op = self.sends.remove(key);
        if self.sending.get(&index) == Some(&key) {
            self.sending.remove(&index);
        }
        op.recycle();
        if self.send_pool.len() < SEND_POOL_MAX {
            self.send_pool.push(op);
        }
        core.on_written(index, generation, (res > 0).then_some(res as usize), self);
    }

    /// Once a second, what a burst left behind goes back: the receive buffers' cold pages, and
    /// the room of the per-connection tables (a storm of handshakes fills `sending` and then
    /// leaves an idle loop holding its capacity).
    fn trim(&mut self, core: &mut Loop<TcpStream>) {
        // Deferred task work (the single-issuer ring: see `build_ring`) writes receive buffers
        // only inside our enter; with every completion taken, the ring's unused ones are idle.
        let ring = &mut self.ring;
        let ring_quiet = || {
            ring.params().is_setup_single_issuer()
                && ring.completion().is_empty()
                && !ring.submission().cq_overflow()
        };
        if !self.bufs.trim(core.core.now, ring_quiet) {
            return;
        }
        // A turn's upgrades hold their boxes and send ops until the sends complete (a turn
        // later), so a storm takes more than the pools keep; what it left goes now.
        let mut burst = core.core.cold_pool.trim(POOL_KEEP) | (self.send_pool.len() > POOL_KEEP);
        self.send_pool.truncate(POOL_KEEP);
        for op in &mut self.send_pool {
            shed_large(&mut op.spare);
        }
        if let Some(room) = spare_room(self.sending.len(), self.sending.capacity()) {
            self.sending.shrink_to(room);
        }
        if let Some(room) = spare_room(self.held_count.len(), self.held_count.capacity()) {
            self.held_count.shrink_to(room);
        }
        if let Some(room) = spare_room(self.unarmed.len(), self.unarmed.capacity()) {
            self.unarmed.shrink_to(room);
        }
        if let Some(room) = spare_room(self.held.len(), self.held.capacity()) {
            self.held.shrink_to(room);
        }
        if self.sends.is_empty() && self.sends.capacity() > 0 {
            // Its vacant entries stay in place (keys are in flight in `user_data`), so a slab
            // that held a storm's sends keeps their room until it is empty: then start afresh.
            burst |= self.sends.capacity() > POOL_KEEP;
            self.sends = slab::Slab::new();
        }
        if burst {
            release_free_pages();
        }
    }

    /// Arms what the turn left to arm: receives that ended, resumed connections, receives
    /// that found no buffer (once buffers are back), the accept after a pause.
    fn arm_pending(&mut self, core: &mut Loop<TcpStream>) {
        let has_buffers = self.bufs.refill();
        if has_buffers && !self.starved.is_empty() {
            let starved = std::mem::take(&mut self.starved);
            self.rearm.extend(starved);
        }
        for (index, generation) in std::mem::take(&mut self.rearm) {
            if let Some(socket) = core.socket(index, generation) {
                let fd = socket.as_raw_fd();
                self.arm_recv(index, generation, fd);
            }
        }
    }
}

/// Where slot `index`'s bit is in [`Uring::first_write`]: its word, and its mask in the word.
fn first_write_bit(index: u32) -> (usize, u64) {
    (index as usize / 64, 1 << (index % 64))
}

/// Hands the allocator's free pages back to the kernel once a burst's buffers were freed: its
/// boxes, send ops and tables were allocated between the connections' long-lived entries, so
/// the room they leave is spread over the heap, where the allocator does not return it by
/// itself (glibc trims only the heap's top). Measured here: 8–18 bytes per connection less
/// after a 15,000-connection storm. Runs at most once a second, after a burst.
fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer; it only returns free memory of the allocator's own.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's soft limit on open files (RLIMIT_NOFILE), as a table size.
fn open_files_limit() -> u32 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the one struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    u32::try_from(limit.rlim_cur).unwrap_or(u32::MAX)
}

fn peer_addr(socket: &TcpStream) -> SocketAddr {
    peer_or_unspecified(socket.peer_addr())
}

impl Backend for Uring {
    type Socket = TcpStream;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let own = if !self.rearm.is_empty() || !self.resumed.is_empty() {
            Some(Duration::ZERO)
        } else {
            let now = Instant::now();
            let until = sooner(self.accept_paused_until, self.bufs.trim_due());
            until.map(|until| until.saturating_duration_since(now))
        };
        let result = match sooner(timeout, own) {
            None => self.ring.submit_and_wait(1),
            Some(wait) => {
                let ts = Timespec::from(wait);
                self.ring.submitter().submit_with_args(1, &SubmitArgs::new().timespec(&ts))
            }
        };
        match result {
            Ok(_) => {
                self.removals_queued = false;
                Ok(())
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn dispatch(&mut self, core: &mut Loop<TcpStream>) {
        let mut completions = std::mem::take(&mut self.completions);
        loop {
            // In batches: a storm's full completion queue must not grow this list for good.
            let batch = self.ring.completion().take(COMPLETION_BATCH);
            completions.extend(batch.map(|c| (c.user_data(), c.result(), c.flags())));
            if completions.is_empty() {
                break;
            }
            for &(data, res, flags) in &completions {
                let (op, generation, index) = decode(data);
                match op {
                    OP_RECV => self.on_recv(core, generation, index, res, flags),
                    OP_SEND => self.on_send(core, index, res),
                    OP_ACCEPT => self.on_accept(core, res, cqueue::more(flags)),
                    OP_WAKE => self.arm_wake(),
                    _ => {}
                }
            }
            completions.clear();
            // A long turn (a handshake storm) flushes and submits as it goes: the sends complete
            // inline and their completions come in the next batch, so each connection's box and
            // send op go back to the pools within the turn instead of every upgrade of the turn
            // holding its own until the next (1,279 boxes allocated during a 15,000-connection
            // storm without it, 309 with it).
            if core.core.dirty.len() >= FLUSH_EARLY {
                core.flush_dirty(self);
                match self.ring.submit() {
                    Ok(_) => self.removals_queued = false,
                    Err(e) => log::debug!("io_uring submit: {e}"),
                }
            }
        }
        self.completions = completions;
        self.arm_pending(core);
    }

    fn retry(&mut self, core: &mut Loop<TcpStream>, workers_caught_up: bool) {
        for (index, generation) in std::mem::take(&mut self.resumed) {
            if !core.is_live(index, generation) {
                continue;
            }
            match self.unarmed.get(&index).copied() {
                Some(Unarmed::Cancelling { .. }) => {
                    self.unarmed.insert(index, Unarmed::Cancelling { resume: true });
                }
                Some(Unarmed::Paused) => self.rearm.push((index, generation)),
                _ => {}
            }
        }
        if workers_caught_up && !self.held.is_empty() {
            self.offer_held(core);
        }
        if self.accept_paused_until.is_some_and(|until| core.core.now >= until) {
            self.accept_paused_until = None;
            self.arm_accept();
        }
        self.arm_pending(core);
        self.trim(core);
    }

    fn attach(&mut self, index: u32, generation: u32, socket: &mut TcpStream) -> io::Result<()> {
        // Small frames must not wait for Nagle; failure only costs latency.
        let _ = socket.set_nodelay(true);
        self.held_count.remove(&index);
        if index < self.fixed {
            if std::mem::take(&mut self.removals_queued) {
                self.ring.submit()?;
            }
            self.ring.submitter().register_files_update(index, &[socket.as_raw_fd()])?;
        }
        self.arm_recv(index, generation, socket.as_raw_fd());
        let (word, bit) = first_write_bit(index);
        if self.first_write.len() <= word {
            self.first_write.resize(word + 1, 0);
        }
        self.first_write[word] |= bit;
        Ok(())
    }

    fn write(&mut self, index: u32, generation: u32, socket: &TcpStream, queue: &mut Outbound) -> Write {
        if queue.handed() > 0 {
            return Write::Later; // One send in flight per connection keeps the bytes in order.
        }
        if self.take_first_write(index) {
            if let Some(done) = Self::write_inline(socket, queue) {
                return done;
            }
        }
        let mut op = self.send_pool.pop().unwrap_or_else(SendOp::new);
        let (bytes, skip) = queue.hand_off(&mut op.chunks, &mut op.spare);
        for (i, chunk) in op.chunks.iter().enumerate() {
            let bytes = chunk.bytes();
            let bytes = if i == 0 { &bytes[skip.min(bytes.len())..] } else { bytes };
            op.iov.push(libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() });
        }
        op.index = index;
        op.generation = generation;
        op.fd = socket.as_raw_fd();
        op.left = bytes;
        op.first = 0;
        op.aim();
        let key = self.sends.insert(op);
        let entry = self.sends[key].entry(key, self.fixed);
        // SAFETY: the header, iovecs and chunks live in the boxed op, which stays in `sends`
        // (unmoved: only the box pointer moves) until the completion.
        unsafe { self.push(&entry) };
        self.sending.insert(index, key);
        Write::Later
    }

    fn shutdown_write(&mut self, socket: &TcpStream) {
        let _ = socket.shutdown(Shutdown::Write);
    }

    fn close(&mut self, index: u32, generation: u32, socket: TcpStream) {
        // The kernel holds the socket while an operation on it is pending: cancel them so that
        // closing the descriptor closes the connection.
        if self.unarmed.remove(&index) != Some(Unarmed::Paused) {
            self.cancel(user_data(OP_RECV, generation, index));
        }
        if let Some(key) = self.sending.remove(&index) {
            self.cancel(user_data(OP_SEND, 0, key as u32));
        }
        if index < self.fixed {
            // The table's reference goes too (after the cancellations, which it does not wait
            // for: an operation in flight keeps the file until it completes).
            let entry = opcode::Close::new(Fixed(index)).build().user_data(OP_IGNORE << 60);
            // SAFETY: closing a registered slot points at no memory.
            unsafe { self.push(&entry) };
            self.removals_queued = true;
        }
        self.held_count.remove(&index);
        self.take_first_write(index);
        drop(socket);
    }

    fn adopt(&mut self, socket: TcpStream) -> io::Result<TcpStream> {
        // Another loop accepted it non-blocking; the ring waits on the socket, and a
        // non-blocking one would fail receives with EAGAIN. (The ring's own accepts are blocking.)
        socket.set_nonblocking(false)?;
        Ok(socket)
    }

    fn resume_reading(&mut self, index: u32, generation: u32) {
        self.resumed.push((index, generation));
    }

    fn stop_accepting(&mut self) {
        self.stopping = true;
        if self.accept_armed {
            self.cancel(OP_ACCEPT << 60);
            self.accept_armed = false;
        }
        // The cancellation holds no reference to the listener: drop it now.
        self.acceptor = Acceptor::Own(None);
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Nothing may be in flight on memory this backend frees: cancel everything and wait.
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(Timespec::from(Duration::from_millis(500))), CancelBuilder::any());
    }
}
