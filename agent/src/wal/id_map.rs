//! [`IdMap`]: a map keyed by series id, made for how the agent hands ids out: one counter
//! for the whole process, so the ids in use lie in dense runs.
//!
//! Slots live in pages of [`PAGE`] consecutive ids, and a page goes when its last entry
//! does. A hash table keyed by id paid a slot of key plus value at a load between 44% and
//! 87%: at 500k series, 34 MB for the WAL's label table, where these pages take 12 MB. The
//! cost is a page that a few long-lived series keep alive among ids that churn freed, at
//! most one page per such series.
//!
//! A page also carries one bit per id for one *tag* (the WAL's "stated in the segment being
//! written"): a question asked per sample that a field in every value would answer at 4 or
//! more bytes an entry, where the bits take 36 bytes a page.

use hashbrown::HashMap;

/// Ids per page: small enough that a stray survivor pins little, large enough that the page
/// table stays a small fraction of the slots.
pub const PAGE: u64 = 256;

#[derive(Debug)]
struct Page<V> {
    slots: Box<[Option<V>]>,
    used: usize,
    /// The tag `marks` are for; marking for another clears them first.
    mark_tag: u32,
    marks: [u64; MARK_WORDS],
}

const MARK_WORDS: usize = PAGE as usize / 64;

/// The word and bit of `id`'s mark in its page.
fn mark_bit(id: u64) -> (usize, u64) {
    let i = id % PAGE;
    ((i / 64) as usize, 1 << (i % 64))
}

#[derive(Debug)]
pub struct IdMap<V> {
    pages: HashMap<u64, Page<V>>,
    len: usize,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap { pages: HashMap::new(), len: 0 }
    }
}

impl<V> IdMap<V> {
    pub fn new() -> IdMap<V> {
        IdMap::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, id: u64) -> Option<&V> {
        self.pages.get(&(id / PAGE))?.slots[(id % PAGE) as usize].as_ref()
    }

    /// Sets `id` to `v`, returning what it held.
    pub fn insert(&mut self, id: u64, v: V) -> Option<V> {
        let page = self.pages.entry(id / PAGE).or_insert_with(|| Page {
            slots: (0..PAGE).map(|_| None).collect(),
            used: 0,
            mark_tag: 0,
            marks: [0; MARK_WORDS],
        });
        let old = page.slots[(id % PAGE) as usize].replace(v);
        if old.is_none() {
            page.used += 1;
            self.len += 1;
            // Marks belong to entries: a new one starts unmarked.
            let (word, bit) = mark_bit(id);
            page.marks[word] &= !bit;
        }
        old
    }

    /// Removes `id`, freeing its page if it was the last entry there.
    pub fn remove(&mut self, id: u64) -> Option<V> {
        let page = self.pages.get_mut(&(id / PAGE))?;
        let old = page.slots[(id % PAGE) as usize].take()?;
        let (word, bit) = mark_bit(id);
        page.marks[word] &= !bit;
        page.used -= 1;
        self.len -= 1;
        if page.used == 0 {
            self.pages.remove(&(id / PAGE));
        }
        Some(old)
    }

    /// Whether `id` has an entry marked for `tag`.
    pub fn marked(&self, id: u64, tag: u32) -> bool {
        let (word, bit) = mark_bit(id);
        self.pages.get(&(id / PAGE)).is_some_and(|p| p.mark_tag == tag && p.marks[word] & bit != 0)
    }

    /// Marks `id`'s entry, if it has one, for `tag`. A page keeps the marks of one tag, the
    /// last it was marked for: marking for another forgets the marks of its entries for the
    /// one before.
    pub fn mark(&mut self, id: u64, tag: u32) {
        let (word, bit) = mark_bit(id);
        let Some(page) = self.pages.get_mut(&(id / PAGE)) else { return };
        if page.slots[(id % PAGE) as usize].is_none() {
            return;
        }
        if page.mark_tag != tag {
            page.mark_tag = tag;
            page.marks = [0; MARK_WORDS];
        }
        page.marks[word] |= bit;
    }

    /// Pages held (for tests of what churn leaves behind).
    #[cfg(test)]
    fn pages(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn pages_come_and_go_with_their_entries() {
        let mut m = IdMap::new();
        for id in 0..3 * PAGE {
            assert_eq!(m.insert(id, id * 10), None);
        }
        assert_eq!((m.len(), m.pages()), (3 * PAGE as usize, 3));
        assert_eq!(m.insert(5, 7), Some(50));
        assert_eq!(m.get(5), Some(&7));
        assert_eq!(m.get(3 * PAGE), None);
        // Churn frees the first page whole; one survivor keeps the second.
        for id in 0..2 * PAGE - 1 {
            assert!(m.remove(id).is_some());
        }
        assert_eq!(m.remove(0), None);
        assert_eq!((m.len(), m.pages()), (PAGE as usize + 1, 2));
        assert_eq!(m.get(0), None);
        assert_eq!(m.get(2 * PAGE - 1), Some(&((2 * PAGE - 1) * 10)));
        for id in 2 * PAGE - 1..3 * PAGE {
            m.remove(id);
        }
        assert!(m.is_empty());
        assert_eq!(m.pages(), 0);
    }

    #[test]
    fn marks_hold_for_one_tag_and_belong_to_entries() {
        let mut m = IdMap::new();
        for id in [1, 2, PAGE + 1] {
            m.insert(id, ());
        }
        m.mark(1, 5);
        m.mark(PAGE + 1, 5);
        m.mark(3, 5); // no entry: nothing to mark
        assert!(m.marked(1, 5) && !m.marked(2, 5) && !m.marked(3, 5));
        assert!(!m.marked(1, 6), "a mark answers for its own tag only");
        // Marking for the next tag forgets the page's marks for the one before, and only
        // that page's.
        m.mark(2, 6);
        assert!(m.marked(2, 6) && !m.marked(1, 6) && !m.marked(1, 5));
        assert!(m.marked(PAGE + 1, 5));
        // An entry removed and made again starts unmarked.
        m.remove(2);
        m.insert(2, ());
        assert!(!m.marked(2, 6));
    }

    proptest! {
        #[test]
        fn behaves_like_a_map_with_marks(ops in proptest::collection::vec((0u8..5, 0u64..2_000, 0u32..3), 0..300)) {
            let mut m = IdMap::new();
            let mut model = BTreeMap::new();
            // (id, tag) marks of the model, and each page's latest tag.
            let mut marks: BTreeSet<(u64, u32)> = BTreeSet::new();
            let mut page_tag: BTreeMap<u64, u32> = BTreeMap::new();
            for (op, id, v) in ops {
                match op {
                    0 => {
                        let old = model.insert(id, v);
                        if old.is_none() {
                            marks.retain(|&(i, _)| i != id);
                        }
                        prop_assert_eq!(m.insert(id, v), old);
                    }
                    1 => {
                        marks.retain(|&(i, _)| i != id);
                        let old = model.remove(&id);
                        if !model.keys().any(|k| k / PAGE == id / PAGE) {
                            // The page goes with its last entry, and its marks with it.
                            page_tag.remove(&(id / PAGE));
                            marks.retain(|&(i, _)| i / PAGE != id / PAGE);
                        }
                        prop_assert_eq!(m.remove(id), old);
                    }
                    2 => {
                        if model.contains_key(&id) {
                            if page_tag.get(&(id / PAGE)) != Some(&v) {
                                marks.retain(|&(i, _)| i / PAGE != id / PAGE);
                                page_tag.insert(id / PAGE, v);
                            }
                            marks.insert((id, v));
                        }
                        m.mark(id, v);
                    }
                    3 => prop_assert_eq!(m.marked(id, v), marks.contains(&(id, v))),
                    _ => prop_assert_eq!(m.get(id), model.get(&id)),
                }
                prop_assert_eq!(m.len(), model.len());
            }
            for (id, v) in &model {
                prop_assert_eq!(m.get(*id), Some(v));
            }
        }
    }
}
