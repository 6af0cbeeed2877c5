//! The table behind a target's series cache: entries kept in the order the target's scrapes
//! list their series, with a hash index beside them for the lookups that order does not
//! predict.
//!
//! A target exposes the same series in the same order scrape after scrape, so the entry a
//! lookup wants is almost always the one after the previous lookup's: a compare of keys at a
//! cursor, reading the entries front to back, where a hash table would cost a probe at a
//! random place of a table too large for the CPU caches. The index (4-byte positions) answers
//! the rest: new series, which are appended, and series that moved. When a scrape finds too
//! many entries out of place, the next scrape records its order and the entries are laid out
//! in it again.
//!
//! The index exists only while a scrape needs it. A steady scrape finds every entry at the
//! cursor and never builds it; the first lookup the cursor cannot answer builds it from the
//! entries (a pass over them, about what the scrape's fingerprints cost already), and every
//! scrape's end drops it. At 2,500 series a target's index is about 20 KB, 8 bytes a series,
//! which no longer sits beside every steady target between its scrapes.
//!
//! Positions returned by [`find`](SeriesCache::find) and [`insert`](SeriesCache::insert) hold
//! until [`end_scrape`](SeriesCache::end_scrape) or [`retain`](SeriesCache::retain), which
//! may move entries.

use hashbrown::HashTable;

/// The key as two halves: a `u128` field would align the slot to 16 bytes, so an 8-byte
/// entry would pad it to 32 instead of 24.
#[derive(Debug)]
struct Slot<E> {
    key: [u64; 2],
    entry: E,
}

fn halves(key: u128) -> [u64; 2] {
    [key as u64, (key >> 64) as u64]
}

/// Entries keyed by a 128-bit fingerprint, which is already a uniform hash: its low 64 bits
/// are the index's hash.
#[derive(Debug)]
pub struct SeriesCache<E> {
    slots: Vec<Slot<E>>,
    /// Positions by key, when this scrape has needed them; it covers every slot.
    index: Option<HashTable<u32>>,
    /// The position the next lookup expects.
    cursor: usize,
    /// Lookups of this scrape that found their entry elsewhere than at the cursor. (A new
    /// series costs nothing here: it is the scrape after that finds it out of place.)
    misses: usize,
    /// This scrape's positions in the order it looked them up, when the previous scrape
    /// found the entries out of order.
    order: Option<Vec<u32>>,
}

impl<E> Default for SeriesCache<E> {
    fn default() -> Self {
        SeriesCache { slots: Vec::new(), index: None, cursor: 0, misses: 0, order: None }
    }
}

/// The index's hash of a key: its low half.
fn hash(key: &[u64; 2]) -> u64 {
    key[0]
}

impl<E> SeriesCache<E> {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Looks `key` up in the index, building the index first if this scrape has not yet.
    fn lookup(&mut self, key: &[u64; 2]) -> Option<usize> {
        let slots = &self.slots;
        let index = self.index.get_or_insert_with(|| index_of(slots));
        index.find(hash(key), |&i| slots[i as usize].key == *key).map(|&i| i as usize)
    }

    /// Whether the entry at the cursor has `key`: the lookup a steady scrape makes.
    fn at_cursor(&self, key: &[u64; 2]) -> bool {
        self.slots.get(self.cursor).is_some_and(|s| s.key == *key)
    }

    /// Whether `key` is cached; the cursor stays where it is.
    pub fn contains(&mut self, key: u128) -> bool {
        let key = halves(key);
        self.at_cursor(&key) || self.lookup(&key).is_some()
    }

    /// The position of `key`'s entry, moving the cursor past it.
    pub fn find(&mut self, key: u128) -> Option<usize> {
        let key = halves(key);
        let i = if self.at_cursor(&key) {
            self.cursor
        } else {
            let i = self.lookup(&key)?;
            self.misses += 1;
            i
        };
        self.cursor = i + 1;
        if let Some(order) = &mut self.order {
            order.push(i as u32);
        }
        Some(i)
    }

    /// Adds an entry for a key that is not cached, at the end, and returns its position. The
    /// cursor stays: the next series in the scrape is likely the one after the previous hit.
    pub fn insert(&mut self, key: u128, entry: E) -> usize {
        debug_assert!(self.index.is_none() || !self.contains(key));
        let (i, key) = (self.slots.len(), halves(key));
        self.slots.push(Slot { key, entry });
        // Without an index there is nothing to update: the next lookup that needs one builds
        // it from the slots, this one included.
        if let Some(index) = &mut self.index {
            let slots = &self.slots;
            index.insert_unique(hash(&key), i as u32, |&j| hash(&slots[j as usize].key));
        }
        if let Some(order) = &mut self.order {
            order.push(i as u32);
        }
        i
    }

    pub fn get_mut(&mut self, i: usize) -> &mut E {
        &mut self.slots[i].entry
    }

    pub fn values(&self) -> impl Iterator<Item = &E> {
        self.slots.iter().map(|s| &s.entry)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut E> {
        self.slots.iter_mut().map(|s| &mut s.entry)
    }

    /// Keeps the entries `keep` approves of, in their order.
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        let before = self.slots.len();
        self.slots.retain(|s| keep(&s.entry));
        if self.slots.len() != before {
            self.index = None;
        }
    }

    /// Closes a scrape: lays the entries out in its order if it was recorded, or has the next
    /// scrape record its order if this one found more than one entry in 16 out of place.
    /// Growth's spare capacity is given back, so a slot costs its size and no more, and the
    /// index is dropped (module header).
    pub fn end_scrape(&mut self) {
        self.index = None;
        if let Some(order) = self.order.take() {
            self.reorder(&order);
        } else if self.misses > 8 && self.misses > self.slots.len() / 16 {
            self.order = Some(Vec::with_capacity(self.slots.len()));
        }
        self.cursor = 0;
        self.misses = 0;
        let n = self.slots.len();
        if self.slots.capacity() > n + n / 8 + 16 {
            self.slots.shrink_to_fit();
        }
    }

    /// Puts the entries at `order`'s positions first, in that order, then the others as they
    /// were.
    fn reorder(&mut self, order: &[u32]) {
        let mut old: Vec<Option<Slot<E>>> = std::mem::take(&mut self.slots).into_iter().map(Some).collect();
        let mut slots = Vec::with_capacity(old.len());
        for &i in order {
            // A position may come twice: a series listed twice in one scrape.
            if let Some(s) = old.get_mut(i as usize).and_then(Option::take) {
                slots.push(s);
            }
        }
        slots.extend(old.into_iter().flatten());
        self.slots = slots;
        self.index = None;
    }

    /// Whether the index is built: for tests.
    #[cfg(test)]
    fn indexed(&self) -> bool {
        self.index.is_some()
    }
}

fn index_of<E>(slots: &[Slot<E>]) -> HashTable<u32> {
    let mut index = HashTable::with_capacity(slots.len());
    for (i, s) in slots.iter().enumerate() {
        index.insert_unique(hash(&s.key), i as u32, |&j| hash(&slots[j as usize].key));
    }
    index
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Scrapes `keys` in order: finds each, inserting the missing, and returns the misses.
    fn scrape(c: &mut SeriesCache<u128>, keys: &[u128]) -> usize {
        for &k in keys {
            let i = match c.find(k) {
                Some(i) => i,
                None => c.insert(k, k),
            };
            assert_eq!(*c.get_mut(i), k, "position {i} holds another key");
        }
        let misses = c.misses;
        c.end_scrape();
        misses
    }

    #[test]
    fn steady_scrapes_hit_by_position_and_moved_entries_are_laid_out_again() {
        let mut c = SeriesCache::default();
        let keys: Vec<u128> = (0..1000).map(|k| k * 7919).collect();
        assert_eq!(scrape(&mut c, &keys), 0, "new series are appended in order");
        assert_eq!(scrape(&mut c, &keys), 0, "the same order: every lookup at the cursor");
        // A hundred new series spread through the scrape: each is appended at the end.
        let mut spread = keys.clone();
        for j in 0..100 {
            spread.insert(j * 11, 1_000_000 + j as u128);
        }
        assert_eq!(scrape(&mut c, &spread), 0);
        // Next time each is out of place, and so is the series after it: 200 of 1,100.
        assert_eq!(scrape(&mut c, &spread), 200);
        // That was too many, so this scrape records its order and the entries follow it.
        assert_eq!(scrape(&mut c, &spread), 200);
        assert_eq!(scrape(&mut c, &spread), 0);
        assert_eq!(c.len(), 1100);
    }

    #[test]
    fn only_a_scrape_the_cursor_cannot_answer_builds_the_index() {
        let mut c = SeriesCache::default();
        let keys: Vec<u128> = (0..500).map(|k| k * 31).collect();
        scrape(&mut c, &keys);
        assert!(!c.indexed(), "the scrape's end drops the index");
        // A steady scrape, with the guessing parser's check before each lookup.
        for &k in &keys {
            assert!(c.contains(k));
            assert!(c.find(k).is_some());
        }
        assert!(!c.indexed(), "every key was at the cursor");
        c.end_scrape();
        // One new series halfway: its lookup needs the index, and the series after it is
        // found through it too.
        let mut grown = keys.clone();
        grown.insert(250, 7);
        for &k in &grown[..250] {
            assert!(c.find(k).is_some());
        }
        assert!(!c.contains(7) && c.indexed());
        let at = c.insert(7, 7);
        assert_eq!(c.find(keys[250]), Some(250));
        assert_eq!(c.find(7), Some(at), "an insert after the index was built is in it");
        c.end_scrape();
        assert!(!c.indexed());
        assert_eq!(c.len(), 501);
    }

    #[test]
    fn retain_keeps_order_and_positions_stay_findable() {
        let mut c = SeriesCache::default();
        let keys: Vec<u128> = (0..300).collect();
        scrape(&mut c, &keys);
        c.retain(|&k| k % 3 != 0);
        let kept: Vec<u128> = keys.iter().copied().filter(|k| k % 3 != 0).collect();
        assert_eq!(c.values().copied().collect::<Vec<_>>(), kept);
        assert_eq!(scrape(&mut c, &kept), 0);
        assert!(!c.contains(3) && c.contains(4));
    }

    #[test]
    fn a_slot_is_the_key_and_the_entry() {
        // What append's 8-byte entry costs per cached series, with the key: no padding.
        assert_eq!(std::mem::size_of::<Slot<u64>>(), 24);
    }

    #[test]
    fn spare_capacity_is_given_back() {
        let mut c = SeriesCache::default();
        scrape(&mut c, &(0..2500).collect::<Vec<u128>>());
        assert!(c.slots.capacity() <= 2500 + 2500 / 8 + 16, "capacity {}", c.slots.capacity());
    }

    proptest! {
        /// Whatever the scrapes' orders, duplicates and evictions, every key is found at a
        /// position that holds it, and the cache holds exactly the keys put in and kept.
        #[test]
        fn any_scrapes_find_what_was_put(
            scrapes in proptest::collection::vec(proptest::collection::vec(0..60u128, 0..80), 1..12),
            evict in proptest::collection::vec(0..60u128, 0..10),
        ) {
            let mut c = SeriesCache::default();
            let mut want = std::collections::BTreeSet::new();
            for (n, keys) in scrapes.iter().enumerate() {
                scrape(&mut c, keys);
                want.extend(keys.iter().copied());
                if n % 3 == 2 {
                    c.retain(|k| !evict.contains(k));
                    want.retain(|k| !evict.contains(k));
                }
                let have: std::collections::BTreeSet<u128> = c.values().copied().collect();
                prop_assert_eq!(have.len(), c.len(), "a key cached twice");
                prop_assert_eq!(&have, &want);
                for &k in &want {
                    prop_assert!(c.contains(k));
                }
            }
        }
    }
}
