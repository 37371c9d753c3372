//! The loop's rules on the in-memory backend: timers on a clock the test moves (no sleeping),
//! stale ids, publish fan-out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::{Loop, LoopCore};
use crate::engine::backend::memory::{Memory, PeerId};
use crate::engine::delivery::RawEvent;
use crate::engine::mailbox::{LoopMailbox, Shared};
use crate::engine::stats::LoopStats;
use crate::engine::timer::TICK;
use crate::engine::topics::Interner;
use crate::engine::{CloseCause, ConnId, Event, Handle, Server, ServerBuilder};

const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

const PING: &[u8] = &[0x89, 0x00];

/// One loop on the memory backend, with the application's side of it.
struct Harness {
    lp: Loop<PeerId>,
    mem: Memory,
    handle: Handle,
    events: Receiver<RawEvent>,
    /// Only for the mailbox's waker: the memory backend never polls it.
    /// How far the test clock is past the loop's start.
    elapsed: Duration,
}

/// The test turns the loop itself: a wake-up has nothing to do.
struct TestWaker;

impl crate::engine::mailbox::Wake for TestWaker {
    fn wake(&self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Harness {
    fn new(builder: ServerBuilder) -> Self {
        let config = Arc::new(builder.config);
        let (events_tx, events) = crossbeam_channel::bounded(config.event_capacity);
        let waker = Arc::new(TestWaker);
        let (commands_tx, commands) = crossbeam_channel::bounded(config.command_capacity);
        let stats = Arc::new(LoopStats::default());
        let interner = Arc::new(Interner::new(1));
        let shared = Arc::new(Shared {
            mailboxes: vec![LoopMailbox::new(commands_tx, waker)],
            stats: vec![stats.clone()],
            events: vec![events.clone()],
            command_timeout: config.command_timeout,
            backend: crate::engine::Backend::Epoll,
            interner: interner.clone(),
            publish_duration: Arc::default(),
        });
        let core = LoopCore::new(0, config.clone(), stats, events_tx, Arc::default(), interner);
        // The test clock starts where the loop's did, so that ticks fall on whole milliseconds.
        let mem = Memory::new(core.now, config.scratch_size);
        let lp = Loop::new(core, commands, shared.clone());
        Self { lp, mem, handle: Handle { shared }, events, elapsed: Duration::ZERO }
    }

    fn turn(&mut self) {
        assert!(self.lp.turn(&mut self.mem), "the loop stopped");
    }

    /// Moves the clock to `at` past the start, a tick at a time, with a turn at every tick.
    fn run_to(&mut self, at: Duration) {
        while self.elapsed < at {
            let step = TICK.min(at - self.elapsed);
            self.mem.advance(step);
            self.elapsed += step;
            self.turn();
        }
    }

    /// A connection accepted (not upgraded).
    fn connect(&mut self) -> PeerId {
        let peer = self.mem.connect(SocketAddr::from(([192, 0, 2, 1], 40000)));
        self.turn();
        assert!(self.mem.slot(peer).is_some(), "accepted");
        peer
    }

    /// A connection through its upgrade, and its id.
    fn open(&mut self) -> (PeerId, ConnId) {
        let peer = self.connect();
        self.mem.push(peer, UPGRADE);
        self.turn();
        let response = self.mem.take_written(peer);
        assert!(response.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&response));
        match self.events.try_recv().map(|r| r.event) {
            Ok(Event::Open { conn, .. }) => (peer, conn),
            other => panic!("expected Open, got {other:?}"),
        }
    }

    fn close_event(&mut self) -> (ConnId, u16, CloseCause) {
        match self.events.try_recv().map(|r| r.event) {
            Ok(Event::Close { conn, code, cause, .. }) => (conn, code, cause),
            other => panic!("expected Close, got {other:?}"),
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A masked client frame (payloads under 126 bytes).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A server close frame as it goes out.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut frame = vec![0x88, 2 + reason.len() as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
    frame
}

#[test]
fn the_handshake_deadline_removes_silent_and_trickling_connections_at_the_deadline_not_before() {
    let mut h = Harness::new(Server::builder().handshake_timeout(Duration::from_secs(1)));
    let silent = h.connect();
    let trickle = h.connect();
    let mut sent = 0;
    while h.elapsed < ms(990) {
        h.run_to(h.elapsed + ms(100).min(ms(990) - h.elapsed));
        // A byte every 100 ms: the request never completes, and must not earn more time.
        h.mem.push(trickle, &UPGRADE[sent..sent + 1]);
        sent += 1;
    }
    h.turn();
    assert!(!h.mem.is_closed(silent) && !h.mem.is_closed(trickle), "removed before the deadline");
    h.run_to(ms(1000));
    assert!(h.mem.is_closed(silent) && h.mem.is_closed(trickle), "kept past the deadline");
    assert_eq!(h.lp.len(), 0);
    assert_eq!(h.lp.core.stats.snapshot().handshakes_failed, 2);
}

#[test]
fn a_ping_goes_out_after_the_interval_and_a_silent_peer_goes_at_the_pong_timeout() {
    let mut h = Harness::new(Server::builder().ping_interval(Duration::from_secs(1), ms(500)));
    let (peer, conn) = h.open();
    h.run_to(ms(990));
    assert!(h.mem.take_written(peer).is_empty(), "pinged before the interval");
    h.run_to(ms(1000));
    assert_eq!(h.mem.take_written(peer), PING);
    h.run_to(ms(1490));
    assert!(!h.mem.is_closed(peer), "dropped before the pong timeout");
    h.run_to(ms(1500));
    assert!(h.mem.is_closed(peer), "kept past the pong timeout");
    assert!(h.mem.take_written(peer).is_empty(), "a peer that does not answer gets no close frame");
    assert_eq!(h.close_event(), (conn, 1006, CloseCause::PongTimeout));
}

#[test]
fn a_pong_keeps_the_connection_and_the_next_ping_counts_from_it() {
    let mut h = Harness::new(Server::builder().ping_interval(Duration::from_secs(1), ms(500)));
    let (peer, _) = h.open();
    h.run_to(ms(1000));
    assert_eq!(h.mem.take_written(peer), PING);
    h.run_to(ms(1200));
    h.mem.push(peer, &client_frame(0x8a, b""));
    h.turn();
    h.run_to(ms(2190));
    assert!(!h.mem.is_closed(peer), "dropped although it answered");
    assert!(h.mem.take_written(peer).is_empty(), "pinged before the interval after the pong");
    h.run_to(ms(2200));
    assert_eq!(h.mem.take_written(peer), PING);
}

#[test]
fn the_idle_timeout_sends_1001_at_the_deadline_not_before() {
    let mut h = Harness::new(Server::builder().idle_timeout(Duration::from_secs(2)));
    let (peer, conn) = h.open();
    h.run_to(ms(500));
    h.mem.push(peer, &client_frame(0x81, b"hi")); // activity moves the deadline to 2.5 s
    h.turn();
    assert!(matches!(h.events.try_recv().map(|r| r.event), Ok(Event::Message { .. })));
    h.run_to(ms(2490));
    assert!(h.mem.take_written(peer).is_empty(), "closed before the idle timeout");
    h.run_to(ms(2500));
    assert_eq!(h.mem.take_written(peer), close_frame(1001, "idle timeout"));
    assert!(!h.mem.is_closed(peer), "waits for the peer's close frame");
    // The peer's answer ends the handshake; the cause is still the timeout that started it.
    h.mem.push(peer, &client_frame(0x88, &1001u16.to_be_bytes()));
    h.turn();
    assert_eq!(h.close_event(), (conn, 1001, CloseCause::IdleTimeout));
}

#[test]
fn a_silent_peer_after_our_close_goes_at_the_close_timeout() {
    let mut h = Harness::new(Server::builder().close_timeout(Duration::from_secs(1)));
    let (peer, conn) = h.open();
    h.handle.close(conn, 1000, "bye").expect("queued");
    h.turn();
    assert_eq!(h.mem.take_written(peer), close_frame(1000, "bye"));
    h.run_to(ms(990));
    assert!(!h.mem.is_closed(peer), "removed before the close timeout");
    h.run_to(ms(1000));
    assert!(h.mem.is_closed(peer), "kept past the close timeout");
    assert_eq!(h.close_event(), (conn, 1006, CloseCause::Application(0)));
}

#[test]
fn a_message_not_completed_in_time_fails_the_connection_at_the_message_timeout() {
    let mut h = Harness::new(Server::builder().message_timeout(Some(Duration::from_secs(1))));
    let (peer, conn) = h.open();
    h.run_to(ms(300));
    h.mem.push(peer, &client_frame(0x01, b"hel")); // a first fragment; the rest never comes
    h.turn();
    h.run_to(ms(1290));
    assert!(h.mem.take_written(peer).is_empty(), "failed before the message timeout");
    h.run_to(ms(1300));
    assert_eq!(h.mem.take_written(peer), close_frame(1008, "message not completed in time"));
    assert!(h.mem.got_fin(peer));
    assert_eq!(h.lp.core.stats.snapshot().assembly_timeouts, 1);
    h.mem.hang_up(peer);
    h.turn();
    assert_eq!(h.close_event(), (conn, 1008, CloseCause::MessageTimeout));
}

#[test]
fn a_close_reports_its_first_cause_the_peers_the_applications_tag_or_a_protocol_error() {
    let mut h = Harness::new(Server::builder());
    // The peer's close comes first: answered, reported as the peer's.
    let (peer, conn) = h.open();
    h.mem.push(peer, &client_frame(0x88, &[&4000u16.to_be_bytes()[..], b"done"].concat()));
    h.turn();
    assert_eq!(h.mem.take_written(peer), close_frame(4000, ""));
    assert_eq!(h.close_event(), (conn, 4000, CloseCause::Peer));
    // The application's close with its tag, answered by the peer; a tag over 127 is kept as 127.
    for (tag, kept) in [(5, 5), (200, CloseCause::MAX_TAG)] {
        let (peer, conn) = h.open();
        h.handle.close_tagged(conn, 4001, "expired", tag).expect("queued");
        h.turn();
        assert_eq!(h.mem.take_written(peer), close_frame(4001, "expired"));
        h.mem.push(peer, &client_frame(0x88, &4001u16.to_be_bytes()));
        h.turn();
        assert_eq!(h.close_event(), (conn, 4001, CloseCause::Application(kept)));
    }
    // The application closes after the peer's close arrived: the peer's cause stands.
    let (peer, conn) = h.open();
    h.mem.push(peer, &client_frame(0x88, &1000u16.to_be_bytes()));
    h.handle.close_tagged(conn, 4001, "late", 9).expect("queued");
    h.turn();
    assert_eq!(h.close_event(), (conn, 1000, CloseCause::Peer));
    // A frame no client may send (unmasked): 1002, a protocol error, the peer's close after it
    // changing nothing.
    let (peer, conn) = h.open();
    h.mem.push(peer, &[0x81, 0x02, b'h', b'i']);
    h.turn();
    assert!(h.mem.got_fin(peer));
    h.mem.hang_up(peer);
    h.turn();
    assert_eq!(h.close_event(), (conn, 1002, CloseCause::ProtocolError));
}

#[test]
fn the_engines_limits_are_causes_of_their_own() {
    let builder = Server::builder().max_message_rate(10, 2).max_assembly_bytes(8);
    let mut h = Harness::new(builder);
    // Over the rate: three messages in one turn with a burst of two.
    let (peer, conn) = h.open();
    let burst: Vec<u8> = (0..3).flat_map(|_| client_frame(0x81, b"x")).collect();
    h.mem.push(peer, &burst);
    h.turn();
    h.mem.hang_up(peer);
    h.turn();
    let cause = loop {
        match h.events.try_recv().map(|r| r.event) {
            Ok(Event::Message { .. }) => {}
            Ok(Event::Close { conn: closed, code, cause, .. }) if closed == conn => break (code, cause),
            other => panic!("expected Close, got {other:?}"),
        }
    };
    assert_eq!(cause, (1008, CloseCause::RateLimited));
    // A first fragment larger than the loop's budget for partial messages.
    let (peer, conn) = h.open();
    h.mem.push(peer, &client_frame(0x01, b"more than eight"));
    h.turn();
    h.mem.hang_up(peer);
    h.turn();
    assert_eq!(h.close_event(), (conn, 1008, CloseCause::AssemblyBudget));
}

#[test]
fn a_command_for_an_old_generation_never_reaches_the_slots_new_connection() {
    let mut h = Harness::new(Server::builder());
    let (first, old) = h.open();
    h.mem.hang_up(first);
    h.turn();
    assert!(h.mem.is_closed(first));
    assert_eq!(h.close_event(), (old, 1006, CloseCause::Disconnected));
    let (second, new) = h.open();
    assert_eq!(new.index(), old.index(), "the slot was reused");
    assert_ne!(new, old);
    h.handle.send(old, "for the old one").expect("queued");
    h.handle.close(old, 1000, "").expect("queued");
    h.turn();
    assert!(h.mem.take_written(second).is_empty(), "a stale id reached the new connection");
    h.handle.send(new, "x").expect("queued");
    h.turn();
    assert_eq!(h.mem.take_written(second), [0x81, 1, b'x']);
}

#[test]
fn publish_reaches_the_topics_subscribers_only() {
    let mut h = Harness::new(Server::builder());
    let (a, a_id) = h.open();
    let (b, b_id) = h.open();
    let (c, _) = h.open();
    h.handle.subscribe(a_id, "news").expect("queued");
    h.handle.subscribe(b_id, "news").expect("queued");
    h.handle.publish("news", "hi").expect("queued");
    h.turn();
    let frame = [0x81, 2, b'h', b'i'];
    assert_eq!(h.mem.take_written(a), frame);
    assert_eq!(h.mem.take_written(b), frame);
    assert!(h.mem.take_written(c).is_empty(), "a non-subscriber got the message");
    h.handle.unsubscribe(b_id, "news").expect("queued");
    h.handle.publish("news", "hi").expect("queued");
    h.turn();
    assert_eq!(h.mem.take_written(a), frame);
    assert!(h.mem.take_written(b).is_empty(), "an unsubscribed connection got the message");
}

#[test]
fn a_publish_is_timed_once_after_its_last_subscriber_is_written() {
    let mut h = Harness::new(Server::builder());
    let timed = |h: &Harness| h.handle.stats().publish_duration.count();
    let (a, a_id) = h.open();
    let (b, b_id) = h.open();
    h.handle.subscribe(a_id, "news").expect("queued");
    h.handle.subscribe(b_id, "news").expect("queued");
    h.handle.publish("news", "hi").expect("queued");
    assert_eq!(timed(&h), 0, "not written yet");
    h.turn();
    assert_eq!(h.mem.take_written(a), [0x81, 2, b'h', b'i']);
    assert_eq!(h.mem.take_written(b), [0x81, 2, b'h', b'i']);
    assert_eq!(timed(&h), 1, "one observation for two deliveries");
    // A topic whose subscribers left reaches nobody: not timed.
    h.handle.unsubscribe(a_id, "news").expect("queued");
    h.handle.unsubscribe(b_id, "news").expect("queued");
    h.turn();
    h.handle.publish("news", "hi").expect("queued");
    h.turn();
    assert_eq!(timed(&h), 1);
    assert_eq!(h.handle.loop_stats()[0].publish_duration.count(), 1, "the per-loop view carries it");
}

#[test]
fn a_counted_publish_counts_only_the_connections_it_was_queued_to() {
    let mut h = Harness::new(Server::builder());
    let (a, a_id) = h.open();
    let (b, b_id) = h.open();
    h.handle.subscribe(a_id, "news").expect("queued");
    h.handle.subscribe(b_id, "news").expect("queued");
    h.turn();
    assert_eq!(h.handle.subscribers("news"), 2);
    // b's close frame is read before the commands run: it may no longer be sent to.
    h.mem.push(b, &client_frame(0x88, &1000u16.to_be_bytes()));
    let frame = crate::engine::Prepared::new(&crate::Message::Text("hi".into()));
    let receipt = h.handle.publish_counted("news", &frame).expect("queued");
    assert_eq!(receipt.try_count(), None, "the loop has not run it yet");
    h.turn();
    assert_eq!(receipt.try_count(), Some(1));
    assert_eq!(h.mem.take_written(a), [0x81, 2, b'h', b'i']);
    assert_eq!(h.mem.take_written(b), close_frame(1000, ""), "only its close answer");
    assert_eq!(h.handle.subscription_totals(), (1, 1), "the closed connection left");
}

#[test]
fn shutdown_sends_1001_and_the_loop_stops_once_every_connection_is_gone() {
    let mut h = Harness::new(Server::builder());
    let (peer, conn) = h.open();
    let half_open = h.connect();
    h.handle.shutdown_all(h.lp.core.now + Duration::from_secs(5));
    h.turn();
    assert!(h.mem.is_closed(half_open), "a connection still in its handshake is dropped");
    assert_eq!(h.mem.take_written(peer), close_frame(1001, "server shutting down"));
    let late = h.mem.connect(SocketAddr::from(([192, 0, 2, 2], 40000)));
    h.mem.push(peer, &client_frame(0x88, &1001u16.to_be_bytes()));
    let running = h.lp.turn(&mut h.mem);
    assert!(h.mem.is_closed(late), "accepted during shutdown");
    assert!(h.mem.is_closed(peer));
    assert_eq!(h.close_event(), (conn, 1001, CloseCause::Shutdown));
    assert!(!running, "the loop goes on with no connection left");
}

#[test]
fn reading_waits_while_the_workers_are_behind_and_resumes_once_they_caught_up() {
    let mut h = Harness::new(Server::builder().event_capacity(1));
    let (peer, _) = h.open();
    // The first message fills the channel, the second waits in the backlog.
    h.mem.push(peer, &[client_frame(0x81, b"one"), client_frame(0x81, b"two")].concat());
    h.turn();
    assert_eq!(h.lp.core.stats.snapshot().messages_in, 2);
    assert!(h.lp.core.workers_behind());
    h.mem.push(peer, &client_frame(0x81, b"three"));
    h.turn();
    h.turn();
    assert_eq!(h.lp.core.stats.snapshot().messages_in, 2, "read while the workers were behind");
    assert!(matches!(h.events.try_recv().map(|r| r.event), Ok(Event::Message { .. })));
    h.turn(); // the backlog moves into the channel
    assert!(!h.lp.core.workers_behind());
    h.turn(); // and the socket is read again
    assert_eq!(h.lp.core.stats.snapshot().messages_in, 3);
}

/// A server text frame as it goes out (payloads under 126 bytes).
fn text_frame(text: &str) -> Vec<u8> {
    let mut frame = vec![0x81, text.len() as u8];
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// A reply that records the outcome and answers with its name.
fn answer<T: std::fmt::Debug + Send + 'static>(
    seen: &Arc<std::sync::Mutex<Vec<String>>>,
) -> impl FnOnce(T) -> Option<crate::Message> + Send + 'static {
    let seen = seen.clone();
    move |outcome| {
        let text = format!("{outcome:?}");
        seen.lock().unwrap().push(text.clone());
        Some(crate::Message::Text(text))
    }
}

#[test]
fn a_capped_subscribe_answers_in_order_with_the_sends() {
    use crate::engine::Joined;
    let mut h = Harness::new(Server::builder());
    let (peer, conn) = h.open();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    h.handle.send(conn, "before").expect("queued");
    h.handle.subscribe_with(conn, "a", 2, answer::<Joined>(&seen)).expect("queued");
    h.handle.subscribe_with(conn, "a", 2, answer::<Joined>(&seen)).expect("queued");
    h.handle.subscribe_with(conn, "b", 2, answer::<Joined>(&seen)).expect("queued");
    h.handle.subscribe_with(conn, "c", 2, answer::<Joined>(&seen)).expect("queued");
    h.handle.send(conn, "after").expect("queued");
    assert!(seen.lock().unwrap().is_empty(), "the replies run on the loop");
    h.turn();
    let want: Vec<u8> =
        ["before", "Added", "Already", "Added", "Full", "after"].iter().flat_map(|t| text_frame(t)).collect();
    assert_eq!(h.mem.take_written(peer), want);
    assert_eq!(h.handle.subscription_totals(), (2, 2), "the refused topic is not held");
    // A reply without a message sends nothing.
    h.handle
        .subscribe_with(conn, "a", 0, |joined| {
            assert_eq!(joined, Joined::Already);
            None
        })
        .expect("queued");
    h.turn();
    assert!(h.mem.take_written(peer).is_empty());

    h.handle.unsubscribe_with(conn, "a", answer::<bool>(&seen)).expect("queued");
    h.handle.unsubscribe_with(conn, "a", answer::<bool>(&seen)).expect("queued");
    h.handle.unsubscribe_with(conn, "never", answer::<bool>(&seen)).expect("queued");
    h.handle.send(conn, "end").expect("queued");
    h.turn();
    let want: Vec<u8> = ["true", "false", "false", "end"].iter().flat_map(|t| text_frame(t)).collect();
    assert_eq!(h.mem.take_written(peer), want);
    assert_eq!(h.handle.subscription_totals(), (1, 1));
}

#[test]
fn a_capped_subscribe_for_a_gone_or_closing_connection_answers_closed() {
    use crate::engine::Joined;
    let mut h = Harness::new(Server::builder());
    let (first, gone) = h.open();
    h.mem.hang_up(first);
    h.turn();
    assert_eq!(h.close_event(), (gone, 1006, CloseCause::Disconnected));
    let (peer, closing) = h.open();
    h.handle.close(closing, 1000, "bye").expect("queued");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    h.handle.subscribe_with(gone, "a", 8, answer::<Joined>(&seen)).expect("queued");
    h.handle.subscribe_with(closing, "a", 8, answer::<Joined>(&seen)).expect("queued");
    h.handle.unsubscribe_with(gone, "a", answer::<bool>(&seen)).expect("queued");
    h.turn();
    assert_eq!(*seen.lock().unwrap(), ["Closed", "Closed", "false"], "every reply ran");
    assert_eq!(h.mem.take_written(peer), close_frame(1000, "bye"), "the replies' messages are dropped");
    assert_eq!(h.handle.subscription_totals(), (0, 0));
    assert_eq!(h.handle.subscribers("a"), 0);
}

#[test]
fn a_refused_capped_subscribe_drops_its_reply_unrun_and_its_record() {
    use crate::engine::{CommandError, Joined};
    let mut h = Harness::new(Server::builder().command_queue(1, Duration::ZERO));
    let (peer, conn) = h.open();
    h.handle.send(conn, "fills the queue").expect("queued");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let refused = h.handle.subscribe_with(conn, "a", 8, answer::<Joined>(&seen));
    assert_eq!(refused, Err(CommandError::QueueFull));
    let refused = h.handle.unsubscribe_with(conn, "a", answer::<bool>(&seen));
    assert_eq!(refused, Err(CommandError::QueueFull));
    h.turn();
    assert!(seen.lock().unwrap().is_empty(), "a refused command's reply ran");
    assert_eq!(h.mem.take_written(peer), text_frame("fills the queue"));
    assert_eq!(h.handle.shared.interner.len(), 0, "the refused subscribe's record is gone");
}
