//! [`SeriesLabels`]: a series' final labels in one shared allocation, the form in which the
//! series cache, the WAL's label index and the remote-write queue hold every active series.
//!
//! A `LabelSet` costs two heap strings per label plus its vector: at ten labels that is about
//! 600 bytes of headers and allocator overhead on top of the label text, for every series the
//! agent tracks. Here the whole set is one `Arc<str>`: per label, the name's and the value's
//! lengths, then the name and the value. Lengths are written with 7-bit bytes only (see
//! [`put_len`]), so the buffer is valid UTF-8 as a whole and every name and value is a plain
//! `&str` slice of it, with no `unsafe` and no re-validation on read. Clones share the
//! allocation. The encoding is canonical, so equal sets have equal buffers (`Eq`, `Hash`).

use std::fmt;
use std::sync::Arc;

use ferry_protocol::{LabelSet, METRIC_NAME};

/// A sorted, duplicate-free set of non-empty labels, immutable and cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SeriesLabels(Arc<str>);

/// One label of a [`SeriesLabels`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRef<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// Lengths below 64 take one byte; longer ones take a byte `0x40 | n` and then `n` bytes of
/// seven bits each, most significant first. Every byte is below 0x80, so it is ASCII.
fn put_len(out: &mut String, len: usize) {
    if len < 0x40 {
        out.push(len as u8 as char);
        return;
    }
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(7);
    out.push((0x40 | digits as u8) as char);
    for d in (0..digits).rev() {
        out.push(((len >> (7 * d)) & 0x7f) as u8 as char);
    }
}

/// Reads a length written by [`put_len`] at `*pos`.
fn get_len(b: &[u8], pos: &mut usize) -> usize {
    let first = b[*pos] as usize;
    *pos += 1;
    if first < 0x40 {
        return first;
    }
    let mut len = 0;
    for _ in 0..first & 0x3f {
        len = (len << 7) | b[*pos] as usize;
        *pos += 1;
    }
    len
}

impl SeriesLabels {
    /// Encodes labels given sorted by name, without duplicates or empty values (a
    /// `LabelSet`'s invariants).
    pub fn from_sorted<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> SeriesLabels {
        let mut s = String::new();
        for (name, value) in labels {
            debug_assert!(!name.is_empty() && !value.is_empty());
            put_len(&mut s, name.len());
            put_len(&mut s, value.len());
            s.push_str(name);
            s.push_str(value);
        }
        SeriesLabels(Arc::from(s))
    }

    pub fn from_set(ls: &LabelSet) -> SeriesLabels {
        SeriesLabels::from_sorted(ls.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }

    /// The labels in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { s: &self.0, pos: 0 }
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|l| l.name == name).map(|l| l.value)
    }

    /// The value of `__name__`, if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn to_label_set(&self) -> LabelSet {
        LabelSet::from_pairs(self.iter().map(|l| (l.name, l.value))).expect("a SeriesLabels is a valid set")
    }

    /// Whether both are clones of one allocation (not merely equal).
    pub fn shares(&self, other: &SeriesLabels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Bytes of the shared allocation (the encoded labels; the `Arc` counts come on top).
    pub fn encoded_len(&self) -> usize {
        self.0.len()
    }
}

impl From<&LabelSet> for SeriesLabels {
    fn from(ls: &LabelSet) -> SeriesLabels {
        SeriesLabels::from_set(ls)
    }
}

/// Iterator over a [`SeriesLabels`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = LabelRef<'a>;

    fn next(&mut self) -> Option<LabelRef<'a>> {
        if self.pos >= self.s.len() {
            return None;
        }
        let b = self.s.as_bytes();
        let name_len = get_len(b, &mut self.pos);
        let value_len = get_len(b, &mut self.pos);
        let name = &self.s[self.pos..self.pos + name_len];
        let value = &self.s[self.pos + name_len..self.pos + name_len + value_len];
        self.pos += name_len + value_len;
        Some(LabelRef { name, value })
    }
}

impl<'a> IntoIterator for &'a SeriesLabels {
    type Item = LabelRef<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Prometheus' notation, as `LabelSet` prints it: `{__name__="up", job="a\"b"}`.
impl fmt::Display for SeriesLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for SeriesLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_prints_like_label_set() {
        let ls = LabelSet::from_pairs([("__name__", "up"), ("job", "a\"b"), ("z", "\u{e9}")]).unwrap();
        let s = SeriesLabels::from_set(&ls);
        assert_eq!(s.to_label_set(), ls);
        assert_eq!(s.to_string(), ls.to_string());
        assert_eq!(s.len(), 3);
        assert_eq!(s.metric_name(), Some("up"));
        assert_eq!(s.get("z"), Some("\u{e9}"));
        assert_eq!(s.get("y"), None);
        assert!(SeriesLabels::from_set(&LabelSet::new()).is_empty());
    }

    #[test]
    fn lengths_at_every_encoding_boundary() {
        for len in [0x3f, 0x40, 0x7f, 0x80, 0x3fff, 0x4000, 1 << 21, (1 << 21) + 3] {
            let mut s = String::new();
            put_len(&mut s, len);
            assert!(s.is_ascii(), "{len}");
            let mut pos = 0;
            assert_eq!(get_len(s.as_bytes(), &mut pos), len);
            assert_eq!(pos, s.len());
        }
        let long = "v".repeat(70_000);
        let ls = LabelSet::from_pairs([("a", long.as_str()), ("b", "1")]).unwrap();
        assert_eq!(SeriesLabels::from_set(&ls).to_label_set(), ls);
    }

    proptest! {
        #[test]
        fn any_label_set_round_trips(pairs in proptest::collection::btree_map("\\PC{1,80}", "\\PC{1,200}", 0..12)) {
            let ls = LabelSet::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))).unwrap();
            let s = SeriesLabels::from_set(&ls);
            prop_assert_eq!(s.to_label_set(), ls.clone());
            prop_assert_eq!(s.len(), ls.len());
            prop_assert_eq!(s.clone(), SeriesLabels::from_set(&ls));
        }
    }
}
