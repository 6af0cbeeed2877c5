//! Label values kept packed: runs of lowercase hex digits and UUIDs written at 7 bits a
//! byte, for the interner ([`crate::series_labels`]) to hold.
//!
//! On a Kubernetes node a large share of the label text is hex: cAdvisor's 64-digit
//! container ids (in `name`, and again in the cgroup path of `id`), pod UIDs in `id`, `uid`
//! and volume mount paths. Every container's values are its own, so interning does not
//! share them. Packed, a 64-digit id takes 38 bytes and a UUID 20, where the text took 64
//! and 36.
//!
//! The packed form is still a `str`: the bytes packing adds are ASCII and raw text is copied
//! in whole characters, so the interner keeps its one-allocation `ArcStr` and plain values
//! are still lent out as `&str` without a check.
//! Packing is a function of the text alone, so two values are equal exactly when their
//! stored forms are, and equality and hashing never unpack.
//!
//! A packed value is a sequence of segments, each a header byte and its body:
//!
//! | header | body |
//! |---|---|
//! | `0x00..=0x3F` | raw text, `header + 1` bytes (whole UTF-8 characters) |
//! | `0x40..=0x7E` | `header - 0x40 + MIN_RUN` hex digits, 7 bits a byte |
//! | `0x7F` | a UUID's 32 hex digits, 7 bits a byte (19 bytes); the dashes are implied |

use std::borrow::Cow;
use std::fmt;

/// The shortest hex run worth its header: 8 digits take 6 bytes.
const MIN_RUN: usize = 8;
const MAX_RUN: usize = MIN_RUN + (0x7E - 0x40);
const MAX_RAW: usize = 0x40;
const UUID: u8 = 0x7F;
const UUID_LEN: usize = 36;
/// Where a UUID's dashes are: 8-4-4-4-12.
const DASHES: [usize; 4] = [8, 13, 18, 23];
const UUID_DIGITS: usize = UUID_LEN - DASHES.len();

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_run(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| nibble(b).is_some()).count()
}

fn uuid_at(s: &[u8]) -> bool {
    s.len() >= UUID_LEN
        && s[..UUID_LEN]
            .iter()
            .enumerate()
            .all(|(i, &b)| if DASHES.contains(&i) { b == b'-' } else { nibble(b).is_some() })
}

/// Bytes that `digits` hex digits take at 7 bits a byte.
fn packed_len(digits: usize) -> usize {
    (4 * digits).div_ceil(7)
}

/// Appends the hex digits of `text` (other bytes skipped) at 7 bits a byte.
fn put_digits(out: &mut String, text: &[u8]) {
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in text {
        let Some(n) = nibble(b) else { continue };
        acc = (acc << 4) | n as u32;
        bits += 4;
        if bits >= 7 {
            bits -= 7;
            out.push(char::from(((acc >> bits) & 0x7F) as u8));
        }
    }
    if bits > 0 {
        out.push(char::from(((acc << (7 - bits)) & 0x7F) as u8));
    }
}

/// Writes the `digits` hex digits packed in `body` to the front of `out`.
///
/// Eight packed bytes are 56 bits, fourteen digits exactly, so a chunk of eight is gathered
/// into one word and written out without carrying bits between chunks, all of its digits at
/// once ([`hex_ascii`]). This is on the send path: the encoders unpack every packed value a
/// request carries, and a digit at a time (a shift, a table look-up and a store each) it was
/// 5% of the agent's CPU on the shared harness.
fn unpack_hex(body: &[u8], digits: usize, out: &mut [u8]) {
    let mut at = 0;
    for chunk in body.chunks(8) {
        let word = packed_word(chunk);
        let bits = 7 * chunk.len();
        let n = (bits / 4).min(digits - at);
        // The chunk's digits are its top 4n bits; the bits under them pad the last chunk.
        let text = hex_ascii(word >> (bits - 4 * n));
        out[at..at + n].copy_from_slice(&text[16 - n..]);
        at += n;
    }
}

/// The 7-bit bytes of `chunk` (at most eight) as one number, the first byte's bits on top.
fn packed_word(chunk: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(chunk) {
        // A whole chunk is squeezed in three steps instead of eight dependent shifts: pairs of
        // bytes into 14 bits, pairs of those into 28, then the two halves into 56.
        Ok(bytes) => {
            let x = u64::from_be_bytes(bytes);
            let x = ((x & 0x7F00_7F00_7F00_7F00) >> 1) | (x & 0x007F_007F_007F_007F);
            let x = ((x & 0x3FFF_0000_3FFF_0000) >> 2) | (x & 0x0000_3FFF_0000_3FFF);
            ((x & 0x0FFF_FFFF_0000_0000) >> 4) | (x & 0x0FFF_FFFF)
        }
        Err(_) => chunk.iter().fold(0u64, |w, &b| (w << 7) | u64::from(b)),
    }
}

/// The sixteen nibbles of `v` as lowercase hex digits, most significant first.
fn hex_ascii(v: u64) -> [u8; 16] {
    let mut text = [0u8; 16];
    text[..8].copy_from_slice(&nibbles_ascii((v >> 32) as u32).to_be_bytes());
    text[8..].copy_from_slice(&nibbles_ascii(v as u32).to_be_bytes());
    text
}

/// The eight nibbles of `v` as hex digits, one a byte, the most significant nibble in the
/// most significant byte.
fn nibbles_ascii(v: u32) -> u64 {
    // Spread the nibbles a byte apart: halves, then bytes, then nibbles move up.
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    // A byte of 10 or more gets its bit 4 set by adding 6; those become 'a'.. ('0' + 39).
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x + 0x3030_3030_3030_3030 + letters * 39
}

fn put_raw(out: &mut String, mut raw: &str) {
    while !raw.is_empty() {
        let mut n = raw.len().min(MAX_RAW);
        while !raw.is_char_boundary(n) {
            n -= 1;
        }
        out.push(char::from((n - 1) as u8));
        out.push_str(&raw[..n]);
        raw = &raw[n..];
    }
}

/// Appends `value` packed to `out` and returns true, or appends nothing and returns false
/// when packing would not make it shorter.
pub fn pack(value: &str, out: &mut String) -> bool {
    let bytes = value.as_bytes();
    // The common case, a value without a hex run worth packing, costs one scan.
    if !has_run(bytes) {
        return false;
    }
    let start = out.len();
    let (mut raw_from, mut i) = (0, 0);
    while i < bytes.len() {
        if uuid_at(&bytes[i..]) {
            put_raw(out, &value[raw_from..i]);
            out.push(char::from(UUID));
            put_digits(out, &bytes[i..i + UUID_LEN]);
            i += UUID_LEN;
            raw_from = i;
            continue;
        }
        let mut run = hex_run(&bytes[i..]);
        // A UUID may start inside a run: its first group of digits ends the run at its first
        // dash.
        let first_group = DASHES[0];
        if run > first_group && uuid_at(&bytes[i + run - first_group..]) {
            run -= first_group;
        }
        if run < MIN_RUN {
            i += run.max(1);
            while !value.is_char_boundary(i) {
                i += 1;
            }
            continue;
        }
        put_raw(out, &value[raw_from..i]);
        let mut left = run;
        while left >= MIN_RUN {
            let n = left.min(MAX_RUN);
            out.push(char::from((0x40 + n - MIN_RUN) as u8));
            put_digits(out, &bytes[i..i + n]);
            i += n;
            left -= n;
        }
        raw_from = i;
        i += left;
    }
    put_raw(out, &value[raw_from..]);
    if out.len() - start >= value.len() {
        out.truncate(start);
        return false;
    }
    true
}

fn has_run(bytes: &[u8]) -> bool {
    let mut run = 0;
    for &b in bytes {
        run = if nibble(b).is_some() { run + 1 } else { 0 };
        if run == MIN_RUN {
            return true;
        }
    }
    false
}

/// One segment of a packed value.
enum Piece<'a> {
    Raw(&'a str),
    /// Packed hex digits: their bytes, how many digits, and whether they are a UUID's.
    Digits(&'a [u8], usize, bool),
}

/// Calls `each` with the segments of a packed value in order.
fn for_pieces<'a>(packed: &'a str, mut each: impl FnMut(Piece<'a>)) {
    let bytes = packed.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let h = bytes[i];
        i += 1;
        let (piece, n) = match h {
            0x00..=0x3F => {
                let n = h as usize + 1;
                (Piece::Raw(&packed[i..i + n]), n)
            }
            UUID => {
                let n = packed_len(UUID_DIGITS);
                (Piece::Digits(&bytes[i..i + n], UUID_DIGITS, true), n)
            }
            _ => {
                let d = (h - 0x40) as usize + MIN_RUN;
                let n = packed_len(d);
                (Piece::Digits(&bytes[i..i + n], d, false), n)
            }
        };
        each(piece);
        i += n;
    }
}

/// The longest text one segment of digits stands for: a run of `MAX_RUN`, or a UUID.
const MAX_DIGITS_TEXT: usize = if MAX_RUN > UUID_LEN { MAX_RUN } else { UUID_LEN };

/// Writes the text of a segment of `digits` packed hex digits to `buf`, a UUID's dashes put
/// back, and returns it.
fn digits_text<'b>(body: &[u8], digits: usize, uuid: bool, buf: &'b mut [u8; MAX_DIGITS_TEXT]) -> &'b [u8] {
    if !uuid {
        unpack_hex(body, digits, &mut buf[..digits]);
        return &buf[..digits];
    }
    let mut hex = [0u8; UUID_DIGITS];
    unpack_hex(body, UUID_DIGITS, &mut hex);
    // Each group of digits is copied whole, then the dash after it (none after the last).
    let (mut start, mut digit) = (0, 0);
    for end in DASHES.into_iter().chain([UUID_LEN]) {
        let n = end - start;
        buf[start..end].copy_from_slice(&hex[digit..digit + n]);
        if end < UUID_LEN {
            buf[end] = b'-';
        }
        (start, digit) = (end + 1, digit + n);
    }
    &buf[..UUID_LEN]
}

/// A label value as the interner holds it: plain text, or packed (see the module header).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Value<'a> {
    Plain(&'a str),
    Packed(&'a str),
}

impl<'a> Value<'a> {
    /// The text, when it is held plain.
    pub fn as_plain(self) -> Option<&'a str> {
        match self {
            Value::Plain(s) => Some(s),
            Value::Packed(_) => None,
        }
    }

    /// The text's length in bytes.
    pub fn len(self) -> usize {
        match self {
            Value::Plain(s) => s.len(),
            Value::Packed(p) => {
                let mut n = 0;
                for_pieces(p, |piece| {
                    n += match piece {
                        Piece::Raw(r) => r.len(),
                        Piece::Digits(_, _, true) => UUID_LEN,
                        Piece::Digits(_, d, false) => d,
                    }
                });
                n
            }
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Appends the text to `out`.
    pub fn put(self, out: &mut Vec<u8>) {
        match self {
            Value::Plain(s) => out.extend_from_slice(s.as_bytes()),
            Value::Packed(p) => for_pieces(p, |piece| match piece {
                Piece::Raw(r) => out.extend_from_slice(r.as_bytes()),
                Piece::Digits(body, d, uuid) => {
                    out.extend_from_slice(digits_text(body, d, uuid, &mut [0; MAX_DIGITS_TEXT]))
                }
            }),
        }
    }

    /// Appends the text to `out`.
    pub fn put_str(self, out: &mut String) {
        match self {
            Value::Plain(s) => out.push_str(s),
            Value::Packed(p) => for_pieces(p, |piece| match piece {
                Piece::Raw(r) => out.push_str(r),
                Piece::Digits(body, d, uuid) => {
                    let mut buf = [0; MAX_DIGITS_TEXT];
                    let text = digits_text(body, d, uuid, &mut buf);
                    out.push_str(std::str::from_utf8(text).expect("hex digits and dashes are ASCII"))
                }
            }),
        }
    }

    /// The text, borrowed when it is held plain.
    pub fn text(self) -> Cow<'a, str> {
        match self {
            Value::Plain(s) => Cow::Borrowed(s),
            Value::Packed(_) => {
                let mut out = String::with_capacity(self.len());
                self.put_str(&mut out);
                Cow::Owned(out)
            }
        }
    }
}

impl PartialEq<str> for Value<'_> {
    fn eq(&self, other: &str) -> bool {
        match *self {
            Value::Plain(s) => s == other,
            Value::Packed(_) => self.text() == other,
        }
    }
}

impl PartialEq<&str> for Value<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// As the text's `Debug`: quoted and escaped.
impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packed(value: &str) -> Option<String> {
        let mut out = String::new();
        pack(value, &mut out).then_some(out)
    }

    fn round_trip(value: &str) -> String {
        match packed(value) {
            None => value.to_owned(),
            Some(p) => {
                let v = Value::Packed(&p);
                assert_eq!(v.len(), value.len(), "{value}");
                v.text().into_owned()
            }
        }
    }

    const CID: &str = "280cc3617f18651e386e985671212374a5616d565eab9c919dcacf1f6248324e";

    #[test]
    fn container_ids_and_uuids_take_about_half() {
        assert_eq!(packed(CID).unwrap().len(), 1 + 37);
        let uid = "aeb18761-ae1d-40f7-a265-ece4655626ba";
        assert_eq!(packed(uid).unwrap().len(), 1 + 19);
        // The harness's and cAdvisor's cgroup path: raw, UUID, raw, id. The `d` of `pod`
        // is a hex digit before the UUID's first eight.
        let id = format!("/kubepods/burstable/pod{uid}/{CID}");
        let p = packed(&id).unwrap();
        assert_eq!(p.len(), (1 + 23) + (1 + 19) + (1 + 1) + (1 + 37), "{p:?}");
        for v in [CID, uid, &id] {
            assert_eq!(round_trip(v), v);
        }
    }

    #[test]
    fn values_packing_would_not_shorten_stay_plain() {
        for v in [
            "",
            "total",
            "0.005",
            "1234567",
            "GET",
            "checkout-7ccp66rxb4-78ggp",
            "deadbee-f",
            "DEADBEEF0",
            "x12345678y",
        ] {
            assert_eq!(packed(v), None, "{v}");
        }
        // Eight digits save two bytes, what the raw text's headers cost on both sides.
        assert!(packed("12345678").is_some() && packed("x12345678").is_some());
    }

    #[test]
    fn long_runs_and_long_raw_text_split() {
        let long = "0123456789abcdef".repeat(20);
        assert_eq!(round_trip(&long), long);
        let mixed = format!("{}/{}/{}", "é".repeat(100), CID.repeat(3), "x".repeat(7));
        assert_eq!(round_trip(&mixed), mixed);
        let odd = format!("{}{}", &CID.repeat(2)[..MAX_RUN + 3], "z");
        assert_eq!(round_trip(&odd), odd);
    }

    #[test]
    fn compares_with_text() {
        let p = packed(CID).unwrap();
        assert!(Value::Packed(&p) == CID);
        assert!(Value::Packed(&p) != CID[1..]);
        assert_eq!(format!("{:?}", Value::Packed(&p)), format!("{CID:?}"));
        assert_eq!(Value::Packed(&p).to_string(), CID);
    }

    #[test]
    fn words_are_written_as_printf_writes_them() {
        for v in [0, 1, 9, 10, 15, 16, 0x9a, 0xabcdef, u64::MAX, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]
        {
            assert_eq!(hex_ascii(v), format!("{v:016x}").as_bytes(), "{v:#x}");
        }
    }

    proptest! {
        #[test]
        fn any_word_is_written_as_printf_writes_it(v: u64) {
            let text = format!("{v:016x}");
            prop_assert_eq!(hex_ascii(v), text.as_bytes());
        }

        #[test]
        fn a_whole_chunk_is_squeezed_as_byte_by_byte_shifts_would(bytes: [u8; 8]) {
            let bytes = bytes.map(|b| b & 0x7F);
            let slow = bytes.iter().fold(0u64, |w, &b| (w << 7) | u64::from(b));
            prop_assert_eq!(packed_word(&bytes), slow);
        }

        #[test]
        fn any_text_round_trips(v in "([0-9a-f]{0,80}|[-/a-z]{0,5}|\\PC{0,3}){0,8}") {
            prop_assert_eq!(round_trip(&v), v.clone());
            if let Some(p) = packed(&v) {
                prop_assert!(p.len() < v.len());
            }
        }

        #[test]
        fn uuids_anywhere_round_trip(pre in "[0-9a-g-]{0,12}", post in "[0-9a-g-]{0,12}", u in "[0-9a-f]{32}") {
            let uid = format!("{}-{}-{}-{}-{}", &u[..8], &u[8..12], &u[12..16], &u[16..20], &u[20..]);
            let v = format!("{pre}{uid}{post}");
            prop_assert_eq!(round_trip(&v), v.clone());
        }
    }
}
