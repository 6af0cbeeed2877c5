//! The sled-backed series store: series index, postings, a write log, compressed chunks,
//! histograms, exemplars and metadata, all in one tree (layout in [`keys`]).
//!
//! Float samples take the path of a TSDB head: a request's samples go to sled as **one** log
//! record, and into the in-memory head, where each series has an open compressed chunk.
//! A chunk that reaches [`chunk::MAX_SAMPLES`] is cut into sled in the same batch; a periodic
//! [`Store::checkpoint`] writes every open chunk and deletes the log. After a crash the head
//! is rebuilt from the last chunks and the log. (A first version stored one sled key per
//! sample; sled's copy-on-write nodes made that 3x slower than Prometheus.)
//!
//! Writes are validated against the head with Prometheus TSDB semantics and committed as one
//! atomic sled batch; [`Store::sync`] makes them durable, and the HTTP layer calls it before
//! answering 2xx. Concurrent requests each wait for a flush, and sled coalesces flushes.

pub mod chunk;
pub mod keys;
pub mod log;

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use ferry_protocol::LabelSet;
use hashbrown::HashMap;
use thiserror::Error;

use crate::selector::Matcher;
use chunk::Appender;
use keys::*;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in storage: {0}")]
    Corrupt(String),
}

/// One series of an incoming request, already decoded and label-validated. Its labels are
/// kept encoded (`name FF value FF …`, sorted): that is the index key, so a known series is
/// found without building a `LabelSet`.
#[derive(Debug, Clone, Default)]
pub struct SeriesWrite {
    pub key: Vec<u8>,
    pub samples: Vec<(i64, f64)>,
    /// Encoded `rw2::Histogram`s (validated by the caller), with their timestamps.
    pub histograms: Vec<(i64, Vec<u8>)>,
    pub exemplars: Vec<ExemplarWrite>,
}

impl SeriesWrite {
    pub fn new(labels: &LabelSet) -> SeriesWrite {
        let mut key = Vec::with_capacity(128);
        encode_labels(labels, &mut key);
        SeriesWrite { key, ..Default::default() }
    }

    /// The labels, decoded from the key (new series and error messages only).
    pub fn labels(&self) -> LabelSet {
        decode_labels(&self.key).unwrap_or_default()
    }
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

#[derive(Debug, Default)]
struct SeriesState {
    last_ts: i64,
    last: Option<Last>,
    /// The open chunk; its samples are in the log (or a checkpointed chunk) until cut.
    open: Appender,
}

impl SeriesState {
    fn last(&self) -> Last {
        self.last.unwrap_or(Last::Nothing)
    }
}

#[derive(Default)]
struct Head {
    /// `tenant FF labels` → series id.
    index: HashMap<Box<[u8]>, u64>,
    /// `tenant FF name FF value` → ids of the series with that label, ascending. Ordered, so
    /// that all values of a name are one range.
    postings: BTreeMap<Box<[u8]>, Vec<u64>>,
    series: HashMap<u64, SeriesState>,
    /// Tenant names and their series counts.
    tenants: Vec<(String, usize)>,
}

impl Head {
    fn add_postings(&mut self, tenant: &str, labels: &LabelSet, id: u64) {
        for l in labels {
            self.postings.entry(posting_key(tenant, &l.name, Some(&l.value)).into()).or_default().push(id);
        }
    }

    /// The `name FF value` part of every postings key of `tenant` that starts with `start`.
    fn postings_from(&self, tenant: &str, start: &[u8]) -> impl Iterator<Item = (&[u8], &Vec<u64>)> {
        let mut prefix = tenant.as_bytes().to_vec();
        prefix.push(SEP);
        let skip = prefix.len();
        prefix.extend_from_slice(start);
        self.postings
            .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(move |(k, v)| (&k[skip..], v))
    }

    fn tenant_no(&mut self, tenant: &str) -> u32 {
        match self.tenants.iter().position(|(t, _)| t == tenant) {
            Some(i) => i as u32,
            None => {
                self.tenants.push((tenant.to_owned(), 0));
                (self.tenants.len() - 1) as u32
            }
        }
    }
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
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| StoreError::Corrupt("series id".into()))?))
}

/// A change to one series staged during a write, applied to the head after the commit.
#[derive(Debug)]
struct Staged {
    last_ts: i64,
    last: Last,
    appended: Vec<(i64, u64)>,
    new_tenant: Option<u32>,
}

impl Store {
    /// Opens (or creates) the store under `path` with a page cache of `cache_bytes`, and
    /// rebuilds the head from the newest chunks and the log.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let store = Store { db, head: Mutex::new(Head::default()) };
        store.load_head()?;
        Ok(store)
    }

    fn load_head(&self) -> Result<(), StoreError> {
        let mut head = self.head.lock().expect("head lock");
        for item in self.db.scan_prefix([ID_TO_LABELS]) {
            let (k, v) = item?;
            let id = id_from(&k[1..])?;
            let tenant_end = v.iter().position(|&b| b == SEP).unwrap_or(v.len());
            let tenant = String::from_utf8_lossy(&v[..tenant_end]).into_owned();
            let labels = decode_labels(&v[(tenant_end + 1).min(v.len())..])
                .ok_or_else(|| StoreError::Corrupt(format!("labels of series {id}")))?;
            let t = head.tenant_no(&tenant);
            head.tenants[t as usize].1 += 1;
            head.add_postings(&tenant, &labels, id);
            let mut state = SeriesState { last_ts: i64::MIN, ..Default::default() };
            if let Some(item) = self.db.scan_prefix(id_key(CHUNK, id)).next_back() {
                let (_, c) = item?;
                let mut points = Vec::new();
                chunk::decode(&c, |t, bits| points.push((t, bits)))
                    .ok_or_else(|| StoreError::Corrupt(format!("chunk of series {id}")))?;
                if let Some(&(t, bits)) = points.last() {
                    state.last_ts = t;
                    state.last = Some(Last::Float(bits));
                }
                // A chunk that is not full was written by a checkpoint: it is still open.
                if points.len() < chunk::MAX_SAMPLES {
                    for (t, bits) in points {
                        state.open.append(t, bits);
                    }
                }
            }
            if let Some(item) = self.db.scan_prefix(id_key(HISTOGRAM, id)).next_back() {
                let (k, v) = item?;
                let t = ts_from_bytes(&k[9..]);
                if t >= state.last_ts {
                    state.last_ts = t;
                    state.last = Some(Last::Histogram(hash_bytes(&v)));
                }
            }
            head.index.insert(v.as_ref().into(), id);
            head.series.insert(id, state);
        }
        // Replay the log: samples newer than what the chunks hold go back into the head.
        let mut replayed = 0usize;
        for item in self.db.scan_prefix([LOG]) {
            let (k, rec) = item?;
            let mut cut = Vec::new();
            let ok = log::read_record(&rec, |id, ts, bits| {
                if let Some(s) = head.series.get_mut(&id)
                    && ts > s.last_ts
                {
                    s.open.append(ts, bits);
                    s.last_ts = ts;
                    s.last = Some(Last::Float(bits));
                    replayed += 1;
                    if s.open.is_full() {
                        cut.push((point_key(CHUNK, id, s.open.first_timestamp()), s.open.to_bytes()));
                        s.open.reset();
                    }
                }
            });
            if ok.is_none() {
                // sled batches are atomic, so this is damage, not a torn write: keep what
                // could be read and say so.
                tracing::warn!(key = ?k, "skipping the unreadable rest of a corrupt write-log record");
            }
            for (ck, cv) in cut {
                self.db.insert(&ck[..], cv)?;
            }
        }
        drop(head);
        if replayed > 0 {
            tracing::info!(samples = replayed, "replayed the write log into the head");
        }
        self.checkpoint()?;
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
        let mut log = log::RecordWriter::default();
        let mut head = self.head.lock().expect("head lock");
        let tenant_no = head.tenant_no(tenant);
        let tenant_series = head.tenants[tenant_no as usize].1;
        // Changes are staged and reach the head only once the batch is applied, so a failed
        // commit leaves the head as it was.
        let mut staged: HashMap<u64, Staged> = HashMap::new();
        let mut new_keys: Vec<(Box<[u8]>, u64)> = Vec::new();

        for (name, md) in &input.metadata {
            let mut v = Vec::with_capacity(12 + md.help.len() + md.unit.len());
            v.extend_from_slice(&md.kind.to_le_bytes());
            put_str(&mut v, &md.help);
            put_str(&mut v, &md.unit);
            batch.insert(metadata_key(tenant, name), v);
        }
        let mut key = Vec::with_capacity(256);
        let mut new_labels: Vec<LabelSet> = Vec::new();
        for sw in input.series {
            series_key(tenant, &sw.key, &mut key);
            let existing = head
                .index
                .get(key.as_slice())
                .copied()
                .or_else(|| new_keys.iter().find(|(k, _)| **k == *key).map(|(_, id)| *id));
            let id = match existing {
                Some(id) => id,
                None => {
                    if limits.max_series > 0 && tenant_series + new_keys.len() >= limits.max_series {
                        report.rejected.push(format!(
                            "per-tenant series limit of {} exceeded, series {} not created",
                            limits.max_series,
                            sw.labels()
                        ));
                        continue;
                    }
                    let id = self.db.generate_id()?;
                    // One record per new series; the index and postings derive from it.
                    batch.insert(&id_key(ID_TO_LABELS, id)[..], key.as_slice());
                    new_keys.push((key.as_slice().into(), id));
                    new_labels.push(sw.labels());
                    staged.insert(
                        id,
                        Staged {
                            last_ts: i64::MIN,
                            last: Last::Nothing,
                            appended: vec![],
                            new_tenant: Some(tenant_no),
                        },
                    );
                    id
                }
            };
            let st = staged.entry(id).or_insert_with(|| {
                let s = &head.series[&id];
                Staged { last_ts: s.last_ts, last: s.last(), appended: vec![], new_tenant: None }
            });
            let mut problems = Problems::default();
            for &(ts, v) in &sw.samples {
                let bits = v.to_bits();
                let verdict = match check_point(st.last_ts, st.last, ts, Last::Float(bits), limits) {
                    Verdict::Reject(OUT_OF_ORDER) if self.stored_float(&head, id, ts)? == Some(bits) => {
                        Verdict::Duplicate
                    }
                    v => v,
                };
                match verdict {
                    Verdict::Append => {
                        log.push(id, ts, bits);
                        st.appended.push((ts, bits));
                        st.last_ts = ts;
                        st.last = Last::Float(bits);
                        report.written.samples += 1;
                    }
                    Verdict::Duplicate => report.written.samples += 1,
                    Verdict::Reject(why) => problems.add(why),
                }
            }
            for (ts, h) in &sw.histograms {
                let stored_same = || -> Result<bool, StoreError> {
                    Ok(self
                        .db
                        .get(point_key(HISTOGRAM, id, *ts))?
                        .is_some_and(|v| v.as_ref() == h.as_slice()))
                };
                let verdict =
                    match check_point(st.last_ts, st.last, *ts, Last::Histogram(hash_bytes(h)), limits) {
                        Verdict::Reject(OUT_OF_ORDER) if stored_same()? => Verdict::Duplicate,
                        v => v,
                    };
                match verdict {
                    Verdict::Append => {
                        batch.insert(&point_key(HISTOGRAM, id, *ts)[..], h.as_slice());
                        st.last_ts = *ts;
                        st.last = Last::Histogram(hash_bytes(h));
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
                batch.insert(&point_key(EXEMPLAR, id, ex.timestamp)[..], v);
                report.written.exemplars += 1;
            }
            if !problems.0.is_empty() {
                problems.report(&sw.labels(), &mut report.rejected);
            }
        }

        // Chunks that fill up with this request are cut in the same batch.
        let mut cuts: Vec<u64> = Vec::new();
        for (&id, st) in &staged {
            let open_len = head.series.get(&id).map_or(0, |s| s.open.len());
            if open_len + st.appended.len() >= chunk::MAX_SAMPLES {
                cuts.push(id);
            }
        }
        let mut cut_chunks: HashMap<u64, Appender> = HashMap::new();
        for id in cuts {
            // Build the post-write chunk sequence off to the side; the head takes it after
            // the commit.
            let mut a = Appender::default();
            if let Some(s) = head.series.get(&id) {
                chunk::decode(&s.open.to_bytes(), |t, v| a.append(t, v));
            }
            for &(t, v) in &staged[&id].appended {
                a.append(t, v);
                if a.is_full() {
                    batch.insert(&point_key(CHUNK, id, a.first_timestamp())[..], a.to_bytes());
                    a.reset();
                }
            }
            cut_chunks.insert(id, a);
        }
        if !log.is_empty() {
            let seq = self.db.generate_id()?;
            batch.insert(&id_key(LOG, seq)[..], log.into_bytes());
        }

        self.db.apply_batch(batch)?;

        for ((k, id), labels) in new_keys.into_iter().zip(new_labels) {
            head.index.insert(k, id);
            head.add_postings(tenant, &labels, id);
        }
        for (id, st) in staged {
            if let Some(t) = st.new_tenant {
                head.tenants[t as usize].1 += 1;
            }
            let s = head.series.entry(id).or_default();
            s.last_ts = st.last_ts;
            s.last = Some(st.last);
            match cut_chunks.remove(&id) {
                Some(a) => s.open = a,
                None => {
                    for (t, v) in st.appended {
                        s.open.append(t, v);
                    }
                }
            }
        }
        Ok(report)
    }

    /// The float stored for series `id` at exactly `ts`: in the open chunk or a cut one.
    fn stored_float(&self, head: &Head, id: u64, ts: i64) -> Result<Option<u64>, StoreError> {
        let mut found = None;
        if let Some(s) = head.series.get(&id)
            && !s.open.is_empty()
            && s.open.first_timestamp() <= ts
        {
            chunk::decode(&s.open.to_bytes(), |t, v| {
                if t == ts {
                    found = Some(v);
                }
            });
            return Ok(found);
        }
        let Some(item) = self.db.range(point_key(CHUNK, id, i64::MIN)..=point_key(CHUNK, id, ts)).next_back()
        else {
            return Ok(None);
        };
        let (_, c) = item?;
        chunk::decode(&c, |t, v| {
            if t == ts {
                found = Some(v);
            }
        })
        .ok_or_else(|| StoreError::Corrupt(format!("chunk of series {id}")))?;
        Ok(found)
    }

    /// Waits until everything written so far is on disk.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Writes every open chunk to sled and deletes the log, atomically. Returns the number
    /// of log records removed.
    pub fn checkpoint(&self) -> Result<usize, StoreError> {
        let head = self.head.lock().expect("head lock");
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for item in self.db.scan_prefix([LOG]).keys() {
            batch.remove(item?);
            removed += 1;
        }
        if removed == 0 {
            return Ok(0);
        }
        for (&id, s) in &head.series {
            if !s.open.is_empty() {
                batch.insert(&point_key(CHUNK, id, s.open.first_timestamp())[..], s.open.to_bytes());
            }
        }
        // Under the head lock, so no write adds a log record between the scan and the apply.
        self.db.apply_batch(batch)?;
        Ok(removed)
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
        {
            let head = self.head.lock().expect("head lock");
            let mut start = anchor.name.as_bytes().to_vec();
            start.push(SEP);
            let value_at = start.len();
            if anchor.kind == crate::selector::MatchKind::Equal {
                // Only values with this prefix can be equal: skip straight to them.
                start.extend_from_slice(anchor.value.as_bytes());
            }
            for (k, list) in head.postings_from(tenant, &start) {
                if anchor.matches(std::str::from_utf8(&k[value_at..]).unwrap_or("")) {
                    ids.extend_from_slice(list);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            let labels = self.labels_of(id)?;
            if matchers.iter().all(|m| m.matches(labels.get(&m.name).unwrap_or(""))) {
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

    /// Float samples of series `id` with `start <= ts <= end`, oldest first, as raw bits:
    /// cut chunks from sled, then the open chunk from the head.
    pub fn samples(&self, id: u64, start: i64, end: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        let open = {
            let head = self.head.lock().expect("head lock");
            head.series
                .get(&id)
                .filter(|s| !s.open.is_empty())
                .map(|s| (s.open.first_timestamp(), s.open.to_bytes()))
        };
        let mut out = Vec::new();
        let mut keep = |t: i64, v: u64| {
            if (start..=end).contains(&t) {
                out.push((t, v));
            }
        };
        for item in self.db.range(point_key(CHUNK, id, i64::MIN)..=point_key(CHUNK, id, end)) {
            let (k, c) = item?;
            // The checkpointed copy of the open chunk is stale; the head has it whole.
            if open.as_ref().is_some_and(|(first, _)| *first == ts_from_bytes(&k[9..])) {
                continue;
            }
            if chunk::last_timestamp(&c).is_some_and(|last| last < start) {
                continue;
            }
            chunk::decode(&c, &mut keep)
                .ok_or_else(|| StoreError::Corrupt(format!("chunk of series {id}")))?;
        }
        if let Some((_, bytes)) = open {
            chunk::decode(&bytes, &mut keep)
                .ok_or_else(|| StoreError::Corrupt(format!("open chunk of series {id}")))?;
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
                Ok(ExemplarWrite { labels, value, timestamp: ts_from_bytes(&k[9..]) })
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
        let head = self.head.lock().expect("head lock");
        let mut names: Vec<String> = Vec::new();
        for (k, _) in head.postings_from(tenant, b"") {
            let name = &k[..k.iter().position(|&b| b == SEP).unwrap_or(k.len())];
            if names.last().map(String::as_bytes) != Some(name) {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Every value of label `name` in `tenant`, sorted.
    pub fn label_values(&self, tenant: &str, name: &str) -> Result<Vec<String>, StoreError> {
        let head = self.head.lock().expect("head lock");
        let mut start = name.as_bytes().to_vec();
        start.push(SEP);
        Ok(head
            .postings_from(tenant, &start)
            .map(|(k, _)| String::from_utf8_lossy(&k[start.len()..]).into_owned())
            .collect())
    }

    /// Deletes data older than `cutoff` (ms). Returns the number of keys removed.
    pub fn delete_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let ids: Vec<u64> = self.head.lock().expect("head lock").series.keys().copied().collect();
        let mut removed = 0;
        for id in ids {
            let mut batch = sled::Batch::default();
            for prefix in [HISTOGRAM, EXEMPLAR] {
                for item in self.db.range(point_key(prefix, id, i64::MIN)..point_key(prefix, id, cutoff)) {
                    batch.remove(item?.0);
                    removed += 1;
                }
            }
            for item in self.db.range(point_key(CHUNK, id, i64::MIN)..point_key(CHUNK, id, cutoff)) {
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
fn check_point(last_ts: i64, last: Last, ts: i64, value: Last, limits: WriteLimits) -> Verdict {
    if ts > limits.max_timestamp {
        Verdict::Reject("out of bounds: timestamp too far in the future")
    } else if ts < limits.min_timestamp {
        Verdict::Reject("out of bounds: timestamp older than the retention period")
    } else if ts < last_ts {
        Verdict::Reject(OUT_OF_ORDER)
    } else if ts == last_ts {
        if last == value { Verdict::Duplicate } else { Verdict::Reject("duplicate sample for timestamp") }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> WriteLimits {
        WriteLimits { min_timestamp: i64::MIN, max_timestamp: i64::MAX, max_series: 0 }
    }

    fn one(name: &str, samples: Vec<(i64, f64)>) -> WriteBatch {
        WriteBatch {
            series: vec![SeriesWrite {
                samples,
                ..SeriesWrite::new(&LabelSet::from_pairs([("__name__", name), ("job", "j")]).unwrap())
            }],
            metadata: vec![],
        }
    }

    #[test]
    fn retention_deletes_old_chunks_and_keeps_new_data() {
        let dir = std::env::temp_dir().join(format!("ferry-store-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir, 8 << 20).unwrap();
        // 240 samples: two full chunks, cut at write time.
        let samples: Vec<(i64, f64)> = (0..240).map(|i| (i * 1000, i as f64)).collect();
        s.write("t", one("m", samples), limits()).unwrap();
        s.checkpoint().unwrap();
        let id = s
            .select(
                "t",
                &[crate::selector::Matcher::new("__name__", crate::selector::MatchKind::Equal, "m").unwrap()],
            )
            .unwrap()[0]
            .0;
        assert_eq!(s.samples(id, i64::MIN, i64::MAX).unwrap().len(), 240);
        // Everything before 130 s: the first chunk (0..119 s) goes, the second stays whole.
        let removed = s.delete_before(130_000).unwrap();
        assert_eq!(removed, 1);
        let left = s.samples(id, i64::MIN, i64::MAX).unwrap();
        assert_eq!((left.len(), left[0].0), (120, 120_000));
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Not a test: prints bytes per stored sample after compaction on bench-like data.
    /// `cargo test -p ferry-receiver --release -- --ignored bytes_per_sample --nocapture`
    #[test]
    #[ignore]
    fn bytes_per_sample() {
        let dir = std::env::temp_dir().join(format!("ferry-store-bps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir, 64 << 20).unwrap();
        let (series, rounds) = (10_000i64, 240i64);
        for r in 0..rounds {
            let batch = WriteBatch {
                series: (0..series)
                    .map(|i| SeriesWrite {
                        key: SeriesWrite::new(
                            &LabelSet::from_pairs([
                                ("__name__", format!("metric_{}", i % 50)),
                                ("pod", format!("checkout-7d9fk2lq4x-{:05x}", i / 50)),
                                ("job", "kubernetes-pods".into()),
                            ])
                            .unwrap(),
                        )
                        .key,
                        // Counters with per-series rates, every third series a wandering gauge.
                        samples: vec![(
                            1_700_000_000_000 + r * 15_000 + (i % 7),
                            if i % 3 == 0 {
                                ((i * 7 + r * 13) % 1000) as f64 / 10.0
                            } else {
                                (r * (i % 11 + 1)) as f64
                            },
                        )],
                        ..Default::default()
                    })
                    .collect(),
                metadata: vec![],
            };
            s.write("t", batch, limits()).unwrap();
        }
        s.checkpoint().unwrap();
        let mut chunk_bytes = 0u64;
        for item in s.db.scan_prefix([CHUNK]) {
            chunk_bytes += item.unwrap().1.len() as u64;
        }
        let n = (series * rounds) as f64;
        drop(s);
        let on_disk: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "{} samples: chunk payload {:.2} B/sample; whole store on disk {:.2} B/sample (labels, index, sled overhead)",
            n,
            chunk_bytes as f64 / n,
            on_disk as f64 / n
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
