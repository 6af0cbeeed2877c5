//! Discovery providers: each sends full replacement sets of target groups for its job to the
//! scrape manager: `static_configs`, `file_sd_configs`, `http_sd_configs` and
//! `kubernetes_sd_configs`.

pub mod file;
pub mod http;
pub mod kubernetes;

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::{mpsc, watch};

use crate::config::{Job, StaticConfig};
use crate::scrape::manager::Update;
use crate::scrape::target::TargetGroup;

/// Sends `groups` as the provider's new set unless it equals the last one sent (a refresh
/// that changed nothing costs the manager nothing). False once the manager is gone.
async fn send_if_changed(
    tx: &mpsc::Sender<Update>,
    job: &str,
    provider: &str,
    groups: Vec<TargetGroup>,
    last_sent: &mut Option<Vec<TargetGroup>>,
) -> bool {
    if last_sent.as_ref() == Some(&groups) {
        return true;
    }
    let update = Update { job: job.to_owned(), provider: provider.to_owned(), groups: groups.clone() };
    if tx.send(update).await.is_err() {
        return false;
    }
    *last_sent = Some(groups);
    true
}

/// One `{targets, labels}` entry of a file or HTTP SD answer (Prometheus' format).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Turns SD entries into target groups: sources `"{origin}:{index}"`, and the meta label
/// (`__meta_filepath`, `__meta_url`) naming where they came from.
pub fn to_groups(raw: Vec<RawGroup>, meta: &str, origin: &str) -> Vec<TargetGroup> {
    raw.into_iter()
        .enumerate()
        .map(|(i, g)| {
            let mut labels = g.labels;
            labels.insert(meta.to_owned(), origin.to_owned());
            TargetGroup {
                source: format!("{origin}:{i}"),
                targets: g
                    .targets
                    .into_iter()
                    .map(|t| BTreeMap::from([("__address__".to_owned(), t)]))
                    .collect(),
                labels,
            }
        })
        .collect()
}

/// Groups of a job's `static_configs`; source = the list index.
pub fn static_groups(configs: &[StaticConfig]) -> Vec<TargetGroup> {
    configs
        .iter()
        .enumerate()
        .map(|(i, sc)| TargetGroup {
            source: i.to_string(),
            targets: sc
                .targets
                .iter()
                .map(|t| BTreeMap::from([("__address__".to_owned(), t.clone())]))
                .collect(),
            labels: sc.labels.clone(),
        })
        .collect()
}

/// Starts every provider of `job`. They stop when `stop` changes.
pub fn start(job: &Job, base: &Path, tx: mpsc::Sender<Update>, stop: watch::Receiver<bool>) {
    if !job.static_configs.is_empty() {
        let u = Update {
            job: job.name.clone(),
            provider: "static".into(),
            groups: static_groups(&job.static_configs),
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(u).await;
        });
    }
    for (i, f) in job.file_sd.iter().enumerate() {
        tokio::spawn(file::run(
            job.name.clone(),
            format!("file/{i}"),
            f.clone(),
            base.to_owned(),
            tx.clone(),
            stop.clone(),
        ));
    }
    for (i, k) in job.kubernetes_sd.iter().enumerate() {
        tokio::spawn(kubernetes::run(
            job.name.clone(),
            format!("kubernetes/{i}"),
            k.clone(),
            base.to_owned(),
            tx.clone(),
            stop.clone(),
        ));
    }
    for (i, h) in job.http_sd.iter().enumerate() {
        tokio::spawn(http::run(
            job.name.clone(),
            format!("http/{i}"),
            h.clone(),
            base.to_owned(),
            tx.clone(),
            stop.clone(),
        ));
    }
}
