//! Agent configuration: load the Prometheus-compatible YAML (with `${VAR}` expansion), check
//! it as Prometheus' agent mode would, and resolve every job's effective settings (globals,
//! defaults, inheritance). Every error names the file, line and column.

pub mod env;
pub mod model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_protocol::headers::is_reserved_header;
use ferry_protocol::{LabelSet, NameValidation, WriteProto};

use crate::relabel::Rule;
use crate::scrape::parse::Format;
pub use model::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {msg}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub msg: String,
}

/// Scrape protocols a job may ask for, in `Accept` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenMetrics1,
    OpenMetrics0,
    Text1,
    Text004,
}

impl Protocol {
    fn parse(s: &str) -> Result<Protocol, String> {
        match s {
            "OpenMetricsText1.0.0" => Ok(Protocol::OpenMetrics1),
            "OpenMetricsText0.0.1" => Ok(Protocol::OpenMetrics0),
            "PrometheusText1.0.0" => Ok(Protocol::Text1),
            "PrometheusText0.0.4" => Ok(Protocol::Text004),
            "PrometheusProto" => Err("scrape protocol PrometheusProto is not supported by ferry-agent; \
                 use OpenMetricsText1.0.0 or PrometheusText0.0.4"
                .into()),
            other => Err(format!(
                "unknown scrape protocol {other:?}, supported: OpenMetricsText1.0.0, OpenMetricsText0.0.1, \
                 PrometheusText1.0.0, PrometheusText0.0.4"
            )),
        }
    }

    pub fn format(self) -> Format {
        match self {
            Protocol::OpenMetrics1 | Protocol::OpenMetrics0 => Format::OpenMetrics,
            Protocol::Text1 | Protocol::Text004 => Format::Text,
        }
    }

    fn media(self, escaping: &str) -> String {
        match self {
            Protocol::OpenMetrics1 => {
                format!("application/openmetrics-text;version=1.0.0;escaping={escaping}")
            }
            Protocol::OpenMetrics0 => "application/openmetrics-text;version=0.0.1".into(),
            Protocol::Text1 => format!("text/plain;version=1.0.0;escaping={escaping}"),
            Protocol::Text004 => "text/plain;version=0.0.4".into(),
        }
    }
}

const DEFAULT_PROTOCOLS: [Protocol; 4] =
    [Protocol::OpenMetrics1, Protocol::OpenMetrics0, Protocol::Text1, Protocol::Text004];

/// A job with every setting resolved.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub protocols: Vec<Protocol>,
    pub fallback: Option<Format>,
    /// The `Accept` header Prometheus would send for these protocols.
    pub accept: String,
    pub metrics_path: String,
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub track_timestamps_staleness: bool,
    pub enable_compression: bool,
    pub body_size_limit: u64,
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    pub target_limit: u64,
    pub keep_dropped_targets: u64,
    pub validation: NameValidation,
    pub extra_scrape_metrics: bool,
    pub relabel: Vec<Rule>,
    pub metric_relabel: Vec<Rule>,
    pub static_configs: Vec<StaticConfig>,
    pub file_sd: Vec<FileSdConfig>,
    pub kubernetes_sd: Vec<KubernetesSdConfig>,
    pub http_sd: Vec<HttpSdConfig>,
    pub http: HttpClient,
    /// Everything that identifies the job's configuration; a reload keeps the job's loops
    /// when this is unchanged.
    pub fingerprint: String,
}

/// A remote-write endpoint with defaults applied.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    pub name: String,
    pub url: String,
    pub timeout: Duration,
    pub headers: BTreeMap<String, String>,
    pub write_relabel: Vec<Rule>,
    pub proto: WriteProto,
    pub send_exemplars: bool,
    pub fallback_to_rw1: bool,
    pub max_shards: u64,
    pub min_shards: u64,
    pub max_samples_per_send: u64,
    /// How long a target's scrapes may be held for more of them (0: until the queue has
    /// read all the WAL holds).
    pub batch_send_deadline: Duration,
    /// Samples held per lane while requests are packed (`capacity`; `max_shards` times this
    /// in all).
    pub capacity: u64,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_on_http_429: bool,
    pub sample_age_limit: Option<Duration>,
    pub max_retry_after: Duration,
    pub max_bytes_per_second: u64,
    pub http: HttpClient,
}

#[derive(Debug, Clone)]
pub struct Wal {
    pub sync_interval: Duration,
    pub max_size: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub external_labels: LabelSet,
    pub jobs: Vec<Job>,
    pub remote_write: Vec<RemoteWrite>,
    pub wal: Wal,
}

/// Turns a serde_yaml error into ours. serde_yaml reports errors raised while reading a value
/// at the start of the enclosing mapping, so when the message quotes the offending value,
/// the position is moved to where that value appears from there on.
fn yaml_error(file: &str, text: &str, e: &serde_yaml::Error) -> ConfigError {
    let (mut line, mut column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let mut msg = e.to_string();
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    if let (Some(loc), Some(q0)) = (e.location(), msg.find('"'))
        && let Some(q1) = msg[q0 + 1..].find('"')
    {
        let quoted = &msg[q0 + 1..q0 + 1 + q1];
        if !quoted.is_empty()
            && let Some(off) = text[loc.index().min(text.len())..].find(quoted)
        {
            (line, column) = position(text, loc.index() + off);
        }
    }
    ConfigError { file: file.to_owned(), line, column, msg }
}

/// The 1-based line and column of byte offset `i` in `text`.
fn position(text: &str, i: usize) -> (usize, usize) {
    let line = text[..i].matches('\n').count() + 1;
    let col = i - text[..i].rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

/// Where `needle` first occurs in `text`, or (0, 0).
fn locate(text: &str, needle: &str) -> (usize, usize) {
    text.find(needle).map_or((0, 0), |i| position(text, i))
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    /// An error placed at the first occurrence of `near` (a key or value in the file).
    fn err(&self, near: &str, msg: impl Into<String>) -> ConfigError {
        let (line, column) = locate(self.text, near);
        ConfigError { file: self.file.to_owned(), line, column, msg: msg.into() }
    }
}

fn check_http(ctx: &Ctx<'_>, where_: &str, h: &HttpClient) -> Result<(), ConfigError> {
    let auths = [
        h.basic_auth.is_some(),
        h.authorization.is_some(),
        h.bearer_token.is_some() || h.bearer_token_file.is_some(),
        h.oauth2,
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    if auths > 1 {
        return Err(ctx.err(where_, format!("{where_}: at most one of basic_auth, authorization, bearer_token(_file) and oauth2 may be configured")));
    }
    if h.bearer_token.is_some() && h.bearer_token_file.is_some() {
        return Err(
            ctx.err("bearer_token", format!("{where_}: at most one of bearer_token and bearer_token_file"))
        );
    }
    if h.oauth2 {
        return Err(ctx.err("oauth2", format!("{where_}.oauth2: OAuth 2.0 is not supported by ferry-agent yet; use authorization or basic_auth")));
    }
    if let Some(a) = &h.authorization {
        if a.kind.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("basic")) {
            return Err(ctx.err(
                "authorization",
                format!("{where_}.authorization: type Basic is not allowed, use basic_auth"),
            ));
        }
        if a.credentials.is_some() && a.credentials_file.is_some() {
            return Err(ctx.err(
                "credentials",
                format!("{where_}.authorization: at most one of credentials and credentials_file"),
            ));
        }
    }
    if let Some(b) = &h.basic_auth
        && (b.username.is_some() && b.username_file.is_some()
            || b.password.is_some() && b.password_file.is_some())
    {
        return Err(ctx.err("basic_auth", format!("{where_}.basic_auth: give a value or a file, not both")));
    }
    for name in h.http_headers.keys() {
        if is_reserved_header(name)
            || name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("x-prometheus-scrape-timeout-seconds")
        {
            return Err(ctx
                .err(name, format!("{where_}.http_headers: header {name:?} is reserved and cannot be set")));
        }
    }
    if let Some(p) = &h.proxy_url
        && h.proxy_from_environment
    {
        return Err(
            ctx.err(p, format!("{where_}: proxy_url and proxy_from_environment are mutually exclusive"))
        );
    }
    if let Some(t) = &h.tls_config
        && (t.ca.is_some() && t.ca_file.is_some()
            || t.cert.is_some() && t.cert_file.is_some()
            || t.key.is_some() && t.key_file.is_some())
    {
        return Err(ctx.err(
            "tls_config",
            format!("{where_}.tls_config: give each of ca, cert and key inline or as a file, not both"),
        ));
    }
    if let Some(t) = &h.tls_config
        && let Err(e) = crate::scrape::tls::versions(t)
    {
        return Err(ctx.err(&e.value, format!("{where_}.tls_config.{}: {}", e.field, e.why)));
    }
    Ok(())
}

/// `tls_config.server_name` where the connection is made by a client that cannot send
/// another name than the URL's (reqwest: remote write, HTTP SD, scrapes through a proxy).
fn refuse_server_name(ctx: &Ctx<'_>, where_: &str, h: &HttpClient, why: &str) -> Result<(), ConfigError> {
    match h.tls_config.as_ref().and_then(|t| t.server_name.as_ref()) {
        Some(n) => Err(ctx.err(n, format!("{where_}.tls_config.server_name is not supported {why}"))),
        None => Ok(()),
    }
}

fn validation_scheme(ctx: &Ctx<'_>, s: Option<&str>) -> Result<Option<NameValidation>, ConfigError> {
    match s {
        None => Ok(None),
        Some("" | "utf8") => Ok(Some(NameValidation::Utf8)),
        Some("legacy") => Ok(Some(NameValidation::Legacy)),
        Some(other) => {
            Err(ctx.err(other, format!("unrecognized ValidationScheme {other:?}: use utf8 or legacy")))
        }
    }
}

fn file_sd_pattern_ok(p: &str) -> bool {
    let re = regex::Regex::new(r"^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$").expect("valid regex");
    re.is_match(p)
}

const K8S_ROLES: [&str; 6] = ["node", "service", "pod", "endpoints", "endpointslice", "ingress"];

fn check_kubernetes(ctx: &Ctx<'_>, job: &str, k: &KubernetesSdConfig) -> Result<(), ConfigError> {
    let w = format!("job {job:?} kubernetes_sd_configs");
    if !K8S_ROLES.contains(&k.role.as_str()) {
        return Err(
            ctx.err(&k.role, format!("{w}: role {:?} is not one of {}", k.role, K8S_ROLES.join(", ")))
        );
    }
    if k.api_server.is_some() && k.kubeconfig_file.is_some() {
        return Err(
            ctx.err("kubeconfig_file", format!("{w}: api_server and kubeconfig_file are mutually exclusive"))
        );
    }
    if k.namespaces.own_namespace && (k.api_server.is_some() || k.kubeconfig_file.is_some()) {
        return Err(ctx.err(
            "own_namespace",
            format!("{w}: namespaces.own_namespace only works in a cluster (not with api_server or kubeconfig_file)"),
        ));
    }
    if k.api_server.is_none() && k.http_client() != HttpClient::default() {
        return Err(ctx.err(&k.role, format!("{w}: HTTP client options need an explicit api_server")));
    }
    let allowed: &[&str] = match k.role.as_str() {
        "pod" => &["pod", "node"],
        "endpoints" => &["endpoints", "pod", "service"],
        "endpointslice" => &["endpointslice", "pod", "service"],
        other => &[if other == "node" {
            "node"
        } else if other == "service" {
            "service"
        } else {
            "ingress"
        }],
    };
    let mut seen = Vec::new();
    for s in &k.selectors {
        if !allowed.contains(&s.role.as_str()) {
            return Err(ctx.err(
                &s.role,
                format!(
                    "{w}: selector role {:?} is not allowed with role {:?} (allowed: {})",
                    s.role,
                    k.role,
                    allowed.join(", ")
                ),
            ));
        }
        if seen.contains(&s.role) {
            return Err(ctx.err(&s.role, format!("{w}: selector for role {:?} given twice", s.role)));
        }
        seen.push(s.role.clone());
        for sel in [&s.label, &s.field].into_iter().flatten() {
            if sel.split(',').any(|term| term.trim().is_empty()) {
                return Err(ctx.err(sel, format!("{w}: invalid selector {sel:?}")));
            }
        }
        // Field selectors are `path=value`, `path==value` or `path!=value` terms (Kubernetes'
        // fields.ParseSelector); a term without an operator would only fail at the API server.
        if let Some(f) = &s.field {
            for term in f.split(',') {
                let key = term.split_once("!=").or_else(|| term.split_once('=')).map(|(k, _)| k.trim());
                if key.is_none_or(str::is_empty) {
                    return Err(ctx.err(
                        f,
                        format!(
                            "{w}: invalid field selector {f:?}: {term:?} is not path=value or path!=value"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn accept_header(protocols: &[Protocol], escaping: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut q = 6;
    for p in protocols {
        parts.push(format!("{};q=0.{q}", p.media(escaping)));
        q -= 1;
    }
    parts.push(format!("*/*;q=0.{q}"));
    parts.join(",")
}

impl Config {
    /// Reads and checks `path`; `expand_env` turns `${VAR}` expansion on.
    pub fn load(path: &Path, expand_env: bool) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            msg: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path, expand_env, |n| std::env::var(n).ok())
    }

    pub fn parse(
        text: &str,
        path: &Path,
        expand_env: bool,
        env_get: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = if expand_env {
            env::expand(text, &env_get).map_err(|msg| {
                let line =
                    msg.strip_prefix("line ").and_then(|r| r.split(':').next()?.parse().ok()).unwrap_or(0);
                ConfigError { file: file.clone(), line, column: 1, msg }
            })?
        } else {
            text.to_owned()
        };
        let ctx = Ctx { file: &file, text: &text };
        let raw: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_yaml::from_str(&text).map_err(|e| yaml_error(&file, &text, &e))?
        };
        for (key, present) in [
            ("rule_files", raw.rule_files.is_some()),
            ("alerting", raw.alerting.is_some()),
            ("remote_read", raw.remote_read.is_some()),
        ] {
            if present {
                return Err(ctx.err(
                    &format!("{key}:"),
                    format!("{key} is not supported in agent mode: ferry-agent only scrapes and forwards"),
                ));
            }
        }
        let g = &raw.global;
        let g_interval = g.scrape_interval.map_or(Duration::from_secs(60), |d| d.0);
        let g_timeout = match g.scrape_timeout {
            Some(t) if t.0 > g_interval => {
                return Err(ctx.err("scrape_timeout", "global scrape timeout greater than scrape interval"));
            }
            Some(t) => t.0,
            None => g_interval.min(Duration::from_secs(10)),
        };
        let g_validation =
            validation_scheme(&ctx, g.metric_name_validation_scheme.as_deref())?.unwrap_or_default();
        for name in g.external_labels.keys() {
            if !ferry_protocol::labels::is_valid_label_name(name, g_validation) || name.starts_with("__") {
                return Err(ctx.err(name, format!("external_labels: {name:?} is not a valid label name")));
            }
        }
        let external_labels = LabelSet::from_pairs(g.external_labels.clone())
            .map_err(|e| ctx.err("external_labels", format!("external_labels: {e}")))?;

        // scrape_config_files: globs with `*` only in the last component.
        let mut scrape_configs = raw.scrape_configs.clone();
        let base = path.parent().unwrap_or(Path::new("."));
        for pattern in &raw.scrape_config_files {
            for f in glob_files(base, pattern).map_err(|m| ctx.err(pattern, m))? {
                let t = std::fs::read_to_string(&f)
                    .map_err(|e| ctx.err(pattern, format!("scrape_config_files: {}: {e}", f.display())))?;
                let t = if expand_env {
                    env::expand(&t, &env_get)
                        .map_err(|m| ctx.err(pattern, format!("{}: {m}", f.display())))?
                } else {
                    t
                };
                let part: ScrapeConfigFile =
                    serde_yaml::from_str(&t).map_err(|e| yaml_error(&f.display().to_string(), &t, &e))?;
                scrape_configs.extend(part.scrape_configs);
            }
        }

        let mut jobs = Vec::new();
        for sc in &scrape_configs {
            let name = &sc.job_name;
            let at = format!("job_name: {name}");
            if name.is_empty() {
                return Err(ctx.err("job_name", "job_name is empty"));
            }
            if jobs.iter().any(|j: &Job| j.name == *name) {
                // Point at the second occurrence, the one that clashes.
                let first = text.find(&at).map_or(0, |i| i + at.len());
                let (line, column) = match text[first..].find(&at) {
                    Some(i) => position(&text, first + i),
                    None => locate(&text, &at),
                };
                return Err(ConfigError {
                    file: file.clone(),
                    line,
                    column,
                    msg: format!("found multiple scrape configs with job name {name:?}"),
                });
            }
            let interval = sc.scrape_interval.map_or(g_interval, |d| d.0);
            let timeout = match sc.scrape_timeout {
                Some(t) if t.0 > interval => {
                    return Err(
                        ctx.err(&at, format!("job {name:?}: scrape timeout greater than scrape interval"))
                    );
                }
                Some(t) => t.0,
                None => g_timeout.min(interval),
            };
            if interval.is_zero() {
                return Err(ctx.err(&at, format!("job {name:?}: scrape interval cannot be 0")));
            }
            let validation =
                validation_scheme(&ctx, sc.metric_name_validation_scheme.as_deref())?.unwrap_or(g_validation);
            let protocols = match sc.scrape_protocols.as_ref().or(g.scrape_protocols.as_ref()) {
                Some(list) => {
                    if list.is_empty() {
                        return Err(ctx.err(&at, format!("job {name:?}: scrape_protocols cannot be empty")));
                    }
                    let mut out = Vec::new();
                    for p in list {
                        let p2 = Protocol::parse(p).map_err(|m| ctx.err(p, format!("job {name:?}: {m}")))?;
                        if out.contains(&p2) {
                            return Err(ctx.err(
                                p,
                                format!("job {name:?}: duplicated protocol in scrape_protocols: {p}"),
                            ));
                        }
                        out.push(p2);
                    }
                    out
                }
                None => DEFAULT_PROTOCOLS.to_vec(),
            };
            let fallback = match &sc.fallback_scrape_protocol {
                Some(p) => Some(
                    Protocol::parse(p)
                        .map_err(|m| ctx.err(p, format!("job {name:?}: fallback_scrape_protocol: {m}")))?
                        .format(),
                ),
                None => None,
            };
            let escaping =
                match sc.metric_name_escaping_scheme.as_ref().or(g.metric_name_escaping_scheme.as_ref()) {
                    Some(e) if ["allow-utf-8", "underscores", "dots", "values"].contains(&e.as_str()) => {
                        e.clone()
                    }
                    Some(e) => {
                        return Err(
                            ctx.err(e, format!("job {name:?}: unknown metric_name_escaping_scheme {e:?}"))
                        );
                    }
                    None if validation == NameValidation::Legacy => "underscores".into(),
                    None => "allow-utf-8".into(),
                };
            let scheme = sc.scheme.clone().unwrap_or_else(|| "http".into());
            if scheme != "http" && scheme != "https" {
                return Err(
                    ctx.err(&scheme, format!("job {name:?}: scheme must be http or https, got {scheme:?}"))
                );
            }
            let compile = |rules: &[RuleSpec], what: &str| -> Result<Vec<Rule>, ConfigError> {
                rules
                    .iter()
                    .map(|r| {
                        Rule::new(&r.0, validation)
                            .map_err(|m| ctx.err(&at, format!("job {name:?} {what}: {m}")))
                    })
                    .collect()
            };
            let relabel = compile(&sc.relabel_configs, "relabel_configs")?;
            let metric_relabel = compile(&sc.metric_relabel_configs, "metric_relabel_configs")?;
            if relabel.is_empty() {
                for t in sc.static_configs.iter().flat_map(|s| &s.targets) {
                    if t.contains('/') {
                        return Err(ctx.err(t, format!("job {name:?}: {t:?} is not a valid hostname")));
                    }
                }
            }
            for f in sc.file_sd_configs.iter().flat_map(|f| &f.files) {
                if !file_sd_pattern_ok(f) {
                    return Err(ctx.err(f, format!("job {name:?}: file_sd_configs: path {f:?} is not a valid file path (a *.json, *.yml or *.yaml file, with * only in the last component)")));
                }
            }
            for k in &sc.kubernetes_sd_configs {
                check_kubernetes(&ctx, name, k)?;
                check_http(&ctx, &format!("job {name:?} kubernetes_sd_configs"), &k.http_client())?;
            }
            for h in &sc.http_sd_configs {
                let where_ = format!("job {name:?} http_sd_configs");
                check_http(&ctx, &where_, &h.http_client())?;
                refuse_server_name(&ctx, &where_, &h.http_client(), "for HTTP service discovery")?;
            }
            let http = sc.http_client();
            check_http(&ctx, &format!("job {name:?}"), &http)?;
            if http.proxy_url.is_some() || http.proxy_from_environment {
                refuse_server_name(&ctx, &format!("job {name:?}"), &http, "for scrapes through a proxy")?;
            }
            let pick =
                |job: Option<u64>, global: Option<u64>| job.filter(|&v| v != 0).or(global).unwrap_or(0);
            let extra = sc.extra_scrape_metrics.or(g.extra_scrape_metrics).unwrap_or(false);
            jobs.push(Job {
                name: name.clone(),
                interval,
                timeout,
                accept: accept_header(&protocols, &escaping),
                protocols,
                fallback,
                metrics_path: sc.metrics_path.clone().unwrap_or_else(|| "/metrics".into()),
                scheme,
                params: sc.params.clone(),
                honor_labels: sc.honor_labels.unwrap_or(false),
                honor_timestamps: sc.honor_timestamps.unwrap_or(true),
                track_timestamps_staleness: sc.track_timestamps_staleness.unwrap_or(false),
                enable_compression: sc.enable_compression.unwrap_or(true),
                body_size_limit: sc
                    .body_size_limit
                    .filter(|s| s.0 != 0)
                    .or(g.body_size_limit)
                    .map_or(0, |s| s.0),
                sample_limit: pick(sc.sample_limit, g.sample_limit),
                label_limit: pick(sc.label_limit, g.label_limit),
                label_name_length_limit: pick(sc.label_name_length_limit, g.label_name_length_limit),
                label_value_length_limit: pick(sc.label_value_length_limit, g.label_value_length_limit),
                target_limit: pick(sc.target_limit, g.target_limit),
                keep_dropped_targets: pick(sc.keep_dropped_targets, g.keep_dropped_targets),
                validation,
                extra_scrape_metrics: extra,
                relabel,
                metric_relabel,
                static_configs: sc.static_configs.clone(),
                file_sd: sc.file_sd_configs.clone(),
                kubernetes_sd: sc.kubernetes_sd_configs.clone(),
                http_sd: sc.http_sd_configs.clone(),
                http,
                fingerprint: format!(
                    "{sc:?}|{g_interval:?}|{g_timeout:?}|{:?}|{:?}",
                    g.body_size_limit, external_labels
                ),
            });
        }

        let mut remote_write = Vec::new();
        for (i, rw) in raw.remote_write.iter().enumerate() {
            let w = format!("remote_write[{i}]");
            let at = format!("url: {}", rw.url);
            if !(rw.url.starts_with("http://") || rw.url.starts_with("https://")) {
                return Err(ctx.err(
                    &rw.url,
                    format!("{w}: url must start with http:// or https://, got {:?}", rw.url),
                ));
            }
            for (key, v) in [("sigv4", &rw.sigv4), ("azuread", &rw.azuread), ("google_iam", &rw.google_iam)] {
                if v.is_some() {
                    return Err(ctx.err(&format!("{key}:"), format!("{w}: {key} is not supported by ferry-agent; use authorization, basic_auth or tls_config")));
                }
            }
            for h in rw.headers.keys() {
                if h.eq_ignore_ascii_case("authorization") {
                    return Err(ctx.err(h, format!("{w}: authorization header must be changed via the basic_auth or authorization parameter")));
                }
                if is_reserved_header(h) {
                    return Err(ctx.err(h, format!("{w}: {h} is a reserved header. It must not be changed")));
                }
            }
            let proto = match rw.protobuf_message.as_deref() {
                None => WriteProto::V1,
                Some(m) => WriteProto::from_message_name(m).ok_or_else(|| {
                    ctx.err(m, format!("{w}: unknown protobuf_message {m:?}; use prometheus.WriteRequest or io.prometheus.write.v2.Request"))
                })?,
            };
            let q = &rw.queue_config;
            let max_shards = q.max_shards.unwrap_or(50);
            let min_shards = q.min_shards.unwrap_or(1);
            if max_shards == 0 || min_shards == 0 || min_shards > max_shards {
                return Err(ctx.err(
                    &at,
                    format!("{w}: need 0 < min_shards <= max_shards (got {min_shards} and {max_shards})"),
                ));
            }
            let max_samples = q.max_samples_per_send.unwrap_or(2000);
            if max_samples == 0 || q.capacity == Some(0) {
                return Err(ctx.err(&at, format!("{w}: max_samples_per_send and capacity must be positive")));
            }
            let min_backoff = q.min_backoff.map_or(Duration::from_millis(30), |d| d.0);
            let max_backoff = q.max_backoff.map_or(Duration::from_secs(5), |d| d.0);
            if max_backoff < min_backoff {
                return Err(ctx.err(&at, format!("{w}: max_backoff must not be below min_backoff")));
            }
            let name = rw.name.clone().unwrap_or_else(|| format!("{:016x}", fnv1a(rw.url.as_bytes())));
            if remote_write.iter().any(|r: &RemoteWrite| r.name == name) {
                return Err(
                    ctx.err(&at, format!("{w}: found multiple remote write configs with name {name:?}"))
                );
            }
            let http = rw.http_client();
            check_http(&ctx, &w, &http)?;
            refuse_server_name(&ctx, &w, &http, "for remote write")?;
            let write_relabel = rw
                .write_relabel_configs
                .iter()
                .map(|r| {
                    Rule::new(&r.0, g_validation)
                        .map_err(|m| ctx.err(&at, format!("{w} write_relabel_configs: {m}")))
                })
                .collect::<Result<_, _>>()?;
            remote_write.push(RemoteWrite {
                name,
                url: rw.url.clone(),
                timeout: rw.remote_timeout.map_or(Duration::from_secs(30), |d| d.0),
                headers: rw.headers.clone(),
                write_relabel,
                proto,
                send_exemplars: rw.send_exemplars.unwrap_or(false) || proto == WriteProto::V2,
                fallback_to_rw1: rw.fallback_to_rw1.unwrap_or(true),
                max_shards,
                min_shards,
                max_samples_per_send: max_samples,
                batch_send_deadline: q.batch_send_deadline.map_or(Duration::ZERO, |d| d.0),
                capacity: q.capacity.unwrap_or(10_000),
                min_backoff,
                max_backoff,
                retry_on_http_429: q.retry_on_http_429.unwrap_or(true),
                sample_age_limit: q.sample_age_limit.map(|d| d.0).filter(|d| !d.is_zero()),
                max_retry_after: q.max_retry_after.map_or(Duration::from_secs(300), |d| d.0),
                max_bytes_per_second: q.max_bytes_per_second.map_or(0, |s| s.0),
                http,
            });
        }
        let wal = raw.wal.clone().unwrap_or_default();
        Ok(Config {
            file: path.to_owned(),
            external_labels,
            jobs,
            remote_write,
            wal: Wal {
                sync_interval: wal.sync_interval.map_or(Duration::from_secs(1), |d| d.0),
                max_size: wal.max_size.map_or(1 << 30, |s| s.0),
            },
        })
    }
}

/// FNV-1a 64, used for default endpoint names and target hashes.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Files matching `pattern` (relative to `base`), where `*` may appear only in the last
/// component.
pub fn glob_files(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let p = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
    let dir = p.parent().unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains('*') {
        return Err(format!("{pattern:?}: '*' is allowed only in the last path component"));
    }
    let last = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    if !last.contains('*') {
        return Ok(if p.exists() { vec![p] } else { vec![] });
    }
    let re = regex::Regex::new(&format!("^{}$", regex::escape(&last).replace("\\*", "[^/]*")))
        .map_err(|e| e.to_string())?;
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| re.is_match(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
