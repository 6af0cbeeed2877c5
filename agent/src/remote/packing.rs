//! Requests being packed: the scrapes the dispatcher has read from the WAL and not yet
//! handed to a lane, held per target.
//!
//! A target's consecutive scrapes merge by series ([`merge_scrape`]): each series goes in
//! the request once, with all its samples, so its labels (RW1) or refs and symbols (RW2)
//! travel once per request instead of once per scrape. A target's scrapes are held until
//! one more would pass `max_samples_per_send`, or the first has waited
//! `batch_send_deadline` (at the default, 0, that is as soon as the dispatcher has read all
//! the WAL holds). Due targets are then packed together, per lane, into requests of up to
//! `max_samples_per_send` samples. Whatever is held, only whole scrapes go in a request.

use std::time::{Duration, Instant};

use super::encode::{Payload, Sample, merge_scrape};
use crate::scrape::parse::MetricType;
use crate::wal::Pos;

/// RW1 metadata entry: family, type, help, unit.
pub type MetadataEntry = (String, MetricType, String, String);

/// A request waiting to go out, with the records it completes.
#[derive(Debug)]
pub struct Job {
    pub payload: Payload,
    /// Starts of the records this job carries (all of them, or a part).
    pub records: Vec<Pos>,
    pub newest_ts: i64,
}

/// One target's held scrapes.
#[derive(Debug)]
struct Held {
    /// Runs of merged scrapes: a scrape that cannot merge (the target's series changed)
    /// starts a new one.
    runs: Vec<Vec<Sample>>,
    metadata: Vec<MetadataEntry>,
    records: Vec<Pos>,
    newest_ts: i64,
    samples: usize,
    since: Instant,
}

impl Held {
    fn add(&mut self, samples: Vec<Sample>, metadata: Vec<MetadataEntry>, at: Pos, ts: i64) {
        self.samples += samples.len();
        let rest = match self.runs.last_mut() {
            Some(last) => merge_scrape(last, samples).err(),
            None => Some(samples),
        };
        if let Some(rest) = rest {
            self.runs.push(rest);
        }
        self.metadata.extend(metadata);
        self.records.push(at);
        self.newest_ts = self.newest_ts.max(ts);
    }
}

/// Every target's held scrapes.
#[derive(Debug)]
pub struct Packing {
    held: hashbrown::HashMap<u64, Held>,
    max_samples: usize,
    deadline: Duration,
    /// Samples held in all, and the records they belong to.
    samples: usize,
    records: usize,
    /// Above this many held samples, everything is sent (a long backlog of many small
    /// targets would otherwise hold up to `max_samples` per target).
    cap: usize,
}

impl Packing {
    pub fn new(max_samples: usize, deadline: Duration, cap: usize) -> Packing {
        Packing { held: hashbrown::HashMap::new(), max_samples, deadline, samples: 0, records: 0, cap }
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Records whose samples are held here (each record is held whole, in one place).
    pub fn records(&self) -> usize {
        self.records
    }

    /// Holds a whole scrape of `target` (at most `max_samples` samples). Returns what has to
    /// go out first: the target's earlier scrapes when this one would not fit beside them.
    pub fn add(
        &mut self,
        target: u64,
        samples: Vec<Sample>,
        metadata: Vec<MetadataEntry>,
        at: Pos,
        ts: i64,
    ) -> Option<Job> {
        let full = self.held.get(&target).is_some_and(|h| h.samples + samples.len() > self.max_samples);
        let out = if full { self.take(target) } else { None };
        self.samples += samples.len();
        self.records += 1;
        self.held
            .entry(target)
            .or_insert_with(|| Held {
                runs: Vec::new(),
                metadata: Vec::new(),
                records: Vec::new(),
                newest_ts: 0,
                samples: 0,
                since: Instant::now(),
            })
            .add(samples, metadata, at, ts);
        out
    }

    /// The target's held scrapes as one job.
    pub fn take(&mut self, target: u64) -> Option<Job> {
        let h = self.held.remove(&target)?;
        self.samples -= h.samples;
        self.records -= h.records.len();
        let mut job = Job { payload: Payload::default(), records: h.records, newest_ts: h.newest_ts };
        job.payload.samples = h.runs.concat();
        job.payload.metadata = h.metadata;
        Some(job)
    }

    /// Whether `target`'s scrapes have waited a deadline that is not zero: a zero one is
    /// due only when the dispatcher has caught up ([`take_due`](Self::take_due)), so that a
    /// backlog still packs into full requests.
    pub fn is_due(&self, target: u64) -> bool {
        !self.deadline.is_zero() && self.held.get(&target).is_some_and(|h| h.since.elapsed() >= self.deadline)
    }

    /// Whether more than the cap is held: then everything is due.
    pub fn over_cap(&self) -> bool {
        self.samples > self.cap
    }

    /// Takes the targets that are due (all of them when `all`, or when more than the cap is
    /// held) and packs them into jobs per lane of up to `max_samples` samples each; `lane`
    /// maps a target to its lane.
    pub fn take_due(&mut self, all: bool, lane: impl Fn(u64) -> usize) -> Vec<(usize, Job)> {
        let all = all || self.over_cap();
        let mut due: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| all || h.since.elapsed() >= self.deadline)
            .map(|(&t, _)| t)
            .collect();
        // Per lane, oldest first, so the packing does not depend on the map's order.
        due.sort_by_key(|&t| (lane(t), self.held[&t].since));
        let mut jobs: Vec<(usize, Job)> = Vec::new();
        for t in due {
            let l = lane(t);
            let job = self.take(t).expect("listed as held");
            match jobs.last_mut() {
                Some((last_lane, last))
                    if *last_lane == l
                        && last.payload.samples() + job.payload.samples() <= self.max_samples =>
                {
                    last.payload.samples.extend(job.payload.samples);
                    last.payload.metadata.extend(job.payload.metadata);
                    last.records.extend(job.records);
                    last.newest_ts = last.newest_ts.max(job.newest_ts);
                }
                _ => jobs.push((l, job)),
            }
        }
        jobs
    }

    /// How long until the next target is due (`None`: nothing held).
    pub fn next_due(&self) -> Option<Duration> {
        self.held.values().map(|h| self.deadline.saturating_sub(h.since.elapsed())).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::encode::{SeriesInfo, SeriesList, SeriesRef};
    use crate::series_labels::SeriesLabels;

    fn list(n: usize) -> SeriesList {
        (0..n)
            .map(|i| {
                Some(SeriesInfo::new(
                    SeriesLabels::from_sorted([("__name__", "m"), ("i", &*i.to_string())]),
                    None,
                ))
            })
            .collect()
    }

    fn scrape(list: &SeriesList, ts: i64) -> Vec<Sample> {
        (0..list.len()).map(|i| Sample::new(SeriesRef::at(list, i).unwrap(), ts, 1.0)).collect()
    }

    fn pos(off: u64) -> Pos {
        Pos { seg: 0, off }
    }

    #[test]
    fn a_targets_scrapes_merge_until_the_next_would_not_fit() {
        let (a, b) = (list(3), list(2));
        let mut p = Packing::new(7, Duration::from_secs(3600), 1000);
        assert!(p.add(1, scrape(&a, 10), vec![], pos(0), 10).is_none());
        assert!(p.add(2, scrape(&b, 10), vec![], pos(1), 10).is_none());
        assert!(p.add(1, scrape(&a, 20), vec![], pos(2), 20).is_none());
        assert_eq!((p.records(), p.is_due(1)), (3, false));
        // A third scrape of target 1 would make 9 samples: the first two go out, merged.
        let job = p.add(1, scrape(&a, 30), vec![], pos(3), 30).expect("target 1's first two scrapes");
        assert_eq!(job.records, [pos(0), pos(2)]);
        assert_eq!(job.newest_ts, 20);
        assert_eq!(job.payload.runs().count(), 3, "one TimeSeries per series");
        assert!(job.payload.runs().all(|r| r.len() == 2 && r[0].timestamp == 10 && r[1].timestamp == 20));
        assert_eq!(p.records(), 2);
        // Not due yet, but asked for all: both targets, on one lane, fit one request of 5.
        let jobs = p.take_due(true, |_| 0);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].1.payload.samples(), 5);
        assert_eq!(jobs[0].1.records.len(), 2);
        assert!(p.is_empty() && p.next_due().is_none());
    }

    #[test]
    fn due_targets_pack_per_lane_and_the_cap_sends_everything() {
        let a = list(4);
        let mut p = Packing::new(8, Duration::ZERO, 1000);
        for t in 0..4 {
            p.add(t, scrape(&a, 10), vec![], pos(t), 10);
        }
        assert!(!p.is_due(0), "a zero deadline: due only once caught up");
        // Targets 0 and 2 on lane 0, 1 and 3 on lane 1: two requests of 8.
        let jobs = p.take_due(false, |t| (t % 2) as usize);
        let shape: Vec<(usize, usize)> = jobs.iter().map(|(l, j)| (*l, j.payload.samples())).collect();
        assert_eq!(shape, [(0, 8), (1, 8)]);
        // A long deadline holds, until more than the cap is held.
        let mut p = Packing::new(8, Duration::from_secs(3600), 6);
        p.add(0, scrape(&a, 10), vec![], pos(0), 10);
        assert!(!p.is_due(0));
        assert!(p.take_due(false, |_| 0).is_empty());
        assert!(p.next_due().is_some_and(|d| d > Duration::from_secs(3000)));
        assert!(!p.over_cap());
        p.add(1, scrape(&a, 10), vec![], pos(1), 10);
        assert!(p.over_cap());
        assert_eq!(p.take_due(false, |_| 0).len(), 1, "8 held, above the cap of 6");
    }
}
