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
use crate::engine::topics::{Interner, TopicHook, TopicShared, NONE};

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
    topics: Slab<LocalTopic>,
    nodes: Vec<Node>,
    /// The first free node, or [`NONE`].
    free: u32,
    /// Nodes in use (subscriptions).
    live: usize,
}

impl TopicIndex {
    pub(crate) fn new(loop_id: usize, interner: Arc<Interner>, hook: Option<TopicHook>) -> Self {
        Self { loop_id, interner, hook, topics: Slab::new(), nodes: Vec::new(), free: NONE, live: 0 }
    }

    /// The connection in `slot`, whose list starts at `head`, joins `record`'s topic; joining
    /// twice is a no-op. The caller keeps (and releases) its own pin of `record`.
    pub(crate) fn subscribe(&mut self, head: &mut u32, slot: u32, record: &Arc<TopicShared>) {
        let mut topic = record.local(self.loop_id);
        if topic == NONE {
            self.interner.pin_again(record); // the loop's own, while it holds the topic
            topic = self.topics.insert(LocalTopic { shared: record.clone(), members: Vec::new() }) as u32;
            record.set_local(self.loop_id, topic);
        } else if self.find(*head, topic).is_some() {
            return;
        }
        let Some(local) = self.topics.get_mut(topic as usize) else { return };
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
    }

    /// The connection whose list starts at `head` leaves `record`'s topic (if it is in it).
    pub(crate) fn unsubscribe(&mut self, head: &mut u32, record: &TopicShared) {
        let topic = record.local(self.loop_id);
        if topic == NONE {
            return;
        }
        let Some((before, node)) = self.find(*head, topic) else { return };
        let next = self.nodes[node as usize].next;
        match before {
            Some(before) => self.nodes[before as usize].next = next,
            None => *head = next,
        }
        self.leave(node);
        self.reset_if_empty();
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
