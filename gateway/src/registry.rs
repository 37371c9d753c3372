//! Who is connected and subscribed to what, as the gateway knows it.
//!
//! The engine keeps its own per-loop topic index for delivery; this registry mirrors it so the
//! admin API can answer "how many connections did that publish reach" and "which channels have
//! subscribers" without asking the loops, and so a broker learns about a topic's first and last
//! local subscriber and every count change (for the fleet's presence records). Every engine
//! subscribe is posted while the lock is held: a publish that sees a count afterwards is queued
//! behind the subscribe in the same loop's mailbox.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::broker::Broker;
use super::channels::{allowed, Pattern};
use throng::{ConnId, Handle};

/// What the gateway keeps per open connection.
pub(crate) struct ConnInfo {
    pub(crate) ip: IpAddr,
    pub(crate) user: Option<Arc<str>>,
    pub(crate) allowed: Option<Arc<[Pattern]>>,
    /// Channels joined by name (the user topic is not counted against the limit); a set, so
    /// that joining many stays linear.
    pub(crate) channels: HashSet<Arc<str>>,
    pub(crate) user_topic: Option<Arc<str>>,
    /// When the worker saw the Open, for the close line's duration.
    pub(crate) opened: std::time::Instant,
}

/// Why a subscribe command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    Forbidden,
    TooMany,
    Gone,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, ConnInfo>,
    topics: HashMap<Arc<str>, usize>,
    subscriptions: usize,
}

pub(crate) struct Registry {
    inner: Mutex<Inner>,
    handle: Handle,
    broker: Arc<dyn Broker>,
}

impl Registry {
    pub(crate) fn new(handle: Handle, broker: Arc<dyn Broker>) -> Self {
        Registry { inner: Mutex::default(), handle, broker }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the maps half-updated in a way that matters more than
        // stopping delivery would.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an opened connection and subscribes it to its user topic and `channels`
    /// (already checked against its allow-list and the per-connection limit).
    pub(crate) fn open(&self, conn: ConnId, mut info: ConnInfo, channels: &[String]) {
        let mut inner = self.lock();
        if let Some(topic) = info.user_topic.clone() {
            self.join(&mut inner, conn, topic);
        }
        for channel in channels {
            let topic: Arc<str> = Arc::from(channel.as_str());
            if info.channels.insert(topic.clone()) {
                self.join(&mut inner, conn, topic);
            }
        }
        inner.conns.insert(conn.as_u64(), info);
    }

    fn join(&self, inner: &mut Inner, conn: ConnId, topic: Arc<str>) {
        // Refused only by an overloaded loop, which counts it (commands_refused).
        let _ = self.handle.subscribe(conn, &topic);
        inner.subscriptions += 1;
        let count = inner.topics.entry(topic.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.broker.topic_added(&topic);
        }
        self.broker.subscribers_changed(&topic, *count);
    }

    fn leave(&self, inner: &mut Inner, topic: &str) {
        inner.subscriptions = inner.subscriptions.saturating_sub(1);
        if let Some(count) = inner.topics.get_mut(topic) {
            *count -= 1;
            let left = *count;
            if left == 0 {
                inner.topics.remove(topic);
                self.broker.topic_removed(topic);
            }
            self.broker.subscribers_changed(topic, left);
        }
    }

    /// A client's subscribe command. `Ok(false)`: it was subscribed already.
    pub(crate) fn subscribe(&self, conn: ConnId, channel: &str, max: usize) -> Result<bool, SubscribeError> {
        let mut inner = self.lock();
        let info = inner.conns.get_mut(&conn.as_u64()).ok_or(SubscribeError::Gone)?;
        if !allowed(info.allowed.as_deref(), channel) {
            return Err(SubscribeError::Forbidden);
        }
        if info.channels.contains(channel) {
            return Ok(false);
        }
        if info.channels.len() >= max {
            return Err(SubscribeError::TooMany);
        }
        let topic: Arc<str> = Arc::from(channel);
        info.channels.insert(topic.clone());
        self.join(&mut inner, conn, topic);
        Ok(true)
    }

    /// A client's unsubscribe command. `false`: it was not subscribed.
    pub(crate) fn unsubscribe(&self, conn: ConnId, channel: &str) -> bool {
        let mut inner = self.lock();
        let Some(info) = inner.conns.get_mut(&conn.as_u64()) else { return false };
        if !info.channels.remove(channel) {
            return false;
        }
        let _ = self.handle.unsubscribe(conn, channel);
        self.leave(&mut inner, channel);
        true
    }

    /// Forgets a closed connection (the engine drops its subscriptions itself).
    pub(crate) fn close(&self, conn: ConnId) -> Option<ConnInfo> {
        let mut inner = self.lock();
        let info = inner.conns.remove(&conn.as_u64())?;
        for topic in info.channels.iter().chain(info.user_topic.as_ref()) {
            self.leave(&mut inner, topic);
        }
        Some(info)
    }

    pub(crate) fn contains(&self, conn: u64) -> bool {
        self.lock().conns.contains_key(&conn)
    }

    /// Local subscribers of `topic`.
    pub(crate) fn subscribers(&self, topic: &str) -> usize {
        self.lock().topics.get(topic).copied().unwrap_or(0)
    }

    /// (open connections, topics with subscribers, subscriptions).
    pub(crate) fn totals(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (inner.conns.len(), inner.topics.len(), inner.subscriptions)
    }

    /// Topics and their local subscriber counts, sorted by name; `user:` topics only when asked.
    pub(crate) fn topics(&self, with_users: bool) -> Vec<(String, usize)> {
        let inner = self.lock();
        let mut list: Vec<(String, usize)> = (inner.topics.iter())
            .filter(|(t, _)| with_users || !t.starts_with(super::channels::USER_PREFIX))
            .map(|(t, &n)| (t.to_string(), n))
            .collect();
        list.sort_unstable();
        list
    }

    /// The token subject of an open connection.
    pub(crate) fn user_of(&self, conn: u64) -> Option<Arc<str>> {
        self.lock().conns.get(&conn).and_then(|c| c.user.clone())
    }
}
