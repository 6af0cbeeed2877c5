//! `file_sd_configs`: JSON or YAML files (by extension) holding `[{targets, labels}]`,
//! re-read when a file appears, changes or disappears (polled every second) and at every
//! `refresh_interval`. A file that fails to parse keeps its previous groups, and the error is
//! logged with the file's name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::{RawGroup, send_if_changed, to_groups};
use crate::config::{FileSdConfig, glob_files};
use crate::scrape::manager::Update;
use crate::scrape::target::TargetGroup;

/// Parses one file's groups; `__meta_filepath` is added to each group's labels.
pub fn read_groups(path: &Path) -> Result<Vec<TargetGroup>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let groups: Vec<RawGroup> = if ext == "json" {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    Ok(to_groups(groups, "__meta_filepath", &path.display().to_string()))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

pub async fn run(
    job: String,
    provider: String,
    cfg: FileSdConfig,
    base: PathBuf,
    tx: mpsc::Sender<Update>,
    mut stop: watch::Receiver<bool>,
) {
    let refresh = cfg.refresh_interval.map_or(Duration::from_secs(300), |d| d.0);
    let mut seen: HashMap<PathBuf, (Option<SystemTime>, Vec<TargetGroup>)> = HashMap::new();
    let mut last_sent: Option<Vec<TargetGroup>> = None;
    let mut last_full = tokio::time::Instant::now();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let full = last_full.elapsed() >= refresh;
        if full {
            last_full = tokio::time::Instant::now();
        }
        let mut files: Vec<PathBuf> = Vec::new();
        for pattern in &cfg.files {
            match glob_files(&base, pattern) {
                Ok(f) => files.extend(f),
                Err(e) => tracing::error!(job, pattern, error = %e, "file_sd: cannot list files"),
            }
        }
        seen.retain(|p, _| files.contains(p));
        for f in &files {
            let m = mtime(f);
            let changed = seen.get(f).is_none_or(|(old, _)| *old != m);
            if !(changed || full) {
                continue;
            }
            match read_groups(f) {
                Ok(groups) => {
                    seen.insert(f.clone(), (m, groups));
                }
                Err(e) => {
                    tracing::error!(job, error = %e, "file_sd: cannot read file; keeping its previous targets, fix the file");
                    // Remember the mtime so a broken file is not re-read every second.
                    let prev = seen.remove(f).map(|(_, g)| g).unwrap_or_default();
                    seen.insert(f.clone(), (m, prev));
                }
            }
        }
        let mut all: Vec<TargetGroup> = Vec::new();
        let mut paths: Vec<&PathBuf> = seen.keys().collect();
        paths.sort();
        for p in paths {
            all.extend(seen[p].1.iter().cloned());
        }
        if !send_if_changed(&tx, &job, &provider, all, &mut last_sent).await {
            return;
        }
        tokio::select! {
            _ = poll.tick() => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_files() {
        let dir = std::env::temp_dir().join(format!("ferry-filesd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = dir.join("a.json");
        std::fs::write(&j, r#"[{"targets": ["h:1", "h:2"], "labels": {"env": "p"}}]"#).unwrap();
        let g = read_groups(&j).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].targets.len(), 2);
        assert_eq!(g[0].labels["env"], "p");
        assert_eq!(g[0].labels["__meta_filepath"], j.display().to_string());
        let y = dir.join("b.yml");
        std::fs::write(&y, "- targets: [x:1]\n").unwrap();
        assert_eq!(read_groups(&y).unwrap()[0].targets[0]["__address__"], "x:1");
        std::fs::write(&y, "- targetz: [x:1]\n").unwrap();
        assert!(read_groups(&y).unwrap_err().contains("targetz"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
