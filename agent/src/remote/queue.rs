//! One queue per remote-write endpoint.
//!
//! The dispatcher reads WAL records from the endpoint's cursor, turns each into request data
//! (external labels, `write_relabel_configs`, cached per series) and packs *whole scrapes*
//! into requests of up to `max_samples_per_send` samples (`packing`: held per target until
//! due, a target's scrapes merged by series); a larger scrape is split into consecutive
//! parts. Requests go to lanes by target, so every scrape of a target travels on one lane
//! and per-series order holds; a lane retries a request before it sends anything
//! after it. The cursor only moves past records all of whose parts are done (sent, or dropped
//! for a reason that is counted), so a crash re-sends at most what was in flight.
//!
//! Lanes scale between `min_shards` and `max_shards`: up when the dispatcher spent a whole
//! period behind the WAL, down when it kept up; only between requests, when nothing lanes
//! were given is in flight (held scrapes are no lane's yet), so order holds across the
//! change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_protocol::{LabelSet, WriteProto};
use tokio::sync::{mpsc, watch};

use super::client::{self, Outcome};
use super::encode::{
    FamilyMeta, Payload, Sample, SeriesInfo, SeriesList, SeriesRef, family_candidates, is_created,
};
use super::id_runs::IdRuns;
use super::packing::{Job, MetadataEntry, Packing};
use crate::config::RemoteWrite;
use crate::labels::Builder;
use crate::relabel;
use crate::scrape::fetch::Fetcher;
use crate::scrape::scrape_loop::now_ms;
use crate::series_labels::SeriesLabels;
use crate::wal::{LabelTable, Pos, Wal};

/// Counters and gauges of one endpoint, exported as `ferry_remote_*{endpoint=…}`.
#[derive(Debug, Default)]
pub struct EndpointMetrics {
    pub samples_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub requests_sent: AtomicU64,
    pub retries: AtomicU64,
    pub dropped_http: AtomicU64,
    pub dropped_age: AtomicU64,
    pub dropped_relabel: AtomicU64,
    pub dropped_unresolved: AtomicU64,
    pub dropped_protocol: AtomicU64,
    pub lanes: AtomicU64,
    /// Samples read from the WAL and held for more of their target's scrapes.
    pub held_samples: AtomicU64,
    pub using_rw1_fallback: AtomicBool,
    /// Timestamp (ms) of the newest scrape whose record is fully sent.
    pub last_sent_ts: AtomicI64,
    pub cursor_segment: AtomicU64,
    pub cursor_offset: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    cfg: RemoteWrite,
    /// The WAL's series table, where lists that name series by id find their labels.
    labels: LabelTable,
    fetcher: Fetcher,
    metrics: Arc<EndpointMetrics>,
    use_rw1: AtomicBool,
    done: mpsc::UnboundedSender<(Vec<Pos>, i64)>,
    /// Set when the flush deadline passed at shutdown: lanes stop retrying.
    hard_stop: watch::Receiver<bool>,
    rate: Mutex<(f64, Instant)>,
}

/// Jittered exponential backoff: a random point in the upper half of the current step.
fn jitter(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    let frac = 0.5 + (nanos % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}

async fn lane(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    // Reused across requests: raw protobuf, snappy state, the RW2 encoder's tables.
    let mut raw = Vec::new();
    let mut snappy = ferry_protocol::snappy::BlockEncoder::default();
    let mut rw2 = super::wire::Rw2Encoder::new();
    while let Some(mut job) = rx.recv().await {
        let cfg = &shared.cfg;
        let m = &shared.metrics;
        if let Some(limit) = cfg.sample_age_limit {
            let cutoff = now_ms() - limit.as_millis() as i64;
            let before = job.payload.samples();
            job.payload.samples.retain(|s| s.timestamp >= cutoff);
            m.dropped_age.fetch_add((before - job.payload.samples()) as u64, Relaxed);
        }
        let mut attempt = 0u32;
        let mut backoff = cfg.min_backoff;
        let mut failing_since: Option<Instant> = None;
        loop {
            if job.payload.is_empty() {
                break;
            }
            let proto = if cfg.proto == WriteProto::V1 || shared.use_rw1.load(Relaxed) {
                WriteProto::V1
            } else {
                WriteProto::V2
            };
            // The WAL's labels, read-locked for the encoding only (never across the send).
            {
                let wal = shared.labels.read();
                let left_out = match proto {
                    WriteProto::V1 => super::wire::rw1(&job.payload, cfg.send_exemplars, &wal, &mut raw),
                    WriteProto::V2 => rw2.encode(&job.payload, &wal, &mut raw),
                };
                if left_out > 0 {
                    // The WAL forgets the labels of unsent samples only when its size cap or a
                    // full disk drops their segments, and counts them as dropped then; they
                    // are not counted as sent.
                    job.payload.samples.retain(|s| s.series.labels(&wal).is_some());
                }
            }
            let body = snappy.encode(&raw);
            if cfg.max_bytes_per_second > 0 {
                let wait = {
                    let mut r = shared.rate.lock().expect("rate lock");
                    let rate = cfg.max_bytes_per_second as f64;
                    let now = Instant::now();
                    r.0 = (r.0 + now.duration_since(r.1).as_secs_f64() * rate).min(rate);
                    r.1 = now;
                    r.0 -= body.len() as f64;
                    (r.0 < 0.0).then(|| Duration::from_secs_f64(-r.0 / rate))
                };
                if let Some(w) = wait {
                    tokio::time::sleep(w).await;
                }
            }
            let len = body.len();
            let samples = job.payload.samples();
            match client::send(&shared.fetcher, cfg, proto, body, attempt, (samples, job.payload.exemplars()))
                .await
            {
                Outcome::Sent => {
                    m.samples_sent.fetch_add(samples as u64, Relaxed);
                    m.bytes_sent.fetch_add(len as u64, Relaxed);
                    m.requests_sent.fetch_add(1, Relaxed);
                    if let Some(since) = failing_since {
                        tracing::info!(endpoint = %cfg.name, retries = attempt, down_for = ?since.elapsed(), "remote write: endpoint accepts data again");
                    }
                    break;
                }
                Outcome::Drop { why } => {
                    m.dropped_http.fetch_add(samples as u64, Relaxed);
                    tracing::error!(endpoint = %cfg.name, samples, error = %why, "remote write: request rejected and dropped (not retryable); check the receiver's message and the data");
                    break;
                }
                Outcome::Mismatch { why } if proto == WriteProto::V2 && cfg.fallback_to_rw1 => {
                    shared.use_rw1.store(true, Relaxed);
                    m.using_rw1_fallback.store(true, Relaxed);
                    tracing::warn!(endpoint = %cfg.name, reason = %why, "remote write: receiver does not speak RW2; re-sending as RW1 and staying on RW1 (set protobuf_message: prometheus.WriteRequest to silence this)");
                }
                Outcome::Mismatch { why } => {
                    m.dropped_protocol.fetch_add(samples as u64, Relaxed);
                    tracing::error!(endpoint = %cfg.name, samples, error = %why, "remote write: protocol mismatch and fallback_to_rw1 is off; dropped");
                    break;
                }
                Outcome::Retry { why, after } => {
                    m.retries.fetch_add(1, Relaxed);
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(endpoint = %cfg.name, error = %why, "remote write: failed, retrying with backoff; data stays in the WAL meanwhile");
                    } else {
                        tracing::debug!(endpoint = %cfg.name, attempt, error = %why, "remote write: retry failed");
                    }
                    let sleep = after.unwrap_or_else(|| jitter(backoff));
                    backoff = (backoff * 2).min(cfg.max_backoff);
                    attempt += 1;
                    let mut stop = shared.hard_stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(sleep) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
        let _ = shared.done.send((job.records, job.newest_ts));
    }
}

/// The lane every scrape of `target` goes on, out of `lanes`: one per target, so its
/// scrapes stay in order.
fn lane_of(target: u64, lanes: usize) -> usize {
    (target % lanes as u64) as usize
}

/// Hands `job` to a lane, waiting while the lane is busy, but no longer than the flush
/// deadline once a stop was asked for (a lane stuck retrying a dead endpoint would otherwise
/// hold shutdown forever). `false`: not delivered; its records stay unacknowledged in the WAL.
async fn deliver(
    lane: &mpsc::Sender<Job>,
    job: Job,
    stop: &mut watch::Receiver<bool>,
    stopping: &mut Option<Instant>,
    deadline: Duration,
) -> bool {
    loop {
        let left = stopping.map(|s| deadline.saturating_sub(s.elapsed()));
        tokio::select! {
            permit = lane.reserve() => {
                return match permit {
                    Ok(p) => {
                        p.send(job);
                        true
                    }
                    Err(_) => false,
                };
            }
            _ = stop.changed(), if stopping.is_none() => {
                *stopping = Some(Instant::now());
            }
            _ = tokio::time::sleep(left.unwrap_or(Duration::MAX)), if left.is_some() => return false,
        }
    }
}

/// One target's series in the order its last record listed them, each as this endpoint sends
/// it (`None`: dropped by `write_relabel_configs`). A steady scrape lists the same series in
/// the same order, so a record is matched position by position, with no map probe per sample.
#[derive(Default)]
struct TargetSeries {
    /// Named by their ids (`SeriesList::ids`), which a record is matched against.
    infos: SeriesList,
    /// Whether `infos` hold an OpenMetrics `_created` series, whose values become start
    /// timestamps; asked once per record instead of kept per series.
    created: bool,
    /// The metadata generation `infos` were resolved at.
    generation: u64,
    used: Option<Instant>,
}

/// Series and family state of one endpoint.
#[derive(Default)]
struct Series {
    targets: hashbrown::HashMap<u64, TargetSeries>,
    families: hashbrown::HashMap<String, FamilyMeta>,
    /// Bumped whenever a family's metadata changes; targets re-resolve theirs lazily.
    generation: u64,
    /// The endpoint's external labels, interned once: lists of the WAL's labels add them as
    /// they are encoded, where a set of its own per series took ~100 bytes a series.
    external: Option<SeriesLabels>,
}

/// What resolving a record's samples dropped.
#[derive(Default)]
struct Dropped {
    relabel: u64,
    unresolved: u64,
}

fn family_metadata(
    families: &hashbrown::HashMap<String, FamilyMeta>,
    labels: &SeriesLabels,
) -> Option<FamilyMeta> {
    labels.metric_name().and_then(|n| family_candidates(n).find_map(|f| families.get(f).cloned()))
}

impl Series {
    fn learn_metadata(&mut self, md: &crate::scrape::batch::BatchMetadata) {
        let changed = self
            .families
            .get(md.metric_family.as_str())
            .is_none_or(|m| m.0 != md.kind || m.1 != md.help || m.2 != md.unit);
        if changed {
            self.families
                .insert(md.metric_family.clone(), Arc::new((md.kind, md.help.clone(), md.unit.clone())));
            self.generation += 1;
        }
    }

    /// The samples of one record as request samples, with the series ids of those kept when
    /// `ids` is given (for attaching exemplars).
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &mut self,
        target: u64,
        samples: &[crate::scrape::batch::BatchSample],
        reader: &crate::wal::Reader,
        external: &LabelSet,
        write_relabel: &[relabel::Rule],
        dropped: &mut Dropped,
        mut ids: Option<&mut Vec<u64>>,
    ) -> Vec<Sample> {
        let Series { targets, families, generation, external: external_set } = self;
        let t = targets.entry(target).or_default();
        t.used = Some(Instant::now());
        let mut out = Vec::with_capacity(samples.len());
        let mut keep = |list: &SeriesList, i: usize, s: &crate::scrape::batch::BatchSample| {
            if let Some(series) = SeriesRef::at(list, i) {
                out.push(Sample::new(series, s.timestamp, s.value));
                if let Some(ids) = ids.as_mut() {
                    ids.push(s.series);
                }
            }
        };
        let steady = t.generation == *generation && t.infos.ids().matches(samples.iter().map(|s| s.series));
        if steady {
            for (i, s) in samples.iter().enumerate() {
                keep(&t.infos, i, s);
            }
            dropped.relabel += (samples.len() - out.len()) as u64;
            return out;
        }
        // The series set, its order or some metadata changed: rebuild this target's list,
        // reusing what is known and resolving only new series.
        let old: hashbrown::HashMap<u64, usize> =
            t.infos.ids().iter().enumerate().map(|(i, id)| (id, i)).collect();
        let stale_metadata = t.generation != *generation;
        let table = reader.table();
        let wal = table.read();
        // A WAL series' labels with the external ones, for a list that holds labels.
        let external_set = external_set.as_ref();
        let with_external = move |l: &SeriesLabels| match external_set {
            None => l.clone(),
            Some(e) => {
                let merged = l.keys_with(Some(e)).map(|k| k.label()).map(|l| (l.name, l.value.text()));
                SeriesLabels::from_set(
                    &LabelSet::from_pairs(merged).expect("a series' labels and external ones"),
                )
            }
        };
        // Whether the labels go out as the WAL has them, external labels aside (added as
        // they are encoded): then the list names series by id.
        let unchanged = write_relabel.is_empty();
        let mut new_ids = IdRuns::default();
        // Per series: its labels when the list must hold them (changed ones, or the labels
        // of a segment from before this process), else `None` (the WAL's), and metadata.
        let mut found: Vec<(Option<Option<SeriesLabels>>, Option<FamilyMeta>)> =
            Vec::with_capacity(samples.len());
        // The record's samples with their place in the new list; unresolved ones have none.
        let mut placed = Vec::with_capacity(samples.len());
        let mut unresolved = 0;
        for s in samples {
            let entry = match old.get(&s.series) {
                Some(&i) => {
                    // A handle of its own only when the WAL's is not the one sent.
                    let wal_s = t.infos.by_wal_id() || (unchanged && wal.get(s.series).is_some());
                    let own = (!wal_s).then(|| t.infos.labels(i, &wal).cloned());
                    let metadata = if stale_metadata {
                        t.infos.labels(i, &wal).and_then(|l| family_metadata(families, l))
                    } else {
                        t.infos.metadata(i).cloned()
                    };
                    (own, metadata)
                }
                // A series this endpoint has not seen: its labels come from the WAL.
                None if unchanged => {
                    if let Some(l) = wal.get(s.series) {
                        (None, family_metadata(families, l))
                    } else if let Some(l) = reader.recovered(s.series) {
                        let metadata = family_metadata(families, &l);
                        (Some(Some(with_external(&l))), metadata)
                    } else {
                        unresolved += 1;
                        continue;
                    }
                }
                None => {
                    let Some(raw) = wal.get(s.series).cloned().or_else(|| reader.recovered(s.series)) else {
                        unresolved += 1;
                        continue;
                    };
                    let mut b = Builder::from_set(&raw.to_label_set());
                    for l in external {
                        if b.get(&l.name).is_empty() {
                            b.set(&l.name, &l.value);
                        }
                    }
                    let labels =
                        relabel::process(write_relabel, &mut b).then(|| SeriesLabels::from_set(&b.labels()));
                    let metadata = labels.as_ref().and_then(|l| family_metadata(families, l));
                    (Some(labels), metadata)
                }
            };
            placed.push((found.len(), s));
            new_ids.push(s.series);
            found.push(entry);
        }
        new_ids.shrink_to_fit();
        let by_id = found.iter().all(|(own, _)| own.is_none());
        let infos = if by_id {
            t.created = new_ids.iter().any(|id| wal.get(id).is_some_and(is_created));
            SeriesList::by_id(new_ids, found.into_iter().map(|(_, m)| m), external_set.cloned())
        } else {
            // Some series need labels of their own: the list holds every series' handle.
            let infos: Vec<Option<SeriesInfo>> = found
                .into_iter()
                .zip(new_ids.iter())
                .map(|((own, metadata), id)| {
                    let labels = own.unwrap_or_else(|| wal.get(id).map(with_external));
                    labels.map(|l| SeriesInfo::new(l, metadata))
                })
                .collect();
            t.created = infos.iter().flatten().any(|i| is_created(&i.labels));
            SeriesList::owning(new_ids, infos)
        };
        drop(wal);
        t.infos = infos;
        for (i, s) in placed {
            keep(&t.infos, i, s);
        }
        t.generation = *generation;
        // Every sample is kept, dropped by relabeling, or unresolved.
        dropped.unresolved += unresolved as u64;
        dropped.relabel += (samples.len() - out.len() - unresolved) as u64;
        out
    }

    /// Whether the samples `resolve` last gave for `target` include `_created` series.
    fn has_created(&self, target: u64) -> bool {
        self.targets.get(&target).is_some_and(|t| t.created)
    }

    /// Forgets targets that sent nothing for `idle` (gone from discovery): they rebuild
    /// from the WAL if they come back.
    fn forget_idle(&mut self, idle: Duration) {
        self.targets.retain(|_, t| t.used.is_some_and(|u| u.elapsed() < idle));
    }
}

/// Runs one endpoint until `stop` says so, then flushes for at most `flush_deadline`.
pub async fn run(
    cfg: RemoteWrite,
    fetcher: Fetcher,
    wal: Arc<Wal>,
    external: LabelSet,
    metrics: Arc<EndpointMetrics>,
    mut stop: watch::Receiver<bool>,
    flush_deadline: Duration,
) {
    let name = cfg.name.clone();
    let start = wal.register(&name);
    let mut reader = match wal.reader(start) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(endpoint = %name, error = %e, "remote write: cannot read the WAL; this endpoint sends nothing");
            return;
        }
    };
    let mut end_rx = wal.subscribe();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (hard_tx, hard_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        use_rw1: AtomicBool::new(false),
        labels: wal.label_table(),
        cfg: cfg.clone(),
        fetcher,
        metrics: metrics.clone(),
        done: done_tx,
        hard_stop: hard_rx,
        rate: Mutex::new((cfg.max_bytes_per_second as f64, Instant::now())),
    });
    let max = cfg.max_samples_per_send.max(1) as usize;
    let mut lanes: Vec<mpsc::Sender<Job>> = Vec::new();
    let mut lane_tasks = Vec::new();
    let spawn_lanes =
        |n: u64, lanes: &mut Vec<mpsc::Sender<Job>>, tasks: &mut Vec<tokio::task::JoinHandle<()>>| {
            lanes.clear();
            for _ in 0..n {
                let (tx, rx) = mpsc::channel(2);
                lanes.push(tx);
                tasks.push(tokio::spawn(lane(shared.clone(), rx)));
            }
            metrics.lanes.store(n, Relaxed);
        };
    spawn_lanes(cfg.min_shards, &mut lanes, &mut lane_tasks);
    // Records not yet completely done: start → parts still in flight.
    let mut inflight: BTreeMap<Pos, usize> = BTreeMap::new();
    let mut dispatched = start;
    let mut acked = start;
    let mut floor = start;
    let mut last_ack_write = Instant::now();
    // Held scrapes, until due; the cap bounds what a backlog of many small targets holds.
    let mut pending = Packing::new(
        max,
        cfg.batch_send_deadline,
        (cfg.capacity as usize).max(max) * cfg.max_shards as usize,
    );
    let mut series = Series {
        external: (!external.is_empty()).then(|| SeriesLabels::from_set(&external)),
        ..Default::default()
    };
    let mut last_due_look = Instant::now();
    let mut last_sweep = Instant::now();
    let mut period = Instant::now();
    let mut kept_up = false;
    let mut stopping: Option<Instant> = None;

    'dispatch: loop {
        while let Ok((records, ts)) = done_rx.try_recv() {
            for r in records {
                if let Some(n) = inflight.get_mut(&r) {
                    *n -= 1;
                    if *n == 0 {
                        inflight.remove(&r);
                    }
                }
            }
            metrics.last_sent_ts.fetch_max(ts, Relaxed);
        }
        // Never below `floor`: what lies before it was dropped and cannot be re-sent.
        let cursor = inflight.keys().next().copied().unwrap_or(dispatched).max(floor);
        if cursor != acked && (last_ack_write.elapsed() >= Duration::from_secs(1) || inflight.is_empty()) {
            let w = wal.clone();
            let n = name.clone();
            if let Ok(Ok(())) = tokio::task::spawn_blocking(move || w.ack(&n, cursor)).await {
                acked = cursor;
                metrics.cursor_segment.store(cursor.seg, Relaxed);
                metrics.cursor_offset.store(cursor.off, Relaxed);
            }
            last_ack_write = Instant::now();
        }
        // The WAL dropped data under this endpoint (size cap, full disk): skip to where it
        // resumes at once, closing the deleted segment so its space is really freed.
        if let Some(c) = wal.cursor(&name)
            && c > dispatched
        {
            dispatched = c;
            floor = floor.max(c);
            if let Ok(r) = wal.reader(c) {
                reader = r;
            }
        }
        if let Some(since) = stopping {
            let caught_up = reader.pos() >= wal.end() && inflight.is_empty() && pending.is_empty();
            if caught_up || since.elapsed() >= flush_deadline {
                if !caught_up {
                    tracing::warn!(endpoint = %name, unsent_records = inflight.len(), "remote write: flush deadline reached at shutdown; the rest stays in the WAL and is sent after restart");
                }
                break;
            }
        }
        // Lane scaling, between requests only.
        // Held scrapes are not a lane's yet: only what lanes were given must be done.
        if period.elapsed() >= Duration::from_secs(10) && inflight.len() == pending.records() {
            let n = lanes.len() as u64;
            let want = if kept_up { (n / 2).max(cfg.min_shards) } else { (n * 2).min(cfg.max_shards) };
            if want != n {
                drop(std::mem::take(&mut lanes));
                spawn_lanes(want, &mut lanes, &mut lane_tasks);
                tracing::debug!(endpoint = %name, lanes = want, "remote write: lanes rescaled");
            }
            period = Instant::now();
            kept_up = false;
        }
        let end = *end_rx.borrow();
        let entry = match reader.next(end) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(endpoint = %name, error = %e, "remote write: reading the WAL failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(entry) = entry else {
            kept_up = true;
            // Caught up: send what is due, then wait for more data, completions or the next
            // deadline.
            let n = lanes.len();
            for (lane_no, job) in pending.take_due(stopping.is_some(), |t| lane_of(t, n)) {
                if !deliver(&lanes[lane_no], job, &mut stop, &mut stopping, flush_deadline).await {
                    break 'dispatch;
                }
            }
            metrics.held_samples.store(pending.samples() as u64, Relaxed);
            let wake = pending.next_due().map_or(Duration::from_secs(1), |d| d.min(Duration::from_secs(1)));
            tokio::select! {
                _ = end_rx.changed() => {}
                Some((records, ts)) = done_rx.recv() => {
                    for r in records {
                        if let Some(n) = inflight.get_mut(&r) {
                            *n -= 1;
                            if *n == 0 {
                                inflight.remove(&r);
                            }
                        }
                    }
                    metrics.last_sent_ts.fetch_max(ts, Relaxed);
                }
                _ = tokio::time::sleep(wake) => {}
                _ = stop.changed(), if stopping.is_none() => {
                    stopping = Some(Instant::now());
                }
            }
            continue;
        };
        if stopping.is_none() && *stop.borrow() {
            stopping = Some(Instant::now());
        }
        dispatched = entry.next;
        // Record → request data.
        for md in &entry.batch.metadata {
            series.learn_metadata(md);
        }
        let metadata: Vec<MetadataEntry> = entry
            .batch
            .metadata
            .iter()
            .map(|m| (m.metric_family.clone(), m.kind, m.help.clone(), m.unit.clone()))
            .collect();
        let mut dropped = Dropped::default();
        let mut ids = Vec::new();
        let want_ids = !entry.batch.exemplars.is_empty();
        let mut samples = series.resolve(
            entry.batch.target,
            &entry.batch.samples,
            &reader,
            &external,
            &cfg.write_relabel,
            &mut dropped,
            want_ids.then_some(&mut ids),
        );
        metrics.dropped_relabel.fetch_add(dropped.relabel, Relaxed);
        metrics.dropped_unresolved.fetch_add(dropped.unresolved, Relaxed);
        let created = series.has_created(entry.batch.target);
        if want_ids {
            // A scrape has one sample per series, so an exemplar belongs to the first (only)
            // sample of its series.
            let mut by_series: hashbrown::HashMap<u64, usize> = hashbrown::HashMap::new();
            for (i, &id) in ids.iter().enumerate() {
                by_series.entry(id).or_insert(i);
            }
            for e in &entry.batch.exemplars {
                if let Some(&i) = by_series.get(&e.series) {
                    samples[i].exemplars.get_or_insert_default().push((
                        e.labels.clone(),
                        e.value,
                        e.timestamp,
                    ));
                }
            }
        }
        if created {
            super::encode::apply_created(&mut samples, &reader.table().read());
        }
        // Pack: whole scrapes per request; a scrape bigger than a request is split into
        // consecutive parts on its lane, after whatever of its target is held.
        let target = entry.batch.target;
        let lane_no = lane_of(target, lanes.len());
        let newest_ts = entry.batch.timestamp;
        let n = samples.len();
        if n > max {
            if let Some(job) = pending.take(target)
                && !deliver(&lanes[lane_no], job, &mut stop, &mut stopping, flush_deadline).await
            {
                break 'dispatch;
            }
            let parts = n.div_ceil(max);
            inflight.insert(entry.at, parts);
            let mut metadata = Some(metadata);
            let mut rest = samples;
            while !rest.is_empty() {
                let tail = rest.split_off(max.min(rest.len()));
                let payload = Payload { samples: rest, metadata: metadata.take().unwrap_or_default() };
                let job = Job { payload, records: vec![entry.at], newest_ts };
                if !deliver(&lanes[lane_no], job, &mut stop, &mut stopping, flush_deadline).await {
                    break 'dispatch;
                }
                rest = tail;
            }
        } else {
            inflight.insert(entry.at, 1);
            let first = pending.add(target, samples, metadata, entry.at, newest_ts);
            let due = pending.is_due(target).then(|| pending.take(target)).flatten();
            let mut jobs: Vec<(usize, Job)> = first.into_iter().chain(due).map(|j| (lane_no, j)).collect();
            // While a backlog is read, the other held targets' deadlines pass too: look at
            // them once a second (at a zero deadline they wait until the queue catches up).
            let look =
                !cfg.batch_send_deadline.is_zero() && last_due_look.elapsed() >= Duration::from_secs(1);
            if pending.over_cap() || look {
                // Over the cap, `take_due` takes everything.
                let n = lanes.len();
                jobs.extend(pending.take_due(false, |t| lane_of(t, n)));
                last_due_look = Instant::now();
            }
            for (lane_no, job) in jobs {
                if !deliver(&lanes[lane_no], job, &mut stop, &mut stopping, flush_deadline).await {
                    break 'dispatch;
                }
            }
        }
        metrics.held_samples.store(pending.samples() as u64, Relaxed);
        if last_sweep.elapsed() >= Duration::from_secs(60) {
            series.forget_idle(Duration::from_secs(600));
            last_sweep = Instant::now();
        }
    }
    let _ = hard_tx.send(true);
    drop(lanes);
    for t in lane_tasks {
        let _ = t.await;
    }
    let cursor = inflight.keys().next().copied().unwrap_or(dispatched).max(floor);
    let w = wal.clone();
    let n = name.clone();
    let _ = tokio::task::spawn_blocking(move || w.ack(&n, cursor)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::batch::{BatchMetadata, BatchSample, ScrapeBatch, SeriesDef};
    use crate::scrape::parse::MetricType;
    use crate::wal::Options;

    fn labels(name: &str, i: u64) -> SeriesLabels {
        SeriesLabels::from_set(
            &LabelSet::from_pairs([("__name__", name.to_owned()), ("i", i.to_string())]).unwrap(),
        )
    }

    fn sample(id: u64) -> BatchSample {
        BatchSample { series: id, timestamp: 1, value: id as f64 }
    }

    /// A WAL reader that knows series 1..=4 (`m`, `m`, `dropme`, `m_created`).
    fn reader(dir: &std::path::Path) -> (Arc<Wal>, crate::wal::Reader) {
        let (wal, _) = Wal::open(
            dir,
            Options { sync_interval: Duration::ZERO, max_size: 1 << 30, segment_size: 1 << 20 },
        )
        .unwrap();
        let defs = [(1, "m"), (2, "m"), (3, "dropme"), (4, "m_created")]
            .map(|(id, name)| SeriesDef { id, labels: labels(name, id) })
            .to_vec();
        let samples = (1..=4).map(sample).collect();
        wal.append(&ScrapeBatch { target: 9, timestamp: 1, new_series: defs, samples, ..Default::default() })
            .unwrap();
        let mut r = wal.reader(Pos { seg: 0, off: 0 }).unwrap();
        r.next(wal.end()).unwrap().expect("the record");
        (wal, r)
    }

    #[test]
    fn records_resolve_by_position_and_rebuild_on_change() {
        let dir = std::env::temp_dir().join(format!("ferry-queue-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (_wal, r) = reader(&dir);
        let drop_rule: Vec<relabel::Rule> = serde_yaml::from_str::<Vec<relabel::RawRule>>(
            "[{source_labels: [__name__], regex: dropme, action: drop}]",
        )
        .unwrap()
        .iter()
        .map(|raw| relabel::Rule::new(raw, ferry_protocol::NameValidation::Utf8).unwrap())
        .collect();
        let mut series = Series::default();
        let mut dropped = Dropped::default();
        let resolve = |series: &mut Series, ids: &[u64], dropped: &mut Dropped| {
            let samples: Vec<BatchSample> = ids.iter().map(|&i| sample(i)).collect();
            series.resolve(9, &samples, &r, &LabelSet::new(), &drop_rule, dropped, None)
        };
        let first = resolve(&mut series, &[1, 2, 3], &mut dropped);
        assert_eq!(first.len(), 2, "series 3 is dropped by write_relabel");
        assert_eq!(dropped.relabel, 1);
        assert!(!series.has_created(9), "no _created series yet");
        // The same series again: the same shared series info, found by position.
        let again = resolve(&mut series, &[1, 2, 3], &mut dropped);
        assert!(first[0].series.same(&again[0].series) && first[1].series.same(&again[1].series));
        assert_eq!(dropped.relabel, 2);
        // A new series in the middle and one unknown to the WAL: the known ones are reused.
        let changed = resolve(&mut series, &[1, 4, 2, 99], &mut dropped);
        assert_eq!(changed.len(), 3);
        assert_eq!(dropped.unresolved, 1);
        let table = r.table();
        let wal = table.read();
        assert!(!first[0].series.list().by_wal_id(), "write_relabel_configs: the list holds labels");
        let labels = |s: &Sample| s.series.labels(&wal).unwrap().clone();
        assert!(labels(&first[1]).shares(&labels(&changed[2])), "series 2 moved but is reused");
        assert!(labels(&changed[1]).get("i").is_some_and(|v| v == "4"));
        drop(wal);
        assert!(series.has_created(9), "series 4 is m_created: its values are start timestamps");
        // Metadata for family m arrives: the target's series pick it up.
        series.learn_metadata(&BatchMetadata {
            metric_family: "m".into(),
            kind: MetricType::Gauge,
            help: "help".into(),
            unit: String::new(),
        });
        let with_md = resolve(&mut series, &[1, 4, 2], &mut dropped);
        assert!(with_md.iter().all(|s| s.series.metadata().is_some_and(|m| m.1 == "help")));
        assert!(series.has_created(9));
        resolve(&mut series, &[1, 2], &mut dropped);
        assert!(!series.has_created(9), "the _created series is gone from the record");
        series.forget_idle(Duration::ZERO);
        assert!(series.targets.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without external labels or write relabeling a list holds no labels: it names its
    /// series by id, and they are read from the WAL's table, the very handles it keeps.
    #[test]
    fn unchanged_labels_are_the_wals_looked_up_by_id() {
        let dir = std::env::temp_dir().join(format!("ferry-queue-by-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, r) = reader(&dir);
        let mut series = Series::default();
        let mut dropped = Dropped::default();
        let resolve = |series: &mut Series, ids: &[u64], dropped: &mut Dropped| {
            let samples: Vec<BatchSample> = ids.iter().map(|&i| sample(i)).collect();
            series.resolve(9, &samples, &r, &LabelSet::new(), &[], dropped, None)
        };
        let first = resolve(&mut series, &[1, 2, 3, 4, 99], &mut dropped);
        assert_eq!((first.len(), dropped.unresolved, dropped.relabel), (4, 1, 0));
        let list = first[0].series.list();
        assert!(list.by_wal_id());
        assert!(series.has_created(9), "series 4 is m_created");
        let table = wal.label_table();
        for (s, id) in first.iter().zip(1..) {
            assert!(s.series.list().same(list));
            assert_eq!(list.id(s.series.position() as usize), Some(id));
            let got = s.series.labels(&table.read()).cloned().unwrap();
            assert!(got.shares(&r.labels(id).unwrap()), "the WAL's own handle");
        }
        // A moved series keeps its place in the new list by id.
        let moved = resolve(&mut series, &[4, 1], &mut dropped);
        assert!(moved[0].series.list().by_wal_id() && !moved[0].series.list().same(list));
        assert_eq!(moved[0].series.labels(&table.read()).unwrap().get("i").unwrap(), "4");
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// External labels alone leave the list by id: they join each series' as it is encoded,
    /// a series' own label of that name keeping its value.
    #[test]
    fn external_labels_join_lists_by_id() {
        let dir = std::env::temp_dir().join(format!("ferry-queue-external-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, r) = reader(&dir);
        let external = LabelSet::from_pairs([("cluster", "c1"), ("i", "ext")]).unwrap();
        let mut series = Series { external: Some(SeriesLabels::from_set(&external)), ..Default::default() };
        let samples: Vec<BatchSample> = [1, 2].map(sample).to_vec();
        let got = series.resolve(9, &samples, &r, &external, &[], &mut Dropped::default(), None);
        assert!(got[0].series.list().by_wal_id());
        let table = wal.label_table();
        let wal_labels = table.read();
        let sent: Vec<String> = got[1]
            .series
            .keys(&wal_labels)
            .unwrap()
            .map(|k| k.label())
            .map(|l| format!("{}={}", l.name, l.value.text()))
            .collect();
        assert_eq!(sent, ["__name__=m", "cluster=c1", "i=2"]);
        drop(wal_labels);
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
