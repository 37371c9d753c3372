//! The worker threads: opens, closes and client messages. Each worker reads its own event
//! shard, to which the engine sends all of a connection's events, so one connection's events
//! are handled in order (its Open before its commands before its Close) while different
//! connections run in parallel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};

use super::broker;
use super::channels::{allowed, check_client_channel};
use super::config::ClientMessages;
use super::metrics::{CloseReason, Counters};
use super::state::Ctx;
use super::upgrade::Opening;
use throng::engine::Events;
use throng::{ConnId, Event, Joined, Message};

/// Starts one worker per event shard. A worker that falls behind lets its shard fill, and the
/// loops stop reading until it catches up: memory stays bounded.
pub(crate) fn spawn(ctx: Arc<Ctx>, shards: Vec<Events<Opening>>) -> std::io::Result<()> {
    ctx.front.workers.expect(shards.len());
    for (i, events) in shards.into_iter().enumerate() {
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name(format!("throng-worker-{i}"))
            .spawn(move || run(&ctx, i, &events))?;
    }
    Ok(())
}

/// A worker and, should it die, what keeps its shard moving.
fn run(ctx: &Ctx, worker: usize, events: &Events<Opening>) {
    // `work` catches each event's panic; one past it has marked the worker dead (`DeathWatch`)
    // by the time it lands here.
    if catch(|| work(ctx, worker, events)).is_err() {
        orphaned(ctx, events);
    }
}

/// A dead worker's shard is still read: left alone, it would fill and stop every loop from
/// reading. Its connections are closed with 1011 as their events come (their worker is gone),
/// and those the dead worker never registered give their admission slot back at once.
fn orphaned(ctx: &Ctx, events: &Events<Opening>) {
    for event in events {
        match event {
            Event::Open { conn, peer, .. } => {
                ctx.front.admission.release(peer.ip());
                close(ctx, conn, 1011, "internal error", CloseReason::WorkerGone);
            }
            Event::Message { conn, .. } => close(ctx, conn, 1011, "internal error", CloseReason::WorkerGone),
            // Counted and forgotten on the loop (`upgrade::closed`).
            Event::Close { .. } => {}
        }
    }
}

/// One worker: every event is handled under [`catch`], so a bug hit by one connection's event
/// costs that connection (closed with 1011), not the worker and every connection behind it.
fn work(ctx: &Ctx, worker: usize, events: &Events<Opening>) {
    let _watch = DeathWatch { health: &ctx.front.workers, worker };
    #[cfg(debug_assertions)]
    fault::die_at_start(worker);
    for throng::Delivered { event, decoded_at } in events.iter_timed() {
        if let Event::Message { .. } = event {
            // Measured before handling: how long the message queued, not how long it takes.
            ctx.counters().event_delay.observe(decoded_at.elapsed());
        }
        let conn = event.conn();
        if let Err(message) = catch(|| handle_event(ctx, event)) {
            let counters = ctx.counters();
            counters.inc(&counters.worker_panics);
            tracing::error!(
                worker,
                conn = conn.as_u64(),
                panic = %message,
                "worker: panic while handling an event; the connection is closed with 1011"
            );
            close(ctx, conn, 1011, "internal error", CloseReason::WorkerPanic);
        }
    }
}

/// Runs `f`, turning a panic into its message. The state `f` touches stays usable: the
/// connection table and the other shared tables recover their locks from poisoning, and a half-done
/// change concerns only the connection that is closed next.
fn catch(f: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        (payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-text panic payload".to_owned())
    })
}

/// Which worker threads died, for `/healthz`.
#[derive(Default)]
pub(crate) struct Health {
    workers: AtomicUsize,
    dead: Mutex<Vec<usize>>,
}

impl Health {
    fn expect(&self, n: usize) {
        self.workers.store(n, Ordering::Relaxed);
    }

    /// The workers that died, in order.
    pub(crate) fn dead(&self) -> Vec<usize> {
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone();
        dead.sort_unstable();
        dead
    }

    /// `/healthz`: 200 while every worker runs, 503 naming the dead ones otherwise.
    pub(crate) fn report(&self) -> (u16, Value) {
        let dead = self.dead();
        if dead.is_empty() {
            return (200, json!({ "status": "ok" }));
        }
        let workers = self.workers.load(Ordering::Relaxed);
        (503, json!({ "status": "unhealthy", "dead_workers": dead, "workers": workers }))
    }
}

/// Marks its worker dead if the thread unwinds past [`catch`] (nothing in the loop should
/// panic; this is the backstop that makes it visible).
struct DeathWatch<'a> {
    health: &'a Health,
    worker: usize,
}

impl Drop for DeathWatch<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(worker = self.worker, "worker thread died; /healthz reports it");
            self.health.dead.lock().unwrap_or_else(|e| e.into_inner()).push(self.worker);
        }
    }
}

/// Fault injection for the tests of the panic handling, compiled only with debug assertions
/// (never into a release build) and inert unless the test sets these variables on the process:
/// `THRONG_TEST_PANIC_CHANNEL=NAME` makes a subscribe to NAME panic inside the handler, and
/// `THRONG_TEST_KILL_WORKER=I` makes worker I die as it starts.
#[cfg(debug_assertions)]
mod fault {
    pub(super) fn panic_on_subscribe(channel: &str) {
        if std::env::var("THRONG_TEST_PANIC_CHANNEL").is_ok_and(|c| c == channel) {
            panic!("test fault: subscribe to {channel}");
        }
    }

    pub(super) fn die_at_start(worker: usize) {
        if std::env::var("THRONG_TEST_KILL_WORKER").is_ok_and(|w| w == worker.to_string()) {
            panic!("test fault: worker {worker} dies");
        }
    }
}

fn handle_event(ctx: &Ctx, event: Event<Opening>) {
    match event {
        // The loop recorded the connection, joined its user topic and channels and sent its
        // welcome at the upgrade (`upgrade::opened`); the engine's index is the one record of
        // who is subscribed to what.
        Event::Open { conn, peer, path, value: Opening { channels, .. }, .. } => {
            tracing::debug!(
                conn = conn.as_u64(),
                %peer,
                path,
                user = ctx.conns.principal(conn).map(|p| p.sub.to_string()),
                channels = channels.len(),
                "connection open"
            );
        }
        Event::Message { conn, message } => on_message(ctx, conn, message),
        // The loop already counted it, forgot it and logged it (`upgrade::closed`), and the
        // engine dropped its subscriptions.
        Event::Close { .. } => {}
    }
}

/// Closes `conn` for one of the gateway's own reasons, which the close hook counts it under.
/// Refused only when the loop is overloaded (counted by the engine).
fn close(ctx: &Ctx, conn: ConnId, code: u16, text: &str, why: CloseReason) {
    let _ = ctx.handle.close_tagged(conn, code, text, why.tag());
}

#[derive(Deserialize)]
struct Command {
    op: String,
    channel: Option<String>,
    #[serde(default)]
    id: Value,
}

fn on_message(ctx: &Ctx, conn: ConnId, message: Message) {
    let command = match &message {
        Message::Text(text) if text.trim_start().starts_with('{') => {
            serde_json::from_str::<Command>(text).ok()
        }
        _ => None,
    };
    if let Some(command) = command {
        return run_command(ctx, conn, command);
    }
    let counters = ctx.counters();
    match ctx.front.client_messages() {
        ClientMessages::Reject => {
            counters.inc(&counters.client_messages_rejected);
            let text = "push-only: send subscribe/unsubscribe commands only";
            close(ctx, conn, 1003, text, CloseReason::PushOnly);
        }
        ClientMessages::Forward => {
            counters.inc(&counters.client_messages_forwarded);
            let user = ctx.conns.principal(conn).map(|p| p.sub.to_string());
            ctx.broker.forward(&broker::Sender { conn: conn.as_u64(), user }, message);
        }
    }
}

/// A command's answer, made once its outcome is known: on this worker for the commands it
/// refuses itself, on the connection's loop for those the engine decides (the channel cap and
/// whether the connection is still open), so that the reply follows the subscription in order.
struct Reply {
    command: Command,
    counters: Arc<Counters>,
}

impl Reply {
    /// The reply's JSON (`subscribed`, `unsubscribed` or an error), counted.
    fn finish(self, result: Result<&'static str, CommandError>) -> Value {
        let Command { op, channel, id } = self.command;
        let counters = &self.counters;
        let mut reply = match result {
            Ok(kind) => {
                counters.inc(&counters.commands_ok);
                json!({ "type": kind, "channel": channel })
            }
            Err((code, message)) => {
                counters.inc(&counters.commands_failed);
                json!({ "type": "error", "op": op, "channel": channel, "error": code, "message": message })
            }
        };
        if !id.is_null() {
            reply["id"] = id;
        }
        reply
    }

    /// The same, as the message the engine queues to the connection.
    fn message(self, result: Result<&'static str, CommandError>) -> Option<Message> {
        Some(Message::Text(self.finish(result).to_string()))
    }
}

fn run_command(ctx: &Ctx, conn: ConnId, command: Command) {
    let reply = Reply { command, counters: ctx.front.counters.clone() };
    let refused = |reply: Reply, e: CommandError| {
        // Refused only by an overloaded loop, which counts it (commands_refused).
        let _ = ctx.handle.send(conn, reply.finish(Err(e)).to_string());
    };
    let subscribe = match reply.command.op.as_str() {
        "subscribe" => true,
        "unsubscribe" => false,
        other => {
            let e = ("unknown_op", format!("unknown op {other:?}; use subscribe or unsubscribe"));
            return refused(reply, e);
        }
    };
    let channel = match checked_channel(&reply.command) {
        Ok(channel) => channel.to_owned(),
        Err(e) => return refused(reply, e),
    };
    if !subscribe {
        let posted = ctx.handle.unsubscribe_with(conn, &channel, move |_| reply.message(Ok("unsubscribed")));
        return overloaded_if(ctx, posted);
    }
    #[cfg(debug_assertions)]
    fault::panic_on_subscribe(&channel);
    let Some(principal) = ctx.conns.open_principal(conn) else {
        return refused(reply, ("closed", "connection is closing".into()));
    };
    let allow = principal.as_ref().and_then(|p| p.allowed.as_deref());
    if !allowed(allow, &channel) {
        let e = ("forbidden", format!("channel not allowed: {channel}"));
        return refused(reply, e);
    }
    // The user topic is not counted against the cap on channels joined by name.
    let max = ctx.front.settings.max_channels_per_connection;
    let limit = max.saturating_add(usize::from(principal.is_some()));
    let posted = ctx.handle.subscribe_with(conn, &channel, limit, move |joined| match joined {
        Joined::Added | Joined::Already => reply.message(Ok("subscribed")),
        Joined::Full => reply.message(Err(("too_many_channels", format!("at most {max} channels")))),
        Joined::Closed => {
            reply.finish(Err(("closed", "connection is closing".into())));
            None
        }
    });
    overloaded_if(ctx, posted)
}

/// A command the loop refused (overloaded; it counted the refusal): its reply could not reach
/// the loop either.
fn overloaded_if(ctx: &Ctx, posted: Result<(), throng::CommandError>) {
    if posted.is_err() {
        let counters = ctx.counters();
        counters.inc(&counters.commands_failed);
    }
}

type CommandError = (&'static str, String);

/// A subscribe's or unsubscribe's channel, checked as a client may name it.
fn checked_channel(command: &Command) -> Result<&str, CommandError> {
    let channel =
        command.channel.as_deref().ok_or(("missing_channel", "a \"channel\" is required".to_owned()))?;
    check_client_channel(channel).map_err(|e| {
        let code =
            if e == super::channels::NameError::Reserved { "reserved_channel" } else { "invalid_channel" };
        (code, format!("{}: {channel}", e.reason()))
    })?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_returns_the_panic_message_and_the_thread_goes_on() {
        assert_eq!(catch(|| {}), Ok(()));
        assert_eq!(catch(|| panic!("boom")), Err("boom".to_owned()));
        let n = 7;
        assert_eq!(catch(|| panic!("boom {n}")), Err("boom 7".to_owned()));
        assert_eq!(catch(|| std::panic::panic_any(5u8)), Err("non-text panic payload".to_owned()));
        // Still here: the same thread handles the next event.
        let mut handled = 0;
        for i in 0..3 {
            let _ = catch(|| {
                handled += 1;
                assert!(i != 1, "event {i}");
            });
        }
        assert_eq!(handled, 3);
    }

    #[test]
    fn a_worker_that_dies_is_reported() {
        let health = Arc::new(Health::default());
        health.expect(4);
        assert_eq!(health.report(), (200, json!({"status": "ok"})));
        // A thread that ends normally is not dead.
        let h = health.clone();
        std::thread::spawn(move || drop(DeathWatch { health: &h, worker: 1 })).join().unwrap();
        assert!(health.dead().is_empty());
        let h = health.clone();
        let died = std::thread::spawn(move || {
            let _watch = DeathWatch { health: &h, worker: 3 };
            panic!("outside the catch");
        });
        assert!(died.join().is_err());
        assert_eq!(health.dead(), [3]);
        assert_eq!(health.report(), (503, json!({"status": "unhealthy", "dead_workers": [3], "workers": 4})));
    }
}
