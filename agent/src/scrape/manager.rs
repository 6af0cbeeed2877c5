//! The scrape manager: turns discovery updates into targets per job (dedupe by identity,
//! `target_limit`), starts and stops one loop per target, and applies config reloads
//! (jobs whose configuration did not change keep their loops, caches and staleness state).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::mpsc;

use super::batch::ScrapeBatch;
use super::fetch::Fetcher;
use super::scrape_loop::{self, LoopHandle, Stop};
use super::target::{Outcome, TargetGroup, populate};
use crate::config::{Config, Job};
use ferry_protocol::LabelSet;

/// A discovery provider's full, current set of groups for one job.
#[derive(Debug, Clone)]
pub struct Update {
    pub job: String,
    /// Which provider of the job (e.g. `static/0`, `file/1`).
    pub provider: String,
    pub groups: Vec<TargetGroup>,
}

/// A job's runtime state.
#[derive(Debug)]
struct JobState {
    job: Arc<Job>,
    fetcher: Arc<Fetcher>,
    /// provider → its groups.
    groups: BTreeMap<String, Vec<TargetGroup>>,
    loops: HashMap<u64, LoopHandle>,
    /// Dropped targets as (provider, group, target) positions in `groups`: their discovered
    /// labels are rebuilt when the targets API asks, rather than held (in a large cluster
    /// most discovered targets are dropped, and holding their labels cost ~13 KB each).
    dropped: Vec<(u32, u32, u32)>,
    target_error: scrape_loop::Forced,
}

/// Everything the targets API shows.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub job: String,
    pub target: super::target::Target,
    pub status: scrape_loop::Status,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
}

/// A snapshot for the API and self-metrics.
#[derive(Debug, Clone)]
pub struct View {
    pub active: Vec<TargetView>,
    /// (job, discovered labels); empty unless asked for.
    pub dropped: Vec<(String, LabelSet)>,
    /// (job, number of dropped targets kept).
    pub dropped_counts: Vec<(String, usize)>,
    /// (job, error)
    pub target_limit_errors: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Manager {
    jobs: BTreeMap<String, JobState>,
    ids: Arc<AtomicU64>,
    out: mpsc::Sender<ScrapeBatch>,
    offset_seed: u64,
}

impl Manager {
    pub fn new(out: mpsc::Sender<ScrapeBatch>, ids: Arc<AtomicU64>, offset_seed: u64) -> Manager {
        Manager { jobs: BTreeMap::new(), ids, out, offset_seed }
    }

    /// Applies a (re)loaded config. Unchanged jobs keep everything; changed or removed jobs
    /// stop their loops with end-of-run staleness; new and changed jobs start empty and fill
    /// as discovery reports.
    pub fn apply_config(&mut self, cfg: &Config) -> Result<(), String> {
        let base = cfg.file.parent().unwrap_or(Path::new(".")).to_owned();
        let mut next = BTreeMap::new();
        for job in &cfg.jobs {
            match self.jobs.remove(&job.name) {
                Some(st) if st.job.fingerprint == job.fingerprint => {
                    next.insert(job.name.clone(), st);
                }
                old => {
                    if let Some(old) = old {
                        for l in old.loops.values() {
                            l.stop(Stop::Removed);
                        }
                    }
                    let fetcher = Arc::new(
                        Fetcher::new(&job.http, &base).map_err(|e| format!("job {:?}: {e}", job.name))?,
                    );
                    next.insert(
                        job.name.clone(),
                        JobState {
                            job: Arc::new(job.clone()),
                            fetcher,
                            groups: BTreeMap::new(),
                            loops: HashMap::new(),
                            dropped: Vec::new(),
                            target_error: Default::default(),
                        },
                    );
                }
            }
        }
        for (_, gone) in std::mem::replace(&mut self.jobs, next) {
            for l in gone.loops.values() {
                l.stop(Stop::Removed);
            }
        }
        Ok(())
    }

    /// Replaces one provider's groups for a job and re-syncs that job's targets.
    pub fn update(&mut self, u: Update) {
        let Some(st) = self.jobs.get_mut(&u.job) else {
            return;
        };
        st.groups.insert(u.provider, u.groups);
        Self::sync(st, &self.ids, &self.out, self.offset_seed);
    }

    fn sync(st: &mut JobState, ids: &Arc<AtomicU64>, out: &mpsc::Sender<ScrapeBatch>, seed: u64) {
        let job = &st.job;
        let mut wanted: HashMap<u64, super::target::Target> = HashMap::new();
        st.dropped.clear();
        let positions = st.groups.values().enumerate().flat_map(|(p, gs)| {
            gs.iter().enumerate().flat_map(move |(gi, g)| {
                g.targets.iter().enumerate().map(move |(ti, t)| ((p as u32, gi as u32, ti as u32), g, t))
            })
        });
        for (pos, g, t) in positions {
            match populate(job, t, &g.labels) {
                Outcome::Active(t) => {
                    wanted.entry(t.hash).or_insert(t);
                }
                Outcome::Dropped(_) => {
                    if job.keep_dropped_targets == 0 || (st.dropped.len() as u64) < job.keep_dropped_targets {
                        st.dropped.push(pos);
                    }
                }
                Outcome::Failed(d, e) => {
                    tracing::warn!(job = %job.name, labels = %d, error = %e, "creating target failed; skipping it");
                }
            }
        }
        // target_limit: every target gets a forced error; the loops keep ticking and report
        // it (no HTTP request is made), so this clears by itself once the count drops.
        *st.target_error.lock().expect("forced lock") =
            (job.target_limit > 0 && wanted.len() as u64 > job.target_limit).then(|| {
                format!(
                    "target_limit exceeded (number of targets: {}, limit: {})",
                    wanted.len(),
                    job.target_limit
                )
            });
        let gone: Vec<u64> = st.loops.keys().filter(|h| !wanted.contains_key(h)).copied().collect();
        for h in gone {
            if let Some(l) = st.loops.remove(&h) {
                l.stop(Stop::Removed);
            }
        }
        for (h, t) in wanted {
            st.loops.entry(h).or_insert_with(|| {
                scrape_loop::spawn(
                    t,
                    job.clone(),
                    st.fetcher.clone(),
                    ids.clone(),
                    seed,
                    out.clone(),
                    st.target_error.clone(),
                )
            });
        }
    }

    /// Stops every loop without end-of-run markers and waits for them.
    pub async fn shutdown(&mut self) {
        let mut joins = Vec::new();
        for st in self.jobs.values_mut() {
            for (_, l) in st.loops.drain() {
                l.stop(Stop::Shutdown);
                joins.push(l.join);
            }
        }
        for j in joins {
            let _ = j.await;
        }
    }

    /// Active targets with their status, dropped targets' discovered labels (only with
    /// `with_dropped`: rebuilding them costs a relabeling each), and jobs over their
    /// target_limit.
    pub fn view(&self, with_dropped: bool) -> View {
        let mut active = Vec::new();
        let mut dropped = Vec::new();
        let mut errors = Vec::new();
        let mut dropped_counts = Vec::new();
        for (name, st) in &self.jobs {
            dropped_counts.push((name.clone(), st.dropped.len()));
            for l in st.loops.values() {
                active.push(TargetView {
                    job: name.clone(),
                    target: l.target.clone(),
                    status: l.status.lock().expect("status lock").clone(),
                    interval: l.target.interval,
                    timeout: l.target.timeout,
                });
            }
            if with_dropped {
                for &(p, gi, ti) in &st.dropped {
                    let g = st.groups.values().nth(p as usize).and_then(|gs| gs.get(gi as usize));
                    let Some((g, t)) = g.and_then(|g| Some((g, g.targets.get(ti as usize)?))) else {
                        continue;
                    };
                    if let Outcome::Dropped(d) = populate(&st.job, t, &g.labels) {
                        dropped.push((name.clone(), d));
                    }
                }
            }
            if let Some(e) = st.target_error.lock().expect("forced lock").clone() {
                errors.push((name.clone(), e));
            }
        }
        active.sort_by(|a, b| (&a.job, &a.target.url).cmp(&(&b.job, &b.target.url)));
        View { active, dropped, dropped_counts, target_limit_errors: errors }
    }

    /// Number of running loops.
    pub fn target_count(&self) -> usize {
        self.jobs.values().map(|s| s.loops.len()).sum()
    }
}
