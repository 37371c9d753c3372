//! The server engine: thread-per-core event loops, connection state in a slab, worker channels.
//!
//! Start one with [`Server::builder`]. Each loop thread owns a `mio::Poll`, its own listener bound
//! with `SO_REUSEPORT` (the kernel spreads connections; without it loop 0 accepts and hands
//! sockets round-robin to the others), a slab of connections, a timing wheel and one scratch read
//! buffer. Decoded messages go to the application's worker threads over bounded
//! `crossbeam-channel`s, the event shards ([`ServerBuilder::event_shards`]): each connection's
//! events go to one shard, in order. When the workers fall behind, a loop keeps at most one
//! read's worth of events and stops reading from its sockets until they catch up (TCP flow
//! control then pushes back on the peers), so memory does not grow.

pub(crate) mod backend;
pub(crate) mod buffers;
pub(crate) mod compress;
mod config;
pub(crate) mod conn;
pub(crate) mod core;
mod delivery;
mod event;
mod handle;
mod ids;
pub(crate) mod mailbox;
pub(crate) mod outbound;
pub(crate) mod stats;
pub(crate) mod timer;
pub(crate) mod tls;
pub(crate) mod topics;

use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Poll, Waker};

use self::mailbox::{Command, Wake};

use self::backend::mio::{Mio, WAKER};
use self::backend::Acceptor;
use self::config::RateLimit;
pub use self::config::{Backend, Config, SlowConsumerPolicy};
use self::core::{Loop, LoopCore};
use self::delivery::{shard_of, Delivery, Erased, RawEvent};
pub use self::delivery::{Delivered, Events, MAX_SHARDS};
pub use self::event::{
    Accepted, Admission, CloseCause, Event, Flow, HttpHook, Inline, MessageHook, UpgradeHook,
};
pub use self::handle::Handle;
pub use self::ids::{ConnId, MAX_CONNS_PER_LOOP, MAX_LOOPS};
pub use self::mailbox::CommandError;
use self::mailbox::{LoopMailbox, Shared};
pub use self::outbound::Prepared;
use self::stats::LoopStats;
pub use self::stats::{AtomicHistogram, Histogram, Stats, TlsFailure, TlsFailures, LATENCY_BUCKETS};
use self::topics::Interner;
pub use self::topics::{Joined, PublishReceipt, TopicHook};
use crate::proto::handshake::{Rejection, RequestLimits, UpgradeRequest};
use crate::proto::DataKind;

/// Configures and starts a [`Server`]; `T` is the type of the upgrade hook's value
/// ([`ServerBuilder::on_upgrade`]).
pub struct ServerBuilder<T = ()> {
    config: Config,
    value: PhantomData<fn() -> T>,
}

impl<T> ServerBuilder<T> {
    /// The address to listen on (default `127.0.0.1:9001`; port 0 picks a free port).
    pub fn bind(mut self, addr: impl ToSocketAddrs) -> io::Result<Self> {
        self.config.addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))?;
        Ok(self)
    }

    /// The number of event loops (default: the available cores; at most [`MAX_LOOPS`]).
    pub fn loops(mut self, loops: usize) -> Self {
        self.config.loops = loops.clamp(1, MAX_LOOPS);
        self
    }

    /// The largest message accepted (default 16 MiB); larger ones close the connection with 1009.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.config.limits.max_message_size = bytes;
        self
    }

    /// Negotiates permessage-deflate (RFC 7692) in `mode` with default settings (off by
    /// default); see [`Compression`](crate::proto::deflate::Compression) for what each mode
    /// costs. The message size limit applies to the inflated size.
    pub fn compression(mut self, mode: crate::proto::deflate::Compression) -> Self {
        self.config.deflate.mode = mode;
        self
    }

    /// All of the permessage-deflate settings (mode, threshold, level, window sizes).
    pub fn deflate(mut self, config: crate::proto::deflate::DeflateConfig) -> Self {
        self.config.deflate = config;
        self
    }

    /// The largest frame accepted (default 16 MiB); larger ones close the connection with 1009.
    pub fn max_frame_size(mut self, bytes: u64) -> Self {
        self.config.limits.max_frame_size = bytes;
        self
    }

    /// Limits on the upgrade request (header block size, header count, line length).
    pub fn request_limits(mut self, limits: RequestLimits) -> Self {
        self.config.request_limits = limits;
        self
    }

    /// How long a new connection may take to send its upgrade request (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Close connections that sent nothing for this long with 1001 (default: never).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// Ping connections silent for `interval`, and drop those that do not answer within
    /// `pong_timeout` (default: no pings). Browsers cannot ping; this is how dead peers are found.
    pub fn ping_interval(mut self, interval: Duration, pong_timeout: Duration) -> Self {
        self.config.ping_interval = Some(interval);
        self.config.pong_timeout = pong_timeout;
        self
    }

    /// How long to wait for the peer's close frame (and FIN) after ours (default 5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// The cap on bytes queued for one connection (default 4 MiB). A single message larger than
    /// the cap is still sent when nothing else is queued.
    pub fn max_outbound_bytes(mut self, bytes: usize) -> Self {
        self.config.max_outbound_bytes = bytes;
        self
    }

    /// What to do with a connection over its outbound cap (default: close with 1008).
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.config.slow_consumer = policy;
        self
    }

    /// The most connections over all loops; more are closed at accept.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// The most connections per loop; more are closed at accept.
    pub fn max_connections_per_loop(mut self, max: usize) -> Self {
        self.config.max_connections_per_loop = max;
        self
    }

    /// The capacity of the event channels over all shards (default 65536 events): each shard
    /// holds `capacity / shards`, rounded up. Allocated at start.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity.max(1);
        self
    }

    /// How many event shards to deliver to (default 1; at most [`MAX_SHARDS`]): one for each
    /// worker thread that should handle connections on its own. Each connection's events all go
    /// to one shard, chosen from its id, so a worker reading a shard sees a connection's `Open`,
    /// messages and `Close` in order. See [`Server::shards`].
    pub fn event_shards(mut self, shards: usize) -> Self {
        self.config.event_shards = shards.clamp(1, MAX_SHARDS);
        self
    }

    /// The capacity of each loop's command queue (default 16384, allocated at start: about 55
    /// bytes an entry) and how long a [`Handle`] call waits for room in a full one before it
    /// returns [`CommandError::QueueFull`] (default 100 ms). The queue holds sends, closes, subscriptions and publishes; a loop
    /// runs at most `capacity` of them per turn.
    pub fn command_queue(mut self, capacity: usize, timeout: Duration) -> Self {
        self.config.command_capacity = capacity.max(1);
        self.config.command_timeout = timeout;
        self
    }

    /// How long a fragmented message (or one large frame) may take to arrive whole (default
    /// 60 s; `None`: no limit). Slower ones close the connection with 1008.
    pub fn message_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.message_timeout = timeout;
        self
    }

    /// The most bytes one loop holds for messages that arrived in pieces, over all its
    /// connections (default 256 MiB). A piece that would go past it closes its connection with
    /// 1008 ("server busy").
    pub fn max_assembly_bytes(mut self, bytes: usize) -> Self {
        self.config.max_assembly_bytes = bytes;
        self
    }

    /// Limits the messages and pings each connection may send: `per_second` on average with
    /// bursts of `burst` (default: no limit; a rate of 0 turns it off). Over the limit the
    /// connection is closed with 1008. Resolution 0.1 ms, so rates above 10,000/s count as
    /// 10,000/s.
    pub fn max_message_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.config.message_rate = RateLimit::new(per_second, burst);
        self
    }

    /// Reads a PROXY protocol header (v1 or v2) at the start of every connection from a peer in
    /// `trusted` (a load balancer), and treats the address it names as the client's: in the
    /// admission and upgrade hooks and in [`Event::Open`]. A trusted peer that sends no valid
    /// header gets HTTP 400; peers outside the list are clients themselves and may not send one.
    pub fn proxy_protocol(mut self, trusted: crate::net::CidrList) -> Self {
        self.config.proxy_trusted = Some(trusted);
        self
    }

    /// Terminates TLS on the listener (`wss://`): every connection starts with a TLS
    /// handshake, which the handshake timeout covers, then speaks WebSocket inside it.
    /// [`crate::tls::server_config`] builds a configuration (certificates reloadable while
    /// connections run); any rustls [`ServerConfig`](rustls::ServerConfig) works. Not with
    /// [`ServerBuilder::proxy_protocol`] (yet): `start` refuses the pair.
    ///
    /// The engine turns `enable_secret_extraction` on (copying the configuration if it is
    /// shared): after a TLS 1.3 handshake it takes the session's traffic keys out of rustls
    /// into its own compact record layer, which is what keeps an idle `wss://` connection
    /// near 1 KiB.
    pub fn tls(mut self, config: impl Into<Arc<rustls::ServerConfig>>) -> Self {
        let mut config = config.into();
        if !config.enable_secret_extraction {
            Arc::make_mut(&mut config).enable_secret_extraction = true;
        }
        self.config.tls = Some(config);
        self
    }

    /// Counts clients from their first byte, before the upgrade (see [`Admission`]).
    pub fn admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.config.admission = Some(admission);
        self
    }

    /// Request headers to copy into [`Event::Open`] (names, case-insensitive).
    pub fn open_headers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.config.open_headers = names.into_iter().map(Into::into).collect();
        self
    }

    /// Decides each upgrade: accept (subprotocol, extra headers, a value) or reject with an HTTP
    /// status. Runs on the loop thread.
    ///
    /// The hook's [`Accepted::value`] arrives in the connection's [`Event::Open`], so its type
    /// becomes the server's: `Accepted::default()` keeps `()`, `Accepted::new(session)` makes it
    /// a `Server<Session>` whose receivers yield `Event<Session>`. The value is not stored with
    /// the connection; if the connection is refused after the hook accepted it, the value is
    /// dropped without an event. A hook that never accepts names the type it would attach, e.g.
    /// `Err::<Accepted, _>(Rejection::forbidden())`.
    pub fn on_upgrade<U, F>(self, hook: F) -> ServerBuilder<U>
    where
        U: Send + 'static,
        F: Fn(&UpgradeRequest<'_>, SocketAddr) -> Result<Accepted<U>, Rejection> + Send + Sync + 'static,
    {
        let mut config = self.config;
        config.upgrade_hook = Some(Arc::new(move |request: &UpgradeRequest<'_>, peer| {
            hook(request, peer).map(|accepted| Accepted {
                subprotocol: accepted.subprotocol,
                headers: accepted.headers,
                user: accepted.user,
                topics: accepted.topics,
                value: Box::new(accepted.value) as Erased,
            })
        }));
        // An open hook set before was written for the old value type.
        config.open_hook = None;
        ServerBuilder { config, value: PhantomData }
    }

    /// Runs `hook(conn, value, out)` on the loop thread when a connection opens, right after
    /// its upgrade hook accepted it and before its 101 is sent and its [`Event::Open`] queued,
    /// with its upgrade value (which it may change: the Open event carries it on). What the
    /// application keeps per connection can be recorded here, so it is in place before the
    /// client hears anything; and the hook may write the connection's first text message into
    /// `out` (UTF-8; left empty, nothing is sent), queued right behind the 101 (one write for
    /// both) and before anything else, e.g. a welcome naming the connection and what it joined
    /// ([`Accepted::topics`] are joined by then). `out` is the loop's own buffer, so this costs
    /// no allocation, no command and nothing after the upgrade, unlike a welcome sent from a
    /// worker. Text that is not UTF-8 is not sent (and logged). Set it after
    /// [`ServerBuilder::on_upgrade`], which fixes the value type (and drops a hook set before
    /// it).
    /// Runs `hook(conn, code, reason, clean)` on the loop thread as a connection that opened is
    /// removed, before its [`Event::Close`] is queued: the counterpart of
    /// [`ServerBuilder::on_open`], so that what an application recorded there leaves on the
    /// same thread, in order with the slot's next connection (whose open hook may run before a
    /// worker has read this Close).
    pub fn on_open<F>(mut self, hook: F) -> Self
    where
        F: Fn(ConnId, &mut T, &mut Vec<u8>) + Send + Sync + 'static,
        T: 'static,
    {
        self.config.open_hook = Some(Arc::new(move |conn, value: &mut Erased, out: &mut Vec<u8>| {
            if let Some(value) = value.downcast_mut::<T>() {
                hook(conn, value, out);
            }
        }));
        self
    }

    /// Runs `hook(conn, code, reason, clean, cause)` on the loop thread as a connection that
    /// opened is removed, before its [`Event::Close`] (which carries the same values) is
    /// queued: the counterpart of [`ServerBuilder::on_open`], so that what an application
    /// recorded there leaves on the same thread, in order with the slot's next connection
    /// (whose open hook may run before a worker has read this Close).
    pub fn on_close<F>(mut self, hook: F) -> Self
    where
        F: Fn(ConnId, u16, &str, bool, CloseCause) + Send + Sync + 'static,
    {
        self.config.close_hook = Some(Arc::new(hook));
        self
    }

    /// Whether the workers get [`Event::Open`] and [`Event::Close`] (on by default). An
    /// application that does all its per-connection work on the loop ([`ServerBuilder::on_open`],
    /// [`ServerBuilder::on_close`], [`ServerBuilder::on_message`]) turns them off: an upgrade then
    /// builds no event (its path, query and headers are not copied, the upgrade hook's value is
    /// dropped at the open) and no worker wakes for it. Messages forwarded to the
    /// workers still come as [`Event::Message`]. With [`ServerBuilder::admission`], the close hook
    /// is then where an opened connection's slot must be released.
    pub fn lifecycle_events(mut self, on: bool) -> Self {
        self.config.lifecycle_events = on;
        self
    }

    /// Handles messages on the loop thread (cheap logic such as echo); return [`Flow::Forward`]
    /// to also deliver them to the workers.
    pub fn on_message<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut Inline<'_>, DataKind, &[u8]) -> Flow + Send + Sync + 'static,
    {
        self.config.message_hook = Some(Arc::new(hook));
        self
    }

    /// Answers plain HTTP `GET` requests (no `Upgrade`) on the WebSocket listener: the hook gets
    /// the request target and raw head and returns a whole response, or `None` for a 400.
    pub fn on_http<F>(mut self, hook: F) -> Self
    where
        F: Fn(&str, &[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        self.config.http_hook = Some(Arc::new(hook));
        self
    }

    /// Reports a topic's first subscriber and its last: `hook(topic, subscribers)` runs when the
    /// topic's subscribers over all loops go from 0 to 1 or from 1 to 0, with the count read
    /// after the change. It is not called for other changes of the count.
    ///
    /// The reports are level-triggered: each says "the count changed; here it is now", not
    /// "it is now 1" or "it is now 0". Two loops report independently, so a topic that went
    /// 0 → 1 on one loop and 1 → 0 on another may be reported in either order, and the count
    /// given may already be stale. Act on the current value (the argument, or
    /// [`Handle::subscribers`] read in the hook): e.g. subscribe upstream while it is above 0
    /// and unsubscribe when it is 0, under the application's own lock.
    ///
    /// Runs on the loop thread that made the change, in the middle of its work: it must be
    /// cheap and must not block (in particular, no [`Handle`] call that queues a command and
    /// may wait for room; [`Handle::subscribers`] and the other counts are fine).
    pub fn on_topic<F>(mut self, hook: F) -> Self
    where
        F: Fn(&str, usize) + Send + Sync + 'static,
    {
        self.config.topic_hook = Some(Arc::new(hook));
        self
    }

    /// Reports that a topic's subscriber count changed: `hook(topic)` runs on the loop thread
    /// that changed it, once, and not again for that topic until someone calls
    /// [`Handle::observe`] for it, which re-arms the report and reads the count. Cheap: one
    /// atomic swap per subscribe or leave when the topic is reported already. The same rules as
    /// for [`ServerBuilder::on_topic`] apply (cheap, must not block); the two are independent,
    /// both may run for one change.
    ///
    /// No change is lost: a change after an `observe` re-armed the report either is in the
    /// count that `observe` returns or runs the hook (or both: a change between the re-arm and
    /// the read is counted and reported, so a report may find nothing new). Changes made while
    /// the report is out are not reported again, only counted. The report belongs to the
    /// topic's record: once a topic has no subscriber (and no subscribe on its way) the record
    /// goes, and the next subscriber makes a new, armed one.
    pub fn on_topic_change<F>(mut self, hook: F) -> Self
    where
        F: Fn(&str) + Send + Sync + 'static,
    {
        self.config.change_hook = Some(Arc::new(hook));
        self
    }

    /// Whether to give every loop its own `SO_REUSEPORT` listener (default true). Off: loop 0
    /// accepts and distributes round-robin.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.config.reuse_port = on;
        self
    }

    /// How the loops move bytes (default [`Backend::Auto`]: io_uring where the kernel can run
    /// it, epoll otherwise; `THRONG_BACKEND` in the environment overrides `Auto`).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.config.backend = backend;
        self
    }

    /// io_uring: how many receive buffers each loop lends the kernel and their size (default
    /// 256 of 128 KiB, reserved address space; the count is rounded up to a power of two, at
    /// most 32768). A buffer is resident only for the pages receives wrote, only a few sit in
    /// the kernel's ring while connections are idle, and the pages of buffers not needed for a
    /// second are given back: an idle loop holds little of it. A receive takes at most one
    /// buffer, so its size bounds what one receive reads.
    pub fn recv_buffers(mut self, count: u16, size: u32) -> Self {
        self.config.recv_buffers = (count, size.max(512));
        self
    }

    /// io_uring: how many connections of each loop are registered in its ring's file table
    /// (default 65,536, and never more than the open-files limit, which the kernel enforces; 0
    /// for none). A registered connection's receives and sends name it by its slot, which spares
    /// the kernel a descriptor lookup and reference count on each (a few per cent of CPU at
    /// small messages); the table costs the kernel 8 bytes a slot. Connections in slots past it
    /// use their descriptors.
    pub fn registered_files(mut self, slots: u32) -> Self {
        self.config.registered_files = slots;
        self
    }

    /// Binds, spawns the loops and returns the running server.
    pub fn start(self) -> io::Result<Server<T>> {
        Server::start(self.config)
    }
}

/// A running server: its loops, its event shards and a [`Handle`]; `T` is the type of the
/// upgrade hook's value.
pub struct Server<T = ()> {
    handle: Handle,
    shards: Vec<Receiver<RawEvent>>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
    nofile: Option<(u64, u64)>,
    value: PhantomData<fn() -> T>,
}

fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Resolves [`Backend::Auto`] (and `THRONG_BACKEND`) to the backend the loops run on; an
/// explicit io_uring the kernel cannot run is an error.
fn choose_backend(asked: Backend) -> io::Result<Backend> {
    let asked = match (asked, std::env::var("THRONG_BACKEND")) {
        (Backend::Auto, Ok(value)) if !value.is_empty() => value.parse().map_err(|e: String| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("THRONG_BACKEND: {e}"))
        })?,
        (asked, _) => asked,
    };
    if asked == Backend::Epoll {
        return Ok(Backend::Epoll); // No probe: nothing of io_uring is touched.
    }
    match (asked, io_uring_usable()) {
        (Backend::Epoll, _) => Ok(Backend::Epoll),
        (Backend::IoUring, Ok(())) | (Backend::Auto, Ok(())) => Ok(Backend::IoUring),
        (Backend::IoUring, Err(why)) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the io_uring backend cannot start: {why}"),
        )),
        (Backend::Auto, Err(why)) => {
            log::info!("io_uring unavailable ({why}): using epoll");
            Ok(Backend::Epoll)
        }
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
fn io_uring_usable() -> Result<(), String> {
    backend::uring::probe()
}

#[cfg(not(all(target_os = "linux", feature = "io-uring")))]
fn io_uring_usable() -> Result<(), String> {
    Err("built without the io-uring feature (or not on Linux)".into())
}

/// What one loop's backend needs before its thread starts: the poller (epoll) or the wake-up
/// (io_uring, whose ring is made on the loop's own thread).
enum LoopIo {
    Mio(Poll),
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    Uring(Arc<backend::uring::EventFd>),
}

impl LoopIo {
    fn new(backend: Backend) -> io::Result<(Arc<dyn Wake>, Self)> {
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        if backend == Backend::IoUring {
            let waker = Arc::new(backend::uring::EventFd::new()?);
            return Ok((waker.clone(), LoopIo::Uring(waker)));
        }
        let _ = backend;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok((waker, LoopIo::Mio(poll)))
    }

    /// Starts loop `loop_id`'s thread; an error setting up its backend is returned here.
    fn spawn(
        self,
        loop_id: usize,
        acceptor: Acceptor<std::net::TcpListener>,
        core: LoopCore,
        commands: Receiver<Command>,
        shared: Arc<Shared>,
        config: &Arc<Config>,
    ) -> io::Result<JoinHandle<()>> {
        let thread = std::thread::Builder::new().name(format!("throng-loop-{loop_id}"));
        match self {
            LoopIo::Mio(poll) => {
                let acceptor = match acceptor {
                    Acceptor::Own(l) => Acceptor::Own(l.map(mio::net::TcpListener::from_std)),
                    Acceptor::Distributing { listener, next } => {
                        Acceptor::Distributing { listener: mio::net::TcpListener::from_std(listener), next }
                    }
                };
                let backend = Mio::new(poll, acceptor, shared.clone(), config)?;
                let event_loop = Loop::new(core, commands, shared);
                thread.spawn(move || event_loop.run(backend))
            }
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            LoopIo::Uring(waker) => {
                let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
                let config = config.clone();
                let handle = thread.spawn(move || {
                    match backend::uring::Uring::new(acceptor, waker, shared.clone(), &config) {
                        Ok(backend) => {
                            let _ = ready_tx.send(Ok(()));
                            Loop::new(core, commands, shared).run(backend);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?;
                match ready_rx.recv() {
                    Ok(Ok(())) => Ok(handle),
                    Ok(Err(e)) => {
                        let _ = handle.join();
                        Err(io::Error::new(e.kind(), format!("loop {loop_id}: io_uring setup failed: {e}")))
                    }
                    Err(_) => Err(io::Error::other(format!("loop {loop_id} died during setup"))),
                }
            }
        }
    }
}

impl Server {
    /// A builder with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder { config: Config::default(), value: PhantomData }
    }
}

impl<T> Server<T> {
    fn start(config: Config) -> io::Result<Self> {
        if config.tls.is_some() && config.proxy_trusted.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS with the PROXY protocol is not supported: terminate TLS at the balancer, or drop the PROXY header",
            ));
        }
        let nofile = match crate::sys::raise_nofile_limit() {
            Ok((before, hard)) => {
                log::info!("open files: soft limit {before} raised to the hard limit {hard}");
                Some((before, hard))
            }
            Err(e) => {
                log::warn!("could not raise the open-files limit: {e}");
                None
            }
        };
        let loops = config.loops.clamp(1, MAX_LOOPS);
        // The first listener decides the port (it may be 0); the others share it.
        let mut listeners = Vec::with_capacity(loops);
        let first = match bind_listener(config.addr, config.reuse_port) {
            Ok(l) => l,
            Err(e) if config.reuse_port && e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                bind_listener(config.addr, false)?
            }
            Err(e) => return Err(e),
        };
        let local_addr = first.local_addr()?;
        listeners.push(first);
        let mut distributing = !config.reuse_port;
        for _ in 1..loops {
            if distributing {
                break;
            }
            match bind_listener(local_addr, true) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    log::warn!("SO_REUSEPORT unavailable ({e}): loop 0 accepts for all loops");
                    distributing = true;
                    listeners.truncate(1);
                }
            }
        }

        let backend = choose_backend(config.backend)?;
        let config = Arc::new(Config { loops, backend, ..config });
        let per_shard = config.event_capacity.div_ceil(config.event_shards.max(1)).max(1);
        let (shard_tx, shard_rx): (Vec<_>, Vec<_>) =
            (0..config.event_shards.max(1)).map(|_| crossbeam_channel::bounded(per_shard)).unzip();
        let total_connections = Arc::new(AtomicUsize::new(0));
        let mut io = Vec::with_capacity(loops);
        let mut mailboxes = Vec::with_capacity(loops);
        let mut receivers = Vec::with_capacity(loops);
        let mut stats = Vec::with_capacity(loops);
        for _ in 0..loops {
            let (waker, loop_io) = LoopIo::new(backend)?;
            let (tx, rx) = crossbeam_channel::bounded(config.command_capacity);
            mailboxes.push(LoopMailbox::new(tx, waker));
            receivers.push(rx);
            io.push(loop_io);
            stats.push(Arc::new(LoopStats::default()));
        }
        let interner = Arc::new(Interner::new(loops));
        let shared = Arc::new(Shared {
            mailboxes,
            stats: stats.clone(),
            events: shard_rx.clone(),
            command_timeout: config.command_timeout,
            backend,
            interner: interner.clone(),
            publish_duration: Arc::default(),
        });

        let mut listeners = listeners.into_iter();
        let mut threads = Vec::with_capacity(loops);
        let mut started = Ok(());
        for (loop_id, (loop_io, commands)) in io.into_iter().zip(receivers).enumerate() {
            let acceptor = match listeners.next() {
                Some(listener) if distributing => Acceptor::Distributing { listener, next: 0 },
                other => Acceptor::Own(other),
            };
            let core = LoopCore::new(
                loop_id,
                config.clone(),
                stats[loop_id].clone(),
                Delivery::new(shard_tx.clone()),
                total_connections.clone(),
                interner.clone(),
            );
            match loop_io.spawn(loop_id, acceptor, core, commands, shared.clone(), &config) {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    started = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = started {
            // The loops that did start stop again; the error is the caller's.
            let handle = Handle { shared };
            handle.shutdown_all(Instant::now());
            for thread in threads {
                let _ = thread.join();
            }
            return Err(e);
        }
        Ok(Self {
            handle: Handle { shared },
            shards: shard_rx,
            threads,
            local_addr,
            nofile,
            value: PhantomData,
        })
    }

    /// The backend the loops run on (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.handle.shared.backend
    }

    /// The address the loops listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to send, close, subscribe and publish from any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Every event, from all shards: for one worker thread (with the default single shard,
    /// this is that shard). A connection's events arrive in order as long as one thread reads
    /// it; to spread the work over several threads, give each one of [`Server::shards`].
    pub fn events(&self) -> Events<T> {
        Events::new(self.shards.clone())
    }

    /// One receiver per event shard ([`ServerBuilder::event_shards`]), in shard order: give each
    /// worker thread its own. Every shard must be read, or the loops stop reading once it is
    /// full.
    pub fn shards(&self) -> Vec<Events<T>> {
        self.shards.iter().map(|shard| Events::new(vec![shard.clone()])).collect()
    }

    /// The shard `conn`'s events go to (an index into [`Server::shards`]), e.g. to hand work
    /// about a connection to the worker that owns it.
    pub fn shard_of(&self, conn: ConnId) -> usize {
        shard_of(conn, self.shards.len())
    }

    /// The counters summed over loops.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// The open-files limit found at start and the hard limit it was raised to.
    pub fn nofile_limits(&self) -> Option<(u64, u64)> {
        self.nofile
    }

    /// Stops accepting, sends close 1001 to every connection, waits for their closes up to
    /// `grace`, drops the rest and joins the loop threads.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        if self.threads.is_empty() {
            return;
        }
        self.handle.shutdown_all(Instant::now() + grace);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl<T> Drop for Server<T> {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}
