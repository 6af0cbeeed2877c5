//! [`IdRuns`]: a target's series ids in the order its records list them, kept as runs of
//! consecutive ids.
//!
//! The scrape cache numbers a target's new series one after another as a scrape first lists
//! them, and a steady target lists them in that order every time, so its ids are a handful of
//! runs. The queue keeps one such list per target and endpoint to match each record position
//! by position, and its series lists name their series by them (a position's id, then the
//! WAL's table); as runs it takes 16 bytes a run, where a `Vec<u64>` took 8 bytes a series.

/// Series ids in order, as runs of consecutive ids: `(first, end)`, `end` being the position
/// after the run's last id, so a position finds its run by binary search
/// ([`get`](IdRuns::get)), which a list that names its series by id asks per series.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdRuns {
    runs: Vec<(u64, u64)>,
}

impl IdRuns {
    /// Appends `id`, extending the last run when it follows it.
    pub fn push(&mut self, id: u64) {
        let (start, len) = (self.start_of_last(), self.len() as u64);
        if let Some((first, end)) = self.runs.last_mut()
            && first.checked_add(*end - start) == Some(id)
        {
            *end += 1;
            return;
        }
        self.runs.push((id, len + 1));
    }

    /// Where the last run starts.
    fn start_of_last(&self) -> u64 {
        let n = self.runs.len();
        if n >= 2 { self.runs[n - 2].1 } else { 0 }
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.runs.last().map_or(0, |&(_, end)| end as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many runs (what the list costs).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The id at position `i`.
    pub fn get(&self, i: usize) -> Option<u64> {
        let i = i as u64;
        let r = self.runs.partition_point(|&(_, end)| end <= i);
        let &(first, _) = self.runs.get(r)?;
        let start = if r == 0 { 0 } else { self.runs[r - 1].1 };
        Some(first + (i - start))
    }

    /// The ids in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        // `first + k` for k below the run's length: the run's last id was pushed, so none
        // overflows (`first..first + count` would, for a run ending at u64::MAX).
        let starts = std::iter::once(0).chain(self.runs.iter().map(|&(_, end)| end));
        self.runs
            .iter()
            .zip(starts)
            .flat_map(|(&(first, end), start)| (0..end - start).map(move |k| first + k))
    }

    /// Whether `ids` are these ids, in this order.
    pub fn matches(&self, ids: impl IntoIterator<Item = u64>) -> bool {
        let mut ids = ids.into_iter();
        if let (n, Some(m)) = ids.size_hint()
            && n == m
            && n != self.len()
        {
            return false;
        }
        self.iter().all(|a| ids.next() == Some(a)) && ids.next().is_none()
    }

    /// Gives back spare capacity: lists live as long as their targets.
    pub fn shrink_to_fit(&mut self) {
        self.runs.shrink_to_fit();
    }
}

impl FromIterator<u64> for IdRuns {
    fn from_iter<I: IntoIterator<Item = u64>>(ids: I) -> IdRuns {
        let mut r = IdRuns::default();
        for id in ids {
            r.push(id);
        }
        r.shrink_to_fit();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn consecutive_ids_are_one_run() {
        let r: IdRuns = (100..2600).collect();
        assert_eq!((r.len(), r.runs()), (2500, 1));
        assert!(r.matches(100..2600));
        assert!(!r.matches(100..2599), "one id short");
        assert!(!r.matches((100..2599).chain([2601])), "last id differs");
        assert_eq!((r.get(0), r.get(2499), r.get(2500)), (Some(100), Some(2599), None));
    }

    #[test]
    fn gaps_repeats_and_descents_start_runs() {
        let ids = [5, 6, 7, 9, 9, 3, 4, u64::MAX, 0];
        let r: IdRuns = ids.into_iter().collect();
        assert_eq!(r.iter().collect::<Vec<_>>(), ids);
        assert_eq!(r.runs(), 6);
        assert_eq!((0..ids.len()).map(|i| r.get(i).unwrap()).collect::<Vec<_>>(), ids);
        assert!(IdRuns::default().matches(std::iter::empty()));
    }

    proptest! {
        #[test]
        fn any_ids_read_back_in_order(ids in proptest::collection::vec(0u64..64, 0..200)) {
            let r: IdRuns = ids.iter().copied().collect();
            prop_assert_eq!(r.iter().collect::<Vec<_>>(), ids.clone());
            prop_assert_eq!(r.len(), ids.len());
            prop_assert!(r.matches(ids.iter().copied()));
            for (i, &id) in ids.iter().enumerate() {
                prop_assert_eq!(r.get(i), Some(id));
            }
            prop_assert_eq!(r.get(ids.len()), None);
        }
    }
}
