//! The client loop every mode runs on: a slab of connections, a shared read buffer and one
//! backend ([`Backend`]): a `mio::Poll` (epoll: readiness, the connections read and write their
//! sockets) or an io_uring ring (completions: the ring receives and sends, `uring.rs`). Modes
//! call [`Driver::dial`], [`Driver::poll`], [`Driver::on_ready`], [`Driver::flush`] and
//! [`Driver::close`] in their own loops, the same calls on either backend;
//! [`Driver::establish`] and [`Driver::close_all`] are the phases they share.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use slab::Slab;
use throng::proto::Item;
use throng::tls::rustls::ClientConnection;

use crate::conn::{Conn, End, Phase, Readiness, Source, Status, Wire, Writes};
use crate::ctl::Ctl;
use crate::net::{self, Sources};
use crate::stats::{bump, merge_causes, ratio, round3, Causes, Latency, Traffic};
use crate::target::Target;

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(50);

/// `--backend`: which kernel interface the client loop runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    Epoll,
    #[value(name = "io_uring")]
    IoUring,
}

impl Backend {
    /// The backend to run: `Err` (why) when io_uring was asked for and cannot run; with
    /// `Auto`, epoll and why io_uring cannot run when it cannot.
    pub(crate) fn resolve(self) -> Result<(Backend, Option<String>), String> {
        self.resolve_with(uring_probe)
    }

    /// [`resolve`](Self::resolve) for `target`: a `wss://` one runs on epoll, the only loop
    /// that drives TLS (`auto` picks it; `io_uring` is refused, saying so).
    pub(crate) fn resolve_for(self, target: &Target) -> Result<(Backend, Option<String>), String> {
        match (self, target.tls.is_some()) {
            (Backend::IoUring, true) => {
                Err("wss:// (TLS) runs on the epoll loop only; use --backend epoll".to_owned())
            }
            (_, true) => Ok((Backend::Epoll, None)),
            (_, false) => self.resolve(),
        }
    }

    /// [`resolve`](Self::resolve) with `probe` saying whether io_uring can run (asked only
    /// when it matters).
    fn resolve_with(
        self,
        probe: impl FnOnce() -> Result<(), String>,
    ) -> Result<(Backend, Option<String>), String> {
        match self {
            Backend::Epoll => Ok((Backend::Epoll, None)),
            Backend::IoUring => probe().map(|()| (Backend::IoUring, None)),
            Backend::Auto => Ok(match probe() {
                Ok(()) => (Backend::IoUring, None),
                Err(why) => (Backend::Epoll, Some(why)),
            }),
        }
    }

    /// The name `--backend` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Epoll => "epoll",
            Backend::IoUring => "io_uring",
        }
    }
}

#[cfg(target_os = "linux")]
fn uring_probe() -> Result<(), String> {
    crate::uring::probe()
}

#[cfg(not(target_os = "linux"))]
fn uring_probe() -> Result<(), String> {
    Err("io_uring is Linux only".into())
}

/// What a poll reported for a connection; hand it to [`Driver::on_ready`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    readiness: Readiness,
    input: Input,
}

impl Event {
    /// Adds a later epoll event of the same connection to one held back (a scenario's slow
    /// reader): the readiness of both. Events that carry bytes (io_uring) cannot be held.
    pub(crate) fn merge(&mut self, later: Event) {
        self.readiness.readable |= later.readiness.readable;
        self.readiness.writable |= later.readiness.writable;
        self.readiness.read_closed |= later.readiness.read_closed;
    }
}

/// Where an [`Event`]'s bytes are.
#[derive(Clone, Copy, Debug)]
enum Input {
    /// In the socket (epoll).
    Socket,
    /// None (a connect finished, or a send failed or went).
    Nothing,
    /// In a ring buffer, lent until the next poll.
    #[cfg(target_os = "linux")]
    Buffer {
        turn: u64,
        bid: u16,
        len: u32,
    },
    Eof,
    Failed(i32),
}

/// The kernel interface under the loop.
enum Io {
    Epoll {
        poll: Poll,
        events: Events,
    },
    #[cfg(target_os = "linux")]
    Uring {
        ring: Box<crate::uring::Ring>,
        completions: Vec<(usize, u32, crate::uring::Completion)>,
    },
}

/// The client's event loop and its connections.
pub(crate) struct Driver<S> {
    io: Io,
    ready: Vec<(usize, Event)>,
    /// The connections, keyed by slab index (the low 32 bits of their token).
    pub(crate) conns: Slab<Conn<S>>,
    /// What the connections share: the read buffer, compression, the byte counts. Apart from
    /// `conns`, so that a mode can queue on a connection with it ([`Conn::queue`]).
    pub(crate) wire: Wire,
    target: Target,
    sources: Sources,
    generation: u32,
}

impl<S> Driver<S> {
    /// A driver for `target` on `backend` ([`Backend::resolve`]d); `scratch` bytes of shared
    /// read buffer (at least 4 KiB); every connection offers permessage-deflate with `deflate`.
    pub(crate) fn new(
        target: &Target,
        sources: Sources,
        scratch: usize,
        backend: Backend,
        deflate: bool,
    ) -> io::Result<Self> {
        let io = match backend
            .resolve_for(target)
            .map_err(|why| io::Error::other(format!("--backend io_uring: {why}")))?
            .0
        {
            #[cfg(target_os = "linux")]
            Backend::IoUring => Io::Uring {
                ring: Box::new(crate::uring::Ring::new()?),
                completions: Vec::with_capacity(4096),
            },
            _ => Io::Epoll { poll: Poll::new()?, events: Events::with_capacity(4096) },
        };
        Ok(Driver {
            io,
            ready: Vec::with_capacity(4096),
            conns: Slab::new(),
            wire: Wire::new(scratch.max(4096), deflate),
            target: target.clone(),
            sources,
            generation: 0,
        })
    }

    /// The backend this driver runs on (`Epoll` or `IoUring`).
    pub(crate) fn backend(&self) -> Backend {
        match self.io {
            Io::Epoll { .. } => Backend::Epoll,
            #[cfg(target_os = "linux")]
            Io::Uring { .. } => Backend::IoUring,
        }
    }

    /// Starts a connection; returns its key, or the failure cause.
    pub(crate) fn dial(&mut self, state: S) -> Result<usize, &'static str> {
        let stream = net::connect(&mut self.sources, self.target.addr).map_err(|e| net::cause(&e))?;
        self.generation = self.generation.wrapping_add(1);
        let writes = match self.io {
            Io::Epoll { .. } => Writes::Direct,
            #[cfg(target_os = "linux")]
            Io::Uring { .. } => Writes::Handed,
        };
        let (host, path, offer) = (&self.target.host, &self.target.path, self.wire.deflate.is_some());
        let mut conn = Conn::new(stream, host, path, self.generation, writes, offer, state)
            .map_err(|_| "bad_request")?;
        if let Some(tls) = &self.target.tls {
            // `resolve_for` keeps TLS targets on epoll, where connections write their sockets.
            let session = ClientConnection::new(tls.config.clone(), tls.name.clone());
            conn = conn.with_tls(Box::new(session.map_err(|e| net::tls_cause(&e))?));
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        match &mut self.io {
            Io::Epoll { poll, .. } => {
                let token = Token(((self.generation as usize) << 32) | key);
                poll.registry()
                    .register(conn.stream_mut(), token, Interest::READABLE | Interest::WRITABLE)
                    .map_err(|e| net::cause(&e))?;
            }
            #[cfg(target_os = "linux")]
            Io::Uring { ring, .. } => ring.watch_connect(key, self.generation, conn.stream()),
        }
        entry.insert(conn);
        Ok(key)
    }

    /// Waits for events; returns `(key, event)` of live connections (a connection may have
    /// several). Take the list with `std::mem::take` and hand it back with
    /// [`give_back`](Self::give_back); its events are good until the next poll.
    pub(crate) fn poll(&mut self, timeout: Duration) -> io::Result<Vec<(usize, Event)>> {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        match &mut self.io {
            Io::Epoll { poll, events } => {
                match poll.poll(events, Some(timeout)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                for event in events.iter() {
                    let key = event.token().0 & 0xffff_ffff;
                    let generation = (event.token().0 >> 32) as u32;
                    if self.conns.get(key).is_some_and(|c| c.generation == generation) {
                        let read_closed = event.is_read_closed() || event.is_error();
                        let readiness = Readiness {
                            readable: event.is_readable() || read_closed,
                            writable: event.is_writable() || event.is_error(),
                            read_closed,
                        };
                        ready.push((key, Event { readiness, input: Input::Socket }));
                    }
                }
            }
            #[cfg(target_os = "linux")]
            Io::Uring { ring, completions } => {
                use crate::uring::Completion;
                completions.clear();
                ring.wait(timeout, completions)?;
                let turn = ring.turn();
                for &(key, generation, what) in completions.iter() {
                    let Some(conn) = self.conns.get_mut(key).filter(|c| c.generation == generation) else {
                        continue;
                    };
                    let readable = Readiness { readable: true, ..Readiness::default() };
                    let event = match what {
                        Completion::Connected => Event {
                            readiness: Readiness { writable: true, ..Readiness::default() },
                            input: Input::Nothing,
                        },
                        Completion::Received { bid, len } => {
                            Event { readiness: readable, input: Input::Buffer { turn, bid, len } }
                        }
                        Completion::Eof => Event {
                            readiness: Readiness { read_closed: true, ..readable },
                            input: Input::Eof,
                        },
                        Completion::Failed(errno) => {
                            Event { readiness: readable, input: Input::Failed(errno) }
                        }
                        Completion::Sent => {
                            conn.sent();
                            hand_over(ring, key, conn, &mut self.wire.traffic);
                            continue;
                        }
                    };
                    ready.push((key, event));
                }
            }
        }
        Ok(ready)
    }

    /// Returns the list [`poll`](Self::poll) handed out, to reuse its allocation.
    pub(crate) fn give_back(&mut self, ready: Vec<(usize, Event)>) {
        self.ready = ready;
    }

    /// Lets connection `key` handle an event of the last [`poll`](Self::poll).
    pub(crate) fn on_ready(
        &mut self,
        key: usize,
        event: Event,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> Status {
        let Some(conn) = self.conns.get_mut(key) else { return Status::Busy };
        let source = match event.input {
            Input::Socket => Source::Socket,
            Input::Nothing => Source::Bytes(&[]),
            #[cfg(target_os = "linux")]
            Input::Buffer { turn, bid, len } => match &self.io {
                // A stale event (from before the last poll) has nothing left to read.
                Io::Uring { ring, .. } => Source::Bytes(ring.data(turn, bid, len).unwrap_or_default()),
                Io::Epoll { .. } => Source::Bytes(&[]),
            },
            Input::Eof => Source::Eof,
            Input::Failed(errno) => Source::Failed(errno),
        };
        let connecting = conn.phase() == Phase::Connecting;
        let status = conn.on_ready(event.readiness, source, &mut self.wire, on_item);
        #[cfg(target_os = "linux")]
        if let (Io::Uring { ring, .. }, Status::Busy | Status::Opened) = (&mut self.io, status) {
            if connecting && conn.phase() == Phase::Connecting {
                // Not connected yet after all: watch on.
                ring.watch_connect(key, conn.generation, conn.stream());
            } else if connecting {
                if let Err(e) = ring.start_receiving(key, conn.stream()) {
                    return Status::Done(End::Failed(net::cause(&e)));
                }
            }
            hand_over(ring, key, conn, &mut self.wire.traffic);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = connecting;
        status
    }

    /// Sends what connection `key` has queued (on epoll, one `write` now; on io_uring, with the
    /// next poll). `Err` when the connection failed: remove it.
    pub(crate) fn flush(&mut self, key: usize) -> Result<(), &'static str> {
        self.then_send(key, Conn::flush)
    }

    /// Starts connection `key`'s close handshake with 1000 (nothing unless it is open). `Err`
    /// when the connection failed: remove it.
    pub(crate) fn close(&mut self, key: usize) -> Result<(), &'static str> {
        self.then_send(key, Conn::close)
    }

    /// Runs `act` on connection `key`, then hands what it queued to the ring (on epoll `act`
    /// wrote it already).
    fn then_send(
        &mut self,
        key: usize,
        act: impl FnOnce(&mut Conn<S>, &mut Traffic) -> Result<(), &'static str>,
    ) -> Result<(), &'static str> {
        let Some(conn) = self.conns.get_mut(key) else { return Ok(()) };
        act(conn, &mut self.wire.traffic)?;
        #[cfg(target_os = "linux")]
        if let Io::Uring { ring, .. } = &mut self.io {
            hand_over(ring, key, conn, &mut self.wire.traffic);
        }
        Ok(())
    }

    /// The bytes and messages counted so far.
    pub(crate) fn traffic(&self) -> Traffic {
        let mut traffic = self.wire.traffic.clone();
        traffic.finish();
        traffic
    }

    /// With `--deflate`, how the connections negotiated it.
    pub(crate) fn deflate_report(&self) -> Option<crate::deflate::DeflateReport> {
        self.wire.deflate.as_ref().map(crate::deflate::Codec::report)
    }

    /// One turn of a loop that sends nothing of its own (waiting for `go`, holding, collecting
    /// deliveries): waits up to `timeout`, lets each ready connection handle its readiness and
    /// see its frames through `on_item`, and removes those that end, counting why in `ended`.
    pub(crate) fn poll_once(
        &mut self,
        timeout: Duration,
        ended: &mut Causes,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> io::Result<()> {
        let ready = self.poll(timeout)?;
        for &(key, readiness) in &ready {
            if let Status::Done(end) = self.on_ready(key, readiness, on_item) {
                self.remove(key);
                bump(ended, end_cause(end));
            }
        }
        self.give_back(ready);
        Ok(())
    }

    /// Drops connection `key` (closing the socket removes it from the poll; the ring's
    /// operations on it are cancelled).
    pub(crate) fn remove(&mut self, key: usize) -> Option<Conn<S>> {
        let conn = self.conns.try_remove(key)?;
        #[cfg(target_os = "linux")]
        if let Io::Uring { ring, .. } = &mut self.io {
            ring.forget(key);
        }
        Some(conn)
    }

    /// Drops every connection.
    pub(crate) fn clear(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.remove(key);
        }
    }

    /// Opens `n` connections, at most `concurrency` being set up at once and, with `rate`, at
    /// most `rate` started per second. Returns when every attempt has succeeded or failed, or
    /// when `ctl` says stop (attempts in progress are then dropped).
    ///
    /// `on_item` sees the frames that arrive while the others are being set up; with
    /// `wait_ready`, a connection counts as established only when `on_item` returns true for
    /// one of them (fanout: the gateway's welcome, sent once the subscriptions are in place).
    pub(crate) fn establish(
        &mut self,
        ctl: &Ctl,
        plan: &DialPlan,
        mut make_state: impl FnMut(usize) -> S,
        on_item: &mut impl FnMut(&mut S, &Item<'_>) -> bool,
    ) -> io::Result<DialStats> {
        let &DialPlan { n, rate, concurrency, connect_timeout, wait_ready } = plan;
        ctl.connecting(n as u64);
        let mut stats = DialStats::default();
        let mut latency = Latency::new();
        let start = Instant::now();
        let mut last_open = start;
        let (mut started, mut pending) = (0usize, 0usize);
        let mut next_tick = start + TICK;
        let mut became_ready = Vec::new();
        while (started < n || pending > 0) && !ctl.stopped() {
            let now = Instant::now();
            let allowed = match rate {
                Some(rate) if rate > 0.0 => {
                    n.min((now.duration_since(start).as_secs_f64() * rate) as usize + 1)
                }
                _ => n,
            };
            while started < allowed && pending < concurrency.max(1) {
                started += 1;
                match self.dial(make_state(started - 1)) {
                    Ok(_) => pending += 1,
                    Err(cause) => bump(&mut stats.failed, cause),
                }
            }
            let wait = if started < n && pending < concurrency { Duration::from_millis(1) } else { TICK };
            let ready = self.poll(wait)?;
            for &(key, readiness) in &ready {
                let counted = self.conns.get(key).is_some_and(|c| c.counted);
                let mut became = false;
                let status = self.on_ready(key, readiness, &mut |state, item| {
                    became |= on_item(state, item);
                });
                if became && wait_ready && !counted {
                    became_ready.push(key);
                }
                match status {
                    Status::Opened if !wait_ready => became_ready.push(key),
                    Status::Busy | Status::Opened => {}
                    Status::Done(end) => {
                        became_ready.retain(|&k| k != key);
                        self.remove(key);
                        if counted {
                            stats.dropped += 1;
                        } else {
                            pending -= 1;
                            bump(&mut stats.failed, end_cause(end));
                        }
                    }
                }
                for key in became_ready.drain(..) {
                    let conn = &mut self.conns[key];
                    conn.counted = true;
                    pending -= 1;
                    stats.established += 1;
                    last_open = Instant::now();
                    latency.record(last_open.duration_since(conn.started));
                }
            }
            self.give_back(ready);
            ctl.tick(stats.established, stats.established);
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                let expired: Vec<usize> = (self.conns.iter())
                    .filter(|(_, c)| !c.counted && now.duration_since(c.started) > connect_timeout)
                    .map(|(key, _)| key)
                    .collect();
                for key in expired {
                    self.remove(key);
                    pending -= 1;
                    bump(&mut stats.failed, "timeout");
                }
            }
        }
        // Stopped: what is still being set up is abandoned.
        let abandoned: Vec<usize> = self.conns.iter().filter(|(_, c)| !c.counted).map(|(k, _)| k).collect();
        for key in abandoned {
            self.remove(key);
            bump(&mut stats.failed, "interrupted");
        }
        // Set up: whatever the mode does next is a steady phase.
        ctl.target(None);
        stats.attempted = started as u64;
        stats.elapsed_s = last_open.duration_since(start).as_secs_f64();
        stats.handshake_latency = latency;
        stats.finish();
        Ok(stats)
    }

    /// Closes every open connection with 1000 and waits (up to `timeout`) for the close
    /// handshakes and the server's FIN. Every connection is gone afterwards.
    pub(crate) fn close_all(
        &mut self,
        ctl: &Ctl,
        timeout: Duration,
        on_item: &mut impl FnMut(&mut S, &Item<'_>),
    ) -> io::Result<CloseStats> {
        ctl.phase("closing");
        let mut stats = CloseStats::default();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if self.conns[key].phase() != Phase::Open {
                continue;
            }
            if let Err(cause) = self.close(key) {
                self.remove(key);
                bump(&mut stats.failed, cause);
            }
        }
        let deadline = Instant::now() + timeout;
        while !self.conns.is_empty() && Instant::now() < deadline {
            let ready = self.poll(TICK)?;
            for &(key, readiness) in &ready {
                match self.on_ready(key, readiness, on_item) {
                    Status::Busy | Status::Opened => {}
                    Status::Done(end) => {
                        self.remove(key);
                        stats.count(end);
                    }
                }
            }
            self.give_back(ready);
            ctl.tick(self.conns.len() as u64, stats.clean);
        }
        stats.timed_out = self.conns.len() as u64;
        self.clear();
        Ok(stats)
    }
}

/// Hands connection `key`'s queued bytes to the ring, if it has any to send now.
#[cfg(target_os = "linux")]
fn hand_over<S>(ring: &mut crate::uring::Ring, key: usize, conn: &mut Conn<S>, traffic: &mut Traffic) {
    if conn.has_unsent() {
        let bytes = conn.hand_over(ring.spare());
        traffic.wire_bytes_sent += bytes.len() as u64;
        ring.send(key, conn.generation, conn.stream(), bytes);
    }
}

/// The failure-count key of an unexpected end.
pub(crate) fn end_cause(end: End) -> &'static str {
    match end {
        End::Clean => "closed",
        End::ServerClosed(_) => "closed_by_server",
        End::Failed(cause) => cause,
    }
}

/// How [`Driver::establish`] opens connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DialPlan {
    pub(crate) n: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) concurrency: usize,
    pub(crate) connect_timeout: Duration,
    /// A connection is established when the mode's `on_item` says so, not at the 101.
    pub(crate) wait_ready: bool,
}

/// What [`Driver::establish`] did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct DialStats {
    pub(crate) attempted: u64,
    pub(crate) established: u64,
    /// Attempts that failed, by cause.
    pub(crate) failed: Causes,
    /// Connections that were upgraded and then ended while the others were being set up.
    pub(crate) dropped: u64,
    /// From the first connect to the last upgrade.
    pub(crate) elapsed_s: f64,
    pub(crate) handshakes_per_s: f64,
    /// Connect start to 101 received (fanout: to the welcome message).
    pub(crate) handshake_latency: Latency,
}

impl DialStats {
    /// Adds another process's dialing (which ran at the same time).
    pub(crate) fn merge(&mut self, other: DialStats) {
        self.attempted += other.attempted;
        self.established += other.established;
        merge_causes(&mut self.failed, other.failed);
        self.dropped += other.dropped;
        self.elapsed_s = self.elapsed_s.max(other.elapsed_s);
        self.handshake_latency.add(&other.handshake_latency);
        self.finish();
    }

    fn finish(&mut self) {
        self.handshakes_per_s = round3(ratio(self.established as f64, self.elapsed_s));
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{}/{} established in {:.2}s ({:.0}/s), failed {:?}, dropped {}; handshake {}",
            self.established,
            self.attempted,
            self.elapsed_s,
            self.handshakes_per_s,
            self.failed,
            self.dropped,
            self.handshake_latency.summary().line()
        )
    }
}

/// What [`Driver::close_all`] did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct CloseStats {
    /// Close handshake completed and the server closed TCP.
    pub(crate) clean: u64,
    /// The server closed first.
    pub(crate) server_closed: u64,
    pub(crate) failed: Causes,
    /// Still not closed when the timeout came.
    pub(crate) timed_out: u64,
}

impl CloseStats {
    /// Counts how a connection we closed ended.
    pub(crate) fn count(&mut self, end: End) {
        match end {
            End::Clean => self.clean += 1,
            End::ServerClosed(_) => self.server_closed += 1,
            End::Failed(cause) => bump(&mut self.failed, cause),
        }
    }

    pub(crate) fn merge(&mut self, other: CloseStats) {
        self.clean += other.clean;
        self.server_closed += other.server_closed;
        merge_causes(&mut self.failed, other.failed);
        self.timed_out += other.timed_out;
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{} clean, {} closed by server, failed {:?}, {} timed out",
            self.clean, self.server_closed, self.failed, self.timed_out
        )
    }

    pub(crate) fn all_clean(&self) -> bool {
        self.failed.is_empty() && self.timed_out == 0 && self.server_closed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_saying_why_and_an_explicit_io_uring_refuses() {
        let refused = || Err::<(), _>("disabled".to_owned());
        assert_eq!(Backend::Auto.resolve_with(refused), Ok((Backend::Epoll, Some("disabled".into()))));
        assert_eq!(Backend::IoUring.resolve_with(refused), Err("disabled".into()));
        assert_eq!(Backend::Auto.resolve_with(|| Ok(())), Ok((Backend::IoUring, None)));
        assert_eq!(Backend::IoUring.resolve_with(|| Ok(())), Ok((Backend::IoUring, None)));
        let never = || -> Result<(), String> { panic!("epoll needs no probe") };
        assert_eq!(Backend::Epoll.resolve_with(never), Ok((Backend::Epoll, None)));
    }

    #[test]
    fn wss_runs_on_epoll_and_refuses_io_uring_clearly() {
        let wss = Target::parse("wss://127.0.0.1:4443/").unwrap();
        assert_eq!(Backend::Auto.resolve_for(&wss), Ok((Backend::Epoll, None)));
        assert_eq!(Backend::Epoll.resolve_for(&wss), Ok((Backend::Epoll, None)));
        let err = Backend::IoUring.resolve_for(&wss).unwrap_err();
        assert!(err.contains("use --backend epoll"), "{err}");
        let ws = Target::parse("ws://127.0.0.1:4443/").unwrap();
        assert_eq!(Backend::Epoll.resolve_for(&ws), Ok((Backend::Epoll, None)));
    }
}
