//! The staleness marker: one exact NaN bit pattern that means "this series ended here".
//!
//! Only that bit pattern is a marker. Ordinary NaNs (`f64::NAN`, Prometheus' `NormalNaN`) are
//! values like any other and must never be turned into a marker or vice versa, so everything
//! that stores or forwards floats compares and copies bits, never `==`.

/// `model/value/value.go` `StaleNaN`.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
/// `model/value/value.go` `NormalNaN` (what Go's `math.NaN()` returns).
pub const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// The staleness marker as a float.
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// True only for the exact staleness-marker bit pattern.
#[inline]
pub fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bits_are_stale() {
        assert!(is_stale(STALE_NAN));
        assert!(STALE_NAN.is_nan());
        assert!(!is_stale(f64::NAN));
        assert!(!is_stale(f64::from_bits(NORMAL_NAN_BITS)));
        // The sign bit set is a different NaN, not a marker.
        assert!(!is_stale(f64::from_bits(STALE_NAN_BITS | (1 << 63))));
        assert!(!is_stale(0.0));
    }

    #[test]
    fn arithmetic_does_not_manufacture_markers() {
        // A copy keeps the bits; arithmetic on a NaN may quiet it, and must not be mistaken for
        // a marker afterwards.
        let copied = STALE_NAN;
        assert_eq!(copied.to_bits(), STALE_NAN_BITS);
        assert!(!is_stale(f64::NAN + 1.0));
    }
}
