//! Zero-copy decoding of the common write: float samples with sorted, valid labels (plus RW2
//! metadata). Labels are read as slices of the decompressed body and go straight into the
//! series key, so a known series costs no label allocation at all.
//!
//! Anything else (exemplars, histograms, unsorted or duplicate or empty labels, bad refs,
//! limits, enforced labels, invalid UTF-8) returns `None`, and the caller takes the `prost`
//! path in `ingest`, which gives the exact errors. A test checks both paths agree.

use crate::ingest::{Converted, Rules};
use crate::store::keys::SEP;
use crate::store::{Metadata, SeriesWrite};

struct Pb<'a>(&'a [u8]);

impl<'a> Pb<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    fn key(&mut self) -> Option<(u64, u8)> {
        let k = self.varint()?;
        Some((k >> 3, (k & 7) as u8))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn fixed64(&mut self) -> Option<u64> {
        if self.0.len() < 8 {
            return None;
        }
        let (a, b) = self.0.split_at(8);
        self.0 = b;
        Some(u64::from_le_bytes(a.try_into().ok()?))
    }
    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.fixed64().map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => {
                if self.0.len() < 4 {
                    return None;
                }
                self.0 = &self.0[4..];
                Some(())
            }
            _ => None,
        }
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks sorted, unique, non-empty labels with a metric name and the tenant's limits, and
/// writes the key. `None` means: let the slow path judge it.
fn key_from(labels: &[(&str, &str)], rules: Rules<'_>, key: &mut Vec<u8>) -> Option<()> {
    let l = rules.limits;
    if rules.tenant.is_some_and(|t| !t.enforced_labels.is_empty()) {
        return None;
    }
    if l.max_labels_per_series > 0 && labels.len() > l.max_labels_per_series {
        return None;
    }
    let mut has_name = false;
    let mut prev: Option<&str> = None;
    key.clear();
    for &(n, v) in labels {
        if n.is_empty() || v.is_empty() || prev.is_some_and(|p| p >= n) {
            return None;
        }
        if (l.max_label_name_length > 0 && n.len() > l.max_label_name_length)
            || (l.max_label_value_length > 0 && v.len() > l.max_label_value_length)
        {
            return None;
        }
        has_name |= n == "__name__";
        prev = Some(n);
        key.extend_from_slice(n.as_bytes());
        key.push(SEP);
        key.extend_from_slice(v.as_bytes());
        key.push(SEP);
    }
    has_name.then_some(())
}

fn sample(b: &[u8]) -> Option<(i64, f64)> {
    let mut p = Pb(b);
    let (mut ts, mut v) = (0i64, 0u64);
    while !p.done() {
        match p.key()? {
            (1, 1) => v = p.fixed64()?,
            (2, 0) => ts = p.varint()? as i64,
            (_, w) => p.skip(w)?,
        }
    }
    Some((ts, f64::from_bits(v)))
}

/// RW1 `WriteRequest` without metadata, exemplars or histograms.
pub fn rw1(body: &[u8], rules: Rules<'_>) -> Option<Converted> {
    let mut out = Converted::default();
    let mut p = Pb(body);
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(16);
    while !p.done() {
        let (field, wire) = p.key()?;
        match (field, wire) {
            (1, 2) => {
                let mut ts = Pb(p.bytes()?);
                labels.clear();
                let mut samples = Vec::with_capacity(1);
                while !ts.done() {
                    match ts.key()? {
                        (1, 2) => {
                            let mut l = Pb(ts.bytes()?);
                            let (mut n, mut v) = ("", "");
                            while !l.done() {
                                match l.key()? {
                                    (1, 2) => n = std::str::from_utf8(l.bytes()?).ok()?,
                                    (2, 2) => v = std::str::from_utf8(l.bytes()?).ok()?,
                                    (_, w) => l.skip(w)?,
                                }
                            }
                            labels.push((n, v));
                        }
                        (2, 2) => samples.push(sample(ts.bytes()?)?),
                        (3 | 4, _) => return None, // exemplars, histograms
                        (_, w) => ts.skip(w)?,
                    }
                }
                let mut key = Vec::with_capacity(labels.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
                key_from(&labels, rules, &mut key)?;
                out.points += samples.len();
                out.batch.series.push(SeriesWrite { key, samples, ..Default::default() });
            }
            (3, _) => return None, // metadata
            (_, w) => p.skip(w)?,
        }
    }
    Some(out)
}

/// RW2 `Request` with float samples and metadata only.
pub fn rw2(body: &[u8], rules: Rules<'_>) -> Option<Converted> {
    let mut out = Converted::default();
    let mut p = Pb(body);
    let mut symbols: Vec<&str> = Vec::with_capacity(256);
    let mut series: Vec<&[u8]> = Vec::with_capacity(64);
    while !p.done() {
        match p.key()? {
            (4, 2) => symbols.push(std::str::from_utf8(p.bytes()?).ok()?),
            (5, 2) => series.push(p.bytes()?),
            (_, w) => p.skip(w)?,
        }
    }
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        return None;
    }
    let sym = |i: u64| symbols.get(usize::try_from(i).ok()?).copied();
    let mut refs: Vec<u64> = Vec::with_capacity(32);
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(16);
    for s in series {
        let mut ts = Pb(s);
        refs.clear();
        let mut samples = Vec::with_capacity(1);
        let mut md: Option<(i32, u64, u64)> = None;
        while !ts.done() {
            match ts.key()? {
                (1, 2) => {
                    let mut packed = Pb(ts.bytes()?);
                    while !packed.done() {
                        refs.push(packed.varint()?);
                    }
                }
                (1, 0) => refs.push(ts.varint()?),
                (2, 2) => samples.push(sample(ts.bytes()?)?),
                (3 | 4, _) => return None, // histograms, exemplars
                (5, 2) => {
                    let mut m = Pb(ts.bytes()?);
                    let (mut t, mut h, mut u) = (0i32, 0u64, 0u64);
                    while !m.done() {
                        match m.key()? {
                            (1, 0) => t = m.varint()? as i32,
                            (3, 0) => h = m.varint()?,
                            (4, 0) => u = m.varint()?,
                            (_, w) => m.skip(w)?,
                        }
                    }
                    md = Some((t, h, u));
                }
                (_, w) => ts.skip(w)?,
            }
        }
        if !refs.len().is_multiple_of(2) || samples.is_empty() {
            return None;
        }
        labels.clear();
        for pair in refs.chunks_exact(2) {
            labels.push((sym(pair[0])?, sym(pair[1])?));
        }
        // Senders should sort; the public receiver suite does not. Sorting a few pairs is cheap.
        if !labels.windows(2).all(|w| w[0].0 < w[1].0) {
            labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        let mut key = Vec::with_capacity(labels.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
        key_from(&labels, rules, &mut key)?;
        if let Some((kind, h, u)) = md {
            let md = Metadata { kind, help: sym(h)?.to_owned(), unit: sym(u)?.to_owned() };
            let name = labels.iter().find(|l| l.0 == "__name__").map(|l| l.1).unwrap_or_default();
            // Prometheus sends UNSPECIFIED with no help or unit when it has none; storing that
            // would blank out real metadata sent earlier.
            if md != Metadata::default() && !out.batch.metadata.iter().any(|(n, m)| n == name && *m == md) {
                out.batch.metadata.push((name.to_owned(), md));
            }
        }
        out.points += samples.len();
        out.batch.series.push(SeriesWrite { key, samples, ..Default::default() });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::ingest::{from_rw1, from_rw2};
    use ferry_protocol::{rw1, rw2};
    use proptest::prelude::*;
    use prost::Message;

    fn same(a: &Converted, b: &Converted) -> Result<(), TestCaseError> {
        prop_assert!(b.rejected.is_empty(), "slow path rejected what the fast path took: {:?}", b.rejected);
        prop_assert_eq!(a.batch.series.len(), b.batch.series.len());
        for (x, y) in a.batch.series.iter().zip(&b.batch.series) {
            prop_assert_eq!(&x.key, &y.key);
            let bits = |s: &[(i64, f64)]| s.iter().map(|(t, v)| (*t, v.to_bits())).collect::<Vec<_>>();
            prop_assert_eq!(bits(&x.samples), bits(&y.samples));
        }
        prop_assert_eq!(&a.batch.metadata, &b.batch.metadata);
        prop_assert_eq!(a.points, b.points);
        Ok(())
    }

    fn label_sets() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::btree_map("[a-z_]{1,4}", "[a-z0-9]{0,3}", 0..5).prop_map(|m| {
            let mut v: Vec<(String, String)> = m.into_iter().collect();
            if v.len().is_multiple_of(2) {
                v.insert(0, ("__name__".into(), "m".into()));
            }
            v
        })
    }

    proptest! {
        #[test]
        fn rw1_fast_path_agrees_with_prost(
            series in prop::collection::vec((label_sets(), prop::collection::vec((any::<i64>(), any::<u64>()), 0..3), any::<bool>()), 0..6)
        ) {
            let limits = Limits::default();
            let rules = Rules { limits: &limits, tenant: None };
            let req = rw1::WriteRequest {
                timeseries: series.iter().map(|(ls, samples, shuffle)| {
                    let mut labels: Vec<rw1::Label> = ls.iter().map(|(n, v)| rw1::Label::new(n.as_str(), v.as_str())).collect();
                    if *shuffle { labels.reverse(); }
                    rw1::TimeSeries {
                        labels,
                        samples: samples.iter().map(|&(t, v)| rw1::Sample { value: f64::from_bits(v), timestamp: t }).collect(),
                        ..Default::default()
                    }
                }).collect(),
                metadata: vec![],
            };
            let body = req.encode_to_vec();
            if let Some(fast) = rw1(&body, rules) {
                same(&fast, &from_rw1(rw1::WriteRequest::decode(body.as_slice()).unwrap(), rules))?;
            }
        }

        #[test]
        fn rw2_fast_path_agrees_with_prost(
            series in prop::collection::vec((label_sets(), prop::collection::vec((any::<i64>(), any::<u64>()), 0..3), 0i32..4), 0..6)
        ) {
            let limits = Limits::default();
            let rules = Rules { limits: &limits, tenant: None };
            let mut symbols = vec![String::new()];
            let mut sym = |s: &str| match symbols.iter().position(|x| x == s) {
                Some(i) => i as u32,
                None => { symbols.push(s.to_owned()); (symbols.len() - 1) as u32 }
            };
            let timeseries: Vec<rw2::TimeSeries> = series.iter().map(|(ls, samples, kind)| rw2::TimeSeries {
                labels_refs: ls.iter().rev().flat_map(|(n, v)| [sym(n), sym(v)]).collect(),
                samples: samples.iter().map(|&(t, v)| rw2::Sample { value: f64::from_bits(v), timestamp: t, start_timestamp: 0 }).collect(),
                metadata: (*kind > 0).then(|| rw2::Metadata { r#type: *kind, help_ref: sym("help"), unit_ref: 0 }),
                ..Default::default()
            }).collect();
            let body = rw2::Request { symbols, timeseries }.encode_to_vec();
            if let Some(fast) = rw2(&body, rules) {
                same(&fast, &from_rw2(rw2::Request::decode(body.as_slice()).unwrap(), rules))?;
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let limits = Limits::default();
            let rules = Rules { limits: &limits, tenant: None };
            let _ = rw1(&bytes, rules);
            let _ = rw2(&bytes, rules);
        }
    }

    #[test]
    fn common_requests_take_the_fast_path() {
        let limits = Limits::default();
        let rules = Rules { limits: &limits, tenant: None };
        let req = rw1::WriteRequest {
            timeseries: vec![rw1::TimeSeries {
                labels: vec![rw1::Label::new("__name__", "up"), rw1::Label::new("job", "j")],
                samples: vec![rw1::Sample { value: 1.0, timestamp: 5 }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let c = rw1(&req.encode_to_vec(), rules).expect("fast path");
        assert_eq!(c.batch.series[0].key, b"__name__\xffup\xffjob\xffj\xff");
        // Unsorted labels: the slow path decides (it sorts RW1 too, but with copies).
        let mut unsorted = req.clone();
        unsorted.timeseries[0].labels.reverse();
        assert!(rw1(&unsorted.encode_to_vec(), rules).is_none());
    }
}
