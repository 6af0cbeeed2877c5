//! Key layout of the one sled tree the store uses, and the byte encodings inside keys.
//!
//! Everything lives in a single tree so that one `apply_batch` commits a whole request
//! atomically. The first byte says what a key is:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `S` | series id | tenant `FF` labels |
//! | `W` | sequence number | one request's float samples (the log; see `log.rs`) |
//! | `C` | series id, first timestamp | compressed chunk (see `chunk.rs`) |
//! | `H` | series id, timestamp | RW2 `Histogram` protobuf |
//! | `E` | series id, timestamp | exemplar (labels, value) |
//! | `M` | tenant `FF` metric name | metadata (type, help, unit) |
//!
//! The label → id index and the postings are kept in memory and rebuilt from the `S` records
//! at start-up, so creating a series costs one insert. `FF` never occurs in UTF-8, so it separates strings without escaping. Series ids and
//! timestamps are big-endian, timestamps with the sign bit flipped, so byte order is numeric
//! order and range scans return samples oldest first.

use ferry_protocol::{Label, LabelSet};

pub const SEP: u8 = 0xff;

pub const ID_TO_LABELS: u8 = b'S';
pub const LOG: u8 = b'W';
pub const CHUNK: u8 = b'C';
pub const HISTOGRAM: u8 = b'H';
pub const EXEMPLAR: u8 = b'E';
pub const METADATA: u8 = b'M';

/// Sorted labels as `name FF value FF …`: unique per label set, and cheap to split.
pub fn encode_labels(labels: &LabelSet, out: &mut Vec<u8>) {
    for l in labels {
        out.extend_from_slice(l.name.as_bytes());
        out.push(SEP);
        out.extend_from_slice(l.value.as_bytes());
        out.push(SEP);
    }
}

/// The inverse of [`encode_labels`]. `None` on bytes it did not write.
pub fn decode_labels(bytes: &[u8]) -> Option<LabelSet> {
    let mut parts = bytes.split(|&b| b == SEP);
    let mut labels = Vec::new();
    loop {
        let name = parts.next()?;
        if name.is_empty() && parts.clone().next().is_none() {
            break; // the trailing separator
        }
        let value = parts.next()?;
        labels.push(Label::new(std::str::from_utf8(name).ok()?, std::str::from_utf8(value).ok()?));
    }
    LabelSet::from_labels(labels).ok()
}

/// Timestamp bytes whose unsigned order is the signed order.
pub fn ts_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn ts_from_bytes(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b.try_into().expect("8 timestamp bytes")) ^ (1 << 63)) as i64
}

/// The head's index key of a series: `tenant FF labels` (also the `S` record's value), from
/// labels already encoded by [`encode_labels`].
pub fn series_key(tenant: &str, encoded_labels: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(tenant.as_bytes());
    out.push(SEP);
    out.extend_from_slice(encoded_labels);
}

/// `S` key or the prefix of a per-series range (`D`, `C`, `H`, `E`).
pub fn id_key(prefix: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A per-series timestamped key: prefix, id, timestamp.
pub fn point_key(prefix: u8, id: u64, ts: i64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..9].copy_from_slice(&id_key(prefix, id));
    k[9..].copy_from_slice(&ts_bytes(ts));
    k
}

/// A postings key: `tenant FF name FF value`, or with `value: None` the prefix of every
/// value of `name`.
pub fn posting_key(tenant: &str, name: &str, value: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + name.len() + 16);
    k.extend_from_slice(tenant.as_bytes());
    k.push(SEP);
    k.extend_from_slice(name.as_bytes());
    k.push(SEP);
    if let Some(v) = value {
        k.extend_from_slice(v.as_bytes());
    }
    k
}

pub fn metadata_key(tenant: &str, metric: &str) -> Vec<u8> {
    let mut k = vec![METADATA];
    k.extend_from_slice(tenant.as_bytes());
    k.push(SEP);
    k.extend_from_slice(metric.as_bytes());
    k
}

/// Appends a length-prefixed string (u32 LE) to a value.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads what [`put_str`] wrote, advancing `input`.
pub fn take_str<'a>(input: &mut &'a [u8]) -> Option<&'a str> {
    let len = u32::from_le_bytes(input.get(..4)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(input.get(4..4 + len)?).ok()?;
    *input = &input[4 + len..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for pairs in [
            vec![],
            vec![("__name__", "up")],
            vec![("__name__", "résumé.total"), ("job name", "a\nb"), ("z", "\u{1F680}")],
        ] {
            let ls = LabelSet::from_pairs(pairs).unwrap();
            let mut b = Vec::new();
            encode_labels(&ls, &mut b);
            assert_eq!(decode_labels(&b), Some(ls));
        }
    }

    #[test]
    fn timestamps_sort_numerically() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(ts_bytes(w[0]) < ts_bytes(w[1]));
        }
        for t in ts {
            assert_eq!(ts_from_bytes(&ts_bytes(t)), t);
        }
    }

    #[test]
    fn strings_round_trip() {
        let mut b = Vec::new();
        put_str(&mut b, "help text");
        put_str(&mut b, "");
        let mut r = b.as_slice();
        assert_eq!(take_str(&mut r), Some("help text"));
        assert_eq!(take_str(&mut r), Some(""));
        assert!(r.is_empty());
        assert_eq!(take_str(&mut r), None);
    }
}
