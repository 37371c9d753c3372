//! The worker threads: opens, closes and client messages. A dispatcher thread routes each
//! event to a worker chosen by connection id, so one connection's events are handled in order
//! (its Open before its commands before its Close) while different connections run in
//! parallel.

use std::collections::HashSet;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use serde::Deserialize;
use serde_json::{json, Value};

use super::broker;
use super::channels::{check_client_channel, user_topic};
use super::config::ClientMessages;
use super::registry::{ConnInfo, SubscribeError};
use super::state::Ctx;
use crate::{ConnId, Event, Message};

/// Starts the dispatcher and `n` workers.
pub(crate) fn spawn(ctx: Arc<Ctx>, events: Receiver<Event>, n: usize) -> std::io::Result<()> {
    let mut queues: Vec<Sender<Event>> = Vec::with_capacity(n);
    for i in 0..n {
        // Small queues: when a worker falls behind, the dispatcher waits, the engine's channel
        // fills and the loops stop reading. Memory stays bounded.
        let (tx, rx) = crossbeam_channel::bounded(1024);
        queues.push(tx);
        let ctx = ctx.clone();
        std::thread::Builder::new().name(format!("throng-worker-{i}")).spawn(move || {
            for event in rx {
                handle_event(&ctx, event);
            }
        })?;
    }
    std::thread::Builder::new().name("throng-dispatch".into()).spawn(move || {
        for event in events {
            let conn = match &event {
                Event::Open { conn, .. } | Event::Message { conn, .. } | Event::Close { conn, .. } => *conn,
            };
            let spread = conn.as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            let queue = &queues[(spread % queues.len() as u64) as usize];
            if queue.send(event).is_err() {
                return; // A worker died; the process is going down.
            }
        }
    })?;
    Ok(())
}

fn handle_event(ctx: &Ctx, event: Event) {
    match event {
        Event::Open { conn, peer, user, .. } => {
            let pending = ctx.front.unpark(user);
            let (claims, channels) = pending.map_or((None, Vec::new()), |p| (p.claims, p.channels));
            let user_name = claims.as_ref().map(|c| Arc::<str>::from(c.sub.as_str()));
            let info = ConnInfo {
                ip: peer.ip(),
                user: user_name.clone(),
                allowed: claims.as_ref().and_then(|c| c.channels.clone()).map(Arc::from),
                channels: HashSet::with_capacity(channels.len()),
                user_topic: user_name.as_deref().map(|u| Arc::from(user_topic(u))),
            };
            ctx.registry.open(conn, info, &channels);
            if let Some(exp) = claims.as_ref().and_then(|c| c.exp) {
                ctx.expiry.schedule(conn, exp);
            }
            // Sent after the subscribes were posted, so a client that has read it is subscribed.
            let welcome = json!({
                "type": "welcome",
                "conn": conn.as_u64().to_string(),
                "user": user_name.as_deref(),
                "channels": channels,
            });
            // Refused only by an overloaded loop, which counts it (commands_refused).
            let _ = ctx.handle.send(conn, welcome.to_string());
        }
        Event::Message { conn, message } => on_message(ctx, conn, message),
        Event::Close { conn, .. } => {
            ctx.expiry.cancel(conn);
            if let Some(info) = ctx.registry.close(conn) {
                ctx.front.admission.release(info.ip);
            }
        }
    }
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
        let reply = run_command(ctx, conn, command);
        let _ = ctx.handle.send(conn, reply.to_string());
        return;
    }
    let counters = ctx.counters();
    match ctx.front.client_messages() {
        ClientMessages::Reject => {
            counters.inc(&counters.client_messages_rejected);
            let _ = ctx.handle.close(conn, 1003, "push-only: send subscribe/unsubscribe commands only");
        }
        ClientMessages::Forward => {
            counters.inc(&counters.client_messages_forwarded);
            let user = ctx.registry.user_of(conn.as_u64()).map(|u| u.to_string());
            ctx.broker.forward(&broker::Sender { conn: conn.as_u64(), user }, message);
        }
    }
}

fn run_command(ctx: &Ctx, conn: ConnId, command: Command) -> Value {
    let counters = ctx.counters();
    let result = execute(ctx, conn, &command);
    let mut reply = match result {
        Ok(kind) => {
            counters.inc(&counters.commands_ok);
            json!({ "type": kind, "channel": command.channel })
        }
        Err((code, message)) => {
            counters.inc(&counters.commands_failed);
            json!({ "type": "error", "op": command.op, "channel": command.channel, "error": code, "message": message })
        }
    };
    if !command.id.is_null() {
        reply["id"] = command.id;
    }
    reply
}

type CommandError = (&'static str, String);

fn execute(ctx: &Ctx, conn: ConnId, command: &Command) -> Result<&'static str, CommandError> {
    let channel = || {
        let channel =
            command.channel.as_deref().ok_or(("missing_channel", "a \"channel\" is required".to_owned()))?;
        check_client_channel(channel).map_err(|e| {
            let code = if e == super::channels::NameError::Reserved {
                "reserved_channel"
            } else {
                "invalid_channel"
            };
            (code, format!("{}: {channel}", e.reason()))
        })?;
        Ok::<_, CommandError>(channel)
    };
    match command.op.as_str() {
        "subscribe" => {
            let channel = channel()?;
            let max = ctx.front.settings.max_channels_per_connection;
            match ctx.registry.subscribe(conn, channel, max) {
                Ok(_) => Ok("subscribed"),
                Err(SubscribeError::Forbidden) => {
                    Err(("forbidden", format!("channel not allowed: {channel}")))
                }
                Err(SubscribeError::TooMany) => Err(("too_many_channels", format!("at most {max} channels"))),
                Err(SubscribeError::Gone) => Err(("closed", "connection is closing".into())),
            }
        }
        "unsubscribe" => {
            let channel = channel()?;
            ctx.registry.unsubscribe(conn, channel);
            Ok("unsubscribed")
        }
        other => Err(("unknown_op", format!("unknown op {other:?}; use subscribe or unsubscribe"))),
    }
}
