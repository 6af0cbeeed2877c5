//! The write log: one sled value per request holding its float samples, so a request costs
//! one insert however many samples it has. Samples live in the in-memory head until their
//! chunk is cut or checkpointed; the log is what rebuilds the head after a crash, and the
//! checkpoint deletes it once everything in it is in chunks.
//!
//! Record: `base_ts: i64 LE`, then per sample `id: varint`, `ts - base_ts: zigzag varint`,
//! `bits: u64 LE`.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Builds one record.
#[derive(Debug, Default)]
pub struct RecordWriter {
    buf: Vec<u8>,
    base: Option<i64>,
}

impl RecordWriter {
    pub fn push(&mut self, id: u64, ts: i64, bits: u64) {
        let base = *self.base.get_or_insert_with(|| {
            self.buf.extend_from_slice(&ts.to_le_bytes());
            ts
        });
        put_varint(&mut self.buf, id);
        let d = ts.wrapping_sub(base);
        put_varint(&mut self.buf, ((d << 1) ^ (d >> 63)) as u64);
        self.buf.extend_from_slice(&bits.to_le_bytes());
    }

    pub fn is_empty(&self) -> bool {
        self.base.is_none()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads a record, calling `f(id, ts, bits)`; `None` if it is torn or corrupt.
pub fn read_record(mut r: &[u8], mut f: impl FnMut(u64, i64, u64)) -> Option<()> {
    if r.is_empty() {
        return Some(());
    }
    let base = i64::from_le_bytes(r.get(..8)?.try_into().ok()?);
    r = &r[8..];
    while !r.is_empty() {
        let id = get_varint(&mut r)?;
        let z = get_varint(&mut r)?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let bits = u64::from_le_bytes(r.get(..8)?.try_into().ok()?);
        r = &r[8..];
        f(id, base.wrapping_add(d), bits);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn records_round_trip(points in prop::collection::vec((any::<u64>(), any::<i64>(), any::<u64>()), 0..50)) {
            let mut w = RecordWriter::default();
            for &(id, ts, bits) in &points {
                w.push(id, ts, bits);
            }
            let bytes = w.into_bytes();
            let mut got = Vec::new();
            read_record(&bytes, |id, ts, bits| got.push((id, ts, bits))).unwrap();
            prop_assert_eq!(got, points);
        }

        #[test]
        fn garbage_is_refused_or_read_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = read_record(&bytes, |_, _, _| {});
        }
    }
}
