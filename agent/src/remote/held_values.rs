//! The values of a scrape held for a merged request ([`super::packing`]), packed.
//!
//! Held scrapes are the queue's largest state when `batch_send_deadline` holds several of a
//! target's scrapes: at 500k series and three scrapes a request, 8 bytes a value was 12 MB.
//! Values are packed the way the WAL packs them (an integral value as a zigzag varint, any
//! other as its 8 raw bytes), and a scrape held after the first one of its run, over the
//! same positions, stores an integral value as its difference from the first scrape's value
//! there: a counter's increase over 10–20 s, mostly one or two bytes. Every value comes back
//! with its exact bits (NaNs, stale markers and -0.0 are stored raw).
//!
//! Each value is a varint head: `zigzag(difference) << 1` for an integral value, or 1
//! followed by the value's 8 bytes little-endian.

use crate::wal::codec::{as_int, put_varint, unzigzag, zigzag};

/// One held scrape's values, in its positions' order.
#[derive(Debug)]
pub struct HeldValues {
    bytes: Box<[u8]>,
    /// Whether integral values are differences from a base scrape's values.
    delta: bool,
}

/// The integral part a value is a difference from: none (0) for a value that is not one.
fn base_int(base: f64) -> i64 {
    as_int(base).unwrap_or(0)
}

impl HeldValues {
    /// `values` packed; with `base` (the same positions' values in an earlier scrape, one for
    /// each value), integral values are stored as differences from the base's.
    pub fn pack(values: impl ExactSizeIterator<Item = f64>, base: Option<&[f64]>) -> HeldValues {
        let mut bytes = Vec::with_capacity(values.len() * 3);
        let mut bases = base.map(|b| b.iter().copied());
        for v in values {
            let b = bases.as_mut().map_or(0, |b| base_int(b.next().expect("a base value for each value")));
            match as_int(v) {
                // Both ints are below 2^53 in magnitude: neither the difference nor its
                // zigzag shifted left by one can overflow.
                Some(i) => put_varint(&mut bytes, zigzag(i - b) << 1),
                None => {
                    bytes.push(1);
                    bytes.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
        }
        // Held until sent: without the spare capacity.
        HeldValues { bytes: bytes.into_boxed_slice(), delta: base.is_some() }
    }

    /// Reads the values back in order.
    pub fn reader(&self) -> ValueReader<'_> {
        ValueReader { rest: &self.bytes, delta: self.delta }
    }

    /// Every value, for a scrape packed without a base.
    pub fn unpack(&self) -> Vec<f64> {
        let mut r = self.reader();
        let mut out = Vec::new();
        while !r.rest.is_empty() {
            out.push(r.next(0.0));
        }
        out
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// A cursor over [`HeldValues`].
#[derive(Debug)]
pub struct ValueReader<'a> {
    rest: &'a [u8],
    delta: bool,
}

impl ValueReader<'_> {
    /// The next value; `base` is the base scrape's value at the same position (ignored
    /// when the scrape was packed without one). Panics past the end: the positions say how
    /// many values there are.
    pub fn next(&mut self, base: f64) -> f64 {
        let mut head = 0u64;
        let mut shift = 0;
        loop {
            let (&b, rest) = self.rest.split_first().expect("a value for each held position");
            self.rest = rest;
            head |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                break;
            }
            shift += 7;
        }
        if head & 1 == 1 {
            let (bits, rest) = self.rest.split_first_chunk::<8>().expect("8 bytes after a raw head");
            self.rest = rest;
            return f64::from_bits(u64::from_le_bytes(*bits));
        }
        let b = if self.delta { base_int(base) } else { 0 };
        (unzigzag(head >> 1) + b) as f64
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn same_bits(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn counters_take_a_byte_or_two_as_differences() {
        let first: Vec<f64> = (0..100).map(|i| 1_000_000.0 + i as f64 * 977.0).collect();
        let later: Vec<f64> = first.iter().map(|v| v + 12.0).collect();
        let a = HeldValues::pack(first.iter().copied(), None);
        let b = HeldValues::pack(later.iter().copied(), Some(&first));
        assert!(a.size() <= 4 * 100, "{}", a.size());
        assert_eq!(b.size(), 100, "a difference of 12 is one byte");
        assert!(same_bits(&a.unpack(), &first));
        let mut r = b.reader();
        let back: Vec<f64> = first.iter().map(|&f| r.next(f)).collect();
        assert!(same_bits(&back, &later));
    }

    #[test]
    fn odd_values_keep_their_bits() {
        let odd = [
            f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0002), // a stale marker
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.5,
            -3.0,
            9_007_199_254_740_993.0, // above 2^53: raw
            -9_007_199_254_740_991.0,
            9_007_199_254_740_991.0,
        ];
        let a = HeldValues::pack(odd.iter().copied(), None);
        assert!(same_bits(&a.unpack(), &odd));
        // As differences from the extremes the other way round.
        let base: Vec<f64> = odd.iter().rev().copied().collect();
        let b = HeldValues::pack(odd.iter().copied(), Some(&base));
        let mut r = b.reader();
        let back: Vec<f64> = base.iter().map(|&f| r.next(f)).collect();
        assert!(same_bits(&back, &odd));
    }

    proptest! {
        #[test]
        fn any_values_round_trip(pairs in prop::collection::vec((any::<f64>(), -1e16f64..1e16, any::<i32>()), 0..200)) {
            let base: Vec<f64> = pairs.iter().map(|p| if p.2 % 3 == 0 { p.0 } else { p.1.trunc() }).collect();
            let values: Vec<f64> = pairs.iter().map(|p| if p.2 % 2 == 0 { p.1.trunc() + p.2 as f64 } else { p.0 }).collect();
                let a = HeldValues::pack(values.iter().copied(), None);
            prop_assert!(same_bits(&a.unpack(), &values));
            let b = HeldValues::pack(values.iter().copied(), Some(&base));
            let mut r = b.reader();
            let back: Vec<f64> = base.iter().map(|&f| r.next(f)).collect();
            prop_assert!(same_bits(&back, &values));
        }
    }
}
