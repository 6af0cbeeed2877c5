//! A scrape's metadata lines (`# HELP`, `# TYPE`, `# UNIT`) and which families' metadata goes
//! out with its batch: those whose type, help or unit differ from what the target last sent.
//!
//! Nearly every scrape repeats the previous one's lines, and finding that out family by
//! family (a map of owned names and texts a scrape, compared with the ones sent) cost the
//! agent about a tenth of its CPU at 500k series: some 200 small allocations for a 41-family
//! exposition, each into a heap grown large, and compares against strings last read a scrape
//! interval before (perf at 500k, docs/performance.md). So a scrape keeps its lines as they
//! were parsed, borrowed from the body, and compares one seeded 128-bit fingerprint of them,
//! in exposition order, with the previous scrape's; only when the two differ are the families
//! merged and compared with what was sent. The seed is the target's own (as for the series
//! cache, `append`'s header): a target cannot aim for a collision that would hide a change.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hashbrown::HashMap;

use super::super::batch::BatchMetadata;
use super::super::parse::MetricType;

/// One scrape's metadata lines, in the order they came.
#[derive(Debug, Default)]
pub struct Lines<'a> {
    lines: Vec<(Cow<'a, str>, Field<'a>)>,
}

#[derive(Debug)]
enum Field<'a> {
    Help(Cow<'a, str>),
    Type(MetricType),
    Unit(Cow<'a, str>),
}

impl<'a> Lines<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Lines { lines: Vec::with_capacity(n) }
    }

    pub fn help(&mut self, name: Cow<'a, str>, text: Cow<'a, str>) {
        self.lines.push((name, Field::Help(text)));
    }

    pub fn kind(&mut self, name: Cow<'a, str>, kind: MetricType) {
        self.lines.push((name, Field::Type(kind)));
    }

    pub fn unit(&mut self, name: Cow<'a, str>, unit: Cow<'a, str>) {
        self.lines.push((name, Field::Unit(unit)));
    }

    fn fingerprint(&self, seed: u64) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
        // Every field is length-prefixed or fixed-size, so two line lists hash alike only by
        // being alike (or by a collision).
        for (name, field) in &self.lines {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            match field {
                Field::Help(t) => {
                    h.update(&[0]);
                    h.update(&(t.len() as u64).to_le_bytes());
                    h.update(t.as_bytes());
                }
                Field::Type(k) => h.update(&[1, *k as i32 as u8]),
                Field::Unit(u) => {
                    h.update(&[2]);
                    h.update(&(u.len() as u64).to_le_bytes());
                    h.update(u.as_bytes());
                }
            }
        }
        h.digest128()
    }
}

/// One family's lines of a scrape, merged: the last of each kind.
#[derive(Default)]
struct Family<'a> {
    kind: Option<MetricType>,
    help: Option<&'a str>,
    unit: Option<&'a str>,
}

/// What a target has sent of its metadata, and the fingerprint of the last lines compared.
#[derive(Debug, Default)]
pub struct Sent {
    by_family: HashMap<String, BatchMetadata>,
    last: Option<u128>,
    /// Lines in the last scrape: the next one's list is sized from it.
    last_lines: usize,
}

impl Sent {
    /// Room for as many lines as the last scrape had.
    pub fn lines<'a>(&self) -> Lines<'a> {
        Lines::with_capacity(self.last_lines)
    }

    /// Appends to `out`, in name order, the families of `lines` whose metadata differs from
    /// what was sent, and records them as sent. A family's later line of a kind wins over an
    /// earlier one; a family without a TYPE line is `Unknown`, without HELP or UNIT empty.
    /// Families of earlier scrapes that `lines` does not mention are left as they were.
    pub fn changes(&mut self, lines: Lines<'_>, seed: u64, out: &mut Vec<BatchMetadata>) {
        self.last_lines = lines.lines.len();
        let fp = lines.fingerprint(seed);
        if self.last == Some(fp) {
            return;
        }
        self.last = Some(fp);
        let mut families: BTreeMap<&str, Family<'_>> = BTreeMap::new();
        for (name, field) in &lines.lines {
            let f = families.entry(name.as_ref()).or_default();
            match field {
                Field::Help(t) => f.help = Some(t),
                Field::Type(k) => f.kind = Some(*k),
                Field::Unit(u) => f.unit = Some(u),
            }
        }
        for (name, f) in families {
            let kind = f.kind.unwrap_or(MetricType::Unknown);
            let (help, unit) = (f.help.unwrap_or_default(), f.unit.unwrap_or_default());
            if self.by_family.get(name).is_some_and(|m| m.kind == kind && m.help == help && m.unit == unit) {
                continue;
            }
            let md = BatchMetadata {
                metric_family: name.to_owned(),
                kind,
                help: help.to_owned(),
                unit: unit.to_owned(),
            };
            self.by_family.insert(name.to_owned(), md.clone());
            out.push(md);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(l: &[(&'static str, &'static str, &'static str)]) -> Lines<'static> {
        let mut out = Lines::default();
        for &(name, what, v) in l {
            match what {
                "help" => out.help(name.into(), v.into()),
                "unit" => out.unit(name.into(), v.into()),
                _ => out
                    .kind(name.into(), if v == "counter" { MetricType::Counter } else { MetricType::Gauge }),
            }
        }
        out
    }

    fn changes(sent: &mut Sent, l: &[(&'static str, &'static str, &'static str)]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        sent.changes(lines(l), 7, &mut out);
        out.into_iter().map(|m| (m.metric_family, m.help)).collect()
    }

    #[test]
    fn only_families_that_changed_go_out() {
        let mut sent = Sent::default();
        let first =
            [("b", "help", "B"), ("b", "type", "gauge"), ("a", "help", "A"), ("a", "type", "counter")];
        assert_eq!(
            changes(&mut sent, &first),
            [("a".into(), "A".into()), ("b".into(), "B".into())],
            "name order"
        );
        assert!(changes(&mut sent, &first).is_empty(), "the same lines again");
        // Another order, the same families: compared family by family, nothing new.
        let reordered = [first[2], first[3], first[0], first[1]];
        assert!(changes(&mut sent, &reordered).is_empty());
        let changed =
            [("a", "help", "A"), ("a", "type", "counter"), ("b", "help", "B2"), ("b", "type", "gauge")];
        assert_eq!(changes(&mut sent, &changed), [("b".into(), "B2".into())]);
        // A family left out keeps what was sent: it returning unchanged sends nothing.
        assert!(changes(&mut sent, &[("a", "help", "A"), ("a", "type", "counter")]).is_empty());
        assert!(changes(&mut sent, &changed).is_empty());
    }

    #[test]
    fn later_lines_win_and_missing_ones_default() {
        let mut sent = Sent::default();
        let mut out = Vec::new();
        sent.changes(
            lines(&[("m", "help", "one"), ("m", "unit", "bytes"), ("m", "help", "two")]),
            1,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].kind, out[0].help.as_str(), out[0].unit.as_str()),
            (MetricType::Unknown, "two", "bytes")
        );
        // A TYPE line alone changes the family: help and unit become empty.
        out.clear();
        sent.changes(lines(&[("m", "type", "counter")]), 1, &mut out);
        assert_eq!((out[0].kind, out[0].help.as_str(), out[0].unit.as_str()), (MetricType::Counter, "", ""));
    }

    /// Lines that differ only in where one field ends and the next begins fingerprint apart.
    #[test]
    fn fingerprints_separate_fields() {
        let a = lines(&[("ab", "help", "c")]);
        let b = lines(&[("a", "help", "bc")]);
        let c = lines(&[("ab", "unit", "c")]);
        assert_ne!(a.fingerprint(3), b.fingerprint(3));
        assert_ne!(a.fingerprint(3), c.fingerprint(3));
        assert_ne!(a.fingerprint(3), a.fingerprint(4), "seeded");
        assert_eq!(a.fingerprint(3), lines(&[("ab", "help", "c")]).fingerprint(3));
    }
}
