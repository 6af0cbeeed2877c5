//! The remote-write encoding path alone, on the e2e bench's expositions (cAdvisor-like,
//! kube-state-metrics-like, histograms): a target's scrape is turned into the request
//! payload the queue builds, then encoded as RW2 and RW1 and compressed with snappy, one
//! core, many rounds. Prints ns per sample for each step.
//!
//! `cargo bench -p ferry-agent --bench encode` (`-- --rounds N` for a shorter run, e.g. under
//! `valgrind --tool=callgrind`; `-- --whole` to rebuild every label set whole, as before sets
//! could be based on their neighbours, to see what reading through a base costs).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use ferry_agent::config::Config;
use ferry_agent::remote::encode::{
    FamilyMeta, Payload, Sample, SeriesInfo, SeriesList, SeriesRef, family_candidates,
};
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

fn payloads(whole: bool) -> Vec<Payload> {
    let yaml = "scrape_configs: [{job_name: bench, scrape_interval: 10s}]";
    let job = Config::parse(yaml, Path::new("bench.yaml"), false, |_| None).unwrap().jobs.remove(0);
    let ids = Arc::new(AtomicU64::new(1));
    let mut out = Vec::new();
    let mut body = String::new();
    for t in 0..TARGETS {
        let expo = targets::Exposition::new(t, SERIES, 0.0);
        expo.render(1, &mut body);
        let public =
            LabelSet::from_pairs([("instance", format!("127.0.0.1:{}", 20000 + t)), ("job", "bench".into())])
                .unwrap();
        let mut st = TargetState::new(public, t as u64, ids.clone());
        let fetched =
            Fetched::Body { body: &body, content_type: Some("text/plain"), decoded_len: body.len() };
        let batch = st.scrape(&job, fetched, 10_000, 10_000, 0.0);
        assert!(batch.error.is_none(), "{:?}", batch.error);
        // The queue's view: one list per target in sample order, family metadata shared.
        let families: hashbrown::HashMap<&str, FamilyMeta> = batch
            .metadata
            .iter()
            .map(|m| (m.metric_family.as_str(), Arc::new((m.kind, m.help.clone(), m.unit.clone()))))
            .collect();
        let labels: hashbrown::HashMap<u64, _> =
            batch.new_series.iter().map(|d| (d.id, d.labels.clone())).collect();
        let list: SeriesList = batch
            .samples
            .iter()
            .map(|s| {
                let l = labels[&s.series].clone();
                let l = if whole { SeriesLabels::from_set(&l.to_label_set()) } else { l };
                let md =
                    l.metric_name().and_then(|n| family_candidates(n).find_map(|f| families.get(f).cloned()));
                Some(SeriesInfo::new(l, md))
            })
            .collect();
        let samples = batch
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| Sample::new(SeriesRef::at(&list, i).unwrap(), s.timestamp, s.value))
            .collect();
        out.push(Payload { samples, metadata: Vec::new() });
    }
    out
}

fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .map_or(15, |r| r.parse().expect("--rounds N"));
    let whole = std::env::args().any(|a| a == "--whole");
    let payloads = payloads(whole);
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
        rw2.encode(p, &mut buf);
        std::hint::black_box(&buf);
    });
    let rw2_bytes = buf.len();
    let snappy_rw2_ns = time(&mut |p| {
        rw2.encode(p, &mut buf);
        snappy.encode_into(&buf, &mut compressed);
        std::hint::black_box(&compressed);
    }) - rw2_ns;
    let rw1_ns = time(&mut |p| {
        rw1(p, false, &mut buf);
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
