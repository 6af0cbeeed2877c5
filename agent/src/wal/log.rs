//! Segments, the writer, readers and cursors.
//!
//! Layout under `<storage>/wal/`: segment files `0000000000000001.seg`, … each a sequence of
//! records `[payload len u32 LE][crc32c(payload) u32 LE][payload]`; cursor files
//! `cursors/<endpoint>` holding the position of the next record that endpoint must send, in
//! two checksummed slots overwritten in turn (see [`cursor_slot`]). After a restart the
//! writer always starts a new segment, so nothing already on disk is ever rewritten.
//!
//! Every segment is self-contained: the writer re-states a series' labels the first time the
//! series appears in a segment, so a reader needs only the current segment to resolve ids.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::series_labels::SeriesLabels;
use hashbrown::HashMap;
use tokio::sync::watch;

use super::id_map::IdMap;
use super::{codec, crc::crc32c};
use crate::scrape::batch::{ScrapeBatch, SeriesDef};

/// Largest record accepted when reading; anything bigger is damage, not data.
const MAX_RECORD: u32 = 256 << 20;

/// A position in the log: the start of a record (or the end of the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub seg: u64,
    pub off: u64,
}

#[derive(Debug, Clone, Default)]
struct Segment {
    size: u64,
    /// (offset, samples) of each record, for drop accounting.
    records: Vec<(u64, u32)>,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: usize,
    /// Bytes cut from torn segment tails.
    pub torn_bytes: u64,
    /// Records skipped because their checksum or content was wrong.
    pub corrupt_records: usize,
    pub max_series_id: u64,
}

/// Counters the agent exports.
#[derive(Debug, Default)]
pub struct WalMetrics {
    pub records_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub samples_written: AtomicU64,
    pub fsyncs: AtomicU64,
    pub write_failures: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub size_bytes: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub sync_interval: Duration,
    pub max_size: u64,
    /// When to start a new segment: after this many bytes of records, not counting the
    /// series definitions each segment re-states (see `Writer::data_bytes`).
    pub segment_size: u64,
}

/// The writer's series: each id's labels, and a mark on those the segment being written
/// states already (by its tag, [`Writer::tag`]).
///
/// One table serves both questions the writer asks per sample (does this segment state the
/// series yet? what are its labels?) and the readers' (which labels does this id have?), in
/// 8 bytes a slot of an [`IdMap`] and a bit (see `a_slot_is_a_handle`). A series leaves it
/// when its target says it will not use it again ([`ScrapeBatch::gone`]) and no segment on
/// disk uses it any more (see [`Writer::gone`]).
///
/// Shared with readers so they need not decode (and hold) their own copies of the labels of
/// series this process wrote, and with the remote-write lanes, which look a request's labels
/// up here while they encode it (see [`LabelTable`]). A read-write lock: lanes encode side by
/// side, and the writer takes it to write only for new series, restatements and forgetting.
type SharedLabels = Arc<RwLock<IdMap<SeriesLabels>>>;

/// The writer's series table, as readers see it: ids to labels, for as long as a segment on
/// disk may hold a record that uses them (see [`Writer::gone`]).
#[derive(Debug, Clone)]
pub struct LabelTable(SharedLabels);

impl LabelTable {
    /// The table, read-locked until the guard drops. Hold it only for synchronous work (an
    /// encoding), never across an `await`: the writer waits for it to add series.
    pub fn read(&self) -> RwLockReadGuard<'_, IdMap<SeriesLabels>> {
        self.0.read().expect("labels lock")
    }
}

/// A record buffer at most this large is kept whatever the record it held.
const KEEP_RECORD_BUF: usize = 64 << 10;

/// The record buffer to keep for the next record. A record that states its target's series
/// (the first after a start or a rotation) is as large as their labels, about 1 MB for 2,500
/// cAdvisor series, while the steady records between are a few KB; keeping the capacity of
/// the largest one was a buffer no record used most of the time (heaptrack at 500k series:
/// 1 MB). One more allocation per such record, which is rare, gives it back.
fn keep_for_next(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() > 4 * buf.len().max(KEEP_RECORD_BUF) {
        buf.clear();
        buf.shrink_to(KEEP_RECORD_BUF);
    }
    buf
}

struct Writer {
    segments: BTreeMap<u64, Segment>,
    file: Option<File>,
    cur: Pos,
    /// The first segment this process writes: segments are tagged relative to it.
    first_seg: u64,
    labels: SharedLabels,
    /// Series targets have said they will not use again, by the segment that was being
    /// written then: they leave `labels` when that segment and every one before it are
    /// deleted, since until then a reader may meet them in a record.
    gone: BTreeMap<u64, Vec<u64>>,
    last_sync: Instant,
    dirty: bool,
    /// Endpoint → the next position it must send.
    cursors: BTreeMap<String, Pos>,
    /// Endpoint → samples lost to the size cap or a full disk before it sent them.
    dropped: BTreeMap<String, u64>,
    /// Endpoint → its open cursor file, and the sequence number of the last slot written.
    cursor_files: BTreeMap<String, (File, u64)>,
    /// Cursor files written since their last sync.
    cursors_dirty: bool,
    /// The record being written, kept between records (see [`keep_for_next`]).
    buf: Vec<u8>,
    /// Start a new segment before the next write (after a disk-full error, so the full
    /// segment can be dropped or acknowledged away).
    force_rotate: bool,
    /// Segment size in force: `Options::segment_size`, lowered after a disk-full error to a
    /// quarter of what fitted, so sent segments rotate out and free space in time.
    segment_limit: u64,
    /// Bytes of this segment that are not series definitions: what `segment_limit` is
    /// measured against. Every segment re-states the labels of the series it uses, so when
    /// the active series' labels alone outgrow a segment (500k series at ~200 bytes is about
    /// 100 MB, over the default 64 MiB), counting them would rotate before the series were
    /// all stated, and the next segment would state them again: a WAL of nothing but labels.
    data_bytes: u64,
    /// Target → the segment tag and the fingerprint of the series ids of its last batch
    /// written there: a batch with the same ids in the same segment states nothing new, so
    /// it skips the per-sample table lookups. Cleared at rotation (the tag changes).
    steady: HashMap<u64, (u32, u128)>,
    /// Scratch for that fingerprint.
    ids_buf: Vec<u8>,
}

impl Writer {
    /// A segment's number relative to the first one this process writes (1 for that one);
    /// 0 for segments recovered from before, whose series this writer never knew.
    fn tag(&self, seg: u64) -> u32 {
        seg.checked_sub(self.first_seg).map_or(0, |d| d as u32 + 1)
    }

    /// Forgets the series whose last segment is deleted: `gone` entries older than every
    /// segment on disk.
    fn forget_gone(&mut self) {
        let oldest = self.segments.keys().next().copied().unwrap_or(self.cur.seg);
        // Every acknowledgement comes here: take the readers' lock only with work to do.
        if self.gone.first_key_value().is_none_or(|(&seg, _)| seg >= oldest) {
            return;
        }
        let mut labels = self.labels.write().expect("labels lock");
        while let Some(entry) = self.gone.first_entry()
            && *entry.key() < oldest
        {
            for id in entry.remove() {
                labels.remove(id);
            }
        }
    }
}

pub struct Wal {
    dir: PathBuf,
    opts: Options,
    w: Mutex<Writer>,
    end: watch::Sender<Pos>,
    pub metrics: WalMetrics,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn seg_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:016}.seg"))
}

fn cursor_path(dir: &Path, endpoint: &str) -> PathBuf {
    let safe: String = endpoint
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    dir.join("cursors").join(safe)
}

/// Bytes of one cursor slot; a cursor file holds two.
const SLOT: usize = 64;

/// One cursor slot: `v2 <seq> <segment> <offset> <crc32c of the text before it>`, padded
/// with spaces to [`SLOT`] bytes, the last a newline (the file stays readable with `cat`).
///
/// An acknowledgement overwrites the older of the two slots in place, one small `pwrite`,
/// where writing a new file, syncing it and renaming it over the old cost about 5% of the
/// agent's CPU at five acknowledgements a second. A write torn by a crash spoils one slot at
/// most, and its checksum gives it away: the other slot still holds the previous cursor.
fn cursor_slot(seq: u64, pos: Pos) -> [u8; SLOT] {
    let body = slot_body(seq, pos.seg, pos.off);
    let text = format!("{body} {}", crc32c(body.as_bytes()));
    let mut slot = [b' '; SLOT];
    slot[..text.len()].copy_from_slice(text.as_bytes());
    slot[SLOT - 1] = b'\n';
    slot
}

/// The checksummed part of a slot, from numbers or from the digits read back.
fn slot_body(
    seq: impl std::fmt::Display,
    seg: impl std::fmt::Display,
    off: impl std::fmt::Display,
) -> String {
    format!("v2 {seq} {seg} {off}")
}

/// The newest valid cursor in a cursor file's bytes, with its sequence number. Reads the
/// format before slots (`<segment> <offset> <crc>`, one line) as sequence 0.
fn parse_cursor(bytes: &[u8]) -> Option<(u64, Pos)> {
    let slot = |chunk: &[u8]| -> Option<(u64, Pos)> {
        let text = std::str::from_utf8(chunk).ok()?;
        let mut parts = text.split_whitespace();
        if parts.next()? != "v2" {
            return None;
        }
        let (seq, seg, off, crc) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let body = slot_body(seq, seg, off);
        (crc32c(body.as_bytes()) == crc.parse::<u32>().ok()?)
            .then_some((seq.parse().ok()?, Pos { seg: seg.parse().ok()?, off: off.parse().ok()? }))
    };
    let newest = bytes.chunks(SLOT).filter_map(slot).max_by_key(|(seq, _)| *seq);
    newest.or_else(|| {
        let mut parts = std::str::from_utf8(bytes).ok()?.split_whitespace();
        let (seg, off, crc) = (
            parts.next()?.parse::<u64>().ok()?,
            parts.next()?.parse::<u64>().ok()?,
            parts.next()?.parse::<u32>().ok()?,
        );
        (crc32c(format!("{seg} {off}").as_bytes()) == crc).then_some((0, Pos { seg, off }))
    })
}

/// Reads the record at the file's current position: `Ok(None)` at a clean end,
/// `Err(torn)` when the rest of the file cannot hold a valid record.
enum Rec {
    Ok(Vec<u8>),
    End,
    Torn,
    Corrupt(u64),
}

fn read_record(f: &mut impl Read, remaining: u64) -> io::Result<Rec> {
    if remaining == 0 {
        return Ok(Rec::End);
    }
    if remaining < 8 {
        return Ok(Rec::Torn);
    }
    let mut head = [0u8; 8];
    f.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD || len as u64 > remaining - 8 {
        return Ok(Rec::Torn);
    }
    let mut payload = vec![0u8; len as usize];
    f.read_exact(&mut payload)?;
    if crc32c(&payload) != crc {
        return Ok(Rec::Corrupt(8 + len as u64));
    }
    Ok(Rec::Ok(payload))
}

impl Wal {
    /// Opens the log under `dir`, repairing what a crash left behind.
    pub fn open(dir: &Path, opts: Options) -> io::Result<(Arc<Wal>, Recovery)> {
        std::fs::create_dir_all(dir.join("cursors"))?;
        let mut rec = Recovery::default();
        let mut segs: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        segs.sort_unstable();
        let mut segments = BTreeMap::new();
        for seg in segs {
            let path = seg_path(dir, seg);
            let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = f.metadata()?.len();
            let mut info = Segment::default();
            let mut off = 0u64;
            let mut r = io::BufReader::new(&mut f);
            loop {
                match read_record(&mut r, len - off)? {
                    Rec::End => break,
                    Rec::Torn => {
                        rec.torn_bytes += len - off;
                        tracing::warn!(segment = %path.display(), offset = off, bytes = len - off, "WAL: cutting a torn tail (a crash during a write); nothing acknowledged was lost");
                        break;
                    }
                    Rec::Corrupt(skip) => {
                        rec.corrupt_records += 1;
                        tracing::warn!(segment = %path.display(), offset = off, "WAL: skipping a record whose checksum does not match");
                        off += skip;
                    }
                    Rec::Ok(payload) => {
                        let samples = match codec::decode(&payload) {
                            Some(b) => {
                                for d in &b.new_series {
                                    rec.max_series_id = rec.max_series_id.max(d.id);
                                }
                                for s in &b.samples {
                                    rec.max_series_id = rec.max_series_id.max(s.series);
                                }
                                b.samples.len() as u32
                            }
                            None => {
                                rec.corrupt_records += 1;
                                0
                            }
                        };
                        info.records.push((off, samples));
                        rec.records += 1;
                        off += 8 + payload.len() as u64;
                    }
                }
            }
            drop(r);
            if off < len {
                f.set_len(off)?;
                f.sync_all()?;
            }
            info.size = off;
            if info.records.is_empty() {
                std::fs::remove_file(&path)?;
            } else {
                segments.insert(seg, info);
                rec.segments += 1;
            }
        }
        // Segment numbers never go backwards: past every segment and every saved cursor,
        // or an endpoint whose cursor points beyond the deleted data would skip new records.
        let max_cursor_seg = std::fs::read_dir(dir.join("cursors"))?
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| parse_cursor(&b).map(|(_, p)| p.seg))
            .max()
            .unwrap_or(0);
        let next = segments.keys().next_back().map_or(1, |s| s + 1).max(max_cursor_seg + 1);
        let wal = Wal {
            dir: dir.to_owned(),
            opts: opts.clone(),
            w: Mutex::new(Writer {
                segments,
                file: None,
                cur: Pos { seg: next, off: 0 },
                first_seg: next,
                labels: Arc::new(RwLock::new(IdMap::new())),
                gone: BTreeMap::new(),
                last_sync: Instant::now(),
                dirty: false,
                cursors: BTreeMap::new(),
                dropped: BTreeMap::new(),
                cursor_files: BTreeMap::new(),
                cursors_dirty: false,
                buf: Vec::new(),
                force_rotate: false,
                segment_limit: opts.segment_size,
                data_bytes: 0,
                steady: HashMap::new(),
                ids_buf: Vec::new(),
            }),
            end: watch::channel(Pos { seg: next, off: 0 }).0,
            metrics: WalMetrics::default(),
        };
        wal.update_size(&wal.w.lock().expect("wal lock"));
        Ok((Arc::new(wal), rec))
    }

    fn update_size(&self, w: &Writer) {
        self.metrics.size_bytes.store(w.segments.values().map(|s| s.size).sum::<u64>(), Relaxed);
    }

    /// The position after the last written record; changes whenever a record is written.
    pub fn subscribe(&self) -> watch::Receiver<Pos> {
        self.end.subscribe()
    }

    pub fn end(&self) -> Pos {
        *self.end.borrow()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one batch (blocking I/O). On failure nothing partial stays in the log.
    pub fn append(&self, batch: &ScrapeBatch) -> io::Result<Pos> {
        let mut w = self.w.lock().expect("wal lock");
        let now = Instant::now();
        let shared = w.labels.clone();
        // Known before anything below can fail: the scrape cache announces a series once, so
        // a batch lost to a failed rotation or write must not take its definitions with it.
        if !batch.new_series.is_empty() {
            let mut labels = shared.write().expect("labels lock");
            for d in &batch.new_series {
                labels.insert(d.id, d.labels.clone());
            }
        }
        let rotated = if w.file.is_none() || w.data_bytes >= w.segment_limit || w.force_rotate {
            w.force_rotate = false;
            self.rotate(&mut w)
        } else {
            Ok(())
        };
        // By the segment this batch's record goes to, which may still use them (for stale
        // markers); noted whether or not anything fails, or a failed write would keep them
        // for good.
        if !batch.gone.is_empty() {
            let seg = w.cur.seg;
            w.gone.entry(seg).or_default().extend_from_slice(&batch.gone);
        }
        rotated?;
        let tag = w.tag(w.cur.seg);
        // The batch's series ids, fingerprinted (128 bits, as the scrape cache's keys; a
        // collision would have to happen between two batches of one target).
        let mut ids = std::mem::take(&mut w.ids_buf);
        ids.clear();
        ids.extend(batch.samples.iter().flat_map(|s| s.series.to_le_bytes()));
        let fingerprint = xxhash_rust::xxh3::xxh3_128(&ids);
        w.ids_buf = ids;
        let steady = batch.new_series.is_empty() && w.steady.get(&batch.target) == Some(&(tag, fingerprint));
        // Definitions this segment has not stated yet.
        let mut defs: Vec<SeriesDef> = Vec::new();
        if !steady {
            let labels = shared.read().expect("labels lock");
            for s in &batch.samples {
                if let Some(l) = labels.get(s.series)
                    && !labels.marked(s.series, tag)
                {
                    defs.push(SeriesDef { id: s.series, labels: l.clone() });
                }
            }
        }
        defs.sort_by_key(|d| d.id);
        defs.dedup_by_key(|d| d.id);
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        buf.extend_from_slice(&[0u8; 8]);
        let defs_len = codec::encode(batch, &defs, &mut buf);
        let len = (buf.len() - 8) as u32;
        let crc = crc32c(&buf[8..]);
        buf[..4].copy_from_slice(&len.to_le_bytes());
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let at = w.cur;
        let result = w.file.as_mut().expect("rotated above").write_all(&buf);
        if let Err(e) = result {
            // Cut whatever part made it, so the log stays a sequence of whole records.
            if let Some(f) = w.file.as_mut() {
                let _ = f.set_len(at.off);
                let _ = f.seek(SeekFrom::Start(at.off));
            }
            w.buf = buf;
            self.metrics.write_failures.fetch_add(1, Relaxed);
            self.metrics.dropped_batches.fetch_add(1, Relaxed);
            if e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull {
                // Disk full: make room by dropping the oldest data, as the size cap would,
                // and move on to a fresh segment so the full one can go too.
                let on_disk: u64 = w.segments.values().map(|s| s.size).sum();
                w.segment_limit = w.segment_limit.min((on_disk / 4).max(8 << 10));
                // Close the full segment now so it can be dropped at once; if even an empty
                // new file cannot be made, rotate before the next write instead.
                if w.cur.off > 0 && self.rotate(&mut w).is_err() {
                    w.force_rotate = true;
                }
                self.drop_oldest(&mut w, "disk full");
            }
            return Err(e);
        }
        if !defs.is_empty() {
            let mut labels = shared.write().expect("labels lock");
            for d in &defs {
                labels.mark(d.id, tag);
            }
        }
        // Every series of this batch is stated in this segment now.
        w.steady.insert(batch.target, (tag, fingerprint));
        let seg = at.seg;
        let info = w.segments.entry(seg).or_default();
        info.records.push((at.off, batch.samples.len() as u32));
        info.size = at.off + buf.len() as u64;
        w.cur.off += buf.len() as u64;
        w.data_bytes += (buf.len() - defs_len) as u64;
        w.dirty = true;
        self.metrics.records_written.fetch_add(1, Relaxed);
        self.metrics.bytes_written.fetch_add(buf.len() as u64, Relaxed);
        self.metrics.samples_written.fetch_add(batch.samples.len() as u64, Relaxed);
        w.buf = keep_for_next(buf);
        if now.duration_since(w.last_sync) >= self.opts.sync_interval {
            self.sync_locked(&mut w)?;
        }
        let end = w.cur;
        self.enforce_cap(&mut w);
        self.update_size(&w);
        drop(w);
        self.end.send_replace(end);
        Ok(at)
    }

    fn rotate(&self, w: &mut Writer) -> io::Result<()> {
        if w.file.is_some() {
            self.sync_locked(w)?;
            w.cur = Pos { seg: w.cur.seg + 1, off: 0 };
        }
        let f = OpenOptions::new().create(true).append(true).open(seg_path(&self.dir, w.cur.seg))?;
        w.file = Some(f);
        w.segments.insert(w.cur.seg, Segment::default());
        w.data_bytes = 0;
        w.steady.clear();
        self.delete_consumed(w);
        Ok(())
    }

    fn sync_locked(&self, w: &mut Writer) -> io::Result<()> {
        self.sync_cursors(w)?;
        if w.dirty {
            if let Some(f) = &w.file {
                f.sync_data()?;
                self.metrics.fsyncs.fetch_add(1, Relaxed);
            }
            w.dirty = false;
        }
        w.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs if anything is unsynced; called on a timer so the tail is durable within
    /// `sync_interval` even when no new record arrives.
    pub fn sync(&self) -> io::Result<()> {
        let mut w = self.w.lock().expect("wal lock");
        self.sync_locked(&mut w)
    }

    /// Registers an endpoint and returns where it must start: its saved cursor, or the
    /// oldest data when the cursor is missing or damaged (re-send rather than lose).
    pub fn register(&self, endpoint: &str) -> Pos {
        let mut w = self.w.lock().expect("wal lock");
        let oldest = w.segments.keys().next().map_or(w.cur, |&seg| Pos { seg, off: 0 });
        let saved = std::fs::read(cursor_path(&self.dir, endpoint)).ok().and_then(|b| parse_cursor(&b));
        let saved = saved.map(|(_, p)| p);
        let start = match saved {
            Some(p) if p >= oldest => p,
            Some(p) => {
                tracing::warn!(endpoint, cursor = ?p, "WAL: the cursor points at deleted data; resuming from the oldest segment");
                oldest
            }
            None => {
                if cursor_path(&self.dir, endpoint).exists() {
                    tracing::warn!(
                        endpoint,
                        "WAL: cursor file is damaged; re-sending from the oldest segment (duplicates possible, nothing lost)"
                    );
                }
                oldest
            }
        };
        w.cursors.insert(endpoint.to_owned(), start);
        start
    }

    /// Records that `endpoint` has sent everything before `pos`, persists the cursor and
    /// deletes segments no endpoint needs any more.
    ///
    /// The cursor is written at once, so a killed agent resumes from it; it reaches the disk
    /// with the WAL's next sync (within `sync_interval`), as the records do.
    pub fn ack(&self, endpoint: &str, pos: Pos) -> io::Result<()> {
        let mut w = self.w.lock().expect("wal lock");
        self.save_cursor(&mut w, endpoint, pos)?;
        w.cursors.insert(endpoint.to_owned(), pos);
        self.delete_consumed(&mut w);
        self.update_size(&w);
        Ok(())
    }

    /// Overwrites the older slot of `endpoint`'s cursor file with `pos`.
    fn save_cursor(&self, w: &mut Writer, endpoint: &str, pos: Pos) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if !w.cursor_files.contains_key(endpoint) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(cursor_path(&self.dir, endpoint))?;
            let mut old = Vec::new();
            (&f).read_to_end(&mut old)?;
            let seq = parse_cursor(&old).map_or(0, |(seq, _)| seq);
            // Both slots at first, so no slot of another format is left to misread.
            let mut both = cursor_slot(seq + 1, pos).to_vec();
            both.extend_from_slice(&cursor_slot(seq + 1, pos));
            f.write_all_at(&both, 0)?;
            f.set_len(both.len() as u64)?;
            w.cursor_files.insert(endpoint.to_owned(), (f, seq + 1));
        } else {
            let (f, seq) = w.cursor_files.get_mut(endpoint).expect("checked above");
            *seq += 1;
            f.write_all_at(&cursor_slot(*seq, pos), (*seq % 2) * SLOT as u64)?;
        }
        w.cursors_dirty = true;
        if self.opts.sync_interval.is_zero() {
            self.sync_cursors(w)?;
        }
        Ok(())
    }

    fn sync_cursors(&self, w: &mut Writer) -> io::Result<()> {
        if w.cursors_dirty {
            for (f, _) in w.cursor_files.values() {
                f.sync_data()?;
            }
            w.cursors_dirty = false;
        }
        Ok(())
    }

    /// Segments wholly before every endpoint's cursor (and not being written) go.
    fn delete_consumed(&self, w: &mut Writer) {
        // With no endpoint registered nobody has consumed anything: delete nothing.
        let Some(min) = w.cursors.values().min().copied() else {
            return;
        };
        let doomed: Vec<u64> =
            w.segments.keys().copied().filter(|&s| s < min.seg && s != w.cur.seg).collect();
        for seg in doomed {
            if std::fs::remove_file(seg_path(&self.dir, seg)).is_ok() || !seg_path(&self.dir, seg).exists() {
                w.segments.remove(&seg);
                self.metrics.segments_deleted.fetch_add(1, Relaxed);
            }
        }
        w.forget_gone();
    }

    fn enforce_cap(&self, w: &mut Writer) {
        while w.segments.values().map(|s| s.size).sum::<u64>() > self.opts.max_size && w.segments.len() > 1 {
            if !self.drop_oldest(w, "WAL size cap (wal.max_size)") {
                break;
            }
        }
    }

    /// Deletes the oldest segment although some endpoint still needs it; counts, per
    /// endpoint, the samples it will never send, and moves those cursors forward.
    fn drop_oldest(&self, w: &mut Writer, why: &str) -> bool {
        let Some((&seg, info)) = w.segments.iter().next() else {
            return false;
        };
        if seg == w.cur.seg {
            return false;
        }
        let info = info.clone();
        let next = Pos { seg: seg + 1, off: 0 };
        let mut lost_total = 0;
        let updates: Vec<(String, u64)> = w
            .cursors
            .iter()
            .filter(|(_, c)| c.seg <= seg)
            .map(|(name, c)| {
                let lost: u64 = info
                    .records
                    .iter()
                    .filter(|(off, _)| c.seg < seg || *off >= c.off)
                    .map(|(_, n)| *n as u64)
                    .sum();
                (name.clone(), lost)
            })
            .collect();
        for (name, lost) in updates {
            *w.dropped.entry(name.clone()).or_default() += lost;
            w.cursors.insert(name, next);
            lost_total += lost;
        }
        let _ = std::fs::remove_file(seg_path(&self.dir, seg));
        w.segments.remove(&seg);
        w.forget_gone();
        self.metrics.segments_deleted.fetch_add(1, Relaxed);
        tracing::warn!(
            segment = seg,
            samples_lost = lost_total,
            reason = why,
            "WAL: dropped the oldest unsent data to keep scraping; raise wal.max_size or fix the endpoint"
        );
        true
    }

    /// Samples each endpoint lost to the size cap or a full disk.
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        self.w.lock().expect("wal lock").dropped.clone()
    }

    /// The cursor the WAL holds for `endpoint` (moved forward when data was dropped).
    pub fn cursor(&self, endpoint: &str) -> Option<Pos> {
        self.w.lock().expect("wal lock").cursors.get(endpoint).copied()
    }

    /// Makes the next append start a new segment.
    #[cfg(test)]
    fn rotate_next(&self) {
        self.w.lock().expect("wal lock").force_rotate = true;
    }

    /// Series whose labels the writer holds.
    #[cfg(test)]
    fn known_series(&self) -> usize {
        self.w.lock().expect("wal lock").labels.read().expect("labels lock").len()
    }

    /// The writer's series table, to look labels up by id (see [`LabelTable`]).
    pub fn label_table(&self) -> LabelTable {
        LabelTable(self.w.lock().expect("wal lock").labels.clone())
    }

    /// Opens a reader positioned at `from`.
    pub fn reader(&self, from: Pos) -> io::Result<Reader> {
        let shared = self.w.lock().expect("wal lock").labels.clone();
        let mut r = Reader {
            shared,
            dir: self.dir.clone(),
            pos: Pos { seg: from.seg, off: 0 },
            file: None,
            defs: HashMap::new(),
        };
        // Read the segment from its start to learn the definitions before `from`.
        while r.pos.off < from.off {
            match r.next(from)? {
                Some(_) => {}
                None => break,
            }
        }
        r.pos = from;
        Ok(r)
    }
}

/// Reads records in order, resolving series ids to labels.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    pos: Pos,
    file: Option<(u64, File)>,
    defs: HashMap<u64, SeriesLabels>,
    shared: SharedLabels,
}

/// One record as read back.
#[derive(Debug)]
pub struct Entry {
    pub at: Pos,
    /// Where the next record starts.
    pub next: Pos,
    pub batch: ScrapeBatch,
}

impl Reader {
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// Labels of a series defined in the current segment.
    pub fn labels(&self, id: u64) -> Option<SeriesLabels> {
        if let Some(l) = self.defs.get(&id) {
            return Some(l.clone());
        }
        self.shared.read().expect("labels lock").get(id).cloned()
    }

    /// The writer's series table, where [`labels`](Self::labels) looks for the series this
    /// process wrote (the others are [`recovered`](Self::recovered)).
    pub fn table(&self) -> LabelTable {
        LabelTable(self.shared.clone())
    }

    /// Labels of a series the writer's table does not hold, defined in the current segment: a
    /// segment recovered from before this process. They live only as long as the reader is in
    /// that segment, so whoever keeps them needs a copy.
    pub fn recovered(&self, id: u64) -> Option<SeriesLabels> {
        self.defs.get(&id).cloned()
    }

    /// The next record before `end`, if any. Moves to the next segment at a segment's end;
    /// skips records that do not check out (they were counted at recovery).
    pub fn next(&mut self, end: Pos) -> io::Result<Option<Entry>> {
        loop {
            if self.pos >= end {
                return Ok(None);
            }
            if self.file.as_ref().is_none_or(|(s, _)| *s != self.pos.seg) {
                match File::open(seg_path(&self.dir, self.pos.seg)) {
                    Ok(f) => {
                        self.file = Some((self.pos.seg, f));
                        self.defs.clear();
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Deleted (size cap) or never written: go on with the next one.
                        self.pos = Pos { seg: self.pos.seg + 1, off: 0 };
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let (_, f) = self.file.as_mut().expect("opened above");
            let len = f.metadata()?.len();
            let limit = if self.pos.seg == end.seg { end.off.min(len) } else { len };
            if self.pos.off >= limit {
                if self.pos.seg < end.seg {
                    self.pos = Pos { seg: self.pos.seg + 1, off: 0 };
                    continue;
                }
                return Ok(None);
            }
            f.seek(SeekFrom::Start(self.pos.off))?;
            let at = self.pos;
            match read_record(f, limit - self.pos.off)? {
                Rec::Ok(payload) => {
                    self.pos.off += 8 + payload.len() as u64;
                    let shared = self.shared.read().expect("labels lock");
                    let decoded = codec::decode_with(&payload, |id| shared.get(id).cloned());
                    let Some(mut batch) = decoded else { continue };
                    // Series this process wrote are in the writer's table as long as a segment
                    // on disk states them; only older ones (recovered segments) need a copy here.
                    for d in batch.new_series.iter().filter(|d| shared.get(d.id).is_none()) {
                        self.defs.insert(d.id, d.labels.clone());
                    }
                    drop(shared);
                    batch.new_series.clear();
                    return Ok(Some(Entry { at, next: self.pos, batch }));
                }
                Rec::Corrupt(skip) => self.pos.off += skip,
                Rec::End | Rec::Torn => {
                    // The rest of this segment is unreadable: go on with the next one.
                    self.pos = Pos { seg: self.pos.seg + 1, off: 0 };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
