//! Prometheus relabeling, exactly: every action, anchored DOTALL regexes, Go's `$1`/`${name}`
//! template expansion (written here: the `regex` crate's expander differs on `$01` and
//! `${a-b}`), Go's simple per-rune case mapping, MD5 `hashmod`, and the config-load checks.
//!
//! [`RawRule`] is the YAML shape; [`Rule::new`] validates it; [`process`] applies a list of
//! rules to a [`Builder`] and says whether the labels survive.

use md5::{Digest, Md5};
use regex::{Captures, Regex};
use serde::{Deserialize, Deserializer};

use crate::labels::Builder;
use ferry_protocol::NameValidation;
use ferry_protocol::labels::is_valid_label_name;

const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";
const DEFAULT_SEPARATOR: &str = ";";

fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// A relabel rule as written in YAML. `regex: ~` (null) is distinct from an absent `regex`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub regex: Option<Option<String>>,
    pub modulus: Option<u64>,
    pub target_label: Option<String>,
    pub replacement: Option<String>,
    pub action: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

/// A validated rule, ready to apply.
#[derive(Debug, Clone)]
pub struct Rule {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub regex: Regex,
    pub regex_src: String,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
    scheme: NameValidation,
}

/// Compiles a regex the way Prometheus does: anchored at both ends, `.` matching newlines.
pub fn compile_anchored(src: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?s:{src})$")).map_err(|e| format!("invalid regex {src:?}: {e}"))
}

/// Legacy-scheme check for a `target_label` template with `$` references.
fn valid_legacy_template(t: &str) -> bool {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("valid regex"))
        .is_match(t)
}

impl Rule {
    /// Validates a YAML rule (Prometheus `RelabelConfig.Validate`).
    pub fn new(raw: &RawRule, scheme: NameValidation) -> Result<Rule, String> {
        let action_src = raw.action.clone().unwrap_or_else(|| "replace".into());
        let action =
            Action::parse(&action_src).ok_or_else(|| format!("unknown relabel action {action_src:?}"))?;
        let a = action.name();
        let regex_src = match &raw.regex {
            None => DEFAULT_REGEX.to_owned(),
            Some(None) => String::new(),
            Some(Some(r)) => r.clone(),
        };
        let regex = compile_anchored(&regex_src)?;
        let rule = Rule {
            source_labels: raw.source_labels.clone().unwrap_or_default(),
            separator: raw.separator.clone().unwrap_or_else(|| DEFAULT_SEPARATOR.into()),
            regex,
            regex_src,
            modulus: raw.modulus.unwrap_or(0),
            target_label: raw.target_label.clone().unwrap_or_default(),
            replacement: raw.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.into()),
            action,
            scheme,
        };
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && rule.target_label.is_empty() {
            return Err(format!("relabel configuration for {a} action requires 'target_label' value"));
        }
        if action == Action::HashMod && rule.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let t = &rule.target_label;
        if action == Action::Replace {
            let ok = if t.contains('$') {
                match scheme {
                    NameValidation::Utf8 => !t.is_empty(),
                    NameValidation::Legacy => valid_legacy_template(t),
                }
            } else {
                is_valid_label_name(t, scheme)
            };
            if !ok {
                return Err(format!("{t:?} is invalid 'target_label' for {a} action"));
            }
        }
        if matches!(
            action,
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual | Action::HashMod
        ) && !is_valid_label_name(t, scheme)
        {
            return Err(format!("{t:?} is invalid 'target_label' for {a} action"));
        }
        if matches!(action, Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual)
            && raw.replacement.as_deref().is_some_and(|r| r != DEFAULT_REPLACEMENT)
        {
            return Err(format!("'replacement' can not be set for {a} action"));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (raw.regex.is_some() && rule.regex_src != DEFAULT_REGEX
                || raw.modulus.is_some_and(|m| m != 0)
                || raw.separator.as_deref().is_some_and(|s| s != DEFAULT_SEPARATOR))
        {
            return Err(format!(
                "{a} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (raw.source_labels.as_ref().is_some_and(|s| !s.is_empty())
                || !rule.target_label.is_empty()
                || raw.modulus.is_some_and(|m| m != 0)
                || raw.separator.as_deref().is_some_and(|s| s != DEFAULT_SEPARATOR)
                || raw.replacement.as_deref().is_some_and(|r| r != DEFAULT_REPLACEMENT))
        {
            return Err(format!("{a} action requires only 'regex', and no other fields"));
        }
        if action == Action::LabelMap {
            let r = &rule.replacement;
            let ok = match scheme {
                NameValidation::Utf8 => !r.is_empty(),
                NameValidation::Legacy => valid_legacy_template(r),
            };
            if !ok {
                return Err(format!("{r:?} is invalid 'replacement' for {a} action"));
            }
        }
        Ok(rule)
    }
}

/// Go's `regexp.extract`: reads a `$name` or `${name}` reference at the start of `s`
/// (which begins with `$`). Returns the name, its group number if it is one, and the bytes used.
fn extract(s: &str) -> Option<(&str, Option<usize>, usize)> {
    let b = s.as_bytes();
    if b.len() < 2 || b[0] != b'$' {
        return None;
    }
    let brace = b[1] == b'{';
    let start = if brace { 2 } else { 1 };
    let body = &s[start..];
    let len: usize = body
        .chars()
        .take_while(|c| c.is_alphabetic() || c.is_numeric() || *c == '_')
        .map(char::len_utf8)
        .sum();
    if len == 0 {
        return None;
    }
    let name = &body[..len];
    let mut used = start + len;
    if brace {
        if body.as_bytes().get(len) != Some(&b'}') {
            return None;
        }
        used += 1;
    }
    let mut num: Option<usize> = Some(0);
    for c in name.bytes() {
        match num {
            Some(n) if c.is_ascii_digit() && n < 100_000_000 => num = Some(n * 10 + (c - b'0') as usize),
            _ => {
                num = None;
                break;
            }
        }
    }
    if name.len() > 1 && name.starts_with('0') {
        num = None;
    }
    Some((name, num, used))
}

/// Go's `Regexp.ExpandString` semantics.
pub fn expand(template: &str, re: &Regex, caps: &Captures<'_>, out: &mut String) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.as_bytes().get(1) == Some(&b'$') {
            out.push('$');
            rest = &rest[2..];
            continue;
        }
        match extract(rest) {
            Some((name, num, used)) => {
                let group = match num {
                    Some(n) => caps.get(n),
                    None => re.capture_names().position(|n| n == Some(name)).and_then(|i| caps.get(i)),
                };
                if let Some(m) = group {
                    out.push_str(m.as_str());
                }
                rest = &rest[used..];
            }
            None => {
                // Malformed reference: the `$` stays literally.
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

/// Go's `unicode.ToUpper` per rune: the simple mapping, never a multi-rune expansion.
pub fn go_upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => match c as u32 {
                    // Greek with ypogegrammeni: simple uppercase is the prosgegrammeni form.
                    0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => {
                        char::from_u32(c as u32 + 8).unwrap_or(c)
                    }
                    0x1FB3 => '\u{1FBC}',
                    0x1FC3 => '\u{1FCC}',
                    0x1FF3 => '\u{1FFC}',
                    _ => c,
                },
            }
        })
        .collect()
}

/// Go's `unicode.ToLower` per rune (so a final sigma stays `σ`, and `İ` becomes `i`).
pub fn go_lower(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut low = c.to_lowercase();
            match (low.next(), low.next()) {
                (Some(l), None) => l,
                _ if c == '\u{130}' => 'i',
                _ => c,
            }
        })
        .collect()
}

/// `hashmod`: MD5 of the value, bytes 8..16 as a big-endian u64, modulo `modulus`.
pub fn hashmod(val: &str, modulus: u64) -> u64 {
    let digest = Md5::digest(val.as_bytes());
    u64::from_be_bytes(digest[8..16].try_into().expect("md5 has 16 bytes")) % modulus
}

/// Applies `rules` in order. Returns false when a rule drops the labels (processing stops).
pub fn process(rules: &[Rule], b: &mut Builder) -> bool {
    let mut val = String::new();
    let mut scratch = String::new();
    for r in rules {
        val.clear();
        for (i, l) in r.source_labels.iter().enumerate() {
            if i > 0 {
                val.push_str(&r.separator);
            }
            val.push_str(b.get(l));
        }
        match r.action {
            Action::Replace => {
                if val.is_empty()
                    && r.regex_src == DEFAULT_REGEX
                    && !r.target_label.contains('$')
                    && !r.replacement.contains('$')
                {
                    b.set(&r.target_label, &r.replacement);
                    continue;
                }
                let Some(caps) = r.regex.captures(&val) else {
                    continue;
                };
                let mut target = String::new();
                expand(&r.target_label, &r.regex, &caps, &mut target);
                if !is_valid_label_name(&target, r.scheme) {
                    continue;
                }
                scratch.clear();
                expand(&r.replacement, &r.regex, &caps, &mut scratch);
                if scratch.is_empty() {
                    b.del(&target);
                } else {
                    b.set(&target, &scratch);
                }
            }
            Action::Keep if !r.regex.is_match(&val) => return false,
            Action::Drop if r.regex.is_match(&val) => return false,
            Action::Keep | Action::Drop => {}
            Action::KeepEqual if b.get(&r.target_label) != val => return false,
            Action::DropEqual if b.get(&r.target_label) == val => return false,
            Action::KeepEqual | Action::DropEqual => {}
            Action::HashMod => b.set(&r.target_label, &hashmod(&val, r.modulus).to_string()),
            Action::Lowercase => b.set(&r.target_label, &go_lower(&val)),
            Action::Uppercase => b.set(&r.target_label, &go_upper(&val)),
            Action::LabelMap => {
                for l in b.snapshot() {
                    if let Some(caps) = r.regex.captures(&l.name) {
                        scratch.clear();
                        expand(&r.replacement, &r.regex, &caps, &mut scratch);
                        b.set(&scratch, &l.value);
                    }
                }
            }
            Action::LabelDrop => b.retain(|n| !r.regex.is_match(n)),
            Action::LabelKeep => b.retain(|n| r.regex.is_match(n)),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::LabelSet;

    fn rules(yaml: &str) -> Vec<Rule> {
        let raw: Vec<RawRule> = serde_yaml::from_str(yaml).unwrap();
        raw.iter().map(|r| Rule::new(r, NameValidation::Utf8).unwrap()).collect()
    }

    fn run(yaml: &str, input: &[(&str, &str)]) -> Option<String> {
        let mut b = Builder::from_set(&LabelSet::from_pairs(input.iter().copied()).unwrap());
        process(&rules(yaml), &mut b).then(|| b.labels().to_string())
    }

    #[test]
    fn golden_relabel_cases() {
        // G-R01, G-R02
        assert_eq!(
            run("[{source_labels: [a], target_label: b}]", &[("a", "foo")]).unwrap(),
            r#"{a="foo", b="foo"}"#
        );
        assert_eq!(
            run("[{target_label: env, replacement: prod}]", &[("a", "foo")]).unwrap(),
            r#"{a="foo", env="prod"}"#
        );
        assert_eq!(
            run("[{target_label: env, replacement: prod, regex: '(.*)'}]", &[("a", "foo")]).unwrap(),
            r#"{a="foo", env="prod"}"#
        );
        // G-R05 anchoring
        assert_eq!(run("[{source_labels: [a], regex: 'foo|bar', action: keep}]", &[("a", "foobar")]), None);
        assert!(run("[{source_labels: [a], regex: 'foo|bar', action: keep}]", &[("a", "bar")]).is_some());
        // G-R06 DOTALL
        assert_eq!(
            run(
                "[{source_labels: [a], regex: 'l1.l2', target_label: b, replacement: nl}]",
                &[("a", "l1\nl2")]
            )
            .unwrap(),
            "{a=\"l1\\nl2\", b=\"nl\"}"
        );
        // G-R07 join with missing labels
        assert_eq!(
            run("[{source_labels: [a, b, c], target_label: d}]", &[("a", "x"), ("c", "z")]).unwrap(),
            r#"{a="x", c="z", d="x;;z"}"#
        );
        assert!(
            run(
                "[{source_labels: [a, c], separator: ':', target_label: __address__}]",
                &[("a", "x"), ("c", "z")]
            )
            .unwrap()
            .contains(r#"__address__="x:z""#)
        );
        // G-R09 labelmap
        assert_eq!(
            run(
                "[{regex: '__meta_kubernetes_pod_label_(.+)', action: labelmap}]",
                &[
                    ("__meta_kubernetes_pod_label_app", "web"),
                    ("__meta_kubernetes_pod_label_tier", "fe"),
                    ("x", "1")
                ]
            )
            .unwrap(),
            r#"{__meta_kubernetes_pod_label_app="web", __meta_kubernetes_pod_label_tier="fe", app="web", tier="fe", x="1"}"#
        );
        // G-R10 labelmap clash: the later-visited source wins.
        assert_eq!(
            run("[{regex: '.*_(x)', action: labelmap}]", &[("a_x", "1"), ("b_x", "2")]).unwrap(),
            r#"{a_x="1", b_x="2", x="2"}"#
        );
        assert_eq!(
            run("[{regex: '__meta_(.+)', action: labelmap}]", &[("__meta_app", "new"), ("app", "old")])
                .unwrap(),
            r#"{__meta_app="new", app="new"}"#
        );
        // G-R11
        assert_eq!(
            run("[{regex: 'a.*', action: labeldrop}]", &[("a", "1"), ("ab", "2"), ("b", "3")]).unwrap(),
            r#"{b="3"}"#
        );
        assert_eq!(
            run("[{regex: '__name__|a', action: labelkeep}]", &[("__name__", "m"), ("a", "1"), ("b", "3")])
                .unwrap(),
            r#"{__name__="m", a="1"}"#
        );
        // G-R12
        let ports = [("__port1", "1234"), ("__port2", "5678"), ("__tmp_port", "1234")];
        assert!(
            run("[{source_labels: [__tmp_port], target_label: __port1, action: keepequal}]", &ports)
                .is_some()
        );
        assert!(
            run("[{source_labels: [__tmp_port], target_label: __port2, action: keepequal}]", &ports)
                .is_none()
        );
        assert!(
            run("[{source_labels: [__tmp_port], target_label: __port1, action: dropequal}]", &ports)
                .is_none()
        );
        assert!(
            run("[{source_labels: [__tmp_port], target_label: __port2, action: dropequal}]", &ports)
                .is_some()
        );
        assert!(
            run(
                "[{source_labels: [a, b], target_label: t, action: dropequal}]",
                &[("a", "1"), ("b", "2"), ("t", "1;2")]
            )
            .is_none()
        );
        assert!(run("[{source_labels: [x], target_label: y, action: keepequal}]", &[("a", "1")]).is_some());
        // G-R14
        assert_eq!(
            run("[{source_labels: [nope], target_label: t, action: lowercase}]", &[("a", "1"), ("t", "X")])
                .unwrap(),
            r#"{a="1"}"#
        );
        // G-R16
        let a = [("a", "some-name-value")];
        let re = "regex: 'some-([^-]+)-([^,]+)'";
        assert!(
            run(
                &format!("[{{source_labels: [a], {re}, target_label: '${{1}}', replacement: '${{2}}'}}]"),
                &a
            )
            .unwrap()
            .contains(r#"name="value""#)
        );
        assert_eq!(
            run(&format!("[{{source_labels: [a], {re}, target_label: '${{3}}'}}]"), &a).unwrap(),
            r#"{a="some-name-value"}"#
        );
        assert_eq!(
            run(
                &format!("[{{source_labels: [a], {re}, target_label: '${{1}}', replacement: '${{3}}'}}]"),
                &a
            )
            .unwrap(),
            r#"{a="some-name-value"}"#
        );
        // G-R17
        let foo = [("a", "foo")];
        assert!(run("[{source_labels: [nope], regex: '', action: keep}]", &foo).is_some());
        assert!(run("[{source_labels: [nope], regex: '', action: drop}]", &foo).is_none());
        assert!(run("[{source_labels: [nope], regex: '.+', action: keep}]", &foo).is_none());
        assert!(run("[{action: keep}]", &foo).is_some());
        // G-R18 chained
        let out = run(
            r#"
- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)path:(/[^,]+).*', target_label: __metrics_path__}
- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)job:([^,]+).*', target_label: job}
- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)label:([^=]+)=([^,]+).*', target_label: '${1}', replacement: '${2}'}
"#,
            &[("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar")],
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{__meta_sd_tags="path:/secret,job:some-job,label:foo=bar", __metrics_path__="/secret", foo="bar", job="some-job"}"#
        );
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // G-R08
        assert_eq!(hashmod("baz", 1000), 976);
        assert_eq!(hashmod("foo\nbar", 1000), 734);
        assert_eq!(hashmod("10.0.0.1:9100", 3), 2);
        assert_eq!(hashmod("", 1000), 958);
        assert_eq!(
            run("[{source_labels: [c], target_label: d, modulus: 1000, action: hashmod}]", &[("c", "baz")])
                .unwrap(),
            r#"{c="baz", d="976"}"#
        );
    }

    #[test]
    fn go_expand_semantics() {
        let re = compile_anchored("(f)(.*)").unwrap();
        let caps = re.captures("foo").unwrap();
        let e = |t: &str| {
            let mut s = String::new();
            expand(t, &re, &caps, &mut s);
            s
        };
        assert_eq!(e("$1x"), "");
        assert_eq!(e("${1}x"), "fx");
        assert_eq!(e("$$1"), "$1");
        assert_eq!(e("[$01]"), "[]");
        assert_eq!(e("[${a-b}]"), "[${a-b}]");
        assert_eq!(e("[$-]"), "[$-]");
        assert_eq!(e("x$"), "x$");
        assert_eq!(e("$2-$1"), "oo-f");
        let named = compile_anchored("(?P<host>[^:]+):(?P<port>\\d+)").unwrap();
        let caps = named.captures("h:80").unwrap();
        let mut s = String::new();
        expand("${port}/$host", &named, &caps, &mut s);
        assert_eq!(s, "80/h");
    }

    #[test]
    fn go_case_mapping() {
        assert_eq!(go_upper("straße"), "STRAßE");
        assert_eq!(go_lower("ΟΔΟΣ"), "οδοσ");
        assert_eq!(go_lower("İ"), "i");
        assert_eq!(go_upper("ᾳ"), "ᾼ");
        assert_eq!(go_upper("abc"), "ABC");
    }

    #[test]
    fn config_validation() {
        let bad = |yaml: &str| {
            let raw: RawRule = serde_yaml::from_str(yaml).unwrap();
            Rule::new(&raw, NameValidation::Utf8).unwrap_err()
        };
        assert!(bad("{action: hashmod, target_label: t}").contains("non-zero modulus"));
        assert!(bad("{action: replace}").contains("requires 'target_label'"));
        assert!(bad("{action: frobnicate}").contains("unknown relabel action"));
        assert!(
            bad("{action: lowercase, target_label: t, replacement: x}")
                .contains("'replacement' can not be set")
        );
        assert!(bad("{action: labeldrop, regex: a, source_labels: [b]}").contains("requires only 'regex'"));
        assert!(
            bad("{action: keepequal, target_label: t, regex: a}").contains("requires only 'source_labels'")
        );
        assert!(bad("{regex: '(', target_label: t}").contains("invalid regex"));
        // Action names are case-insensitive; regex null is the empty regex.
        let raw: RawRule = serde_yaml::from_str("{action: LabelMap, regex: ~}").unwrap();
        let r = Rule::new(&raw, NameValidation::Utf8).unwrap();
        assert_eq!(r.action, Action::LabelMap);
        assert!(r.regex.is_match("") && !r.regex.is_match("a"));
        // Legacy: an invalid expanded target is a silent no-op at runtime.
        let raw: Vec<RawRule> =
            serde_yaml::from_str("[{source_labels: [a], target_label: '${1}', replacement: v}]").unwrap();
        let legacy: Vec<Rule> = raw.iter().map(|r| Rule::new(r, NameValidation::Legacy).unwrap()).collect();
        let mut b = Builder::from_set(&LabelSet::from_pairs([("a", "foo-bar")]).unwrap());
        assert!(process(&legacy, &mut b));
        assert_eq!(b.labels().to_string(), r#"{a="foo-bar"}"#);
        let mut b = Builder::from_set(&LabelSet::from_pairs([("a", "foo-bar")]).unwrap());
        assert!(process(&rules("[{source_labels: [a], target_label: '${1}', replacement: v}]"), &mut b));
        assert_eq!(b.labels().to_string(), r#"{a="foo-bar", foo-bar="v"}"#);
    }
}
