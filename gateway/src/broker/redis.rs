//! The fleet broker: Redis pub/sub between gateway nodes.
//!
//! ```text
//!  admin publish ──▶ RedisBroker::publish ──▶ this node's loops (at once, framed once)
//!                          │
//!                          └─▶ bounded queue ──▶ publisher thread ──PUBLISH prefix:ch:NAME──▶ Redis
//!                                                (+ XADD, presence)                           │
//!  other nodes' loops ◀── Handle::publish_prepared ◀── subscriber thread ◀──SUBSCRIBE─────────┘
//!                         (skips its own node's copies)   (one channel per topic with local
//!                                                          subscribers, kept in step by the
//!                                                          engine's first/last reports)
//! ```
//! Two connections, each owned by one thread: the subscriber's is in pub/sub mode and polls with
//! a short read timeout so it can apply subscription changes between reads; the publisher's
//! pipelines whatever the queue holds. Either one failing marks the broker disconnected until
//! both are back; each reconnects on its own with capped exponential backoff.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};

use super::backoff::Backoff;
use super::{envelope, presence, publisher, subscriber};
use super::{Broker, BrokerState, BrokerStats, Presence, Sender};
use crate::channels::USER_PREFIX;
use throng::{Handle, Message, Prepared, PublishReceipt};

/// Messages the outgoing queue holds before publishes are dropped (and counted).
pub(super) const QUEUE_MESSAGES: usize = 10_000;
/// Payload bytes the outgoing queue holds before publishes are dropped (and counted).
pub(super) const QUEUE_BYTES: usize = 64 << 20;
/// Time allowed to open a connection.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time allowed for a command's reply before the connection is taken as dead.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection error for the logs; a timed-out read says so instead of "os error 11".
pub(super) fn describe(error: &::redis::RedisError) -> String {
    if error.is_timeout() {
        format!("no reply within {COMMAND_TIMEOUT:?}")
    } else {
        error.to_string()
    }
}

/// What to connect to.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel (`PREFIX:ch:NAME`).
    pub prefix: String,
    /// Largest message taken from Redis (envelope included); larger ones are dropped, counted.
    pub max_message_size: usize,
    /// Whether a payload published to Redis without the envelope may reach a `user:` topic.
    pub raw_user_topics: bool,
}

/// Names of the Redis channels and keys, from the prefix.
pub(super) struct Names {
    channel_prefix: String,
    presence_prefix: String,
    pub(super) stream: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Names {
            channel_prefix: format!("{prefix}:ch:"),
            presence_prefix: format!("{prefix}:presence:"),
            stream: format!("{prefix}:client"),
        }
    }

    /// The Redis channel carrying `topic`.
    pub(super) fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.channel_prefix)
    }

    /// The topic a Redis channel carries.
    pub(super) fn topic<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.channel_prefix)
    }

    /// The hash holding every node's subscriber count of `topic`.
    pub(super) fn presence(&self, topic: &str) -> String {
        format!("{}{topic}", self.presence_prefix)
    }
}

/// What the broker threads share with the front.
#[derive(Default)]
pub(super) struct Wanted {
    /// Topics whose upstream subscription may be stale; kept only while the subscriber is
    /// synced (otherwise its next connection subscribes to everything anyway). Who is
    /// subscribed is the engine's to know (`Handle::subscribers`, `Handle::topics`): the
    /// broker keeps no count of its own.
    pub(super) subscribe_dirty: HashSet<Arc<str>>,
    pub(super) subscriber_synced: bool,
    /// Channels whose presence count changed; kept only while the publisher is synced.
    pub(super) presence_dirty: HashSet<Arc<str>>,
    pub(super) presence_synced: bool,
}

/// A message for the publisher thread.
pub(super) enum Outgoing {
    /// `PUBLISH channel payload`.
    Publish { channel: String, payload: Vec<u8> },
    /// `XADD stream MAXLEN ~ N * fields...`.
    Forward { fields: Vec<(&'static str, Vec<u8>)> },
}

impl Outgoing {
    pub(super) fn bytes(&self) -> usize {
        match self {
            Outgoing::Publish { channel, payload } => channel.len() + payload.len(),
            Outgoing::Forward { fields } => fields.iter().map(|(k, v)| k.len() + v.len()).sum(),
        }
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) dropped_queue_full: AtomicU64,
    pub(super) dropped_send_failed: AtomicU64,
    pub(super) dropped_malformed: AtomicU64,
    pub(super) dropped_drain: AtomicU64,
    pub(super) dropped_oversize: AtomicU64,
    pub(super) dropped_raw_user_topic: AtomicU64,
    pub(super) reconnects: AtomicU64,
    /// Messages taken into the outgoing queue; each ends up `sent` or `dropped_send_failed`,
    /// or is still queued or in flight.
    pub(super) accepted: AtomicU64,
}

impl Counters {
    /// Messages accepted into the queue and not yet sent or lost.
    fn pending(&self) -> u64 {
        let done = self.sent.load(Ordering::Acquire) + self.dropped_send_failed.load(Ordering::Acquire);
        self.accepted.load(Ordering::Acquire).saturating_sub(done)
    }
}

/// Which connection a state change is about.
#[derive(Clone, Copy, Debug)]
pub(super) enum Side {
    Subscriber,
    Publisher,
}

pub(super) struct Shared {
    /// This process's id in the envelopes and presence records.
    pub(super) node: u64,
    pub(super) client: ::redis::Client,
    pub(super) url: String,
    pub(super) names: Names,
    pub(super) handle: Handle,
    wanted: Mutex<Wanted>,
    subscriber_up: AtomicBool,
    publisher_up: AtomicBool,
    /// The state last logged: 0 never connected, 1 connected, 2 disconnected.
    reported: AtomicU8,
    pub(super) counters: Counters,
    /// What the subscriber accepts from Redis.
    pub(super) inbound: subscriber::Inbound,
    pub(super) queued_bytes: AtomicUsize,
    /// Set when the subscriber lost its connection: the publisher checks its own at once.
    pub(super) probe_publisher: AtomicBool,
}

impl Shared {
    pub(super) fn wanted(&self) -> MutexGuard<'_, Wanted> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> BrokerState {
        if self.subscriber_up.load(Ordering::Acquire) && self.publisher_up.load(Ordering::Acquire) {
            BrokerState::Connected
        } else {
            BrokerState::Disconnected
        }
    }

    /// Records that `side` connected (`error` is `None`) or lost its connection, and logs the
    /// broker's state when it changes.
    pub(super) fn set_up(&self, side: Side, error: Option<&str>) {
        let flag = match side {
            Side::Subscriber => &self.subscriber_up,
            Side::Publisher => &self.publisher_up,
        };
        flag.store(error.is_none(), Ordering::Release);
        let now = if self.state() == BrokerState::Connected { 1 } else { 2 };
        let before = self.reported.load(Ordering::Acquire);
        if before == now || (before == 0 && now == 2 && error.is_none()) {
            return; // Still half-connected at start: wait for the other side.
        }
        if self.reported.compare_exchange(before, now, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return; // The other thread logged it.
        }
        let url = super::redact_url(&self.url);
        if now == 1 {
            if before == 2 {
                tracing::info!(broker = %url, "broker connected again; resubscribed");
            } else {
                tracing::info!(broker = %url, "broker connected");
            }
        } else {
            tracing::warn!(
                broker = %url,
                side = ?side,
                error = error.unwrap_or(""),
                "broker disconnected: publishes reach this node's subscribers only; reconnecting"
            );
        }
    }
}

/// The loop both broker threads run, forever: connect, run `session` until the connection
/// fails (it returns why, and undoes its own per-connection state before returning), mark `side`
/// down and wait with backoff before the next attempt. Reconnects after the first connection are
/// counted; a session that lasted over a second resets the backoff, so a connection that drops
/// right after it opens keeps backing off.
pub(super) fn stay_connected(
    shared: &Shared,
    side: Side,
    mut session: impl FnMut(&mut ::redis::Connection) -> ::redis::RedisError,
) -> ! {
    let name = match side {
        Side::Subscriber => "subscriber",
        Side::Publisher => "publisher",
    };
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    loop {
        let error = match shared.client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(mut con) => {
                if connected_before {
                    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                connected_before = true;
                let started = Instant::now();
                let error = session(&mut con);
                if started.elapsed() > Duration::from_secs(1) {
                    backoff.reset();
                }
                error
            }
            Err(e) => e,
        };
        let error = describe(&error);
        if let Side::Subscriber = side {
            // Whatever took the subscriber's connection may have taken the publisher's too.
            shared.probe_publisher.store(true, Ordering::Release);
        }
        shared.set_up(side, Some(&error));
        let wait = backoff.next_wait();
        tracing::debug!(error = %error, retry_ms = wait.as_millis() as u64, "broker {name}: reconnecting");
        std::thread::sleep(wait);
    }
}

/// Publishes through Redis to every node; see the module docs.
pub struct RedisBroker {
    shared: Arc<Shared>,
    queue: crossbeam_channel::Sender<Outgoing>,
    /// For presence reads from admin threads.
    query: Mutex<Option<::redis::Connection>>,
}

impl RedisBroker {
    /// Starts the broker threads. Never waits for Redis: until both connections are up the
    /// state is [`BrokerState::Disconnected`] and publishes reach this node only.
    pub fn start(options: RedisOptions, handle: Handle) -> Result<Self, String> {
        let client = ::redis::Client::open(options.url.as_str())
            .map_err(|e| format!("broker {}: {e}", super::redact_url(&options.url)))?;
        let shared = Arc::new(Shared {
            node: fastrand::u64(1..),
            client,
            url: options.url,
            names: Names::new(&options.prefix),
            handle,
            wanted: Mutex::default(),
            subscriber_up: AtomicBool::new(false),
            publisher_up: AtomicBool::new(false),
            reported: AtomicU8::new(0),
            counters: Counters::default(),
            inbound: subscriber::Inbound {
                max_message_size: options.max_message_size,
                raw_user_topics: options.raw_user_topics,
            },
            queued_bytes: AtomicUsize::new(0),
            probe_publisher: AtomicBool::new(false),
        });
        let (queue, rx): (_, Receiver<Outgoing>) = crossbeam_channel::bounded(QUEUE_MESSAGES);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map(drop)
        };
        let sub = shared.clone();
        spawn("throng-broker-sub", Box::new(move || subscriber::run(&sub)))
            .map_err(|e| format!("cannot start the broker: {e}"))?;
        let publ = shared.clone();
        spawn("throng-broker-pub", Box::new(move || publisher::run(&publ, &rx)))
            .map_err(|e| format!("cannot start the broker: {e}"))?;
        Ok(RedisBroker { shared, queue, query: Mutex::new(None) })
    }

    /// This node's id, as written in envelopes and presence records.
    pub fn node(&self) -> u64 {
        self.shared.node
    }

    fn enqueue(&self, item: Outgoing) {
        let bytes = item.bytes();
        let counters = &self.shared.counters;
        let queued = self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if queued + bytes > QUEUE_BYTES {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Counted before it can be sent, so that `pending` never sees it sent but not accepted.
        counters.accepted.fetch_add(1, Ordering::AcqRel);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(item) {
            counters.accepted.fetch_sub(1, Ordering::AcqRel);
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn query<T>(&self, f: impl FnOnce(&mut ::redis::Connection) -> ::redis::RedisResult<T>) -> Option<T> {
        let mut slot = self.query.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let con = self.shared.client.get_connection_with_timeout(CONNECT_TIMEOUT).ok()?;
            con.set_read_timeout(Some(COMMAND_TIMEOUT / 4)).ok()?;
            con.set_write_timeout(Some(COMMAND_TIMEOUT / 4)).ok()?;
            *slot = Some(con);
        }
        let result = f(slot.as_mut()?);
        if result.is_err() {
            *slot = None; // A failed or timed-out reply leaves the connection out of step.
        }
        result.ok()
    }
}

impl Broker for RedisBroker {
    fn publish(&self, topic: &str, message: Message) -> Result<PublishReceipt, throng::CommandError> {
        // This node's subscribers get it now, whatever Redis is doing; the copy that comes
        // back from Redis carries our node id and is skipped.
        // A loop's refusal is counted there and reported to the caller; other nodes still get it.
        let local = self.shared.handle.publish_counted(topic, &Prepared::new(&message));
        let payload = envelope::encode(self.shared.node, &message);
        self.enqueue(Outgoing::Publish { channel: self.shared.names.channel(topic), payload });
        local
    }

    fn topic_membership(&self, topic: &str) {
        let mut wanted = self.shared.wanted();
        if wanted.subscriber_synced {
            wanted.subscribe_dirty.insert(Arc::from(topic));
        }
    }

    fn topic_count_changed(&self, topic: &str) {
        let mut wanted = self.shared.wanted();
        if wanted.presence_synced && !topic.starts_with(USER_PREFIX) {
            wanted.presence_dirty.insert(Arc::from(topic));
        }
    }

    fn forward(&self, from: &Sender, message: Message) {
        let kind: &[u8] = match message {
            Message::Text(_) => b"text",
            Message::Binary(_) => b"binary",
        };
        let mut fields = vec![
            ("node", presence::field(self.shared.node).into_bytes()),
            ("conn", from.conn.to_string().into_bytes()),
            ("kind", kind.to_vec()),
        ];
        if let Some(user) = &from.user {
            fields.push(("user", user.clone().into_bytes()));
        }
        let data = match message {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
        };
        fields.push(("data", data));
        self.enqueue(Outgoing::Forward { fields });
    }

    fn state(&self) -> BrokerState {
        self.shared.state()
    }

    fn stats(&self) -> BrokerStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BrokerStats {
            sent: get(&c.sent),
            received: get(&c.received),
            dropped_queue_full: get(&c.dropped_queue_full),
            dropped_send_failed: get(&c.dropped_send_failed),
            dropped_malformed: get(&c.dropped_malformed),
            dropped_drain: get(&c.dropped_drain),
            dropped_oversize: get(&c.dropped_oversize),
            dropped_raw_user_topic: get(&c.dropped_raw_user_topic),
            reconnects: get(&c.reconnects),
            queued: self.queue.len() as u64,
        }
    }

    fn flush(&self, deadline: Instant) -> u64 {
        let counters = &self.shared.counters;
        loop {
            let pending = counters.pending();
            if pending == 0 {
                return 0;
            }
            if Instant::now() >= deadline {
                counters.dropped_drain.fetch_add(pending, Ordering::Relaxed);
                return pending;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn presence(&self, topic: &str, local: usize) -> Option<Presence> {
        if self.state() != BrokerState::Connected || topic.starts_with(USER_PREFIX) {
            return None;
        }
        let key = self.shared.names.presence(topic);
        let own = presence::field(self.shared.node);
        let fields: Vec<(String, String)> = self.query(|con| ::redis::cmd("HGETALL").arg(&key).query(con))?;
        let (found, stale) = presence::sum(&fields, &own, presence::now_ms(), local);
        if !stale.is_empty() {
            // Records of nodes that stopped without cleaning up; best effort.
            let _: Option<()> = self.query(|con| ::redis::cmd("HDEL").arg(&key).arg(&stale).query(con));
        }
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_prefix() {
        let names = Names::new("throng");
        assert_eq!(names.channel("news"), "throng:ch:news");
        assert_eq!(names.topic("throng:ch:user:ann"), Some("user:ann"));
        assert_eq!(names.topic("other:ch:news"), None);
        assert_eq!(names.presence("news"), "throng:presence:news");
        assert_eq!(names.stream, "throng:client");
    }
}
