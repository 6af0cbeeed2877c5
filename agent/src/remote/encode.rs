//! What a remote-write request carries, before it is written as RW1 or RW2: a flat list of
//! samples, each pointing at its series (a position in its target's series list, shared by
//! every sample the queue holds, which gives the family metadata and the labels or the id to
//! look them up by in the WAL's table), plus the RW1 metadata entries.
//!
//! Flat, because a scrape has one sample per series: grouping samples by series cost a hash
//! map and a vector per series per scrape, for groups of one. The encoders still put
//! consecutive samples of one series into one `TimeSeries`.

use std::sync::Arc;

use ferry_protocol::LabelSet;
#[cfg(test)]
use ferry_protocol::{SymbolTable, rw1, rw2};

use super::id_runs::IdRuns;
use crate::scrape::parse::MetricType;
use crate::series_labels::{KeysWith, SeriesLabels};
use crate::wal::IdMap;

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
}

/// Whether a series is an OpenMetrics `<family>_created` series (see [`apply_created`]).
pub fn is_created(labels: &SeriesLabels) -> bool {
    labels.metric_name().is_some_and(|n| n.ends_with("_created"))
}

/// The WAL's series table, read-locked while a request is resolved or encoded: where a list
/// that names its series by id finds their labels (see [`SeriesList`]).
pub type WalLabels = IdMap<SeriesLabels>;

/// One target's series as an endpoint sends them, in the order its records list them.
///
/// One shared allocation per target, not one per series: a per-series `Arc<SeriesInfo>`
/// cost 64 bytes of heap and an 8-byte pointer for each of the agent's series. A scrape
/// lists a family's series together, so the metadata is kept once per run of series of one
/// family.
///
/// When nothing changes a series' labels on the way out (no external labels, no
/// `write_relabel_configs`), which is the usual case, a list holds no labels at all: it
/// names its series by id, as runs of consecutive ids ([`IdRuns`]), and the labels are the
/// WAL's, looked up in its table ([`WalLabels`]) when a request is encoded. That table
/// holds a series until no segment on disk has a record that uses it, and a request's
/// records are on disk until it is sent, so the lookup finds them. Otherwise an entry is
/// its own labels' 8-byte handle (`None`: dropped by `write_relabel_configs`); so is every
/// entry of a list with a series from a segment this process did not write, whose labels
/// only the WAL reader held (see `Reader::recovered`).
#[derive(Debug, Clone, Default)]
pub struct SeriesList(Arc<ListEntries>);

#[derive(Debug, Default)]
struct ListEntries {
    /// The series' ids by position, when they name the series; empty for a list of its own.
    ids: IdRuns,
    /// Each position's labels, when they are not the WAL's.
    own: Option<Box<[Option<SeriesLabels>]>>,
    /// For a list of the WAL's labels: the endpoint's external labels, which join each
    /// series' as it is encoded ([`SeriesRef::keys`]) instead of making a set per series.
    external: Option<SeriesLabels>,
    /// (first position, metadata) of each run of positions with the same family metadata,
    /// by position. A dropped series joins the run before it: it is never read.
    metadata: Box<[(u32, Option<FamilyMeta>)]>,
}

/// Family metadata by runs of positions, as a list keeps it.
fn metadata_runs(metadata: impl IntoIterator<Item = Option<FamilyMeta>>) -> Box<[(u32, Option<FamilyMeta>)]> {
    let mut runs: Vec<(u32, Option<FamilyMeta>)> = Vec::new();
    for (i, m) in metadata.into_iter().enumerate() {
        let same =
            runs.last().is_some_and(|(_, r)| r.as_ref().map(Arc::as_ptr) == m.as_ref().map(Arc::as_ptr));
        if !same {
            runs.push((i as u32, m));
        }
    }
    runs.into()
}

impl SeriesList {
    /// A list of the WAL's series, `ids` by position, each with its family's metadata, sent
    /// with `external` labels added.
    pub fn by_id(
        ids: IdRuns,
        metadata: impl IntoIterator<Item = Option<FamilyMeta>>,
        external: Option<SeriesLabels>,
    ) -> SeriesList {
        SeriesList(Arc::new(ListEntries { ids, own: None, external, metadata: metadata_runs(metadata) }))
    }

    /// A list of series with labels of their own (`None`: not sent), named by `ids` (empty
    /// for a list no record made).
    pub fn owning(ids: IdRuns, infos: impl IntoIterator<Item = Option<SeriesInfo>>) -> SeriesList {
        let mut labels = Vec::new();
        let mut metadata = Vec::new();
        for info in infos {
            let (l, m) = info.map_or((None, None), |i| (Some(i.labels), i.metadata));
            // A dropped series joins the run before it.
            metadata.push(if l.is_some() { m } else { metadata.last().cloned().flatten() });
            labels.push(l);
        }
        let metadata = metadata_runs(metadata);
        SeriesList(Arc::new(ListEntries { ids, own: Some(labels.into()), external: None, metadata }))
    }

    pub fn len(&self) -> usize {
        match &self.0.own {
            Some(own) => own.len(),
            None => self.0.ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the series at `i` is sent (`write_relabel_configs` did not drop it).
    pub fn sent(&self, i: usize) -> bool {
        match &self.0.own {
            Some(own) => own.get(i).is_some_and(Option::is_some),
            None => i < self.0.ids.len(),
        }
    }

    /// Whether the list names its series by id, holding no labels of its own.
    pub fn by_wal_id(&self) -> bool {
        self.0.own.is_none()
    }

    /// The id of the series at `i`, if the list was made with ids.
    pub fn id(&self, i: usize) -> Option<u64> {
        self.0.ids.get(i)
    }

    /// The series' ids by position (none for a list no record made).
    pub fn ids(&self) -> &IdRuns {
        &self.0.ids
    }

    /// The labels at `i`, if that series is sent: the list's own, or the WAL's (`None` as
    /// well when the WAL's table no longer has them: its size cap dropped the segments),
    /// without the external labels a list of the WAL's adds ([`SeriesRef::keys`]).
    pub fn labels<'a>(&'a self, i: usize, wal: &'a WalLabels) -> Option<&'a SeriesLabels> {
        match &self.0.own {
            Some(own) => own.get(i)?.as_ref(),
            None => wal.get(self.0.ids.get(i)?),
        }
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
}

impl FromIterator<Option<SeriesInfo>> for SeriesList {
    fn from_iter<I: IntoIterator<Item = Option<SeriesInfo>>>(iter: I) -> SeriesList {
        SeriesList::owning(IdRuns::default(), iter)
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
        list.sent(idx).then(|| SeriesRef { list: list.clone(), idx: idx as u32 })
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

    /// The labels, unless the WAL no longer has them (see [`SeriesList::labels`]), without
    /// external labels: enough to know the series' name, not to send it.
    pub fn labels<'a>(&'a self, wal: &'a WalLabels) -> Option<&'a SeriesLabels> {
        self.list.labels(self.idx as usize, wal)
    }

    /// The labels as they are sent, external ones included, in name order.
    pub fn keys<'a>(&'a self, wal: &'a WalLabels) -> Option<KeysWith<'a>> {
        Some(self.labels(wal)?.keys_with(self.list.0.external.as_ref()))
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
pub fn apply_created(samples: &mut [Sample], wal: &WalLabels) {
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
            let labels = s.series.labels(wal)?;
            let family = labels.metric_name()?.strip_suffix("_created")?;
            s.value.is_finite().then(|| (key(labels, family), s.value))
        })
        .collect();
    if created.is_empty() {
        return;
    }
    for s in samples.iter_mut() {
        let Some(labels) = s.series.labels(wal) else {
            continue;
        };
        let Some(name) = labels.metric_name() else {
            continue;
        };
        let family = ["_total", "_count", "_sum", "_bucket"].iter().find_map(|suf| name.strip_suffix(suf));
        if let Some(v) = family.and_then(|f| created.get(&key(labels, f))) {
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
    pub fn rw1(&self, send_exemplars: bool, wal: &WalLabels) -> rw1::WriteRequest {
        rw1::WriteRequest {
            timeseries: self
                .runs()
                .filter_map(|run| Some((run, sent_labels(&run[0], wal)?)))
                .map(|(run, labels)| rw1::TimeSeries {
                    labels: labels.into_vec(),
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
    pub fn rw2(&self, table: &mut SymbolTable, wal: &WalLabels) -> rw2::Request {
        table.reset();
        let timeseries = self
            .runs()
            .filter_map(|run| Some((run, sent_labels(&run[0], wal)?)))
            .map(|(run, labels)| {
                let series = &run[0].series;
                let mut labels_refs = Vec::with_capacity(labels.len() * 2);
                table.symbolize_labels(&labels, &mut labels_refs);
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

/// A sample's labels as sent, built as a plain set: what the reference encodings write.
#[cfg(test)]
fn sent_labels(s: &Sample, wal: &WalLabels) -> Option<LabelSet> {
    let keys = s.series.keys(wal)?;
    Some(
        LabelSet::from_pairs(keys.map(|k| k.label()).map(|l| (l.name, l.value.text()))).expect("a valid set"),
    )
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
        // Per active series, a list that holds labels (external labels, write relabeling)
        // takes one entry in each endpoint's lists (issue #9); a list by id, none.
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
        let wal = WalLabels::new();
        // The same series named by id, the dropped one aside, their labels the WAL's.
        let mut by_id_wal = WalLabels::new();
        let kept: Vec<(u64, &SeriesInfo)> =
            infos.iter().enumerate().filter_map(|(i, info)| Some((7 + i as u64, info.as_ref()?))).collect();
        for &(id, info) in &kept {
            by_id_wal.insert(id, info.labels.clone());
        }
        let by_id = SeriesList::by_id(
            kept.iter().map(|&(id, _)| id).collect(),
            kept.iter().map(|(_, i)| i.metadata.clone()),
            None,
        );
        assert!(by_id.by_wal_id() && !list.by_wal_id());
        assert_eq!(by_id.0.metadata.len(), 4, "a, none, b, a");
        for (at, &(id, info)) in kept.iter().enumerate() {
            assert_eq!(by_id.id(at), Some(id));
            assert_eq!(by_id.labels(at, &by_id_wal), Some(&info.labels));
            assert_eq!(by_id.metadata(at).map(Arc::as_ptr), info.metadata.as_ref().map(Arc::as_ptr), "{at}");
        }
        assert!(by_id.sent(kept.len() - 1) && !by_id.sent(kept.len()));
        assert_eq!(by_id.labels(0, &wal), None, "not in this table");
        for (i, info) in infos.iter().enumerate() {
            let got = list.labels(i, &wal);
            assert_eq!(got.is_some(), info.is_some(), "{i}");
            assert_eq!(list.sent(i), info.is_some(), "{i}");
            let (Some(got), Some(info)) = (got, info) else { continue };
            assert_eq!(got, &info.labels);
            assert_eq!(list.metadata(i).map(Arc::as_ptr), info.metadata.as_ref().map(Arc::as_ptr), "{i}");
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
        let wal = WalLabels::new();
        let r1 = p.rw1(false, &wal);
        assert_eq!(r1.timeseries.len(), 1, "consecutive samples of a series share a TimeSeries");
        assert_eq!(r1.timeseries[0].labels, up.labels(&wal).unwrap().to_label_set().as_slice());
        assert!(r1.timeseries[0].exemplars.is_empty());
        assert!(ferry_protocol::is_stale(r1.timeseries[0].samples[1].value));
        let mut t = SymbolTable::new();
        let r2 = p.rw2(&mut t, &wal);
        assert_eq!(r2.symbols[0], "");
        assert_eq!(
            resolve_label_set(&r2.timeseries[0].labels_refs, &r2.symbols).unwrap(),
            up.labels(&wal).unwrap().to_label_set()
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
        let wal = WalLabels::new();
        apply_created(&mut samples, &wal);
        assert_eq!(samples[0].start_timestamp, 1_520_872_607_123);
        assert_eq!(samples[2].start_timestamp, 0, "no _created for code=500");
        assert_eq!(samples[3].start_timestamp, 1_000_000, "le is ignored when matching");
        let mut t = SymbolTable::new();
        let r = Payload { samples, metadata: vec![] }.rw2(&mut t, &wal);
        assert_eq!(r.timeseries[0].samples[0].start_timestamp, 1_520_872_607_123);
    }
}
