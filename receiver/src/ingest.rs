//! Turns decoded RW1 and RW2 requests into store writes, checking every series on the way:
//! label refs, names, duplicates, the tenant's label limits and enforced labels, "at least one
//! sample or histogram" (RW2), histogram validity. A bad series is reported, one line each, and
//! the rest of the request still goes in (the handler then answers 400).

use ferry_protocol::symbols::{resolve_labels, resolve_ref};
use ferry_protocol::{Label, LabelError, LabelSet, NameValidation, rw1, rw2};
use prost::Message;

use crate::config::{Limits, TenantConfig};
use crate::histogram;
use crate::store::{ExemplarWrite, Metadata, SeriesWrite, WriteBatch};

/// What a tenant's series must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub limits: &'a Limits,
    pub tenant: Option<&'a TenantConfig>,
}

/// A request ready for the store, plus the series refused before it got there.
#[derive(Debug, Default)]
pub struct Converted {
    pub batch: WriteBatch,
    pub rejected: Vec<String>,
    /// Samples plus histograms, for the rate limit.
    pub points: usize,
}

impl Converted {
    fn push(&mut self, sw: SeriesWrite) {
        self.points += sw.samples.len() + sw.histograms.len();
        self.batch.series.push(sw);
    }
}

/// Builds and checks a series' label set.
fn check_labels(labels: Vec<Label>, rules: Rules<'_>) -> Result<LabelSet, String> {
    // Error messages show the labels as sent; only unsorted input (where sorting would lose
    // that order) keeps a copy, so the common path allocates nothing extra.
    let shown = |labels: &[Label]| {
        let parts: Vec<String> = labels.iter().map(|l| format!("{}={:?}", l.name, l.value)).collect();
        format!("{{{}}}", parts.join(", "))
    };
    let original = (!labels.windows(2).all(|w| w[0].name < w[1].name)).then(|| labels.clone());
    let mut ls = match LabelSet::from_labels(labels) {
        Ok(ls) => ls,
        Err(LabelError::DuplicateName(n)) => {
            let sent = shown(original.as_deref().unwrap_or_default());
            return Err(format!("invalid labels for series, labels {sent}, duplicated label {n}"));
        }
        Err(e) => {
            let sent = shown(original.as_deref().unwrap_or_default());
            return Err(format!("invalid metric name or labels, got {sent}: {e}"));
        }
    };
    ls.validate(NameValidation::Utf8).map_err(|e| format!("invalid metric name or labels, got {ls}: {e}"))?;
    let l = rules.limits;
    if l.max_labels_per_series > 0 && ls.len() > l.max_labels_per_series {
        return Err(format!(
            "series {ls} has {} labels, over the limit of {} (max_labels_per_series)",
            ls.len(),
            l.max_labels_per_series
        ));
    }
    for label in &ls {
        if l.max_label_name_length > 0 && label.name.len() > l.max_label_name_length {
            return Err(format!(
                "label name {:?} of series {ls} is {} bytes, over the limit of {} (max_label_name_length)",
                label.name,
                label.name.len(),
                l.max_label_name_length
            ));
        }
        if l.max_label_value_length > 0 && label.value.len() > l.max_label_value_length {
            return Err(format!(
                "value of label {:?} of series {ls} is {} bytes, over the limit of {} (max_label_value_length)",
                label.name,
                label.value.len(),
                l.max_label_value_length
            ));
        }
    }
    if let Some(t) = rules.tenant {
        for (name, value) in &t.enforced_labels {
            match ls.get(name) {
                Some(v) if v != value => {
                    return Err(format!(
                        "series {ls} has {name}={v:?}, but this tenant enforces {name}={value:?}"
                    ));
                }
                Some(_) => {}
                None => ls.set(name, value).map_err(|e| e.to_string())?,
            }
        }
    }
    Ok(ls)
}

fn encode_histogram(h: &rw2::Histogram) -> Vec<u8> {
    h.encode_to_vec()
}

/// RW1: series may carry only exemplars (Prometheus sends one datum per TimeSeries), and
/// metadata travels separately, per metric family.
pub fn from_rw1(req: rw1::WriteRequest, rules: Rules<'_>) -> Converted {
    let mut out = Converted::default();
    for md in req.metadata {
        if md.metric_family_name.is_empty() {
            out.rejected.push("metadata without a metric family name".into());
            continue;
        }
        out.batch
            .metadata
            .push((md.metric_family_name, Metadata { kind: md.r#type, help: md.help, unit: md.unit }));
    }
    for ts in req.timeseries {
        let labels = match check_labels(ts.labels, rules) {
            Ok(l) => l,
            Err(e) => {
                out.rejected.push(e);
                continue;
            }
        };
        let mut sw = SeriesWrite::new(&labels);
        sw.samples = ts.samples.iter().map(|s| (s.timestamp, s.value)).collect();
        for h in ts.histograms {
            let h = rw2::Histogram::from(h);
            match histogram::validate(&h) {
                Ok(()) => sw.histograms.push((h.timestamp, encode_histogram(&h))),
                Err(e) => out.rejected.push(format!("{e} for series {labels}")),
            }
        }
        for e in ts.exemplars {
            match LabelSet::from_labels(e.labels) {
                Ok(labels) => {
                    sw.exemplars.push(ExemplarWrite { labels, value: e.value, timestamp: e.timestamp })
                }
                Err(err) => out.rejected.push(format!("invalid exemplar labels for series {labels}: {err}")),
            }
        }
        out.push(sw);
    }
    out
}

/// RW2, in the order Prometheus checks: label refs, metadata refs, labels, "has data",
/// histograms, exemplars.
pub fn from_rw2(req: rw2::Request, rules: Rules<'_>) -> Converted {
    let mut out = Converted::default();
    let symbols = &req.symbols;
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        out.rejected.push(format!("symbols[0] must be the empty string, got {:?}", symbols[0]));
        return out;
    }
    for ts in req.timeseries {
        let pairs = match resolve_labels(&ts.labels_refs, symbols) {
            Ok(p) => p,
            Err(e) => {
                out.rejected.push(format!("parsing labels for series {:?}: {e}", ts.labels_refs));
                continue;
            }
        };
        let labels = match check_labels(pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect(), rules) {
            Ok(l) => l,
            Err(e) => {
                out.rejected.push(e);
                continue;
            }
        };
        let metadata = match ts.metadata.map(|m| -> Result<_, String> {
            let help =
                resolve_ref(m.help_ref, symbols).map_err(|e| format!("help_ref of series {labels}: {e}"))?;
            let unit =
                resolve_ref(m.unit_ref, symbols).map_err(|e| format!("unit_ref of series {labels}: {e}"))?;
            Ok(Metadata { kind: m.r#type, help: help.to_owned(), unit: unit.to_owned() })
        }) {
            Some(Err(e)) => {
                out.rejected.push(e);
                continue;
            }
            Some(Ok(m)) => Some(m),
            None => None,
        };
        if ts.samples.is_empty() && ts.histograms.is_empty() {
            out.rejected.push(format!(
                "TimeSeries must contain at least one sample or histogram for series {labels}"
            ));
            continue;
        }
        let mut sw = SeriesWrite::new(&labels);
        sw.samples = ts.samples.iter().map(|s| (s.timestamp, s.value)).collect();
        for h in &ts.histograms {
            match histogram::validate(h) {
                Ok(()) => sw.histograms.push((h.timestamp, encode_histogram(h))),
                Err(e) => out.rejected.push(format!("{e} for series {labels}")),
            }
        }
        for e in &ts.exemplars {
            let ex_labels = resolve_labels(&e.labels_refs, symbols)
                .map_err(|err| err.to_string())
                .and_then(|p| LabelSet::from_pairs(p).map_err(|err| err.to_string()));
            match ex_labels {
                Ok(l) => {
                    sw.exemplars.push(ExemplarWrite { labels: l, value: e.value, timestamp: e.timestamp })
                }
                Err(err) => out.rejected.push(format!("invalid exemplar labels for series {labels}: {err}")),
            }
        }
        // Prometheus sends UNSPECIFIED with no help or unit when it has no metadata; storing
        // that would blank out real metadata sent earlier.
        let metadata = metadata.filter(|m| *m != Metadata::default());
        if let (Some(md), Some(name)) = (metadata, labels.metric_name()) {
            // Metadata is per metric family: one entry per name is enough.
            if !out.batch.metadata.iter().any(|(n, m)| n == name && *m == md) {
                out.batch.metadata.push((name.to_owned(), md));
            }
        }
        out.push(sw);
    }
    out
}
