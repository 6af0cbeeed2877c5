//! Remote-Write 2.0 messages (`io.prometheus.write.v2.Request`, spec 2.0-rc.4).
//!
//! Strings live once in `Request.symbols`; series, exemplars and metadata refer to them by
//! index (see [`crate::symbols`]). Field numbers follow `prompb/io/prometheus/write/v2/types.proto`
//! at rc.4: `Sample.start_timestamp = 3`, `Histogram.start_timestamp = 17`, and
//! `TimeSeries` field 6 (rc.3's `created_timestamp`) reserved.

use prost::{Enumeration, Message};

pub use crate::rw1::BucketSpan;

/// The body of an RW2 request.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    // Fields 1..=3 are reserved so that decoding an RW1 body as RW2 (or the reverse) yields an
    // empty message rather than garbage.
    /// Deduplicated strings; `symbols[0]` MUST be `""`.
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// `[name_ref, value_ref]*` into `Request.symbols`. Packed on the wire by default; decoders
    /// accept the unpacked form too.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// Samples or histograms, never both, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<Metadata>,
    // Field 6 is reserved (rc.3 `created_timestamp`).
}

#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    /// 0 means unset; senders use ±1 to mean the epoch itself.
    #[prost(int64, tag = "3")]
    pub start_timestamp: i64,
}

/// `Metadata.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unspecified = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Gaugehistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Metadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    // There is no field 2.
    /// Index into `symbols`; 0 (`""`) means no help.
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    /// Index into `symbols`; 0 (`""`) means no unit.
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// `Histogram.ResetHint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum ResetHint {
    Unspecified = 0,
    Yes = 1,
    No = 2,
    Gauge = 3,
}

/// A native histogram sample; same shape as RW1's plus `start_timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// -4..=8 for exponential buckets; -53 for custom buckets (NHCB).
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    #[prost(enumeration = "ResetHint", tag = "14")]
    pub reset_hint: i32,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Inclusive upper bounds for schema -53, strictly increasing and finite.
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
    #[prost(int64, tag = "17")]
    pub start_timestamp: i64,
}

/// The `oneof` parts of [`Histogram`]; identical on the wire to RW1's.
pub mod histogram {
    pub use crate::rw1::histogram::{Count, ZeroCount};
}

/// RW1 and RW2 histograms share fields 1..=16; RW2 adds `start_timestamp` (0 = unset).
impl From<crate::rw1::Histogram> for Histogram {
    fn from(h: crate::rw1::Histogram) -> Self {
        Histogram {
            count: h.count,
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: h.zero_count,
            negative_spans: h.negative_spans,
            negative_deltas: h.negative_deltas,
            negative_counts: h.negative_counts,
            positive_spans: h.positive_spans,
            positive_deltas: h.positive_deltas,
            positive_counts: h.positive_counts,
            reset_hint: h.reset_hint,
            timestamp: h.timestamp,
            custom_values: h.custom_values,
            start_timestamp: 0,
        }
    }
}

/// The reverse; `start_timestamp` has no RW1 field and is dropped.
impl From<Histogram> for crate::rw1::Histogram {
    fn from(h: Histogram) -> Self {
        crate::rw1::Histogram {
            count: h.count,
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: h.zero_count,
            negative_spans: h.negative_spans,
            negative_deltas: h.negative_deltas,
            negative_counts: h.negative_counts,
            positive_spans: h.positive_spans,
            positive_deltas: h.positive_deltas,
            positive_counts: h.positive_counts,
            reset_hint: h.reset_hint,
            timestamp: h.timestamp,
            custom_values: h.custom_values,
        }
    }
}
