//! Requests being packed: the scrapes the dispatcher has read from the WAL and not yet
//! handed to a lane, held per target.
//!
//! A target's consecutive scrapes merge by series: each series goes in the request once,
//! with all its samples, so its labels (RW1) or refs and symbols (RW2) travel once per
//! request instead of once per scrape. A target's scrapes are held until one more would
//! pass `max_samples_per_send`, or the first has waited `batch_send_deadline` (at the
//! default, 0, that is as soon as the dispatcher has read all the WAL holds). Due targets
//! are then packed together, per lane, into requests of up to `max_samples_per_send`
//! samples. Whatever is held, only whole scrapes go in a request.

use std::time::{Duration, Instant};

use super::encode::{Payload, Sample, SeriesList, SeriesRef};
use super::held_values::HeldValues;
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

/// Consecutive scrapes of one target over the same series list, kept compact until sent:
/// a held sample is its value, packed ([`HeldValues`]: a counter's is a byte or two after
/// the first scrape), and its position in the list unless the scrape's positions are
/// consecutive (a steady target's are: all of its list in order), where a [`Sample`] is 48
/// bytes.
#[derive(Debug)]
struct Merged {
    list: SeriesList,
    scrapes: Vec<Compact>,
    /// The newest timestamp in them: a scrape joins only if all of its are later, so every
    /// series' samples come out in timestamp order.
    newest: i64,
}

#[derive(Debug)]
struct Compact {
    at: Positions,
    /// Integral values as differences from the run's first scrape when the positions are
    /// the same as its.
    values: HeldValues,
    /// One timestamp for all, or one each (a target that exposes its own).
    ts: Result<i64, Vec<i64>>,
}

/// Where a compact scrape's samples are in the list, strictly increasing.
#[derive(Debug, PartialEq)]
enum Positions {
    /// `len` consecutive positions from `from`.
    Run {
        from: u32,
        len: u32,
    },
    Each(Vec<u32>),
}

impl Positions {
    fn of(at: impl ExactSizeIterator<Item = u32> + Clone) -> Positions {
        let len = at.len() as u32;
        let from = at.clone().next().unwrap_or(0);
        if at.clone().zip(from..).all(|(a, b)| a == b) {
            Positions::Run { from, len }
        } else {
            Positions::Each(at.collect())
        }
    }

    fn get(&self, i: usize) -> Option<u32> {
        match self {
            Positions::Run { from, len } => (i < *len as usize).then(|| from + i as u32),
            Positions::Each(each) => each.get(i).copied(),
        }
    }
}

impl Compact {
    /// `samples` compact, if they can be: all in `list`, in increasing positions, without
    /// start timestamps or exemplars. `span` is their oldest and newest timestamp; `first` is
    /// the first scrape of the run they would join, whose values are the base for theirs
    /// when the positions are the same.
    fn of(
        samples: &[Sample],
        list: &SeriesList,
        span: (i64, i64),
        first: Option<&Compact>,
    ) -> Option<Compact> {
        let plain = samples
            .iter()
            .all(|s| s.series.list().same(list) && s.start_timestamp == 0 && s.exemplars.is_none());
        let increasing = samples.windows(2).all(|w| w[0].series.position() < w[1].series.position());
        if !(plain && increasing) {
            return None;
        }
        let ts =
            if span.0 == span.1 { Ok(span.0) } else { Err(samples.iter().map(|s| s.timestamp).collect()) };
        let at = Positions::of(samples.iter().map(|s| s.series.position()));
        let base = first.filter(|f| f.at == at).map(|f| f.values.unpack());
        let values = HeldValues::pack(samples.iter().map(|s| s.value), base.as_deref());
        Some(Compact { at, values, ts })
    }

    fn timestamp(&self, i: usize) -> i64 {
        match &self.ts {
            Ok(t) => *t,
            Err(each) => each[i],
        }
    }
}

impl Merged {
    /// Every series' samples together, series in list order, each's in scrape order.
    fn samples_into(&self, out: &mut Vec<Sample>) {
        let mut next = vec![0usize; self.scrapes.len()];
        let mut values: Vec<_> = self.scrapes.iter().map(|c| c.values.reader()).collect();
        // The first scrape's value at the position being written: the base of the later
        // scrapes' values packed as differences, which are over the same positions, so the
        // first scrape (picked first on a tie) has just been read there.
        let mut base = 0.0;
        loop {
            // The scrape whose next position is lowest; on a tie the earlier scrape.
            let mut pick: Option<(usize, u32)> = None;
            for (j, c) in self.scrapes.iter().enumerate() {
                if let Some(at) = c.at.get(next[j])
                    && pick.is_none_or(|(_, lowest)| at < lowest)
                {
                    pick = Some((j, at));
                }
            }
            let Some((j, at)) = pick else { return };
            let c = &self.scrapes[j];
            let i = next[j];
            let value = values[j].next(base);
            if j == 0 {
                base = value;
            }
            let series = SeriesRef::at(&self.list, at as usize).expect("held only for a series that is sent");
            out.push(Sample::new(series, c.timestamp(i), value));
            next[j] += 1;
        }
    }
}

/// Held scrapes of a target: merged ones, or one kept as it came (its series list changed
/// mid-way, or it has start timestamps or exemplars).
#[derive(Debug)]
enum Run {
    Merged(Merged),
    AsIs(Vec<Sample>),
}

/// One target's held scrapes.
#[derive(Debug)]
struct Held {
    runs: Vec<Run>,
    metadata: Vec<MetadataEntry>,
    records: Vec<Pos>,
    newest_ts: i64,
    samples: usize,
    since: Instant,
}

impl Held {
    fn add(&mut self, samples: Vec<Sample>, metadata: Vec<MetadataEntry>, at: Pos, ts: i64) {
        self.samples += samples.len();
        self.metadata.extend(metadata);
        self.records.push(at);
        self.newest_ts = self.newest_ts.max(ts);
        let Some(first) = samples.first() else { return };
        let list = first.series.list().clone();
        // The run this scrape joins: the last one, if over the same list and all of this
        // scrape is later (then its first scrape is the base of this one's values).
        let (oldest, newest) = samples.iter().fold((first.timestamp, first.timestamp), |(lo, hi), s| {
            (lo.min(s.timestamp), hi.max(s.timestamp))
        });
        let joins = match self.runs.last_mut() {
            Some(Run::Merged(m)) if m.list.same(&list) && oldest > m.newest => Some(m),
            _ => None,
        };
        match Compact::of(&samples, &list, (oldest, newest), joins.as_deref().map(|m| &m.scrapes[0])) {
            Some(c) => match joins {
                Some(m) => {
                    m.scrapes.push(c);
                    m.newest = newest;
                }
                None => self.runs.push(Run::Merged(Merged { list, scrapes: vec![c], newest })),
            },
            None => self.runs.push(Run::AsIs(samples)),
        }
    }

    /// The held scrapes as one request: every merged run expanded into samples.
    fn into_job(self) -> Job {
        let mut samples = Vec::with_capacity(self.samples);
        for run in self.runs {
            match run {
                Run::Merged(m) => m.samples_into(&mut samples),
                Run::AsIs(v) => samples.extend(v),
            }
        }
        Job {
            payload: Payload { samples, metadata: self.metadata },
            records: self.records,
            newest_ts: self.newest_ts,
        }
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

    /// Samples held.
    pub fn samples(&self) -> usize {
        self.samples
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
        Some(h.into_job())
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
    use crate::remote::encode::SeriesInfo;
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

    #[test]
    fn merged_scrapes_keep_every_series_together_and_in_time_order() {
        let a = list(4);
        let at = |l: &SeriesList, ts: i64, pos: &[usize]| -> Vec<Sample> {
            pos.iter().map(|&i| Sample::new(SeriesRef::at(l, i).unwrap(), ts, ts as f64)).collect()
        };
        let shape = |j: &Job| {
            j.payload.samples.iter().map(|s| (s.series.position(), s.timestamp)).collect::<Vec<_>>()
        };
        let mut p = Packing::new(100, Duration::from_secs(3600), 1000);
        p.add(1, at(&a, 10, &[0, 1, 3]), vec![], pos(0), 10);
        p.add(1, at(&a, 20, &[0, 2, 3]), vec![], pos(1), 20);
        // Timestamps of its own: merged, since all are later than what is held.
        let mut own = at(&a, 30, &[1, 3]);
        own[1].timestamp = 31;
        p.add(1, own, vec![], pos(2), 31);
        let job = p.take(1).unwrap();
        assert_eq!(shape(&job), [(0, 10), (0, 20), (1, 10), (1, 30), (2, 20), (3, 10), (3, 20), (3, 31)]);
        let r1 = job.payload.rw1(false, &super::super::encode::WalLabels::new());
        assert_eq!(r1.timeseries.len(), 4, "one TimeSeries per series");
        assert_eq!(r1.timeseries[3].samples.iter().map(|s| s.timestamp).collect::<Vec<_>>(), [10, 20, 31]);
        assert_eq!(r1.timeseries[1].samples.iter().map(|s| s.value).collect::<Vec<_>>(), [10.0, 30.0]);
        // What cannot merge stays as it came, after what is held: not later, out of order,
        // another list (the target's series changed), an exemplar.
        p.add(1, at(&a, 40, &[0]), vec![], pos(3), 40);
        p.add(1, at(&a, 40, &[1]), vec![], pos(4), 40);
        p.add(1, at(&a, 50, &[2, 1]), vec![], pos(5), 50);
        let b = list(4);
        p.add(1, at(&b, 60, &[0]), vec![], pos(6), 60);
        let mut ex = at(&b, 70, &[1]);
        ex[0].exemplars = Some(Box::new(vec![(ferry_protocol::LabelSet::new(), 1.0, 70)]));
        p.add(1, ex, vec![], pos(7), 70);
        let job = p.take(1).unwrap();
        assert_eq!(shape(&job), [(0, 40), (1, 40), (2, 50), (1, 50), (0, 60), (1, 70)]);
        assert_eq!(job.payload.exemplars(), 1);
        assert_eq!(job.records.len(), 5);
        assert_eq!(job.newest_ts, 70);
        assert!(p.is_empty() && p.records() == 0);
    }

    #[test]
    fn held_values_come_back_exact_whether_packed_as_differences_or_not() {
        let a = list(4);
        let with = |ts: i64, pos: &[usize], values: &[f64]| -> Vec<Sample> {
            pos.iter().zip(values).map(|(&i, &v)| Sample::new(SeriesRef::at(&a, i).unwrap(), ts, v)).collect()
        };
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let scrapes: [(&[usize], [f64; 4]); 4] = [
            (&[0, 1, 2, 3], [1e6, 0.25, -7.0, stale]),
            (&[0, 1, 2, 3], [1e6 + 3.0, 7.0, stale, -0.0]),
            // Other positions: its values stand alone.
            (&[0, 2, 3], [5.0, 1e300, 2.0, 0.0]),
            (&[0, 1, 2, 3], [-1e6, 1.5, 9_007_199_254_740_991.0, 4.0]),
        ];
        let mut p = Packing::new(100, Duration::from_secs(3600), 1000);
        for (k, (pos, values)) in scrapes.iter().enumerate() {
            let ts = 10 * (k as i64 + 1);
            p.add(1, with(ts, pos, &values[..pos.len()]), vec![], self::pos(k as u64), ts);
        }
        let job = p.take(1).unwrap();
        let mut got: Vec<(u32, i64, u64)> = job
            .payload
            .samples
            .iter()
            .map(|s| (s.series.position(), s.timestamp, s.value.to_bits()))
            .collect();
        let mut want: Vec<(u32, i64, u64)> = Vec::new();
        for (k, (pos, values)) in scrapes.iter().enumerate() {
            want.extend(pos.iter().zip(values).map(|(&i, v)| (i as u32, 10 * (k as i64 + 1), v.to_bits())));
        }
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn consecutive_positions_are_kept_as_a_run() {
        let of = |at: &[u32]| Positions::of(at.iter().copied());
        assert_eq!(of(&[0, 1, 2]), Positions::Run { from: 0, len: 3 });
        assert_eq!(of(&[5, 6]), Positions::Run { from: 5, len: 2 });
        assert_eq!(of(&[]), Positions::Run { from: 0, len: 0 });
        assert_eq!(of(&[0, 2, 3]), Positions::Each(vec![0, 2, 3]));
        let run = of(&[5, 6]);
        assert_eq!((run.get(0), run.get(1), run.get(2)), (Some(5), Some(6), None));
        assert_eq!(of(&[1, 3]).get(1), Some(3));
    }
}
