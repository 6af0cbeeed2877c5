//! The scrape-to-batch pipeline without I/O: series cache, label merge (honor_labels),
//! metric relabeling, validation and limits, duplicate handling, staleness bookkeeping and
//! the report series (reference §1.7, §1.8, §2, §3).
//!
//! The cache is keyed by the raw series text as exposed. A hit yields the built, relabeled,
//! validated series (or "dropped") without touching the labels again; only new texts pay for
//! parsing and relabeling.
//!
//! The key is a 128-bit fingerprint of that text (XXH3, seeded per target from the process's
//! random state), not the text: keeping the text would cost another copy of every series'
//! labels. Two texts would have to collide in 128 seeded bits to be confused, odds of about
//! n²/2¹²⁹ for n series (below 10⁻²⁸ for a million), and a target cannot aim for a collision
//! without knowing the seed.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_protocol::labels::{is_valid_label_name, is_valid_metric_name};
use ferry_protocol::{LabelSet, METRIC_NAME, NameValidation, STALE_NAN};
use hashbrown::{HashMap, HashSet};

use super::batch::{BatchExemplar, BatchSample, ScrapeBatch, SeriesDef};
use super::parse::{Entry, Format, Norm, Parser, parse_series};
use super::series_cache::SeriesCache;
use crate::config::Job;
use crate::labels::Builder;
use crate::relabel;
use crate::series_labels::SeriesLabels;

/// Samples more than this far in the future are dropped (not fatal), as Prometheus does.
const MAX_FUTURE_MS: i64 = 10 * 60_000;

/// The report series, in the order Prometheus writes them.
pub const REPORT_NAMES: [&str; 8] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "scrape_timeout_seconds",
    "scrape_sample_limit",
    "scrape_body_size_bytes",
];

/// A series-cache entry, in 8 bytes: the series id and a few flags about the latest scrapes.
/// Flags replace per-scrape sets: "seen" detects a duplicate line within one scrape,
/// "tracked" (this scrape and the one before) says which series get stale markers, so the hit
/// path is one lookup (see `series_cache`) and a few bit operations. After each scrape one
/// pass over the entries ([`CacheEntry::age`]) writes the markers and moves the flags on,
/// which is why none of them holds a generation number: relative state needs no wrapping
/// arithmetic, and a slot with its 16-byte key is 24 bytes, where id, two generations and
/// the key took 32.
///
/// The entry holds the series id, not its labels: once the definition went out (the WAL and
/// the queue keep the labels from there), the scrape path needs only the id. A definition
/// still to announce waits in [`TargetState::pending`].
///
/// Bits 0–47 are the id (ids count up from 1; 2⁴⁸ of them is 178 years at 50,000 new series
/// a second), then the flags, then how many scrapes in a row missed the series.
#[derive(Debug, Clone)]
struct CacheEntry(u64);

const ID_BITS: u32 = 48;
const ID_MASK: u64 = (1 << ID_BITS) - 1;
/// The definition went out.
const ANNOUNCED: u64 = 1 << 48;
/// The current scrape listed the series.
const SEEN: u64 = 1 << 49;
/// The current scrape took a sample for it (the staleness tracking of reference §3.4).
const TRACKED: u64 = 1 << 50;
/// The previous scrape did.
const TRACKED_BEFORE: u64 = 1 << 51;
const UNSEEN_SHIFT: u32 = 52;
/// Scrapes in a row that did not list the series, saturating here.
const UNSEEN_MAX: u64 = 63;

/// The id of a cached series that metric relabeling drops.
const DROPPED: u64 = ID_MASK;

impl CacheEntry {
    fn new(id: u64) -> CacheEntry {
        // An id this large is 178 years away; stopping beats mixing two series up.
        assert!(id < DROPPED, "series id {id} does not fit the cache's 48 bits");
        CacheEntry(id)
    }
    fn dropped() -> CacheEntry {
        CacheEntry(DROPPED)
    }
    /// The series' id, unless relabeling drops it.
    fn series(&self) -> Option<u64> {
        let id = self.id();
        (id != DROPPED).then_some(id)
    }
    /// The raw id, [`DROPPED`] included.
    fn id(&self) -> u64 {
        self.0 & ID_MASK
    }
    /// Whether the current scrape listed it already.
    fn seen_now(&self) -> bool {
        self.0 & SEEN != 0
    }
    fn set_seen(&mut self) {
        self.0 = (self.0 | SEEN) & !(UNSEEN_MAX << UNSEEN_SHIFT);
    }
    /// Scrapes in a row, up to the last one closed, that did not list it.
    fn unseen(&self) -> u64 {
        self.0 >> UNSEEN_SHIFT
    }
    fn set_tracked(&mut self) {
        self.0 |= TRACKED;
    }
    /// Whether the last closed scrape took a sample for it.
    fn tracked_last(&self) -> bool {
        self.0 & TRACKED_BEFORE != 0
    }
    fn announced(&self) -> bool {
        self.0 & ANNOUNCED != 0
    }
    fn announce(&mut self) {
        self.0 |= ANNOUNCED;
    }
    /// Closes the current scrape for this entry: whether it needs a stale marker (tracked by
    /// the previous scrape, not by this one), then the flags move on to the next scrape.
    fn age(&mut self) -> bool {
        let stale = self.0 & (TRACKED | TRACKED_BEFORE) == TRACKED_BEFORE;
        let unseen = if self.seen_now() { 0 } else { (self.unseen() + 1).min(UNSEEN_MAX) };
        let tracked_before = if self.0 & TRACKED != 0 { TRACKED_BEFORE } else { 0 };
        self.0 = (self.0 & (ID_MASK | ANNOUNCED)) | tracked_before | (unseen << UNSEEN_SHIFT);
        stale
    }
}

/// Scrapes an entry may go unseen before the cache forgets it.
const EVICT_AFTER: u64 = 20;
const _: () = assert!(UNSEEN_MAX >= EVICT_AFTER, "a saturated count must still mean evict");

/// Counts for the report series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub scraped: u64,
    pub post_relabel: u64,
    pub series_added: u64,
}

/// How a scrape attempt ended before parsing, for the report series.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched<'a> {
    /// HTTP 200 with this body and Content-Type.
    Body { body: &'a str, content_type: Option<&'a str>, decoded_len: usize },
    /// Transport, status, size or content-type failure before parsing.
    Failed { error: String, body_size_limit_hit: bool },
}

/// Per-target state kept across scrapes.
#[derive(Debug)]
pub struct TargetState {
    /// Keyed by the seeded fingerprint of a raw series text and its normalisation.
    cache: SeriesCache<CacheEntry>,
    /// Labels of cached series whose definition has not gone out yet: seen, but their
    /// samples were not taken (a future timestamp, the sample limit). Usually empty.
    pending: HashMap<u64, SeriesLabels>,
    /// Seeds the fingerprints; see the module header.
    seed: u64,
    /// Scrapes begun, this one included: every 16th sweeps the cache. (Entries keep flags
    /// relative to the latest scrapes, not generation numbers; see [`CacheEntry`].)
    generation: u32,
    /// The metadata sent, by family (see `metadata`).
    metadata: metadata::Sent,
    report: Vec<SeriesDef>,
    report_sent: bool,
    /// Samples in the previous batch: the next one is sized from it, not grown by doubling.
    last_samples: usize,
    ids: Arc<AtomicU64>,
    /// Target labels attached to every sample.
    public: LabelSet,
    hash: u64,
}

/// The series one scrape defined that a new one's labels may be built on (see
/// `SeriesLabels::from_set_near`): the last one, since the next is likely its family's next
/// series (a histogram's next bucket), and the whole sets by their labels without
/// `__name__`, since the series of one thing come in several families (a container's
/// cAdvisor series). Kept for one scrape, so only scrapes that define series fill it.
#[derive(Default)]
struct Near {
    last: Option<SeriesLabels>,
    groups: HashMap<u64, SeriesLabels>,
    key: Vec<u8>,
}

impl Near {
    fn define(&mut self, ls: &LabelSet) -> SeriesLabels {
        self.key.clear();
        crate::labels::put_key(&mut self.key, ls.iter().filter(|l| l.name != METRIC_NAME));
        // A collision only offers a candidate that shares too little to be used.
        let group = xxhash_rust::xxh3::xxh3_64(&self.key);
        let labels = SeriesLabels::from_set_near(ls, self.last.iter().chain(self.groups.get(&group)));
        if !labels.is_based() {
            self.groups.insert(group, labels.clone());
        }
        self.last = Some(labels.clone());
        labels
    }
}

fn norm_index(n: Norm) -> u64 {
    match n {
        Norm::None => 0,
        Norm::Le => 1,
        Norm::Quantile => 2,
    }
}

impl TargetState {
    pub fn new(public: LabelSet, hash: u64, ids: Arc<AtomicU64>) -> TargetState {
        let report = REPORT_NAMES
            .iter()
            .map(|name| {
                let mut ls = public.clone();
                ls.set(METRIC_NAME, name).expect("non-empty name");
                SeriesDef { id: ids.fetch_add(1, Ordering::Relaxed), labels: SeriesLabels::from_set(&ls) }
            })
            .collect();
        TargetState {
            cache: Default::default(),
            pending: HashMap::new(),
            seed: std::collections::hash_map::RandomState::new().hash_one(hash),
            generation: 1,
            metadata: Default::default(),
            report,
            report_sent: false,
            last_samples: 0,
            ids,
            public,
            hash,
        }
    }

    /// Series in the cache (for self-metrics).
    pub fn cached_series(&self) -> usize {
        self.cache.len()
    }

    /// The cache key of a raw series text under a normalisation (which changes its labels).
    fn fingerprint(&self, raw: &str, norm: Norm) -> u128 {
        xxhash_rust::xxh3::xxh3_128_with_seed(raw.as_bytes(), self.seed ^ norm_index(norm))
    }

    /// Builds the final labels of a newly seen raw series, or `Ok(None)` if relabeling drops
    /// it. Errors fail the scrape.
    fn build(
        public: &LabelSet,
        job: &Job,
        raw: &str,
        norm: Norm,
        format: Format,
    ) -> Result<Option<LabelSet>, String> {
        let (name, pairs) = parse_series(raw, norm, format)?;
        let mut seen_names: HashSet<&str> = HashSet::with_capacity(pairs.len() + 1);
        if !name.is_empty() {
            seen_names.insert(METRIC_NAME);
        }
        for (n, _) in &pairs {
            if !seen_names.insert(n.as_str()) {
                return Err(format!("label name {n:?} is not unique: invalid sample"));
            }
        }
        let mut scraped: Vec<ferry_protocol::Label> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| ferry_protocol::Label::new(n.as_str(), v.as_str()))
            .collect();
        if !name.is_empty() {
            scraped.push(ferry_protocol::Label::new(METRIC_NAME, name.as_str()));
        }
        scraped.sort_by(|a, b| a.name.cmp(&b.name));
        let mut b = Builder::new(scraped);
        if job.honor_labels {
            for l in public {
                let present = pairs.iter().any(|(n, _)| *n == l.name);
                if !present {
                    b.set(&l.name, &l.value);
                }
            }
        } else {
            let mut clashes: Vec<(String, String)> = Vec::new();
            for l in public {
                let v = b.get(&l.name);
                if !v.is_empty() {
                    clashes.push((l.name.clone(), v.to_owned()));
                }
                b.set(&l.name, &l.value);
            }
            clashes.sort_by_key(|(n, _)| n.len());
            for (n, v) in clashes {
                let mut exported = format!("exported_{n}");
                while !b.get(&exported).is_empty() {
                    exported = format!("exported_{exported}");
                }
                b.set(&exported, &v);
            }
        }
        if !relabel::process(&job.metric_relabel, &mut b) {
            return Ok(None);
        }
        let ls = b.labels();
        let Some(metric) = ls.metric_name() else {
            return Err("missing metric name (__name__ label)".into());
        };
        let scheme = job.validation;
        if !is_valid_metric_name(metric, scheme) || ls.iter().any(|l| !is_valid_label_name(&l.name, scheme)) {
            return Err(format!("invalid metric name or label names: {ls}"));
        }
        if job.label_limit > 0 && ls.len() as u64 > job.label_limit {
            return Err(format!(
                "label_limit exceeded (metric: {:.50}, number of labels: {}, limit: {})",
                metric,
                ls.len(),
                job.label_limit
            ));
        }
        for l in &ls {
            if job.label_name_length_limit > 0 && l.name.len() as u64 > job.label_name_length_limit {
                return Err(format!(
                    "label_name_length_limit exceeded (metric: {:.50}, label name: {}, length: {}, limit: {})",
                    metric,
                    l.name,
                    l.name.len(),
                    job.label_name_length_limit
                ));
            }
            if job.label_value_length_limit > 0 && l.value.len() as u64 > job.label_value_length_limit {
                return Err(format!(
                    "label_value_length_limit exceeded (metric: {:.50}, label name: {}, value: {:.50}, length: {}, limit: {})",
                    metric,
                    l.name,
                    l.value,
                    l.value.len(),
                    job.label_value_length_limit
                ));
            }
        }
        if scheme == NameValidation::Legacy && metric.starts_with(' ') {
            return Err(format!("invalid metric name or label names: {ls}"));
        }
        Ok(Some(ls))
    }

    /// Runs one scrape's result through the pipeline. `now` is the wall clock (ms), for the
    /// future-timestamp bound; `ts` is the scrape timestamp; `duration` the scrape's time.
    pub fn scrape(
        &mut self,
        job: &Job,
        fetched: Fetched<'_>,
        ts: i64,
        now: i64,
        duration_s: f64,
    ) -> ScrapeBatch {
        let mut out = ScrapeBatch { target: self.hash, timestamp: ts, ..Default::default() };
        out.samples.reserve(self.last_samples);
        self.generation += 1;
        let mut counts = Counts::default();
        let mut body_size = 0i64;
        let result = match fetched {
            Fetched::Failed { error, body_size_limit_hit } => {
                body_size = if body_size_limit_hit { -1 } else { 0 };
                Err(error)
            }
            Fetched::Body { body, content_type, decoded_len } => {
                if body.is_empty() {
                    body_size = decoded_len as i64;
                    Ok(()) // an empty 200 is a successful scrape with no samples
                } else {
                    match super::parse::format_for(content_type, job.fallback) {
                        Ok(format) => {
                            body_size = decoded_len as i64;
                            self.append(job, body, format, ts, now, &mut out, &mut counts)
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        };
        if let Err(e) = &result {
            // Roll back everything from the body; what was tracked stays tracked (§3.4).
            // Definitions already announced stay in the batch: harmless without samples, and
            // the consumer needs them once the series reappears.
            out.samples.clear();
            out.exemplars.clear();
            out.metadata.clear();
            out.error = Some(e.clone());
        }
        // Stale markers for series tracked by the previous scrape and not by this one.
        let first_marker = out.samples.len();
        for e in self.cache.values_mut() {
            if e.age()
                && let Some(id) = e.series()
            {
                out.samples.push(BatchSample { series: id, timestamp: ts, value: STALE_NAN });
            }
        }
        // Forget what has not been seen for a while, so churn does not grow the cache. (A
        // series tracked by this scrape or the last was seen by it, so it stays.)
        if self.generation.is_multiple_of(16) {
            let (pending, gone) = (&mut self.pending, &mut out.gone);
            self.cache.retain(|e| {
                let keep = e.unseen() < EVICT_AFTER;
                if !keep {
                    if e.announced() {
                        gone.extend(e.series());
                    } else {
                        pending.remove(&e.id());
                    }
                }
                keep
            });
        }
        self.cache.end_scrape();
        // The cache's order follows the scrapes; series-id order (first-seen order) is
        // stable.
        out.samples[first_marker..].sort_unstable_by_key(|s| s.series);
        if !self.report_sent {
            out.new_series.extend(self.report.iter().cloned());
            self.report_sent = true;
        }
        let ok = result.is_ok();
        // Transport and content-type failures never parsed anything, so counts are 0 there.
        let (scraped, post, added) = (counts.scraped, counts.post_relabel, counts.series_added);
        let values = [
            if ok { 1.0 } else { 0.0 },
            duration_s,
            scraped as f64,
            post as f64,
            added as f64,
            job.timeout.as_secs_f64(),
            job.sample_limit as f64,
            body_size as f64,
        ];
        let n = if job.extra_scrape_metrics { 8 } else { 5 };
        for (def, v) in self.report.iter().zip(values).take(n) {
            out.samples.push(BatchSample { series: def.id, timestamp: ts, value: v });
        }
        self.last_samples = out.samples.len();
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        job: &Job,
        body: &str,
        format: Format,
        ts: i64,
        now: i64,
        out: &mut ScrapeBatch,
        counts: &mut Counts,
    ) -> Result<(), String> {
        let mut parser = Parser::new(body, format).guessing();
        let mut meta = self.metadata.lines();
        let mut appended = 0u64;
        let mut limit_hit = false;
        let mut failure: Option<String> = None;
        // Candidates to build new series' labels on (see `Near`).
        let mut near = Near::default();
        loop {
            let entry = match parser.next_entry() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            };
            let s = match entry {
                Entry::Help { name, text } => {
                    meta.help(name, text);
                    continue;
                }
                Entry::Type { name, kind } => {
                    meta.kind(name, kind);
                    continue;
                }
                Entry::Unit { name, unit } => {
                    meta.unit(name, unit);
                    continue;
                }
                Entry::Sample(s) => s,
            };
            counts.scraped += 1;
            let mut s = s;
            let mut fp = self.fingerprint(s.series, s.norm);
            if s.guessed && !self.cache.contains(fp) {
                // Not a text that parsed before: the guess does not stand (parse module header).
                s = match parser.reparse() {
                    Ok(s) => s,
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                };
                fp = self.fingerprint(s.series, s.norm);
            }
            // `fresh`: the labels of a kept series first seen just now (its definition is due).
            let (at, new, fresh) = match self.cache.find(fp) {
                Some(at) => (at, false, None),
                None => {
                    let (entry, labels) = match Self::build(&self.public, job, s.series, s.norm, format) {
                        Ok(None) => (CacheEntry::dropped(), None),
                        Ok(Some(ls)) => (
                            CacheEntry::new(self.ids.fetch_add(1, Ordering::Relaxed)),
                            Some(near.define(&ls)),
                        ),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    };
                    (self.cache.insert(fp, entry), true, labels)
                }
            };
            let e = self.cache.get_mut(at);
            let Some(id) = e.series() else { continue };
            counts.post_relabel += 1;
            let explicit = s.timestamp.is_some() && job.honor_timestamps;
            let t = if explicit { s.timestamp.unwrap_or(ts) } else { ts };
            if !explicit && e.seen_now() {
                continue; // the same series twice without a timestamp: the first wins
            }
            e.set_seen();
            let taken = if t > now + MAX_FUTURE_MS {
                false // out of bounds: dropped, not fatal
            } else if job.sample_limit > 0 && appended >= job.sample_limit {
                limit_hit = true; // keep counting so the report series are right
                false
            } else {
                true
            };
            if !taken {
                if let Some(labels) = fresh {
                    self.pending.insert(id, labels);
                }
                continue;
            }
            appended += 1;
            if new {
                counts.series_added += 1;
            }
            if !e.announced() {
                e.announce();
                if let Some(labels) = fresh.or_else(|| self.pending.remove(&id)) {
                    out.new_series.push(SeriesDef { id, labels });
                }
            }
            if !explicit || job.track_timestamps_staleness {
                e.set_tracked();
            }
            out.samples.push(BatchSample { series: id, timestamp: t, value: s.value });
            if let Some(ex) = s.exemplar
                && let Ok(labels) = LabelSet::from_pairs(ex.labels)
            {
                out.exemplars.push(BatchExemplar {
                    series: id,
                    labels,
                    value: ex.value,
                    timestamp: ex.timestamp.unwrap_or(t),
                });
            }
        }
        if let Some(f) = failure {
            return Err(f);
        }
        if limit_hit {
            return Err("sample limit exceeded".into());
        }
        // Metadata: families whose TYPE/HELP/UNIT changed since the last scrape.
        self.metadata.changes(meta, self.seed, &mut out.metadata);
        Ok(())
    }

    /// End-of-run markers when the target goes away: every series of the last scrape and the
    /// report series, at `ts` (reference §3.5).
    pub fn end_of_run(&mut self, job: &Job, ts: i64) -> ScrapeBatch {
        let mut out = ScrapeBatch { target: self.hash, timestamp: ts, ..Default::default() };
        let mut ids: Vec<u64> =
            self.cache.values().filter(|e| e.tracked_last()).filter_map(CacheEntry::series).collect();
        ids.sort_unstable();
        for id in ids {
            out.samples.push(BatchSample { series: id, timestamp: ts, value: STALE_NAN });
        }
        let n = if job.extra_scrape_metrics { 8 } else { 5 };
        for def in self.report.iter().take(n) {
            out.samples.push(BatchSample { series: def.id, timestamp: ts, value: STALE_NAN });
        }
        // The loop ends here: every series it defined is gone.
        out.gone = self.cache.values().filter(|e| e.announced()).filter_map(CacheEntry::series).collect();
        if self.report_sent {
            out.gone.extend(self.report.iter().map(|d| d.id));
        }
        self.generation += 1;
        out
    }
}

mod metadata;
#[cfg(test)]
mod tests;
