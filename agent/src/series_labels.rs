//! [`SeriesLabels`]: a series' final labels, the form in which the series cache, the WAL's
//! label index and the remote-write queue hold every active series, and the process-wide
//! interner their labels are made of.
//!
//! Series share most of their labels: every series of a container carries the same `pod`,
//! `namespace`, `image` and `id`, every series of a family the same `__name__`. So a label
//! (name and value together) is interned once per process, and a series is a shared slice of
//! pointers to its labels: 8 bytes per label and a small header, where the label text
//! written out per series took about 250 bytes for a typical cAdvisor series. Clones share
//! the slice.
//!
//! Neighbouring series share more than labels: a histogram's buckets differ only in `le`,
//! a pod's phase series only in `phase`. So a set may be *based* on another (see [`Based`]):
//! it holds only the labels it does not share, and bit masks saying where they go. A
//! 9-label bucket series takes a 32-byte block instead of 80.
//!
//! The interner forgets a label when no series holds it any more: each time it has doubled
//! since the last sweep, it drops the labels only it still points to. A dropped label that
//! comes back is interned again, so sweeping never changes what a set reads as.
//! Equality and hashing go by text, so they depend neither on the interning nor on the shape.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{LazyLock, Mutex};

use arcstr::ArcStr;
use ferry_protocol::{LabelSet, METRIC_NAME};

use crate::packed_value::{self, Value};
use crate::thin_block::ThinBlock;
use hashbrown::HashTable;

/// A sorted, duplicate-free set of non-empty labels, immutable and cheap to clone.
///
/// A thin pointer: the slice's length lives in the allocation ([`ThinBlock`]), so a handle
/// is 8 bytes, where `Arc<[_]>` carries the length beside the pointer in 16. Every active
/// series has a handle in the WAL's table, and one in each endpoint's queue list whose
/// labels differ from the WAL's.
#[derive(Clone)]
pub struct SeriesLabels(ThinBlock<Based, Pair>);

/// How a based set's labels are made of the labels it holds (its *own*) and those of its
/// base; a whole set has none of this and holds all its labels.
///
/// A based set holds the labels its base lacks or has with another value; going through its
/// labels in name order, bit `i` of `own_at` says whether label `i` is the next own one or
/// the next of the base's that it takes (bit `j` of `take`: the base's label `j` is in this
/// set). A base is always whole, so reading a label is never more than one step away, and
/// both masks fit sets of up to [`MAX_BASED`] labels.
///
/// 16 bytes in a based set's block only: a whole set's block is 8 bytes of header and a
/// pointer per label (80 bytes at 9 labels), a based one with one label of its own 32, with
/// two 40.
///
/// A based set keeps its base alive. When a group's first series goes and the others stay,
/// that is one set no series uses per group, until the group goes too.
#[derive(Clone)]
struct Based {
    base: SeriesLabels,
    own_at: u32,
    take: u32,
}

/// The most labels a based set, or its base, may have: the masks' width.
const MAX_BASED: usize = 32;

/// A set is based on another only when it holds at most two of its labels itself, and at
/// most half: beyond that the block saved is small, every read pays the masks, and a set
/// built on an unrelated neighbour (two containers' series, say) could not be the base of
/// its own group (see `Near` in the scrape path), since a base must be whole.
fn worth_basing(own: usize, total: usize) -> bool {
    own <= 2 && 2 * own <= total
}

/// One interned label in one allocation: `arcstr`'s thin `Arc` holds the count, the length
/// and the text together, where an `Arc` of a struct with a `Box<str>` took two allocations
/// (a 48-byte block, then the text) and, for a reader, two dependent loads. The RW2 encoder
/// reads a label's text the first time a request uses it, a cache miss at 500k series, so the
/// second load was a second miss.
///
/// The text is a prefix (see [`prefix_char`]) saying the name's length and whether the value
/// is packed ([`packed_value`]), then the name, then the value. A name under 64 bytes, which
/// is every name seen in practice, costs one byte. `__name__`'s values are never packed, so
/// [`SeriesLabels::metric_name`] can lend its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pair(ArcStr);

/// Prefix codes a `char` cannot hold (names of half a million bytes and more) are written in
/// decimal after this marker, with a `:` after the digits.
const LONG_NAME: char = char::MAX;

/// The `char` that stands for a prefix code (twice the name's length, plus one when the value
/// is packed), or `None` when the code needs the long form. Codes from 0xD800 on are shifted
/// past the surrogates, which are not `char`s.
fn prefix_char(code: usize) -> Option<char> {
    let code = if code < 0xD800 { code } else { code + 0x800 };
    u32::try_from(code).ok().and_then(char::from_u32).filter(|&c| c != LONG_NAME)
}

impl Pair {
    fn new(name: &str, value: Value<'_>) -> Pair {
        let (repr, packed) = match value {
            Value::Plain(s) => (s, 0),
            Value::Packed(s) => (s, 1),
        };
        let code = 2 * name.len() + packed;
        let mut text = String::with_capacity(1 + name.len() + repr.len());
        match prefix_char(code) {
            Some(c) => text.push(c),
            None => {
                text.push(LONG_NAME);
                text.push_str(&code.to_string());
                text.push(':');
            }
        }
        text.push_str(name);
        text.push_str(repr);
        Pair(ArcStr::from(text))
    }

    /// The name and the value.
    fn split(&self) -> (&str, Value<'_>) {
        let text: &str = &self.0;
        let first = text.as_bytes()[0];
        let (start, code) = if first < 0x80 { (1, first as usize) } else { Pair::long_prefix(text) };
        let (name, repr) = text[start..].split_at(code / 2);
        (name, if code & 1 == 0 { Value::Plain(repr) } else { Value::Packed(repr) })
    }

    /// Where the name starts and the prefix code, for a prefix of more than one byte.
    #[cold]
    fn long_prefix(text: &str) -> (usize, usize) {
        let c = text.chars().next().expect("a label's text starts with its prefix code");
        let start = c.len_utf8();
        if c != LONG_NAME {
            let code = c as usize;
            return (start, if code < 0xD800 { code } else { code - 0x800 });
        }
        let digits = text[start..].find(':').expect("a long prefix code ends with ':'");
        let code = text[start..start + digits].parse().expect("a long prefix code is decimal");
        (start + digits + 1, code)
    }

    /// The address that identifies this label while it is held (see [`LabelKey::id`]).
    fn address(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// How many holders share it; the interner's table is one.
    fn holders(&self) -> usize {
        ArcStr::strong_count(&self.0).unwrap_or(usize::MAX)
    }
}

/// One label of a [`SeriesLabels`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRef<'a> {
    pub name: &'a str,
    pub value: Value<'a>,
}

/// One label of a [`SeriesLabels`] by identity. Two keys with the same [`id`](Self::id)
/// are the same label for as long as either is borrowed (the id is its address, and the set
/// holds it). The interner keeps one copy of each label in use, so equal labels usually have
/// one id, but the text is what decides equality.
#[derive(Debug, Clone, Copy)]
pub struct LabelKey<'a>(&'a Pair);

impl<'a> LabelKey<'a> {
    pub fn id(self) -> usize {
        self.0.address()
    }

    pub fn label(self) -> LabelRef<'a> {
        let (name, value) = self.0.split();
        LabelRef { name, value }
    }
}

/// The process' labels. The lock is taken once per label of a *new* series (the series cache
/// spares known ones), so it is not on the per-sample path.
struct Interner {
    table: HashTable<Pair>,
    hasher: hashbrown::DefaultHashBuilder,
    /// The size at which the next sweep runs.
    sweep_at: usize,
    /// A value being packed.
    scratch: String,
}

/// Sweeping never leaves the threshold below this, so small agents do not sweep often.
const MIN_SWEEP_AT: usize = 4096;

static INTERNER: LazyLock<Mutex<Interner>> = LazyLock::new(|| {
    Mutex::new(Interner {
        table: HashTable::new(),
        hasher: Default::default(),
        sweep_at: MIN_SWEEP_AT,
        scratch: String::new(),
    })
});

impl Interner {
    fn intern(&mut self, name: &str, value: &str) -> Pair {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let value = if name != METRIC_NAME && packed_value::pack(value, &mut scratch) {
            Value::Packed(&scratch)
        } else {
            Value::Plain(value)
        };
        let pair = self.intern_value(name, value);
        self.scratch = scratch;
        pair
    }

    fn intern_value(&mut self, name: &str, value: Value<'_>) -> Pair {
        let hash = self.hasher.hash_one((name, value));
        let found = self.table.find(hash, |p| p.split() == (name, value));
        if let Some(p) = found {
            return p.clone();
        }
        if self.table.len() >= self.sweep_at {
            self.sweep();
        }
        let pair = Pair::new(name, value);
        let hasher = &self.hasher;
        self.table.insert_unique(hash, pair.clone(), |p| hasher.hash_one(p.split()));
        pair
    }

    /// Drops the labels no series holds. Nothing else can reach a label whose only holder
    /// is the table, and the table is locked, so a count of one cannot grow meanwhile.
    fn sweep(&mut self) {
        self.table.retain(|p| p.holders() > 1);
        self.table.shrink_to_fit(|p| self.hasher.hash_one(p.split()));
        self.sweep_at = (2 * self.table.len()).max(MIN_SWEEP_AT);
    }
}

impl SeriesLabels {
    /// Builds a set from labels given sorted by name, without duplicates or empty values (a
    /// `LabelSet`'s invariants).
    pub fn from_sorted<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> SeriesLabels {
        SeriesLabels::from_sorted_near(labels, None)
    }

    /// Like [`from_sorted`](Self::from_sorted), based on the base of the first set of `near`
    /// (or on that set, when it is whole) that shares enough labels with it. Who builds many
    /// series in a row passes the one built before: neighbours in an exposition are a
    /// family's series.
    pub fn from_sorted_near<'a, 'b>(
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        near: impl IntoIterator<Item = &'b SeriesLabels>,
    ) -> SeriesLabels {
        let pairs: Vec<Pair> = {
            let mut interner = INTERNER.lock().unwrap_or_else(|e| e.into_inner());
            labels
                .into_iter()
                .map(|(name, value)| {
                    debug_assert!(!name.is_empty() && !value.is_empty());
                    interner.intern(name, value)
                })
                .collect()
        };
        for base in near.into_iter().map(SeriesLabels::root) {
            if let Some(based) = SeriesLabels::based_on(base, &pairs, worth_basing) {
                return based;
            }
        }
        SeriesLabels(ThinBlock::new(None, pairs))
    }

    /// `pairs` as a set based on `base` (a whole set), or `None` when the masks cannot say
    /// it or `worth` (given the own and the total count) says no.
    fn based_on(
        base: &SeriesLabels,
        pairs: &[Pair],
        worth: fn(usize, usize) -> bool,
    ) -> Option<SeriesLabels> {
        let theirs = base.0.items();
        if pairs.len() > MAX_BASED || theirs.len() > MAX_BASED {
            return None;
        }
        // Both are sorted by name: walk them together. A label the base holds is the same
        // interned `Pair`, since the base keeps it in the interner (the text decides anyway).
        let (mut own_at, mut take, mut own) = (0u32, 0u32, Vec::new());
        let mut j = 0;
        for (i, p) in pairs.iter().enumerate() {
            let (name, _) = p.split();
            while j < theirs.len() && theirs[j].split().0 < name {
                j += 1;
            }
            if j < theirs.len() && theirs[j] == *p {
                take |= 1 << j;
                j += 1;
                continue;
            }
            if j < theirs.len() && theirs[j].split().0 == name {
                j += 1;
            }
            own_at |= 1 << i;
            own.push(p.clone());
        }
        worth(own.len(), pairs.len())
            .then(|| SeriesLabels(ThinBlock::new(Some(Based { base: base.clone(), own_at, take }), own)))
    }

    pub fn from_set(ls: &LabelSet) -> SeriesLabels {
        SeriesLabels::from_set_near(ls, None)
    }

    /// [`from_sorted_near`](Self::from_sorted_near) for a `LabelSet`.
    pub fn from_set_near<'b>(
        ls: &LabelSet,
        near: impl IntoIterator<Item = &'b SeriesLabels>,
    ) -> SeriesLabels {
        SeriesLabels::from_sorted_near(ls.iter().map(|l| (l.name.as_str(), l.value.as_str())), near)
    }

    /// The whole set this one is based on, or itself when it is whole.
    fn root(&self) -> &SeriesLabels {
        self.0.extra().map_or(self, |b| &b.base)
    }

    /// The labels in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { keys: self.keys() }
    }

    /// The labels in name order as [`LabelKey`]s: who encodes many series can recognise a
    /// label it has seen without reading its text.
    pub fn keys(&self) -> Keys<'_> {
        let own = self.0.items().iter();
        match self.0.extra() {
            None => Keys { own, base: None, own_at: 0, take: 0 },
            Some(b) => Keys { own, base: Some(b.base.0.items()), own_at: b.own_at, take: b.take },
        }
    }

    /// [`keys`](Self::keys), with those of `extra` whose names this set lacks merged in, in
    /// name order: an endpoint's external labels joining a series' as it is encoded (a label
    /// the series has keeps its value, as in Prometheus).
    pub fn keys_with<'a>(&'a self, extra: Option<&'a SeriesLabels>) -> KeysWith<'a> {
        let none = Keys { own: [].iter(), base: None, own_at: 0, take: 0 };
        KeysWith { own: self.keys().peekable(), extra: extra.map_or(none, SeriesLabels::keys).peekable() }
    }

    pub fn len(&self) -> usize {
        self.0.items().len() + self.0.extra().map_or(0, |b| b.take.count_ones() as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the set holds only some of its labels, the rest being its base's.
    pub fn is_based(&self) -> bool {
        self.0.extra().is_some()
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<Value<'_>> {
        self.iter().find(|l| l.name == name).map(|l| l.value)
    }

    /// The value of `__name__`, if present (never packed, see [`Pair`]).
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME).and_then(Value::as_plain)
    }

    pub fn to_label_set(&self) -> LabelSet {
        LabelSet::from_pairs(self.iter().map(|l| (l.name, l.value.text())))
            .expect("a SeriesLabels is a valid set")
    }

    /// Whether both are clones of one allocation (not merely equal).
    pub fn shares(&self, other: &SeriesLabels) -> bool {
        self.0.ptr_eq(&other.0)
    }

    /// The bytes this set's own block asks of the allocator: the count and length, a based
    /// set's [`Based`], and a pointer per label it holds. Its labels' blocks are not counted
    /// (they are shared, see [`census`]), nor its base's.
    pub fn block_bytes(&self) -> usize {
        self.0.block_size()
    }
}

/// The interner's size, for memory accounting (`cargo bench -p ferry-agent --bench scrape --
/// --census DIR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub labels: usize,
    /// Their text as held (name prefix, name, value packed or not).
    pub text_bytes: usize,
    /// The table's buckets and control bytes.
    pub table_bytes: usize,
}

/// Counts the interned labels, calling `block` with the bytes each one's block asks of the
/// allocator (two words of count and length, then the text).
pub fn census(mut block: impl FnMut(usize)) -> Census {
    let interner = INTERNER.lock().unwrap_or_else(|e| e.into_inner());
    let mut text_bytes = 0;
    for p in interner.table.iter() {
        text_bytes += p.0.len();
        block(2 * std::mem::size_of::<usize>() + p.0.len());
    }
    // hashbrown keeps its load at most 7/8 in a power of two of buckets, a control byte each.
    let buckets = (interner.table.capacity() * 8).div_ceil(7).next_power_of_two();
    Census {
        labels: interner.table.len(),
        text_bytes,
        table_bytes: buckets * (std::mem::size_of::<Pair>() + 1),
    }
}

/// By text, so equal sets are equal whatever their shape and however their labels were
/// interned.
impl PartialEq for SeriesLabels {
    fn eq(&self, other: &SeriesLabels) -> bool {
        self.shares(other)
            || (self.len() == other.len()
                && self.keys().zip(other.keys()).all(|(a, b)| a.id() == b.id() || a.label() == b.label()))
    }
}

impl Eq for SeriesLabels {}

impl Hash for SeriesLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for l in self.iter() {
            (l.name, l.value).hash(state);
        }
    }
}

impl From<&LabelSet> for SeriesLabels {
    fn from(ls: &LabelSet) -> SeriesLabels {
        SeriesLabels::from_set(ls)
    }
}

/// The labels of a [`SeriesLabels`] as [`LabelKey`]s, in name order.
#[derive(Debug, Clone)]
pub struct Keys<'a> {
    own: std::slice::Iter<'a, Pair>,
    /// The base's labels, for a based set (see [`Based`]).
    base: Option<&'a [Pair]>,
    /// The masks' bits still to go: the next label is own while `own_at`'s lowest bit is
    /// set, else the base's at `take`'s lowest set bit; both empty at the end.
    own_at: u32,
    take: u32,
}

impl<'a> Iterator for Keys<'a> {
    type Item = LabelKey<'a>;

    #[inline]
    fn next(&mut self) -> Option<LabelKey<'a>> {
        let Some(base) = self.base else {
            return self.own.next().map(LabelKey);
        };
        let own = self.own_at & 1 != 0;
        self.own_at >>= 1;
        if own {
            return self.own.next().map(LabelKey);
        }
        if self.take == 0 {
            return None;
        }
        let j = self.take.trailing_zeros() as usize;
        self.take &= self.take - 1;
        base.get(j).map(LabelKey)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.own.len() + self.take.count_ones() as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Keys<'_> {}

/// A set's labels and, merged in name order, those of another set whose names it lacks (see
/// [`SeriesLabels::keys_with`]).
#[derive(Debug, Clone)]
pub struct KeysWith<'a> {
    own: std::iter::Peekable<Keys<'a>>,
    extra: std::iter::Peekable<Keys<'a>>,
}

impl<'a> Iterator for KeysWith<'a> {
    type Item = LabelKey<'a>;

    #[inline]
    fn next(&mut self) -> Option<LabelKey<'a>> {
        let Some(extra) = self.extra.peek() else {
            return self.own.next();
        };
        let Some(own) = self.own.peek() else {
            return self.extra.next();
        };
        match own.label().name.cmp(extra.label().name) {
            std::cmp::Ordering::Less => self.own.next(),
            std::cmp::Ordering::Greater => self.extra.next(),
            std::cmp::Ordering::Equal => {
                // The set's own value wins.
                self.extra.next();
                self.own.next()
            }
        }
    }
}

/// Iterator over a [`SeriesLabels`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    keys: Keys<'a>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = LabelRef<'a>;

    fn next(&mut self) -> Option<LabelRef<'a>> {
        self.keys.next().map(LabelKey::label)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.keys.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

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
        assert_eq!(s.get("z"), Some(Value::Plain("\u{e9}")));
        assert_eq!(s.get("y"), None);
        assert!(SeriesLabels::from_set(&LabelSet::new()).is_empty());
    }

    #[test]
    fn hex_values_are_held_packed_and_read_as_text() {
        let cid = "5ffcd395ce3ae758b750ed2c9da60ae950ed56ad2f1dd0d529d4dc476edbaa9e";
        let id = format!("/kubepods/burstable/pod3b837302-514b-4932-a140-a780c4438532/{cid}");
        // A metric name is never packed, so `metric_name` can lend it.
        let name = "deadbeefcafe0123456789_total";
        let ls = set(&[("__name__", name), ("id", &id), ("name", cid), ("pod", "catalog-hbbghttwh7-292xk")]);
        let s = SeriesLabels::from_set(&ls);
        let held: Vec<_> =
            s.0.items().iter().map(|p| (p.0.len(), matches!(p.split().1, Value::Packed(_)))).collect();
        assert_eq!(
            held,
            [(1 + 8 + name.len(), false), (1 + 2 + 84, true), (1 + 4 + 38, true), (1 + 3 + 24, false)]
        );
        assert_eq!(s.metric_name(), Some(name));
        assert_eq!(s.to_label_set(), ls);
        assert_eq!(s.to_string(), ls.to_string());
        assert!(s.get("name").unwrap() == cid);
        // Equal by text, and hashed alike, however they were built.
        let near = SeriesLabels::from_set_near(&ls, Some(&s));
        assert!(near.shares(&s) || near == s);
        assert_eq!(SeriesLabels::from_set(&ls), s);
        assert_eq!(hash_of(&SeriesLabels::from_set(&ls)), hash_of(&s));
        let other = set(&[("__name__", name), ("id", &id), ("name", &cid.replace('5', "6")), ("pod", "p")]);
        assert_ne!(SeriesLabels::from_set(&other), s);
    }

    #[test]
    fn a_handle_is_one_pointer() {
        // Held once per series in the WAL's table and in every queue list (issue #9).
        assert_eq!(std::mem::size_of::<SeriesLabels>(), 8);
        assert_eq!(std::mem::size_of::<Option<SeriesLabels>>(), 8);
    }

    #[test]
    fn names_of_every_length_class_round_trip() {
        // One-byte length prefix, multi-byte chars on both sides of the surrogate gap, and
        // the decimal form past the last char; values that start with digits and ':' too.
        for len in [1, 127, 128, 0xD7FF, 0xD800, 0x10F7FE, 0x10F7FF, 0x110000] {
            let name = "n".repeat(len);
            for value in ["v", "12:x", "\u{e9}"] {
                let ls = LabelSet::from_pairs([(name.as_str(), value), ("z", "1")]).unwrap();
                let s = SeriesLabels::from_set(&ls);
                assert_eq!(s.to_label_set(), ls, "name of {len} bytes");
                assert!(s.get(&name).unwrap() == value);
            }
        }
        assert_eq!(prefix_char(0x10F7FF), None);
        assert_eq!(prefix_char(0xD800), Some('\u{E000}'));
    }

    #[test]
    fn long_values_round_trip() {
        let long = "v".repeat(70_000);
        let ls = LabelSet::from_pairs([("a", long.as_str()), ("b", "1")]).unwrap();
        assert_eq!(SeriesLabels::from_set(&ls).to_label_set(), ls);
    }

    /// Whether the interner holds the label, after a sweep when `sweep` is set.
    fn interned(name: &str, value: &str, sweep: bool) -> bool {
        let mut i = INTERNER.lock().unwrap();
        if sweep {
            i.sweep();
        }
        let hash = i.hasher.hash_one((name, Value::Plain(value)));
        i.table.find(hash, |p| p.split() == (name, Value::Plain(value))).is_some()
    }

    #[test]
    fn sets_share_their_labels_and_unused_labels_are_forgotten() {
        // Names no other test uses: the interner is the whole process'.
        let a = SeriesLabels::from_sorted([("__name__", "intern_test_a"), ("pod", "intern-test-pod")]);
        let b = SeriesLabels::from_sorted([("__name__", "intern_test_b"), ("pod", "intern-test-pod")]);
        assert_eq!(a.0.items()[1].address(), b.0.items()[1].address(), "one pod label for both series");
        assert!(!a.shares(&b));
        let a2 = SeriesLabels::from_sorted([("__name__", "intern_test_a"), ("pod", "intern-test-pod")]);
        assert_eq!(a, a2);
        assert!(!a.shares(&a2), "equal sets built apart are two slices of the same labels");
        drop((a, a2));
        assert!(!interned("__name__", "intern_test_a", true), "no series holds it any more");
        assert!(interned("pod", "intern-test-pod", true), "b still holds it");
        assert!(b.get("pod").unwrap() == "intern-test-pod");
        drop(b);
        assert!(!interned("pod", "intern-test-pod", true));
        // Interned again when it returns, and reads the same.
        let c = SeriesLabels::from_sorted([("pod", "intern-test-pod")]);
        assert_eq!(c.to_string(), r#"{pod="intern-test-pod"}"#);
    }

    #[test]
    fn sweeps_keep_pace_with_growth() {
        let gone: Vec<SeriesLabels> =
            (0..MIN_SWEEP_AT).map(|i| SeriesLabels::from_sorted([("sweep_test", &*i.to_string())])).collect();
        drop(gone);
        // The next sweep is due by the time the table has doubled since the last one, so
        // interning as many labels as it holds now must run one (other tests only add).
        let now = INTERNER.lock().unwrap().table.len();
        let kept: Vec<SeriesLabels> =
            (0..now + 1).map(|i| SeriesLabels::from_sorted([("sweep_test_kept", &*i.to_string())])).collect();
        for i in [0, 1, MIN_SWEEP_AT / 2, MIN_SWEEP_AT - 1] {
            assert!(!interned("sweep_test", &i.to_string(), false), "{i} outlived the sweep");
        }
        assert!(kept.iter().enumerate().all(|(i, s)| s.get("sweep_test_kept").unwrap() == *i.to_string()));
        assert!(interned("sweep_test_kept", "0", true), "a held label survives sweeps");
    }

    fn hash_of(s: &SeriesLabels) -> u64 {
        // A fixed hasher: a `RandomState` would differ from call to call.
        std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(s)
    }

    fn set(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn a_histograms_buckets_hold_only_their_le() {
        let labels = |name: &str, le: Option<&str>| {
            let mut p = vec![("__name__", name), ("job", "api"), ("method", "GET"), ("pod", "p-1")];
            p.extend(le.map(|le| ("le", le)));
            set(&p)
        };
        let first = SeriesLabels::from_set(&labels("h_bucket", Some("0.1")));
        let second = SeriesLabels::from_set_near(&labels("h_bucket", Some("0.5")), Some(&first));
        let third = SeriesLabels::from_set_near(&labels("h_bucket", Some("+Inf")), Some(&second));
        // `_sum` has another name and no `le`: one label of its own, one of the base's left out.
        let sum = SeriesLabels::from_set_near(&labels("h_sum", None), Some(&third));
        for (s, le) in [(&second, Some("0.5")), (&third, Some("+Inf")), (&sum, None)] {
            assert!(s.is_based(), "{s}");
            assert_eq!(s.0.items().len(), 1, "{s} holds one label of its own");
            assert!(s.root().shares(&first), "a base is always whole: {s}");
            let whole = SeriesLabels::from_set(&s.to_label_set());
            assert!(!whole.is_based());
            assert_eq!(*s, whole);
            assert_eq!(hash_of(s), hash_of(&whole));
            assert_eq!(s.get("le"), le.map(Value::Plain));
            assert_eq!(s.len(), whole.len());
            assert_eq!(s.keys().len(), whole.len());
            assert_eq!(s.to_string(), whole.to_string());
        }
        assert_eq!(sum.to_label_set(), labels("h_sum", None));
        assert_ne!(second, third);
        assert_ne!(sum, first);
    }

    #[test]
    fn a_set_asks_for_its_header_and_a_pointer_a_label_it_holds() {
        let whole = SeriesLabels::from_set(&set(&[("__name__", "a"), ("b", "1"), ("c", "2")]));
        // A 32-bit count and length, then the pointers: no room for a base a whole set lacks.
        assert_eq!(whole.block_bytes(), 8 + 3 * 8);
        let based =
            SeriesLabels::from_set_near(&set(&[("__name__", "a"), ("b", "1"), ("c", "3")]), Some(&whole));
        assert!(based.is_based());
        // The header, the base and its masks, then the one label of its own.
        assert_eq!(based.block_bytes(), 8 + 16 + 8);
    }

    #[test]
    fn the_census_counts_a_held_label_and_its_text() {
        let value = "a value only this test interns";
        let held = SeriesLabels::from_set(&set(&[("census_test_label", value)]));
        let mut blocks = Vec::new();
        let c = census(|b| blocks.push(b));
        assert_eq!(c.labels, blocks.len());
        // The prefix code's byte, the name, the value: two words of count and length before.
        let text = 1 + "census_test_label".len() + value.len();
        assert!(blocks.contains(&(16 + text)), "{blocks:?}");
        assert!(c.text_bytes >= text && c.table_bytes >= 9 * c.labels);
        drop(held);
    }

    #[test]
    fn the_first_candidate_that_shares_enough_is_the_base() {
        let far = SeriesLabels::from_set(&set(&[("__name__", "a"), ("x", "9"), ("y", "9"), ("z", "9")]));
        let close = SeriesLabels::from_set(&set(&[("__name__", "b"), ("x", "1"), ("y", "2"), ("z", "3")]));
        let ls = set(&[("__name__", "c"), ("x", "1"), ("y", "2"), ("z", "3")]);
        let s = SeriesLabels::from_set_near(&ls, [&far, &close]);
        assert!(s.is_based() && s.root().shares(&close));
        let s = SeriesLabels::from_set_near(&ls, [&close, &far]);
        assert!(s.root().shares(&close));
        assert!(!SeriesLabels::from_set_near(&ls, [&far]).is_based());
        assert_eq!(s.to_label_set(), ls);
    }

    #[test]
    fn sets_that_share_little_stay_whole() {
        let a = SeriesLabels::from_set(&set(&[("__name__", "a"), ("x", "1"), ("y", "2")]));
        let b = SeriesLabels::from_set_near(&set(&[("__name__", "b"), ("x", "3"), ("y", "2")]), Some(&a));
        assert!(!b.is_based(), "two of three labels its own");
        assert_eq!(b.to_label_set(), set(&[("__name__", "b"), ("x", "3"), ("y", "2")]));
        let many: Vec<(String, String)> =
            (0..MAX_BASED + 1).map(|i| (format!("l{i:02}"), "v".into())).collect();
        let big = SeriesLabels::from_sorted(many.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let near = SeriesLabels::from_sorted_near(
            many.iter().map(|(n, v)| (n.as_str(), if n == "l00" { "w" } else { v })),
            Some(&big),
        );
        assert!(!near.is_based(), "past the masks' width");
        assert_eq!(near.len(), MAX_BASED + 1);
        assert_eq!(near.get("l00"), Some(Value::Plain("w")));
    }

    proptest! {
        /// External labels join a series' like a map insert that keeps existing values, for
        /// whole and based sets alike.
        #[test]
        fn keys_with_merges_like_a_map(
            series in proptest::collection::btree_map("[A-Z_a-d]{1,2}", "[xy]{1,2}", 1..10),
            extra in proptest::collection::btree_map("[A-Z_a-d]{1,2}", "[uv]{1,2}", 0..5),
            based in any::<bool>(),
        ) {
            let mut want = extra.clone();
            want.extend(series.clone());
            let ls = LabelSet::from_pairs(series.iter().map(|(n, v)| (n.as_str(), v.as_str()))).unwrap();
            let s = if based {
                // Near itself with one label changed: based, whatever it is.
                let mut near = series.clone();
                near.insert(series.keys().next().unwrap().clone(), "z".into());
                let near = SeriesLabels::from_sorted(near.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                SeriesLabels::from_set_near(&ls, Some(&near))
            } else {
                SeriesLabels::from_set(&ls)
            };
            let e = SeriesLabels::from_sorted(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let got: Vec<(String, String)> =
                s.keys_with(Some(&e)).map(|k| k.label()).map(|l| (l.name.to_owned(), l.value.text().into_owned())).collect();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
            prop_assert!(s.keys_with(None).map(LabelKey::id).eq(s.keys().map(LabelKey::id)));
        }

        #[test]
        fn any_label_set_round_trips(pairs in proptest::collection::btree_map("\\PC{1,80}", "\\PC{1,200}", 0..12)) {
            let ls = LabelSet::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))).unwrap();
            let s = SeriesLabels::from_set(&ls);
            prop_assert_eq!(s.to_label_set(), ls.clone());
            prop_assert_eq!(s.len(), ls.len());
            prop_assert_eq!(s.clone(), SeriesLabels::from_set(&ls));
        }

        #[test]
        fn a_set_near_another_reads_as_itself(
            base in proptest::collection::btree_map("[a-f]{1,2}", "[xy]{1,2}", 0..12),
            edits in proptest::collection::vec(("[a-f]{1,2}", proptest::option::of("[xy]{1,2}")), 0..5),
        ) {
            // The near set is the base with a few labels dropped, changed or added, as a
            // family's next series is.
            let mut near = base.clone();
            for (name, value) in &edits {
                match value {
                    Some(v) => near.insert(name.clone(), v.clone()),
                    None => near.remove(name),
                };
            }
            let base = SeriesLabels::from_sorted(base.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let ls = LabelSet::from_pairs(near.iter().map(|(n, v)| (n.as_str(), v.as_str()))).unwrap();
            let s = SeriesLabels::from_set_near(&ls, Some(&base));
            let whole = SeriesLabels::from_set(&ls);
            prop_assert_eq!(s.to_label_set(), ls.clone());
            prop_assert_eq!(s.len(), ls.len());
            prop_assert_eq!(s.keys().len(), ls.len());
            prop_assert_eq!(&s, &whole);
            prop_assert_eq!(hash_of(&s), hash_of(&whole));
            prop_assert_eq!(s == base, ls == base.to_label_set());
            for l in &ls {
                prop_assert!(s.get(&l.name).unwrap() == l.value.as_str());
            }
            // Built near a based set, it is based on that set's base.
            let again = SeriesLabels::from_set_near(&ls, Some(&s));
            prop_assert_eq!(&again, &whole);
            prop_assert!(!again.is_based() || again.root().shares(s.root()));
            // Based whatever it shares, so that every mask is exercised.
            let pairs: Vec<Pair> = whole.0.items().to_vec();
            let forced = SeriesLabels::based_on(&base, &pairs, |_, _| true).unwrap();
            prop_assert!(forced.is_based());
            prop_assert_eq!(forced.to_label_set(), ls.clone());
            prop_assert_eq!(forced.keys().len(), ls.len());
            prop_assert_eq!(&forced, &whole);
            prop_assert_eq!(hash_of(&forced), hash_of(&whole));
        }
    }
}
