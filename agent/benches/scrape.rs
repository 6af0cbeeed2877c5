//! Steady-state scrape path: parse → series-cache hit → batch, on realistic expositions
//! (node_exporter-like and kube-state-metrics-like, 2,000+ series each), single thread.
//! Also measures the heap a cached series costs beyond its label bytes, from RSS growth
//! while caching many targets' series.
//!
//! `cargo bench -p ferry-agent --bench scrape`
//!
//! `cargo bench -p ferry-agent --bench scrape -- --census DIR` instead scrapes every file in
//! DIR once, each as a target of its own (say, every target of the shared harness saved with
//! curl), keeps the series it defines, and prints what their labels take: label sets whole and
//! based, interned labels, the interner's table, as the blocks asked of the allocator and as
//! glibc's chunks (8 bytes of header, rounded up to 16, at least 32).

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use ferry_agent::config::Config;
use ferry_agent::scrape::append::{Fetched, TargetState};
use ferry_protocol::LabelSet;

/// node_exporter-like: cpu seconds per core and mode, filesystems, network devices, etc.
fn node_exporter(round: u64) -> String {
    let mut s = String::new();
    s.push_str("# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n# TYPE node_cpu_seconds_total counter\n");
    for cpu in 0..64 {
        for mode in ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"] {
            let _ = writeln!(
                s,
                "node_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"{mode}\"}} {}",
                12345.67 + (cpu * 7 + round) as f64
            );
        }
    }
    s.push_str("# HELP node_filesystem_avail_bytes Filesystem space available.\n# TYPE node_filesystem_avail_bytes gauge\n");
    for i in 0..200 {
        let _ = writeln!(
            s,
            "node_filesystem_avail_bytes{{device=\"/dev/nvme{i}n1p1\",fstype=\"ext4\",mountpoint=\"/var/lib/kubelet/pods/3f1c{i:04}-8a1e-4c2b-9d7e-1b2c3d4e5f60/volumes/kubernetes.io~csi/pvc-{i}/mount\"}} {}",
            1.234e11 + (i as u64 * 4096 + round) as f64
        );
    }
    s.push_str("# HELP node_network_receive_bytes_total Network device statistic receive_bytes.\n# TYPE node_network_receive_bytes_total counter\n");
    for i in 0..300 {
        for stat in ["bytes", "packets", "errs"] {
            let _ = writeln!(
                s,
                "node_network_receive_{stat}_total{{device=\"veth{i:05x}\"}} {}",
                (i * 1000) as u64 + round
            );
        }
    }
    s.push_str("# TYPE node_disk_io_time_seconds_total counter\n");
    for i in 0..400 {
        let _ = writeln!(s, "node_disk_io_time_seconds_total{{device=\"dm-{i}\"}} {}.25", i as u64 + round);
    }
    s
}

/// kube-state-metrics-like: many labels per series, long values.
fn ksm(round: u64) -> String {
    let mut s = String::new();
    s.push_str("# HELP kube_pod_status_phase The pods current phase.\n# TYPE kube_pod_status_phase gauge\n");
    for pod in 0..500 {
        for phase in ["Pending", "Running", "Succeeded", "Failed"] {
            let _ = writeln!(
                s,
                "kube_pod_status_phase{{namespace=\"team-{}\",pod=\"checkout-7d9fk2lq4x-{pod:05x}\",uid=\"0b4e{pod:04}-1c2d-4e5f-8a9b-0c1d2e3f4a5b\",phase=\"{phase}\"}} {}",
                pod % 17,
                u8::from(phase == "Running" && !(pod + round as usize).is_multiple_of(50))
            );
        }
    }
    s.push_str("# TYPE kube_pod_container_resource_requests gauge\n");
    for pod in 0..500 {
        let _ = writeln!(
            s,
            "kube_pod_container_resource_requests{{namespace=\"team-{}\",pod=\"checkout-7d9fk2lq4x-{pod:05x}\",container=\"app\",node=\"ip-10-0-{}-{}.ec2.internal\",resource=\"cpu\",unit=\"core\"}} 0.25",
            pod % 17,
            pod % 20,
            pod % 7
        );
    }
    s
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The chunk glibc's malloc carves for a request of `n` bytes.
fn glibc_chunk(n: usize) -> usize {
    (n + 8).div_ceil(16).max(2) * 16
}

/// `--census DIR`: see the module header.
fn census(job: &ferry_agent::config::Job, dir: &Path) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("--census {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    let ids = Arc::new(AtomicU64::new(1));
    // Held as the WAL's table holds them, so that the interner keeps their labels.
    let mut defined = Vec::new();
    for (t, file) in files.iter().enumerate() {
        let body = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let public =
            LabelSet::from_pairs([("instance", format!("127.0.0.1:{}", 20000 + t)), ("job", "bench".into())])
                .unwrap();
        let mut st = TargetState::new(public, t as u64, ids.clone());
        let b = st.scrape(
            job,
            Fetched::Body {
                body: &body,
                content_type: Some("text/plain; version=0.0.4"),
                decoded_len: body.len(),
            },
            1,
            1,
            0.0,
        );
        assert!(b.error.is_none(), "{}: {:?}", file.display(), b.error);
        defined.extend(b.new_series.into_iter().map(|d| d.labels));
    }
    let n = defined.len();
    let per = |bytes: usize| bytes as f64 / n as f64;
    let mut rows: Vec<(String, Tally)> = Vec::new();
    for based in [false, true] {
        let mut t = Tally::default();
        defined.iter().filter(|s| s.is_based() == based).for_each(|s| t.add(s.block_bytes()));
        rows.push((format!("label sets, {}", if based { "based" } else { "whole" }), t));
    }
    let mut t = Tally::default();
    let interned = ferry_agent::series_labels::census(|b| t.add(b));
    rows.push((format!("interned labels ({} B of text)", interned.text_bytes), t));
    // One block, but glibc's rounding is noise on it: counted as asked.
    let table = Tally { count: 1, asked: interned.table_bytes, chunks: interned.table_bytes };
    rows.push(("the interner's table".into(), table));
    println!("{} files, {n} series\n", files.len());
    println!("| what | count | MB asked | B/series asked | MB in glibc chunks | B/series in chunks |");
    println!("|---|---|---|---|---|---|");
    let (mut total_asked, mut total_chunks) = (0, 0);
    for (what, Tally { count, asked, chunks }) in rows {
        println!(
            "| {what} | {count} | {:.1} | {:.0} | {:.1} | {:.0} |",
            asked as f64 / 1e6,
            per(asked),
            chunks as f64 / 1e6,
            per(chunks)
        );
        total_asked += asked;
        total_chunks += chunks;
    }
    println!(
        "| all | | {:.1} | {:.0} | {:.1} | {:.0} |",
        total_asked as f64 / 1e6,
        per(total_asked),
        total_chunks as f64 / 1e6,
        per(total_chunks)
    );
}

/// Blocks counted by `--census`: how many, the bytes they ask for, and glibc's chunks for them.
#[derive(Default)]
struct Tally {
    count: usize,
    asked: usize,
    chunks: usize,
}

impl Tally {
    fn add(&mut self, bytes: usize) {
        self.count += 1;
        self.asked += bytes;
        self.chunks += glibc_chunk(bytes);
    }
}

fn main() {
    let job = Config::parse(
        "scrape_configs: [{job_name: bench, scrape_interval: 15s}]",
        Path::new("bench.yaml"),
        false,
        |_| None,
    )
    .unwrap()
    .jobs
    .remove(0);
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--census") {
        let dir = args.get(i + 1).expect("--census DIR");
        return census(&job, Path::new(dir));
    }
    let ids = Arc::new(AtomicU64::new(1));
    println!("| exposition | series | samples/s per core (cache hits) | ns/sample |");
    println!("|---|---|---|---|");
    for (name, make) in
        [("node_exporter-like", node_exporter as fn(u64) -> String), ("kube-state-metrics-like", ksm)]
    {
        let bodies: Vec<String> = (0..8).map(make).collect();
        let public = LabelSet::from_pairs([("instance", "10.1.2.3:9100"), ("job", "bench")]).unwrap();
        let mut st = TargetState::new(public, 1, ids.clone());
        fn fetched(b: &str) -> Fetched<'_> {
            Fetched::Body { body: b, content_type: Some("text/plain; version=0.0.4"), decoded_len: b.len() }
        }
        let warm = st.scrape(&job, fetched(&bodies[0]), 1000, 1000, 0.0);
        assert!(warm.error.is_none(), "{:?}", warm.error);
        let series = warm.samples.len() - 5;
        // Seven rounds of 300 scrapes; the median round is reported (this machine is shared
        // and noisy, and a round is short enough to land between disturbances).
        let mut rounds: Vec<f64> = Vec::new();
        let mut i = 0usize;
        for _ in 0..7 {
            let start = Instant::now();
            let mut samples = 0usize;
            for _ in 0..300 {
                // `now` is the scrape time: a `now` behind it would drop every sample as too
                // far in the future and leave only the report series to count.
                let ts = 2000 + i as i64 * 15_000;
                let b = st.scrape(&job, fetched(&bodies[i % bodies.len()]), ts, ts, 0.0);
                assert_eq!(b.samples.len(), series + 5, "every sample is appended");
                samples += b.samples.len();
                std::hint::black_box(&b);
                i += 1;
            }
            rounds.push(start.elapsed().as_secs_f64() * 1e9 / samples as f64);
        }
        rounds.sort_by(f64::total_cmp);
        let ns = rounds[rounds.len() / 2];
        println!("| {name} | {series} | {:.0} | {ns:.0} |", 1e9 / ns);
    }

    if std::env::args().any(|a| a == "--cpu-only") {
        return;
    }
    // Heap per cached series: cache 100 targets' worth of the ksm body.
    let body = ksm(0);
    let label_bytes: usize = {
        let public = LabelSet::from_pairs([("instance", "10.1.2.3:9100"), ("job", "bench")]).unwrap();
        let mut st = TargetState::new(public, 1, ids.clone());
        let b = st.scrape(
            &job,
            Fetched::Body { body: &body, content_type: Some("text/plain"), decoded_len: body.len() },
            1,
            1,
            0.0,
        );
        b.new_series
            .iter()
            .map(|d| d.labels.iter().map(|l| l.name.len() + l.value.len()).sum::<usize>())
            .sum::<usize>()
            / b.new_series.len()
    };
    let targets = 100;
    let before = rss_bytes();
    let mut states = Vec::new();
    let mut n = 0;
    for t in 0..targets {
        let public =
            LabelSet::from_pairs([("instance", format!("10.1.2.{t}:9100")), ("job", "bench".into())])
                .unwrap();
        let mut st = TargetState::new(public, t, ids.clone());
        let b = st.scrape(
            &job,
            Fetched::Body { body: &body, content_type: Some("text/plain"), decoded_len: body.len() },
            1,
            1,
            0.0,
        );
        n += b.samples.len();
        states.push(st);
    }
    let grown = rss_bytes().saturating_sub(before);
    let cached: usize = states.iter().map(|s| s.cached_series()).sum();
    println!(
        "\nheap per cached series: {:.0} B total, of which label bytes {label_bytes} B -> {:.0} B beyond the labels ({cached} series, {n} samples, RSS +{:.1} MiB)",
        grown as f64 / cached as f64,
        grown as f64 / cached as f64 - label_bytes as f64,
        grown as f64 / 1048576.0
    );
}
