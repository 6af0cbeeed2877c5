//! Case results and the three output formats: a terminal table, JSON, JUnit XML.

use serde_json::json;

/// How binding a case is: the spec's words, or a Ferry extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Must,
    Should,
    May,
    Extension,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::May => "MAY",
            Level::Extension => "EXT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    NotApplicable(String),
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: &'static str,
    pub level: Level,
    /// Where the requirement comes from, e.g. "RW 2.0 §Responses (L178)".
    pub clause: &'static str,
    pub outcome: Outcome,
}

pub fn must_failed(results: &[CaseResult]) -> bool {
    results.iter().any(|r| r.level == Level::Must && matches!(r.outcome, Outcome::Fail(_)))
}

pub fn table(results: &[CaseResult]) -> String {
    let mut out = String::new();
    let w = results.iter().map(|r| r.id.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!("{:<w$}  {:<6}  {:<5}  {}\n", "case", "level", "result", "clause / reason"));
    for r in results {
        let (res, why) = match &r.outcome {
            Outcome::Pass => ("pass", String::new()),
            Outcome::Fail(w) => ("FAIL", format!(" — {w}")),
            Outcome::NotApplicable(w) => ("n/a", format!(" — {w}")),
        };
        out.push_str(&format!("{:<w$}  {:<6}  {:<5}  {}{}\n", r.id, r.level.as_str(), res, r.clause, why));
    }
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
    out.push_str(&format!(
        "\n{} passed, {} failed, {} n/a ({} MUST failures)\n",
        count(|o| *o == Outcome::Pass),
        count(|o| matches!(o, Outcome::Fail(_))),
        count(|o| matches!(o, Outcome::NotApplicable(_))),
        results.iter().filter(|r| r.level == Level::Must && matches!(r.outcome, Outcome::Fail(_))).count()
    ));
    out
}

pub fn json(results: &[CaseResult]) -> String {
    let cases: Vec<_> = results
        .iter()
        .map(|r| {
            let (result, reason) = match &r.outcome {
                Outcome::Pass => ("pass", String::new()),
                Outcome::Fail(w) => ("fail", w.clone()),
                Outcome::NotApplicable(w) => ("n/a", w.clone()),
            };
            json!({"case": r.id, "level": r.level.as_str(), "clause": r.clause, "result": result, "reason": reason})
        })
        .collect();
    json!({"cases": cases, "must_failed": must_failed(results)}).to_string()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn junit(suite: &str, results: &[CaseResult]) -> String {
    let failures = results.iter().filter(|r| matches!(r.outcome, Outcome::Fail(_))).count();
    let skipped = results.iter().filter(|r| matches!(r.outcome, Outcome::NotApplicable(_))).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
        xml_escape(suite),
        results.len()
    );
    for r in results {
        out.push_str(&format!(
            "  <testcase classname=\"{}.{}\" name=\"{}\">",
            xml_escape(suite),
            r.level.as_str(),
            xml_escape(r.id)
        ));
        match &r.outcome {
            Outcome::Pass => {}
            Outcome::Fail(w) => out.push_str(&format!(
                "<failure message=\"{}\">{}</failure>",
                xml_escape(w),
                xml_escape(r.clause)
            )),
            Outcome::NotApplicable(w) => out.push_str(&format!("<skipped message=\"{}\"/>", xml_escape(w))),
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("</testsuite>\n");
    out
}
