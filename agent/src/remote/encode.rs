//! Building remote-write requests from scrape data: RW1 (`WriteRequest`, one `TimeSeries`
//! per series with its samples in order, metadata inline) and RW2 (per-request symbol table,
//! metadata and exemplars per series).

use std::sync::Arc;

use ferry_protocol::LabelSet;
#[cfg(test)]
use ferry_protocol::{SymbolTable, rw1, rw2};

use crate::scrape::parse::MetricType;
use crate::series_labels::SeriesLabels;

/// A series' share of a request.
#[derive(Debug, Clone)]
pub struct SeriesData {
    pub labels: SeriesLabels,
    /// (timestamp ms, value), ascending.
    pub samples: Vec<(i64, f64)>,
    pub exemplars: Vec<(LabelSet, f64, i64)>,
    /// (type, help, unit) of the series' metric family, when known.
    pub metadata: Option<Arc<(MetricType, String, String)>>,
    /// RW2 `start_timestamp` (ms) from the family's OpenMetrics `_created` series; 0 = unset.
    pub start_timestamp: i64,
}

/// Sets `start_timestamp` of counter, summary and histogram series from the `<family>_created`
/// series scraped alongside them (same labels, `le` and `quantile` aside).
pub fn apply_created(series: &mut [SeriesData]) {
    fn key(ls: &SeriesLabels, family: &str) -> String {
        let mut k = family.to_owned();
        for l in ls.iter().filter(|l| !matches!(l.name, "__name__" | "le" | "quantile")) {
            k.push('\u{0}');
            k.push_str(l.name);
            k.push('=');
            k.push_str(l.value);
        }
        k
    }
    let created: std::collections::HashMap<String, f64> = series
        .iter()
        .filter_map(|s| {
            let family = s.labels.metric_name()?.strip_suffix("_created")?;
            let v = s.samples.last()?.1;
            v.is_finite().then(|| (key(&s.labels, family), v))
        })
        .collect();
    if created.is_empty() {
        return;
    }
    for s in series.iter_mut() {
        let Some(name) = s.labels.metric_name() else {
            continue;
        };
        let family = ["_total", "_count", "_sum", "_bucket"].iter().find_map(|suf| name.strip_suffix(suf));
        if let Some(v) = family.and_then(|f| created.get(&key(&s.labels, f))) {
            // 0 means unset on the wire; the spec says to send 1 ms for the epoch itself.
            s.start_timestamp = ((v * 1000.0) as i64).max(1);
        }
    }
}

/// What one request carries, kept decoded so it can be re-encoded (RW2 → RW1 fallback).
#[derive(Debug, Clone, Default)]
pub struct Payload {
    pub series: Vec<SeriesData>,
    /// RW1 metadata entries (family, type, help, unit) that changed in these scrapes.
    pub metadata: Vec<(String, MetricType, String, String)>,
}

impl Payload {
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    pub fn exemplars(&self) -> usize {
        self.series.iter().map(|s| s.exemplars.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.metadata.is_empty()
    }

    /// The request built with prost: the reference `wire::rw1` is tested against (the
    /// sender itself encodes with `wire`, which skips the intermediate structs).
    #[cfg(test)]
    pub fn rw1(&self, send_exemplars: bool) -> rw1::WriteRequest {
        rw1::WriteRequest {
            timeseries: self
                .series
                .iter()
                .map(|s| rw1::TimeSeries {
                    labels: s.labels.to_label_set().into_vec(),
                    samples: s
                        .samples
                        .iter()
                        .map(|&(timestamp, value)| rw1::Sample { value, timestamp })
                        .collect(),
                    exemplars: if send_exemplars {
                        s.exemplars
                            .iter()
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
            .series
            .iter()
            .map(|s| {
                let mut labels_refs = Vec::with_capacity(s.labels.len() * 2);
                table.symbolize_labels(&s.labels.to_label_set(), &mut labels_refs);
                let exemplars = s
                    .exemplars
                    .iter()
                    .map(|(l, v, t)| {
                        let mut refs = Vec::new();
                        table.symbolize_labels(l, &mut refs);
                        rw2::Exemplar { labels_refs: refs, value: *v, timestamp: *t }
                    })
                    .collect();
                let metadata = s.metadata.as_ref().map(|m| rw2::Metadata {
                    r#type: m.0.wire(),
                    help_ref: table.symbolize(&m.1),
                    unit_ref: table.symbolize(&m.2),
                });
                rw2::TimeSeries {
                    labels_refs,
                    samples: s
                        .samples
                        .iter()
                        .map(|&(timestamp, value)| rw2::Sample {
                            value,
                            timestamp,
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

    #[test]
    fn rw1_and_rw2_carry_the_same_series() {
        let ls = SeriesLabels::from_set(&LabelSet::from_pairs([("__name__", "up"), ("job", "j")]).unwrap());
        let p = Payload {
            series: vec![SeriesData {
                labels: ls.clone(),
                samples: vec![(1, 1.0), (2, ferry_protocol::STALE_NAN)],
                exemplars: vec![(LabelSet::from_pairs([("trace_id", "t")]).unwrap(), 1.0, 1)],
                metadata: Some(Arc::new((MetricType::Gauge, "Up.".into(), String::new()))),
                start_timestamp: 0,
            }],
            metadata: vec![],
        };
        let r1 = p.rw1(false);
        assert_eq!(r1.timeseries[0].labels, ls.to_label_set().as_slice());
        assert!(r1.timeseries[0].exemplars.is_empty());
        assert!(ferry_protocol::is_stale(r1.timeseries[0].samples[1].value));
        let mut t = SymbolTable::new();
        let r2 = p.rw2(&mut t);
        assert_eq!(r2.symbols[0], "");
        assert_eq!(resolve_label_set(&r2.timeseries[0].labels_refs, &r2.symbols).unwrap(), ls.to_label_set());
        assert_eq!(r2.timeseries[0].metadata.unwrap().r#type, 2);
        assert_eq!(r2.timeseries[0].exemplars.len(), 1);
        assert!(family_candidates("http_requests_total").any(|f| f == "http_requests"));
    }

    #[test]
    fn created_series_become_start_timestamps() {
        let sd = |pairs: &[(&str, &str)], v: f64| SeriesData {
            labels: SeriesLabels::from_set(&LabelSet::from_pairs(pairs.iter().copied()).unwrap()),
            samples: vec![(2_000_000, v)],
            exemplars: vec![],
            metadata: None,
            start_timestamp: 0,
        };
        let mut series = vec![
            sd(&[("__name__", "req_total"), ("code", "200")], 5.0),
            sd(&[("__name__", "req_created"), ("code", "200")], 1520872607.123),
            sd(&[("__name__", "req_total"), ("code", "500")], 1.0),
            sd(&[("__name__", "lat_bucket"), ("le", "0.5")], 3.0),
            sd(&[("__name__", "lat_created")], 1000.0),
        ];
        apply_created(&mut series);
        assert_eq!(series[0].start_timestamp, 1_520_872_607_123);
        assert_eq!(series[2].start_timestamp, 0, "no _created for code=500");
        assert_eq!(series[3].start_timestamp, 1_000_000, "le is ignored when matching");
        let mut t = SymbolTable::new();
        let r = Payload { series, metadata: vec![] }.rw2(&mut t);
        assert_eq!(r.timeseries[0].samples[0].start_timestamp, 1_520_872_607_123);
    }
}
