//! Synthetic scrape targets: one loopback HTTP listener per target, each serving a text 0.0.4
//! exposition of a fixed number of series with realistic label shapes (cAdvisor-like
//! container series with cgroup paths and 64-hex ids, kube-state-metrics-like pod series with
//! UIDs, classic histograms, request counters). Series texts are rendered once; a scrape only
//! copies them and formats the values, so the targets cost little of the shared CPU.
//!
//! Every successful response is counted (series served), which is what delivery is checked
//! against. Churn renames a share of the pod series every few scrapes; flapping targets answer
//! 500 for part of each cycle (those scrapes serve nothing and are not counted).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// How a series' value moves from scrape to scrape.
#[derive(Clone, Copy)]
enum Value {
    /// Grows by `rate` per scrape (some rates are 0: flat counters exist).
    Counter { base: f64, rate: f64 },
    /// Moves pseudo-randomly around `base`.
    Gauge { base: f64 },
    /// A classic histogram bucket: `share` of the histogram's count.
    Bucket { rate: f64, share: f64 },
}

struct Line {
    /// `name{labels} `, with the churn suffix cut out when `churn_at` is set.
    text: String,
    /// Where a 5-character pod generation is inserted (churning series only).
    churn_at: Option<usize>,
    value: Value,
}

/// One target's exposition.
pub struct Exposition {
    /// Metric family headers, each followed by the lines of that family.
    families: Vec<(String, Vec<Line>)>,
    series: usize,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: cheap, well-spread, deterministic.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hex(seed: u64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    let mut i = 0u64;
    while s.len() < len {
        let _ = write!(s, "{:016x}", mix(seed ^ i));
        i += 1;
    }
    s.truncate(len);
    s
}

fn uuid(seed: u64) -> String {
    let h = hex(seed, 32);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

const APPS: [&str; 6] = ["checkout", "payments", "search", "frontend", "inventory", "ledger"];
const ROUTES: [&str; 5] = ["/api/v1/orders", "/api/v1/cart", "/healthz", "/api/v1/users/:id", "/metrics"];
const BUCKETS: [&str; 11] = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"];

impl Exposition {
    /// The exposition of target `t` with exactly `series` series; `churn` is the share of
    /// series (pod-level ones) whose pod name changes generation over time.
    pub fn new(t: usize, series: usize, churn: f64) -> Exposition {
        let seed = mix(t as u64 + 1);
        let mut families: Vec<(String, Vec<Line>)> = Vec::new();
        let mut family = |name: &str, kind: &str, help: &str| -> usize {
            families.push((format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"), Vec::new()));
            families.len() - 1
        };
        let go = family("go_memstats_alloc_bytes", "gauge", "Number of bytes allocated and still in use.");
        let cpu = family(
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed in seconds.",
        );
        let mem = family("container_memory_working_set_bytes", "gauge", "Current working set in bytes.");
        let net =
            family("container_network_receive_bytes_total", "counter", "Cumulative count of bytes received.");
        let phase = family("kube_pod_status_phase", "gauge", "The pods current phase.");
        let hist =
            family("http_server_request_duration_seconds", "histogram", "Duration of HTTP server requests.");
        let reqs = family(
            "http_server_requests_total",
            "counter",
            "Total HTTP requests by method, route and status.",
        );
        let churn_every = if churn > 0.0 { (1.0 / churn).round().max(1.0) as usize } else { 0 };
        let mut i = 0u64;
        // Series pushed so far; the last block is cut short at `series`.
        let mut n = 0usize;
        let push = |families: &mut Vec<(String, Vec<Line>)>,
                    n: &mut usize,
                    f: usize,
                    text: String,
                    churn_at,
                    value| {
            if *n < series {
                families[f].1.push(Line { text, churn_at, value });
                *n += 1;
            }
        };
        push(
            &mut families,
            &mut n,
            go,
            "go_memstats_alloc_bytes ".into(),
            None,
            Value::Gauge { base: 4.2e7 },
        );
        while n < series {
            i += 1;
            let r = mix(seed ^ i);
            let app = APPS[(r % APPS.len() as u64) as usize];
            let ns = format!("team-{}", r % 13);
            let pod = format!("{app}-{}-{}", &hex(r, 10), &hex(r >> 7, 5));
            let churning = churn_every > 0 && (i as usize).is_multiple_of(churn_every);
            // Pod names of churning series end in a generation that the renderer fills in.
            let pod_label = if churning { format!("{pod}-") } else { pod.clone() };
            let rate = (r >> 20) as f64 % 1000.0 / 10.0;
            match i % 4 {
                0 | 1 => {
                    // cAdvisor container series: long cgroup ids and image names.
                    let id = hex(r ^ 1, 64);
                    let labels_a = format!(
                        "container=\"{app}\",id=\"/kubepods/burstable/pod{}/{id}\",image=\"registry.example.com/{ns}/{app}:v1.{}.{}\",name=\"{id}\",namespace=\"{ns}\",pod=\"{pod_label}",
                        uuid(r),
                        r % 40,
                        r % 9
                    );
                    for (f, v) in [
                        (cpu, Value::Counter { base: 1000.0, rate: rate / 100.0 }),
                        (mem, Value::Gauge { base: 3.1e8 }),
                        (net, Value::Counter { base: 1e9, rate: rate * 1000.0 }),
                    ] {
                        // The family header starts "# HELP <name> ".
                        let name = families[f].0[7..].split(' ').next().unwrap_or_default().to_owned();
                        let text = format!("{name}{{{labels_a}\"}} ");
                        let at = churning.then(|| name.len() + 1 + labels_a.len());
                        push(&mut families, &mut n, f, text, at, v);
                    }
                }
                2 => {
                    let uid = uuid(r ^ 2);
                    for ph in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
                        let labels_a = format!("namespace=\"{ns}\",pod=\"{pod_label}");
                        let text =
                            format!("kube_pod_status_phase{{{labels_a}\",uid=\"{uid}\",phase=\"{ph}\"}} ");
                        let at = churning.then(|| "kube_pod_status_phase{".len() + labels_a.len());
                        push(
                            &mut families,
                            &mut n,
                            phase,
                            text,
                            at,
                            Value::Gauge { base: f64::from(u8::from(ph == "Running")) },
                        );
                    }
                }
                _ => {
                    let route = ROUTES[(r % ROUTES.len() as u64) as usize];
                    let method = ["GET", "POST", "PUT"][(r % 3) as usize];
                    let status = ["200", "404", "500"][((r >> 3) % 3) as usize];
                    // The pod label keeps every block's series distinct (a scrape must not repeat a series).
                    let base = format!(
                        "method=\"{method}\",namespace=\"{ns}\",pod=\"{pod}\",route=\"{route}\",service=\"{app}\""
                    );
                    for (k, le) in BUCKETS.iter().chain(["+Inf"].iter()).enumerate() {
                        let share = ((k + 1) as f64 / 12.0).min(1.0);
                        let text =
                            format!("http_server_request_duration_seconds_bucket{{{base},le=\"{le}\"}} ");
                        push(&mut families, &mut n, hist, text, None, Value::Bucket { rate, share });
                    }
                    push(
                        &mut families,
                        &mut n,
                        hist,
                        format!("http_server_request_duration_seconds_sum{{{base}}} "),
                        None,
                        Value::Counter { base: 0.0, rate: rate * 0.05 },
                    );
                    push(
                        &mut families,
                        &mut n,
                        hist,
                        format!("http_server_request_duration_seconds_count{{{base}}} "),
                        None,
                        Value::Bucket { rate, share: 1.0 },
                    );
                    push(
                        &mut families,
                        &mut n,
                        reqs,
                        format!("http_server_requests_total{{{base},status=\"{status}\"}} "),
                        None,
                        Value::Counter { base: 0.0, rate },
                    );
                }
            }
        }
        families.retain(|f| !f.1.is_empty());
        Exposition { families, series: n }
    }

    pub fn series(&self) -> usize {
        self.series
    }

    /// Renders scrape number `seq` into `out`.
    pub fn render(&self, seq: u64, out: &mut String) {
        out.clear();
        let mut k = 0u64;
        for (head, lines) in &self.families {
            out.push_str(head);
            for l in lines {
                k += 1;
                match l.churn_at {
                    Some(at) => {
                        // Generations are staggered by series so the churn is spread evenly.
                        let generation = (seq + k) / 5;
                        out.push_str(&l.text[..at]);
                        let _ = write!(out, "{:05x}", generation & 0xfffff);
                        out.push_str(&l.text[at..]);
                    }
                    None => out.push_str(&l.text),
                }
                let s = seq as f64;
                let _ = match l.value {
                    Value::Counter { base, rate } => write!(out, "{}", base + (rate * s).floor()),
                    Value::Gauge { base } if base <= 1.0 => write!(out, "{base}"),
                    Value::Gauge { base } => write!(out, "{}", base + (mix(k ^ seq << 32) % 100_000) as f64),
                    Value::Bucket { rate, share } => write!(out, "{}", (rate * s * share).floor()),
                };
                out.push('\n');
            }
        }
    }
}

/// What every target shares: counters the runner reads, and switches it flips.
#[derive(Default)]
pub struct Served {
    /// Series served in successful (200) responses.
    pub samples: AtomicU64,
    pub scrapes: AtomicU64,
    pub bytes: AtomicU64,
    /// When set, every target answers 503 and counts nothing (the end of a run).
    pub closed: AtomicBool,
}

pub struct Target {
    pub expo: Exposition,
    pub served: Arc<Served>,
    seq: AtomicU64,
    /// Flapping: down for `down` of every `period` seconds, at this phase.
    pub flap: Option<(u64, u64, u64)>,
}

impl Target {
    pub fn new(expo: Exposition, served: Arc<Served>, flap: Option<(u64, u64, u64)>) -> Target {
        Target { expo, served, seq: AtomicU64::new(0), flap }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub async fn scrape(State(t): State<Arc<Target>>) -> Response {
    if t.served.closed.load(Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if let Some((period, down, phase)) = t.flap
        && (unix_secs() + phase) % period < down
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, "flapping").into_response();
    }
    let seq = t.seq.fetch_add(1, Relaxed);
    let mut body = String::new();
    t.expo.render(seq, &mut body);
    t.served.samples.fetch_add(t.expo.series() as u64, Relaxed);
    t.served.scrapes.fetch_add(1, Relaxed);
    t.served.bytes.fetch_add(body.len() as u64, Relaxed);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
