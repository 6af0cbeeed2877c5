//! What a remote-write request carries, before it is written as RW1 or RW2: a flat list of
//! samples, each pointing at its series (final labels and family metadata, in its target's
//! series list, shared by every sample the queue holds), plus the RW1 metadata entries.
//!
//! Flat, because a scrape has one sample per series: grouping samples by series cost a hash
//! map and a vector per series per scrape, for groups of one. The encoders still put
//! consecutive samples of one series into one `TimeSeries`.

use std::sync::Arc;

use ferry_protocol::LabelSet;
#[cfg(test)]
use ferry_protocol::{SymbolTable, rw1, rw2};

use crate::scrape::parse::MetricType;
use crate::series_labels::SeriesLabels;

/// (type, help, unit) of a metric family.
pub type FamilyMeta = Arc<(MetricType, String, String)>;

/// A series as an endpoint sends it: labels after external labels and `write_relabel_configs`,
/// and its family's metadata when known.
#[derive(Debug, Clone)]
pub struct SeriesInfo {
    pub labels: SeriesLabels,
    pub metadata: Option<FamilyMeta>,
}

impl SeriesInfo {
    pub fn new(labels: SeriesLabels, metadata: Option<FamilyMeta>) -> SeriesInfo {
        SeriesInfo { labels, metadata }
    }

    /// An OpenMetrics `<family>_created` series (see [`apply_created`]).
    pub fn is_created(&self) -> bool {
        self.labels.metric_name().is_some_and(|n| n.ends_with("_created"))
    }
}

/// One target's series as an endpoint sends them, in the order its records list them
/// (`None`: dropped by `write_relabel_configs`).
///
/// One shared allocation per target, not one per series: a per-series `Arc<SeriesInfo>`
/// cost 64 bytes of heap and an 8-byte pointer for each of the agent's series. A scrape
/// lists a family's series together, so the metadata is kept once per run of series of one
/// family, and an entry is the labels' 8-byte handle (see `a_list_entry_is_one_pointer`).
#[derive(Debug, Clone, Default)]
pub struct SeriesList(Arc<ListEntries>);

#[derive(Debug, Default)]
struct ListEntries {
    labels: Box<[Option<SeriesLabels>]>,
    /// (first position, metadata) of each run of positions with the same family metadata,
    /// by position. A dropped series joins the run before it: it is never read.
    metadata: Box<[(u32, Option<FamilyMeta>)]>,
}

impl SeriesList {
    pub fn len(&self) -> usize {
        self.0.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.labels.is_empty()
    }

    /// The labels at `i`, if that series is sent.
    pub fn labels(&self, i: usize) -> Option<&SeriesLabels> {
        self.0.labels[i].as_ref()
    }

    /// The family metadata at `i`. A binary search over the runs, of which a target has
    /// about one per family.
    pub fn metadata(&self, i: usize) -> Option<&FamilyMeta> {
        let runs = &self.0.metadata;
        let run = runs.partition_point(|&(first, _)| first as usize <= i);
        run.checked_sub(1).and_then(|r| runs[r].1.as_ref())
    }

    /// Whether both are the same list (not only equal ones).
    pub fn same(&self, other: &SeriesList) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The series at `i` as one value, if it is sent.
    pub fn get(&self, i: usize) -> Option<SeriesInfo> {
        let labels = self.labels(i)?.clone();
        Some(SeriesInfo::new(labels, self.metadata(i).cloned()))
    }
}

impl FromIterator<Option<SeriesInfo>> for SeriesList {
    fn from_iter<I: IntoIterator<Item = Option<SeriesInfo>>>(iter: I) -> SeriesList {
        let mut labels = Vec::new();
        let mut metadata: Vec<(u32, Option<FamilyMeta>)> = Vec::new();
        for (i, info) in iter.into_iter().enumerate() {
            let Some(info) = info else {
                labels.push(None);
                continue;
            };
            let same = metadata
                .last()
                .is_some_and(|(_, m)| m.as_ref().map(Arc::as_ptr) == info.metadata.as_ref().map(Arc::as_ptr));
            if !same {
                metadata.push((i as u32, info.metadata));
            }
            labels.push(Some(info.labels));
        }
        SeriesList(Arc::new(ListEntries { labels: labels.into(), metadata: metadata.into() }))
    }
}

impl From<Vec<Option<SeriesInfo>>> for SeriesList {
    fn from(v: Vec<Option<SeriesInfo>>) -> SeriesList {
        v.into_iter().collect()
    }
}

/// A sample's series: a position in its target's [`SeriesList`] that holds a series.
#[derive(Debug, Clone)]
pub struct SeriesRef {
    list: SeriesList,
    idx: u32,
}

impl SeriesRef {
    /// `list[idx]`, or `None` when that series is not sent.
    pub fn at(list: &SeriesList, idx: usize) -> Option<SeriesRef> {
        list.labels(idx).is_some().then(|| SeriesRef { list: list.clone(), idx: idx as u32 })
    }

    /// A series in a list of its own.
    pub fn single(info: SeriesInfo) -> SeriesRef {
        SeriesRef { list: SeriesList::from(vec![Some(info)]), idx: 0 }
    }

    /// The list this points into.
    pub fn list(&self) -> &SeriesList {
        &self.list
    }

    /// The position in the list.
    pub fn position(&self) -> u32 {
        self.idx
    }

    /// Whether both point at the same entry of the same list.
    pub fn same(&self, other: &SeriesRef) -> bool {
        Arc::ptr_eq(&self.list.0, &other.list.0) && self.idx == other.idx
    }

    pub fn labels(&self) -> &SeriesLabels {
        self.list.labels(self.idx as usize).expect("a SeriesRef is made only for a series that is sent")
    }

    pub fn metadata(&self) -> Option<&FamilyMeta> {
        self.list.metadata(self.idx as usize)
    }
}

/// One sample of a request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub series: SeriesRef,
    /// Milliseconds.
    pub timestamp: i64,
    pub value: f64,
    /// RW2 `start_timestamp` (ms) from the family's OpenMetrics `_created` series; 0 = unset.
    pub start_timestamp: i64,
    /// Exemplars scraped with this sample (rare, so boxed: a sample stays small).
    pub exemplars: Option<Box<Vec<(LabelSet, f64, i64)>>>,
}

impl Sample {
    pub fn new(series: SeriesRef, timestamp: i64, value: f64) -> Sample {
        Sample { series, timestamp, value, start_timestamp: 0, exemplars: None }
    }

    pub fn exemplars(&self) -> &[(LabelSet, f64, i64)] {
        self.exemplars.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Whether `next` goes into the same `TimeSeries` as this sample.
    pub fn same_series(&self, next: &Sample) -> bool {
        self.series.same(&next.series) && self.start_timestamp == next.start_timestamp
    }
}

/// Sets `start_timestamp` of counter, summary and histogram samples from the `<family>_created`
/// series scraped alongside them (same labels, `le` and `quantile` aside).
pub fn apply_created(samples: &mut [Sample]) {
    fn key(ls: &SeriesLabels, family: &str) -> String {
        let mut k = family.to_owned();
        for l in ls.iter().filter(|l| !matches!(l.name, "__name__" | "le" | "quantile")) {
            k.push('\u{0}');
            k.push_str(l.name);
            k.push('=');
            l.value.put_str(&mut k);
        }
        k
    }
    let created: std::collections::HashMap<String, f64> = samples
        .iter()
        .filter_map(|s| {
            let family = s.series.labels().metric_name()?.strip_suffix("_created")?;
            s.value.is_finite().then(|| (key(s.series.labels(), family), s.value))
        })
        .collect();
    if created.is_empty() {
        return;
    }
    for s in samples.iter_mut() {
        let Some(name) = s.series.labels().metric_name() else {
            continue;
        };
        let family = ["_total", "_count", "_sum", "_bucket"].iter().find_map(|suf| name.strip_suffix(suf));
        if let Some(v) = family.and_then(|f| created.get(&key(s.series.labels(), f))) {
            // 0 means unset on the wire; the spec says to send 1 ms for the epoch itself.
            s.start_timestamp = ((v * 1000.0) as i64).max(1);
        }
    }
}

/// What one request carries, kept decoded so it can be re-encoded (RW2 → RW1 fallback).
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// In order; a series' samples are in timestamp order.
    pub samples: Vec<Sample>,
    /// RW1 metadata entries (family, type, help, unit) that changed in these scrapes.
    pub metadata: Vec<(String, MetricType, String, String)>,
}

impl Payload {
    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    pub fn exemplars(&self) -> usize {
        self.samples.iter().map(|s| s.exemplars().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.metadata.is_empty()
    }

    /// The samples cut into runs, one run per `TimeSeries`.
    pub fn runs(&self) -> impl Iterator<Item = &[Sample]> {
        self.samples.chunk_by(|a, b| a.same_series(b))
    }

    /// The request built with prost: the reference `wire::rw1` is tested against (the
    /// sender itself encodes with `wire`, which skips the intermediate structs).
    #[cfg(test)]
    pub fn rw1(&self, send_exemplars: bool) -> rw1::WriteRequest {
        rw1::WriteRequest {
            timeseries: self
                .runs()
                .map(|run| rw1::TimeSeries {
                    labels: run[0].series.labels().to_label_set().into_vec(),
                    samples: run
                        .iter()
                        .map(|s| rw1::Sample { value: s.value, timestamp: s.timestamp })
                        .collect(),
                    exemplars: if send_exemplars {
                        run.iter()
                            .flat_map(|s| s.exemplars())
                            .map(|(l, v, t)| rw1::Exemplar {
                                labels: l.as_slice().to_vec(),
                                value: *v,
                                timestamp: *t,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    histograms: Vec::new(),
                })
                .collect(),
            metadata: self
                .metadata
                .iter()
                .map(|(family, kind, help, unit)| rw1::MetricMetadata {
                    r#type: kind.wire(),
                    metric_family_name: family.clone(),
                    help: help.clone(),
                    unit: unit.clone(),
                })
                .collect(),
        }
    }

    /// The prost-built RW2 request: the reference `wire::rw2` is tested against.
    #[cfg(test)]
    pub fn rw2(&self, table: &mut SymbolTable) -> rw2::Request {
        table.reset();
        let timeseries = self
            .runs()
            .map(|run| {
                let series = &run[0].series;
                let mut labels_refs = Vec::with_capacity(series.labels().len() * 2);
                table.symbolize_labels(&series.labels().to_label_set(), &mut labels_refs);
                let exemplars = run
                    .iter()
                    .flat_map(|s| s.exemplars())
                    .map(|(l, v, t)| {
                        let mut refs = Vec::new();
                        table.symbolize_labels(l, &mut refs);
                        rw2::Exemplar { labels_refs: refs, value: *v, timestamp: *t }
                    })
                    .collect();
                let metadata = series.metadata().map(|m| rw2::Metadata {
                    r#type: m.0.wire(),
                    help_ref: table.symbolize(&m.1),
                    unit_ref: table.symbolize(&m.2),
                });
                rw2::TimeSeries {
                    labels_refs,
                    samples: run
                        .iter()
                        .map(|s| rw2::Sample {
                            value: s.value,
                            timestamp: s.timestamp,
                            start_timestamp: s.start_timestamp,
                        })
                        .collect(),
                    histograms: Vec::new(),
                    exemplars,
                    metadata,
                }
            })
            .collect();
        rw2::Request { symbols: table.take_symbols(), timeseries }
    }
}

/// The metric family a series name belongs to, for metadata lookup: the name itself, or
/// the name without a suffix the exposition formats add.
pub fn family_candidates(name: &str) -> impl Iterator<Item = &str> {
    const SUFFIXES: [&str; 8] =
        ["_total", "_bucket", "_count", "_sum", "_created", "_info", "_gcount", "_gsum"];
    std::iter::once(name).chain(SUFFIXES.iter().filter_map(move |s| name.strip_suffix(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::symbols::resolve_label_set;

    fn info(pairs: &[(&str, &str)], metadata: Option<FamilyMeta>) -> SeriesRef {
        let labels = SeriesLabels::from_set(&LabelSet::from_pairs(pairs.iter().copied()).unwrap());
        SeriesRef::single(SeriesInfo::new(labels, metadata))
    }

    #[test]
    fn a_list_entry_is_one_pointer() {
        // One entry per active series in every endpoint's lists (issue #9).
        assert_eq!(std::mem::size_of::<Option<SeriesLabels>>(), 8);
        // And a sample's series is a pointer and a position.
        assert_eq!(std::mem::size_of::<SeriesRef>(), 16);
    }

    #[test]
    fn a_list_keeps_metadata_by_runs() {
        let meta = |help: &str| Some(Arc::new((MetricType::Counter, help.to_owned(), String::new())));
        let (a, b) = (meta("a"), meta("b"));
        let labels = |i: usize| SeriesLabels::from_sorted([("__name__", "m"), ("i", &*i.to_string())]);
        let infos = vec![
            Some(SeriesInfo::new(labels(0), a.clone())),
            Some(SeriesInfo::new(labels(1), a.clone())),
            None,
            Some(SeriesInfo::new(labels(3), a.clone())),
            Some(SeriesInfo::new(labels(4), None)),
            Some(SeriesInfo::new(labels(5), b.clone())),
            Some(SeriesInfo::new(labels(6), b.clone())),
            Some(SeriesInfo::new(labels(7), a.clone())),
        ];
        let list = SeriesList::from(infos.clone());
        assert_eq!(list.0.metadata.len(), 4, "a, none, b, a: the dropped series joins its run");
        assert_eq!(list.len(), infos.len());
        for (i, info) in infos.iter().enumerate() {
            let got = list.get(i);
            assert_eq!(got.is_some(), info.is_some(), "{i}");
            let (Some(got), Some(info)) = (got, info) else { continue };
            assert_eq!(got.labels, info.labels);
            assert_eq!(
                got.metadata.as_ref().map(Arc::as_ptr),
                info.metadata.as_ref().map(Arc::as_ptr),
                "{i}"
            );
            assert_eq!(
                SeriesRef::at(&list, i).unwrap().metadata().map(|m| m.1.as_str()),
                info.metadata.as_ref().map(|m| m.1.as_str())
            );
        }
        assert!(SeriesRef::at(&list, 2).is_none());
        assert!(SeriesList::default().is_empty());
    }

    #[test]
    fn rw1_and_rw2_carry_the_same_series() {
        let up = info(
            &[("__name__", "up"), ("job", "j")],
            Some(Arc::new((MetricType::Gauge, "Up.".into(), String::new()))),
        );
        let mut first = Sample::new(up.clone(), 1, 1.0);
        first.exemplars = Some(Box::new(vec![(LabelSet::from_pairs([("trace_id", "t")]).unwrap(), 1.0, 1)]));
        let p = Payload {
            samples: vec![first, Sample::new(up.clone(), 2, ferry_protocol::STALE_NAN)],
            metadata: vec![],
        };
        let r1 = p.rw1(false);
        assert_eq!(r1.timeseries.len(), 1, "consecutive samples of a series share a TimeSeries");
        assert_eq!(r1.timeseries[0].labels, up.labels().to_label_set().as_slice());
        assert!(r1.timeseries[0].exemplars.is_empty());
        assert!(ferry_protocol::is_stale(r1.timeseries[0].samples[1].value));
        let mut t = SymbolTable::new();
        let r2 = p.rw2(&mut t);
        assert_eq!(r2.symbols[0], "");
        assert_eq!(
            resolve_label_set(&r2.timeseries[0].labels_refs, &r2.symbols).unwrap(),
            up.labels().to_label_set()
        );
        assert_eq!(r2.timeseries[0].metadata.unwrap().r#type, 2);
        assert_eq!(r2.timeseries[0].exemplars.len(), 1);
        assert!(family_candidates("http_requests_total").any(|f| f == "http_requests"));
    }

    #[test]
    fn created_series_become_start_timestamps() {
        let sd = |pairs: &[(&str, &str)], v: f64| Sample::new(info(pairs, None), 2_000_000, v);
        let mut samples = vec![
            sd(&[("__name__", "req_total"), ("code", "200")], 5.0),
            sd(&[("__name__", "req_created"), ("code", "200")], 1520872607.123),
            sd(&[("__name__", "req_total"), ("code", "500")], 1.0),
            sd(&[("__name__", "lat_bucket"), ("le", "0.5")], 3.0),
            sd(&[("__name__", "lat_created")], 1000.0),
        ];
        apply_created(&mut samples);
        assert_eq!(samples[0].start_timestamp, 1_520_872_607_123);
        assert_eq!(samples[2].start_timestamp, 0, "no _created for code=500");
        assert_eq!(samples[3].start_timestamp, 1_000_000, "le is ignored when matching");
        let mut t = SymbolTable::new();
        let r = Payload { samples, metadata: vec![] }.rw2(&mut t);
        assert_eq!(r.timeseries[0].samples[0].start_timestamp, 1_520_872_607_123);
    }
}
