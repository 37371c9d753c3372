//! Delivery of events to the application's workers, in shards.
//!
//! The engine has `n` bounded channels (shards). Each connection's events all go to the shard
//! its id picks ([`shard_of`]), so a worker that owns a shard sees one connection's `Open`, its
//! messages and its `Close` in the order they happened, while different connections spread over
//! the workers. A loop keeps, per shard, the events that found that shard's channel full; it
//! pauses reading while any of them holds one (so the backlog holds at most what one read and
//! one turn's timers produced), and nothing is sent to a shard before its backlog is empty, so
//! no event overtakes an earlier one of the same connection.

use std::any::Any;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvError, RecvTimeoutError, Select, SelectTimeoutError, Sender, TryRecvError, TrySendError,
};

use super::event::Event;
use super::ids::ConnId;

/// The upgrade hook's value as the loops carry it: the application's type, erased, so that no
/// loop, connection or channel is generic over it. [`Events`] gives it back its type.
pub(crate) type Erased = Box<dyn Any + Send>;

/// An event as it travels from a loop to a shard, stamped with the turn time of the loop turn
/// that emitted it (the loop's clock, read once a turn: no clock read per event).
pub(crate) struct RawEvent {
    pub(crate) event: Event<Erased>,
    pub(crate) at: Instant,
}

/// An event with the time the engine produced it, from [`Events::recv_timed`].
///
/// `decoded_at` is the loop's turn time of the turn that emitted the event: for a
/// [`Event::Message`], the turn that decoded its last frame. The loop reads its clock once a
/// turn, so it is at most one turn early; `decoded_at.elapsed()` on receipt is the time the event
/// spent in the loop's backlog and the shard's channel (how far the workers are behind).
#[derive(Debug)]
pub struct Delivered<T = ()> {
    /// The event, as [`Events::recv`] gives it.
    pub event: Event<T>,
    /// When the loop emitted it (its turn time).
    pub decoded_at: Instant,
}

/// The most shards a server may have.
pub const MAX_SHARDS: usize = 1024;

/// The shard a connection's events go to, out of `shards`: a multiplicative hash of the loop
/// and slot, so that consecutive slots spread evenly. The generation is left out: a slot's
/// successive connections share a shard, so one worker sees the old one's `Close` before the
/// next one's `Open`.
pub(crate) fn shard_of(conn: ConnId, shards: usize) -> usize {
    let slot = ((conn.loop_id() as u64) << 32) | conn.index() as u64;
    let spread = slot.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (spread % shards.max(1) as u64) as usize
}

/// One loop's side of the shards: a sender and a backlog for each.
pub(crate) struct Delivery {
    shards: Vec<Sender<RawEvent>>,
    /// Per shard, the events its channel had no room for, oldest first.
    backlogs: Vec<VecDeque<RawEvent>>,
    /// The events over all backlogs.
    queued: usize,
}

impl Delivery {
    pub(crate) fn new(shards: Vec<Sender<RawEvent>>) -> Self {
        let backlogs = shards.iter().map(|_| VecDeque::new()).collect();
        Self { shards, backlogs, queued: 0 }
    }

    /// Sends an event to its connection's shard, or keeps it behind the shard's backlog.
    /// Returns whether it was kept (the backlog grew).
    pub(crate) fn emit(&mut self, event: RawEvent) -> bool {
        let shard = shard_of(event.event.conn(), self.shards.len());
        let backlog = &mut self.backlogs[shard];
        if backlog.is_empty() {
            match self.shards[shard].try_send(event) {
                // Nobody left to read (the server is gone): nothing to keep.
                Ok(()) | Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(event)) => backlog.push_back(event),
            }
        } else {
            backlog.push_back(event);
        }
        self.queued += 1;
        true
    }

    /// Moves what it can of every backlog into its shard. Returns whether all are empty now.
    pub(crate) fn drain(&mut self) -> bool {
        for (backlog, shard) in self.backlogs.iter_mut().zip(&self.shards) {
            while let Some(event) = backlog.pop_front() {
                match shard.try_send(event) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => self.queued -= 1,
                    Err(TrySendError::Full(event)) => {
                        backlog.push_front(event);
                        break;
                    }
                }
            }
        }
        self.queued == 0
    }

    /// The events held over all backlogs.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }
}

/// One shard (e.g. for a test's loop).
impl From<Sender<RawEvent>> for Delivery {
    fn from(shard: Sender<RawEvent>) -> Self {
        Self::new(vec![shard])
    }
}

/// The worker side of the event shards, carrying the upgrade hook's values as `T`.
///
/// [`crate::Server::shards`] gives one per shard: each connection's events arrive at exactly
/// one shard, in order, so a worker that alone reads a shard handles a connection's `Open`,
/// messages and `Close` in that order. [`crate::Server::events`] gives one that reads every
/// shard, for a single worker thread.
///
/// Reading one receiver from several threads is possible (it is `Clone`), but then two events
/// of one connection may be handled at once or out of order. Every shard must be read: one that
/// stays full makes the loops stop reading from their sockets until it has room again.
///
/// The iterators end once the server is shut down and the remaining events are read.
pub struct Events<T = ()> {
    receivers: Vec<Receiver<RawEvent>>,
    value: PhantomData<fn() -> T>,
}

impl<T> Clone for Events<T> {
    fn clone(&self) -> Self {
        Self { receivers: self.receivers.clone(), value: PhantomData }
    }
}

impl<T> std::fmt::Debug for Events<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("shards", &self.receivers.len()).field("len", &self.len()).finish()
    }
}

impl<T> Events<T> {
    pub(crate) fn new(receivers: Vec<Receiver<RawEvent>>) -> Self {
        Self { receivers, value: PhantomData }
    }

    /// The events waiting in the shards this receiver reads.
    pub fn len(&self) -> usize {
        self.receivers.iter().map(Receiver::len).sum()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.receivers.iter().all(Receiver::is_empty)
    }
}

impl<T: Send + 'static> Events<T> {
    /// Waits for the next event; fails once the server is gone and every event was read.
    pub fn recv(&self) -> Result<Event<T>, RecvError> {
        self.recv_timed().map(|d| d.event)
    }

    /// As [`Events::recv`], with the time the loop emitted the event ([`Delivered`]).
    pub fn recv_timed(&self) -> Result<Delivered<T>, RecvError> {
        self.next(None).map_err(|_| RecvError)
    }

    /// Blocks for each event in turn, with its time, until the server is gone.
    pub fn iter_timed(&self) -> impl Iterator<Item = Delivered<T>> + '_ {
        std::iter::from_fn(|| self.recv_timed().ok())
    }

    /// Waits at most `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event<T>, RecvTimeoutError> {
        self.next(Some(Instant::now() + timeout)).map(|d| d.event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Result<Event<T>, TryRecvError> {
        let mut gone = 0;
        for receiver in &self.receivers {
            match receiver.try_recv() {
                Ok(event) => return Ok(typed(event).event),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => gone += 1,
            }
        }
        Err(if gone == self.receivers.len() { TryRecvError::Disconnected } else { TryRecvError::Empty })
    }

    /// Blocks for each event in turn until the server is gone.
    pub fn iter(&self) -> impl Iterator<Item = Event<T>> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }

    /// The events waiting now, without blocking.
    pub fn try_iter(&self) -> impl Iterator<Item = Event<T>> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }

    fn next(&self, deadline: Option<Instant>) -> Result<Delivered<T>, RecvTimeoutError> {
        let raw = match (&self.receivers[..], deadline) {
            // One shard (the default, or a worker's own): the channel itself.
            ([only], None) => only.recv().map_err(|_| RecvTimeoutError::Disconnected),
            ([only], Some(deadline)) => only.recv_deadline(deadline),
            (all, deadline) => merged(all, deadline),
        };
        raw.map(typed)
    }
}

/// Receives from whichever shard has an event first. A shard is left out once it is both
/// disconnected and empty; the others may still hold events.
fn merged(receivers: &[Receiver<RawEvent>], deadline: Option<Instant>) -> Result<RawEvent, RecvTimeoutError> {
    let mut select = Select::new();
    for receiver in receivers {
        select.recv(receiver);
    }
    let mut live = receivers.len();
    while live > 0 {
        let op = match deadline {
            None => select.select(),
            Some(deadline) => {
                select.select_deadline(deadline).map_err(|SelectTimeoutError| RecvTimeoutError::Timeout)?
            }
        };
        let index = op.index();
        match op.recv(&receivers[index]) {
            Ok(event) => return Ok(event),
            Err(RecvError) => {
                select.remove(index);
                live -= 1;
            }
        }
    }
    Err(RecvTimeoutError::Disconnected)
}

/// Gives the upgrade hook's value back its type.
fn typed<T: Send + 'static>(raw: RawEvent) -> Delivered<T> {
    let event = raw.event.map_value(|value| match value.downcast::<T>() {
        Ok(value) => *value,
        // The builder that typed the hook typed these receivers: another type cannot arrive.
        Err(_) => unreachable!("an upgrade value of another type than the server's"),
    });
    Delivered { event, decoded_at: raw.at }
}

impl<T: Send + 'static> IntoIterator for Events<T> {
    type Item = Event<T>;
    type IntoIter = Box<dyn Iterator<Item = Event<T>> + Send>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(std::iter::from_fn(move || self.recv().ok()))
    }
}

impl<'a, T: Send + 'static> IntoIterator for &'a Events<T> {
    type Item = Event<T>;
    type IntoIter = Box<dyn Iterator<Item = Event<T>> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(loop_id: usize, index: usize, n: u8) -> RawEvent {
        let conn = ConnId::new(loop_id, index, 1);
        RawEvent {
            event: Event::Message { conn, message: crate::Message::Binary(vec![n]) },
            at: Instant::now(),
        }
    }

    fn payload(event: Event) -> (ConnId, u8) {
        match event {
            Event::Message { conn, message: crate::Message::Binary(bytes) } => (conn, bytes[0]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_connection_always_lands_on_one_shard_and_slots_spread() {
        let mut counts = [0usize; 4];
        for loop_id in 0..2 {
            for index in 0..4000 {
                let shard = shard_of(ConnId::new(loop_id, index, 1), 4);
                assert_eq!(shard, shard_of(ConnId::new(loop_id, index, 9), 4), "same slot, same shard");
                counts[shard] += 1;
            }
        }
        // Even enough: every shard within a quarter of the mean.
        assert!(counts.iter().all(|&c| (1500..=2500).contains(&c)), "{counts:?}");
        assert_eq!(shard_of(ConnId::new(1, 7, 1), 1), 0);
    }

    #[test]
    fn a_full_shard_keeps_order_and_does_not_hold_up_the_others() {
        let (tx0, rx0) = crossbeam_channel::bounded(1);
        let (tx1, rx1) = crossbeam_channel::bounded(1);
        let mut delivery = Delivery::new(vec![tx0, tx1]);
        // Two slots on different shards.
        let a = (0..).find(|&i| shard_of(ConnId::new(0, i, 1), 2) == 0).unwrap();
        let b = (0..).find(|&i| shard_of(ConnId::new(0, i, 1), 2) == 1).unwrap();
        assert!(!delivery.emit(message(0, a, 1)));
        assert!(delivery.emit(message(0, a, 2)), "shard 0 is full: kept");
        assert!(!delivery.emit(message(0, b, 1)), "shard 1 has room");
        assert!(delivery.emit(message(0, b, 2)));
        assert_eq!(delivery.queued(), 2);
        // Shard 1 makes room; its backlog is sent first, in order, before anything newer.
        let events = Events::<()>::new(vec![rx1.clone()]);
        assert_eq!(payload(events.try_recv().unwrap()), (ConnId::new(0, b, 1), 1));
        assert!(delivery.emit(message(0, b, 3)), "behind its backlog, even with room");
        assert!(!delivery.drain(), "shard 0 is still full");
        assert_eq!(delivery.queued(), 2);
        assert_eq!(payload(events.try_recv().unwrap()), (ConnId::new(0, b, 1), 2));
        let all = Events::<()>::new(vec![rx0, rx1]);
        let mut seen = Vec::new();
        while delivery.queued() > 0 || !all.is_empty() {
            delivery.drain();
            seen.extend(all.try_iter().map(payload));
        }
        assert_eq!(seen.iter().filter(|(c, _)| c.index() == a).map(|&(_, n)| n).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(seen.iter().filter(|(c, _)| c.index() == b).map(|&(_, n)| n).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn the_loops_stamp_travels_with_the_event() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut delivery = Delivery::from(tx);
        let at = Instant::now() - Duration::from_secs(3);
        let conn = ConnId::new(0, 1, 1);
        let first = RawEvent { event: Event::Message { conn, message: crate::Message::Binary(vec![1]) }, at };
        assert!(!delivery.emit(first));
        // Kept in the backlog, it keeps its stamp: the wait there is part of the delay.
        assert!(delivery.emit(message(0, 1, 2)));
        let events = Events::<()>::new(vec![rx]);
        let got = events.recv_timed().unwrap();
        assert_eq!((payload(got.event), got.decoded_at), ((conn, 1), at));
        assert!(delivery.drain());
        let second = events.recv_timed().unwrap();
        assert!(second.decoded_at > at, "each event keeps its own stamp");
    }

    #[test]
    fn a_merged_receiver_reads_every_shard_until_all_are_gone() {
        let (tx0, rx0) = crossbeam_channel::bounded(4);
        let (tx1, rx1) = crossbeam_channel::bounded(4);
        let events = Events::<()>::new(vec![rx0, rx1]);
        assert_eq!(events.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
        tx1.send(message(0, 1, 1)).unwrap();
        tx0.send(message(0, 2, 2)).unwrap();
        drop(tx0); // gone, but its event is still read
        let mut got: Vec<u8> = events.iter().take(2).map(|e| payload(e).1).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        assert_eq!(events.try_recv(), Err(TryRecvError::Empty), "shard 1 is still connected");
        drop(tx1);
        assert_eq!(events.recv(), Err(RecvError));
        assert_eq!(events.try_recv(), Err(TryRecvError::Disconnected));
    }
}
