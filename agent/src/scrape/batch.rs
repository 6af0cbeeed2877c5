//! `ScrapeBatch`: everything one scrape produced, the unit the WAL and the remote-write queue
//! work with (DESIGN "Atomic scrapes": a batch enters the WAL as one record and leaves in one
//! request).

use ferry_protocol::LabelSet;

use super::parse::MetricType;
use crate::series_labels::SeriesLabels;

/// A series known to the agent: a stable id and its final labels.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesDef {
    pub id: u64,
    pub labels: SeriesLabels,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSample {
    pub series: u64,
    /// Milliseconds.
    pub timestamp: i64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchExemplar {
    pub series: u64,
    pub labels: LabelSet,
    pub value: f64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchMetadata {
    pub metric_family: String,
    pub kind: MetricType,
    pub help: String,
    pub unit: String,
}

/// One scrape's output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeBatch {
    /// `job/instance`-like identity of the target (its hash), for lane assignment.
    pub target: u64,
    /// The scrape timestamp, ms.
    pub timestamp: i64,
    /// Definitions of series that appear here for the first time since the loop started.
    pub new_series: Vec<SeriesDef>,
    /// User samples, then stale markers, then report series.
    pub samples: Vec<BatchSample>,
    pub exemplars: Vec<BatchExemplar>,
    /// Metadata that changed (or is new) since the previous scrape.
    pub metadata: Vec<BatchMetadata>,
    /// Whether the scrape succeeded (`up`), and why not.
    pub error: Option<String>,
    /// Series, defined by earlier batches, that this target will not use again (its cache
    /// forgot them, or the target went): the WAL may forget their labels once no segment on
    /// disk uses them. Not written to the WAL: after a restart nothing is known anyway.
    pub gone: Vec<u64>,
}
