//! The receiver's YAML configuration: retention, per-tenant limits, enforced labels, auth and
//! TLS. Unknown keys are errors, and every error names the file, line and column.
//!
//! ```yaml
//! retention: 15d
//! default_tenant: anonymous
//! limits:                      # defaults for every tenant; 0 = unlimited
//!   ingestion_rate: 100000     # samples per second
//!   ingestion_burst: 200000
//!   max_series: 1000000
//!   max_labels_per_series: 30
//!   max_label_name_length: 1024
//!   max_label_value_length: 2048
//! tenants:
//!   team-a:
//!     limits: { max_series: 5000 }
//!     enforced_labels: { cluster: eu1 }
//! auth:                        # when present, every write and read needs credentials
//!   - { bearer_token: s3cret, tenant: team-a }
//!   - { basic_auth: { username: edge, password: pw }, tenant: team-b }
//! tls: { cert_file: server.crt, key_file: server.key }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::selector::parse_duration;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}:{column}: {msg}")]
    Invalid { file: String, line: usize, column: usize, msg: String },
    #[error("{file}: {msg}")]
    Semantic { file: String, msg: String },
}

/// A duration written the Prometheus way (`15d`, `90s`), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub i64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Millis).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Samples (plus histograms) per second; 0 = unlimited.
    pub ingestion_rate: f64,
    /// Bucket size of the rate limit; defaults to one second of `ingestion_rate`.
    pub ingestion_burst: f64,
    pub max_series: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
}

/// Per-tenant overrides: any limit given replaces the default one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitOverrides {
    pub ingestion_rate: Option<f64>,
    pub ingestion_burst: Option<f64>,
    pub max_series: Option<usize>,
    pub max_labels_per_series: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    pub limits: LimitOverrides,
    /// Labels every series of the tenant carries: added when absent, and a series that brings
    /// a different value is rejected.
    pub enforced_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuth>,
    pub tenant: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub retention: Millis,
    pub default_tenant: String,
    /// Largest accepted request body, compressed and decompressed, in bytes.
    pub max_request_bytes: usize,
    /// How far in the future a sample may be (Prometheus: 10m).
    pub max_future: Millis,
    pub limits: Limits,
    pub tenants: BTreeMap<String, TenantConfig>,
    pub auth: Vec<Credential>,
    pub tls: Option<TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention: Millis(15 * 86_400_000),
            default_tenant: "anonymous".into(),
            max_request_bytes: 32 << 20,
            max_future: Millis(10 * 60_000),
            limits: Limits::default(),
            tenants: BTreeMap::new(),
            auth: Vec::new(),
            tls: None,
        }
    }
}

/// A tenant name: what `X-Scope-OrgID` may carry. Restricted so it is safe in keys and logs.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 150
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!*'()".contains(&b))
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                ConfigError::Invalid { file: file.to_owned(), line, column, msg: e.to_string() }
            })?
        };
        let semantic = |msg: String| ConfigError::Semantic { file: file.to_owned(), msg };
        if !valid_tenant(&cfg.default_tenant) {
            return Err(semantic(format!(
                "default_tenant {:?} is not a valid tenant name",
                cfg.default_tenant
            )));
        }
        for name in cfg.tenants.keys() {
            if !valid_tenant(name) {
                return Err(semantic(format!("tenants: {name:?} is not a valid tenant name")));
            }
        }
        for (i, c) in cfg.auth.iter().enumerate() {
            let n = [c.bearer_token.is_some(), c.bearer_token_file.is_some(), c.basic_auth.is_some()]
                .iter()
                .filter(|&&b| b)
                .count();
            if n != 1 {
                return Err(semantic(format!(
                    "auth[{i}]: give exactly one of bearer_token, bearer_token_file, basic_auth"
                )));
            }
            if !valid_tenant(&c.tenant) {
                return Err(semantic(format!("auth[{i}].tenant: {:?} is not a valid tenant name", c.tenant)));
            }
        }
        if cfg.retention.0 <= 0 {
            return Err(semantic("retention must be positive".into()));
        }
        Ok(cfg)
    }

    /// The effective limits of `tenant`.
    pub fn limits_for(&self, tenant: &str) -> Limits {
        let mut l = self.limits;
        if let Some(t) = self.tenants.get(tenant) {
            let o = &t.limits;
            l.ingestion_rate = o.ingestion_rate.unwrap_or(l.ingestion_rate);
            l.ingestion_burst = o.ingestion_burst.unwrap_or(l.ingestion_burst);
            l.max_series = o.max_series.unwrap_or(l.max_series);
            l.max_labels_per_series = o.max_labels_per_series.unwrap_or(l.max_labels_per_series);
            l.max_label_name_length = o.max_label_name_length.unwrap_or(l.max_label_name_length);
            l.max_label_value_length = o.max_label_value_length.unwrap_or(l.max_label_value_length);
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaged_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for f in
            ["packaging/systemd/receiver.yaml", "packaging/kubernetes/overlays/receiver/receiver-config.yaml"]
        {
            let c = Config::load(&root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(c.limits.max_series, 2_000_000, "{f}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse(
            "retention: 1d\nlimits: {max_series: 10}\ntenants:\n  a:\n    limits: {max_series: 3}\n",
            "r.yaml",
        )
        .unwrap();
        assert_eq!(c.retention, Millis(86_400_000));
        assert_eq!(c.limits_for("a").max_series, 3);
        assert_eq!(c.limits_for("b").max_series, 10);
        assert_eq!(Config::parse("", "r.yaml").unwrap().default_tenant, "anonymous");
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e =
            Config::parse("retention: 1d\nlimits:\n  max_seriess: 10\n", "r.yaml").unwrap_err().to_string();
        assert!(e.starts_with("r.yaml:3:"), "{e}");
        assert!(e.contains("max_seriess"), "{e}");
        let e = Config::parse("retention: 5x\n", "r.yaml").unwrap_err().to_string();
        assert!(e.starts_with("r.yaml:1:"), "{e}");
        let e = Config::parse("auth:\n  - {tenant: a}\n", "r.yaml").unwrap_err().to_string();
        assert!(e.contains("auth[0]"), "{e}");
    }
}
