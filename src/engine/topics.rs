//! The topics every loop shares: one record per topic name ([`TopicShared`]), held in the
//! [`Interner`] that [`Handle`](super::Handle) looks names up in, and the receipt of a counted
//! publish ([`PublishReceipt`]).
//!
//! A record holds the name once, the number of subscribers over all loops, and each loop's
//! local index of the topic (`core/index.rs` keeps the members there). It stays in the
//! interner while it is *pinned*: by each loop that holds the topic, and by each subscribe
//! command on its way to a loop. Whoever takes the last pin away removes it, re-checking under
//! the interner's write lock (pins are only added under its read lock), so the interner holds
//! no more topics than have subscribers, plus those of subscribe commands in the queues.
//!
//! A record also carries the change report of
//! [`ServerBuilder::on_topic_change`](super::ServerBuilder::on_topic_change): a flag, set by the
//! loop whose change fires the hook and cleared by [`Handle::observe`](super::Handle::observe).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// "No index": an empty list, a loop without the topic.
pub(crate) const NONE: u32 = u32::MAX;

/// The hook [`ServerBuilder::on_topic`](super::ServerBuilder::on_topic) installs: a topic's name
/// and its subscribers over all loops, read after the change that made them 1 (from 0) or 0
/// (from 1).
pub type TopicHook = Arc<dyn Fn(&str, usize) + Send + Sync>;

/// The hook [`ServerBuilder::on_topic_change`](super::ServerBuilder::on_topic_change) installs:
/// a topic's name, once per change report.
pub(crate) type ChangeHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What a capped subscribe ([`Handle::subscribe_with`](super::Handle::subscribe_with)) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// The connection joined the topic.
    Added,
    /// It was in the topic already (nothing changed; this does not count against the limit).
    Already,
    /// It is in as many topics as the limit allows already: it did not join.
    Full,
    /// The connection is gone or closing: it did not join.
    Closed,
}

/// One topic, shared by every loop.
pub(crate) struct TopicShared {
    name: Box<str>,
    /// Connections subscribed, over all loops.
    subscribers: AtomicUsize,
    /// Loops holding the topic plus subscribe commands on their way (see the module comment).
    pins: AtomicUsize,
    /// Per loop, its index of the topic ([`NONE`]: it has no subscriber). Each loop reads and
    /// writes only its own entry.
    local: Box<[AtomicU32]>,
    /// The count changed since the last [`TopicShared::observe`] and the change hook ran for it
    /// (a new record starts un-reported).
    reported: AtomicBool,
}

impl TopicShared {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Subscribers over all loops.
    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    /// Loop `loop_id`'s index of the topic, or [`NONE`].
    pub(crate) fn local(&self, loop_id: usize) -> u32 {
        self.local.get(loop_id).map_or(NONE, |l| l.load(Ordering::Relaxed))
    }

    pub(crate) fn set_local(&self, loop_id: usize, index: u32) {
        if let Some(local) = self.local.get(loop_id) {
            local.store(index, Ordering::Relaxed);
        }
    }

    /// A loop changed the count (after the change): whether the change hook must run, i.e. the
    /// report was armed. One swap, also when it was reported already.
    pub(crate) fn report_change(&self) -> bool {
        // AcqRel, paired with `observe`'s swap: see there.
        !self.reported.swap(true, Ordering::AcqRel)
    }

    /// Re-arms the change report, then reads the count.
    ///
    /// Both sides swap the flag, so the swaps fall in one order: a loop's swap after this one
    /// finds the report armed and runs the hook; a loop's swap before it may have found it
    /// reported already (no hook), but that swap released the loop's count change and this one
    /// acquires it (read-modify-writes continue the release sequence), so the count read next
    /// includes the change. No change is lost; one that lands between the two steps here may be
    /// both counted and reported (a report too many, never one too few).
    pub(crate) fn observe(&self) -> usize {
        self.reported.swap(false, Ordering::AcqRel);
        self.subscribers()
    }
}

/// A record in the set, found by its name.
struct Key(Arc<TopicShared>);

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.hash(state) // as `str` hashes: lookups by `&str` find it
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Key {}

/// A pinned record: what a subscribe command carries. Dropping it takes the pin away, so a
/// command that is refused, names a stale connection or never runs releases it too.
pub(crate) struct Pin {
    record: Arc<TopicShared>,
    interner: Arc<Interner>,
}

impl Pin {
    pub(crate) fn record(&self) -> &Arc<TopicShared> {
        &self.record
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.interner.unpin(&self.record);
    }
}

/// The topic records of all loops, by name, with the totals over all of them.
pub(crate) struct Interner {
    records: RwLock<HashSet<Key>>,
    loops: usize,
    /// Topics with at least one subscriber.
    topics: AtomicUsize,
    /// Subscriptions (a connection in a topic) over all loops.
    subscriptions: AtomicUsize,
}

impl Interner {
    pub(crate) fn new(loops: usize) -> Self {
        Self {
            records: RwLock::default(),
            loops,
            topics: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<Key>> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<Key>> {
        self.records.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The record of `name`, made if there is none, pinned for the subscribe command that
    /// carries it.
    pub(crate) fn pin(self: &Arc<Self>, name: &str) -> Pin {
        let pinned = |record: &Arc<TopicShared>| {
            record.pins.fetch_add(1, Ordering::Relaxed); // under the lock: see `unpin`
            Pin { record: record.clone(), interner: self.clone() }
        };
        if let Some(key) = self.read().get(name) {
            return pinned(&key.0);
        }
        let mut records = self.write();
        if let Some(key) = records.get(name) {
            return pinned(&key.0);
        }
        let record = Arc::new(TopicShared {
            name: name.into(),
            subscribers: AtomicUsize::new(0),
            pins: AtomicUsize::new(0),
            local: (0..self.loops).map(|_| AtomicU32::new(NONE)).collect(),
            reported: AtomicBool::new(false),
        });
        let pin = pinned(&record);
        records.insert(Key(record));
        pin
    }

    /// Another pin of `record` for a holder of one (without the lock: while that one is held
    /// the count cannot reach 0, so no removal can be deciding).
    pub(crate) fn pin_again(&self, record: &TopicShared) {
        record.pins.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a pin away; the last one removes the record (unless it was pinned again since).
    pub(crate) fn unpin(&self, record: &Arc<TopicShared>) {
        if record.pins.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut records = self.write();
        // Pins are added under the read lock, so none can come while this one is held.
        if record.pins.load(Ordering::Acquire) == 0
            && records.get(record.name()).is_some_and(|key| Arc::ptr_eq(&key.0, record))
        {
            records.remove(record.name());
        }
    }

    /// The record of `name`, if any loop holds it or a subscribe to it is on its way (not
    /// pinned: a publish or an unsubscribe needs none, see the module comment).
    pub(crate) fn find(&self, name: &str) -> Option<Arc<TopicShared>> {
        self.read().get(name).map(|key| key.0.clone())
    }

    /// A loop added (`joined`) or removed a subscriber of `record`. Returns the subscribers
    /// over all loops after the change when it went 0 → 1 or 1 → 0 (the hook's edges).
    pub(crate) fn count(&self, record: &TopicShared, joined: bool) -> Option<usize> {
        let edge = if joined {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
            record.subscribers.fetch_add(1, Ordering::AcqRel) == 0
        } else {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            record.subscribers.fetch_sub(1, Ordering::AcqRel) == 1
        };
        if !edge {
            return None;
        }
        if joined {
            self.topics.fetch_add(1, Ordering::Relaxed);
        } else {
            self.topics.fetch_sub(1, Ordering::Relaxed);
        }
        Some(record.subscribers())
    }

    /// Subscribers of `name` over all loops.
    pub(crate) fn subscribers(&self, name: &str) -> usize {
        self.read().get(name).map_or(0, |key| key.0.subscribers())
    }

    /// Subscribers of `name` over all loops, re-arming its change report
    /// ([`TopicShared::observe`]); 0 without a record.
    pub(crate) fn observe(&self, name: &str) -> usize {
        self.read().get(name).map_or(0, |key| key.0.observe())
    }

    /// Every topic with subscribers and their number, sorted by name.
    pub(crate) fn list(&self) -> Vec<(Arc<str>, usize)> {
        let mut topics: Vec<(Arc<str>, usize)> = (self.read().iter())
            .filter_map(|key| {
                let n = key.0.subscribers();
                (n > 0).then(|| (Arc::from(key.0.name()), n))
            })
            .collect();
        topics.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        topics
    }

    /// Topics with subscribers and subscriptions, over all loops.
    pub(crate) fn totals(&self) -> (usize, usize) {
        (self.topics.load(Ordering::Relaxed), self.subscriptions.load(Ordering::Relaxed))
    }

    /// Records held (subscribed topics and those of subscribes on their way).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }
}

/// What the loops of one counted publish report into.
struct Tally {
    /// Connections the frame was queued to so far.
    queued: AtomicUsize,
    /// Loops that have not reported yet.
    left: AtomicUsize,
    done: Mutex<bool>,
    reported: Condvar,
}

/// One loop's part of a counted publish, carried in its command. It reports when it is
/// dropped, so a command that never runs (refused, or left in the queue of a loop that
/// stopped) reports too, with nothing queued.
pub(crate) struct Report(Arc<Tally>);

impl Report {
    /// The loop queued the frame to `n` connections.
    pub(crate) fn add(&self, n: usize) {
        self.0.queued.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if self.0.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.0.reported.notify_all();
        }
    }
}

/// The receipt of [`Handle::publish_counted`](super::Handle::publish_counted): how many
/// connections the frame was queued to, once every loop has reported.
#[derive(Clone)]
pub struct PublishReceipt {
    /// `None`: no loop was asked (nobody subscribed), the count is 0.
    tally: Option<Arc<Tally>>,
}

impl std::fmt::Debug for PublishReceipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishReceipt").field("queued", &self.try_count()).finish()
    }
}

impl PublishReceipt {
    /// A receipt to be filled in by `loops` loops, and their reports.
    pub(crate) fn new(loops: usize) -> (Self, impl Iterator<Item = Report>) {
        let tally = Arc::new(Tally {
            queued: AtomicUsize::new(0),
            left: AtomicUsize::new(loops),
            done: Mutex::new(loops == 0),
            reported: Condvar::new(),
        });
        let reports = (0..loops).map({
            let tally = tally.clone();
            move |_| Report(tally.clone())
        });
        (Self { tally: Some(tally) }, reports)
    }

    /// The receipt of a publish nobody was subscribed to.
    pub(crate) fn nobody() -> Self {
        Self { tally: None }
    }

    /// The count if every loop has reported.
    pub fn try_count(&self) -> Option<usize> {
        let Some(tally) = &self.tally else { return Some(0) };
        (tally.left.load(Ordering::Acquire) == 0).then(|| tally.queued.load(Ordering::Relaxed))
    }

    /// Waits up to `timeout` for every loop to report, and returns the connections the frame
    /// was queued to (after each one's outbound cap and slow-consumer policy), or `None` if a
    /// loop had not reported by then.
    pub fn wait(&self, timeout: Duration) -> Option<usize> {
        let Some(tally) = &self.tally else { return Some(0) };
        let deadline = Instant::now().checked_add(timeout);
        let mut done = tally.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return None;
            }
            done = tally.reported.wait_timeout(done, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(done);
        self.try_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_pin_removes_the_record_and_a_new_pin_keeps_it() {
        let interner = Arc::new(Interner::new(2));
        let a = interner.pin("news");
        let b = interner.pin("news");
        assert!(Arc::ptr_eq(a.record(), b.record()), "one record per name");
        assert_eq!(interner.len(), 1);
        let old = a.record().clone();
        drop(a);
        assert_eq!(interner.len(), 1, "still pinned by the other command");
        drop(b);
        assert_eq!(interner.len(), 0);
        assert!(interner.find("news").is_none());
        // A stale record's late unpin (its count already 0) leaves a newer record alone.
        let c = interner.pin("news");
        assert!(!Arc::ptr_eq(&old, c.record()));
        interner.pin_again(&old);
        interner.unpin(&old);
        assert!(interner.find("news").is_some_and(|r| Arc::ptr_eq(&r, c.record())));
        drop(c);
        assert_eq!(interner.len(), 0);
    }

    #[test]
    fn counts_report_only_the_first_and_the_last_subscriber() {
        let interner = Arc::new(Interner::new(1));
        let pin = interner.pin("t");
        let r = pin.record();
        assert_eq!(interner.count(r, true), Some(1));
        assert_eq!(interner.count(r, true), None);
        assert_eq!(interner.totals(), (1, 2));
        assert_eq!(interner.subscribers("t"), 2);
        assert_eq!(interner.list(), vec![(Arc::from("t"), 2)]);
        assert_eq!(interner.count(r, false), None);
        assert_eq!(interner.count(r, false), Some(0));
        assert_eq!(interner.totals(), (0, 0));
        assert!(interner.list().is_empty());
        drop(pin);
        assert_eq!(interner.len(), 0);
    }

    #[test]
    fn a_receipt_completes_when_every_report_is_dropped() {
        let (receipt, reports) = PublishReceipt::new(2);
        let reports: Vec<Report> = reports.collect();
        assert_eq!(receipt.try_count(), None);
        assert_eq!(receipt.wait(Duration::from_millis(1)), None);
        reports[0].add(3);
        reports[1].add(4);
        let mut reports = reports.into_iter();
        drop(reports.next());
        assert_eq!(receipt.try_count(), None);
        let last = reports.next();
        let waiter = std::thread::spawn({
            let receipt = receipt.clone();
            move || receipt.wait(Duration::from_secs(60))
        });
        drop(last);
        assert_eq!(waiter.join().unwrap(), Some(7));
        assert_eq!(PublishReceipt::nobody().wait(Duration::ZERO), Some(0));
    }
}
