//! The sled-backed series store: series index, postings, raw head samples, compressed chunks,
//! histograms, exemplars and metadata, all in one tree (layout in [`keys`]).
//!
//! Writes are validated against an in-memory head (last timestamp and value of every series)
//! with Prometheus TSDB semantics, then committed as one atomic sled batch. [`Store::sync`]
//! makes them durable; the HTTP layer calls it before answering 2xx. Concurrent requests each
//! wait for a flush, and sled coalesces flushes, so durability costs one fsync per group, not
//! per request.

pub mod chunk;
pub mod keys;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Mutex;

use ferry_protocol::LabelSet;
use hashbrown::HashMap;
use thiserror::Error;

use crate::selector::Matcher;
use keys::*;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in storage: {0}")]
    Corrupt(String),
}

/// One series of an incoming request, already decoded and label-validated.
#[derive(Debug, Clone, Default)]
pub struct SeriesWrite {
    pub labels: LabelSet,
    pub samples: Vec<(i64, f64)>,
    /// Encoded `rw2::Histogram`s (validated by the caller), with their timestamps.
    pub histograms: Vec<(i64, Vec<u8>)>,
    pub exemplars: Vec<ExemplarWrite>,
}

/// A whole request: its series and the metadata it carried, per metric name.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub series: Vec<SeriesWrite>,
    pub metadata: Vec<(String, Metadata)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarWrite {
    pub labels: LabelSet,
    pub value: f64,
    pub timestamp: i64,
}

/// Metric metadata; `kind` is the RW2 `MetricType` number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub kind: i32,
    pub help: String,
    pub unit: String,
}

/// What a write may accept: the valid timestamp window and the tenant's series limit.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// 0 = unlimited.
    pub max_series: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
}

/// The outcome of a write: what was committed and, one line per problem, what was not.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub written: Written,
    pub rejected: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Nothing,
    Float(u64),
    /// Hash of the encoded histogram: an exact re-send hashes the same.
    Histogram(u64),
}

#[derive(Debug, Clone, Copy)]
struct SeriesState {
    id: u64,
    last_ts: i64,
    last: Last,
}

#[derive(Default)]
struct Head {
    /// `L` key (tenant + labels) → state.
    series: HashMap<Box<[u8]>, SeriesState>,
    series_per_tenant: HashMap<String, usize>,
}

pub struct Store {
    db: sled::Db,
    head: Mutex<Head>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn id_from(v: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        v.try_into()
            .map_err(|_| StoreError::Corrupt("series id".into()))?,
    ))
}

impl Store {
    /// Opens (or creates) the store under `path` and loads the head from it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let store = Store {
            db,
            head: Mutex::new(Head::default()),
        };
        store.load_head()?;
        Ok(store)
    }

    /// Rebuilds the in-memory head: every series and its newest point.
    fn load_head(&self) -> Result<(), StoreError> {
        let mut head = self.head.lock().expect("head lock");
        for item in self.db.scan_prefix([LABELS_TO_ID]) {
            let (k, v) = item?;
            let id = id_from(&v)?;
            let tenant_end = k[1..]
                .iter()
                .position(|&b| b == SEP)
                .map(|p| p + 1)
                .unwrap_or(k.len());
            let tenant = String::from_utf8_lossy(&k[1..tenant_end]).into_owned();
            let mut state = SeriesState {
                id,
                last_ts: i64::MIN,
                last: Last::Nothing,
            };
            if let Some(item) = self.db.scan_prefix(id_key(SAMPLE, id)).next_back() {
                let (k, v) = item?;
                state.last_ts = ts_from_bytes(&k[9..]);
                state.last = Last::Float(u64::from_be_bytes(v.as_ref().try_into().unwrap_or_default()));
            } else if let Some(item) = self.db.scan_prefix(id_key(CHUNK, id)).next_back() {
                let (_, v) = item?;
                chunk::decode(&v, |t, bits| {
                    state.last_ts = t;
                    state.last = Last::Float(bits);
                })
                .ok_or_else(|| StoreError::Corrupt(format!("chunk of series {id}")))?;
            }
            if let Some(item) = self.db.scan_prefix(id_key(HISTOGRAM, id)).next_back() {
                let (k, v) = item?;
                let t = ts_from_bytes(&k[9..]);
                if t >= state.last_ts {
                    state.last_ts = t;
                    state.last = Last::Histogram(hash_bytes(&v));
                }
            }
            head.series.insert(k.as_ref().into(), state);
            *head.series_per_tenant.entry(tenant).or_default() += 1;
        }
        Ok(())
    }

    /// Number of series across all tenants.
    pub fn series_count(&self) -> usize {
        self.head.lock().expect("head lock").series.len()
    }

    /// Validates and commits one request's series atomically. Nothing is durable until
    /// [`Store::sync`] returns.
    pub fn write(
        &self,
        tenant: &str,
        input: WriteBatch,
        limits: WriteLimits,
    ) -> Result<WriteReport, StoreError> {
        let mut report = WriteReport::default();
        let mut batch = sled::Batch::default();
        let mut head = self.head.lock().expect("head lock");
        // Changes are staged here and reach the head only once the batch is applied, so a
        // failed commit leaves the head as it was.
        let mut staged: HashMap<Box<[u8]>, SeriesState> = HashMap::new();
        let mut new_series = 0usize;
        let tenant_series = head.series_per_tenant.get(tenant).copied().unwrap_or(0);

        for (name, md) in &input.metadata {
            let mut v = Vec::with_capacity(12 + md.help.len() + md.unit.len());
            v.extend_from_slice(&md.kind.to_le_bytes());
            put_str(&mut v, &md.help);
            put_str(&mut v, &md.unit);
            batch.insert(metadata_key(tenant, name), v);
        }
        for sw in input.series {
            let key = series_key(tenant, &sw.labels);
            let mut state = match staged
                .get(key.as_slice())
                .or_else(|| head.series.get(key.as_slice()))
            {
                Some(s) => *s,
                None => {
                    if limits.max_series > 0 && tenant_series + new_series >= limits.max_series {
                        report.rejected.push(format!(
                            "per-tenant series limit of {} exceeded, series {} not created",
                            limits.max_series, sw.labels
                        ));
                        continue;
                    }
                    new_series += 1;
                    let id = self.db.generate_id()?;
                    self.index_new_series(&mut batch, tenant, &sw.labels, &key, id);
                    SeriesState {
                        id,
                        last_ts: i64::MIN,
                        last: Last::Nothing,
                    }
                }
            };
            let mut problems = Problems::default();
            for &(ts, v) in &sw.samples {
                let bits = v.to_bits();
                let verdict = match check_point(&state, ts, Last::Float(bits), limits) {
                    Verdict::Reject(OUT_OF_ORDER) if self.stored_float(state.id, ts)? == Some(bits) => {
                        Verdict::Duplicate
                    }
                    v => v,
                };
                match verdict {
                    Verdict::Append => {
                        batch.insert(&point_key(SAMPLE, state.id, ts)[..], &bits.to_be_bytes()[..]);
                        state.last_ts = ts;
                        state.last = Last::Float(bits);
                        report.written.samples += 1;
                    }
                    Verdict::Duplicate => report.written.samples += 1,
                    Verdict::Reject(why) => problems.add(why),
                }
            }
            for (ts, h) in &sw.histograms {
                let stored_same = |s: &Self| -> Result<bool, StoreError> {
                    Ok(s.db
                        .get(point_key(HISTOGRAM, state.id, *ts))?
                        .is_some_and(|v| v.as_ref() == h.as_slice()))
                };
                let verdict = match check_point(&state, *ts, Last::Histogram(hash_bytes(h)), limits) {
                    Verdict::Reject(OUT_OF_ORDER) if stored_same(self)? => Verdict::Duplicate,
                    v => v,
                };
                match verdict {
                    Verdict::Append => {
                        batch.insert(&point_key(HISTOGRAM, state.id, *ts)[..], h.as_slice());
                        state.last_ts = *ts;
                        state.last = Last::Histogram(hash_bytes(h));
                        report.written.histograms += 1;
                    }
                    Verdict::Duplicate => report.written.histograms += 1,
                    Verdict::Reject(why) => problems.add(why),
                }
            }
            for ex in &sw.exemplars {
                let mut v = Vec::with_capacity(32);
                v.extend_from_slice(&ex.value.to_bits().to_be_bytes());
                encode_labels(&ex.labels, &mut v);
                batch.insert(&point_key(EXEMPLAR, state.id, ex.timestamp)[..], v);
                report.written.exemplars += 1;
            }
            problems.report(&sw.labels, &mut report.rejected);
            staged.insert(key.into_boxed_slice(), state);
        }

        self.db.apply_batch(batch)?;
        for (k, s) in staged {
            if head.series.insert(k, s).is_none() {
                *head.series_per_tenant.entry(tenant.to_owned()).or_default() += 1;
            }
        }
        Ok(report)
    }

    /// The float stored for series `id` at exactly `ts`, raw or in a chunk.
    fn stored_float(&self, id: u64, ts: i64) -> Result<Option<u64>, StoreError> {
        if let Some(v) = self.db.get(point_key(SAMPLE, id, ts))? {
            return Ok(v.as_ref().try_into().ok().map(u64::from_be_bytes));
        }
        let Some(item) = self
            .db
            .range(point_key(CHUNK, id, i64::MIN)..=point_key(CHUNK, id, ts))
            .next_back()
        else {
            return Ok(None);
        };
        let (_, c) = item?;
        let mut found = None;
        chunk::decode(&c, |t, v| {
            if t == ts {
                found = Some(v);
            }
        })
        .ok_or_else(|| StoreError::Corrupt(format!("chunk of series {id}")))?;
        Ok(found)
    }

    fn index_new_series(
        &self,
        batch: &mut sled::Batch,
        tenant: &str,
        labels: &LabelSet,
        key: &[u8],
        id: u64,
    ) {
        batch.insert(key, &id.to_be_bytes()[..]);
        let mut v = Vec::with_capacity(key.len());
        v.extend_from_slice(&key[1..]);
        batch.insert(&id_key(ID_TO_LABELS, id)[..], v);
        for l in labels {
            let mut p = posting_prefix(tenant, &l.name, Some(&l.value));
            p.extend_from_slice(&id.to_be_bytes());
            batch.insert(p, &[][..]);
        }
    }

    /// Waits until everything written so far is on disk.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Reads.

    /// Series of `tenant` whose labels satisfy every matcher. At least one matcher must not
    /// match the empty string (the caller checks, as Prometheus does), so a posting list
    /// bounds the scan.
    pub fn select(&self, tenant: &str, matchers: &[Matcher]) -> Result<Vec<(u64, LabelSet)>, StoreError> {
        let anchor = matchers
            .iter()
            .find(|m| !m.matches(""))
            .ok_or_else(|| StoreError::Corrupt("selector needs a matcher that does not match \"\"".into()))?;
        let mut ids = Vec::new();
        let prefix = posting_prefix(tenant, &anchor.name, None);
        for item in self.db.scan_prefix(&prefix) {
            let (k, _) = item?;
            let rest = &k[prefix.len()..];
            let (value, id) = rest.split_at(rest.len() - 9);
            if anchor.matches(std::str::from_utf8(value).unwrap_or("")) {
                ids.push(id_from(&id[1..])?);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            let labels = self.labels_of(id)?;
            if matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            {
                out.push((id, labels));
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    fn labels_of(&self, id: u64) -> Result<LabelSet, StoreError> {
        let v = self
            .db
            .get(id_key(ID_TO_LABELS, id))?
            .ok_or_else(|| StoreError::Corrupt(format!("series {id} has no labels")))?;
        let start = v.iter().position(|&b| b == SEP).map(|p| p + 1).unwrap_or(0);
        decode_labels(&v[start..]).ok_or_else(|| StoreError::Corrupt(format!("labels of series {id}")))
    }

    /// Float samples of series `id` with `start <= ts <= end`, oldest first, as raw bits.
    pub fn samples(&self, id: u64, start: i64, end: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .range(point_key(CHUNK, id, i64::MIN)..=point_key(CHUNK, id, end))
        {
            let (_, c) = item?;
            if chunk::last_timestamp(&c).is_some_and(|last| last < start) {
                continue;
            }
            chunk::decode(&c, |t, v| {
                if (start..=end).contains(&t) {
                    out.push((t, v));
                }
            })
            .ok_or_else(|| StoreError::Corrupt(format!("chunk of series {id}")))?;
        }
        for item in self
            .db
            .range(point_key(SAMPLE, id, start)..=point_key(SAMPLE, id, end))
        {
            let (k, v) = item?;
            let bits = u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("sample".into()))?,
            );
            out.push((ts_from_bytes(&k[9..]), bits));
        }
        Ok(out)
    }

    /// Encoded `rw2::Histogram`s of series `id` in `[start, end]`.
    pub fn histograms(&self, id: u64, start: i64, end: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        self.db
            .range(point_key(HISTOGRAM, id, start)..=point_key(HISTOGRAM, id, end))
            .map(|item| {
                let (k, v) = item?;
                Ok((ts_from_bytes(&k[9..]), v.to_vec()))
            })
            .collect()
    }

    /// Exemplars of series `id` in `[start, end]`.
    pub fn exemplars(&self, id: u64, start: i64, end: i64) -> Result<Vec<ExemplarWrite>, StoreError> {
        self.db
            .range(point_key(EXEMPLAR, id, start)..=point_key(EXEMPLAR, id, end))
            .map(|item| {
                let (k, v) = item?;
                let value = f64::from_bits(u64::from_be_bytes(
                    v.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| StoreError::Corrupt("exemplar".into()))?,
                ));
                let labels =
                    decode_labels(&v[8..]).ok_or_else(|| StoreError::Corrupt("exemplar labels".into()))?;
                Ok(ExemplarWrite {
                    labels,
                    value,
                    timestamp: ts_from_bytes(&k[9..]),
                })
            })
            .collect()
    }

    /// Metadata of `metric` in `tenant`.
    pub fn metadata(&self, tenant: &str, metric: &str) -> Result<Option<Metadata>, StoreError> {
        let Some(v) = self.db.get(metadata_key(tenant, metric))? else {
            return Ok(None);
        };
        let corrupt = || StoreError::Corrupt(format!("metadata of {metric}"));
        let kind = i32::from_le_bytes(v.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?);
        let mut rest = &v[4..];
        let help = take_str(&mut rest).ok_or_else(corrupt)?.to_owned();
        let unit = take_str(&mut rest).ok_or_else(corrupt)?.to_owned();
        Ok(Some(Metadata { kind, help, unit }))
    }

    /// All metadata of `tenant`, by metric name.
    pub fn all_metadata(&self, tenant: &str) -> Result<Vec<(String, Metadata)>, StoreError> {
        let prefix = metadata_key(tenant, "");
        let mut out = Vec::new();
        for item in self.db.scan_prefix(&prefix) {
            let (k, _) = item?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(md) = self.metadata(tenant, &name)? {
                out.push((name, md));
            }
        }
        Ok(out)
    }

    /// Every label name used in `tenant`, sorted.
    pub fn label_names(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let mut prefix = vec![POSTING];
        prefix.extend_from_slice(tenant.as_bytes());
        prefix.push(SEP);
        let mut names: Vec<String> = Vec::new();
        let mut cursor = prefix.clone();
        // Skip from one name to the next instead of walking every posting.
        while let Some(item) = self.db.range(cursor.clone()..).next() {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            let end = rest.iter().position(|&b| b == SEP).unwrap_or(rest.len());
            names.push(String::from_utf8_lossy(&rest[..end]).into_owned());
            // Every posting of this name starts `name FF v` with v < FF (UTF-8), so
            // `name FF FF` is past all of them and before any later key.
            cursor.truncate(prefix.len());
            cursor.extend_from_slice(&rest[..end]);
            cursor.extend_from_slice(&[SEP, SEP]);
        }
        // Key order is not string order ("a" FF sorts after "ab"), so sort here.
        names.sort_unstable();
        Ok(names)
    }

    /// Every value of label `name` in `tenant`, sorted.
    pub fn label_values(&self, tenant: &str, name: &str) -> Result<Vec<String>, StoreError> {
        let prefix = posting_prefix(tenant, name, None);
        let mut values: Vec<String> = Vec::new();
        for item in self.db.scan_prefix(&prefix) {
            let (k, _) = item?;
            let rest = &k[prefix.len()..];
            let value = String::from_utf8_lossy(&rest[..rest.len() - 9]).into_owned();
            // Postings of one value are contiguous, so comparing with the last suffices.
            if values.last() != Some(&value) {
                values.push(value);
            }
        }
        values.sort_unstable();
        Ok(values)
    }

    // ----------------------------------------------------------------------------------------
    // Maintenance.

    /// Moves raw head samples into compressed chunks for every series with at least
    /// `min_samples` of them. Returns the number of samples compacted.
    pub fn compact(&self, min_samples: usize) -> Result<usize, StoreError> {
        let ids: Vec<u64> = self
            .head
            .lock()
            .expect("head lock")
            .series
            .values()
            .map(|s| s.id)
            .collect();
        let mut total = 0;
        for id in ids {
            let mut keys = Vec::new();
            let mut points = Vec::new();
            for item in self.db.scan_prefix(id_key(SAMPLE, id)) {
                let (k, v) = item?;
                let bits = u64::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("sample".into()))?,
                );
                points.push((ts_from_bytes(&k[9..]), bits));
                keys.push(k);
            }
            if points.len() < min_samples.max(1) {
                continue;
            }
            let mut batch = sled::Batch::default();
            for part in points.chunks(chunk::MAX_SAMPLES) {
                batch.insert(&point_key(CHUNK, id, part[0].0)[..], chunk::encode(part));
            }
            for k in keys {
                batch.remove(k);
            }
            // Atomic: a crash leaves either the raw samples or the chunk, never both or neither.
            self.db.apply_batch(batch)?;
            total += points.len();
        }
        Ok(total)
    }

    /// Deletes data older than `cutoff` (ms). Returns the number of keys removed.
    pub fn delete_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let ids: Vec<u64> = self
            .head
            .lock()
            .expect("head lock")
            .series
            .values()
            .map(|s| s.id)
            .collect();
        let mut removed = 0;
        for id in ids {
            let mut batch = sled::Batch::default();
            for prefix in [SAMPLE, HISTOGRAM, EXEMPLAR] {
                for item in self
                    .db
                    .range(point_key(prefix, id, i64::MIN)..point_key(prefix, id, cutoff))
                {
                    batch.remove(item?.0);
                    removed += 1;
                }
            }
            for item in self
                .db
                .range(point_key(CHUNK, id, i64::MIN)..point_key(CHUNK, id, cutoff))
            {
                let (k, c) = item?;
                if chunk::last_timestamp(&c).is_some_and(|last| last < cutoff) {
                    batch.remove(k);
                    removed += 1;
                }
            }
            self.db.apply_batch(batch)?;
        }
        Ok(removed)
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

enum Verdict {
    Append,
    Duplicate,
    Reject(&'static str),
}

const OUT_OF_ORDER: &str = "out of order sample";

/// Prometheus' `memSeries.appendable` plus the handler's time bounds. (The caller turns an
/// out-of-order point that equals the stored one into a duplicate, so that re-sending a whole
/// request is idempotent, which Prometheus' TSDB is not.)
fn check_point(state: &SeriesState, ts: i64, value: Last, limits: WriteLimits) -> Verdict {
    if ts > limits.max_timestamp {
        Verdict::Reject("out of bounds: timestamp too far in the future")
    } else if ts < limits.min_timestamp {
        Verdict::Reject("out of bounds: timestamp older than the retention period")
    } else if ts < state.last_ts {
        Verdict::Reject(OUT_OF_ORDER)
    } else if ts == state.last_ts {
        if state.last == value {
            Verdict::Duplicate
        } else {
            Verdict::Reject("duplicate sample for timestamp")
        }
    } else {
        Verdict::Append
    }
}

/// Per-series rejection reasons with counts, reported as one line each.
#[derive(Default)]
struct Problems(Vec<(&'static str, usize)>);

impl Problems {
    fn add(&mut self, why: &'static str) {
        match self.0.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => self.0.push((why, 1)),
        }
    }

    fn report(self, labels: &LabelSet, out: &mut Vec<String>) {
        for (why, n) in self.0 {
            out.push(format!("{why} for series {labels} ({n} rejected)"));
        }
    }
}
