//! The subscriber thread: one pub/sub connection, subscribed to the Redis channel of every topic
//! that has a local subscriber. It reads with a short timeout so that, between messages, it can
//! apply the subscription changes the engine reported; after a reconnect it subscribes to the
//! whole set again.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::envelope;
use super::redis::{stay_connected, Shared, Side, COMMAND_TIMEOUT};
use crate::channels::USER_PREFIX;
use throng::Prepared;

/// How long a read waits before pending subscription changes are applied.
const POLL: Duration = Duration::from_millis(20);
/// A silent connection is checked with a PING this often.
const PING_EVERY: Duration = Duration::from_secs(2);
/// Most channels in one SUBSCRIBE or UNSUBSCRIBE.
const CHUNK: usize = 1000;
/// At most one warning about dropped messages per this interval (the counters count them all).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the subscriber accepts from Redis, which anyone who can `PUBLISH` there can write to.
#[derive(Clone, Copy, Debug)]
pub(super) struct Inbound {
    /// Largest Redis message delivered (envelope included); larger ones are dropped.
    pub(super) max_message_size: usize,
    /// Whether a payload without the envelope may reach a `user:` topic.
    pub(super) raw_user_topics: bool,
}

/// Why a message taken from Redis was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Over [`Inbound::max_message_size`].
    Oversize,
    /// A payload without the envelope on a `user:` topic, while that is off.
    RawUserTopic,
    /// The envelope could not be decoded.
    Malformed(envelope::Malformed),
}

impl Inbound {
    /// Decides what to do with `payload` arriving for `topic`: the decoded message, or why not.
    /// The size is checked first, before any work that grows with the payload.
    pub(super) fn check<'a>(&self, topic: &str, payload: &'a [u8]) -> Result<envelope::Decoded<'a>, Refusal> {
        if payload.len() > self.max_message_size {
            return Err(Refusal::Oversize);
        }
        let decoded = envelope::decode(payload).map_err(Refusal::Malformed)?;
        if decoded.node.is_none() && !self.raw_user_topics && topic.starts_with(USER_PREFIX) {
            return Err(Refusal::RawUserTopic);
        }
        Ok(decoded)
    }
}

/// Rate-limits the warning about dropped messages: the first drop is logged at once, later
/// ones at most every [`WARN_EVERY`], with how many were dropped in between.
struct DropLog {
    last: Option<Instant>,
    since: u64,
}

impl DropLog {
    fn dropped(&mut self, channel: &str, len: usize, why: Refusal) {
        self.since += 1;
        if self.last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        let what = match why {
            Refusal::Oversize => "over broker_max_message_size",
            Refusal::RawUserTopic => "raw PUBLISH to a user topic (broker_raw_user_topics is off)",
            Refusal::Malformed(_) => "malformed envelope",
        };
        tracing::warn!(
            channel,
            bytes = len,
            dropped = self.since,
            "broker: message from Redis dropped: {what}"
        );
        self.last = Some(Instant::now());
        self.since = 0;
    }
}

pub(super) fn run(shared: &Arc<Shared>) {
    let mut log = DropLog { last: None, since: 0 };
    stay_connected(shared, Side::Subscriber, |con| {
        let error = session(shared, con, &mut log);
        let mut wanted = shared.wanted();
        wanted.subscriber_synced = false;
        wanted.subscribe_dirty.clear();
        error
    })
}

/// Runs until the connection fails; returns why.
fn session(shared: &Shared, con: &mut ::redis::Connection, log: &mut DropLog) -> ::redis::RedisError {
    if let Err(e) = con.set_write_timeout(Some(COMMAND_TIMEOUT)) {
        return e;
    }
    let mut pubsub = con.as_pubsub();
    let Err(error) = subscribed_session(shared, &mut pubsub, log);
    // Dropping `pubsub` sends UNSUBSCRIBE and waits for the replies: on a connection being
    // given up, keep that wait short.
    let _ = pubsub.set_read_timeout(Some(Duration::from_millis(1)));
    error
}

enum Never {}

fn subscribed_session(
    shared: &Shared,
    pubsub: &mut ::redis::PubSub<'_>,
    log: &mut DropLog,
) -> Result<Never, ::redis::RedisError> {
    // Replies wait at most COMMAND_TIMEOUT; a slower Redis is treated as gone (a timed-out
    // reply would leave the connection out of step anyway).
    pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let everything: Vec<Arc<str>> = {
        let mut wanted = shared.wanted();
        wanted.subscriber_synced = true;
        wanted.subscribe_dirty.clear();
        drop(wanted);
        shared.handle.topics().into_iter().map(|(topic, _)| topic).collect()
    };
    let started = Instant::now();
    apply(shared, pubsub, &everything, "SUBSCRIBE")?;
    let mut subscribed: HashSet<Arc<str>> = everything.into_iter().collect();
    tracing::debug!(
        channels = subscribed.len(),
        ms = started.elapsed().as_millis() as u64,
        "broker subscriber: subscribed"
    );
    shared.set_up(Side::Subscriber, None);
    pubsub.set_read_timeout(Some(POLL))?;
    let mut last_heard = Instant::now();
    let mut last_apply = Instant::now();
    loop {
        match pubsub.get_message() {
            Ok(msg) => {
                last_heard = Instant::now();
                deliver(shared, &msg, log);
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
        if last_apply.elapsed() >= POLL {
            last_apply = Instant::now();
            let dirty = std::mem::take(&mut shared.wanted().subscribe_dirty);
            if !dirty.is_empty() {
                let (add, remove) = {
                    let (add, remove): (Vec<Arc<str>>, Vec<Arc<str>>) =
                        dirty.into_iter().partition(|t| shared.handle.subscribers(t) > 0);
                    let add: Vec<Arc<str>> = add.into_iter().filter(|t| !subscribed.contains(t)).collect();
                    let remove: Vec<Arc<str>> =
                        remove.into_iter().filter(|t| subscribed.contains(t)).collect();
                    (add, remove)
                };
                pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                apply(shared, pubsub, &add, "SUBSCRIBE")?;
                apply(shared, pubsub, &remove, "UNSUBSCRIBE")?;
                pubsub.set_read_timeout(Some(POLL))?;
                for topic in &remove {
                    subscribed.remove(topic);
                }
                subscribed.extend(add);
            }
        }
        if last_heard.elapsed() >= PING_EVERY {
            pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
            pubsub.ping::<::redis::Value>()?;
            pubsub.set_read_timeout(Some(POLL))?;
            last_heard = Instant::now();
        }
    }
}

/// Sends `command` (SUBSCRIBE or UNSUBSCRIBE) for `topics`, in chunks.
fn apply(
    shared: &Shared,
    pubsub: &mut ::redis::PubSub<'_>,
    topics: &[Arc<str>],
    command: &str,
) -> ::redis::RedisResult<()> {
    for chunk in topics.chunks(CHUNK) {
        let channels: Vec<String> = chunk.iter().map(|t| shared.names.channel(t)).collect();
        if command == "SUBSCRIBE" {
            pubsub.subscribe(&channels)?;
        } else {
            pubsub.unsubscribe(&channels)?;
        }
    }
    Ok(())
}

/// Hands a message from Redis to the loops, framed once for all of them.
fn deliver(shared: &Shared, msg: &::redis::Msg, log: &mut DropLog) {
    let Some(topic) = shared.names.topic(msg.get_channel_name()) else { return };
    let payload = msg.get_payload_bytes();
    match shared.inbound.check(topic, payload) {
        Ok(d) if d.node == Some(shared.node) => {} // Ours: delivered locally at publish time.
        Ok(d) => {
            // A refusal is counted by the loop that refused it (commands_refused).
            let _ = shared.handle.publish_prepared(topic, &Prepared::from_parts(d.opcode, d.payload));
            shared.counters.received.fetch_add(1, Ordering::Relaxed);
        }
        Err(why) => {
            let counter = match why {
                Refusal::Oversize => &shared.counters.dropped_oversize,
                Refusal::RawUserTopic => &shared.counters.dropped_raw_user_topic,
                Refusal::Malformed(_) => &shared.counters.dropped_malformed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            log.dropped(msg.get_channel_name(), payload.len(), why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use throng::Message;

    const RULES: Inbound = Inbound { max_message_size: 100, raw_user_topics: false };

    #[test]
    fn size_cap_counts_the_whole_message() {
        let at_cap = envelope::encode(1, &Message::Text("x".repeat(100 - envelope::HEADER_LEN)));
        assert!(RULES.check("news", &at_cap).is_ok());
        let over = envelope::encode(1, &Message::Text("x".repeat(101 - envelope::HEADER_LEN)));
        assert_eq!(RULES.check("news", &over), Err(Refusal::Oversize));
        assert_eq!(RULES.check("news", &[b'x'; 101]), Err(Refusal::Oversize));
        assert!(RULES.check("news", &[b'x'; 100]).is_ok());
    }

    #[test]
    fn raw_payloads_reach_user_topics_only_when_allowed() {
        assert_eq!(RULES.check("user:ann", b"hi"), Err(Refusal::RawUserTopic));
        assert!(RULES.check("news", b"hi").is_ok());
        let enveloped = envelope::encode(1, &Message::Text("hi".into()));
        assert!(RULES.check("user:ann", &enveloped).is_ok());
        let open = Inbound { raw_user_topics: true, ..RULES };
        assert!(open.check("user:ann", b"hi").is_ok());
    }

    #[test]
    fn malformed_is_reported_as_such() {
        assert_eq!(
            RULES.check("news", &[0x00, b'T', 9]),
            Err(Refusal::Malformed(envelope::Malformed::Header))
        );
    }
}
