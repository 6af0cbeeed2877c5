//! End-to-end ingest benchmark: samples per CPU-second of the receiver process, for RW1 and
//! RW2 payloads from 100k series, ferry-receiver side by side with Prometheus' remote-write
//! receiver on the very same RW1 bodies.
//!
//! ```sh
//! cargo bench -p ferry-receiver --bench ingest                 # both, if `prometheus` is on PATH
//! cargo bench -p ferry-receiver --bench ingest -- --series 20000 --rounds 5 --no-prometheus
//! ```
//!
//! Each receiver gets a fresh store. Round 1 creates every series; rounds 2.. append one
//! sample per series at +15 s, as a fleet of agents would. CPU is user+sys of the receiver's
//! process from /proc over the steady rounds only. Prometheus 2.42 cannot receive RW2, so its
//! RW2 row is absent. Ratios are computed within one run, so machine noise mostly cancels.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_protocol::codec::Encoder;
use ferry_protocol::{LabelSet, SymbolTable, rw1, rw2};

struct Opts {
    series: usize,
    rounds: usize,
    per_request: usize,
    conns: usize,
    prometheus: Option<String>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        series: 100_000,
        rounds: 6,
        per_request: 2000,
        conns: 4,
        prometheus: Some("prometheus".into()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--series" => o.series = val(i).parse().unwrap(),
            "--rounds" => o.rounds = val(i).parse().unwrap(),
            "--per-request" => o.per_request = val(i).parse().unwrap(),
            "--conns" => o.conns = val(i).parse().unwrap(),
            "--prometheus" => o.prometheus = Some(val(i)),
            "--no-prometheus" => {
                o.prometheus = None;
                i -= 1;
            }
            "--bench" => i -= 1, // cargo passes this
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

/// Realistic label sets: ~40 metric names, 200 pods over 20 nodes, histogram buckets.
fn make_series(n: usize) -> Vec<LabelSet> {
    let metrics = [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "kube_pod_status_phase",
        "node_filesystem_avail_bytes",
        "grpc_server_handled_total",
    ];
    let les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
    (0..n)
        .map(|i| {
            let m = metrics[i % metrics.len()];
            let pod = i / 500;
            let mut pairs = vec![
                ("__name__".to_owned(), m.to_owned()),
                ("job".to_owned(), "kubernetes-pods".to_owned()),
                ("namespace".to_owned(), format!("team-{}", pod % 17)),
                ("pod".to_owned(), format!("checkout-7d9fk2lq4x-{pod:05x}")),
                (
                    "instance".to_owned(),
                    format!("10.{}.{}.{}:8080", pod / 65536 % 256, pod / 256 % 256, pod % 256),
                ),
                ("node".to_owned(), format!("ip-10-0-{}-{}.ec2.internal", pod % 20, pod % 7)),
                ("series".to_owned(), format!("{}", i / metrics.len())),
            ];
            if m.ends_with("_bucket") {
                pairs.push(("le".to_owned(), les[(i / metrics.len()) % les.len()].to_owned()));
            }
            LabelSet::from_pairs(pairs).unwrap()
        })
        .collect()
}

fn value(i: usize, round: usize) -> f64 {
    // Counters grow; a third of the series are gauges wandering around.
    if i.is_multiple_of(3) {
        ((i * 7 + round * 13) % 1000) as f64 / 10.0
    } else {
        (i % 97 + round * (i % 11 + 1)) as f64
    }
}

fn rw1_bodies(series: &[LabelSet], round: usize, ts: i64, per: usize) -> Vec<Vec<u8>> {
    let mut enc = Encoder::default();
    series
        .chunks(per)
        .enumerate()
        .map(|(c, chunk)| {
            let req = rw1::WriteRequest {
                timeseries: chunk
                    .iter()
                    .enumerate()
                    .map(|(j, ls)| rw1::TimeSeries {
                        labels: ls.as_slice().to_vec(),
                        samples: vec![rw1::Sample { value: value(c * per + j, round), timestamp: ts }],
                        ..Default::default()
                    })
                    .collect(),
                metadata: vec![],
            };
            enc.encode(&req)
        })
        .collect()
}

fn rw2_bodies(series: &[LabelSet], round: usize, ts: i64, per: usize) -> Vec<Vec<u8>> {
    let mut enc = Encoder::default();
    let mut table = SymbolTable::new();
    series
        .chunks(per)
        .enumerate()
        .map(|(c, chunk)| {
            let timeseries = chunk
                .iter()
                .enumerate()
                .map(|(j, ls)| {
                    let mut refs = Vec::with_capacity(ls.len() * 2);
                    table.symbolize_labels(ls, &mut refs);
                    rw2::TimeSeries {
                        labels_refs: refs,
                        samples: vec![rw2::Sample {
                            value: value(c * per + j, round),
                            timestamp: ts,
                            start_timestamp: 0,
                        }],
                        ..Default::default()
                    }
                })
                .collect();
            enc.encode(&rw2::Request { symbols: table.take_symbols(), timeseries })
        })
        .collect()
}

/// user+sys CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(100.0)
}

fn rss_hwm_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A keep-alive HTTP/1.1 client that needs nothing but std.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { r: BufReader::new(s.try_clone().unwrap()), w: s }
    }

    fn post(&mut self, path: &str, ct: &str, body: &[u8]) -> (u16, String) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {ct}\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.w.write_all(head.as_bytes()).unwrap();
        self.w.write_all(body).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut len = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.r.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                self.r.read_exact(&mut chunk).unwrap();
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        } else {
            body.resize(len, 0);
            self.r.read_exact(&mut body).unwrap();
        }
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

struct Server {
    name: &'static str,
    child: Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(b"GET /-/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{addr} never became ready");
}

fn tmp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ferry-ingest-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_ferry() -> Server {
    let dir = tmp("ferry");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_ferry-receiver"))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_ready(&addr);
    Server { name: "ferry-receiver", child, addr, dir }
}

fn start_prometheus(bin: &str) -> Option<Server> {
    let dir = tmp("prometheus");
    std::fs::write(dir.join("prometheus.yml"), "global: {}\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg("--web.enable-remote-write-receiver")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_ready(&addr);
    Some(Server { name: "prometheus", child, addr, dir })
}

/// Posts every body, `conns` at a time; panics on any non-2xx.
fn send_all(addr: &str, ct: &str, bodies: &Arc<Vec<Vec<u8>>>, conns: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, ct, bodies, next) = (addr.to_owned(), ct.to_owned(), bodies.clone(), next.clone());
            std::thread::spawn(move || {
                let mut c = Conn::new(&addr);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = bodies.get(i) else { return };
                    let (status, text) = c.post("/api/v1/write", &ct, b);
                    assert!((200..300).contains(&status), "{addr}: HTTP {status}: {text}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

struct Outcome {
    samples: usize,
    cpu_s: f64,
    wall_s: f64,
    first_round_cpu_s: f64,
    rss_mib: f64,
    wire_bytes: usize,
}

fn run(server: &Server, ct: &str, rounds: &[Arc<Vec<Vec<u8>>>], series: usize, conns: usize) -> Outcome {
    let pid = server.child.id();
    let c0 = cpu_seconds(pid);
    send_all(&server.addr, ct, &rounds[0], conns);
    let c1 = cpu_seconds(pid);
    let t = Instant::now();
    for r in &rounds[1..] {
        send_all(&server.addr, ct, r, conns);
    }
    let wall_s = t.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(pid) - c1;
    Outcome {
        samples: series * (rounds.len() - 1),
        cpu_s,
        wall_s,
        first_round_cpu_s: c1 - c0,
        rss_mib: rss_hwm_mib(pid),
        wire_bytes: rounds[1..].iter().flat_map(|r| r.iter()).map(Vec::len).sum(),
    }
}

fn main() {
    let o = parse_opts();
    assert!(o.rounds >= 2, "--rounds must be at least 2 (round 1 creates the series)");
    eprintln!("generating {} series x {} rounds ...", o.series, o.rounds);
    let series = make_series(o.series);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = now - 3_600_000;
    let ts = |r: usize| t0 + r as i64 * 15_000;
    let v1: Vec<_> = (0..o.rounds).map(|r| Arc::new(rw1_bodies(&series, r, ts(r), o.per_request))).collect();
    let v2: Vec<_> = (0..o.rounds).map(|r| Arc::new(rw2_bodies(&series, r, ts(r), o.per_request))).collect();

    let mut rows = Vec::new();
    let ferry = start_ferry();
    rows.push(("ferry-receiver", "RW1", run(&ferry, "application/x-protobuf", &v1, o.series, o.conns)));
    let disk = dir_size(&ferry.dir);
    drop(ferry);
    let ferry = start_ferry();
    rows.push((
        "ferry-receiver",
        "RW2",
        run(&ferry, ferry_protocol::headers::CONTENT_TYPE_RW2, &v2, o.series, o.conns),
    ));
    drop(ferry);
    match o.prometheus.as_deref().and_then(start_prometheus) {
        Some(p) => {
            rows.push((p.name, "RW1", run(&p, "application/x-protobuf", &v1, o.series, o.conns)));
        }
        None => eprintln!("prometheus not found: comparison skipped (install Debian's `prometheus`)"),
    }

    println!(
        "\n{} series, {} steady rounds of 1 sample/series, {} samples/request, {} connections\n",
        o.series,
        o.rounds - 1,
        o.per_request,
        o.conns
    );
    println!(
        "| receiver | protocol | samples/CPU-s | samples/s (wall) | CPU s | 1st round CPU s | peak RSS MiB | wire B/sample |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, proto, r) in &rows {
        println!(
            "| {name} | {proto} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.1} |",
            r.samples as f64 / r.cpu_s,
            r.samples as f64 / r.wall_s,
            r.cpu_s,
            r.first_round_cpu_s,
            r.rss_mib,
            r.wire_bytes as f64 / r.samples as f64
        );
    }
    if let Some((_, _, p)) = rows.iter().find(|r| r.0 == "prometheus") {
        let prom = p.samples as f64 / p.cpu_s;
        for (name, proto, r) in rows.iter().filter(|r| r.0 == "ferry-receiver") {
            println!(
                "\nratio {name} {proto} / prometheus RW1 (samples per CPU-second): {:.2}",
                r.samples as f64 / r.cpu_s / prom
            );
        }
    }
    println!(
        "\nferry-receiver store after the RW1 run (raw head, before compaction): {:.1} MiB",
        disk as f64 / 1048576.0
    );
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() { dir_size(&e.path()) } else { m.len() }
                })
                .sum()
        })
        .unwrap_or(0)
}
