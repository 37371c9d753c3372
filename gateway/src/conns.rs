//! What the gateway keeps per open connection, at engine density: one 20-byte entry per loop
//! and slot ([`ConnId::slot`]), in pages of [`PAGE`] entries made when a slot in them is first
//! used and freed when their last connection closes. Slots are dense and reused, so the pages
//! cover about the most connections a loop held; no map entry and no heap block per
//! connection, and no reallocation (a growing vector would leave its old buffers behind as
//! holes in the allocator's heap).
//!
//! An entry holds the connection's generation (so a stale id finds nothing), the address its
//! admission slot was counted under, when it opened, and its principal: the token's subject and
//! allow-list, interned — every connection of one user with the same allow-list shares one
//! record, counted, and the record goes when the last of them closes.
//!
//! All of one slot's events reach the same worker in order (the engine shards by loop and slot),
//! so a slot's Close is always handled before the Open of the next connection in it; the lock
//! per loop is for the admin API and the other workers, which read any entry.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::admission::IpKey;
use super::channels::Pattern;
use throng::ConnId;

/// Who a connection belongs to: a token's subject and its allow-list (`None`: every channel).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Principal {
    pub(crate) sub: Arc<str>,
    pub(crate) allowed: Option<Box<[Pattern]>>,
}

/// A closed connection's entry, as [`Conns::close`] hands it back.
pub(crate) struct Closed {
    pub(crate) ip: IpKey,
    pub(crate) principal: Option<Arc<Principal>>,
    pub(crate) open_for: Duration,
    /// It was scheduled to close at its token's expiry.
    pub(crate) expires: bool,
}

/// Entries per page: 20 KiB.
const PAGE: usize = 1024;

/// Unit of [`Entry::opened`]: 10 ms keeps a u32 good for 497 days of uptime.
const TICK: Duration = Duration::from_millis(10);
/// In [`Entry::principal`]: the top bit says the address is an IPv6 /64 (so both kinds of
/// [`IpKey`] fit the entry's 8 address bytes without a tag byte), the next that the connection
/// is scheduled to close at its token's expiry, the rest is the principal's index plus one
/// (0: no token).
const V6: u32 = 1 << 31;
const EXPIRES: u32 = 1 << 30;
const FLAGS: u32 = V6 | EXPIRES;

/// One slot's entry. `generation` 0 is an empty slot (the engine never issues it).
#[derive(Clone, Copy, Default)]
struct Entry {
    generation: u32,
    principal: u32,
    opened: u32,
    ip: [u32; 2],
}

impl Entry {
    fn ip(&self) -> IpKey {
        if self.principal & V6 != 0 {
            IpKey::V6Prefix(u64::from(self.ip[0]) << 32 | u64::from(self.ip[1]))
        } else {
            IpKey::V4(Ipv4Addr::from(self.ip[1]))
        }
    }

    /// The principal's index, if the connection has one.
    fn principal(&self) -> Option<usize> {
        (self.principal & !FLAGS).checked_sub(1).map(|i| i as usize)
    }
}

/// Interned principals: index → record and its count of connections, and record → index.
#[derive(Default)]
struct Principals {
    slots: Vec<Option<(Arc<Principal>, usize)>>,
    free: Vec<u32>,
    index: HashMap<Arc<Principal>, u32>,
}

impl Principals {
    /// The index of `principal`'s record (made if new), counted once more.
    fn take(&mut self, principal: Principal) -> (u32, Arc<Principal>) {
        if let Some(&i) = self.index.get(&principal) {
            let (record, refs) = self.slots[i as usize].as_mut().expect("an indexed slot is used");
            *refs += 1;
            return (i, record.clone());
        }
        let record = Arc::new(principal);
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[i as usize] = Some((record.clone(), 1));
        self.index.insert(record.clone(), i);
        (i, record)
    }

    fn get(&self, i: usize) -> Option<Arc<Principal>> {
        self.slots.get(i)?.as_ref().map(|(record, _)| record.clone())
    }

    /// One connection fewer for record `i`; the record goes with its last.
    fn give_back(&mut self, i: usize) -> Option<Arc<Principal>> {
        let (record, refs) = self.slots.get_mut(i)?.as_mut()?;
        let record = record.clone();
        *refs -= 1;
        if *refs == 0 {
            self.slots[i] = None;
            self.index.remove(&record);
            self.free.push(i as u32);
        }
        Some(record)
    }
}

/// One loop's pages and how many open connections each holds.
#[derive(Default)]
struct Table {
    pages: Vec<Option<(Box<[Entry; PAGE]>, usize)>>,
}

impl Table {
    fn get(&self, slot: usize) -> Option<&Entry> {
        let (page, _) = self.pages.get(slot / PAGE)?.as_ref()?;
        Some(&page[slot % PAGE])
    }

    /// Stores `entry` for `slot`; true when the slot was empty.
    fn put(&mut self, slot: usize, entry: Entry) -> bool {
        let at = slot / PAGE;
        if self.pages.len() <= at {
            self.pages.resize_with(at + 1, || None);
        }
        let (page, used) = self.pages[at].get_or_insert_with(|| (Box::new([Entry::default(); PAGE]), 0));
        let was_empty = page[slot % PAGE].generation == 0;
        *used += usize::from(was_empty);
        page[slot % PAGE] = entry;
        was_empty
    }

    /// Takes `slot`'s entry if it is `generation`'s; a page whose last entry goes is freed.
    fn take(&mut self, slot: usize, generation: u32) -> Option<Entry> {
        let at = slot / PAGE;
        let (page, used) = self.pages.get_mut(at)?.as_mut()?;
        let entry = &mut page[slot % PAGE];
        if entry.generation != generation {
            return None;
        }
        let taken = std::mem::take(entry);
        *used -= 1;
        if *used == 0 {
            self.pages[at] = None;
            while self.pages.last().is_some_and(Option::is_none) {
                self.pages.pop();
            }
        }
        Some(taken)
    }
}

/// Every open connection's entry, a table per loop.
pub(crate) struct Conns {
    loops: Box<[Mutex<Table>]>,
    principals: Mutex<Principals>,
    epoch: Instant,
    open: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // An entry is a few words written at once: a panic elsewhere cannot leave one half-made.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conns {
    /// A table for `loops` event loops.
    pub(crate) fn new(loops: usize) -> Self {
        Conns {
            loops: (0..loops).map(|_| Mutex::default()).collect(),
            principals: Mutex::default(),
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
        }
    }

    /// Records an opened connection, its admission address, its principal (interned; the
    /// shared record is returned) and whether it is to close at its token's expiry.
    pub(crate) fn open(
        &self,
        conn: ConnId,
        ip: IpKey,
        principal: Option<Principal>,
        expires: bool,
    ) -> Option<Arc<Principal>> {
        let Some(table) = self.loops.get(conn.loop_id()) else {
            debug_assert!(false, "a connection of loop {} the table was not made for", conn.loop_id());
            return None;
        };
        let (index, record) = match principal {
            Some(p) => {
                let (i, record) = lock(&self.principals).take(p);
                (i + 1, Some(record))
            }
            None => (0, None),
        };
        let (flag, ip) = match ip {
            IpKey::V4(v4) => (0, [0, u32::from(v4)]),
            IpKey::V6Prefix(prefix) => (V6, [(prefix >> 32) as u32, prefix as u32]),
        };
        let opened = (self.epoch.elapsed().as_nanos() / TICK.as_nanos()) as u32;
        let flags = flag | if expires { EXPIRES } else { 0 };
        let entry = Entry { generation: conn.generation(), principal: index | flags, opened, ip };
        if lock(table).put(conn.slot(), entry) {
            self.open.fetch_add(1, Ordering::Relaxed);
        }
        record
    }

    /// Forgets a closed connection and hands back what it held.
    pub(crate) fn close(&self, conn: ConnId) -> Option<Closed> {
        let entry = lock(self.loops.get(conn.loop_id())?).take(conn.slot(), conn.generation())?;
        self.open.fetch_sub(1, Ordering::Relaxed);
        let principal = entry.principal().and_then(|i| lock(&self.principals).give_back(i));
        let now = (self.epoch.elapsed().as_nanos() / TICK.as_nanos()) as u32;
        let open_for = TICK * now.wrapping_sub(entry.opened);
        Some(Closed { ip: entry.ip(), principal, open_for, expires: entry.principal & EXPIRES != 0 })
    }

    fn entry(&self, conn: ConnId) -> Option<Entry> {
        let table = lock(self.loops.get(conn.loop_id())?);
        table.get(conn.slot()).copied().filter(|e| e.generation == conn.generation())
    }

    /// Whether `conn` is open (as the workers know it).
    pub(crate) fn contains(&self, conn: ConnId) -> bool {
        self.entry(conn).is_some()
    }

    /// Whether `conn` is open, and then its principal (`Some(None)`: open, without a token).
    pub(crate) fn open_principal(&self, conn: ConnId) -> Option<Option<Arc<Principal>>> {
        let entry = self.entry(conn)?;
        Some(entry.principal().and_then(|i| lock(&self.principals).get(i)))
    }

    /// The principal of an open connection, if it came with a token.
    pub(crate) fn principal(&self, conn: ConnId) -> Option<Arc<Principal>> {
        let i = self.entry(conn)?.principal()?;
        lock(&self.principals).get(i)
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Distinct principals now (interned records).
    #[cfg(test)]
    fn principals(&self) -> usize {
        lock(&self.principals).index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn principal(sub: &str, allowed: Option<&[&str]>) -> Principal {
        Principal { sub: sub.into(), allowed: allowed.map(|a| a.iter().map(|p| Pattern::new(p)).collect()) }
    }

    #[test]
    fn an_entry_is_twenty_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 20);
    }

    #[test]
    fn entries_round_trip_and_stale_ids_find_nothing() {
        let conns = Conns::new(2);
        let v4 = IpKey::V4(Ipv4Addr::new(192, 0, 2, 7));
        let v6 = IpKey::from(std::net::IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)));
        let a = ConnId::from_u64((1 << 56) | (5 << 32) | 3);
        let b = ConnId::from_u64(9 << 32 | 1);
        let loopback6 = IpKey::from(std::net::IpAddr::V6(Ipv6Addr::LOCALHOST));
        let c = ConnId::from_u64(10 << 32 | 1);
        assert!(conns.open(a, v4, None, false).is_none());
        let record = conns.open(b, v6, Some(principal("alice", Some(&["news.*"]))), true).unwrap();
        conns.open(c, loopback6, None, false);
        assert_eq!(conns.len(), 3);
        assert!(conns.contains(a) && conns.contains(b));
        assert!(!conns.contains(ConnId::from_u64((1 << 56) | (5 << 32) | 2)), "an older generation");
        assert!(!conns.contains(ConnId::from_u64((7 << 56) | (5 << 32) | 3)), "a loop that does not exist");
        assert!(!conns.contains(ConnId::from_u64((1 << 56) | (0xff_ffff << 32) | 3)), "past the table");
        assert_eq!(conns.principal(b).as_deref(), Some(&*record));
        assert!(conns.principal(a).is_none());

        let closed = conns.close(b).unwrap();
        assert_eq!((closed.ip, closed.expires), (v6, true));
        assert_eq!(closed.principal.unwrap().sub.as_ref(), "alice");
        assert!(conns.close(b).is_none(), "closed once");
        let closed = conns.close(a).unwrap();
        assert_eq!((closed.ip, closed.expires), (v4, false));
        // ::1 is the /64 prefix 0: it must not come back as the IPv4 address 0.0.0.0.
        assert_eq!(conns.close(c).unwrap().ip, loopback6);
        assert_eq!(conns.len(), 0);
    }

    #[test]
    fn principals_are_shared_and_go_with_their_last_connection() {
        let conns = Conns::new(1);
        let ip = IpKey::V4(Ipv4Addr::LOCALHOST);
        let ids: Vec<ConnId> = (0..100u64).map(|i| ConnId::from_u64(i << 32 | 1)).collect();
        let mut records = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let allowed: &[&str] = if i % 2 == 0 { &["a"] } else { &["b"] };
            records.push(conns.open(id, ip, Some(principal("bob", Some(allowed))), false).unwrap());
        }
        assert_eq!(conns.principals(), 2, "one record per distinct subject and allow-list");
        assert!(Arc::ptr_eq(&records[0], &records[2]));
        for &id in &ids[..99] {
            conns.close(id);
        }
        assert_eq!(conns.principals(), 1);
        conns.close(ids[99]);
        assert_eq!(conns.principals(), 0);
        // Freed indices are reused: a new subject does not grow the table.
        conns.open(ids[0], ip, Some(principal("carol", None)), false);
        assert_eq!(lock(&conns.principals).slots.len(), 2);
    }

    #[test]
    fn a_table_gives_its_room_back() {
        let conns = Conns::new(1);
        let ip = IpKey::V4(Ipv4Addr::LOCALHOST);
        let ids: Vec<ConnId> = (0..10_000u64).map(|i| ConnId::from_u64(i << 32 | 1)).collect();
        for &id in &ids {
            conns.open(id, ip, None, false);
        }
        for &id in &ids[1..] {
            conns.close(id);
        }
        let table = lock(&conns.loops[0]);
        assert_eq!(table.pages.len(), 1, "only the first page is left");
        drop(table);
        conns.close(ids[0]);
        assert!(lock(&conns.loops[0]).pages.is_empty());
    }

    #[test]
    fn durations_are_measured_from_the_open() {
        let conns = Conns::new(1);
        let id = ConnId::from_u64(1 << 32 | 1);
        conns.open(id, IpKey::V4(Ipv4Addr::LOCALHOST), None, false);
        std::thread::sleep(Duration::from_millis(30));
        let open_for = conns.close(id).unwrap().open_for;
        assert!(open_for >= Duration::from_millis(20), "{open_for:?}");
    }
}
