//! Who is connected and subscribed to what, as the gateway knows it.
//!
//! The engine keeps its own per-loop topic index for delivery; this registry mirrors it so the
//! admin API can answer "how many connections did that publish reach" and "which channels have
//! subscribers" without asking the loops, and so a broker learns about a topic's first and last
//! local subscriber and every count change (for the fleet's presence records). Every engine
//! subscribe is posted while the lock is held: a publish that sees a count afterwards is queued
//! behind the subscribe in the same loop's mailbox.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::broker::Broker;
use super::channels::{allowed, Pattern};
use throng::{ConnId, Handle};

/// Why a subscribe command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    Forbidden,
    TooMany,
}

#[derive(Default)]
struct Inner {
    /// Channels joined by name, only for connections that joined any (the user topic is not
    /// counted against the limit, so it is not here). A set, so joining many stays linear.
    joined: HashMap<u64, HashSet<Arc<str>>>,
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

    /// Subscribes an opened connection to its user topic and `channels` (already checked
    /// against its allow-list and the per-connection limit).
    pub(crate) fn open(&self, conn: ConnId, user_topic: Option<&str>, channels: &[String]) {
        let mut inner = self.lock();
        if let Some(topic) = user_topic {
            self.join(&mut inner, conn, Arc::from(topic));
        }
        let mut joined = HashSet::new();
        for channel in channels {
            let topic: Arc<str> = Arc::from(channel.as_str());
            if joined.insert(topic.clone()) {
                self.join(&mut inner, conn, topic);
            }
        }
        if !joined.is_empty() {
            inner.joined.insert(conn.as_u64(), joined);
        }
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
    /// `allow` is the connection's allow-list (`None`: every channel); the caller checked that
    /// the connection is open.
    pub(crate) fn subscribe(
        &self,
        conn: ConnId,
        allow: Option<&[Pattern]>,
        channel: &str,
        max: usize,
    ) -> Result<bool, SubscribeError> {
        if !allowed(allow, channel) {
            return Err(SubscribeError::Forbidden);
        }
        let mut inner = self.lock();
        let joined = inner.joined.entry(conn.as_u64()).or_default();
        if joined.contains(channel) {
            return Ok(false);
        }
        if joined.len() >= max {
            if joined.is_empty() {
                inner.joined.remove(&conn.as_u64());
            }
            return Err(SubscribeError::TooMany);
        }
        let topic: Arc<str> = Arc::from(channel);
        joined.insert(topic.clone());
        self.join(&mut inner, conn, topic);
        Ok(true)
    }

    /// A client's unsubscribe command. `false`: it was not subscribed.
    pub(crate) fn unsubscribe(&self, conn: ConnId, channel: &str) -> bool {
        let mut inner = self.lock();
        let Some(joined) = inner.joined.get_mut(&conn.as_u64()) else { return false };
        if !joined.remove(channel) {
            return false;
        }
        if joined.is_empty() {
            inner.joined.remove(&conn.as_u64());
        }
        let _ = self.handle.unsubscribe(conn, channel);
        self.leave(&mut inner, channel);
        true
    }

    /// Forgets a closed connection's subscriptions (the engine drops its own itself).
    pub(crate) fn close(&self, conn: ConnId, user_topic: Option<&str>) {
        let mut inner = self.lock();
        let joined = inner.joined.remove(&conn.as_u64()).unwrap_or_default();
        for topic in joined.iter().map(|t| &**t).chain(user_topic) {
            self.leave(&mut inner, topic);
        }
    }

    /// Local subscribers of `topic`.
    pub(crate) fn subscribers(&self, topic: &str) -> usize {
        self.lock().topics.get(topic).copied().unwrap_or(0)
    }

    /// (topics with subscribers, subscriptions).
    pub(crate) fn totals(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.topics.len(), inner.subscriptions)
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
}
