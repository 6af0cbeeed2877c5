//! End-to-end benchmark: synthetic targets → agent → counting remote-write sink, all on
//! loopback, with the agent as a separate process so its CPU and memory are its own.
//!
//! Measures, over a window after a warm-up: agent CPU per scraped sample, peak and end RSS,
//! wire and decoded bytes per sample, WAL bytes per sample, and (after the targets close and
//! the agent has drained) the delivery ratio over the whole run. Runs ferry-agent with RW1
//! and RW2 and, when `prometheus` is installed, Prometheus in agent mode on the same workload
//! in the same run, so figures can be read as ratios on this noisy machine.
//!
//! ```sh
//! cargo bench -p ferry-agent --bench e2e -- --targets 50 --series 2000 [--reps 3]
//!     [--agents ferry-rw2,ferry-rw1,prometheus] [--scenario steady|churn|flap|outage]
//!     [--queue-config '{batch_send_deadline: 15s, max_samples_per_send: 6000}']
//! ```

mod proc;
mod sink;
mod targets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use clap::Parser;

use sink::{Counts, Sink};
use targets::{Exposition, Served, Target};

#[derive(Parser, Debug, Clone)]
#[command(about = "End-to-end agent benchmark on loopback")]
struct Args {
    /// Comma-separated: ferry-rw2, ferry-rw1, prometheus (skipped when not installed), and
    /// base-rw2, base-rw1 (the --base-bin build, to compare two builds in one run).
    #[arg(long, default_value = "ferry-rw2,ferry-rw1,prometheus")]
    agents: String,
    #[arg(long, default_value_t = 50)]
    targets: usize,
    #[arg(long, default_value_t = 2000)]
    series: usize,
    /// Scrape interval, seconds.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    #[arg(long, default_value_t = 30)]
    warmup: u64,
    /// Measured window, seconds (an outage run stretches it to outage + 60 s).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Runs per agent, interleaved; each figure is the median.
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// steady; churn (a tenth of the series renamed every 5 scrapes, spread evenly); flap (a
    /// tenth of the targets answer 500 for 30 s of every 90 s); outage (the sink answers 503 for
    /// --outage-secs, 10 s into the window).
    #[arg(long, default_value = "steady")]
    scenario: String,
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// A `queue_config` for every agent's remote write, as a YAML flow mapping, e.g.
    /// `'{batch_send_deadline: 15s, max_samples_per_send: 6000, capacity: 30000}'`.
    #[arg(long)]
    queue_config: Option<String>,
    /// The ferry-agent binary (default: the one this bench was built with).
    #[arg(long)]
    ferry_bin: Option<PathBuf>,
    /// Another ferry-agent build, run as base-rw1 / base-rw2.
    #[arg(long)]
    base_bin: Option<PathBuf>,
    #[arg(long, default_value = "prometheus")]
    prometheus_bin: String,
    /// Where configs, data and logs go (deleted data at the end; logs stay).
    #[arg(long, default_value = "/tmp/ferry-e2e-bench")]
    workdir: PathBuf,
    /// Appends one JSON line per run here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
struct Measured {
    cpu_us_per_sample: f64,
    cpu_cores: f64,
    peak_rss_mib: f64,
    rss_end_mib: f64,
    wire_bytes_per_sample: f64,
    raw_bytes_per_sample: f64,
    symbol_bytes_per_sample: f64,
    wal_bytes_per_sample: f64,
    delivery: f64,
    max_lag_s: f64,
    catch_up_s: f64,
    harness_cpu_s: f64,
    samples_per_request: f64,
}

impl Measured {
    fn fields(&self) -> [(&'static str, f64); 13] {
        [
            ("cpu_us_per_sample", self.cpu_us_per_sample),
            ("cpu_cores", self.cpu_cores),
            ("peak_rss_mib", self.peak_rss_mib),
            ("rss_end_mib", self.rss_end_mib),
            ("wire_bytes_per_sample", self.wire_bytes_per_sample),
            ("raw_bytes_per_sample", self.raw_bytes_per_sample),
            ("symbol_bytes_per_sample", self.symbol_bytes_per_sample),
            ("wal_bytes_per_sample", self.wal_bytes_per_sample),
            ("delivery", self.delivery),
            ("max_lag_s", self.max_lag_s),
            ("catch_up_s", self.catch_up_s),
            ("harness_cpu_s", self.harness_cpu_s),
            ("samples_per_request", self.samples_per_request),
        ]
    }

    fn median(runs: &[Measured]) -> Measured {
        let pick = |f: fn(&Measured) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Measured {
            cpu_us_per_sample: pick(|r| r.cpu_us_per_sample),
            cpu_cores: pick(|r| r.cpu_cores),
            peak_rss_mib: pick(|r| r.peak_rss_mib),
            rss_end_mib: pick(|r| r.rss_end_mib),
            wire_bytes_per_sample: pick(|r| r.wire_bytes_per_sample),
            raw_bytes_per_sample: pick(|r| r.raw_bytes_per_sample),
            symbol_bytes_per_sample: pick(|r| r.symbol_bytes_per_sample),
            wal_bytes_per_sample: pick(|r| r.wal_bytes_per_sample),
            delivery: pick(|r| r.delivery),
            max_lag_s: pick(|r| r.max_lag_s),
            catch_up_s: pick(|r| r.catch_up_s),
            harness_cpu_s: pick(|r| r.harness_cpu_s),
            samples_per_request: pick(|r| r.samples_per_request),
        }
    }
}

fn config(args: &Args, ports: &[u16], sink: u16, rw2: bool) -> String {
    let targets: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let proto = if rw2 { "\n    protobuf_message: io.prometheus.write.v2.Request" } else { "" };
    let queue = args.queue_config.as_ref().map_or(String::new(), |q| format!("\n    queue_config: {q}"));
    format!(
        "global:\n  scrape_interval: {i}s\n  scrape_timeout: {t}s\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: [{}]\nremote_write:\n  - url: http://127.0.0.1:{sink}/api/v1/write{proto}{queue}\n",
        targets.join(", "),
        i = args.interval,
        t = args.interval.min(10),
    )
}

/// The agent's WAL counters (ferry only): bytes and samples written.
async fn wal_counters(client: &reqwest::Client, port: u16) -> Option<(f64, f64)> {
    let text = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
    let get = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    Some((get("ferry_wal_bytes_written_total ")?, get("ferry_wal_samples_written_total ")?))
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn run_one(args: &Args, agent: &str, rep: usize) -> Result<Measured, String> {
    let dir = args.workdir.join(format!("{agent}-{}-r{rep}", args.scenario));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let served = Arc::new(Served::default());
    let mut tasks = Vec::new();
    let mut ports = Vec::new();
    for t in 0..args.targets {
        let churn = if args.scenario == "churn" { 0.1 } else { 0.0 };
        // Flapping: every tenth target, down 30 s of every 90 s, phases spread.
        let flap = (args.scenario == "flap" && t % 10 == 0).then_some((90, 30, (t as u64 * 37) % 90));
        let target = Arc::new(Target::new(Exposition::new(t, args.series, churn), served.clone(), flap));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        ports.push(l.local_addr().map_err(|e| e.to_string())?.port());
        let app = Router::new().route("/metrics", get(targets::scrape)).with_state(target);
        tasks.push(tokio::spawn(async move { axum::serve(l, app).await }));
    }
    let sink = Arc::new(Sink::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let sink_port = l.local_addr().map_err(|e| e.to_string())?.port();
    let app = Router::new()
        .route("/api/v1/write", post(sink::write))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(sink.clone());
    tasks.push(tokio::spawn(async move { axum::serve(l, app).await }));

    let cfg_path = dir.join("agent.yaml");
    let rw2 = agent.ends_with("rw2");
    std::fs::write(&cfg_path, config(args, &ports, sink_port, rw2)).map_err(|e| e.to_string())?;
    let agent_port = proc::free_port()?;
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("agent.log")).map_err(|e| e.to_string())?;
    let mut cmd = if agent == "prometheus" {
        let mut c = std::process::Command::new(&args.prometheus_bin);
        c.arg("--enable-feature=agent")
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.agent.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{agent_port}"))
            .arg("--log.level=warn");
        c
    } else {
        let bin = if agent.starts_with("base") {
            args.base_bin.clone().ok_or("base-rw1/base-rw2 need --base-bin")?
        } else {
            args.ferry_bin.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ferry-agent")))
        };
        let mut c = std::process::Command::new(bin);
        c.arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{agent_port}"));
        c
    };
    cmd.stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
    let child = proc::Child::spawn(cmd)?;
    let pid = child.pid();
    let client = reqwest::Client::new();

    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let outage = args.scenario == "outage";
    let window = if outage { args.duration.max(10 + args.outage_secs + 60) } else { args.duration };
    let cpu0 = proc::cpu_seconds(pid)?;
    let own0 = proc::cpu_seconds(std::process::id())?;
    let served0 = served.samples.load(Relaxed);
    let sink0: Counts = *sink.counts.lock().expect("counts lock");
    let wal0 = wal_counters(&client, agent_port).await;
    let wal_dir0 = dir_size(&data);
    let started = Instant::now();
    let outage_span = outage.then(|| {
        let from = sink::now_ms() + 10_000;
        (from, from + args.outage_secs as i64 * 1000)
    });
    *sink.outage.lock().expect("outage lock") = outage_span;
    tokio::time::sleep(Duration::from_secs(window)).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = proc::cpu_seconds(pid)? - cpu0;
    let own = proc::cpu_seconds(std::process::id())? - own0;
    let served_window = served.samples.load(Relaxed) - served0;
    let sink1: Counts = *sink.counts.lock().expect("counts lock");
    let wal1 = wal_counters(&client, agent_port).await;
    let wal_dir1 = dir_size(&data);
    let rss_end = proc::status_kib(pid, "VmRSS:")? as f64 / 1024.0;

    // Drain: the targets stop serving, the agent delivers what it has.
    served.closed.store(true, Relaxed);
    let total = served.samples.load(Relaxed);
    let drain_until = Instant::now() + Duration::from_secs(60);
    while sink.counts.lock().expect("counts lock").data_samples < total && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little longer, so duplicates (which would push delivery above 1) can show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = proc::status_kib(pid, "VmHWM:")? as f64 / 1024.0;
    drop(child);
    for t in tasks {
        t.abort();
    }
    let end: Counts = *sink.counts.lock().expect("counts lock");
    let samples_in = (sink1.samples - sink0.samples).max(1) as f64;
    let wal_per_sample = match (wal0, wal1) {
        (Some(a), Some(b)) if b.1 > a.1 => (b.0 - a.0) / (b.1 - a.1),
        _ => wal_dir1.saturating_sub(wal_dir0) as f64 / samples_in,
    };
    let _ = std::fs::remove_dir_all(&data);
    Ok(Measured {
        cpu_us_per_sample: cpu * 1e6 / served_window.max(1) as f64,
        cpu_cores: cpu / secs,
        peak_rss_mib: peak,
        rss_end_mib: rss_end,
        wire_bytes_per_sample: (sink1.wire_bytes - sink0.wire_bytes) as f64 / samples_in,
        raw_bytes_per_sample: (sink1.raw_bytes - sink0.raw_bytes) as f64 / samples_in,
        symbol_bytes_per_sample: (sink1.symbol_wire_bytes - sink0.symbol_wire_bytes) as f64 / samples_in,
        wal_bytes_per_sample: wal_per_sample,
        delivery: end.data_samples as f64 / total.max(1) as f64,
        max_lag_s: if outage { 0.0 } else { sink1.max_lag_ms as f64 / 1000.0 },
        catch_up_s: outage_span
            .map_or(0.0, |(_, to)| (end.outage_last_arrival_ms - to).max(0) as f64 / 1000.0),
        harness_cpu_s: own,
        samples_per_request: samples_in / (sink1.requests - sink0.requests).max(1) as f64,
    })
}

fn main() {
    let args = Args::parse();
    let mut agents: Vec<String> = args.agents.split(',').map(|s| s.trim().to_owned()).collect();
    if agents.iter().any(|a| a == "prometheus")
        && std::process::Command::new(&args.prometheus_bin).arg("--version").output().is_err()
    {
        eprintln!("prometheus ({}) not found: skipping it", args.prometheus_bin);
        agents.retain(|a| a != "prometheus");
    }
    for a in &agents {
        if !matches!(a.as_str(), "ferry-rw1" | "ferry-rw2" | "base-rw1" | "base-rw2" | "prometheus") {
            eprintln!("unknown agent {a:?}: use ferry-rw1, ferry-rw2, base-rw1, base-rw2, prometheus");
            std::process::exit(2);
        }
    }
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let sample = Exposition::new(0, args.series, 0.0);
    let mut body = String::new();
    sample.render(1, &mut body);
    eprintln!(
        "e2e: {} targets x {} series ({} B of exposition per series), {} s interval, scenario {}, {} rep(s) of {}",
        args.targets,
        sample.series(),
        body.len() / sample.series().max(1),
        args.interval,
        args.scenario,
        args.reps,
        agents.join(", ")
    );
    let mut results: Vec<(String, Vec<Measured>)> = agents.iter().map(|a| (a.clone(), Vec::new())).collect();
    for rep in 1..=args.reps {
        for (agent, runs) in &mut results {
            eprintln!("e2e: {agent} run {rep}/{} ...", args.reps);
            match rt.block_on(run_one(&args, agent, rep)) {
                Ok(r) => {
                    let json: Vec<String> =
                        r.fields().iter().map(|(k, v)| format!("\"{k}\":{v:.4}")).collect();
                    let line = format!(
                        "{{\"agent\":\"{agent}\",\"scenario\":\"{}\",\"targets\":{},\"series\":{},\"rep\":{rep},{}}}",
                        args.scenario,
                        args.targets,
                        args.series,
                        json.join(",")
                    );
                    eprintln!("{line}");
                    if let Some(out) = &args.out {
                        use std::io::Write;
                        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(out) {
                            let _ = writeln!(f, "{line}");
                        }
                    }
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("e2e: {agent} run {rep} failed: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    let series = args.targets * sample.series();
    println!(
        "\n{} targets x {} series = {series} active series, scenario {}, median of {} run(s)\n",
        args.targets,
        sample.series(),
        args.scenario,
        args.reps
    );
    println!(
        "| agent | CPU µs/sample | peak RSS MiB | RSS B/series | wire B/sample | RW2 symbols alone, wire B/sample | decoded B/sample | WAL B/sample | delivery | max lag s | catch-up s | harness CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let medians: Vec<(String, Measured)> =
        results.iter().map(|(a, r)| (a.clone(), Measured::median(r))).collect();
    for (agent, r) in &medians {
        println!(
            "| {agent} | {:.3} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.4} | {:.2} | {:.1} | {:.1} |",
            r.cpu_us_per_sample,
            r.peak_rss_mib,
            r.peak_rss_mib * 1048576.0 / series as f64,
            r.wire_bytes_per_sample,
            r.symbol_bytes_per_sample,
            r.raw_bytes_per_sample,
            r.wal_bytes_per_sample,
            r.delivery,
            r.max_lag_s,
            r.catch_up_s,
            r.harness_cpu_s
        );
    }
    if let Some((_, p)) = medians.iter().find(|(a, _)| a == "prometheus") {
        println!();
        for (agent, r) in medians.iter().filter(|(a, _)| a != "prometheus") {
            println!(
                "{agent} / prometheus: CPU per sample x{:.2}, peak RSS x{:.2}, wire bytes x{:.2}",
                r.cpu_us_per_sample / p.cpu_us_per_sample,
                r.peak_rss_mib / p.peak_rss_mib,
                r.wire_bytes_per_sample / p.wire_bytes_per_sample
            );
        }
    }
    let failed = medians.iter().any(|(_, r)| (r.delivery - 1.0).abs() > 1e-9);
    if failed {
        eprintln!("e2e: delivery was not exactly 1.0 for every agent");
    }
}
