//! Protobuf bytes for remote-write requests written straight from the queue's data, without
//! building `prost` structs (which would clone every label string of every sample). Field
//! numbers are those of `ferry_protocol::rw1` / `rw2`; the `encode_matches_prost` test
//! decodes both forms and compares.

use ferry_protocol::SymbolTable;

use super::encode::{Payload, WalLabels};

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// `v` as a varint in the first bytes of the array, and how many bytes it takes.
fn varint_bytes(mut v: u64) -> ([u8; 10], usize) {
    let mut b = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        b[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    b[n] = v as u8;
    (b, n + 1)
}

/// Appends the first `len` bytes of `bytes`: one fixed-size copy, then the rest is cut off.
/// Pushing byte by byte would check the capacity and store the length for every byte, which
/// made up most of the encoders' instructions.
fn put_fixed<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    debug_assert!(len <= N);
    let end = out.len() + len;
    out.extend_from_slice(bytes);
    out.truncate(end);
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else {
        let (b, n) = varint_bytes(v);
        put_fixed(out, &b, n);
    }
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

/// Length of an RW1 `Label { name = 1; value = 2 }`, from its name's and value's lengths.
fn label_len(name: usize, value: usize) -> usize {
    field_len(1, name) + field_len(2, value)
}

/// Length of an exemplar's body (RW1 labels inline; RW2 refs are measured by the caller).
fn exemplar_tail_len(ts: i64) -> usize {
    9 + 1 + varint_len(ts as u64)
}

/// An RW1 `WriteRequest`, the series' labels looked up in `wal` where their lists have none
/// of their own. Returns how many samples it left out because the WAL no longer has their
/// labels (its size cap dropped their segments).
pub fn rw1(p: &Payload, send_exemplars: bool, wal: &WalLabels, out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut tail = SampleTail::default();
    let mut left_out = 0;
    for run in p.runs() {
        let Some(keys) = run[0].series.keys(wal) else {
            left_out += run.len();
            continue;
        };
        let labels = || keys.clone().map(|k| k.label());
        let labels_len: usize = labels().map(|l| field_len(1, label_len(l.name.len(), l.value.len()))).sum();
        let samples_len: usize = run.iter().map(|s| field_len(2, sample_len(s.timestamp, 0))).sum();
        let ex_len = |e: &(ferry_protocol::LabelSet, f64, i64)| -> usize {
            let l: usize = e.0.iter().map(|l| field_len(1, label_len(l.name.len(), l.value.len()))).sum();
            l + exemplar_tail_len(e.2)
        };
        let exemplars = run.iter().flat_map(|s| s.exemplars()).filter(|_| send_exemplars);
        let exemplars_len: usize = exemplars.clone().map(|e| field_len(3, ex_len(e))).sum();
        len_field(out, 1, labels_len + samples_len + exemplars_len);
        for l in labels() {
            let value_len = l.value.len();
            len_field(out, 1, label_len(l.name.len(), value_len));
            bytes_field(out, 1, l.name.as_bytes());
            len_field(out, 2, value_len);
            l.value.put(out);
        }
        for s in run {
            tail.put(out, s.value, s.timestamp, 0);
        }
        for e in exemplars {
            len_field(out, 3, ex_len(e));
            for l in e.0.iter() {
                len_field(out, 1, label_len(l.name.len(), l.value.len()));
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
    left_out
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

/// Sets `v[i]`, growing `v` to it with copies of `x`. Every entry of the encoder's
/// per-position lists is a fact that holds wherever it sits (a label and its refs, a name
/// and its ref), so the filler is as true as the entry.
fn set_at<T: Copy>(v: &mut Vec<T>, i: usize, x: T) {
    if i < v.len() {
        v[i] = x;
    } else {
        v.resize(i + 1, x);
    }
}

/// A label's `[name_ref, value_ref]` as the varints `labels_refs` carries, ready to append
/// with one copy (two refs of at most 5 bytes each).
#[derive(Debug, Clone, Copy)]
struct RefPair {
    bytes: [u8; 10],
    len: u8,
}

impl RefPair {
    fn new(name: u32, value: u32) -> RefPair {
        let (n, nl) = varint_bytes(name as u64);
        let (v, vl) = varint_bytes(value as u64);
        let mut bytes = [0u8; 10];
        bytes[..nl].copy_from_slice(&n[..nl]);
        bytes[nl..nl + vl].copy_from_slice(&v[..vl]);
        RefPair { bytes, len: (nl + vl) as u8 }
    }
}

/// A series' whole `metadata` field (`5: Metadata { type, help_ref, unit_ref }`) as bytes:
/// key and length one byte each, then at most 2 + 6 + 6.
#[derive(Debug, Clone, Copy)]
struct MetaField {
    bytes: [u8; 16],
    len: u8,
}

impl MetaField {
    fn new(kind: u64, help: u32, unit: u32) -> MetaField {
        let mut body = Vec::with_capacity(16);
        key(&mut body, 1, 0);
        put_varint(&mut body, kind);
        key(&mut body, 3, 0);
        put_varint(&mut body, help as u64);
        key(&mut body, 4, 0);
        put_varint(&mut body, unit as u64);
        let mut bytes = [0u8; 16];
        bytes[0] = 5 << 3 | 2;
        bytes[1] = body.len() as u8;
        bytes[2..2 + body.len()].copy_from_slice(&body);
        MetaField { bytes, len: 2 + body.len() as u8 }
    }
}

/// A `samples` field (field 2 of a `TimeSeries` in RW1 and RW2 alike; RW1 has no start
/// timestamp, so passes 0) whose timestamps are those of the sample before, which is how a
/// scrape's samples come: everything but the value is kept encoded. The key and length take
/// a byte each (a sample is below 128 bytes), then 9 + 11 + 11 at most.
#[derive(Debug, Default)]
struct SampleTail {
    /// The timestamp and start timestamp `bytes` encode.
    at: Option<(i64, i64)>,
    /// Key and length of the `Sample`, then its value key; after the value, the timestamp
    /// fields.
    head: [u8; 3],
    bytes: [u8; 22],
    len: u8,
}

impl SampleTail {
    fn put(&mut self, out: &mut Vec<u8>, value: f64, ts: i64, st: i64) {
        if self.at != Some((ts, st)) {
            let mut b = Vec::with_capacity(22);
            key(&mut b, 2, 0);
            put_varint(&mut b, ts as u64);
            if st != 0 {
                key(&mut b, 3, 0);
                put_varint(&mut b, st as u64);
            }
            self.head = [2 << 3 | 2, sample_len(ts, st) as u8, 1 << 3 | 1];
            self.bytes[..b.len()].copy_from_slice(&b);
            self.len = b.len() as u8;
            self.at = Some((ts, st));
        }
        let mut b = [0u8; 33];
        b[..3].copy_from_slice(&self.head);
        b[3..11].copy_from_slice(&value.to_bits().to_le_bytes());
        b[11..].copy_from_slice(&self.bytes);
        put_fixed(out, &b, 11 + self.len as usize);
    }
}

/// What an RW2 encoding reuses from request to request: the symbol table, the series bytes
/// and the labels already symbolised in the current request.
#[derive(Debug, Default)]
pub struct Rw2Encoder {
    table: SymbolTable,
    series_buf: Vec<u8>,
    /// The current series' `labels_refs` bytes.
    refs_buf: Vec<u8>,
    /// This request's labels by identity: their refs, encoded.
    label_refs: AddressMap<RefPair>,
    /// This request's family metadata by identity (the queue shares one `FamilyMeta` per
    /// family): the field, encoded. Help texts are long to hash.
    meta_fields: AddressMap<MetaField>,
    /// A packed label value's text, unpacked to be symbolised.
    unpacked: String,
}

type AddressMap<V> = hashbrown::HashMap<usize, V, std::hash::BuildHasherDefault<AddressHasher>>;

impl Rw2Encoder {
    pub fn new() -> Rw2Encoder {
        Rw2Encoder::default()
    }

    /// An RW2 `Request`: the series first (interning as it goes), then the symbol table.
    /// Labels and the samples left out are as for [`rw1`].
    pub fn encode(&mut self, p: &Payload, wal: &WalLabels, out: &mut Vec<u8>) -> usize {
        let Rw2Encoder { table, series_buf, refs_buf, label_refs, meta_fields, unpacked } = self;
        table.reset();
        series_buf.clear();
        label_refs.clear();
        meta_fields.clear();
        // The previous series' labels and refs by position. A scrape lists a family's series
        // together, so the label names, and most values (a histogram's buckets differ only
        // in `le`), are the previous series' at the same position: one compare of interned
        // labels' addresses, where a table lookup would hash and compare their text.
        let mut prev: Vec<(usize, RefPair)> = Vec::with_capacity(16);
        // The name and name ref of the last label symbolised at each position: a new label
        // usually has the name of the one before it there, and a name compare is cheaper
        // than symbolising the name again.
        let mut prev_names: Vec<(&str, u32)> = Vec::with_capacity(16);
        let mut tail = SampleTail::default();
        // Likewise the previous series' family.
        let mut prev_meta: Option<(usize, MetaField)> = None;
        let mut ex_refs: Vec<Vec<u32>> = Vec::new();
        let mut left_out = 0;
        for run in p.runs() {
            let series = &run[0].series;
            let Some(keys) = series.keys(wal) else {
                left_out += run.len();
                continue;
            };
            let st = run[0].start_timestamp;
            refs_buf.clear();
            for (i, key) in keys.enumerate() {
                let id = key.id();
                let pair = match prev.get(i) {
                    Some(&(p, pair)) if p == id => pair,
                    _ => {
                        let pair = *label_refs.entry(id).or_insert_with(|| {
                            let l = key.label();
                            let name = match prev_names.get(i) {
                                Some(&(n, r)) if n == l.name => r,
                                _ => {
                                    let r = table.symbolize(l.name);
                                    set_at(&mut prev_names, i, (l.name, r));
                                    r
                                }
                            };
                            let value = match l.value.as_plain() {
                                Some(v) => table.symbolize(v),
                                None => {
                                    unpacked.clear();
                                    l.value.put_str(unpacked);
                                    table.symbolize(unpacked)
                                }
                            };
                            RefPair::new(name, value)
                        });
                        set_at(&mut prev, i, (id, pair));
                        pair
                    }
                };
                put_fixed(refs_buf, &pair.bytes, pair.len as usize);
            }
            let labels_len = refs_buf.len();
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
            let md = series.metadata().map(|m| {
                let at = std::sync::Arc::as_ptr(m) as usize;
                match prev_meta {
                    Some((p, field)) if p == at => field,
                    _ => {
                        let field = *meta_fields.entry(at).or_insert_with(|| {
                            MetaField::new(m.0.wire() as u64, table.symbolize(&m.1), table.symbolize(&m.2))
                        });
                        prev_meta = Some((at, field));
                        field
                    }
                }
            });
            let md_len = md.map_or(0, |f| f.len as usize);
            let body = field_len(1, labels_len) + samples_len + ex_len + md_len;
            series_buf.reserve(body + 2 * 10);
            len_field(series_buf, 5, body);
            len_field(series_buf, 1, labels_len);
            series_buf.extend_from_slice(refs_buf);
            for s in run {
                tail.put(series_buf, s.value, s.timestamp, st);
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
            if let Some(f) = md {
                put_fixed(series_buf, &f.bytes, f.len as usize);
            }
        }
        out.clear();
        for sym in table.iter() {
            bytes_field(out, 4, sym.as_bytes());
        }
        out.extend_from_slice(series_buf);
        left_out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_protocol::{LabelSet, STALE_NAN, rw1, rw2};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::remote::encode::{Sample, SeriesInfo, SeriesList, SeriesRef};
    use crate::scrape::parse::MetricType;
    use crate::series_labels::SeriesLabels;

    // Label values held packed (see `packed_value`): a cgroup path with a UUID and a
    // container id, and the id alone.
    const CID: &str = "280cc3617f18651e386e985671212374a5616d565eab9c919dcacf1f6248324e";
    const CGROUP: &str = "/kubepods/burstable/podaeb18761-ae1d-40f7-a265-ece4655626ba/\
                          280cc3617f18651e386e985671212374a5616d565eab9c919dcacf1f6248324e";

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
        let c = info(&[("__name__", "c"), ("id", CGROUP), ("name", CID)], None);
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
                Sample::new(c, 1_700_000_000_000, 3.0),
                // The same series again after another: a TimeSeries of its own.
                Sample::new(up, 1_700_000_030_000, 2.0),
            ],
            metadata: vec![("up".into(), MetricType::Gauge, "Health.".into(), "".into())],
        }
    }

    #[test]
    fn encode_matches_prost() {
        let p = payload();
        let wal = WalLabels::new();
        for exemplars in [false, true] {
            let mut out = Vec::new();
            assert_eq!(rw1(&p, exemplars, &wal, &mut out), 0);
            let ours = rw1::WriteRequest::decode(out.as_slice()).unwrap();
            let want = p.rw1(exemplars, &wal);
            assert_eq!(format!("{ours:?}"), format!("{want:?}"));
            assert_eq!(ours.timeseries[0].samples[1].value.to_bits(), STALE_NAN.to_bits());
            let l = &ours.timeseries[2].labels;
            assert_eq!((l[1].value.as_str(), l[2].value.as_str()), (CGROUP, CID), "unpacked on the wire");
        }
        let mut enc = Rw2Encoder::new();
        let mut out = Vec::new();
        // Twice: the second request must not see the first one's refs.
        for _ in 0..2 {
            assert_eq!(enc.encode(&p, &wal, &mut out), 0);
            let ours = rw2::Request::decode(out.as_slice()).unwrap();
            let want = p.rw2(&mut SymbolTable::new(), &wal);
            assert_eq!(format!("{ours:?}"), format!("{want:?}"));
        }
    }

    /// The same payload with its series named by id in one list, their labels in a table as
    /// the WAL's: the same bytes, and a series the table lost is left out, counted.
    #[test]
    fn series_named_by_id_encode_from_the_wal_table() {
        let own = payload();
        let mut wal = WalLabels::new();
        let mut lists: Vec<(SeriesRef, u64)> = Vec::new();
        for s in &own.samples {
            if !lists.iter().any(|(r, _)| r.same(&s.series)) {
                let id = 100 + lists.len() as u64;
                wal.insert(id, s.series.labels(&wal).unwrap().clone());
                lists.push((s.series.clone(), id));
            }
        }
        let ids: crate::remote::id_runs::IdRuns = lists.iter().map(|&(_, id)| id).collect();
        let by_id_of = |external: Option<SeriesLabels>| {
            let list =
                SeriesList::by_id(ids.clone(), lists.iter().map(|(r, _)| r.metadata().cloned()), external);
            let mut p = own.clone();
            for s in &mut p.samples {
                let at = lists.iter().position(|(r, _)| r.same(&s.series)).unwrap();
                s.series = SeriesRef::at(&list, at).unwrap();
            }
            p
        };
        let by_id = by_id_of(None);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(rw1(&own, true, &wal, &mut a), 0);
        assert_eq!(rw1(&by_id, true, &wal, &mut b), 0);
        assert_eq!(a, b);
        let mut enc = Rw2Encoder::new();
        enc.encode(&own, &wal, &mut a);
        assert_eq!(enc.encode(&by_id, &wal, &mut b), 0);
        assert_eq!(a, b);
        // External labels join as the series are encoded; `job` is `up`'s own already, and
        // its value stays. The same bytes as sets made with them, as prost writes them.
        let external = SeriesLabels::from_sorted([("cluster", "c1"), ("job", "other"), ("zone", "z")]);
        let with_external = by_id_of(Some(external.clone()));
        let made_refs: Vec<SeriesRef> = lists
            .iter()
            .map(|(r, _)| {
                let merged: Vec<(String, String)> = r
                    .labels(&wal)
                    .unwrap()
                    .keys_with(Some(&external))
                    .map(|k| k.label())
                    .map(|l| (l.name.to_owned(), l.value.text().into_owned()))
                    .collect();
                let merged = SeriesLabels::from_set(&LabelSet::from_pairs(merged).unwrap());
                SeriesRef::single(SeriesInfo::new(merged, r.metadata().cloned()))
            })
            .collect();
        let mut made = own.clone();
        for s in &mut made.samples {
            s.series = made_refs[lists.iter().position(|(r, _)| r.same(&s.series)).unwrap()].clone();
        }
        assert_eq!(rw1(&with_external, true, &wal, &mut a), 0);
        rw1(&made, true, &wal, &mut b);
        assert_eq!(a, b);
        let r1 = rw1::WriteRequest::decode(a.as_slice()).unwrap();
        assert_eq!(format!("{r1:?}"), format!("{:?}", with_external.rw1(true, &wal)));
        let up: Vec<_> =
            r1.timeseries[0].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(
            up,
            [("__name__", "up"), ("cluster", "c1"), ("instance", "h:1"), ("job", "j"), ("zone", "z")]
        );
        assert_eq!(enc.encode(&with_external, &wal, &mut a), 0);
        let ours = rw2::Request::decode(a.as_slice()).unwrap();
        assert_eq!(format!("{ours:?}"), format!("{:?}", with_external.rw2(&mut SymbolTable::new(), &wal)));
        // The WAL forgot `up` (id 100; 4 of the 6 samples, in two runs).
        wal.remove(100);
        assert_eq!(rw1(&by_id, false, &wal, &mut b), 4);
        assert_eq!(rw1::WriteRequest::decode(b.as_slice()).unwrap().timeseries.len(), 2);
        assert_eq!(enc.encode(&by_id, &wal, &mut b), 4);
        assert_eq!(rw2::Request::decode(b.as_slice()).unwrap().timeseries.len(), 2);
    }

    /// A payload drawn from small pools of names, values, timestamps and families, so that
    /// series share labels at the same and at other positions, names recur with new values,
    /// timestamps change between series and runs repeat: every shortcut of the encoder is
    /// taken and left. Refs past 127 take two-byte varints.
    fn drawn_payload() -> impl Strategy<Value = Payload> {
        let series = proptest::collection::btree_map(0..6usize, 0..200usize, 1..6);
        let sample = (series, 0..4usize, 0..3i64, -2.0..2.0f64, 0..3usize);
        proptest::collection::vec(sample, 1..80).prop_map(|drawn| {
            let families: Vec<_> = (0..3)
                .map(|f| {
                    Arc::new((MetricType::Counter, format!("help {f}"), if f == 0 { "" } else { "s" }.into()))
                })
                .collect();
            let mut prev: Option<SeriesRef> = None;
            let samples = drawn
                .into_iter()
                .map(|(labels, ts, st, value, family)| {
                    let mut pairs: Vec<(String, String)> = labels
                        .iter()
                        .map(|(n, &v)| {
                            let value = match v {
                                0..120 => format!("v{}", v % 5),
                                // Values held packed: a cgroup path with a UUID and an id.
                                180.. => format!("/pod{v:08x}-0000-4000-a000-{v:012x}/{v:064x}"),
                                _ => format!("v{v}"),
                            };
                            (format!("n{n}"), value)
                        })
                        .collect();
                    pairs.push(("__name__".into(), format!("m{}", family)));
                    let ls =
                        LabelSet::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))).unwrap();
                    let md = (family > 0).then(|| families[family].clone());
                    let series = match &prev {
                        // Now and then the same series again, which joins its run.
                        Some(p) if ts == 0 && family == 0 => p.clone(),
                        _ => SeriesRef::single(SeriesInfo::new(
                            crate::series_labels::SeriesLabels::from_set(&ls),
                            md,
                        )),
                    };
                    prev = Some(series.clone());
                    let mut s = Sample::new(series, 1_700_000_000_000 + ts as i64 * 10_000, value);
                    s.start_timestamp = st * 1_000_000_007;
                    s
                })
                .collect();
            Payload { samples, metadata: Vec::new() }
        })
    }

    proptest! {
        #[test]
        fn any_payload_encodes_as_prost_does(p in drawn_payload()) {
            let mut enc = Rw2Encoder::new();
            let mut out = Vec::new();
            let wal = WalLabels::new();
            prop_assert_eq!(enc.encode(&p, &wal, &mut out), 0);
            let ours = rw2::Request::decode(out.as_slice()).unwrap();
            let want = p.rw2(&mut SymbolTable::new(), &wal);
            prop_assert_eq!(format!("{ours:?}"), format!("{want:?}"));
        }
    }
}
