//! `http_sd_configs`: GET the URL every `refresh_interval` (default 60s); the body is JSON
//! `[{"targets": [...], "labels": {...}}]`. A failed or malformed answer keeps the previous
//! targets (logged); `__meta_url` carries the URL, as in Prometheus.

use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{RawGroup, send_if_changed, to_groups};
use crate::config::HttpSdConfig;
use crate::scrape::fetch::{Fetcher, error_chain};
use crate::scrape::manager::Update;
use crate::scrape::target::TargetGroup;

/// Parses an HTTP SD answer.
pub fn parse(body: &[u8], url: &str) -> Result<Vec<TargetGroup>, String> {
    let groups: Vec<RawGroup> =
        serde_json::from_slice(body).map_err(|e| format!("{url}: invalid HTTP SD response: {e}"))?;
    Ok(to_groups(groups, "__meta_url", url))
}

pub async fn run(
    job: String,
    provider: String,
    cfg: HttpSdConfig,
    base: std::path::PathBuf,
    tx: mpsc::Sender<Update>,
    mut stop: watch::Receiver<bool>,
) {
    let fetcher = match Fetcher::new(&cfg.http_client(), Path::new(&base)) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(job, error = %e, "http_sd: cannot build the HTTP client; no targets from it");
            return;
        }
    };
    let every = cfg.refresh_interval.map_or(Duration::from_secs(60), |d| d.0);
    let mut tick = tokio::time::interval(every);
    let mut last: Option<Vec<TargetGroup>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let req = match fetcher
            .prepare(fetcher.client().get(&cfg.url).timeout(every.max(Duration::from_secs(5))))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(job, error = %e, "http_sd: credentials");
                continue;
            }
        };
        let result = match req.send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) => parse(&b, &cfg.url),
                Err(e) => Err(format!("{}: reading the body: {}", cfg.url, error_chain(&e))),
            },
            Ok(r) => Err(format!("{}: HTTP {}", cfg.url, r.status())),
            Err(e) => Err(format!("{}: {}", cfg.url, error_chain(&e))),
        };
        match result {
            Ok(groups) => {
                if !send_if_changed(&tx, &job, &provider, groups, &mut last).await {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(job, error = %e, "http_sd: refresh failed; keeping the previous targets")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_prometheus_http_sd_format() {
        let g = super::parse(
            br#"[{"targets": ["a:1", "b:2"], "labels": {"env": "x"}}, {"targets": []}]"#,
            "http://sd/",
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].targets[1]["__address__"], "b:2");
        assert_eq!(g[0].labels["__meta_url"], "http://sd/");
        assert!(super::parse(b"{}", "http://sd/").is_err());
    }
}
