//! [`IdMap`]: a map keyed by series id, made for how the agent hands ids out: one counter
//! for the whole process, so the ids in use lie in dense runs.
//!
//! Slots live in pages of [`PAGE`] consecutive ids, and a page goes when its last entry
//! does. A hash table keyed by id paid a slot of key plus value at a load between 44% and
//! 87%: at 500k series, 34 MB for the WAL's label table, where these pages take 12 MB. The
//! cost is a page that a few long-lived series keep alive among ids that churn freed, at
//! most one page per such series.

use hashbrown::HashMap;

/// Ids per page: small enough that a stray survivor pins little, large enough that the page
/// table stays a small fraction of the slots.
pub const PAGE: u64 = 256;

#[derive(Debug)]
struct Page<V> {
    slots: Box<[Option<V>]>,
    used: usize,
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

    pub fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        self.pages.get_mut(&(id / PAGE))?.slots[(id % PAGE) as usize].as_mut()
    }

    /// Sets `id` to `v`, returning what it held.
    pub fn insert(&mut self, id: u64, v: V) -> Option<V> {
        let page = self
            .pages
            .entry(id / PAGE)
            .or_insert_with(|| Page { slots: (0..PAGE).map(|_| None).collect(), used: 0 });
        let old = page.slots[(id % PAGE) as usize].replace(v);
        if old.is_none() {
            page.used += 1;
            self.len += 1;
        }
        old
    }

    /// Keeps the entries `keep` says to, freeing pages left empty.
    pub fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        let mut len = 0;
        self.pages.retain(|&page_no, page| {
            for (i, slot) in page.slots.iter_mut().enumerate() {
                if let Some(v) = slot
                    && !keep(page_no * PAGE + i as u64, v)
                {
                    *slot = None;
                    page.used -= 1;
                }
            }
            len += page.used;
            page.used > 0
        });
        self.len = len;
    }

    /// Pages held (for tests of what churn leaves behind).
    #[cfg(test)]
    fn pages(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
        *m.get_mut(6).unwrap() += 1;
        assert_eq!(m.get(6), Some(&61));
        assert_eq!(m.get(3 * PAGE), None);
        // Churn frees the first page whole; one survivor keeps the second.
        m.retain(|id, _| id >= 2 * PAGE - 1);
        assert_eq!((m.len(), m.pages()), (PAGE as usize + 1, 2));
        assert_eq!(m.get(0), None);
        assert_eq!(m.get(2 * PAGE - 1), Some(&((2 * PAGE - 1) * 10)));
        m.retain(|_, _| false);
        assert!(m.is_empty());
        assert_eq!(m.pages(), 0);
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u8..3, 0u64..2_000, any::<u32>()), 0..300)) {
            let mut m = IdMap::new();
            let mut model = BTreeMap::new();
            for (op, id, v) in ops {
                match op {
                    0 => prop_assert_eq!(m.insert(id, v), model.insert(id, v)),
                    1 => {
                        // Drop the ids in a residue class, as an eviction would drop some.
                        let r = id % 7;
                        m.retain(|k, _| k % 7 != r);
                        model.retain(|k, _| k % 7 != r);
                    }
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
