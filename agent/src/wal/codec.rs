//! The payload of a WAL record: one scrape batch, self-contained.
//!
//! ```text
//! target u64 LE | timestamp i64 LE | error flag u8
//! defs:     count varint, then per series: id varint, label count varint,
//!           (name len varint, name, value len varint, value)*
//! samples:  count varint, then per sample: head varint = zigzag(id - prev id) << 2 | kind,
//!           kind bit 0: the value is an integer (zigzag varint follows) else 8 bytes raw bits,
//!           kind bit 1: an explicit timestamp follows (zigzag varint delta from the batch's)
//! exemplars: count varint, then: id varint, ts zigzag delta, value bits u64, labels as above
//! metadata: count varint, then: family, type u8, help, unit (length-prefixed strings)
//! ```
//!
//! Integral values (counters, most gauges) take 1–4 bytes instead of 8, and a sample at the
//! scrape's own timestamp stores no timestamp, which is how a record stays small without
//! depending on any other record. Stale markers and every NaN keep their exact bits.

use ferry_protocol::{Label, LabelSet};

use crate::scrape::batch::{BatchExemplar, BatchMetadata, BatchSample, ScrapeBatch, SeriesDef};
use crate::scrape::parse::MetricType;
use crate::series_labels::SeriesLabels;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_labels(out: &mut Vec<u8>, ls: &LabelSet) {
    put_varint(out, ls.len() as u64);
    for l in ls {
        put_str(out, &l.name);
        put_str(out, &l.value);
    }
}

/// The same encoding as [`put_labels`], from a series' compact labels.
fn put_series_labels(out: &mut Vec<u8>, ls: &SeriesLabels) {
    put_varint(out, ls.len() as u64);
    for l in ls {
        put_str(out, l.name);
        put_varint(out, l.value.len() as u64);
        l.value.put(out);
    }
}

/// An integer-valued float that round-trips through i64 exactly (not -0.0).
pub(crate) fn as_int(v: f64) -> Option<i64> {
    let i = v as i64;
    (i as f64 == v && (i != 0 || v.to_bits() == 0) && i.unsigned_abs() < (1 << 53)).then_some(i)
}

fn kind_type(k: MetricType) -> u8 {
    k.wire() as u8
}

fn type_kind(b: u8) -> MetricType {
    match b {
        1 => MetricType::Counter,
        2 => MetricType::Gauge,
        3 => MetricType::Histogram,
        4 => MetricType::GaugeHistogram,
        5 => MetricType::Summary,
        6 => MetricType::Info,
        7 => MetricType::StateSet,
        _ => MetricType::Unknown,
    }
}

/// Encodes `b`, with `defs` as the series definitions this record must carry; returns how
/// many of the bytes written are those definitions.
pub fn encode(b: &ScrapeBatch, defs: &[SeriesDef], out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&b.target.to_le_bytes());
    out.extend_from_slice(&b.timestamp.to_le_bytes());
    out.push(u8::from(b.error.is_some()));
    let defs_start = out.len();
    put_varint(out, defs.len() as u64);
    for d in defs {
        put_varint(out, d.id);
        put_series_labels(out, &d.labels);
    }
    let defs_len = out.len() - defs_start;
    put_varint(out, b.samples.len() as u64);
    let mut prev = 0i64;
    for s in &b.samples {
        let delta = s.series as i64 - prev;
        prev = s.series as i64;
        let int = as_int(s.value);
        let explicit = s.timestamp != b.timestamp;
        let kind = u64::from(int.is_some()) | (u64::from(explicit) << 1);
        put_varint(out, (zigzag(delta) << 2) | kind);
        if explicit {
            put_varint(out, zigzag(s.timestamp.wrapping_sub(b.timestamp)));
        }
        match int {
            Some(i) => put_varint(out, zigzag(i)),
            None => out.extend_from_slice(&s.value.to_bits().to_le_bytes()),
        }
    }
    put_varint(out, b.exemplars.len() as u64);
    for e in &b.exemplars {
        put_varint(out, e.series);
        put_varint(out, zigzag(e.timestamp.wrapping_sub(b.timestamp)));
        out.extend_from_slice(&e.value.to_bits().to_le_bytes());
        put_labels(out, &e.labels);
    }
    put_varint(out, b.metadata.len() as u64);
    for m in &b.metadata {
        put_str(out, &m.metric_family);
        out.push(kind_type(m.kind));
        put_str(out, &m.help);
        put_str(out, &m.unit);
    }
    defs_len
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64le(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    fn len(&mut self) -> Option<usize> {
        let n = self.varint()?;
        (n <= self.0.len() as u64).then_some(n as usize)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn skip_labels(&mut self) -> Option<()> {
        for _ in 0..self.len()? {
            let n = self.len()?;
            self.take(n)?;
            let n = self.len()?;
            self.take(n)?;
        }
        Some(())
    }

    fn labels(&mut self) -> Option<LabelSet> {
        let n = self.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Label { name: self.str()?, value: self.str()? });
        }
        LabelSet::from_labels(v).ok()
    }

    /// Built on `near`, the definition decoded before it (a record lists a scrape's new
    /// series in scrape order, so a family's series come together).
    fn series_labels(&mut self, near: Option<&SeriesLabels>) -> Option<SeriesLabels> {
        self.labels().map(|ls| SeriesLabels::from_set_near(&ls, near))
    }
}

/// Decodes a record payload; `None` if it is malformed (the CRC makes that unlikely).
pub fn decode(payload: &[u8]) -> Option<ScrapeBatch> {
    decode_with(payload, |_| None)
}

/// Like [`decode`], but a definition whose labels `known` already has is not decoded again:
/// the shared copy is used, so readers do not duplicate every label set in memory.
pub fn decode_with(
    payload: &[u8],
    mut known: impl FnMut(u64) -> Option<SeriesLabels>,
) -> Option<ScrapeBatch> {
    let mut r = Reader(payload);
    let target = r.u64le()?;
    let timestamp = r.u64le()? as i64;
    let error = (r.u8()? != 0).then(|| "scrape failed".to_owned());
    let mut new_series = Vec::new();
    for _ in 0..r.len()? {
        let id = r.varint()?;
        let labels = match known(id) {
            Some(l) => {
                r.skip_labels()?;
                l
            }
            None => r.series_labels(new_series.last().map(|d: &SeriesDef| &d.labels))?,
        };
        new_series.push(SeriesDef { id, labels });
    }
    let n = r.len()?;
    let mut samples = Vec::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        let head = r.varint()?;
        let id = prev.wrapping_add(unzigzag(head >> 2));
        prev = id;
        let ts = if head & 2 != 0 { timestamp.wrapping_add(unzigzag(r.varint()?)) } else { timestamp };
        let value = if head & 1 != 0 { unzigzag(r.varint()?) as f64 } else { f64::from_bits(r.u64le()?) };
        samples.push(BatchSample { series: id as u64, timestamp: ts, value });
    }
    let mut exemplars = Vec::new();
    for _ in 0..r.len()? {
        let series = r.varint()?;
        let ts = timestamp.wrapping_add(unzigzag(r.varint()?));
        let value = f64::from_bits(r.u64le()?);
        exemplars.push(BatchExemplar { series, labels: r.labels()?, value, timestamp: ts });
    }
    let mut metadata = Vec::new();
    for _ in 0..r.len()? {
        let metric_family = r.str()?;
        let kind = type_kind(r.u8()?);
        metadata.push(BatchMetadata { metric_family, kind, help: r.str()?, unit: r.str()? });
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(ScrapeBatch { target, timestamp, new_series, samples, exemplars, metadata, error, gone: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::STALE_NAN;
    use proptest::prelude::*;

    fn batch() -> ScrapeBatch {
        let ls =
            |n: &str| SeriesLabels::from_set(&LabelSet::from_pairs([("__name__", n), ("job", "j")]).unwrap());
        ScrapeBatch {
            target: 42,
            timestamp: 1_700_000_000_000,
            new_series: vec![SeriesDef { id: 7, labels: ls("a") }, SeriesDef { id: 9, labels: ls("b") }],
            samples: vec![
                BatchSample { series: 7, timestamp: 1_700_000_000_000, value: 12.0 },
                BatchSample { series: 9, timestamp: 1_700_000_000_000, value: 0.25 },
                BatchSample { series: 8, timestamp: 1_699_999_999_000, value: STALE_NAN },
                BatchSample { series: 3, timestamp: 1_700_000_000_000, value: -0.0 },
                BatchSample { series: 4, timestamp: 1_700_000_000_000, value: f64::NAN },
            ],
            exemplars: vec![BatchExemplar {
                series: 7,
                labels: LabelSet::from_pairs([("trace_id", "t")]).unwrap(),
                value: 1.5,
                timestamp: 1_700_000_000_001,
            }],
            metadata: vec![BatchMetadata {
                metric_family: "a".into(),
                kind: MetricType::Counter,
                help: "h".into(),
                unit: "".into(),
            }],
            error: None,
            gone: Vec::new(),
        }
    }

    #[test]
    fn round_trip_keeps_every_bit() {
        let b = batch();
        let mut out = Vec::new();
        encode(&b, &b.new_series, &mut out);
        let d = decode(&out).unwrap();
        assert_eq!(d.new_series, b.new_series);
        assert_eq!(d.exemplars, b.exemplars);
        assert_eq!(d.metadata, b.metadata);
        let bits = |v: &[BatchSample]| {
            v.iter().map(|s| (s.series, s.timestamp, s.value.to_bits())).collect::<Vec<_>>()
        };
        assert_eq!(bits(&d.samples), bits(&b.samples));
        // Truncations are refused, not misread.
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn integral_samples_are_small() {
        let samples: Vec<BatchSample> =
            (0..1000).map(|i| BatchSample { series: 100 + i, timestamp: 5, value: (i * 3) as f64 }).collect();
        let b = ScrapeBatch { timestamp: 5, samples, ..Default::default() };
        let mut out = Vec::new();
        encode(&b, &[], &mut out);
        assert!(out.len() < 1000 * 4, "{} bytes for 1000 samples", out.len());
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(
            samples in prop::collection::vec((0u64..1000, -5i64..5, any::<u64>(), any::<bool>()), 0..50)
        ) {
            let b = ScrapeBatch {
                timestamp: 1000,
                samples: samples.iter().map(|&(id, dt, bits, int)| BatchSample {
                    series: id,
                    timestamp: 1000 + dt,
                    value: if int { (bits as i32) as f64 } else { f64::from_bits(bits) },
                }).collect(),
                ..Default::default()
            };
            let mut out = Vec::new();
            encode(&b, &[], &mut out);
            let d = decode(&out).unwrap();
            let bits = |v: &[BatchSample]| v.iter().map(|s| (s.series, s.timestamp, s.value.to_bits())).collect::<Vec<_>>();
            prop_assert_eq!(bits(&d.samples), bits(&b.samples));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
