//! Compressed sample chunks: delta-of-delta timestamps and XOR'd float bits (the Gorilla
//! scheme Prometheus' XOR chunks use), bit-exact for every value, stale markers included.
//!
//! Layout: `count: u16 LE`, `last_ts: i64 LE` (so readers can skip a chunk without decoding),
//! then a bit stream: first timestamp (64 bits), first value (64 bits), then per sample a
//! delta-of-delta in one of five buckets and a value XOR against the previous one.

/// Writes bits most-significant first.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u8, // bits used in the last byte, 0 when it is full or absent
}

impl BitWriter {
    fn bit(&mut self, one: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if one {
            *self.bytes.last_mut().expect("pushed above") |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }

    fn bits(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            self.bit((value >> i) & 1 == 1);
        }
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize, // in bits
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.pos / 8)?;
        let b = byte & (0x80 >> (self.pos % 8)) != 0;
        self.pos += 1;
        Some(b)
    }

    fn bits(&mut self, n: u32) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | self.bit()? as u64;
        }
        Some(v)
    }
}

/// Delta-of-delta buckets: (prefix bits, prefix length, payload bits). The last is a full
/// 64-bit escape, so any timestamps encode.
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

fn fits(v: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&v)
}

/// Samples per chunk: a chunk is cut when it holds this many (Prometheus cuts at 120 too).
pub const MAX_SAMPLES: usize = 120;

/// Appends samples one at a time to a compressed chunk; what the head keeps per series.
#[derive(Default)]
pub struct Appender {
    w: BitWriter,
    count: u16,
    first_t: i64,
    prev_t: i64,
    prev_delta: i64,
    prev_v: u64,
    lead: u32,
    trail: u32,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").field("count", &self.count).field("first_t", &self.first_t).finish()
    }
}

impl Appender {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() >= MAX_SAMPLES
    }

    /// Timestamp of the first sample (meaningless when empty).
    pub fn first_timestamp(&self) -> i64 {
        self.first_t
    }

    /// Appends a sample; timestamps must ascend (the caller checks).
    pub fn append(&mut self, t: i64, v: u64) {
        let w = &mut self.w;
        if self.count == 0 {
            w.bits(t as u64, 64);
            w.bits(v, 64);
            self.first_t = t;
            self.prev_delta = 0;
            self.lead = u32::MAX;
            self.trail = 0;
        } else {
            let delta = t.wrapping_sub(self.prev_t);
            let dod = delta.wrapping_sub(self.prev_delta);
            if dod == 0 {
                w.bit(false);
            } else if let Some(&(prefix, plen, bits)) = DOD_BUCKETS.iter().find(|b| fits(dod, b.2)) {
                w.bits(prefix, plen);
                w.bits(dod as u64 & ((1 << bits) - 1), bits);
            } else {
                w.bits(0b1111, 4);
                w.bits(dod as u64, 64);
            }
            let x = v ^ self.prev_v;
            if x == 0 {
                w.bit(false);
            } else {
                let (l, tz) = (x.leading_zeros().min(31), x.trailing_zeros());
                if self.lead != u32::MAX && l >= self.lead && tz >= self.trail {
                    // Fits in the previous window: '10' + the window's bits.
                    w.bits(0b10, 2);
                    w.bits(x >> self.trail, 64 - self.lead - self.trail);
                } else {
                    self.lead = l;
                    self.trail = tz;
                    let sig = 64 - l - tz;
                    w.bits(0b11, 2);
                    w.bits(l as u64, 5);
                    // 64 significant bits do not fit in 6 bits; 0 stands for 64.
                    w.bits((sig % 64) as u64, 6);
                    w.bits(x >> tz, sig);
                }
            }
            self.prev_delta = delta;
        }
        self.prev_t = t;
        self.prev_v = v;
        self.count += 1;
    }

    /// The chunk as stored: header, then the bit stream so far.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.w.bytes.len());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.prev_t.to_le_bytes());
        out.extend_from_slice(&self.w.bytes);
        out
    }

    /// Heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.w.bytes.capacity()
    }

    /// Starts over, keeping the buffer.
    pub fn reset(&mut self) {
        self.w.bytes.clear();
        self.w.used = 0;
        self.count = 0;
    }
}

/// Encodes samples (ascending timestamps) into one chunk.
pub fn encode(samples: &[(i64, u64)]) -> Vec<u8> {
    assert!(!samples.is_empty() && samples.len() <= u16::MAX as usize, "chunk of {} samples", samples.len());
    let mut a = Appender::default();
    for &(t, v) in samples {
        a.append(t, v);
    }
    a.to_bytes()
}

/// The last timestamp in a chunk, read from its header.
pub fn last_timestamp(chunk: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(chunk.get(2..10)?.try_into().ok()?))
}

/// Decodes a chunk, calling `f(ts, bits)` for each sample in order. `None` if it is corrupt.
pub fn decode(chunk: &[u8], mut f: impl FnMut(i64, u64)) -> Option<()> {
    let count = u16::from_le_bytes(chunk.get(..2)?.try_into().ok()?) as usize;
    let mut r = BitReader { bytes: chunk.get(10..)?, pos: 0 };
    if count == 0 {
        return None;
    }
    let mut t = r.bits(64)? as i64;
    let mut v = r.bits(64)?;
    f(t, v);
    let (mut delta, mut lead, mut trail) = (0i64, 0u32, 0u32);
    for _ in 1..count {
        let dod = if !r.bit()? {
            0
        } else {
            let mut ones = 1;
            while ones < 4 && r.bit()? {
                ones += 1;
            }
            if ones == 4 {
                r.bits(64)? as i64
            } else {
                let bits = DOD_BUCKETS[ones - 1].2;
                let raw = r.bits(bits)?;
                // Sign-extend the payload.
                ((raw << (64 - bits)) as i64) >> (64 - bits)
            }
        };
        delta = delta.wrapping_add(dod);
        t = t.wrapping_add(delta);
        if r.bit()? {
            if r.bit()? {
                lead = r.bits(5)? as u32;
                let sig = match r.bits(6)? as u32 {
                    0 => 64,
                    n => n,
                };
                trail = 64u32.checked_sub(lead + sig)?;
            }
            let sig = 64 - lead - trail;
            v ^= r.bits(sig)? << trail;
        }
        f(t, v);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::stale::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn round_trip(samples: &[(i64, u64)]) -> Vec<(i64, u64)> {
        let c = encode(samples);
        assert_eq!(last_timestamp(&c), samples.last().map(|s| s.0));
        let mut out = Vec::new();
        decode(&c, |t, v| out.push((t, v))).expect("decodes");
        out
    }

    #[test]
    fn regular_scrapes_compress_well() {
        let samples: Vec<(i64, u64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, (i as f64 * 2.0).to_bits()))
            .chain([(1_700_000_000_000 + 120 * 15_000, STALE_NAN_BITS)])
            .collect();
        let c = encode(&samples);
        assert_eq!(round_trip(&samples), samples);
        let per_sample = c.len() as f64 / samples.len() as f64;
        assert!(per_sample < 4.0, "{per_sample} bytes per sample");
    }

    #[test]
    fn appender_snapshots_decode_at_every_length() {
        let mut a = Appender::default();
        let mut want = Vec::new();
        for i in 0..MAX_SAMPLES as i64 {
            let s = (1_000 + i * 15_000 + (i % 3), (i as f64 * 0.1).to_bits());
            a.append(s.0, s.1);
            want.push(s);
            assert_eq!(round_trip(&want), want);
            let mut got = Vec::new();
            decode(&a.to_bytes(), |t, v| got.push((t, v))).unwrap();
            assert_eq!(got, want);
        }
        assert!(a.is_full());
        a.reset();
        assert!(a.is_empty());
        a.append(5, 5);
        let mut got = Vec::new();
        decode(&a.to_bytes(), |t, v| got.push((t, v))).unwrap();
        assert_eq!(got, [(5, 5)]);
    }

    #[test]
    fn corrupt_chunks_are_refused_not_panics() {
        let c = encode(&[(1, 1), (2, 2), (3, 3)]);
        // The first sample alone takes 16 bytes after the header; 12 bytes cannot hold it.
        assert!(decode(&c[..12], |_, _| {}).is_none());
        assert!(decode(&[], |_, _| {}).is_none());
        assert!(decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], |_, _| {}).is_none());
    }

    proptest! {
        #[test]
        fn any_ascending_samples_round_trip(
            start in any::<i64>(),
            steps in prop::collection::vec((0i64..=i64::MAX / 1024, any::<u64>()), 0..200),
            first in any::<u64>(),
        ) {
            let mut t = start;
            let mut samples = vec![(t, first)];
            for (d, v) in steps {
                t = t.saturating_add(d);
                samples.push((t, v));
            }
            prop_assert_eq!(round_trip(&samples), samples);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes, |_, _| {});
        }
    }
}
