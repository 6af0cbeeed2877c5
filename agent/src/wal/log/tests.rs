//! WAL tests: round trips across segments, crash repair (torn tails, corrupt records),
//! cursors, the size cap, and a property test against an in-memory model with injected
//! crashes.

use std::io::Write;
use std::time::Duration;

use ferry_protocol::{LabelSet, STALE_NAN};

use crate::series_labels::SeriesLabels;
use proptest::prelude::*;

use super::*;
use crate::scrape::batch::{BatchSample, ScrapeBatch, SeriesDef};

/// A test's own directory, removed when the test ends, passed or failed.
struct TmpDir(std::path::PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TmpDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(tag: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("ferry-wal-{tag}-{}-{}", std::process::id(), rand_u64()));
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

fn rand_u64() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn opts(segment_size: u64, max_size: u64) -> Options {
    Options { sync_interval: Duration::ZERO, max_size, segment_size }
}

/// Batch number `n`: series n%5 and 100+n (announced here), values derived from n.
fn batch(n: u64) -> ScrapeBatch {
    let def = |id: u64| SeriesDef {
        id,
        labels: SeriesLabels::from_set(&LabelSet::from_pairs([("__name__", format!("m{id}"))]).unwrap()),
    };
    ScrapeBatch {
        target: n % 3,
        timestamp: 1_000_000 + n as i64 * 1000,
        new_series: vec![def(n % 5), def(100 + n)],
        samples: vec![
            BatchSample { series: n % 5, timestamp: 1_000_000 + n as i64 * 1000, value: n as f64 * 1.5 },
            BatchSample {
                series: 100 + n,
                timestamp: 1_000_000 + n as i64 * 1000,
                value: if n.is_multiple_of(7) { STALE_NAN } else { n as f64 },
            },
        ],
        ..Default::default()
    }
}

/// Reads everything from `from`; returns (at, timestamp) pairs, checking that every sample
/// resolves to its labels (unless listed in `unresolvable`).
fn read_all(wal: &Wal, from: Pos) -> Vec<(Pos, i64)> {
    read_all_except(wal, from, &[])
}

fn read_all_except(wal: &Wal, from: Pos, unresolvable: &[u64]) -> Vec<(Pos, i64)> {
    let mut r = wal.reader(from).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.next(wal.end()).unwrap() {
        for s in &e.batch.samples {
            match r.labels(s.series) {
                Some(ls) => assert_eq!(ls.metric_name().unwrap(), format!("m{}", s.series)),
                None => {
                    assert!(unresolvable.contains(&s.series), "series {} unresolved at {:?}", s.series, e.at)
                }
            }
        }
        out.push((e.at, e.batch.timestamp));
    }
    out
}

#[test]
fn round_trip_across_segments_and_restarts() {
    let dir = tmp("rt");
    let (wal, rec) = Wal::open(&dir, opts(150, 1 << 30)).unwrap();
    assert_eq!(rec, Recovery::default());
    let mut positions = Vec::new();
    for n in 0..40 {
        positions.push(wal.append(&batch(n)).unwrap());
    }
    assert!(wal.end().seg > 5, "small segments rotate: {:?}", wal.end());
    let all = read_all(&wal, Pos { seg: 1, off: 0 });
    assert_eq!(all.len(), 40);
    assert_eq!(all.iter().map(|a| a.0).collect::<Vec<_>>(), positions);
    // Start mid-segment: labels defined earlier in that segment still resolve.
    let mid = positions[17];
    assert_eq!(read_all(&wal, mid).len(), 40 - 17);
    drop(wal);
    let (wal, rec) = Wal::open(&dir, opts(150, 1 << 30)).unwrap();
    assert_eq!((rec.records, rec.corrupt_records, rec.torn_bytes), (40, 0, 0));
    assert_eq!(rec.max_series_id, 139);
    assert!(wal.end().seg > positions.last().unwrap().seg, "a restart writes a new segment");
    wal.append(&batch(40)).unwrap();
    assert_eq!(read_all(&wal, Pos { seg: 1, off: 0 }).len(), 41);
}

#[test]
fn torn_tail_and_corrupt_record_are_repaired_without_a_human() {
    let dir = tmp("torn");
    let (wal, _) = Wal::open(&dir, opts(1 << 20, 1 << 30)).unwrap();
    let p: Vec<Pos> = (0..10).map(|n| wal.append(&batch(n)).unwrap()).collect();
    drop(wal);
    let seg = seg_path(&dir, 1);
    // A torn write: half a record header at the end.
    std::fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[9, 0, 0]).unwrap();
    // Flip a byte inside record 4's payload.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[p[4].off as usize + 12] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let (wal, rec) = Wal::open(&dir, opts(1 << 20, 1 << 30)).unwrap();
    assert_eq!((rec.torn_bytes, rec.corrupt_records, rec.records), (3, 1, 9));
    // Record 4 first defined series 4 in this segment; record 9's sample of series 4 cannot be
    // resolved any more and is the only casualty besides record 4 itself.
    let got: Vec<i64> = read_all_except(&wal, Pos { seg: 1, off: 0 }, &[4]).iter().map(|a| a.1).collect();
    let want: Vec<i64> = (0..10).filter(|&n| n != 4).map(|n| 1_000_000 + n * 1000).collect();
    assert_eq!(got, want);
}

#[test]
fn cursors_survive_restarts_and_damage_falls_back_to_resend() {
    let dir = tmp("cursor");
    let (wal, _) = Wal::open(&dir, opts(250, 1 << 30)).unwrap();
    assert_eq!(wal.register("ep"), Pos { seg: 1, off: 0 });
    let p: Vec<Pos> = (0..20).map(|n| wal.append(&batch(n)).unwrap()).collect();
    wal.ack("ep", p[12]).unwrap();
    assert!(!seg_path(&dir, 1).exists(), "segments before every cursor are deleted");
    drop(wal);
    let (wal, _) = Wal::open(&dir, opts(250, 1 << 30)).unwrap();
    assert_eq!(wal.register("ep"), p[12]);
    assert_eq!(read_all(&wal, p[12]).len(), 8);
    // A second endpoint that never acked starts at the oldest surviving data.
    let other = wal.register("new-endpoint");
    assert_eq!(other.off, 0);
    drop(wal);
    std::fs::write(dir.join("cursors").join("ep"), "garbage").unwrap();
    let (wal, _) = Wal::open(&dir, opts(250, 1 << 30)).unwrap();
    let fallback = wal.register("ep");
    assert!(fallback <= p[12] && fallback.off == 0, "{fallback:?}");
}

#[test]
fn size_cap_drops_oldest_and_counts_per_endpoint() {
    let dir = tmp("cap");
    let (wal, _) = Wal::open(&dir, opts(200, 1000)).unwrap();
    wal.register("slow");
    wal.register("fast");
    let mut last = Pos::default();
    for n in 0..60 {
        last = wal.append(&batch(n)).unwrap();
        if n % 5 == 0 {
            wal.ack("fast", wal.end()).unwrap();
        }
    }
    let size: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(size <= 1000 + 400, "{size} bytes on disk");
    let dropped = wal.dropped();
    assert!(dropped.get("slow").copied().unwrap_or(0) > 0, "{dropped:?}");
    let left = read_all(&wal, wal.cursor("slow").unwrap());
    // What slow can still read plus what it lost is everything written (2 samples each).
    assert_eq!(left.len() as u64 * 2 + dropped["slow"], 60 * 2);
    assert!(left.last().unwrap().0 == last);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Appends, acks and crashes (with a torn tail) in any order: after each reopen, reading
    /// from the saved cursor yields exactly the acknowledged-but-unsent suffix of what was
    /// written, in order.
    #[test]
    fn model_with_crashes(ops in prop::collection::vec(0u8..10, 1..60), seg_size in 150u64..2000) {
        let dir = tmp("model");
        let (mut wal, _) = Wal::open(&dir, opts(seg_size, 1 << 30)).unwrap();
        wal.register("ep");
        let mut written: Vec<(Pos, i64)> = Vec::new();
        let mut acked = 0usize; // index of the first unacked record
        let mut n = 0u64;
        for op in ops {
            match op {
                0..=5 => {
                    let b = batch(n);
                    let at = wal.append(&b).unwrap();
                    written.push((at, b.timestamp));
                    n += 1;
                }
                6 | 7 if acked < written.len() => {
                    acked = (acked + 1 + (op as usize)).min(written.len());
                    let pos = written.get(acked).map_or(wal.end(), |w| w.0);
                    wal.ack("ep", pos).unwrap();
                }
                _ => {
                    // Crash: drop, tear the tail, reopen.
                    let end = wal.end();
                    drop(wal);
                    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(seg_path(&dir, end.seg)) {
                        let _ = f.write_all(&[1, 2, 3, 4, 5]);
                    }
                    wal = Wal::open(&dir, opts(seg_size, 1 << 30)).unwrap().0;
                    let start = wal.register("ep");
                    let expected_start = written.get(acked).map_or(start, |w| w.0);
                    prop_assert!(start <= expected_start, "cursor {start:?} past unacked data {expected_start:?}");
                }
            }
        }
        let start = wal.register("ep");
        let got = read_all(&wal, start);
        let want: Vec<i64> = written[acked..].iter().map(|w| w.1).collect();
        let got_ts: Vec<i64> = got.iter().map(|g| g.1).collect();
        prop_assert_eq!(got_ts, want);
    }
}

#[test]
fn labels_larger_than_a_segment_are_not_restated_by_every_record() {
    // 500 series with ~100-byte labels: about 50 KB of definitions, over the 8 KiB segment.
    let dir = tmp("big-labels");
    let (wal, _) = Wal::open(&dir, opts(8 << 10, 1 << 30)).unwrap();
    let defs: Vec<SeriesDef> = (0..500u64)
        .map(|id| SeriesDef {
            id,
            labels: SeriesLabels::from_set(
                &LabelSet::from_pairs([
                    ("__name__", "container_cpu_usage_seconds_total".to_owned()),
                    ("id", format!("/kubepods/burstable/pod{id:060}")),
                ])
                .unwrap(),
            ),
        })
        .collect();
    let scrape = |n: i64, new_series: Vec<SeriesDef>| ScrapeBatch {
        target: 1,
        timestamp: n * 1000,
        new_series,
        samples: (0..500u64)
            .map(|id| BatchSample { series: id, timestamp: n * 1000, value: n as f64 })
            .collect(),
        ..Default::default()
    };
    wal.append(&scrape(0, defs)).unwrap();
    let first = wal.metrics.bytes_written.load(Relaxed);
    assert!(first > 40_000, "the first record states every series ({first} bytes)");
    for n in 1..=12 {
        wal.append(&scrape(n, Vec::new())).unwrap();
    }
    let rest = wal.metrics.bytes_written.load(Relaxed) - first;
    // A record's samples take about 1.5 KB: a segment holds several before it rotates, and
    // only a rotation restates the labels. Restating on every record would write over 600 KB.
    assert!(rest < 4 * first, "12 records wrote {rest} bytes after a first of {first}");
    let mut r = wal.reader(Pos { seg: 0, off: 0 }).unwrap();
    let mut records = 0;
    while let Some(e) = r.next(wal.end()).unwrap() {
        assert!(e.batch.samples.iter().all(|s| r.labels(s.series).is_some()), "every sample resolves");
        records += 1;
    }
    assert_eq!(records, 13);
}

/// A series leaves the writer's table only when its target has said it is gone and no
/// segment on disk uses it any more: a reader behind the writer still resolves a gone
/// series' last samples, and a series in use stays however long segments take to fill.
#[test]
fn gone_series_are_forgotten_once_their_segments_are_deleted() {
    let dir = tmp("gone");
    let def = |id: u64| SeriesDef {
        id,
        labels: SeriesLabels::from_set(&LabelSet::from_pairs([("__name__", format!("m{id}"))]).unwrap()),
    };
    let batch = |n: i64, new_series: Vec<SeriesDef>, ids: &[u64], gone: &[u64]| ScrapeBatch {
        target: 1,
        timestamp: n,
        new_series,
        samples: ids.iter().map(|&series| BatchSample { series, timestamp: n, value: 1.0 }).collect(),
        gone: gone.to_vec(),
        ..Default::default()
    };
    {
        let (wal, _) = Wal::open(&dir, opts(1 << 20, 1 << 30)).unwrap();
        wal.register("ep");
        let first = wal.append(&batch(1, vec![def(7), def(8), def(9)], &[7, 8, 9], &[])).unwrap();
        // 8's last sample (a stale marker) and its going in one batch, 9's going alone.
        wal.append(&batch(2, vec![], &[7, 8], &[8])).unwrap();
        wal.append(&batch(3, vec![], &[7], &[9])).unwrap();
        // A reader opened now, and one that had read the definitions before they went.
        let mut behind = wal.reader(first).unwrap();
        assert!(behind.next(wal.end()).unwrap().is_some());
        assert_eq!(wal.known_series(), 3, "the segment on disk uses 8 and 9");
        wal.rotate_next();
        let second = wal.append(&batch(4, vec![], &[7], &[])).unwrap();
        assert_eq!(second.seg, first.seg + 1);
        assert_eq!(wal.known_series(), 3, "the first segment is not sent yet");
        let e = behind.next(wal.end()).unwrap().unwrap();
        assert!(
            e.batch.samples.iter().all(|s| behind.labels(s.series).is_some()),
            "8's last sample resolves"
        );
        // The first segment is sent and deleted: nothing on disk uses 8 or 9 now.
        wal.ack("ep", second).unwrap();
        wal.rotate_next();
        wal.append(&batch(5, vec![], &[7], &[])).unwrap();
        assert_eq!(wal.known_series(), 1, "8 and 9 are forgotten, 7 is kept");
        let read = read_all(&wal, second);
        assert_eq!(read.iter().map(|r| r.1).collect::<Vec<_>>(), [4, 5], "7 resolves in every segment");
    }
    // A new process knows nothing but what the segments state.
    let (wal, _) = Wal::open(&dir, opts(1 << 20, 1 << 30)).unwrap();
    let read = read_all(&wal, Pos { seg: 2, off: 0 });
    assert_eq!(read.iter().map(|r| r.1).collect::<Vec<_>>(), [4, 5]);
}

/// Cursors are overwritten in place, in two slots: a torn or damaged newest slot falls back
/// to the one before (a re-send, never a skip), and the one-line format of earlier versions
/// is still read.
#[test]
fn cursor_slots_survive_a_torn_write_and_read_the_old_format() {
    let dir = tmp("slots");
    let (wal, _) = Wal::open(&dir, opts(1 << 20, 1 << 30)).unwrap();
    wal.register("ep");
    let p: Vec<Pos> = (0..6).map(|n| wal.append(&batch(n)).unwrap()).collect();
    for &at in &p[1..5] {
        wal.ack("ep", at).unwrap();
    }
    drop(wal);
    let path = dir.join("cursors").join("ep");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 2 * SLOT, "two fixed-size slots");
    assert_eq!(parse_cursor(&bytes).map(|c| c.1), Some(p[4]));
    // Tear the newest slot: the previous cursor comes back.
    let newest = (0..2).max_by_key(|i| parse_cursor(&bytes[i * SLOT..(i + 1) * SLOT]).unwrap().0).unwrap();
    bytes[newest * SLOT + 5] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let (wal, _) = Wal::open(&dir, opts(1 << 20, 1 << 30)).unwrap();
    assert_eq!(wal.register("ep"), p[3]);
    // And writing goes on from there.
    wal.ack("ep", p[5]).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(&dir, opts(1 << 20, 1 << 30)).unwrap();
    assert_eq!(wal.register("ep"), p[5]);
    drop(wal);
    // The earlier one-line format.
    let legacy =
        format!("{} {} {}\n", p[2].seg, p[2].off, crc32c(format!("{} {}", p[2].seg, p[2].off).as_bytes()));
    std::fs::write(&path, legacy).unwrap();
    let (wal, _) = Wal::open(&dir, opts(1 << 20, 1 << 30)).unwrap();
    assert_eq!(wal.register("ep"), p[2]);
    wal.ack("ep", p[4]).unwrap();
    assert_eq!(parse_cursor(&std::fs::read(&path).unwrap()).map(|c| c.1), Some(p[4]));
}

#[test]
fn steady_batches_skip_lookups_but_every_segment_still_states_its_series() {
    let dir = tmp("steady");
    let (wal, _) = Wal::open(&dir, opts(200, 1 << 30)).unwrap();
    // One target's batch, the same series every time; only the first announces them.
    let steady = |n: u64| {
        let mut b = batch(0);
        b.samples.iter_mut().for_each(|s| s.timestamp += n as i64);
        if n > 0 {
            b.new_series.clear();
        }
        b
    };
    let mut starts = Vec::new();
    for n in 0..60 {
        let at = wal.append(&steady(n)).unwrap();
        if at.off == 0 {
            starts.push(at);
        }
    }
    assert!(starts.len() > 3, "segments rotated: {starts:?}");
    drop(wal);
    // After a restart nothing is known but what the segments say: reading from the start of
    // any segment must find the labels stated in that segment.
    let (wal, _) = Wal::open(&dir, opts(200, 1 << 30)).unwrap();
    for at in &starts {
        assert!(!read_all(&wal, *at).is_empty(), "{at:?}");
    }
}

#[test]
fn a_slot_is_a_handle() {
    // One slot per active series (issue #9): the labels' thin handle, whose niche makes the
    // empty slot; whether the segment states it yet is a bit beside.
    assert_eq!(std::mem::size_of::<Option<SeriesLabels>>(), 8);
}

/// A record buffer grown by a large record (series definitions) is given back once records
/// are small again; one that steady records use is kept.
#[test]
fn a_record_buffer_keeps_what_steady_records_need() {
    let kept = keep_for_next(vec![0u8; 1 << 20]);
    assert!(kept.capacity() >= 1 << 20, "the record just written used it all");
    let mut small = kept;
    small.clear();
    small.resize(20 << 10, 0);
    let kept = keep_for_next(small);
    assert!(kept.is_empty() && kept.capacity() >= KEEP_RECORD_BUF && kept.capacity() < 1 << 20);
    let mut steady = Vec::with_capacity(200 << 10);
    steady.resize(100 << 10, 0u8);
    assert!(keep_for_next(steady).capacity() >= 200 << 10, "half used: kept");
}
