//! The YAML model: Prometheus agent-mode configuration plus Ferry's `wal` section and a few
//! remote-write extensions. Unknown keys are errors everywhere (Prometheus' `UnmarshalStrict`).
//! Durations, sizes and relabel rules are checked while they are read, so their errors carry
//! the file position of the offending value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::relabel::RawRule;

/// A Prometheus duration (`15s`, `1m30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::duration::parse(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// A byte size with a unit (`100MB` = 100 MiB, as Prometheus' base-2 units), or `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size(pub u64);

pub fn parse_size(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match &s[digits..] {
        "B" => 1,
        "KB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        "TB" | "TiB" => 1 << 40,
        "PB" | "PiB" => 1 << 50,
        "EB" | "EiB" => 1 << 60,
        u => {
            return Err(format!("invalid size {s:?}: unknown unit {u:?} (use B, KB, MB, GB, TB)"));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} overflows"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(0) => Ok(Size(0)),
            Raw::N(n) => Err(serde::de::Error::custom(format!("size \"{n}\" needs a unit, e.g. {n}MB"))),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// A relabel rule, validated as it is read (so a bad regex points at its line).
#[derive(Debug, Clone)]
pub struct RuleSpec(pub RawRule);

impl<'de> Deserialize<'de> for RuleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<RawRule>::deserialize(d)?
            .ok_or_else(|| serde::de::Error::custom("empty or null relabeling rule"))?;
        // The job's validation scheme is not known here; utf8 accepts everything legacy
        // does, and the job-level check repeats this with the job's scheme.
        crate::relabel::Rule::new(&raw, ferry_protocol::NameValidation::Utf8)
            .map_err(serde::de::Error::custom)?;
        Ok(RuleSpec(raw))
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: Option<String>,
    pub username_file: Option<PathBuf>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub credentials: Option<String>,
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderValues {
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// The `<http_config>` fields, gathered from whichever section carried them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpClient {
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub tls_config: Option<TlsConfig>,
    pub proxy_url: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: bool,
    pub proxy_connect_header: BTreeMap<String, Vec<String>>,
    pub follow_redirects: Option<bool>,
    pub enable_http2: Option<bool>,
    pub http_headers: BTreeMap<String, HeaderValues>,
    pub oauth2: bool,
}

/// Declares a config struct with the `<http_config>` fields spliced in, because serde cannot
/// combine `flatten` with `deny_unknown_fields`.
macro_rules! with_http_client {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            pub basic_auth: Option<BasicAuth>,
            pub authorization: Option<Authorization>,
            pub bearer_token: Option<String>,
            pub bearer_token_file: Option<PathBuf>,
            pub oauth2: Option<serde_yaml::Value>,
            pub tls_config: Option<TlsConfig>,
            pub proxy_url: Option<String>,
            pub no_proxy: Option<String>,
            #[serde(default)]
            pub proxy_from_environment: bool,
            #[serde(default)]
            pub proxy_connect_header: BTreeMap<String, Vec<String>>,
            pub follow_redirects: Option<bool>,
            pub enable_http2: Option<bool>,
            #[serde(default)]
            pub http_headers: BTreeMap<String, HeaderValues>,
        }

        impl $name {
            pub fn http_client(&self) -> HttpClient {
                HttpClient {
                    basic_auth: self.basic_auth.clone(),
                    authorization: self.authorization.clone(),
                    bearer_token: self.bearer_token.clone(),
                    bearer_token_file: self.bearer_token_file.clone(),
                    tls_config: self.tls_config.clone(),
                    proxy_url: self.proxy_url.clone(),
                    no_proxy: self.no_proxy.clone(),
                    proxy_from_environment: self.proxy_from_environment,
                    proxy_connect_header: self.proxy_connect_header.clone(),
                    follow_redirects: self.follow_redirects,
                    enable_http2: self.enable_http2,
                    http_headers: self.http_headers.clone(),
                    oauth2: self.oauth2.is_some(),
                }
            }
        }
    };
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    pub scrape_interval: Option<Dur>,
    pub scrape_timeout: Option<Dur>,
    /// Accepted and ignored (agent mode evaluates no rules).
    pub evaluation_interval: Option<Dur>,
    pub rule_query_offset: Option<Dur>,
    pub query_log_file: Option<String>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    pub scrape_protocols: Option<Vec<String>>,
    pub body_size_limit: Option<Size>,
    pub sample_limit: Option<u64>,
    pub label_limit: Option<u64>,
    pub label_name_length_limit: Option<u64>,
    pub label_value_length_limit: Option<u64>,
    pub target_limit: Option<u64>,
    pub keep_dropped_targets: Option<u64>,
    pub metric_name_validation_scheme: Option<String>,
    pub metric_name_escaping_scheme: Option<String>,
    pub scrape_native_histograms: Option<bool>,
    pub convert_classic_histograms_to_nhcb: Option<bool>,
    pub always_scrape_classic_histograms: Option<bool>,
    pub extra_scrape_metrics: Option<bool>,
    pub scrape_failure_log_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    pub refresh_interval: Option<Dur>,
}

with_http_client! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HttpSdConfig {
        pub url: String,
        pub refresh_interval: Option<Dur>,
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    #[serde(default)]
    pub own_namespace: bool,
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub role: String,
    pub label: Option<String>,
    pub field: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttachMetadata {
    #[serde(default)]
    pub node: bool,
    #[serde(default)]
    pub namespace: bool,
    #[serde(default)]
    pub deployment: bool,
    #[serde(default)]
    pub job: bool,
    #[serde(default)]
    pub cronjob: bool,
}

with_http_client! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct KubernetesSdConfig {
        pub role: String,
        pub api_server: Option<String>,
        pub kubeconfig_file: Option<PathBuf>,
        #[serde(default)]
        pub namespaces: Namespaces,
        #[serde(default)]
        pub selectors: Vec<Selector>,
        #[serde(default)]
        pub attach_metadata: AttachMetadata,
    }
}

with_http_client! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ScrapeConfig {
        pub job_name: String,
        pub scrape_interval: Option<Dur>,
        pub scrape_timeout: Option<Dur>,
        pub scrape_protocols: Option<Vec<String>>,
        pub fallback_scrape_protocol: Option<String>,
        pub metrics_path: Option<String>,
        pub scheme: Option<String>,
        #[serde(default)]
        pub params: BTreeMap<String, Vec<String>>,
        pub honor_labels: Option<bool>,
        pub honor_timestamps: Option<bool>,
        pub track_timestamps_staleness: Option<bool>,
        pub enable_compression: Option<bool>,
        pub body_size_limit: Option<Size>,
        pub sample_limit: Option<u64>,
        pub label_limit: Option<u64>,
        pub label_name_length_limit: Option<u64>,
        pub label_value_length_limit: Option<u64>,
        pub target_limit: Option<u64>,
        pub keep_dropped_targets: Option<u64>,
        pub metric_name_validation_scheme: Option<String>,
        pub metric_name_escaping_scheme: Option<String>,
        pub native_histogram_bucket_limit: Option<u64>,
        pub native_histogram_min_bucket_factor: Option<f64>,
        pub scrape_native_histograms: Option<bool>,
        pub convert_classic_histograms_to_nhcb: Option<bool>,
        pub always_scrape_classic_histograms: Option<bool>,
        pub extra_scrape_metrics: Option<bool>,
        pub scrape_failure_log_file: Option<String>,
        #[serde(default)]
        pub relabel_configs: Vec<RuleSpec>,
        #[serde(default)]
        pub metric_relabel_configs: Vec<RuleSpec>,
        #[serde(default)]
        pub static_configs: Vec<StaticConfig>,
        #[serde(default)]
        pub file_sd_configs: Vec<FileSdConfig>,
        #[serde(default)]
        pub kubernetes_sd_configs: Vec<KubernetesSdConfig>,
        #[serde(default)]
        pub http_sd_configs: Vec<HttpSdConfig>,
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub capacity: Option<u64>,
    pub max_shards: Option<u64>,
    pub min_shards: Option<u64>,
    pub max_samples_per_send: Option<u64>,
    pub batch_send_deadline: Option<Dur>,
    pub min_backoff: Option<Dur>,
    pub max_backoff: Option<Dur>,
    /// Ferry defaults this to true (Prometheus: false).
    pub retry_on_http_429: Option<bool>,
    pub sample_age_limit: Option<Dur>,
    /// Ferry extension: the longest `Retry-After` honoured.
    pub max_retry_after: Option<Dur>,
    /// Ferry extension: egress limit in bytes per second (0 = none).
    pub max_bytes_per_second: Option<Size>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    pub send: Option<bool>,
    pub send_interval: Option<Dur>,
    pub max_samples_per_send: Option<u64>,
}

with_http_client! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RemoteWriteConfig {
        pub url: String,
        pub remote_timeout: Option<Dur>,
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        #[serde(default)]
        pub write_relabel_configs: Vec<RuleSpec>,
        pub name: Option<String>,
        pub send_exemplars: Option<bool>,
        pub send_native_histograms: Option<bool>,
        pub round_robin_dns: Option<bool>,
        pub protobuf_message: Option<String>,
        #[serde(default)]
        pub queue_config: QueueConfig,
        #[serde(default)]
        pub metadata_config: MetadataConfig,
        pub failed_request_logging: Option<bool>,
        /// Ferry extension: on 415 (or RW2 2xx without Written headers) resend as RW1.
        pub fallback_to_rw1: Option<bool>,
        pub sigv4: Option<serde_yaml::Value>,
        pub azuread: Option<serde_yaml::Value>,
        pub google_iam: Option<serde_yaml::Value>,
    }
}

/// Ferry's WAL settings (a top-level `wal:` section).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    pub sync_interval: Option<Dur>,
    pub max_size: Option<Size>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub global: GlobalConfig,
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
    #[serde(default)]
    pub scrape_config_files: Vec<String>,
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
    pub wal: Option<WalConfig>,
    /// Rejected in agent mode, with a message.
    pub rule_files: Option<serde_yaml::Value>,
    pub alerting: Option<serde_yaml::Value>,
    pub remote_read: Option<serde_yaml::Value>,
    /// Accepted and ignored, as Prometheus' agent mode does.
    pub storage: Option<serde_yaml::Value>,
    pub tracing: Option<serde_yaml::Value>,
    pub otlp: Option<serde_yaml::Value>,
    pub runtime: Option<serde_yaml::Value>,
}

/// A file listed in `scrape_config_files`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfigFile {
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
}
