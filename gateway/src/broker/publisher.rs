//! The publisher thread: drains the outgoing queue into pipelined `PUBLISH` / `XADD` commands on
//! its own connection, and keeps this node's presence records. While Redis is unreachable the
//! queue fills up to its bounds and further publishes are dropped (and counted) by the front;
//! what is queued goes out after the reconnect.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::presence;
use super::redis::{stay_connected, Outgoing, Shared, Side, COMMAND_TIMEOUT};
use crate::channels::USER_PREFIX;

/// Most messages in one pipeline.
const BATCH_MESSAGES: usize = 512;
/// Most payload bytes in one pipeline (one message may exceed it alone).
const BATCH_BYTES: usize = 1 << 20;
/// Most presence records in one pipeline.
const PRESENCE_BATCH: usize = 1000;
/// An idle connection is checked with a PING this often.
const IDLE_PING: Duration = Duration::from_secs(1);
/// The client-message stream is trimmed to about this many entries.
const STREAM_MAXLEN: u64 = 100_000;

pub(super) fn run(shared: &Arc<Shared>, queue: &Receiver<Outgoing>) {
    stay_connected(shared, Side::Publisher, |con| {
        let error = session(shared, queue, con);
        shared.wanted().presence_synced = false;
        error
    })
}

/// Runs until the connection fails; returns why.
fn session(
    shared: &Shared,
    queue: &Receiver<Outgoing>,
    con: &mut ::redis::Connection,
) -> ::redis::RedisError {
    if let Err(e) = con.set_read_timeout(Some(COMMAND_TIMEOUT)) {
        return e;
    }
    if let Err(e) = con.set_write_timeout(Some(COMMAND_TIMEOUT)) {
        return e;
    }
    shared.wanted().presence_synced = true;
    // Announce ourselves only once the presence records are written.
    let mut refresh_at = Instant::now();
    let mut flush_at = Instant::now();
    let mut batch: Vec<Outgoing> = Vec::with_capacity(BATCH_MESSAGES);
    let mut up = false;
    let mut last_io = Instant::now();
    loop {
        let now = Instant::now();
        // An idle connection does not notice that Redis went away: check it now and then, and
        // at once when the subscriber lost its connection, so that `/readyz` tells the truth
        // and the next publish does not meet a dead socket.
        if shared.probe_publisher.swap(false, Ordering::AcqRel) || now - last_io >= IDLE_PING {
            if let Err(e) = ::redis::cmd("PING").query::<()>(con) {
                return e;
            }
            last_io = now;
        }
        if now >= refresh_at {
            if let Err(e) = write_presence(shared, con, true) {
                return e;
            }
            refresh_at = now + presence::REFRESH;
            flush_at = now + presence::FLUSH;
            if !up {
                up = true;
                shared.set_up(Side::Publisher, None);
            }
        } else if now >= flush_at {
            if let Err(e) = write_presence(shared, con, false) {
                return e;
            }
            flush_at = now + presence::FLUSH;
        }
        match queue.recv_timeout(presence::FLUSH) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                // The broker is gone (process shutting down): nothing more to send.
                std::thread::park();
                continue;
            }
        }
        let mut bytes = batch[0].bytes();
        while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
            let Ok(next) = queue.try_recv() else { break };
            bytes += next.bytes();
            batch.push(next);
        }
        shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        let n = batch.len() as u64;
        match send(shared, con, &mut batch) {
            Ok(()) => {
                last_io = Instant::now();
                shared.counters.sent.fetch_add(n, Ordering::Relaxed)
            }
            Err(e) => {
                // Some of the batch may have reached Redis; none of it is retried.
                shared.counters.dropped_send_failed.fetch_add(n, Ordering::Relaxed);
                return e;
            }
        };
    }
}

fn send(
    shared: &Shared,
    con: &mut ::redis::Connection,
    batch: &mut Vec<Outgoing>,
) -> ::redis::RedisResult<()> {
    let mut pipe = ::redis::pipe();
    for item in batch.drain(..) {
        match item {
            Outgoing::Publish { channel, payload } => {
                pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
            }
            Outgoing::Forward { fields } => {
                let cmd =
                    pipe.cmd("XADD").arg(&shared.names.stream).arg("MAXLEN").arg("~").arg(STREAM_MAXLEN);
                cmd.arg("*");
                for (name, value) in fields {
                    cmd.arg(name).arg(value);
                }
                cmd.ignore();
            }
        }
    }
    pipe.query::<()>(con)
}

/// Writes this node's changed presence records, or all of them when `all`.
fn write_presence(shared: &Shared, con: &mut ::redis::Connection, all: bool) -> ::redis::RedisResult<()> {
    // Reading a count with `observe` re-arms its change report: every topic written here
    // reports its next change again, also after a reconnect dropped the reports in between.
    let handle = &shared.handle;
    let counts: Vec<(String, usize)> = if all {
        shared.wanted().presence_dirty.clear();
        (handle.topics().iter())
            .filter(|(t, _)| !t.starts_with(USER_PREFIX))
            .map(|(t, _)| (t.to_string(), handle.observe(t)))
            .collect()
    } else {
        let dirty = std::mem::take(&mut shared.wanted().presence_dirty);
        dirty.iter().map(|t| (t.to_string(), handle.observe(t))).collect()
    };
    let field = presence::field(shared.node);
    let now = presence::now_ms();
    for chunk in counts.chunks(PRESENCE_BATCH) {
        let mut pipe = ::redis::pipe();
        for (topic, count) in chunk {
            presence::write(&mut pipe, &shared.names.presence(topic), &field, *count, now);
        }
        pipe.query::<()>(con)?;
    }
    Ok(())
}
