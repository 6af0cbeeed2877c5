//! Prometheus durations (`prometheus/common/model.Duration`): parsing with units largest first
//! and no fractions, and formatting back the way Prometheus does (`90s` → `1m30s`), which is
//! what `__scrape_interval__` and `__scrape_timeout__` carry.

use std::time::Duration;

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses `1h30m`, `15s`, `0`, … into milliseconds.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err("empty duration string".into());
    }
    let bad = || format!("not a valid duration string: {s:?}");
    let (mut total, mut rest, mut next_unit) = (0u64, s, 0usize);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(bad());
        }
        // Units must come largest first, each at most once.
        let pos = UNITS[next_unit..].iter().position(|(u, _)| *u == unit).ok_or_else(|| {
            if UNITS.iter().any(|(u, _)| *u == unit) {
                bad()
            } else {
                format!("unknown unit {unit:?} in duration {s:?}")
            }
        })? + next_unit;
        next_unit = pos + 1;
        total = n
            .checked_mul(UNITS[pos].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} overflows"))?;
    }
    Ok(total)
}

pub fn parse(s: &str) -> Result<Duration, String> {
    parse_ms(s).map(Duration::from_millis)
}

/// Formats like Prometheus: `0s`; `y`/`w` only when they divide exactly; then d h m s ms.
pub fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (i, (unit, size)) in UNITS.iter().enumerate() {
        if i < 2 {
            if rest.is_multiple_of(*size) {
                return format!("{}{unit}", rest / size);
            }
            continue;
        }
        if rest >= *size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

pub fn format(d: Duration) -> String {
    format_ms(d.as_millis() as u64)
}

/// Seconds in the shortest decimal form (`10`, `1.5`), for `X-Prometheus-Scrape-Timeout-Seconds`.
pub fn seconds_string(d: Duration) -> String {
    let s = d.as_secs_f64();
    format!("{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(parse_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_ms("0").unwrap(), 0);
        assert_eq!(parse_ms("1500ms").unwrap(), 1500);
        assert!(parse_ms("1.5s").is_err());
        assert!(parse_ms("30s1m").is_err(), "units must be largest first");
        assert!(parse_ms("2notseconds").unwrap_err().contains("unknown unit \"notseconds\""));
        assert_eq!(format_ms(90_000), "1m30s");
        assert_eq!(format_ms(14 * 86_400_000), "2w");
        assert_eq!(format_ms(1500), "1s500ms");
        assert_eq!(format_ms(60_000), "1m");
        assert_eq!(format_ms(0), "0s");
        assert_eq!(format_ms(365 * 86_400_000), "1y");
        assert_eq!(format_ms(86_400_000 + 1000), "1d1s");
        assert_eq!(seconds_string(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds_string(Duration::from_secs(10)), "10");
    }
}
