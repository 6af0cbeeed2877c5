//! The RW2 symbol table: every string of a request stored once, referred to by index.
//!
//! [`SymbolTable`] builds one (index 0 is always `""`); [`resolve_labels`] and friends go the
//! other way for a receiver, with Prometheus' errors for odd-length and out-of-range refs.
//! The index is a `hashbrown::HashTable` of positions into the string vector, so each string
//! is held once and lookups by `&str` allocate nothing.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use thiserror::Error;

use crate::labels::{Label, LabelError, LabelSet};

/// Builds a request's `symbols`, deduplicating as it goes.
///
/// The strings live end to end in one buffer, with `(start, end)` spans beside it: a sender
/// builds a table per request, and one allocation per symbol (thousands per request, freed
/// right after) was most of what interning cost.
#[derive(Clone)]
pub struct SymbolTable {
    text: String,
    spans: Vec<(u32, u32)>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for SymbolTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymbolTable").field("len", &self.spans.len()).finish()
    }
}

impl Default for SymbolTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SymbolTable {
    pub fn new() -> Self {
        let mut t = SymbolTable {
            text: String::new(),
            spans: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        };
        t.symbolize("");
        t
    }

    /// The index of `s`, adding it if it is new.
    pub fn symbolize(&mut self, s: &str) -> u32 {
        let SymbolTable { text, spans, index, hasher } = self;
        let hash = hasher.hash_one(s);
        let at = |i: u32| {
            let (a, b) = spans[i as usize];
            &text[a as usize..b as usize]
        };
        if let Some(&i) = index.find(hash, |&i| at(i) == s) {
            return i;
        }
        let i = u32::try_from(spans.len()).expect("symbol table over u32::MAX entries");
        let start = u32::try_from(text.len()).expect("symbol text over 4 GiB");
        text.push_str(s);
        spans.push((start, text.len() as u32));
        index.insert_unique(hash, i, |&j| {
            let (a, b) = spans[j as usize];
            hasher.hash_one(&text[a as usize..b as usize])
        });
        i
    }

    /// Appends `[name_ref, value_ref]` for each label, in the set's (sorted) order.
    pub fn symbolize_labels<'a>(&mut self, labels: impl IntoIterator<Item = &'a Label>, refs: &mut Vec<u32>) {
        for l in labels {
            refs.push(self.symbolize(&l.name));
            refs.push(self.symbolize(&l.value));
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Never true: index 0 always holds `""`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The symbols in index order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.spans.iter().map(|&(a, b)| &self.text[a as usize..b as usize])
    }

    /// The symbols as owned strings (for a prost `Request`).
    pub fn symbols(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }

    /// Hands the strings over for a request and leaves the table as new (keeping the index's
    /// capacity, so the next request does not re-grow it).
    pub fn take_symbols(&mut self) -> Vec<String> {
        let taken = self.symbols();
        self.reset();
        taken
    }

    /// Empties the table back to `[""]`, keeping allocations.
    pub fn reset(&mut self) {
        self.text.clear();
        self.spans.clear();
        self.index.clear();
        self.symbolize("");
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SymbolError {
    #[error("invalid labelRefs length {0}")]
    OddLength(usize),
    #[error("symbol ref {index} outside of symbols table (size {size})")]
    OutOfRange { index: u32, size: usize },
    #[error(transparent)]
    Labels(#[from] LabelError),
}

/// The string at `index`.
pub fn resolve_ref(index: u32, symbols: &[String]) -> Result<&str, SymbolError> {
    symbols
        .get(index as usize)
        .map(String::as_str)
        .ok_or(SymbolError::OutOfRange { index, size: symbols.len() })
}

/// Resolves `[name_ref, value_ref]*` into pairs, in the order given (not sorted).
pub fn resolve_labels<'a>(
    refs: &[u32],
    symbols: &'a [String],
) -> Result<Vec<(&'a str, &'a str)>, SymbolError> {
    if !refs.len().is_multiple_of(2) {
        return Err(SymbolError::OddLength(refs.len()));
    }
    refs.chunks_exact(2).map(|p| Ok((resolve_ref(p[0], symbols)?, resolve_ref(p[1], symbols)?))).collect()
}

/// Resolves refs into a [`LabelSet`]: sorted (senders may send them unsorted, and Prometheus
/// accepts that), empty values dropped, duplicate names an error.
pub fn resolve_label_set(refs: &[u32], symbols: &[String]) -> Result<LabelSet, SymbolError> {
    let pairs = resolve_labels(refs, symbols)?;
    Ok(LabelSet::from_pairs(pairs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_zero_is_empty_and_strings_dedupe() {
        let mut t = SymbolTable::new();
        assert_eq!(t.symbols(), [""]);
        assert_eq!(t.symbolize(""), 0);
        let a = t.symbolize("foo");
        let b = t.symbolize("bar");
        assert_eq!((a, b), (1, 2));
        assert_eq!(t.symbolize("foo"), 1);
        assert_eq!(t.symbols(), ["", "foo", "bar"]);
    }

    #[test]
    fn labels_round_trip_through_refs() {
        let ls = LabelSet::from_pairs([("__name__", "up"), ("job", "node"), ("instance", "node")]).unwrap();
        let mut t = SymbolTable::new();
        let mut refs = Vec::new();
        t.symbolize_labels(&ls, &mut refs);
        assert_eq!(refs.len(), 6);
        // "node" is stored once.
        assert_eq!(t.len(), 1 + 5);
        let symbols = t.take_symbols();
        assert_eq!(resolve_label_set(&refs, &symbols).unwrap(), ls);
        assert_eq!(t.symbols(), [""]);
    }

    #[test]
    fn unsorted_refs_are_sorted_on_resolve() {
        let symbols: Vec<String> = ["", "b", "2", "__name__", "m"].map(String::from).to_vec();
        let ls = resolve_label_set(&[1, 2, 3, 4], &symbols).unwrap();
        assert_eq!(ls.to_string(), r#"{__name__="m", b="2"}"#);
    }

    #[test]
    fn bad_refs_are_errors() {
        let symbols: Vec<String> = ["", "a", "b"].map(String::from).to_vec();
        assert_eq!(resolve_labels(&[1, 2, 1], &symbols), Err(SymbolError::OddLength(3)));
        assert_eq!(resolve_labels(&[1, 9], &symbols), Err(SymbolError::OutOfRange { index: 9, size: 3 }));
        assert_eq!(
            resolve_label_set(&[1, 2, 1, 2], &symbols),
            Err(SymbolError::Labels(LabelError::DuplicateName("a".into())))
        );
        assert_eq!(resolve_ref(3, &symbols), Err(SymbolError::OutOfRange { index: 3, size: 3 }));
        assert_eq!(resolve_ref(0, &symbols), Ok(""));
    }

    #[test]
    fn reset_keeps_working() {
        let mut t = SymbolTable::new();
        for i in 0..1000 {
            t.symbolize(&i.to_string());
        }
        t.reset();
        assert_eq!(t.symbols(), [""]);
        assert_eq!(t.symbolize("x"), 1);
        assert_eq!(t.symbolize("x"), 1);
    }
}
