//! The remote-write encoding path alone, on the e2e bench's expositions (cAdvisor-like,
//! kube-state-metrics-like, histograms): a target's scrape is turned into the request
//! payload the queue builds, then encoded as RW2 and RW1 and compressed with snappy, one
//! core, many rounds. Prints ns per sample for each step.
//!
//! `cargo bench -p ferry-agent --bench encode` (`-- --rounds N` for a shorter run, e.g. under
//! `valgrind --tool=callgrind`; `-- --whole` to rebuild every label set whole, as before sets
//! could be based on their neighbours, to see what reading through a base costs; `-- --wire`
//! for the compressed bytes of each request shape; `-- --dump DIR` to write the requests out).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use ferry_agent::config::Config;
use ferry_agent::remote::encode::{
    FamilyMeta, Payload, Sample, SeriesInfo, SeriesList, SeriesRef, WalLabels, family_candidates,
};
use ferry_agent::remote::id_runs::IdRuns;
use ferry_agent::remote::wire::{Rw2Encoder, rw1};
use ferry_agent::scrape::append::{Fetched, TargetState};
use ferry_agent::series_labels::SeriesLabels;
use ferry_protocol::LabelSet;
use ferry_protocol::snappy::BlockEncoder;

#[allow(dead_code)]
#[path = "e2e/targets.rs"]
mod targets;

/// 200 x 2,500 series, the e2e bench's large run: 500k series do not fit in the CPU caches,
/// as in the agent (at 40 targets the encoding measured a fifth faster).
const TARGETS: usize = 200;
const SERIES: usize = 2500;

/// Each target's first `scrapes` scrapes, as the queue's payloads (one per scrape), and the
/// WAL's table their lists name series in, as the agent's are (`whole`: lists of labels of
/// their own, every set rebuilt whole).
fn payloads(whole: bool, scrapes: u64) -> (Vec<Vec<Payload>>, WalLabels) {
    let mut wal = WalLabels::new();
    let yaml = "scrape_configs: [{job_name: bench, scrape_interval: 10s}]";
    let job = Config::parse(yaml, Path::new("bench.yaml"), false, |_| None).unwrap().jobs.remove(0);
    let ids = Arc::new(AtomicU64::new(1));
    let mut out = Vec::new();
    let mut body = String::new();
    for t in 0..TARGETS {
        let expo = targets::Exposition::new(t, SERIES, 0.0);
        let public =
            LabelSet::from_pairs([("instance", format!("127.0.0.1:{}", 20000 + t)), ("job", "bench".into())])
                .unwrap();
        let mut st = TargetState::new(public, t as u64, ids.clone());
        let mut scrape = |seq: u64| {
            expo.render(seq, &mut body);
            let fetched =
                Fetched::Body { body: &body, content_type: Some("text/plain"), decoded_len: body.len() };
            let ts = seq as i64 * 10_000;
            let batch = st.scrape(&job, fetched, ts, ts, 0.0);
            assert!(batch.error.is_none(), "{:?}", batch.error);
            batch
        };
        let batch = scrape(1);
        // The queue's view: one list per target in sample order, family metadata shared.
        let families: hashbrown::HashMap<&str, FamilyMeta> = batch
            .metadata
            .iter()
            .map(|m| (m.metric_family.as_str(), Arc::new((m.kind, m.help.clone(), m.unit.clone()))))
            .collect();
        let labels: hashbrown::HashMap<u64, _> =
            batch.new_series.iter().map(|d| (d.id, d.labels.clone())).collect();
        let metadata = |l: &SeriesLabels| {
            l.metric_name().and_then(|n| family_candidates(n).find_map(|f| families.get(f).cloned()))
        };
        let list = if whole {
            batch
                .samples
                .iter()
                .map(|s| {
                    let l = SeriesLabels::from_set(&labels[&s.series].to_label_set());
                    let md = metadata(&l);
                    Some(SeriesInfo::new(l, md))
                })
                .collect()
        } else {
            for (&id, l) in &labels {
                wal.insert(id, l.clone());
            }
            let ids: IdRuns = batch.samples.iter().map(|s| s.series).collect();
            SeriesList::by_id(ids, batch.samples.iter().map(|s| metadata(&labels[&s.series])), None)
        };
        let payload = |batch: &ferry_agent::scrape::batch::ScrapeBatch| {
            let samples = batch
                .samples
                .iter()
                .enumerate()
                .map(|(i, s)| Sample::new(SeriesRef::at(&list, i).unwrap(), s.timestamp, s.value))
                .collect();
            Payload { samples, metadata: Vec::new() }
        };
        let mut per_target = vec![payload(&batch)];
        for seq in 2..=scrapes {
            let next = scrape(seq);
            assert_eq!(next.samples.len(), batch.samples.len(), "the bench's series are steady");
            per_target.push(payload(&next));
        }
        out.push(per_target);
    }
    (out, wal)
}

/// Compressed RW2 and RW1 bytes per sample for the request shapes a queue can send: each
/// scrape split at 2,000 samples (Prometheus' `max_samples_per_send`), each scrape whole, and
/// 2, 3 and 6 consecutive scrapes of a target in one request with each series' samples
/// together.
fn wire_report() {
    let scrapes = 6;
    let (all, wal) = payloads(false, scrapes);
    let mut rw2 = Rw2Encoder::new();
    let mut snappy = BlockEncoder::default();
    let (mut buf, mut compressed) = (Vec::new(), Vec::new());
    let mut measure = |requests: &mut dyn Iterator<Item = Payload>| {
        let (mut samples, mut v2, mut v1) = (0usize, 0usize, 0usize);
        for p in requests {
            samples += p.samples();
            rw2.encode(&p, &wal, &mut buf);
            snappy.encode_into(&buf, &mut compressed);
            v2 += compressed.len();
            rw1(&p, false, &wal, &mut buf);
            snappy.encode_into(&buf, &mut compressed);
            v1 += compressed.len();
        }
        (v2 as f64 / samples as f64, v1 as f64 / samples as f64)
    };
    println!("| request | RW2 B/sample | RW1 B/sample | RW2/RW1 |");
    println!("|---|---|---|---|");
    let row = |what: &str, (v2, v1): (f64, f64)| println!("| {what} | {v2:.1} | {v1:.1} | {:.2} |", v2 / v1);
    row(
        "a scrape, split at 2,000",
        measure(&mut all.iter().flat_map(|t| {
            t[0].samples.chunks(2000).map(|c| Payload { samples: c.to_vec(), metadata: Vec::new() })
        })),
    );
    row("a scrape", measure(&mut all.iter().map(|t| t[0].clone())));
    for k in [2usize, 3, 6] {
        let merged = |t: &Vec<Payload>| {
            let n = t[0].samples();
            let samples = (0..n).flat_map(|i| t[..k].iter().map(move |p| p.samples[i].clone())).collect();
            Payload { samples, metadata: Vec::new() }
        };
        row(&format!("{k} scrapes of a target"), measure(&mut all.iter().map(merged)));
    }
}

/// Writes the uncompressed RW2 and RW1 requests of every target's first scrape, whole, and of
/// its first two scrapes merged by series, as files in `dir`: raw material for trying other
/// compressors or encodings on the same bytes.
fn dump(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create the dump directory");
    let (all, wal) = payloads(false, 2);
    let mut rw2 = Rw2Encoder::new();
    let mut buf = Vec::new();
    for (t, p) in all.iter().enumerate() {
        let n = p[0].samples();
        let merged = Payload {
            samples: (0..n).flat_map(|i| [p[0].samples[i].clone(), p[1].samples[i].clone()]).collect(),
            metadata: Vec::new(),
        };
        for (what, payload) in [("scrape", &p[0]), ("merged2", &merged)] {
            rw2.encode(payload, &wal, &mut buf);
            std::fs::write(dir.join(format!("{t:03}-{what}.rw2")), &buf).expect("write a request");
            rw1(payload, false, &wal, &mut buf);
            std::fs::write(dir.join(format!("{t:03}-{what}.rw1")), &buf).expect("write a request");
        }
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .map_or(15, |r| r.parse().expect("--rounds N"));
    if std::env::args().any(|a| a == "--wire") {
        wire_report();
        return;
    }
    if let Some(dir) = std::env::args().skip_while(|a| a != "--dump").nth(1) {
        dump(Path::new(&dir));
        return;
    }
    let whole = std::env::args().any(|a| a == "--whole");
    let (payloads, wal) = payloads(whole, 1);
    let payloads: Vec<Payload> = payloads.into_iter().flatten().collect();
    let samples: usize = payloads.iter().map(|p| p.samples.len()).sum();
    let mut rw2 = Rw2Encoder::new();
    let mut snappy = BlockEncoder::default();
    let mut buf = Vec::new();
    let mut compressed = Vec::new();
    let time = |f: &mut dyn FnMut(&Payload)| {
        let mut per_round: Vec<f64> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for p in &payloads {
                    f(p);
                }
                start.elapsed().as_secs_f64() * 1e9 / samples as f64
            })
            .collect();
        per_round.sort_by(f64::total_cmp);
        per_round[per_round.len() / 2]
    };
    let rw2_ns = time(&mut |p| {
        rw2.encode(p, &wal, &mut buf);
        std::hint::black_box(&buf);
    });
    let rw2_bytes = buf.len();
    let snappy_rw2_ns = time(&mut |p| {
        rw2.encode(p, &wal, &mut buf);
        snappy.encode_into(&buf, &mut compressed);
        std::hint::black_box(&compressed);
    }) - rw2_ns;
    let rw1_ns = time(&mut |p| {
        rw1(p, false, &wal, &mut buf);
        std::hint::black_box(&buf);
    });
    println!("{TARGETS} targets x {} samples, median of {rounds} rounds", samples / TARGETS);
    println!();
    println!("| step | ns/sample |");
    println!("|---|---|");
    println!("| RW2 encode | {rw2_ns:.1} |");
    println!("| snappy of the RW2 request | {snappy_rw2_ns:.1} |");
    println!("| RW1 encode | {rw1_ns:.1} |");
    println!();
    println!("last RW2 request: {rw2_bytes} bytes, {} compressed", compressed.len());
}
