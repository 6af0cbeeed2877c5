//! Label sets with remote write's invariants built in, and name validation.
//!
//! A [`LabelSet`] is always sorted by name, has no duplicate names, no empty names and no empty
//! values (in Prometheus an empty value means "label absent", so constructors drop them rather
//! than reject them). Its elements are RW1 [`Label`]s, so an RW1 `TimeSeries` can take the
//! vector as is.

use std::fmt;

use thiserror::Error;

pub use crate::rw1::Label;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Which names are valid: Prometheus' `metric_name_validation_scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NameValidation {
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names, `[a-zA-Z_][a-zA-Z0-9_]*` for label names.
    Legacy,
    /// Any non-empty UTF-8 string (Prometheus 3's default).
    #[default]
    Utf8,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LabelError {
    #[error("empty label name")]
    EmptyName,
    #[error("duplicate label name {0:?}")]
    DuplicateName(String),
    #[error("missing metric name (no {METRIC_NAME} label)")]
    MissingMetricName,
    #[error("invalid metric name {0:?}")]
    InvalidMetricName(String),
    #[error("invalid label name {0:?}")]
    InvalidLabelName(String),
}

/// True when `name` is a valid metric name under `scheme`.
pub fn is_valid_metric_name(name: &str, scheme: NameValidation) -> bool {
    match scheme {
        NameValidation::Utf8 => !name.is_empty(),
        NameValidation::Legacy => {
            let mut bytes = name.bytes();
            matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        }
    }
}

/// True when `name` is a valid label name under `scheme`.
pub fn is_valid_label_name(name: &str, scheme: NameValidation) -> bool {
    match scheme {
        NameValidation::Utf8 => !name.is_empty(),
        NameValidation::Legacy => {
            let mut bytes = name.bytes();
            matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
    }
}

/// A sorted, duplicate-free set of non-empty labels.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSet(Vec<Label>);

impl LabelSet {
    pub const fn new() -> Self {
        LabelSet(Vec::new())
    }

    /// Builds a set from pairs in any order. Pairs with an empty value are dropped; an empty
    /// name or a name given twice is an error.
    pub fn from_pairs<I, N, V>(pairs: I) -> Result<Self, LabelError>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<String>,
    {
        Self::from_labels(pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect())
    }

    /// Like [`LabelSet::from_pairs`], taking ownership of a vector of labels.
    pub fn from_labels(mut labels: Vec<Label>) -> Result<Self, LabelError> {
        labels.retain(|l| !l.value.is_empty());
        if labels.iter().any(|l| l.name.is_empty()) {
            return Err(LabelError::EmptyName);
        }
        // Already sorted is the common case (RW1 senders must sort); skip the sort then.
        if !labels.is_sorted_by(|a, b| a.name <= b.name) {
            labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        }
        if let Some(w) = labels.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(LabelError::DuplicateName(w[0].name.clone()));
        }
        Ok(LabelSet(labels))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name)).ok().map(|i| self.0[i].value.as_str())
    }

    /// The value of `__name__`, if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Sets `name` to `value`, keeping the invariants: an empty value removes the label.
    /// Returns an error only for an empty name.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), LabelError> {
        if name.is_empty() {
            return Err(LabelError::EmptyName);
        }
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => value.clone_into(&mut self.0[i].value),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, Label::new(name, value)),
        }
        Ok(())
    }

    /// Removes `name`; returns its value if it was present.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.0.binary_search_by(|l| l.name.as_str().cmp(name)).ok()?;
        Some(self.0.remove(i).value)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// Checks the names against `scheme` and requires a metric name, as receivers do.
    pub fn validate(&self, scheme: NameValidation) -> Result<(), LabelError> {
        let name = self.metric_name().ok_or(LabelError::MissingMetricName)?;
        if !is_valid_metric_name(name, scheme) {
            return Err(LabelError::InvalidMetricName(name.to_owned()));
        }
        match self.0.iter().find(|l| !is_valid_label_name(&l.name, scheme)) {
            Some(bad) => Err(LabelError::InvalidLabelName(bad.name.clone())),
            None => Ok(()),
        }
    }
}

impl<'a> IntoIterator for &'a LabelSet {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Prometheus' notation: `{__name__="up", job="a\"b"}`.
impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_drops_empty_values() {
        let ls = LabelSet::from_pairs([("b", "2"), ("__name__", "m"), ("a", ""), ("c", "3")]).unwrap();
        let names: Vec<_> = ls.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "b", "c"]);
        assert_eq!(ls.metric_name(), Some("m"));
        assert_eq!(ls.get("a"), None);
        assert_eq!(ls.to_string(), r#"{__name__="m", b="2", c="3"}"#);
    }

    #[test]
    fn rejects_duplicates_and_empty_names() {
        assert_eq!(
            LabelSet::from_pairs([("a", "1"), ("b", "2"), ("a", "1")]),
            Err(LabelError::DuplicateName("a".into()))
        );
        assert_eq!(LabelSet::from_pairs([("", "1")]), Err(LabelError::EmptyName));
        // A duplicate whose second value is empty is not a duplicate: empty means absent.
        assert!(LabelSet::from_pairs([("a", "1"), ("a", "")]).is_ok());
    }

    #[test]
    fn set_and_remove_keep_invariants() {
        let mut ls = LabelSet::new();
        ls.set("z", "1").unwrap();
        ls.set("a", "2").unwrap();
        ls.set("m", "").unwrap();
        assert_eq!(ls.len(), 2);
        ls.set("z", "3").unwrap();
        assert_eq!(ls.get("z"), Some("3"));
        ls.set("a", "").unwrap();
        assert_eq!(ls.to_string(), r#"{z="3"}"#);
        assert_eq!(ls.remove("z"), Some("3".into()));
        assert_eq!(ls.remove("z"), None);
        assert!(ls.set("", "x").is_err());
    }

    #[test]
    fn validation_schemes() {
        use NameValidation::*;
        assert!(is_valid_metric_name("http_requests_total", Legacy));
        assert!(is_valid_metric_name("ns:rate5m", Legacy));
        assert!(!is_valid_metric_name("1abc", Legacy));
        assert!(!is_valid_metric_name("resource.cpu.usage", Legacy));
        assert!(is_valid_metric_name("resource.cpu.usage", Utf8));
        assert!(is_valid_metric_name("resource cpu usage", Utf8));
        assert!(!is_valid_metric_name("", Utf8));
        assert!(!is_valid_label_name("a:b", Legacy));
        assert!(is_valid_label_name("a:b", Utf8));
        assert!(is_valid_label_name("_x9", Legacy));

        let ls = LabelSet::from_pairs([("__name__", "job.name"), ("job name", "x")]).unwrap();
        assert!(ls.validate(Utf8).is_ok());
        assert_eq!(ls.validate(Legacy), Err(LabelError::InvalidMetricName("job.name".into())));
        let no_name = LabelSet::from_pairs([("job", "x")]).unwrap();
        assert_eq!(no_name.validate(Utf8), Err(LabelError::MissingMetricName));
        let bad_label = LabelSet::from_pairs([("__name__", "up"), ("a-b", "x")]).unwrap();
        assert_eq!(bad_label.validate(Legacy), Err(LabelError::InvalidLabelName("a-b".into())));
    }
}
