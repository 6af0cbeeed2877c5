//! From discovered labels to a scrape target (Prometheus `PopulateLabels` and `Target.URL`):
//! defaults filled only when absent, target relabeling, validation, `__meta_*` removal,
//! `instance` defaulting, and the scrape URL with Go's escaping rules.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_protocol::{Label, LabelSet};

use crate::config::{Job, fnv1a};
use crate::labels::Builder;
use crate::relabel;

/// One discovered group: targets (each a label map with at least `__address__`) and labels
/// shared by all of them. `source` identifies the group within its provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TargetGroup {
    pub source: String,
    pub targets: Vec<BTreeMap<String, String>>,
    pub labels: BTreeMap<String, String>,
}

/// A target ready to scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Every label after relabeling, `__*` included (its identity).
    pub labels: LabelSet,
    /// The labels before relabeling, for `/api/v1/targets`.
    pub discovered: LabelSet,
    /// The labels every sample gets: the non-`__` ones.
    pub public: LabelSet,
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Identity within the job; decides dedupe and the scrape phase.
    pub hash: u64,
}

/// What became of a discovered target.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Active(Target),
    /// Dropped by relabeling; the discovered labels are kept for the API.
    Dropped(LabelSet),
    /// Invalid after relabeling; skipped with this error.
    Failed(LabelSet, String),
}

/// Go `url.QueryEscape`: space is `+`, only `A-Za-z0-9-_.~` stay as they are.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go `url.URL.EscapedPath` for a path: `$&+,/:;=@` and unreserved characters stay.
pub fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'@' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go `ParseBool`.
fn go_bool(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False")
}

/// Builds the target for one discovered label set of `job`.
pub fn populate(job: &Job, target: &BTreeMap<String, String>, group: &BTreeMap<String, String>) -> Outcome {
    // 1. Target labels, then group labels where absent; empty values are absent.
    let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in target.iter().chain(group.iter()) {
        if !v.is_empty() {
            merged.entry(k.as_str()).or_insert(v.as_str());
        }
    }
    let base: Vec<Label> = merged.iter().map(|(k, v)| Label::new(*k, *v)).collect();
    let mut b = Builder::new(base);
    // 2. Defaults, only if absent.
    let interval = crate::duration::format(job.interval);
    let timeout = crate::duration::format(job.timeout);
    let defaults: [(&str, &str); 8] = [
        ("job", &job.name),
        ("__scrape_interval__", &interval),
        ("__scrape_timeout__", &timeout),
        ("__metrics_path__", &job.metrics_path),
        ("__scheme__", &job.scheme),
        ("__convert_classic_histograms_to_nhcb__", "false"),
        ("__always_scrape_classic_histograms__", "false"),
        ("__scrape_native_histograms__", "false"),
    ];
    for (k, v) in defaults {
        if b.get(k).is_empty() {
            b.set(k, v);
        }
    }
    for (k, vals) in &job.params {
        let name = format!("__param_{k}");
        if let Some(first) = vals.first()
            && b.get(&name).is_empty()
        {
            b.set(&name, first);
        }
    }
    let discovered = b.labels();
    // 3. Relabeling.
    if !relabel::process(&job.relabel, &mut b) {
        return Outcome::Dropped(discovered);
    }
    // 4. Validation.
    let fail = |msg: String| Outcome::Failed(discovered.clone(), msg);
    let addr = b.get("__address__").to_owned();
    if addr.is_empty() {
        return fail("no address".into());
    }
    if addr.contains('/') {
        return fail(format!("{addr:?} is not a valid hostname"));
    }
    let iv_s = b.get("__scrape_interval__").to_owned();
    let to_s = b.get("__scrape_timeout__").to_owned();
    let iv = match crate::duration::parse(&iv_s) {
        Ok(d) if d.is_zero() => return fail("scrape interval cannot be 0".into()),
        Ok(d) => d,
        Err(e) => return fail(format!("error parsing scrape interval: {e}")),
    };
    let to = match crate::duration::parse(&to_s) {
        Ok(d) if d.is_zero() => return fail("scrape timeout cannot be 0".into()),
        Ok(d) => d,
        Err(e) => return fail(format!("error parsing scrape timeout: {e}")),
    };
    if to > iv {
        return fail(format!("scrape timeout cannot be greater than scrape interval ({to_s:?} > {iv_s:?})"));
    }
    for flag in [
        "__convert_classic_histograms_to_nhcb__",
        "__always_scrape_classic_histograms__",
        "__scrape_native_histograms__",
    ] {
        let v = b.get(flag);
        if !v.is_empty() && !go_bool(v) {
            return fail(format!("{flag}: invalid boolean {v:?}"));
        }
    }
    // 5. `__meta_*` goes; 6. instance defaults to the address.
    b.retain(|n| !n.starts_with("__meta_"));
    if b.get("instance").is_empty() {
        b.set("instance", &addr);
    }
    let labels = b.labels();
    let public =
        LabelSet::from_labels(labels.iter().filter(|l| !l.name.starts_with("__")).cloned().collect())
            .expect("subset of a valid set");
    let url = target_url(job, &labels);
    let mut id = Vec::with_capacity(256);
    crate::labels::put_key(&mut id, &labels);
    id.extend_from_slice(url.as_bytes());
    Outcome::Active(Target { hash: fnv1a(&id), labels, discovered, public, url, interval: iv, timeout: to })
}

/// `scheme://address/path?query`, with the job's params and `__param_*` overrides.
fn target_url(job: &Job, labels: &LabelSet) -> String {
    let mut params = job.params.clone();
    for l in labels {
        if let Some(name) = l.name.strip_prefix("__param_") {
            let vals = params.entry(name.to_owned()).or_default();
            match vals.first_mut() {
                Some(first) => l.value.clone_into(first),
                None => vals.push(l.value.clone()),
            }
        }
    }
    let mut path = labels.get("__metrics_path__").unwrap_or("").to_owned();
    if !path.is_empty() && !path.starts_with('/') {
        path.insert(0, '/');
    }
    let mut url = format!(
        "{}://{}{}",
        labels.get("__scheme__").unwrap_or("http"),
        labels.get("__address__").unwrap_or(""),
        path_escape(&path)
    );
    let query: Vec<String> = params
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{}={}", query_escape(k), query_escape(v))))
        .collect();
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn job(yaml: &str) -> Job {
        Config::parse(yaml, Path::new("t.yaml"), false, |_| None).unwrap().jobs.remove(0)
    }

    fn one(j: &Job, addr: &str) -> Outcome {
        populate(j, &BTreeMap::from([("__address__".to_owned(), addr.to_owned())]), &BTreeMap::new())
    }

    #[test]
    fn g_t01_basic_static_target() {
        let j = job("scrape_configs: [{job_name: node}]");
        let Outcome::Active(t) = one(&j, "10.0.0.1:9100") else { panic!() };
        assert_eq!(t.public.to_string(), r#"{instance="10.0.0.1:9100", job="node"}"#);
        assert_eq!(t.url, "http://10.0.0.1:9100/metrics");
        assert_eq!(t.labels.get("__scrape_interval__"), Some("1m"));
        assert_eq!(t.labels.get("__scrape_timeout__"), Some("10s"));
        assert_eq!(t.labels.get("__scrape_native_histograms__"), Some("false"));
    }

    #[test]
    fn g_t03_t04_addresses() {
        let j = job("scrape_configs: [{job_name: j, relabel_configs: [{target_label: x, replacement: y}]}]");
        let Outcome::Failed(_, msg) = one(&j, "http://h:9100") else { panic!() };
        assert_eq!(msg, "\"http://h:9100\" is not a valid hostname");
        let j = job("scrape_configs: [{job_name: j, scheme: https}]");
        let Outcome::Active(t) = one(&j, "1.2.3.4") else { panic!() };
        assert_eq!((t.url.as_str(), t.public.get("instance")), ("https://1.2.3.4/metrics", Some("1.2.3.4")));
    }

    #[test]
    fn g_t05_durations_in_labels() {
        let j = job("scrape_configs: [{job_name: j, scrape_interval: 90s}]");
        let Outcome::Active(t) = one(&j, "h:1") else { panic!() };
        assert_eq!(t.labels.get("__scrape_interval__"), Some("1m30s"));
        let bad = |rules: &str| {
            let j = job(&format!("scrape_configs: [{{job_name: j, relabel_configs: {rules}}}]"));
            match one(&j, "h:1") {
                Outcome::Failed(_, m) => m,
                o => panic!("{o:?}"),
            }
        };
        assert_eq!(
            bad(
                "[{target_label: __scrape_interval__, replacement: 1s}, {target_label: __scrape_timeout__, replacement: 2s}]"
            ),
            "scrape timeout cannot be greater than scrape interval (\"2s\" > \"1s\")"
        );
        assert_eq!(
            bad("[{target_label: __scrape_interval__, replacement: 0s}]"),
            "scrape interval cannot be 0"
        );
        assert!(
            bad("[{target_label: __scrape_interval__, replacement: 2notseconds}]")
                .contains("error parsing scrape interval: unknown unit \"notseconds\"")
        );
    }

    #[test]
    fn g_t07_blackbox_params_and_t08_path_escaping() {
        let j = job(
            "scrape_configs:\n- job_name: j\n  metrics_path: /probe\n  params: {module: [http_2xx]}\n  relabel_configs:\n  - {source_labels: [__address__], target_label: __param_target}\n  - {source_labels: [__param_target], target_label: instance}\n  - {target_label: __address__, replacement: 'blackbox:9115'}\n",
        );
        let Outcome::Active(t) = one(&j, "https://example.com/x?y=1") else { panic!() };
        assert_eq!(
            t.url,
            "http://blackbox:9115/probe?module=http_2xx&target=https%3A%2F%2Fexample.com%2Fx%3Fy%3D1"
        );
        assert_eq!(t.public.to_string(), r#"{instance="https://example.com/x?y=1", job="j"}"#);
        let j = job("scrape_configs: [{job_name: j, metrics_path: '/metrics?x=1'}]");
        let Outcome::Active(t) = one(&j, "h:9100") else { panic!() };
        assert_eq!(t.url, "http://h:9100/metrics%3Fx=1");
    }

    #[test]
    fn g_t09_port_rewrite_and_meta_removal() {
        let j = job(
            "scrape_configs:\n- job_name: j\n  relabel_configs:\n  - {source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port], regex: '([^:]+)(?::\\d+)?;(\\d+)', replacement: '$1:$2', target_label: __address__}\n",
        );
        let t = populate(
            &j,
            &BTreeMap::from([("__address__".into(), "10.1.2.3:8080".into())]),
            &BTreeMap::from([("__meta_kubernetes_pod_annotation_prometheus_io_port".into(), "9102".into())]),
        );
        let Outcome::Active(t) = t else { panic!() };
        assert_eq!(t.public.get("instance"), Some("10.1.2.3:9102"));
        assert!(t.labels.iter().all(|l| !l.name.starts_with("__meta_")));
        assert!(t.discovered.get("__meta_kubernetes_pod_annotation_prometheus_io_port").is_some());
    }

    #[test]
    fn group_labels_fill_only_absent_and_job_label_wins() {
        let j = job("scrape_configs: [{job_name: j}]");
        let t = populate(
            &j,
            &BTreeMap::from([("__address__".into(), "h:1".into()), ("env".into(), "t".into())]),
            &BTreeMap::from([
                ("env".into(), "g".into()),
                ("job".into(), "custom".into()),
                ("empty".into(), "".into()),
            ]),
        );
        let Outcome::Active(t) = t else { panic!() };
        assert_eq!(t.public.to_string(), r#"{env="t", instance="h:1", job="custom"}"#);
        let j = job(
            "scrape_configs: [{job_name: j, relabel_configs: [{source_labels: [__address__], regex: 'h.*', action: drop}]}]",
        );
        assert!(matches!(one(&j, "h:1"), Outcome::Dropped(_)));
    }
}
