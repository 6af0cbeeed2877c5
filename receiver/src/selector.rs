//! Series selectors of PromQL: `metric{a="b", c!="d", e=~"f.*", g!~"h"}` with an optional
//! range `[5m]`, and Prometheus durations. No functions or operators: the error says so.
//!
//! Regexes are fully anchored, as in Prometheus. Label names and the metric name may be quoted
//! (`{"my.metric", "some.label"="v"}`) for UTF-8 names.

use regex::Regex;
use thiserror::Error;

use ferry_protocol::METRIC_NAME;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub kind: MatchKind,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(name: &str, kind: MatchKind, value: &str) -> Result<Matcher, ParseError> {
        let regex = match kind {
            MatchKind::Regex | MatchKind::NotRegex => Some(
                Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| ParseError(format!("invalid regex {value:?}: {e}")))?,
            ),
            _ => None,
        };
        Ok(Matcher { name: name.to_owned(), kind, value: value.to_owned(), regex })
    }

    /// Whether a label value satisfies the matcher; an absent label is the empty string.
    pub fn matches(&self, v: &str) -> bool {
        match self.kind {
            MatchKind::Equal => v == self.value,
            MatchKind::NotEqual => v != self.value,
            MatchKind::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchKind::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// A parsed selector: matchers, and the range in milliseconds if it had one.
#[derive(Debug, Clone)]
pub struct Selector {
    pub matchers: Vec<Matcher>,
    pub range_ms: Option<i64>,
}

/// Parses a Prometheus duration such as `5m`, `1h30m`, `250ms`, `2d`.
pub fn parse_duration(s: &str) -> Result<i64, ParseError> {
    let bytes = s.as_bytes();
    if s.is_empty() {
        return err("empty duration");
    }
    let (mut total, mut i) = (0i64, 0usize);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return err(format!("invalid duration {s:?}"));
        }
        let n: i64 = s[start..i].parse().map_err(|_| ParseError(format!("invalid duration {s:?}")))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            u => return err(format!("invalid duration {s:?}: unknown unit {u:?}")),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| ParseError(format!("duration {s:?} overflows")))?;
    }
    Ok(total)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.s[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.s[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }
    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.s[self.pos..].chars().next()
    }
    fn eat(&mut self, t: &str) -> bool {
        self.skip_ws();
        if self.s[self.pos..].starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn ident(&mut self, metric: bool) -> Option<&str> {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphabetic()
                    || c == '_'
                    || (metric && c == ':')
                    || (i > 0 && c.is_ascii_digit()))
            })
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return None;
        }
        self.pos += len;
        Some(&rest[..len])
    }
    fn string(&mut self) -> Result<Option<String>, ParseError> {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let Some(q) = rest.chars().next().filter(|c| matches!(c, '"' | '\'' | '`')) else {
            return Ok(None);
        };
        let mut out = String::new();
        let mut chars = rest[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == q {
                self.pos += 1 + i + 1;
                return Ok(Some(out));
            }
            if c == '\\' && q != '`' {
                match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(c @ ('\\' | '"' | '\'')) => out.push(c),
                    Some(c) => return err(format!("unknown escape sequence \\{c}")),
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        err("unterminated string")
    }
}

/// Parses a series selector, with an optional `[range]`.
pub fn parse(input: &str) -> Result<Selector, ParseError> {
    let mut c = Cursor { s: input, pos: 0 };
    let mut matchers = Vec::new();
    if let Some(name) = c.ident(true) {
        matchers.push(Matcher::new(METRIC_NAME, MatchKind::Equal, name)?);
    }
    if c.eat("{") {
        loop {
            if c.eat("}") {
                break;
            }
            let at = c.pos;
            let name = match c.string()? {
                Some(s) => s,
                None => c
                    .ident(false)
                    .ok_or_else(|| ParseError(format!("expected a label name at offset {at}")))?
                    .to_owned(),
            };
            let kind = if c.eat("=~") {
                Some(MatchKind::Regex)
            } else if c.eat("!~") {
                Some(MatchKind::NotRegex)
            } else if c.eat("!=") {
                Some(MatchKind::NotEqual)
            } else if c.eat("=") {
                Some(MatchKind::Equal)
            } else {
                None
            };
            match kind {
                Some(kind) => {
                    let value = c
                        .string()?
                        .ok_or_else(|| ParseError(format!("expected a quoted value for {name:?}")))?;
                    matchers.push(Matcher::new(&name, kind, &value)?);
                }
                // A lone quoted string is the metric name (`{"my.metric"}`).
                None => matchers.push(Matcher::new(METRIC_NAME, MatchKind::Equal, &name)?),
            }
            if !c.eat(",") {
                if c.eat("}") {
                    break;
                }
                return err(format!("expected ',' or '}}' at offset {}", c.pos));
            }
        }
    }
    let range_ms = if c.eat("[") {
        let start = c.pos;
        let end = input[start..].find(']').ok_or_else(|| ParseError("unterminated range".into()))? + start;
        c.pos = end + 1;
        Some(parse_duration(input[start..end].trim())?)
    } else {
        None
    };
    if c.peek().is_some() {
        return err(format!(
            "unsupported expression at offset {}: this receiver answers series selectors such as \
             m{{a=\"b\"}} and m{{a=\"b\"}}[5m], not PromQL functions or operators",
            c.pos
        ));
    }
    if matchers.is_empty() {
        return err("empty selector");
    }
    if matchers.iter().all(|m| m.matches("")) {
        return err("vector selector must contain at least one non-empty matcher");
    }
    Ok(Selector { matchers, range_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let s = parse(r#"http_requests_total{job="api", code=~"5..", path!="/", x!~"a|b"}[5m]"#).unwrap();
        assert_eq!(s.range_ms, Some(300_000));
        assert_eq!(s.matchers.len(), 5);
        assert!(s.matchers[2].matches("503") && !s.matchers[2].matches("5030"));
        assert!(s.matchers[4].matches("") && !s.matchers[4].matches("a"));
        let s = parse(r#"{"my.metric", "some.label"='v\n'}"#).unwrap();
        assert_eq!(s.matchers[0].value, "my.metric");
        assert_eq!(s.matchers[1].name, "some.label");
        assert_eq!(s.matchers[1].value, "v\n");
        assert!(parse("up").is_ok());
        assert!(parse("up{}").is_ok());
        assert!(parse(r#"{a=~".*"}"#).is_err());
        assert!(parse("rate(up[5m])").unwrap_err().0.contains("not PromQL functions"));
        assert!(parse(r#"up{a="b""#).is_err());
        assert!(parse(r#"up{a=~"("}"#).unwrap_err().0.contains("invalid regex"));
    }

    #[test]
    fn regexes_are_anchored_and_dotall() {
        let m = Matcher::new("a", MatchKind::Regex, "fo.").unwrap();
        assert!(m.matches("foo") && !m.matches("xfoo") && !m.matches("fooo") && m.matches("fo\n"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250);
        assert_eq!(parse_duration("2d").unwrap(), 172_800_000);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
