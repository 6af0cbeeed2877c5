//! Protobuf bytes for remote-write requests written straight from the queue's data, without
//! building `prost` structs (which would clone every label string of every sample). Field
//! numbers are those of `ferry_protocol::rw1` / `rw2`; the `encode_matches_prost` test
//! decodes both forms and compares.

use ferry_protocol::SymbolTable;

use super::encode::Payload;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, ((field as u64) << 3) | wire as u64);
}

fn len_field(out: &mut Vec<u8>, field: u32, len: usize) {
    key(out, field, 2);
    put_varint(out, len as u64);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    len_field(out, field, b.len());
    out.extend_from_slice(b);
}

fn field_len(field: u32, len: usize) -> usize {
    varint_len(((field as u64) << 3) | 2) + varint_len(len as u64) + len
}

/// `Sample { value = 1; timestamp = 2 }` (RW1), optional `start_timestamp = 3` (RW2).
fn sample_len(ts: i64, st: i64) -> usize {
    9 + 1 + varint_len(ts as u64) + if st != 0 { 1 + varint_len(st as u64) } else { 0 }
}

fn put_sample(out: &mut Vec<u8>, field: u32, value: f64, ts: i64, st: i64) {
    len_field(out, field, sample_len(ts, st));
    key(out, 1, 1);
    out.extend_from_slice(&value.to_bits().to_le_bytes());
    key(out, 2, 0);
    put_varint(out, ts as u64);
    if st != 0 {
        key(out, 3, 0);
        put_varint(out, st as u64);
    }
}

/// Length of an RW1 `Label { name = 1; value = 2 }`.
fn label_len(name: &str, value: &str) -> usize {
    field_len(1, name.len()) + field_len(2, value.len())
}

/// Length of an exemplar's body (RW1 labels inline; RW2 refs are measured by the caller).
fn exemplar_tail_len(ts: i64) -> usize {
    9 + 1 + varint_len(ts as u64)
}

/// An RW1 `WriteRequest`.
pub fn rw1(p: &Payload, send_exemplars: bool, out: &mut Vec<u8>) {
    out.clear();
    for run in p.runs() {
        let labels = &run[0].series.labels;
        let labels_len: usize = labels.iter().map(|l| field_len(1, label_len(l.name, l.value))).sum();
        let samples_len: usize = run.iter().map(|s| field_len(2, sample_len(s.timestamp, 0))).sum();
        let ex_len = |e: &(ferry_protocol::LabelSet, f64, i64)| -> usize {
            let l: usize = e.0.iter().map(|l| field_len(1, label_len(&l.name, &l.value))).sum();
            l + exemplar_tail_len(e.2)
        };
        let exemplars = run.iter().flat_map(|s| s.exemplars()).filter(|_| send_exemplars);
        let exemplars_len: usize = exemplars.clone().map(|e| field_len(3, ex_len(e))).sum();
        len_field(out, 1, labels_len + samples_len + exemplars_len);
        for l in labels.iter() {
            len_field(out, 1, label_len(l.name, l.value));
            bytes_field(out, 1, l.name.as_bytes());
            bytes_field(out, 2, l.value.as_bytes());
        }
        for s in run {
            put_sample(out, 2, s.value, s.timestamp, 0);
        }
        for e in exemplars {
            len_field(out, 3, ex_len(e));
            for l in e.0.iter() {
                len_field(out, 1, label_len(&l.name, &l.value));
                bytes_field(out, 1, l.name.as_bytes());
                bytes_field(out, 2, l.value.as_bytes());
            }
            key(out, 2, 1);
            out.extend_from_slice(&e.1.to_bits().to_le_bytes());
            key(out, 3, 0);
            put_varint(out, e.2 as u64);
        }
    }
    for (family, kind, help, unit) in &p.metadata {
        let body = 1
            + varint_len(kind.wire() as u64)
            + field_len(2, family.len())
            + field_len(4, help.len())
            + field_len(5, unit.len());
        len_field(out, 3, body);
        key(out, 1, 0);
        put_varint(out, kind.wire() as u64);
        bytes_field(out, 2, family.as_bytes());
        bytes_field(out, 4, help.as_bytes());
        bytes_field(out, 5, unit.as_bytes());
    }
}

fn put_refs(out: &mut Vec<u8>, refs: &[u32]) {
    for &r in refs {
        put_varint(out, r as u64);
    }
}

fn refs_len(refs: &[u32]) -> usize {
    refs.iter().map(|&r| varint_len(r as u64)).sum()
}

/// Hashes a label's address (a [`LabelKey`](crate::series_labels::LabelKey) id): one
/// multiply, folded so that the low bits, which hashbrown indexes by, depend on every bit of
/// the address (allocations are aligned, so an address's own low bits are all zero).
#[derive(Debug, Default, Clone, Copy)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `usize` keys are hashed with this, through `write_usize`.
        for &b in bytes {
            self.write_usize(b as usize);
        }
    }
    fn write_usize(&mut self, v: usize) {
        let m = (self.0 ^ v as u64) as u128 * 0x9e37_79b9_7f4a_7c15;
        self.0 = (m >> 64) as u64 ^ m as u64;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// What an RW2 encoding reuses from request to request: the symbol table, the series bytes
/// and the labels already symbolised in the current request.
#[derive(Debug, Default)]
pub struct Rw2Encoder {
    table: SymbolTable,
    series_buf: Vec<u8>,
    /// This request's labels by identity: their name and value refs.
    label_refs: AddressMap,
    /// This request's family metadata by identity (the queue shares one `FamilyMeta` per
    /// family): the help and unit refs. Help texts are long to hash.
    meta_refs: AddressMap,
}

type AddressMap = hashbrown::HashMap<usize, (u32, u32), std::hash::BuildHasherDefault<AddressHasher>>;

impl Rw2Encoder {
    pub fn new() -> Rw2Encoder {
        Rw2Encoder::default()
    }

    /// An RW2 `Request`: the series first (interning as it goes), then the symbol table.
    pub fn encode(&mut self, p: &Payload, out: &mut Vec<u8>) {
        let Rw2Encoder { table, series_buf, label_refs, meta_refs } = self;
        table.reset();
        series_buf.clear();
        label_refs.clear();
        meta_refs.clear();
        let mut refs: Vec<u32> = Vec::with_capacity(32);
        // The previous series' labels and refs by position. A scrape lists a family's series
        // together, so the label names, and most values (a histogram's buckets differ only
        // in `le`), are the previous series' at the same position: one compare of interned
        // labels' addresses, where a table lookup would hash and compare their text.
        let mut prev: Vec<(usize, u32, u32)> = Vec::with_capacity(16);
        let mut ex_refs: Vec<Vec<u32>> = Vec::new();
        for run in p.runs() {
            let series = &run[0].series;
            let st = run[0].start_timestamp;
            refs.clear();
            for (i, key) in series.labels.keys().enumerate() {
                let id = key.id();
                let (n, v) = match prev.get(i) {
                    Some(&(p, n, v)) if p == id => (n, v),
                    _ => {
                        let (n, v) = *label_refs.entry(id).or_insert_with(|| {
                            let l = key.label();
                            (table.symbolize(l.name), table.symbolize(l.value))
                        });
                        if i < prev.len() {
                            prev[i] = (id, n, v);
                        } else {
                            prev.push((id, n, v));
                        }
                        (n, v)
                    }
                };
                refs.push(n);
                refs.push(v);
            }
            let labels_len = refs_len(&refs);
            let samples_len: usize = run.iter().map(|s| field_len(2, sample_len(s.timestamp, st))).sum();
            let exemplars = run.iter().flat_map(|s| s.exemplars());
            ex_refs.clear();
            let mut ex_len = 0;
            for e in exemplars.clone() {
                let mut r = Vec::new();
                table.symbolize_labels(&e.0, &mut r);
                let body = if r.is_empty() { 0 } else { field_len(1, refs_len(&r)) } + exemplar_tail_len(e.2);
                ex_len += field_len(4, body);
                ex_refs.push(r);
            }
            let md = series.metadata.as_ref().map(|m| {
                let (h, u) = *meta_refs
                    .entry(std::sync::Arc::as_ptr(m) as usize)
                    .or_insert_with(|| (table.symbolize(&m.1), table.symbolize(&m.2)));
                (m.0.wire() as u64, h as u64, u as u64)
            });
            let md_len = md.map_or(0, |(t, h, u)| {
                field_len(5, 1 + varint_len(t) + 1 + varint_len(h) + 1 + varint_len(u))
            });
            len_field(series_buf, 5, field_len(1, labels_len) + samples_len + ex_len + md_len);
            len_field(series_buf, 1, labels_len);
            put_refs(series_buf, &refs);
            for s in run {
                put_sample(series_buf, 2, s.value, s.timestamp, st);
            }
            for (e, r) in exemplars.zip(&ex_refs) {
                let body = if r.is_empty() { 0 } else { field_len(1, refs_len(r)) } + exemplar_tail_len(e.2);
                len_field(series_buf, 4, body);
                if !r.is_empty() {
                    len_field(series_buf, 1, refs_len(r));
                    put_refs(series_buf, r);
                }
                key(series_buf, 2, 1);
                series_buf.extend_from_slice(&e.1.to_bits().to_le_bytes());
                key(series_buf, 3, 0);
                put_varint(series_buf, e.2 as u64);
            }
            if let Some((t, h, u)) = md {
                len_field(series_buf, 5, 1 + varint_len(t) + 1 + varint_len(h) + 1 + varint_len(u));
                key(series_buf, 1, 0);
                put_varint(series_buf, t);
                key(series_buf, 3, 0);
                put_varint(series_buf, h);
                key(series_buf, 4, 0);
                put_varint(series_buf, u);
            }
        }
        out.clear();
        for sym in table.iter() {
            bytes_field(out, 4, sym.as_bytes());
        }
        out.extend_from_slice(series_buf);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_protocol::{LabelSet, STALE_NAN, rw1, rw2};
    use prost::Message;

    use super::*;
    use crate::remote::encode::{Sample, SeriesInfo, SeriesRef};
    use crate::scrape::parse::MetricType;

    fn payload() -> Payload {
        let info = |pairs: &[(&str, &str)], metadata| {
            let ls = LabelSet::from_pairs(pairs.iter().copied()).unwrap();
            SeriesRef::single(SeriesInfo::new(crate::series_labels::SeriesLabels::from_set(&ls), metadata))
        };
        let up = info(
            &[("__name__", "up"), ("job", "j"), ("instance", "h:1")],
            Some(Arc::new((MetricType::Gauge, "Health.".into(), String::new()))),
        );
        let x = info(&[("__name__", "x"), ("v", "é\\n\"")], None);
        let with = |mut s: Sample, st: i64, ex: Vec<(LabelSet, f64, i64)>| {
            s.start_timestamp = st;
            s.exemplars = (!ex.is_empty()).then(|| Box::new(ex));
            s
        };
        Payload {
            samples: vec![
                with(
                    Sample::new(up.clone(), 1_700_000_000_000, 1.0),
                    1_699_000_000_000,
                    vec![(LabelSet::from_pairs([("trace_id", "abc")]).unwrap(), 2.5, 1_700_000_000_001)],
                ),
                with(Sample::new(up.clone(), 1_700_000_015_000, STALE_NAN), 1_699_000_000_000, vec![]),
                with(Sample::new(up.clone(), -5, 0.0), 1_699_000_000_000, vec![]),
                with(Sample::new(x.clone(), 0, f64::NAN), 0, vec![(LabelSet::new(), 1.0, 0)]),
                // The same series again after another: a TimeSeries of its own.
                Sample::new(up, 1_700_000_030_000, 2.0),
            ],
            metadata: vec![("up".into(), MetricType::Gauge, "Health.".into(), "".into())],
        }
    }

    #[test]
    fn encode_matches_prost() {
        let p = payload();
        for exemplars in [false, true] {
            let mut out = Vec::new();
            rw1(&p, exemplars, &mut out);
            let ours = rw1::WriteRequest::decode(out.as_slice()).unwrap();
            let want = p.rw1(exemplars);
            assert_eq!(format!("{ours:?}"), format!("{want:?}"));
            assert_eq!(ours.timeseries[0].samples[1].value.to_bits(), STALE_NAN.to_bits());
        }
        let mut enc = Rw2Encoder::new();
        let mut out = Vec::new();
        // Twice: the second request must not see the first one's refs.
        for _ in 0..2 {
            enc.encode(&p, &mut out);
            let ours = rw2::Request::decode(out.as_slice()).unwrap();
            let want = p.rw2(&mut SymbolTable::new());
            assert_eq!(format!("{ours:?}"), format!("{want:?}"));
        }
    }
}
