//! What the application sees: events, messages, the [`Handle`] and the hooks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use crate::engine::outbound::Outbound;
use crate::engine::ConnId;
use crate::proto::frame::{encode_header, MAX_HEADER_LEN};
use crate::proto::handshake::{Rejection, UpgradeRequest};
use crate::proto::{CloseCode, DataKind, OpCode};

/// A whole WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// Text or binary.
    pub fn kind(&self) -> DataKind {
        match self {
            Message::Text(_) => DataKind::Text,
            Message::Binary(_) => DataKind::Binary,
        }
    }

    pub(crate) fn from_parts(kind: DataKind, bytes: Vec<u8>) -> Self {
        match kind {
            // The decoder validated the text; the lossy path is never taken, it only avoids a panic.
            DataKind::Text => Message::Text(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            DataKind::Binary => Message::Binary(bytes),
        }
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.to_owned())
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(b)
    }
}

/// What the loops tell the application's workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection completed its upgrade.
    Open {
        /// The connection.
        conn: ConnId,
        /// The peer's address.
        peer: SocketAddr,
        /// The request path, without the query.
        path: String,
        /// The query string, without `?`.
        query: Option<String>,
        /// The subprotocol chosen by the upgrade hook.
        subprotocol: Option<String>,
        /// The request headers named in [`crate::ServerBuilder::open_headers`], as received.
        headers: Vec<(String, String)>,
        /// The value the upgrade hook attached to the connection.
        user: u64,
    },
    /// A whole message arrived (and the inline hook, if any, forwarded it).
    Message {
        /// The connection.
        conn: ConnId,
        /// The message.
        message: Message,
    },
    /// A connection that had opened is gone.
    Close {
        /// The connection.
        conn: ConnId,
        /// The peer's close code; 1005 when its close frame had none, 1006 when the connection
        /// dropped without one, or the code we failed the connection with.
        code: u16,
        /// The peer's close reason.
        reason: String,
        /// Whether the close handshake completed.
        clean: bool,
    },
}

/// What an upgrade hook returns to accept a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The subprotocol, one the client offered (see [`UpgradeRequest::select_subprotocol`]).
    pub subprotocol: Option<String>,
    /// Extra response headers (sanitised: a CR or LF rejects the upgrade with 500).
    pub headers: Vec<(String, String)>,
    /// A small value attached to the connection, reported in [`Event::Open`].
    pub user: u64,
}

/// Decides whether an upgrade is accepted. Runs on the loop thread: keep it cheap.
pub type UpgradeHook =
    Arc<dyn Fn(&UpgradeRequest<'_>, SocketAddr) -> Result<Accepted, Rejection> + Send + Sync>;

/// Answers a plain HTTP `GET` (no `Upgrade` header) on the WebSocket listener, e.g. a page or a
/// health check: given the request target and the raw request head, returns the whole HTTP
/// response to send (the connection is closed after it), or `None` for the default 400.
pub type HttpHook = Arc<dyn Fn(&str, &[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// Counts clients before they upgrade, so that a limit (e.g. connections per address) covers
/// connections still in their handshake, not only open ones.
///
/// The engine calls [`Admission::admit`] once per connection, with the client's address: at
/// accept, or once a trusted proxy's PROXY header named the client. A refusal is answered at
/// once with the rejection's HTTP status and closed. Every admitted connection's slot is given
/// back exactly once: by the engine through [`Admission::release`] if the connection never
/// opens (its handshake failed, timed out or was rejected), or else by the application when it
/// sees the connection's [`Event::Close`] — the slot passes to the application with
/// [`Event::Open`], whose `peer` is the address that was admitted. (Keeping the address for
/// the connection's whole life would cost every idle connection 32 bytes.)
pub trait Admission: Send + Sync {
    /// Takes a slot for a new client, or refuses it with an HTTP status and reason.
    fn admit(&self, client: SocketAddr) -> Result<(), Rejection>;
    /// Gives back the slot of a client that was admitted and never opened.
    fn release(&self, client: SocketAddr);
}

/// Whether a message handled inline still goes to the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// The hook handled it.
    Consumed,
    /// Deliver it as an [`Event::Message`] too.
    Forward,
}

/// A message hook that runs on the loop thread, for cheap logic (echo, routing) without crossing
/// threads. It may reply to the sender through [`Inline::reply`].
pub type MessageHook = Arc<dyn Fn(&mut Inline<'_>, DataKind, &[u8]) -> Flow + Send + Sync>;

/// The connection a [`MessageHook`] runs for.
pub struct Inline<'a> {
    pub(crate) conn: ConnId,
    pub(crate) user: u64,
    /// Whether data may still be sent (not after our close frame).
    pub(crate) open: bool,
    pub(crate) cap: usize,
    pub(crate) outbound: &'a mut Outbound,
    pub(crate) sent: u64,
    pub(crate) refused: u64,
}

impl Inline<'_> {
    /// The connection the message came from.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The value the upgrade hook attached.
    pub fn user(&self) -> u64 {
        self.user
    }

    /// Queues a message back to this connection (written at the end of the loop turn). Obeys
    /// the outbound cap like any send: over it, the slow-consumer policy applies.
    pub fn reply(&mut self, kind: DataKind, payload: &[u8]) {
        if !self.open {
            return;
        }
        if !self.outbound.fits(MAX_HEADER_LEN + payload.len(), self.cap) {
            self.refused += 1;
            return;
        }
        self.outbound.push_frame(kind.opcode(), payload);
        self.sent += 1;
    }
}

/// A message framed once, shareable by any number of connections on any loop.
#[derive(Clone, Debug)]
pub struct Prepared(pub(crate) Arc<[u8]>);

impl Prepared {
    /// Frames `message` for sending from a server.
    pub fn new(message: &Message) -> Self {
        Self::from_parts(message.kind().opcode(), message.as_bytes())
    }

    pub(crate) fn from_parts(opcode: OpCode, payload: &[u8]) -> Self {
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = encode_header(&mut header, true, opcode, None, payload.len() as u64);
        let mut frame = Vec::with_capacity(header_len + payload.len());
        frame.extend_from_slice(&header[..header_len]);
        frame.extend_from_slice(payload);
        Self(Arc::from(frame))
    }

    /// The size of the frame on the wire.
    pub fn wire_len(&self) -> usize {
        self.0.len()
    }
}

/// A command from the application to a loop.
pub(crate) enum Command {
    Send(ConnId, Message),
    SendPrepared(ConnId, Prepared),
    Close(ConnId, CloseCode, String),
    Subscribe(ConnId, Arc<str>),
    Unsubscribe(ConnId, Arc<str>),
    Publish(Arc<str>, Prepared),
    /// A socket accepted by another loop (only without `SO_REUSEPORT`).
    Adopt(mio::net::TcpStream, SocketAddr),
}

/// Why a loop did not take a command from a [`Handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The loop's command queue stayed full for the whole command timeout
    /// ([`crate::ServerBuilder::command_queue`]): the loop is overloaded. Counted in
    /// [`Stats::commands_refused`].
    QueueFull,
    /// The server has stopped.
    Stopped,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CommandError::QueueFull => "the event loop's command queue is full",
            CommandError::Stopped => "the server has stopped",
        })
    }
}

impl std::error::Error for CommandError {}

/// The sending side of one loop's command queue (bounded).
pub(crate) struct LoopMailbox {
    pub(crate) commands: Sender<Command>,
    pub(crate) waker: Arc<mio::Waker>,
    /// Set while a wake-up is on its way, so that a burst of commands wakes the loop once.
    pub(crate) wake_pending: AtomicBool,
    /// A shutdown request: outside the queue, so that a full queue cannot hold it up.
    shutdown: Mutex<Option<std::time::Instant>>,
    shutdown_pending: AtomicBool,
}

impl LoopMailbox {
    pub(crate) fn new(commands: Sender<Command>, waker: Arc<mio::Waker>) -> Self {
        Self {
            commands,
            waker,
            wake_pending: AtomicBool::new(false),
            shutdown: Mutex::new(None),
            shutdown_pending: AtomicBool::new(false),
        }
    }

    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A failed wake-up means the loop is gone; nothing to do.
            let _ = self.waker.wake();
        }
    }

    /// Queues `command`, waiting up to `wait` for room.
    fn post(&self, command: Command, wait: std::time::Duration) -> Result<(), CommandError> {
        let result = match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(CommandError::Stopped),
            Err(TrySendError::Full(command)) if !wait.is_zero() => {
                self.wake();
                self.commands.send_timeout(command, wait).map_err(|e| match e {
                    SendTimeoutError::Timeout(_) => CommandError::QueueFull,
                    SendTimeoutError::Disconnected(_) => CommandError::Stopped,
                })
            }
            Err(TrySendError::Full(_)) => Err(CommandError::QueueFull),
        };
        self.wake();
        result
    }

    fn request_shutdown(&self, deadline: std::time::Instant) {
        *self.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.shutdown_pending.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    /// The shutdown deadline, once, if one was requested.
    pub(crate) fn take_shutdown(&self) -> Option<std::time::Instant> {
        if !self.shutdown_pending.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.shutdown.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Counters of one loop, read by [`Handle::stats`].
#[derive(Default, Debug)]
pub(crate) struct LoopStats {
    pub(crate) connections: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) handshakes_ok: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) slow_consumer_closes: AtomicU64,
    pub(crate) slow_consumer_drops: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) rejected_over_limit: AtomicU64,
    pub(crate) queued_events: AtomicUsize,
    pub(crate) commands_queued: AtomicUsize,
    pub(crate) commands_refused: AtomicU64,
    pub(crate) pongs_coalesced: AtomicU64,
    pub(crate) read_pauses: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) assembly_timeouts: AtomicU64,
    pub(crate) assembly_budget_closes: AtomicU64,
    pub(crate) admission_refused: AtomicU64,
    pub(crate) proxy_headers: AtomicU64,
    pub(crate) proxy_errors: AtomicU64,
}

impl LoopStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections: self.connections.load(Ordering::Relaxed),
            accepted: get(&self.accepted),
            handshakes_ok: get(&self.handshakes_ok),
            handshakes_failed: get(&self.handshakes_failed),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            protocol_errors: get(&self.protocol_errors),
            slow_consumer_closes: get(&self.slow_consumer_closes),
            slow_consumer_drops: get(&self.slow_consumer_drops),
            accept_errors: get(&self.accept_errors),
            rejected_over_limit: get(&self.rejected_over_limit),
            queued_events: self.queued_events.load(Ordering::Relaxed),
            channel_len: 0,
            commands_queued: self.commands_queued.load(Ordering::Relaxed),
            commands_refused: get(&self.commands_refused),
            pongs_coalesced: get(&self.pongs_coalesced),
            read_pauses: get(&self.read_pauses),
            rate_limited: get(&self.rate_limited),
            assembly_timeouts: get(&self.assembly_timeouts),
            assembly_budget_closes: get(&self.assembly_budget_closes),
            admission_refused: get(&self.admission_refused),
            proxy_headers: get(&self.proxy_headers),
            proxy_errors: get(&self.proxy_errors),
        }
    }
}

/// A snapshot of the server's counters, summed over loops ([`Handle::stats`]) or of one loop
/// ([`Handle::loop_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections held now (handshaking, open and closing).
    pub connections: usize,
    /// TCP connections accepted.
    pub accepted: u64,
    /// Upgrades completed.
    pub handshakes_ok: u64,
    /// Upgrades refused (malformed, rejected by the hook, timed out).
    pub handshakes_failed: u64,
    /// Data messages received.
    pub messages_in: u64,
    /// Data messages queued for sending.
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Connections failed for a protocol violation.
    pub protocol_errors: u64,
    /// Connections closed with 1008 for exceeding the outbound cap.
    pub slow_consumer_closes: u64,
    /// Messages dropped for a connection over the outbound cap.
    pub slow_consumer_drops: u64,
    /// `accept` failures (EMFILE and the like).
    pub accept_errors: u64,
    /// Connections refused for the connection caps.
    pub rejected_over_limit: u64,
    /// Events waiting for the workers in the loops' backlogs (reading pauses while non-zero).
    pub queued_events: usize,
    /// Events waiting in the worker channel (shared by all loops).
    pub channel_len: usize,
    /// Commands waiting in the loops' command queues (as of each loop's last turn).
    pub commands_queued: usize,
    /// Commands refused because a loop's queue stayed full ([`CommandError::QueueFull`]).
    pub commands_refused: u64,
    /// Pongs not sent because a newer ping arrived while the queue was full (RFC 6455 §5.5.3).
    pub pongs_coalesced: u64,
    /// Times reading from a connection paused because its outbound queue was full.
    pub read_pauses: u64,
    /// Connections closed with 1008 for exceeding the message rate limit.
    pub rate_limited: u64,
    /// Connections closed with 1008 for not finishing a fragmented message in time.
    pub assembly_timeouts: u64,
    /// Connections closed with 1008 because the loop's budget for partial messages was spent.
    pub assembly_budget_closes: u64,
    /// Connections refused by the [`Admission`] hook (answered with its HTTP status).
    pub admission_refused: u64,
    /// PROXY protocol headers read from trusted proxies.
    pub proxy_headers: u64,
    /// Connections from trusted proxies refused with 400 for a missing or malformed PROXY header.
    pub proxy_errors: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.connections += other.connections;
        self.accepted += other.accepted;
        self.handshakes_ok += other.handshakes_ok;
        self.handshakes_failed += other.handshakes_failed;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.protocol_errors += other.protocol_errors;
        self.slow_consumer_closes += other.slow_consumer_closes;
        self.slow_consumer_drops += other.slow_consumer_drops;
        self.accept_errors += other.accept_errors;
        self.rejected_over_limit += other.rejected_over_limit;
        self.queued_events += other.queued_events;
        self.commands_queued += other.commands_queued;
        self.commands_refused += other.commands_refused;
        self.pongs_coalesced += other.pongs_coalesced;
        self.read_pauses += other.read_pauses;
        self.rate_limited += other.rate_limited;
        self.assembly_timeouts += other.assembly_timeouts;
        self.assembly_budget_closes += other.assembly_budget_closes;
        self.admission_refused += other.admission_refused;
        self.proxy_headers += other.proxy_headers;
        self.proxy_errors += other.proxy_errors;
    }
}

pub(crate) struct Shared {
    pub(crate) mailboxes: Vec<LoopMailbox>,
    pub(crate) stats: Vec<Arc<LoopStats>>,
    /// Only to read the channel's length: holding a sender here would keep the workers'
    /// `events.iter()` from ending after shutdown.
    pub(crate) events: Receiver<Event>,
    /// How long a [`Handle`] call waits for room in a full command queue.
    pub(crate) command_timeout: std::time::Duration,
}

impl Shared {
    /// Queues a command for loop `loop_id`, waiting up to the command timeout; a refusal is
    /// counted on that loop.
    fn post(&self, loop_id: usize, command: Command) -> Result<(), CommandError> {
        self.post_within(loop_id, command, self.command_timeout)
    }

    /// Queues a command without waiting (a loop posting to another loop must never block).
    pub(crate) fn try_post(&self, loop_id: usize, command: Command) -> Result<(), CommandError> {
        self.post_within(loop_id, command, std::time::Duration::ZERO)
    }

    fn post_within(
        &self,
        loop_id: usize,
        command: Command,
        wait: std::time::Duration,
    ) -> Result<(), CommandError> {
        // An id that names no loop names no connection: like any stale id, nothing to do.
        let Some(mailbox) = self.mailboxes.get(loop_id) else { return Ok(()) };
        let result = mailbox.post(command, wait);
        if result == Err(CommandError::QueueFull) {
            LoopStats::add(&self.stats[loop_id].commands_refused, 1);
        }
        result
    }
}

/// Sends, closes, subscribes and publishes from any thread. Cheap to clone.
///
/// Every call queues a command for the loop that owns the connection. The queues are bounded
/// ([`crate::ServerBuilder::command_queue`]): when a loop's queue is full, a call waits up to
/// the command timeout for room and then returns [`CommandError::QueueFull`] (counted in
/// [`Stats::commands_refused`]); nothing grows without bound. A command for a connection that
/// has gone (a stale id) is accepted and ignored.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Sends a message to one connection.
    pub fn send(&self, conn: ConnId, message: impl Into<Message>) -> Result<(), CommandError> {
        self.shared.post(conn.loop_id(), Command::Send(conn, message.into()))
    }

    /// Sends a message framed once with [`Prepared::new`] (for sending the same bytes to many).
    pub fn send_prepared(&self, conn: ConnId, message: &Prepared) -> Result<(), CommandError> {
        self.shared.post(conn.loop_id(), Command::SendPrepared(conn, message.clone()))
    }

    /// Starts the close handshake with `code` (must be sendable, else 1000 is used) and `reason`.
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), CommandError> {
        let code = if CloseCode(code).is_sendable() { CloseCode(code) } else { CloseCode::NORMAL };
        self.shared.post(conn.loop_id(), Command::Close(conn, code, reason.to_owned()))
    }

    /// Subscribes a connection to a topic; it leaves every topic when it closes.
    pub fn subscribe(&self, conn: ConnId, topic: &str) -> Result<(), CommandError> {
        self.shared.post(conn.loop_id(), Command::Subscribe(conn, Arc::from(topic)))
    }

    /// Unsubscribes a connection from a topic.
    pub fn unsubscribe(&self, conn: ConnId, topic: &str) -> Result<(), CommandError> {
        self.shared.post(conn.loop_id(), Command::Unsubscribe(conn, Arc::from(topic)))
    }

    /// Sends a message to every subscriber of `topic` on every loop. The frame is encoded once
    /// and shared by all of them.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> Result<(), CommandError> {
        self.publish_prepared(topic, &Prepared::new(&message.into()))
    }

    /// [`Handle::publish`] with a message framed already. Every loop is tried: an error means at
    /// least one loop refused it (its subscribers miss the message; the others get it).
    pub fn publish_prepared(&self, topic: &str, message: &Prepared) -> Result<(), CommandError> {
        let topic: Arc<str> = Arc::from(topic);
        let mut result = Ok(());
        for loop_id in 0..self.shared.mailboxes.len() {
            let posted = self.shared.post(loop_id, Command::Publish(topic.clone(), message.clone()));
            result = result.and(posted);
        }
        result
    }

    /// The counters summed over loops.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for s in &self.shared.stats {
            total.add(&s.snapshot());
        }
        total.channel_len = self.shared.events.len();
        total
    }

    /// The counters of each loop, in loop order (`channel_len` is the shared channel's).
    pub fn loop_stats(&self) -> Vec<Stats> {
        let channel_len = self.shared.events.len();
        self.shared.stats.iter().map(|s| Stats { channel_len, ..s.snapshot() }).collect()
    }

    pub(crate) fn shutdown_all(&self, deadline: std::time::Instant) {
        for mailbox in &self.shared.mailboxes {
            mailbox.request_shutdown(deadline);
        }
    }
}
