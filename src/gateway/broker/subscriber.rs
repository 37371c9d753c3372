//! The subscriber thread: one pub/sub connection, subscribed to the Redis channel of every topic
//! that has a local subscriber. It reads with a short timeout so that, between messages, it can
//! apply the subscription changes the registry reported; after a reconnect it subscribes to the
//! whole set again.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::envelope;
use super::redis::{stay_connected, Shared, Side, COMMAND_TIMEOUT};
use crate::Prepared;

/// How long a read waits before pending subscription changes are applied.
const POLL: Duration = Duration::from_millis(20);
/// A silent connection is checked with a PING this often.
const PING_EVERY: Duration = Duration::from_secs(2);
/// Most channels in one SUBSCRIBE or UNSUBSCRIBE.
const CHUNK: usize = 1000;

pub(super) fn run(shared: &Arc<Shared>) {
    stay_connected(shared, Side::Subscriber, |con| {
        let error = session(shared, con);
        let mut wanted = shared.wanted();
        wanted.subscriber_synced = false;
        wanted.subscribe_dirty.clear();
        error
    })
}

/// Runs until the connection fails; returns why.
fn session(shared: &Shared, con: &mut ::redis::Connection) -> ::redis::RedisError {
    if let Err(e) = con.set_write_timeout(Some(COMMAND_TIMEOUT)) {
        return e;
    }
    let mut pubsub = con.as_pubsub();
    let Err(error) = subscribed_session(shared, &mut pubsub);
    // Dropping `pubsub` sends UNSUBSCRIBE and waits for the replies: on a connection being
    // given up, keep that wait short.
    let _ = pubsub.set_read_timeout(Some(Duration::from_millis(1)));
    error
}

enum Never {}

fn subscribed_session(
    shared: &Shared,
    pubsub: &mut ::redis::PubSub<'_>,
) -> Result<Never, ::redis::RedisError> {
    // Replies wait at most COMMAND_TIMEOUT; a slower Redis is treated as gone (a timed-out
    // reply would leave the connection out of step anyway).
    pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let everything: Vec<Arc<str>> = {
        let mut wanted = shared.wanted();
        wanted.subscriber_synced = true;
        wanted.subscribe_dirty.clear();
        wanted.topics.keys().cloned().collect()
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
                deliver(shared, &msg);
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
        if last_apply.elapsed() >= POLL {
            last_apply = Instant::now();
            let dirty = std::mem::take(&mut shared.wanted().subscribe_dirty);
            if !dirty.is_empty() {
                let (add, remove) = {
                    let wanted = shared.wanted();
                    let (add, remove): (Vec<Arc<str>>, Vec<Arc<str>>) =
                        dirty.into_iter().partition(|t| wanted.topics.contains_key(t));
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
fn deliver(shared: &Shared, msg: &::redis::Msg) {
    let Some(topic) = shared.names.topic(msg.get_channel_name()) else { return };
    match envelope::decode(msg.get_payload_bytes()) {
        Ok(d) if d.node == Some(shared.node) => {} // Ours: delivered locally at publish time.
        Ok(d) => {
            // A refusal is counted by the loop that refused it (commands_refused).
            let _ = shared.handle.publish_prepared(topic, &Prepared::from_parts(d.opcode, d.payload));
            shared.counters.received.fetch_add(1, Ordering::Relaxed);
        }
        Err(why) => {
            shared.counters.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(channel = msg.get_channel_name(), ?why, "broker: malformed message dropped");
        }
    }
}
