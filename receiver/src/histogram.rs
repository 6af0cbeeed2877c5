//! Native-histogram validation (Prometheus `model/histogram` `Validate` rules) and the RW1 →
//! RW2 conversion, so the store keeps one histogram encoding.

use ferry_protocol::rw2::{self, histogram::Count, histogram::ZeroCount};

const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// The total count of one side's buckets, checking spans against buckets.
fn side_total(
    side: &str,
    spans: &[rw2::BucketSpan],
    deltas: &[i64],
    counts: &[f64],
    float: bool,
) -> Result<f64, String> {
    let buckets = if float { counts.len() } else { deltas.len() };
    let spanned: u64 = spans.iter().map(|s| s.length as u64).sum();
    if spanned != buckets as u64 {
        return Err(format!("{side} side: spans need {spanned} buckets, histogram has {buckets}"));
    }
    if let Some((i, s)) = spans.iter().enumerate().skip(1).find(|(_, s)| s.offset < 0) {
        return Err(format!("{side} side: span {i} has negative offset {}", s.offset));
    }
    if float {
        if let Some(c) = counts.iter().find(|c| c.is_nan() || **c < 0.0) {
            return Err(format!("{side} side: bucket count {c} is negative or NaN"));
        }
        if !deltas.is_empty() {
            return Err(format!("{side} side: a float histogram carries deltas"));
        }
        Ok(counts.iter().sum())
    } else {
        if !counts.is_empty() {
            return Err(format!("{side} side: an integer histogram carries float counts"));
        }
        let (mut cur, mut total) = (0i64, 0f64);
        for d in deltas {
            cur = cur.checked_add(*d).ok_or_else(|| format!("{side} side: bucket count overflows"))?;
            if cur < 0 {
                return Err(format!("{side} side: bucket count {cur} is negative"));
            }
            total += cur as f64;
        }
        Ok(total)
    }
}

/// Checks a histogram the way Prometheus' TSDB does before it appends one.
pub fn validate(h: &rw2::Histogram) -> Result<(), String> {
    let float = matches!(h.count, Some(Count::CountFloat(_)));
    let custom = h.schema == CUSTOM_BUCKETS_SCHEMA;
    if !custom && !(-4..=8).contains(&h.schema) {
        return Err(format!("histogram has invalid schema {}", h.schema));
    }
    let zero_count = match h.zero_count {
        Some(ZeroCount::ZeroCountInt(z)) => z as f64,
        Some(ZeroCount::ZeroCountFloat(z)) => z,
        None => 0.0,
    };
    if custom {
        if zero_count != 0.0 || h.zero_threshold != 0.0 {
            return Err("custom buckets: must have zero count of 0 and zero threshold of 0".into());
        }
        if !h.negative_spans.is_empty() || !h.negative_deltas.is_empty() || !h.negative_counts.is_empty() {
            return Err("custom buckets: must not have negative buckets".into());
        }
        if h.custom_values.iter().any(|v| !v.is_finite()) || !h.custom_values.windows(2).all(|w| w[0] < w[1])
        {
            return Err("custom buckets: bounds must be finite and strictly increasing".into());
        }
        // Bucket indices run 0..=len(custom_values), the last being +Inf.
        let mut end = 0i64;
        for s in &h.positive_spans {
            end += s.offset as i64;
            if end < 0 {
                return Err("custom buckets: span starts before the first bucket".into());
            }
            end += s.length as i64;
            if end > h.custom_values.len() as i64 + 1 {
                return Err("custom buckets: spans reach past the custom bounds".into());
            }
        }
    } else if !h.custom_values.is_empty() {
        return Err("histogram with exponential schema must not have custom values".into());
    }
    if zero_count.is_nan() || zero_count < 0.0 {
        return Err(format!("histogram has negative or NaN zero count {zero_count}"));
    }
    let neg = side_total("negative", &h.negative_spans, &h.negative_deltas, &h.negative_counts, float)?;
    let pos = side_total("positive", &h.positive_spans, &h.positive_deltas, &h.positive_counts, float)?;
    let observed = neg + pos + zero_count;
    let count = match h.count {
        Some(Count::CountInt(c)) => c as f64,
        Some(Count::CountFloat(c)) => c,
        None => 0.0,
    };
    if float || h.sum.is_nan() {
        if observed > count {
            return Err(format!(
                "histogram's observation count {count} should be at least the number of observations found in the buckets ({observed})"
            ));
        }
    } else if observed != count {
        return Err(format!(
            "histogram's observation count should equal the number of observations found in the buckets (in absence of NaN): count {count}, buckets {observed}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: i32, length: u32) -> rw2::BucketSpan {
        rw2::BucketSpan { offset, length }
    }

    /// The compliance suite's "basic" histogram: buckets 1,3,4,7,8 and -1,-... (count 27).
    fn basic() -> rw2::Histogram {
        rw2::Histogram {
            count: Some(Count::CountInt(27)),
            sum: 50.0,
            schema: 0,
            zero_threshold: 1e-128,
            zero_count: Some(ZeroCount::ZeroCountInt(1)),
            positive_spans: vec![span(0, 3), span(2, 2)],
            positive_deltas: vec![1, 2, 1, 3, 1],
            negative_spans: vec![span(0, 2)],
            negative_deltas: vec![1, 1],
            ..Default::default()
        }
    }

    #[test]
    fn accepts_valid_histograms() {
        // positive 1+3+4+7+8 = 23, negative 1+2 = 3, zero 1: 27.
        validate(&basic()).unwrap();
        let custom = rw2::Histogram {
            count: Some(Count::CountInt(30)),
            sum: 10.0,
            schema: -53,
            custom_values: vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0],
            positive_spans: vec![span(0, 6)],
            positive_deltas: vec![2, 1, 2, 3, -1, -2],
            ..Default::default()
        };
        // 2+3+5+8+7+5 = 30
        validate(&custom).unwrap();
        let empty = rw2::Histogram { count: Some(Count::CountInt(0)), ..Default::default() };
        validate(&empty).unwrap();
        let float = rw2::Histogram {
            count: Some(Count::CountFloat(3.5)),
            sum: 1.0,
            positive_spans: vec![span(0, 2)],
            positive_counts: vec![1.5, 2.0],
            ..Default::default()
        };
        validate(&float).unwrap();
    }

    #[test]
    fn rejects_invalid_histograms() {
        let mut h = basic();
        h.count = Some(Count::CountInt(99));
        assert!(validate(&h).unwrap_err().contains("should equal"));
        let mut h = basic();
        h.positive_deltas.pop();
        assert!(validate(&h).unwrap_err().contains("spans need"));
        let mut h = basic();
        h.positive_deltas = vec![1, -2, 1, 3, 1];
        assert!(validate(&h).unwrap_err().contains("negative"));
        let mut h = basic();
        h.schema = -53;
        assert!(validate(&h).unwrap_err().contains("custom buckets"));
        let mut h = basic();
        h.schema = 9;
        assert!(validate(&h).is_err());
        let mut h = basic();
        h.custom_values = vec![1.0];
        assert!(validate(&h).is_err());
        // A NaN sum relaxes equality to "at least".
        let mut h = basic();
        h.sum = f64::NAN;
        h.count = Some(Count::CountInt(30));
        validate(&h).unwrap();
        h.count = Some(Count::CountInt(26));
        assert!(validate(&h).is_err());
    }
}
