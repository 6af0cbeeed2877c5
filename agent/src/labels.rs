//! A label builder with exactly the semantics of Prometheus' `labels.Builder`, which relabeling
//! and the honor_labels merge are defined in terms of.
//!
//! It keeps the base set untouched and records deletions and additions separately. That
//! matters for `labelmap`: iteration visits the unmodified base labels in sorted order, then
//! the added or modified ones in the order they were set, so when two sources map to the same
//! name, the later-visited one wins (golden case G-R10).
//!
//! Also here: [`put_key`], labels as the bytes of a map key.

use ferry_protocol::{Label, LabelSet};

/// Appends `labels` to `out` as a key: each name and each value followed by 0xff, which never
/// occurs in UTF-8, so different label lists give different bytes.
pub fn put_key<'a>(out: &mut Vec<u8>, labels: impl IntoIterator<Item = &'a Label>) {
    for l in labels {
        out.extend_from_slice(l.name.as_bytes());
        out.push(0xff);
        out.extend_from_slice(l.value.as_bytes());
        out.push(0xff);
    }
}

#[derive(Debug, Clone, Default)]
pub struct Builder {
    base: Vec<Label>,
    del: Vec<String>,
    add: Vec<Label>,
}

impl Builder {
    /// Starts from `base`, which must be sorted by name without duplicates.
    pub fn new(base: Vec<Label>) -> Builder {
        Builder { base, del: Vec::new(), add: Vec::new() }
    }

    pub fn from_set(set: &LabelSet) -> Builder {
        Builder::new(set.as_slice().to_vec())
    }

    /// Starts over from a new base, keeping allocations.
    pub fn reset(&mut self, base: &[Label]) {
        self.base.clear();
        self.base.extend_from_slice(base);
        self.del.clear();
        self.add.clear();
    }

    /// The current value of `name`; absent reads as `""`.
    pub fn get(&self, name: &str) -> &str {
        // Del removes from `add` but Set does not remove from `del`, so look at `add` first.
        if let Some(a) = self.add.iter().find(|a| a.name == name) {
            return &a.value;
        }
        if self.del.iter().any(|d| d == name) {
            return "";
        }
        self.base.binary_search_by(|l| l.name.as_str().cmp(name)).map_or("", |i| self.base[i].value.as_str())
    }

    /// True if `name` is present, even with an empty value in the base (Prometheus `Has`).
    pub fn has(&self, name: &str) -> bool {
        if self.add.iter().any(|a| a.name == name) {
            return true;
        }
        !self.del.iter().any(|d| d == name) && self.base.iter().any(|l| l.name == name)
    }

    /// Sets `name`; an empty value deletes it.
    pub fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.del(name);
            return;
        }
        match self.add.iter_mut().find(|a| a.name == name) {
            Some(a) => value.clone_into(&mut a.value),
            None => self.add.push(Label::new(name, value)),
        }
    }

    pub fn del(&mut self, name: &str) {
        self.add.retain(|a| a.name != name);
        if !self.del.iter().any(|d| d == name) {
            self.del.push(name.to_owned());
        }
    }

    /// A snapshot of the current labels in Prometheus' visiting order: unmodified base labels
    /// (sorted), then added or modified ones in the order they were set.
    pub fn snapshot(&self) -> Vec<Label> {
        let mut out: Vec<Label> = self
            .base
            .iter()
            .filter(|l| !self.del.contains(&l.name) && !self.add.iter().any(|a| a.name == l.name))
            .cloned()
            .collect();
        out.extend(self.add.iter().cloned());
        out
    }

    /// Deletes every label for which `drop` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        for l in self.snapshot() {
            if !keep(&l.name) {
                self.del(&l.name);
            }
        }
    }

    /// The result: sorted, empty values gone.
    pub fn labels(&self) -> LabelSet {
        LabelSet::from_labels(self.snapshot()).expect("builder keeps names unique and non-empty")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_del_and_visiting_order() {
        let base = LabelSet::from_pairs([("a", "1"), ("b", "2"), ("c", "3")]).unwrap();
        let mut b = Builder::from_set(&base);
        b.set("z", "26");
        b.set("b", "two");
        b.del("c");
        assert_eq!(b.get("b"), "two");
        assert_eq!(b.get("c"), "");
        assert!(!b.has("c"));
        let order: Vec<_> = b.snapshot().into_iter().map(|l| l.name).collect();
        assert_eq!(order, ["a", "z", "b"]);
        b.set("c", "back");
        assert_eq!(b.get("c"), "back");
        b.set("a", "");
        assert_eq!(b.labels().to_string(), r#"{b="two", c="back", z="26"}"#);
    }
}
