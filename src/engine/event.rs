//! What the application sees of a connection: events, the upgrade decision and the hooks that
//! run on the loop thread.

use std::net::SocketAddr;
use std::sync::Arc;

use super::compress::LoopDeflate;
use super::delivery::Erased;
use super::outbound::Outbound;
use super::ConnId;
use crate::proto::frame::MAX_HEADER_LEN;
use crate::proto::handshake::{Rejection, UpgradeRequest};
use crate::proto::{DataKind, Message};

/// What the loops tell the application's workers; `T` is the type of the value the upgrade
/// hook attaches (see [`Accepted::value`]), `()` without one.
///
/// Every accepted upgrade, that is one the upgrade hook accepted and whose `101` response was
/// queued, yields exactly one `Open` and later exactly one `Close`, with its messages between
/// them, all on the same shard (see [`crate::Server::shards`]), in that order. A connection
/// refused after the hook accepted it (e.g. with 500 because the hook's extra headers hold a CR
/// or LF) yields neither: its value is dropped on the loop thread right there, so nothing the
/// application attached is left waiting for an event that never comes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<T = ()> {
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
        /// The request headers named in [`ServerBuilder::open_headers`](super::ServerBuilder::open_headers), as received.
        headers: Vec<(String, String)>,
        /// The value the upgrade hook attached ([`Accepted::value`]). The connection does not
        /// keep it: it passes from the hook into this event.
        value: T,
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
        /// What ended it, as the engine decided (a fixed set, unlike `reason`).
        cause: CloseCause,
    },
}

/// What ended a connection that had opened: the first decision to close it, by the peer, the
/// application or one of the engine's rules. Unlike the peer's close reason (free text) this
/// is a fixed set, fit for a metric label. A connection whose close handshake timed out keeps
/// the cause that started it; one dropped at a shutdown's deadline is a [`CloseCause::Shutdown`].
/// It costs the connection one byte, in what was padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCause {
    /// The peer's close frame came first (and was answered).
    Peer,
    /// The connection ended without a close frame from either side: the peer's FIN or a
    /// reset, a failed write, or TLS ending under it (close_notify or an alert).
    Disconnected,
    /// The application closed it ([`Handle::close`](super::Handle::close), or
    /// [`Handle::close_tagged`](super::Handle::close_tagged) with its own tag, 0..=127: a larger
    /// one is kept as 127).
    Application(u8),
    /// [`Server::shutdown`](super::Server::shutdown): its 1001, or dropped at its deadline.
    Shutdown,
    /// Nothing arrived for [`ServerBuilder::idle_timeout`](super::ServerBuilder::idle_timeout).
    IdleTimeout,
    /// A ping went unanswered for the pong timeout
    /// ([`ServerBuilder::ping_interval`](super::ServerBuilder::ping_interval)).
    PongTimeout,
    /// The peer broke the protocol: an invalid frame, text that is not UTF-8, a frame or message
    /// over the size limits, a compressed message that does not inflate (or inflates too
    /// large), a broken TLS record.
    ProtocolError,
    /// Over the outbound cap under [`SlowConsumerPolicy::Close`](super::SlowConsumerPolicy::Close).
    SlowConsumer,
    /// Over the message rate ([`ServerBuilder::max_message_rate`](super::ServerBuilder::max_message_rate)).
    RateLimited,
    /// A message not completed within
    /// [`ServerBuilder::message_timeout`](super::ServerBuilder::message_timeout).
    MessageTimeout,
    /// The loop's budget for partial messages
    /// ([`ServerBuilder::max_assembly_bytes`](super::ServerBuilder::max_assembly_bytes)) was full.
    AssemblyBudget,
}

/// [`CloseCause::Application`]'s tags are 7 bits: the byte's top bit marks them.
const APPLICATION: u8 = 0x80;

impl CloseCause {
    /// The largest tag [`CloseCause::Application`] keeps.
    pub const MAX_TAG: u8 = APPLICATION - 1;

    /// The cause in one byte (0 is kept for "not decided yet").
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            CloseCause::Peer => 1,
            CloseCause::Disconnected => 2,
            CloseCause::Shutdown => 3,
            CloseCause::IdleTimeout => 4,
            CloseCause::PongTimeout => 5,
            CloseCause::ProtocolError => 6,
            CloseCause::SlowConsumer => 7,
            CloseCause::RateLimited => 8,
            CloseCause::MessageTimeout => 9,
            CloseCause::AssemblyBudget => 10,
            CloseCause::Application(tag) => APPLICATION | tag.min(Self::MAX_TAG),
        }
    }

    /// The cause a byte from [`CloseCause::to_byte`] stands for; 0 (nothing decided before the
    /// connection went) is [`CloseCause::Disconnected`].
    pub(crate) fn from_byte(byte: u8) -> CloseCause {
        match byte {
            1 => CloseCause::Peer,
            3 => CloseCause::Shutdown,
            4 => CloseCause::IdleTimeout,
            5 => CloseCause::PongTimeout,
            6 => CloseCause::ProtocolError,
            7 => CloseCause::SlowConsumer,
            8 => CloseCause::RateLimited,
            9 => CloseCause::MessageTimeout,
            10 => CloseCause::AssemblyBudget,
            b if b & APPLICATION != 0 => CloseCause::Application(b & !APPLICATION),
            _ => CloseCause::Disconnected,
        }
    }
}

impl<T> Event<T> {
    /// The connection the event is about.
    pub fn conn(&self) -> ConnId {
        match self {
            Event::Open { conn, .. } | Event::Message { conn, .. } | Event::Close { conn, .. } => *conn,
        }
    }

    /// The same event with its upgrade value (if it is an `Open`) passed through `f`.
    pub fn map_value<U>(self, f: impl FnOnce(T) -> U) -> Event<U> {
        match self {
            Event::Open { conn, peer, path, query, subprotocol, headers, value } => {
                Event::Open { conn, peer, path, query, subprotocol, headers, value: f(value) }
            }
            Event::Message { conn, message } => Event::Message { conn, message },
            Event::Close { conn, code, reason, clean, cause } => {
                Event::Close { conn, code, reason, clean, cause }
            }
        }
    }
}

/// What an upgrade hook returns to accept a connection: `Accepted::default()` without a value,
/// [`Accepted::new`] with one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted<T = ()> {
    /// The subprotocol, one the client offered (see [`UpgradeRequest::select_subprotocol`]).
    pub subprotocol: Option<String>,
    /// Extra response headers (sanitised: a CR or LF rejects the upgrade with 500, and `value`
    /// is dropped).
    pub headers: Vec<(String, String)>,
    /// A small tag the loop keeps for the inline message hook ([`Inline::user`]); the workers
    /// get `value` instead. 0 (the default) costs nothing; any other value costs a map entry on
    /// the loop for the connection's life.
    pub user: u64,
    /// Topics the connection joins at its upgrade, before its 101 is queued and before its
    /// [`Event::Open`]: a publish made after anything the client read from this connection
    /// (its 101, a first message from [`ServerBuilder::on_open`](super::ServerBuilder::on_open)) reaches it. Joining here costs
    /// no command from a worker and no per-connection limit check (the hook decides how many).
    pub topics: Vec<String>,
    /// The application's value for this connection, delivered in [`Event::Open`] (the
    /// connection itself does not store it, so an idle connection stays small).
    pub value: T,
}

impl<T> Accepted<T> {
    /// Accepts with `value` and no subprotocol, headers or tag.
    pub fn new(value: T) -> Self {
        Self { subprotocol: None, headers: Vec::new(), user: 0, topics: Vec::new(), value }
    }
}

// Only for `()`: so that `Accepted::default()` in a hook fixes the server's value type.
impl Default for Accepted {
    fn default() -> Self {
        Self::new(())
    }
}

/// Decides whether an upgrade is accepted. Runs on the loop thread: keep it cheap.
pub type UpgradeHook<T = ()> =
    Arc<dyn Fn(&UpgradeRequest<'_>, SocketAddr) -> Result<Accepted<T>, Rejection> + Send + Sync>;

/// Runs on the loop thread as a connection opens, with its id and its upgrade value, and may
/// write its first message into the loop's buffer (see
/// [`ServerBuilder::on_open`](super::ServerBuilder::on_open)).
pub(crate) type OpenHook = Arc<dyn Fn(ConnId, &mut Erased, &mut Vec<u8>) + Send + Sync>;

/// Runs on the loop thread as an open connection is removed, with its id, close code, reason,
/// whether the close handshake completed and its cause (see
/// [`ServerBuilder::on_close`](super::ServerBuilder::on_close)).
pub(crate) type CloseHook = Arc<dyn Fn(ConnId, u16, &str, bool, CloseCause) + Send + Sync>;

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
    /// The loop's compression state, when the connection negotiated permessage-deflate.
    pub(crate) deflate: Option<&'a mut LoopDeflate>,
    /// The connection's slot (for its compression state).
    pub(crate) index: u32,
    pub(crate) sent: u64,
    /// Of `sent`, those that went compressed.
    pub(crate) compressed: u64,
    pub(crate) refused: u64,
}

impl Inline<'_> {
    /// The connection the message came from.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The tag the upgrade hook attached ([`Accepted::user`]).
    pub fn user(&self) -> u64 {
        self.user
    }

    /// Queues a message back to this connection (written at the end of the loop turn). Obeys
    /// the outbound cap like any send: over it, the slow-consumer policy applies.
    pub fn reply(&mut self, kind: DataKind, payload: &[u8]) {
        if !self.open {
            return;
        }
        // The cap is applied before compressing (to the larger, uncompressed size): a message
        // compressed with context and then refused would leave the peer's window behind ours.
        if !self.outbound.fits(MAX_HEADER_LEN + payload.len(), self.cap) {
            self.refused += 1;
            return;
        }
        let compressed = self.deflate.as_deref_mut().is_some_and(|d| d.compress(self.index, payload));
        let bytes = match (&self.deflate, compressed) {
            (Some(deflate), true) => &deflate.compressed[..],
            _ => payload,
        };
        self.outbound.push_data(kind.opcode(), compressed, bytes);
        self.sent += 1;
        self.compressed += u64::from(compressed);
    }
}
