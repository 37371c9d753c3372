//! One loop's topic index: who is subscribed to what, kept dense for memory.
//!
//! - Each topic the loop has subscribers of sits in a slab (its *local index*, stored in the
//!   shared record for this loop) with its members: `(slot, node)` pairs in a `Vec`, walked
//!   directly by a publish.
//! - Each subscription is a node in one arena: `{topic, position, next}`, `position` being its
//!   member's place in the topic's `Vec`, `next` the connection's next subscription. A
//!   connection keeps only the head of its list (a `u32` in the `Conn`): no map entry, no box.
//! - Leaving is a swap-remove in the members (the member moved into the hole gets its node's
//!   `position` updated), after a walk of the connection's own list to find the node.
//!
//! A subscription costs one member (8 bytes) and one node (12 bytes); the tables shrink when
//! they are mostly empty ([`spare_room`]).

use std::sync::Arc;

use slab::Slab;

use crate::engine::buffers::spare_room;
use crate::engine::topics::{ChangeHook, Interner, Joined, TopicHook, TopicShared, NONE};

/// Below this many nodes the arena is only ever reset (once empty), not compacted: compacting
/// rewrites every connection's list head, which is not worth it for a small table.
const COMPACT_MIN: usize = 4096;

/// A subscriber of a topic: its slot, and the node that records the subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    slot: u32,
    node: u32,
}

/// One subscription, in its connection's list. A free node has `topic == NONE` and `next` is
/// the next free one.
#[derive(Clone, Copy, Debug)]
struct Node {
    topic: u32,
    position: u32,
    next: u32,
}

struct LocalTopic {
    shared: Arc<TopicShared>,
    members: Vec<Member>,
}

pub(crate) struct TopicIndex {
    loop_id: usize,
    interner: Arc<Interner>,
    hook: Option<TopicHook>,
    changed: Option<ChangeHook>,
    topics: Slab<LocalTopic>,
    nodes: Vec<Node>,
    /// The first free node, or [`NONE`].
    free: u32,
    /// Nodes in use (subscriptions).
    live: usize,
}

impl TopicIndex {
    /// The index of loop `loop_id`, with the application's hooks: `hook` for first and last
    /// subscribers ([`TopicHook`]), `changed` for every change of a count ([`ChangeHook`]).
    pub(crate) fn new(
        loop_id: usize,
        interner: Arc<Interner>,
        hook: Option<TopicHook>,
        changed: Option<ChangeHook>,
    ) -> Self {
        Self { loop_id, interner, hook, changed, topics: Slab::new(), nodes: Vec::new(), free: NONE, live: 0 }
    }

    /// The connection in `slot`, whose list starts at `head`, joins `record`'s topic unless it
    /// is in `limit` topics already (`usize::MAX`: no limit); joining twice is a no-op
    /// ([`Joined::Already`], whatever the limit). The caller keeps (and releases) its own pin of
    /// `record`.
    pub(crate) fn subscribe(
        &mut self,
        head: &mut u32,
        slot: u32,
        record: &Arc<TopicShared>,
        limit: usize,
    ) -> Joined {
        let mut topic = record.local(self.loop_id);
        // Without a limit, a topic new to the loop needs no walk of the list.
        if topic != NONE || limit != usize::MAX {
            match self.room(*head, topic, limit) {
                Joined::Added => {}
                other => return other,
            }
        }
        if topic == NONE {
            self.interner.pin_again(record); // the loop's own, while it holds the topic
            topic = self.topics.insert(LocalTopic { shared: record.clone(), members: Vec::new() }) as u32;
            record.set_local(self.loop_id, topic);
        }
        // (Always there: the loop's index of a topic it holds names its slab entry.)
        let Some(local) = self.topics.get_mut(topic as usize) else { return Joined::Closed };
        let node = Node { topic, position: local.members.len() as u32, next: *head };
        let node = match self.nodes.get_mut(self.free as usize) {
            Some(free) => {
                let index = self.free;
                self.free = free.next;
                *free = node;
                index
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        local.members.push(Member { slot, node });
        *head = node;
        self.live += 1;
        if let Some(count) = self.interner.count(record, true) {
            self.report(record, count);
        }
        self.report_change(record);
        Joined::Added
    }

    /// [`TopicIndex::subscribe`] by name, without a limit: for topics joined on the loop itself
    /// (at an upgrade), with a pin held only for the call.
    pub(crate) fn subscribe_name(&mut self, head: &mut u32, slot: u32, name: &str) -> Joined {
        let pin = self.interner.pin(name);
        self.subscribe(head, slot, pin.record(), usize::MAX)
    }

    /// Whether the list at `head` holds local `topic` ([`Joined::Already`]), else whether it
    /// holds `limit` topics ([`Joined::Full`]) or has room ([`Joined::Added`]). One walk: a
    /// connection's topics are as many as the application lets it have.
    fn room(&self, head: u32, topic: u32, limit: usize) -> Joined {
        let (mut held, mut node) = (0, head);
        while let Some(n) = self.nodes.get(node as usize) {
            if n.topic == topic {
                return Joined::Already;
            }
            held += 1;
            node = n.next;
        }
        if held >= limit {
            Joined::Full
        } else {
            Joined::Added
        }
    }

    /// The connection whose list starts at `head` leaves `record`'s topic. Returns whether it
    /// was in it.
    pub(crate) fn unsubscribe(&mut self, head: &mut u32, record: &TopicShared) -> bool {
        let topic = record.local(self.loop_id);
        if topic == NONE {
            return false;
        }
        let Some((before, node)) = self.find(*head, topic) else { return false };
        let next = self.nodes[node as usize].next;
        match before {
            Some(before) => self.nodes[before as usize].next = next,
            None => *head = next,
        }
        self.leave(node);
        self.reset_if_empty();
        true
    }

    /// The connection whose list starts at `head` leaves all its topics (it is going).
    pub(crate) fn unsubscribe_all(&mut self, head: &mut u32) {
        let mut node = std::mem::replace(head, NONE);
        while let Some(&Node { next, .. }) = self.nodes.get(node as usize) {
            self.leave(node);
            node = next;
        }
        self.reset_if_empty();
    }

    /// The slots subscribed to `record`'s topic on this loop, appended to `out`.
    pub(crate) fn members(&self, record: &TopicShared, out: &mut Vec<u32>) {
        if let Some(local) = self.topics.get(record.local(self.loop_id) as usize) {
            out.extend(local.members.iter().map(|m| m.slot));
        }
    }

    /// The node of `topic` in the list at `head`, with the node before it (`None`: it is first).
    fn find(&self, head: u32, topic: u32) -> Option<(Option<u32>, u32)> {
        let (mut before, mut node) = (None, head);
        while let Some(n) = self.nodes.get(node as usize) {
            if n.topic == topic {
                return Some((before, node));
            }
            (before, node) = (Some(node), n.next);
        }
        None
    }

    /// Frees `node` (already out of its list) and its member; a topic left without members goes.
    fn leave(&mut self, node: u32) {
        let Node { topic, position, .. } = self.nodes[node as usize];
        let Some(local) = self.topics.get_mut(topic as usize) else { return };
        local.members.swap_remove(position as usize);
        if let Some(moved) = local.members.get(position as usize) {
            self.nodes[moved.node as usize].position = position;
        }
        if let Some(room) = spare_room(local.members.len(), local.members.capacity()) {
            local.members.shrink_to(room);
        }
        self.nodes[node as usize] = Node { topic: NONE, position: 0, next: self.free };
        self.free = node;
        self.live -= 1;
        let record = local.shared.clone();
        let emptied = local.members.is_empty();
        if let Some(count) = self.interner.count(&record, false) {
            self.report(&record, count);
        }
        self.report_change(&record);
        if emptied {
            self.topics.remove(topic as usize);
            record.set_local(self.loop_id, NONE);
            self.interner.unpin(&record);
            self.shrink_topics();
        }
    }

    fn report(&self, record: &TopicShared, count: usize) {
        if let Some(hook) = &self.hook {
            hook(record.name(), count);
        }
    }

    /// The count of `record` changed: the change hook runs if its report is armed.
    fn report_change(&self, record: &TopicShared) {
        if let Some(changed) = &self.changed {
            if record.report_change() {
                changed(record.name());
            }
        }
    }

    /// With no subscription left, the arena starts afresh (no list head points into it).
    fn reset_if_empty(&mut self) {
        if self.live == 0 && !self.nodes.is_empty() {
            self.nodes = Vec::new();
            self.free = NONE;
        }
    }

    /// Moves the topics down into the slab's holes once it is mostly empty, rewriting the moved
    /// topics' local index (in their record and their nodes).
    fn shrink_topics(&mut self) {
        if spare_room(self.topics.len(), self.topics.capacity()).is_none() {
            return;
        }
        let (loop_id, nodes) = (self.loop_id, &mut self.nodes);
        self.topics.compact(|local, _, to| {
            local.shared.set_local(loop_id, to as u32);
            for member in &local.members {
                nodes[member.node as usize].topic = to as u32;
            }
            true
        });
    }

    /// Whether the node arena is large and mostly empty: [`TopicIndex::compact`] is due.
    pub(crate) fn compaction_due(&self) -> bool {
        self.nodes.len() >= COMPACT_MIN && spare_room(self.live, self.nodes.len()).is_some()
    }

    /// Packs the live nodes at the front of the arena and shrinks it; `heads` are the list
    /// heads of every connection of the loop, rewritten to the moved nodes.
    pub(crate) fn compact<'a>(&mut self, heads: impl Iterator<Item = &'a mut u32>) {
        let mut moved_to = vec![NONE; self.nodes.len()];
        let mut next = 0;
        for (to, node) in moved_to.iter_mut().zip(&self.nodes) {
            if node.topic != NONE {
                *to = next;
                next += 1;
            }
        }
        let new = |index: u32| moved_to.get(index as usize).copied().unwrap_or(NONE);
        self.nodes.retain(|node| node.topic != NONE);
        for node in &mut self.nodes {
            node.next = new(node.next);
        }
        for (_, local) in &mut self.topics {
            for member in &mut local.members {
                member.node = new(member.node);
            }
        }
        for head in heads {
            *head = new(*head);
        }
        self.free = NONE;
        if let Some(room) = spare_room(self.live, self.nodes.capacity()) {
            self.nodes.shrink_to(room);
        }
    }

    /// Checks every link of the index against itself (tests).
    #[cfg(test)]
    pub(crate) fn check(&self, heads: &[(u32, u32)]) {
        let mut seen = 0;
        for &(slot, head) in heads {
            let mut node = head;
            while let Some(n) = self.nodes.get(node as usize) {
                let local = &self.topics[n.topic as usize];
                assert_eq!(local.members[n.position as usize], Member { slot, node }, "node {node}");
                assert_eq!(local.shared.local(self.loop_id), n.topic);
                seen += 1;
                node = n.next;
            }
            assert_eq!(node, NONE, "a list ends in NONE");
        }
        assert_eq!(seen, self.live, "every live node is in a list");
        let members: usize = self.topics.iter().map(|(_, t)| t.members.len()).sum();
        assert_eq!(members, self.live, "one member per node");
        assert!(self.topics.iter().all(|(_, t)| !t.members.is_empty()), "an empty topic is kept");
        let mut free = 0;
        let mut node = self.free;
        while let Some(n) = self.nodes.get(node as usize) {
            assert_eq!(n.topic, NONE);
            free += 1;
            node = n.next;
        }
        assert_eq!(free + self.live, self.nodes.len(), "every node is live or free");
    }

    /// The slots of `record`'s members, in member order (tests).
    #[cfg(test)]
    pub(crate) fn member_slots(&self, record: &TopicShared) -> Vec<u32> {
        let mut out = Vec::new();
        self.members(record, &mut out);
        out
    }

    #[cfg(test)]
    pub(crate) fn topics_len(&self) -> usize {
        self.topics.len()
    }

    #[cfg(test)]
    pub(crate) fn nodes_len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Mutex;

    use super::*;

    /// One loop's index over a shared interner, with the connections' list heads.
    struct World {
        interner: Arc<Interner>,
        index: TopicIndex,
        heads: Vec<u32>,
        edges: Arc<Mutex<Vec<(String, usize)>>>,
    }

    impl World {
        fn new(slots: usize) -> Self {
            let interner = Arc::new(Interner::new(1));
            let edges = Arc::new(Mutex::new(Vec::new()));
            let hook: TopicHook = {
                let edges = edges.clone();
                Arc::new(move |topic: &str, n| edges.lock().unwrap().push((topic.to_owned(), n)))
            };
            let index = TopicIndex::new(0, interner.clone(), Some(hook), None);
            Self { interner, index, heads: vec![NONE; slots], edges }
        }

        fn subscribe(&mut self, slot: u32, topic: &str) {
            self.subscribe_capped(slot, topic, usize::MAX);
        }

        fn subscribe_capped(&mut self, slot: u32, topic: &str, limit: usize) -> Joined {
            let pin = self.interner.pin(topic);
            self.index.subscribe(&mut self.heads[slot as usize], slot, pin.record(), limit)
        }

        fn unsubscribe(&mut self, slot: u32, topic: &str) -> bool {
            let Some(record) = self.interner.find(topic) else { return false };
            self.index.unsubscribe(&mut self.heads[slot as usize], &record)
        }

        fn close(&mut self, slot: u32) {
            self.index.unsubscribe_all(&mut self.heads[slot as usize]);
        }

        fn check(&self) {
            let heads: Vec<(u32, u32)> = self.heads.iter().enumerate().map(|(s, &h)| (s as u32, h)).collect();
            self.index.check(&heads);
        }

        fn members(&self, topic: &str) -> BTreeSet<u32> {
            self.interner
                .find(topic)
                .map_or_else(BTreeSet::new, |r| self.index.member_slots(&r).into_iter().collect())
        }

        fn take_edges(&self) -> Vec<(String, usize)> {
            std::mem::take(&mut *self.edges.lock().unwrap())
        }
    }

    #[test]
    fn a_subscription_costs_a_member_and_a_node() {
        assert_eq!(std::mem::size_of::<Member>(), 8);
        assert_eq!(std::mem::size_of::<Node>(), 12);
    }

    #[test]
    fn subscribe_twice_leave_a_non_member_and_close() {
        let mut w = World::new(3);
        w.subscribe(1, "news");
        w.subscribe(1, "news"); // twice: one entry
        w.subscribe(1, "chat");
        w.subscribe(2, "news");
        w.check();
        assert_eq!(w.members("news"), BTreeSet::from([1, 2]));
        assert_eq!(w.interner.totals(), (2, 3));
        assert_eq!(w.take_edges(), [("news".to_owned(), 1), ("chat".to_owned(), 1)]);
        assert!(!w.unsubscribe(0, "news"), "not a member");
        assert!(!w.unsubscribe(1, "never"), "no such topic");
        assert!(w.unsubscribe(1, "news"));
        w.check();
        assert_eq!(w.members("news"), BTreeSet::from([2]));
        w.close(1);
        w.check();
        assert!(w.interner.find("chat").is_none(), "an empty topic leaves the interner");
        assert_eq!(w.take_edges(), [("chat".to_owned(), 0)]);
        w.close(2);
        assert_eq!(w.take_edges(), [("news".to_owned(), 0)]);
        assert_eq!((w.interner.len(), w.index.topics_len(), w.index.nodes_len()), (0, 0, 0));
        assert_eq!(w.interner.totals(), (0, 0));
    }

    /// Random subscribes, unsubscribes, closes and compactions against a plain map of sets.
    #[test]
    fn random_operations_agree_with_a_simple_model() {
        const SLOTS: u32 = 48;
        const TOPICS: u32 = 16;
        let mut rng = fastrand::Rng::with_seed(0x7091c5);
        let mut w = World::new(SLOTS as usize);
        let mut model: HashMap<String, BTreeSet<u32>> = HashMap::new();
        for step in 0..20_000 {
            let slot = rng.u32(..SLOTS);
            let topic = format!("t{}", rng.u32(..TOPICS));
            let before = model.get(&topic).map_or(0, BTreeSet::len);
            let mut expected_edges = Vec::new();
            match rng.u32(..100) {
                0..=54 => {
                    // Half of them capped, at a limit the slot's topics often reach.
                    let limit = if rng.bool() { rng.usize(..8) } else { usize::MAX };
                    let held = model.values().filter(|m| m.contains(&slot)).count();
                    let want = if model.get(&topic).is_some_and(|m| m.contains(&slot)) {
                        Joined::Already
                    } else if held >= limit {
                        Joined::Full
                    } else {
                        Joined::Added
                    };
                    assert_eq!(w.subscribe_capped(slot, &topic, limit), want, "step {step}");
                    if want == Joined::Added
                        && model.entry(topic.clone()).or_default().insert(slot)
                        && before == 0
                    {
                        expected_edges.push((topic.clone(), 1));
                    }
                }
                55..=89 => {
                    let was = model.get_mut(&topic).is_some_and(|m| m.remove(&slot));
                    assert_eq!(w.unsubscribe(slot, &topic), was, "step {step}");
                    if was && before == 1 {
                        expected_edges.push((topic.clone(), 0));
                    }
                }
                90..=98 => {
                    w.close(slot);
                    let mut left: Vec<&String> = model
                        .iter()
                        .filter(|(_, m)| m.len() == 1 && m.contains(&slot))
                        .map(|(t, _)| t)
                        .collect();
                    left.sort();
                    let mut got = w.take_edges();
                    got.sort();
                    assert_eq!(
                        got,
                        left.into_iter().map(|t| (t.clone(), 0)).collect::<Vec<_>>(),
                        "step {step}"
                    );
                    for members in model.values_mut() {
                        members.remove(&slot);
                    }
                }
                _ => {
                    w.index.compact(w.heads.iter_mut());
                }
            }
            model.retain(|_, m| !m.is_empty());
            if !expected_edges.is_empty() {
                assert_eq!(w.take_edges(), expected_edges, "step {step}");
            }
            assert!(w.take_edges().is_empty(), "step {step}: a report for another change");
            if step % 97 == 0 || step > 19_900 {
                w.check();
                for t in 0..TOPICS {
                    let name = format!("t{t}");
                    let want = model.get(&name).cloned().unwrap_or_default();
                    assert_eq!(w.members(&name), want, "step {step}: members of {name}");
                    assert_eq!(w.interner.subscribers(&name), want.len());
                    assert_eq!(
                        w.interner.find(&name).is_some(),
                        !want.is_empty(),
                        "step {step}: {name} kept"
                    );
                }
                let subscriptions = model.values().map(BTreeSet::len).sum();
                assert_eq!(w.interner.totals(), (model.len(), subscriptions), "step {step}");
                assert_eq!(w.index.topics_len(), model.len());
            }
        }
        for slot in 0..SLOTS {
            w.close(slot);
        }
        w.check();
        assert_eq!((w.interner.len(), w.index.topics_len(), w.index.nodes_len()), (0, 0, 0), "all emptied");
    }

    #[test]
    fn two_loops_share_the_records_and_the_counts() {
        let interner = Arc::new(Interner::new(2));
        let edges = Arc::new(Mutex::new(Vec::new()));
        let hook: TopicHook = {
            let edges = edges.clone();
            Arc::new(move |topic: &str, n| edges.lock().unwrap().push((topic.to_owned(), n)))
        };
        let mut loops = [0, 1].map(|id| TopicIndex::new(id, interner.clone(), Some(hook.clone()), None));
        let mut heads = [[NONE; 2]; 2];
        for (l, index) in loops.iter_mut().enumerate() {
            let pin = interner.pin("news");
            index.subscribe(&mut heads[l][0], 0, pin.record(), usize::MAX);
            index.subscribe(&mut heads[l][1], 1, pin.record(), usize::MAX);
        }
        let record = interner.find("news").unwrap();
        assert_eq!((record.local(0), record.local(1)), (0, 0), "each loop's own index");
        assert_eq!(interner.subscribers("news"), 4);
        assert_eq!(std::mem::take(&mut *edges.lock().unwrap()), [("news".to_owned(), 1)], "one first");
        loops[0].unsubscribe_all(&mut heads[0][0]);
        loops[0].unsubscribe_all(&mut heads[0][1]);
        assert_eq!(record.local(0), NONE);
        assert_eq!(interner.len(), 1, "loop 1 still holds it");
        loops[1].unsubscribe(&mut heads[1][0], &record);
        loops[1].unsubscribe(&mut heads[1][1], &record);
        assert_eq!(std::mem::take(&mut *edges.lock().unwrap()), [("news".to_owned(), 0)], "one last");
        assert_eq!(interner.len(), 0);
    }

    #[test]
    fn a_capped_subscribe_counts_distinct_topics_and_a_repeat_is_not_refused() {
        let mut w = World::new(2);
        assert_eq!(w.subscribe_capped(0, "a", 2), Joined::Added);
        assert_eq!(w.subscribe_capped(0, "a", 2), Joined::Already, "twice: one topic");
        assert_eq!(w.subscribe_capped(0, "b", 2), Joined::Added, "the repeat did not count");
        assert_eq!(w.subscribe_capped(0, "c", 2), Joined::Full);
        assert_eq!(w.subscribe_capped(0, "a", 2), Joined::Already, "at the limit, a repeat is no refusal");
        assert_eq!(w.subscribe_capped(0, "b", 0), Joined::Already, "whatever the limit");
        // A topic the loop does not hold yet, and one it holds through another connection.
        assert_eq!(w.subscribe_capped(1, "c", 0), Joined::Full);
        assert_eq!(w.subscribe_capped(1, "a", 1), Joined::Added);
        assert_eq!(w.subscribe_capped(1, "b", 1), Joined::Full);
        w.check();
        assert!(w.interner.find("c").is_none(), "a refused subscribe leaves no record");
        assert_eq!(w.members("a"), BTreeSet::from([0, 1]));
        assert_eq!(w.interner.totals(), (2, 3));
        assert!(w.unsubscribe(0, "a"));
        assert_eq!(w.subscribe_capped(0, "c", 2), Joined::Added, "leaving made room");
        w.check();
    }

    #[test]
    fn the_change_hook_fires_once_until_observed() {
        let interner = Arc::new(Interner::new(1));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let changed: ChangeHook = {
            let changes = changes.clone();
            Arc::new(move |topic: &str| changes.lock().unwrap().push(topic.to_owned()))
        };
        let mut index = TopicIndex::new(0, interner.clone(), None, Some(changed));
        let mut heads = [NONE; 3];
        let pin = interner.pin("t");
        let other = interner.pin("u");
        let take = || std::mem::take(&mut *changes.lock().unwrap());
        index.subscribe(&mut heads[0], 0, pin.record(), usize::MAX);
        index.subscribe(&mut heads[1], 1, pin.record(), usize::MAX);
        index.subscribe(&mut heads[0], 0, pin.record(), usize::MAX); // no change: no report
        assert_eq!(take(), ["t"], "once until observed");
        index.subscribe(&mut heads[0], 0, other.record(), usize::MAX);
        assert_eq!(take(), ["u"], "each topic has its own report");
        assert_eq!(interner.observe("t"), 2);
        index.subscribe(&mut heads[2], 2, pin.record(), 0); // refused: no change
        assert!(take().is_empty());
        index.unsubscribe(&mut heads[1], pin.record());
        index.subscribe(&mut heads[2], 2, pin.record(), usize::MAX);
        assert_eq!(take(), ["t"], "re-armed by observe");
        assert_eq!(interner.observe("t"), 2);
        index.unsubscribe_all(&mut heads[0]);
        assert_eq!(take(), ["t"], "a close changes the count too");
        assert_eq!(interner.observe("never"), 0);
    }

    #[test]
    fn tables_shrink_once_mostly_empty() {
        let slots = 2 * COMPACT_MIN as u32;
        let mut w = World::new(slots as usize);
        for slot in 0..slots {
            w.subscribe(slot, "big");
            w.subscribe(slot, &format!("own{slot}"));
        }
        let record = w.interner.find("big").unwrap();
        assert!(!w.index.compaction_due());
        for slot in 0..slots - 100 {
            w.close(slot);
        }
        w.check();
        let local = &w.index.topics[record.local(0) as usize];
        assert!(local.members.capacity() <= 4 * 100, "members kept {} room", local.members.capacity());
        assert!(w.index.topics.capacity() <= 4 * 101, "topics kept {} room", w.index.topics.capacity());
        assert!(w.index.compaction_due());
        w.index.compact(w.heads.iter_mut());
        w.check();
        assert_eq!(w.index.nodes_len(), 200);
        assert!(w.index.nodes.capacity() <= 400);
        assert_eq!(w.members("big").len(), 100);
        for slot in slots - 100..slots {
            w.close(slot);
        }
        assert_eq!((w.interner.len(), w.index.nodes.capacity()), (0, 0));
    }
}
