//! The readiness backend on `mio` (epoll on Linux): one `Poll` and one `SO_REUSEPORT` listener
//! per loop thread; a connection's socket is registered under its slot index. Edge-triggered:
//! a socket is read until it returns fewer bytes than asked (the kernel queue is empty then, see
//! epoll(7)) or `WouldBlock`, within a budget per wake-up for fairness; sockets over budget, or
//! left while the workers are behind, go on the ready list for the next turn.

use std::io::{self, IoSlice, Read, Write as _};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{peer_or_unspecified, sooner, written, Acceptor, Backend, Write};
use crate::engine::core::{Loop, Reading};
use crate::engine::mailbox::Shared;
use crate::engine::outbound::{Outbound, MAX_IOVECS};
use crate::engine::stats::LoopStats;

pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);

/// How long accepting pauses after EMFILE/ENFILE, so that a full descriptor table does not spin
/// the loop at 100 % CPU while existing connections carry on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One loop's sockets and readiness bookkeeping.
pub(crate) struct Mio {
    poll: Poll,
    /// `None` only while `dispatch` walks it.
    events: Option<Events>,
    acceptor: Acceptor<TcpListener>,
    scratch: Vec<u8>,
    shared: Arc<Shared>,
    /// Sockets that may have unread bytes: over their read budget, left while the workers were
    /// behind, or paused for a full queue that drained. With the generation they were put there
    /// for, so that a slot's next connection is not read on its predecessor's account.
    ready: Vec<(u32, u32)>,
    accept_paused_until: Option<Instant>,
    read_budget: usize,
}

impl Mio {
    pub(crate) fn new(
        poll: Poll,
        mut acceptor: Acceptor<TcpListener>,
        shared: Arc<Shared>,
        config: &crate::engine::Config,
    ) -> io::Result<Self> {
        if let Some(listener) = acceptor.listener_mut() {
            poll.registry().register(listener, LISTENER, Interest::READABLE)?;
        }
        Ok(Self {
            poll,
            events: Some(Events::with_capacity(1024)),
            acceptor,
            scratch: vec![0; config.scratch_size],
            shared,
            ready: Vec::new(),
            accept_paused_until: None,
            read_budget: config.read_budget,
        })
    }

    fn accept(&mut self, core: &mut Loop<TcpStream>) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let accepted = match &self.acceptor {
                Acceptor::Own(Some(listener)) | Acceptor::Distributing { listener, .. } => listener.accept(),
                Acceptor::Own(None) => return,
            };
            match accepted {
                Ok((socket, peer)) => self.route(core, socket, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: the pending connection stays in the backlog;
                    // try again shortly instead of spinning on it.
                    LoopStats::count(&core.core.stats.accept_errors, 1);
                    log::warn!(
                        "loop {}: accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?}",
                        core.core.loop_id
                    );
                    self.accept_paused_until = Some(core.core.now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Keeps the socket, or hands it to the loop whose turn it is (distributing acceptor).
    fn route(&mut self, core: &mut Loop<TcpStream>, socket: TcpStream, peer: SocketAddr) {
        let loop_id = core.core.loop_id;
        if let Some(socket) = self.acceptor.hand_over(&self.shared, loop_id, socket.into(), peer) {
            // Over a cap the socket is dropped, which closes it.
            core.open(self, peer, TcpStream::from_std(socket));
        }
    }

    /// Reads what the socket holds. `to_the_end`: keep reading after a short read, because the
    /// peer's FIN (or an error) is queued behind the data and no new edge will announce it.
    fn read(&mut self, core: &mut Loop<TcpStream>, index: u32, to_the_end: bool) {
        let mut budget = self.read_budget;
        loop {
            let (spill, socket) = match core.reading(index, &mut self.scratch) {
                Reading::Go { spill, socket } => (spill, socket),
                Reading::Later => return self.come_back(core, index),
                Reading::Stop => return, // `resume_reading` puts it on the ready list.
            };
            let room = self.scratch.len() - spill;
            match (&*socket).read(&mut self.scratch[spill..]) {
                Ok(0) => {
                    // The peer closed (or reset): whatever phase we were in, it is over.
                    core.remove(index, self);
                    return;
                }
                Ok(n) => {
                    core.on_bytes(index, &mut self.scratch[..spill + n], &peer_addr);
                    if n < room && !to_the_end {
                        return;
                    }
                    budget -= 1;
                    if budget == 0 {
                        return self.come_back(core, index);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    core.remove(index, self);
                    return;
                }
            }
        }
    }

    /// Puts slot `index` on the ready list: read it again next turn.
    fn come_back(&mut self, core: &Loop<TcpStream>, index: u32) {
        if let Some(generation) = core.generation(index) {
            self.ready.push((index, generation));
        }
    }
}

/// The socket's peer (asked only when an upgrade needs it and the accept's address was not kept).
fn peer_addr(socket: &TcpStream) -> SocketAddr {
    peer_or_unspecified(socket.peer_addr())
}

impl Backend for Mio {
    type Socket = TcpStream;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let own = if !self.ready.is_empty() {
            Some(Duration::ZERO)
        } else {
            self.accept_paused_until.map(|until| until.saturating_duration_since(Instant::now()))
        };
        let events = self.events.get_or_insert_with(|| Events::with_capacity(1024));
        self.poll.poll(events, sooner(timeout, own))
    }

    fn dispatch(&mut self, core: &mut Loop<TcpStream>) {
        let Some(events) = self.events.take() else { return };
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(core),
                WAKER => {}
                Token(index) => {
                    let index = index as u32;
                    let peer_done = event.is_read_closed() || event.is_error();
                    if event.is_readable() || peer_done {
                        self.read(core, index, peer_done);
                    }
                    if event.is_writable() {
                        core.on_writable(index, self);
                    }
                }
            }
        }
        self.events = Some(events);
    }

    fn retry(&mut self, core: &mut Loop<TcpStream>, workers_caught_up: bool) {
        if workers_caught_up && !self.ready.is_empty() {
            for (index, generation) in std::mem::take(&mut self.ready) {
                if core.is_live(index, generation) {
                    self.read(core, index, true);
                }
            }
        }
        if self.accept_paused_until.is_some_and(|until| core.core.now >= until) {
            self.accept_paused_until = None;
            self.accept(core);
        }
    }

    fn attach(&mut self, index: u32, _generation: u32, socket: &mut TcpStream) -> io::Result<()> {
        // Small frames must not wait for Nagle; failure only costs latency.
        let _ = socket.set_nodelay(true);
        let token = Token(index as usize);
        self.poll.registry().register(socket, token, Interest::READABLE | Interest::WRITABLE)
    }

    fn write(&mut self, _index: u32, _generation: u32, socket: &TcpStream, queue: &mut Outbound) -> Write {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = queue.io_slices(&mut slices);
        // One buffer (an echo, a 101, one broadcast frame) goes by `send`, which spares the
        // kernel importing an iovec array; more by `writev`.
        written(
            || if n == 1 { (&*socket).write(&slices[0]) } else { (&*socket).write_vectored(&slices[..n]) },
        )
        .unwrap_or(Write::Later)
    }

    fn shutdown_write(&mut self, socket: &TcpStream) {
        let _ = socket.shutdown(Shutdown::Write);
    }

    fn close(&mut self, _index: u32, _generation: u32, mut socket: TcpStream) {
        // Dropping the socket closes it.
        let _ = self.poll.registry().deregister(&mut socket);
    }

    fn adopt(&mut self, socket: std::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream::from_std(socket))
    }

    fn resume_reading(&mut self, index: u32, generation: u32) {
        self.ready.push((index, generation));
    }

    fn stop_accepting(&mut self) {
        if let Some(listener) = self.acceptor.listener_mut() {
            let _ = self.poll.registry().deregister(listener);
        }
        self.acceptor = Acceptor::Own(None);
    }
}
