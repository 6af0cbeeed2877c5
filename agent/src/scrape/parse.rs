//! Parsers for the Prometheus text format (0.0.4 and 1.0.0) and OpenMetrics 1.0, with
//! Prometheus' exact acceptance rules (reference §4).
//!
//! Zero-copy on the hot path: [`Parser::next_entry`] yields each sample's *raw series text*
//! (`name{labels}` exactly as exposed), its value and timestamp, without unescaping or
//! validating the labels. The scrape loop looks the raw text up in its series cache and calls
//! [`parse_series`] only for texts it has not seen; a cache hit is the same bytes that
//! already parsed, so nothing is lost by skipping the work.
//!
//! With [`Parser::guessing`] it goes further for the series cache: a sample line is first
//! read backwards (the value is the last token, the series everything before the
//! separator), which skips scanning the label set. Such a sample is marked `guessed`; it
//! stands only if its series text is one the cache knows, i.e. one that already parsed in
//! full. That is enough: a known text ends where a forward scan of any line starting with it
//! ends (at its closing `}`, or at the first byte after its name that is not a name
//! character), so a line made of a known text, separators and one value token parses
//! forward to the same series and value. Otherwise the caller asks for
//! [`Parser::reparse`], the full forward parse of the same line.

use std::borrow::Cow;

use ferry_protocol::stale::NORMAL_NAN_BITS;

/// Which grammar a body is parsed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain` (0.0.4 and 1.0.0).
    Text,
    /// `application/openmetrics-text` 1.0.
    OpenMetrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    /// The RW `MetricType` number.
    pub fn wire(self) -> i32 {
        match self {
            MetricType::Unknown => 0,
            MetricType::Counter => 1,
            MetricType::Gauge => 2,
            MetricType::Histogram => 3,
            MetricType::GaugeHistogram => 4,
            MetricType::Summary => 5,
            MetricType::Info => 6,
            MetricType::StateSet => 7,
        }
    }
}

/// Label-value normalisation in force for a sample: the most recent TYPE line decides
/// (Prometheus 3 rewrites `le` of histograms and `quantile` of summaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Norm {
    None,
    Le,
    Quantile,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds, if the exemplar carried one.
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The series exactly as exposed, e.g. `m{a="1"}`; the series cache key.
    pub series: &'a str,
    pub norm: Norm,
    pub value: f64,
    /// Milliseconds.
    pub timestamp: Option<i64>,
    pub exemplar: Option<Exemplar>,
    /// Read backwards and unverified: valid only if `series` is a known series text (see the
    /// module header); otherwise call [`Parser::reparse`].
    pub guessed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    Help { name: Cow<'a, str>, text: Cow<'a, str> },
    Type { name: Cow<'a, str>, kind: MetricType },
    Unit { name: Cow<'a, str>, unit: Cow<'a, str> },
    Sample(Sample<'a>),
}

/// A parse error; any of them fails the whole scrape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (line {line})")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

pub struct Parser<'a> {
    body: &'a str,
    pos: usize,
    line: usize,
    format: Format,
    norm: Norm,
    eof_seen: bool,
    /// Whether sample lines are read backwards first (see the module header).
    guess: bool,
    /// The line of the last guessed sample, for [`Parser::reparse`].
    last_line: &'a str,
}

impl std::fmt::Debug for Parser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser").field("format", &self.format).field("line", &self.line).finish()
    }
}

fn is_name_start(c: u8, metric: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || (metric && c == b':')
}

fn is_name_char(c: u8, metric: bool) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || (metric && c == b':')
}

/// Go `strconv.ParseFloat(s, 64)` after Prometheus' rejection of `p`, `P` and `_`; NaNs are
/// canonicalised to Prometheus' `NormalNaN` so a target can never produce a stale marker.
pub fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.bytes().any(|b| matches!(b, b'p' | b'P' | b'_')) {
        return None;
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    // Only the rare special spellings need a case-insensitive look; no allocation per value.
    let special_inf = unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity");
    if unsigned.eq_ignore_ascii_case("nan") {
        // Go accepts no sign on NaN.
        return (unsigned.len() == s.len()).then_some(f64::from_bits(NORMAL_NAN_BITS));
    }
    // Rust accepts a few spellings Go does not (hex is excluded above); the rest agree.
    if unsigned.len() > 1 && unsigned.as_bytes()[0] == b'0' && matches!(unsigned.as_bytes()[1], b'x' | b'X') {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    if v.is_infinite() && !special_inf {
        return None; // out of range: Go reports ErrRange
    }
    Some(v)
}

/// OpenMetrics and exemplar timestamps: float seconds, truncated toward zero to ms.
fn parse_om_timestamp(s: &str) -> Option<i64> {
    let v = parse_float(s)?;
    if !v.is_finite() {
        return None;
    }
    Some((v * 1000.0) as i64)
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a str, format: Format) -> Parser<'a> {
        Parser {
            body,
            pos: 0,
            line: 0,
            format,
            norm: Norm::None,
            eof_seen: false,
            guess: false,
            last_line: "",
        }
    }

    /// Reads sample lines backwards first, for a consumer that checks each guessed series
    /// text against texts that parsed before (see the module header).
    pub fn guessing(mut self) -> Parser<'a> {
        self.guess = true;
        self
    }

    /// The full forward parse of the line of the last guessed sample, whose series text
    /// turned out to be unknown. A line with a timestamp or an exemplar never guesses right,
    /// so after one of those the parser stops guessing for the rest of the body.
    pub fn reparse(&mut self) -> Result<Sample<'a>, ParseError> {
        let s = self.sample(self.last_line)?;
        if s.timestamp.is_some() || s.exemplar.is_some() {
            self.guess = false;
        }
        Ok(s)
    }

    /// The backward reading of a sample line: `None` when it does not even look like
    /// `series SEP value`.
    fn guess_sample(&self, line: &'a str) -> Option<Sample<'a>> {
        let b = line.as_bytes();
        let sep = memchr::memrchr2(b' ', b'\t', b)?;
        // A value token with `{` in it fails here, as the forward parse fails on it.
        let value = parse_float(&line[sep + 1..])?;
        let mut end = sep;
        if self.format == Format::OpenMetrics {
            // Exactly one space, and none before the name: OpenMetrics rejects a line that
            // starts with one, though the text format (whose texts the cache may know) takes it.
            if b[sep] != b' '
                || (sep > 0 && matches!(b[sep - 1], b' ' | b'\t'))
                || matches!(b[0], b' ' | b'\t')
            {
                return None;
            }
        } else {
            while end > 0 && matches!(b[end - 1], b' ' | b'\t') {
                end -= 1;
            }
        }
        if end == 0 {
            return None;
        }
        Some(Sample {
            series: &line[..end],
            norm: self.norm,
            value,
            timestamp: None,
            exemplar: None,
            guessed: true,
        })
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { line: self.line, msg: msg.into() })
    }

    /// The next entry, `Ok(None)` at the end. (Not an `Iterator`: an error ends the body.)
    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        loop {
            if self.pos >= self.body.len() {
                if self.format == Format::OpenMetrics && !self.eof_seen {
                    return self.err("data does not end with # EOF");
                }
                return Ok(None);
            }
            if self.eof_seen {
                return self.err("unexpected data after # EOF");
            }
            let rest = &self.body[self.pos..];
            let (line, next) = match memchr::memchr(b'\n', rest.as_bytes()) {
                Some(i) => (&rest[..i], self.pos + i + 1),
                None => (rest, self.body.len()),
            };
            self.line += 1;
            self.pos = next;
            match self.format {
                Format::Text => {
                    if line.bytes().all(|b| b == b' ' || b == b'\t') {
                        continue;
                    }
                    if line.starts_with('#') {
                        match self.text_meta(line)? {
                            Some(e) => return Ok(Some(e)),
                            None => continue,
                        }
                    }
                }
                Format::OpenMetrics => {
                    if line.is_empty() {
                        return self.err("blank lines are not allowed in OpenMetrics");
                    }
                    if line.starts_with('#') {
                        match self.om_meta(line)? {
                            Some(e) => return Ok(Some(e)),
                            None => continue,
                        }
                    }
                }
            }
            if self.guess
                && let Some(s) = self.guess_sample(line)
            {
                self.last_line = line;
                return Ok(Some(Entry::Sample(s)));
            }
            return self.sample(line).map(|s| Some(Entry::Sample(s)));
        }
    }

    /// `# HELP` / `# TYPE` in the text format; other `#` lines are comments.
    fn text_meta(&mut self, line: &'a str) -> Result<Option<Entry<'a>>, ParseError> {
        let after_hash = &line[1..];
        let trimmed = after_hash.trim_start_matches([' ', '\t']);
        if trimmed.len() == after_hash.len() {
            return Ok(None); // "#foo": a comment
        }
        let (kw, rest) = if let Some(r) = trimmed.strip_prefix("HELP") {
            ("HELP", r)
        } else if let Some(r) = trimmed.strip_prefix("TYPE") {
            ("TYPE", r)
        } else {
            return Ok(None);
        };
        let rest_trim = rest.trim_start_matches([' ', '\t']);
        if rest_trim.len() == rest.len() {
            return Ok(None); // "# HELPX …" is a comment
        }
        let (name, after) = self.meta_name(rest_trim)?;
        // Exactly one separator character before the text/type.
        let text = match after.chars().next() {
            None => "",
            Some(' ' | '\t') => &after[1..],
            Some(_) => return self.err(format!("expected a space after the metric name in # {kw}")),
        };
        if kw == "HELP" {
            Ok(Some(Entry::Help { name, text: unescape_help_text(text) }))
        } else {
            let kind = match text {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "summary" => MetricType::Summary,
                "untyped" => MetricType::Unknown,
                other => return self.err(format!("invalid metric type {other:?}")),
            };
            self.set_norm(kind);
            Ok(Some(Entry::Type { name, kind }))
        }
    }

    fn set_norm(&mut self, kind: MetricType) {
        self.norm = match kind {
            MetricType::Histogram | MetricType::GaugeHistogram => Norm::Le,
            MetricType::Summary => Norm::Quantile,
            _ => Norm::None,
        };
    }

    /// The metric name of a metadata line (plain or quoted) and what follows it.
    fn meta_name(&self, s: &'a str) -> Result<(Cow<'a, str>, &'a str), ParseError> {
        if s.starts_with('"') {
            let (name, used) = parse_quoted(s).map_err(|m| ParseError { line: self.line, msg: m })?;
            return Ok((name, &s[used..]));
        }
        let b = s.as_bytes();
        if b.is_empty() || !is_name_start(b[0], true) {
            return self.err("expected a metric name after # HELP or # TYPE");
        }
        let len = b.iter().take_while(|&&c| is_name_char(c, true)).count();
        Ok((Cow::Borrowed(&s[..len]), &s[len..]))
    }

    /// `# HELP|TYPE|UNIT|EOF` in OpenMetrics; nothing else may start with `#`.
    /// Returns `Ok(None)` for `# EOF`.
    fn om_meta(&mut self, line: &'a str) -> Result<Option<Entry<'a>>, ParseError> {
        if line == "# EOF" {
            self.eof_seen = true;
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix("# ") else {
            return self.err("expected a valid start token");
        };
        let (kw, rest) = match rest.split_once(' ') {
            Some((kw @ ("HELP" | "TYPE" | "UNIT"), r)) => (kw, r),
            _ => return self.err("expected a valid start token"),
        };
        let (name, after) = self.meta_name(rest)?;
        let Some(text) = after.strip_prefix(' ') else {
            return self.err(format!("expected text in {kw}"));
        };
        match kw {
            "HELP" => Ok(Some(Entry::Help { name, text: unescape_label_value(text) })),
            "TYPE" => {
                let kind = match text {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    "histogram" => MetricType::Histogram,
                    "gaugehistogram" => MetricType::GaugeHistogram,
                    "summary" => MetricType::Summary,
                    "info" => MetricType::Info,
                    "stateset" => MetricType::StateSet,
                    "unknown" => MetricType::Unknown,
                    other => return self.err(format!("invalid metric type {other:?}")),
                };
                self.set_norm(kind);
                Ok(Some(Entry::Type { name, kind }))
            }
            _ => {
                if !text.is_empty() && !name.ends_with(&format!("_{text}")) {
                    return self.err(format!("unit {text:?} not a suffix of metric {name:?}"));
                }
                Ok(Some(Entry::Unit { name, unit: Cow::Borrowed(text) }))
            }
        }
    }

    /// A sample line: series extent, value, timestamp, exemplar.
    fn sample(&mut self, line: &'a str) -> Result<Sample<'a>, ParseError> {
        let om = self.format == Format::OpenMetrics;
        let b = line.as_bytes();
        let mut i = 0;
        if !om {
            // Leading whitespace becomes part of the name (Prometheus quirk, golden G-P15).
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
        }
        if i < b.len() && is_name_start(b[i], true) {
            while i < b.len() && is_name_char(b[i], true) {
                i += 1;
            }
        } else if b.get(i) != Some(&b'{') {
            return self.err(format!("expected a metric name at {:?}", truncate(line)));
        }
        if b.get(i) == Some(&b'{') {
            i = self.skip_braces(line, i)?;
        }
        let series = &line[..i];
        // Separator before the value.
        let sep_len = b[i..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
        if om && (sep_len != 1 || b[i] != b' ') {
            return self.err("expected exactly one space between series and value");
        }
        if sep_len == 0 && (i == 0 || b[i - 1] != b'}') {
            return self.err(format!("expected value after metric in {:?}", truncate(line)));
        }
        i += sep_len;
        let vend = i + b[i..].iter().take_while(|&&c| !matches!(c, b' ' | b'\t' | b'{')).count();
        let vtext = &line[i..vend];
        let value = parse_float(vtext).ok_or_else(|| ParseError {
            line: self.line,
            msg: format!("strconv.ParseFloat: parsing {vtext:?}: invalid syntax"),
        })?;
        i = vend;
        let mut timestamp = None;
        let mut exemplar = None;
        if om {
            let mut rest = &line[i..];
            if let Some(r) = rest.strip_prefix(' ')
                && !r.starts_with('#')
            {
                let end = r.find(' ').unwrap_or(r.len());
                timestamp = Some(parse_om_timestamp(&r[..end]).ok_or_else(|| ParseError {
                    line: self.line,
                    msg: format!("invalid timestamp {}", &r[..end]),
                })?);
                rest = &r[end..];
            }
            if let Some(ex) = rest.strip_prefix(" # ") {
                exemplar = Some(self.exemplar(ex)?);
            } else if !rest.is_empty() {
                return self.err(format!("unexpected {:?} after the sample", truncate(rest)));
            }
        } else {
            let sep = b[i..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
            i += sep;
            if i < b.len() {
                if sep == 0 {
                    return self.err(format!("expected timestamp or new record in {:?}", truncate(line)));
                }
                let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    // The next *character*: byte i may start a multi-byte one (found by fuzzing).
                    let next = line[i..].chars().next().unwrap_or(' ');
                    return self.err(format!("expected timestamp or new record, got {next:?}"));
                }
                let ts: i64 = line[i..i + digits]
                    .parse()
                    .map_err(|_| ParseError { line: self.line, msg: "timestamp out of range".into() })?;
                i += digits;
                if !b[i..].iter().all(|&c| c == b' ' || c == b'\t') {
                    return self.err("expected next entry after timestamp");
                }
                timestamp = Some(ts);
            }
        }
        Ok(Sample { series, norm: self.norm, value, timestamp, exemplar, guessed: false })
    }

    /// Finds the `}` closing the label set that opens at `open`, honouring quoted strings.
    /// Jumps between the bytes that matter with `memchr2` rather than stepping through every
    /// byte: this scan is most of the work of a series-cache hit.
    fn skip_braces(&self, line: &str, open: usize) -> Result<usize, ParseError> {
        let b = line.as_bytes();
        let mut i = open + 1;
        // Outside quotes only `"` and `}` matter.
        while let Some(j) = memchr::memchr2(b'"', b'}', &b[i..]) {
            i += j;
            if b[i] == b'}' {
                return Ok(i + 1);
            }
            // Inside quotes only the closing `"` and escapes matter.
            i += 1;
            loop {
                let Some(j) = memchr::memchr2(b'"', b'\\', &b[i..]) else {
                    return self.err(format!("unterminated label set in {:?}", truncate(line)));
                };
                i += j;
                if b[i] == b'"' {
                    i += 1;
                    break;
                }
                i += 2; // an escape and the byte it escapes
                if i >= b.len() {
                    return self.err(format!("unterminated label set in {:?}", truncate(line)));
                }
            }
        }
        self.err(format!("unterminated label set in {:?}", truncate(line)))
    }

    /// ` # {labels} value [timestamp]` after an OpenMetrics sample.
    fn exemplar(&self, s: &str) -> Result<Exemplar, ParseError> {
        if !s.starts_with('{') {
            return self.err("expected label set in exemplar");
        }
        let end = self.skip_braces(s, 0)?;
        let (_, labels) = parse_series(&s[..end], Norm::None, Format::OpenMetrics)
            .map_err(|m| ParseError { line: self.line, msg: format!("invalid exemplar: {m}") })?;
        let rest = s[end..]
            .strip_prefix(' ')
            .ok_or_else(|| ParseError { line: self.line, msg: "expected value in exemplar".into() })?;
        let (v, ts) = match rest.split_once(' ') {
            Some((v, ts)) => (v, Some(ts)),
            None => (rest, None),
        };
        let value = parse_float(v)
            .ok_or_else(|| ParseError { line: self.line, msg: format!("invalid exemplar value {v:?}") })?;
        let timestamp = match ts {
            Some(t) => Some(parse_om_timestamp(t).ok_or_else(|| ParseError {
                line: self.line,
                msg: format!("invalid exemplar timestamp {t:?}"),
            })?),
            None => None,
        };
        Ok(Exemplar { labels, value, timestamp })
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Text-format HELP: only `\\` and `\n` are escapes.
fn unescape_help_text(s: &str) -> Cow<'_, str> {
    unescape(s, false)
}

/// Label values (and OM HELP): `\"`, `\\` and `\n` are escapes; any other backslash sequence
/// stays as it is. OpenMetrics has the same replacer.
fn unescape_label_value(s: &str) -> Cow<'_, str> {
    unescape(s, true)
}

/// Replaces `\\` and `\n` (and `\"` when `quote` is set); other backslashes stay as they are.
/// Text without a backslash is borrowed as it is (most HELP texts, every scrape).
fn unescape(s: &str, quote: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('n') => out.push('\n'),
            Some(e @ '\\') => out.push(e),
            Some(e @ '"') if quote => out.push(e),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    Cow::Owned(out)
}

/// A double-quoted string at the start of `s`: its unescaped content and the bytes used.
fn parse_quoted(s: &str) -> Result<(Cow<'_, str>, usize), String> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return Err("expected '\"'".into());
    }
    let mut i = 1;
    let mut escaped = false;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                escaped = true;
                i += 1;
            }
            b'"' => {
                let raw = &s[1..i];
                let v = if escaped { unescape_label_value(raw) } else { Cow::Borrowed(raw) };
                return Ok((v, i + 1));
            }
            b'\n' => return Err("label value contains a raw newline".into()),
            _ => {}
        }
        i += 1;
    }
    Err("unterminated quoted string".into())
}

/// Prometheus' `FormatOpenMetricsFloat`, used for `le` and `quantile` normalisation.
pub fn format_om_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return "0.0".into();
    }
    let s = go_format_g(v);
    if s.contains(['.', 'e']) { s } else { format!("{s}.0") }
}

/// Go `strconv.FormatFloat(v, 'g', -1, 64)`: shortest round-trip digits, exponent form when
/// the exponent is < -4 or >= 6 (with a sign and at least two digits).
fn go_format_g(v: f64) -> String {
    let sci = format!("{v:e}"); // shortest digits: "1.234567e6", "-2e-7"
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

/// Parses a raw series (`name{labels}` or `{"name", labels}`) into its metric name and label
/// pairs, validating everything the grammar requires and applying `le`/`quantile`
/// normalisation. Empty values are kept here; the label merge drops them.
pub fn parse_series(
    raw: &str,
    norm: Norm,
    format: Format,
) -> Result<(String, Vec<(String, String)>), String> {
    let om = format == Format::OpenMetrics;
    let b = raw.as_bytes();
    let mut i = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    i += b[i..].iter().take_while(|&&c| is_name_char(c, true)).count();
    let mut name = raw[..i].to_owned();
    let mut labels = Vec::new();
    if i >= b.len() {
        return Ok((name, labels));
    }
    if b[i] != b'{' {
        return Err(format!("unexpected {:?} after the metric name", &raw[i..]));
    }
    i += 1;
    let ws = |i: &mut usize| {
        if !om {
            while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
                *i += 1;
            }
        }
    };
    let mut first = true;
    loop {
        ws(&mut i);
        match b.get(i) {
            Some(b'}') => {
                i += 1;
                break;
            }
            None => return Err("unterminated label set".into()),
            Some(b',') if first => return Err("unexpected ',' at the start of the label set".into()),
            _ => {}
        }
        // A label name, plain or quoted; a quoted string not followed by '=' is the metric name.
        let lname: String = if b[i] == b'"' {
            let (q, used) = parse_quoted(&raw[i..])?;
            i += used;
            ws(&mut i);
            if b.get(i) != Some(&b'=') {
                if !name.trim_start().is_empty() {
                    return Err("metric name given twice".into());
                }
                name = q.into_owned();
                ws(&mut i);
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {}
                    _ => return Err("expected ',' or '}' after the quoted metric name".into()),
                }
                first = false;
                continue;
            }
            q.into_owned()
        } else if is_name_start(b[i], false) {
            let s = i;
            while i < b.len() && is_name_char(b[i], false) {
                i += 1;
            }
            raw[s..i].to_owned()
        } else {
            return Err(format!("invalid label name at {:?}", truncate(&raw[i..])));
        };
        ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return Err(format!("expected '=' after label name {lname:?}"));
        }
        i += 1;
        ws(&mut i);
        if b.get(i) != Some(&b'"') {
            return Err(format!("expected a double-quoted value for label {lname:?}"));
        }
        let (v, used) = parse_quoted(&raw[i..])?;
        i += used;
        let mut value = v.into_owned();
        if ((norm == Norm::Le && lname == "le") || (norm == Norm::Quantile && lname == "quantile"))
            && let Some(f) = parse_float(&value)
        {
            value = format_om_float(f);
        }
        labels.push((lname, value));
        first = false;
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            // The text lexer accepts a missing comma (a Prometheus quirk); OpenMetrics does not.
            Some(_) if !om => {}
            _ => return Err("expected comma or brace close".into()),
        }
    }
    if i != b.len() {
        return Err(format!("unexpected {:?} after the label set", &raw[i..]));
    }
    // A missing name is not a syntax error: the scrape loop fails the scrape for a series
    // without __name__ after relabeling, as Prometheus does, and exemplars have no name.
    Ok((name, labels))
}

/// The body as text. Prometheus only fails a scrape for invalid UTF-8 where it reads text: in
/// names, label values and HELP; a plain comment (`# anything`) is skipped unread, whatever
/// its bytes. So a body that is not UTF-8 as a whole has its invalid plain comments blanked
/// (to `#`, keeping line numbers) and fails only when some other line is invalid.
pub fn body_text(body: Vec<u8>) -> Result<String, String> {
    let body = match String::from_utf8(body) {
        Ok(s) => return Ok(s),
        Err(e) => e.into_bytes(),
    };
    let mut out = String::with_capacity(body.len());
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        match std::str::from_utf8(line) {
            Ok(l) => out.push_str(l),
            Err(_) => {
                // The first word after `#`, for a comment line.
                let keyword = line.strip_prefix(b"#").map(|rest| {
                    rest.trim_ascii_start().split(|&b| b == b' ' || b == b'\t').next().unwrap_or_default()
                });
                match keyword {
                    Some(b"HELP") => return Err(format!("line {}: HELP text is not valid UTF-8", n + 1)),
                    Some(b"TYPE" | b"UNIT" | b"EOF") => {
                        return Err(format!("line {}: metadata line is not valid UTF-8", n + 1));
                    }
                    Some(_) => out.push('#'),
                    None => {
                        return Err(format!("line {}: invalid UTF-8 in a metric name or label value", n + 1));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Chooses the parser from a response's Content-Type (Go `mime.ParseMediaType` rules), or the
/// fallback protocol when the header is missing or unusable.
pub fn format_for(content_type: Option<&str>, fallback: Option<Format>) -> Result<Format, String> {
    let media = content_type.and_then(|ct| {
        let media = ct.split(';').next()?.trim().to_ascii_lowercase();
        // An empty parameter (`text/plain;;`) makes Go's parser fail.
        let params_ok = ct.split(';').skip(1).all(|p| p.trim().contains('='));
        (params_ok && !media.is_empty()).then_some(media)
    });
    match media.as_deref() {
        Some("text/plain") => Ok(Format::Text),
        Some("application/openmetrics-text") => Ok(Format::OpenMetrics),
        _ => match (fallback, content_type) {
            (Some(f), _) => Ok(f),
            (None, None) | (None, Some("")) => {
                Err("non-compliant scrape target sending blank Content-Type and no fallback_scrape_protocol specified for target".into())
            }
            (None, Some(ct)) => {
                Err(format!("received unsupported Content-Type {ct:?} and no fallback_scrape_protocol specified for target"))
            }
        },
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn invalid_utf8_fails_only_where_prometheus_reads_text() {
        let ok = body_text(b"# caf\xe9 comment\nm 1\n".to_vec()).unwrap();
        assert_eq!(ok, "#\nm 1\n", "a plain comment with invalid bytes is blanked");
        assert_eq!(body_text(b"m 1\n".to_vec()).unwrap(), "m 1\n");
        let err = |b: &[u8]| body_text(b.to_vec()).unwrap_err();
        assert_eq!(err(b"m 1\nm{a=\"\xff\"} 1\n"), "line 2: invalid UTF-8 in a metric name or label value");
        assert_eq!(err(b"# HELP m caf\xe9\nm 1\n"), "line 1: HELP text is not valid UTF-8");
        assert_eq!(err(b"#  TYPE m\xff counter\n"), "line 1: metadata line is not valid UTF-8");
    }
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// (series name, labels, value bits, timestamp) of each sample.
    type Parsed = Vec<(String, Vec<(String, String)>, u64, Option<i64>)>;

    /// Parses a whole body, or says why it failed.
    fn all(body: &str, format: Format) -> Result<Parsed, String> {
        let mut p = Parser::new(body, format);
        let mut out = Vec::new();
        while let Some(e) = p.next_entry().map_err(|e| e.msg)? {
            if let Entry::Sample(s) = e {
                let (name, labels) = parse_series(s.series, s.norm, format)?;
                out.push((name, labels, s.value.to_bits(), s.timestamp));
            }
        }
        Ok(out)
    }

    fn text(body: &str) -> Result<Parsed, String> {
        all(body, Format::Text)
    }

    fn om(body: &str) -> Result<Parsed, String> {
        all(body, Format::OpenMetrics)
    }

    #[test]
    fn g_p01_label_value_escapes() {
        let r = text("m{a=\"x\\\"y\\\\z\\nw\\tq\"} 1").unwrap();
        assert_eq!(r[0].1, vec![("a".to_owned(), "x\"y\\z\nw\\tq".to_owned())]);
    }

    #[test]
    fn g_p02_values() {
        let r = text("a NaN\nb +Inf\nc -Inf\nd inf\ne Infinity\nf .5\ng 1e3\nh -0\ni 5.\n").unwrap();
        assert_eq!(r[0].2, NORMAL_NAN_BITS);
        let vals: Vec<f64> = r[1..].iter().map(|x| f64::from_bits(x.2)).collect();
        assert_eq!(
            vals,
            [f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::INFINITY, 0.5, 1000.0, -0.0, 5.0]
        );
        for bad in ["x 1_000", "x 0x10", "x 0x1p3", "x 1e400", "x true", "x 1\r"] {
            assert!(text(bad).is_err(), "{bad:?} must fail");
        }
    }

    #[test]
    fn g_p03_whitespace_and_comments() {
        let r = text("\n  \nm\t1\t\n# random words\n#nospace\n#\nn{a=\"1\",} 2   1000\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0.as_str(), r[0].3), ("m", None));
        assert_eq!((r[1].0.as_str(), r[1].3), ("n", Some(1000)));
        assert_eq!(r[1].1, vec![("a".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn g_p04_timestamp_syntax() {
        assert!(text("m 1 -1").unwrap_err().contains("expected timestamp or new record"));
        for bad in ["m 1 1.5", "m 1 1e3", "m 1 1 1"] {
            assert!(text(bad).unwrap_err().contains("expected next entry after timestamp"), "{bad}");
        }
    }

    #[test]
    fn g_p05_type_strictness() {
        assert!(text("# TYPE m COUNTER\nm 1\n").unwrap_err().contains("invalid metric type \"COUNTER\""));
        assert!(text("# TYPE m counter \nm 1\n").unwrap_err().contains("invalid metric type \"counter \""));
        assert!(text("# TYPE m  counter\n").unwrap_err().contains("invalid metric type \" counter\""));
        assert!(text("# TYPE m\n").unwrap_err().contains("invalid metric type \"\""));
        assert!(text("# TYPE m untyped\nm 1\n").is_ok());
        // Exemplars are not part of the text format.
        assert!(text("m 1 # {a=\"b\"} 1").is_err());
    }

    #[test]
    fn g_p06_help_escaping() {
        let mut p = Parser::new("# HELP m a \\\"q\\\" \\\\ x\n", Format::Text);
        assert_eq!(
            p.next_entry().unwrap(),
            Some(Entry::Help { name: "m".into(), text: "a \\\"q\\\" \\ x".into() })
        );
        let mut p = Parser::new("# HELP m a \\\"q\\\"\n# EOF\n", Format::OpenMetrics);
        assert_eq!(p.next_entry().unwrap(), Some(Entry::Help { name: "m".into(), text: "a \"q\"".into() }));
    }

    #[test]
    fn g_p09_openmetrics_framing() {
        assert!(om("a 1\n").unwrap_err().contains("data does not end with # EOF"));
        assert!(om("a 1\n# EOF\n\n").unwrap_err().contains("unexpected data after # EOF"));
        for bad in [
            "a 1\n\n# EOF\n",
            " a 1\n# EOF\n",
            "a\t1\n# EOF\n",
            "# foo\na 1\n# EOF\n",
            "# TYPE a untyped\n# EOF\n",
        ] {
            assert!(om(bad).is_err(), "{bad:?} must fail");
        }
        assert!(
            om("# UNIT foo seconds\n# EOF\n")
                .unwrap_err()
                .contains("unit \"seconds\" not a suffix of metric \"foo\"")
        );
        assert!(om("# UNIT foo_seconds seconds\n# EOF\n").is_ok());
        assert_eq!(om("a 1\n# EOF").unwrap().len(), 1);
    }

    #[test]
    fn g_p10_openmetrics_timestamps() {
        assert_eq!(om("a 1 123.123\n# EOF\n").unwrap()[0].3, Some(123_123));
        assert_eq!(om("a 1 1.0005\n# EOF\n").unwrap()[0].3, Some(1000));
        assert_eq!(om("a 1 -1.5\n# EOF\n").unwrap()[0].3, Some(-1500));
        assert!(om("a 1 NaN\n# EOF\n").unwrap_err().contains("invalid timestamp"));
    }

    #[test]
    fn g_p11_le_and_quantile_normalisation() {
        let body = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1000000\"} 2\nh_bucket{le=\"+inf\"} 3\nh_sum 1\nh_count 3\n# TYPE s summary\ns{quantile=\"0\"} 1\ns{quantile=\"0.99\"} 2\n# TYPE c counter\nc{le=\"1\"} 5\n";
        let r = text(body).unwrap();
        let v: Vec<&str> = r.iter().filter_map(|x| x.1.first().map(|l| l.1.as_str())).collect();
        assert_eq!(v, ["1.0", "1e+06", "+Inf", "0.0", "0.99", "1"]);
        for (input, want) in [
            (1.0, "1.0"),
            (10.0, "10.0"),
            (0.5, "0.5"),
            (2.5, "2.5"),
            (100000.0, "100000.0"),
            (999999.0, "999999.0"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.0, "-1.0"),
        ] {
            assert_eq!(format_om_float(input), want);
        }
    }

    #[test]
    fn g_p12_utf8_names_and_p15_leading_whitespace() {
        let r = text("{\"my.metric\",\"some.label\"=\"v\"} 1\n").unwrap();
        assert_eq!(r[0].0, "my.metric");
        assert_eq!(r[0].1, vec![("some.label".to_owned(), "v".to_owned())]);
        assert_eq!(text("  m 1\n").unwrap()[0].0, "  m");
    }

    #[test]
    fn g_p13_created_and_exemplar() {
        let body = "# TYPE foo counter\nfoo_total 17.0 1520879607.789 # {id=\"counter-test\"} 5\nfoo_created 1520872607.123\n# EOF\n";
        let mut p = Parser::new(body, Format::OpenMetrics);
        let mut samples = Vec::new();
        while let Some(e) = p.next_entry().unwrap() {
            if let Entry::Sample(s) = e {
                samples.push(s);
            }
        }
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].timestamp, Some(1_520_879_607_789));
        let ex = samples[0].exemplar.as_ref().unwrap();
        assert_eq!(ex.labels, vec![("id".to_owned(), "counter-test".to_owned())]);
        assert_eq!((ex.value, ex.timestamp), (5.0, None));
        assert_eq!(samples[1].series, "foo_created");
        assert_eq!(samples[1].value, 1520872607.123);
    }

    #[test]
    fn label_set_syntax() {
        assert_eq!(text("m{ quantile = \"2.0\" a = \"b\" } 1").unwrap()[0].1.len(), 2, "missing comma quirk");
        assert_eq!(text("m{a=\"1\"}1").unwrap().len(), 1, "no space needed after }}");
        for bad in
            ["m{=\"\"} 1", "m{,a=\"b\"} 1", "m{a='b'} 1", "m{a=\"b} 1", "1234notvali}{ 444", "m{a=\"1\"} "]
        {
            assert!(text(bad).is_err(), "{bad:?} must fail");
        }
        assert!(om("m{a=\"1\" b=\"2\"} 1\n# EOF\n").is_err(), "OpenMetrics needs commas");
        // Duplicate names parse; the scrape loop rejects them.
        assert_eq!(text("m{le=\"1\",le=\"2\"} 1").unwrap()[0].1.len(), 2);
    }

    type Consumed = (Vec<(String, u64, Option<i64>)>, Option<ParseError>);

    /// What a consumer sees of a body: each sample's (series, value bits, timestamp), then
    /// the error that ended it, if any. With `known`, guessed samples whose series text is
    /// not in `known` are reparsed, as the series cache does.
    fn consume(body: &str, format: Format, known: Option<&HashSet<String>>) -> Consumed {
        let mut p = Parser::new(body, format);
        if known.is_some() {
            p = p.guessing();
        }
        let mut out = Vec::new();
        loop {
            match p.next_entry() {
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
                Ok(Some(Entry::Sample(mut s))) => {
                    if s.guessed && !known.is_some_and(|k| k.contains(s.series)) {
                        s = match p.reparse() {
                            Ok(s) => s,
                            Err(e) => return (out, Some(e)),
                        };
                    }
                    out.push((s.series.to_owned(), s.value.to_bits(), s.timestamp));
                }
                Ok(Some(_)) => {}
            }
        }
    }

    fn line_strategy(om: bool) -> impl Strategy<Value = String> {
        let name = prop_oneof![Just("m"), Just("m_total"), Just(" m"), Just("m:x")];
        let value = prop_oneof![
            Just("a"),
            Just("x y"),
            Just("}"),
            Just(r#"\""#),
            Just(" # "),
            Just("{"),
            Just(r"\\"),
            Just("1 2")
        ];
        let label =
            (prop_oneof![Just("a"), Just("b"), Just("le")], value).prop_map(|(n, v)| format!("{n}=\"{v}\""));
        let labels = proptest::option::of(proptest::collection::vec(label, 0..3)).prop_map(|l| match l {
            None => String::new(),
            Some(l) => format!("{{{}}}", l.join(",")),
        });
        let sep = prop_oneof![Just(" "), Just("\t"), Just("  "), Just(""), Just(" \t")];
        let v = prop_oneof![
            Just("1"),
            Just("2.5"),
            Just("NaN"),
            Just("+Inf"),
            Just("1{"),
            Just("x"),
            Just("1e3"),
            Just("")
        ];
        let ts = prop_oneof![Just(""), Just(" 123"), Just("\t456"), Just(" 1.5"), Just(" ")];
        let ex = if om { prop_oneof![Just(""), Just(" # {t=\"1\"} 1")].boxed() } else { Just("").boxed() };
        (name, labels, sep, v, ts, ex).prop_map(|(n, l, s, v, t, e)| format!("{n}{l}{s}{v}{t}{e}"))
    }

    proptest! {
        /// Guessing changes nothing a consumer sees, even when every series text that ever
        /// parsed counts as known (the harshest case for a wrong guess).
        #[test]
        fn guessing_agrees_with_the_forward_parse(
            om in any::<bool>(),
            lines in proptest::collection::vec(line_strategy(false), 1..12),
            om_lines in proptest::collection::vec(line_strategy(true), 1..12),
            earlier in proptest::collection::vec(line_strategy(false), 0..12),
        ) {
            let (format, body) = if om {
                (Format::OpenMetrics, format!("{}\n# EOF\n", om_lines.join("\n")))
            } else {
                (Format::Text, format!("{}\n", lines.join("\n")))
            };
            let reference = consume(&body, format, None);
            let mut known: HashSet<String> = reference.0.iter().map(|s| s.0.clone()).collect();
            // Texts from another body, one line at a time so an error does not hide the rest.
            for l in &earlier {
                known.extend(consume(&format!("{l}\n"), Format::Text, None).0.into_iter().map(|s| s.0));
            }
            prop_assert_eq!(consume(&body, format, Some(&known)), reference.clone());
            prop_assert_eq!(consume(&body, format, Some(&HashSet::new())), reference);
        }
    }

    #[test]
    fn series_extent_honours_quotes_and_escapes() {
        // `}`, `"` and backslashes inside values do not end the label set.
        let ok = [
            (r#"m{a="}",b="x"} 1"#, r#"m{a="}",b="x"}"#),
            (r#"m{a="\\"} 2"#, r#"m{a="\\"}"#),
            (r#"m{a="\"}\""} 3"#, r#"m{a="\"}\""}"#),
            (r#"m{a="\\\"}"} 4"#, r#"m{a="\\\"}"}"#),
            ("m{a=\"\u{e9}}\"} 5", "m{a=\"\u{e9}}\"}"),
        ];
        for (line, series) in ok {
            let mut p = Parser::new(line, Format::Text);
            match p.next_entry() {
                Ok(Some(Entry::Sample(s))) => assert_eq!(s.series, series, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        for bad in [r#"m{a="1} 1"#, r#"m{a="1\"#, r#"m{a="1\"} 1"#, "m{a=\"1\"", "m{"] {
            let e = Parser::new(bad, Format::Text).next_entry().unwrap_err();
            assert!(e.msg.contains("unterminated label set"), "{bad}: {e}");
        }
    }

    #[test]
    fn non_ascii_where_a_timestamp_belongs_is_an_error_not_a_panic() {
        // The fuzzer's input: mathematical digits after the value.
        let body = "B 00  \u{1D7D4}\u{1D7D4}bbb\n\n\n000 ";
        assert!(text(body).unwrap_err().contains("expected timestamp or new record"));
    }

    #[test]
    fn content_types() {
        assert_eq!(format_for(Some("text/plain; version=0.0.4; charset=utf-8"), None), Ok(Format::Text));
        assert_eq!(
            format_for(Some("application/openmetrics-text; version=1.0.0"), None),
            Ok(Format::OpenMetrics)
        );
        assert!(format_for(None, None).unwrap_err().contains("blank Content-Type"));
        assert!(
            format_for(Some("application/json"), None)
                .unwrap_err()
                .contains("unsupported Content-Type \"application/json\"")
        );
        assert!(format_for(Some("text/plain;;"), None).is_err());
        assert_eq!(format_for(Some("text/html"), Some(Format::Text)), Ok(Format::Text));
    }
}
