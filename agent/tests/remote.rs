//! End-to-end tests of delivery: the real agent scraping real loopback targets and sending to
//! a scripted receiver that answers each request as told (204, 400, 415, 429 + Retry-After,
//! 5xx, 2xx without Written headers) or refuses connections for a while. They check the
//! contracts: one scrape per request, per-series order, retries carry the same samples,
//! 4xx is not retried, nothing lost across an outage and a `kill -9`, RW1 fallback, WAL
//! repair and the WAL cap.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferry_protocol::codec::decode_body;
use ferry_protocol::headers::parse_content_type;
use ferry_protocol::symbols::resolve_label_set;
use ferry_protocol::{WriteProto, rw1, rw2};

#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    retry_after: Option<&'static str>,
    /// RW2: send the *-Written headers on 2xx.
    written: bool,
}

impl Answer {
    fn ok() -> Answer {
        Answer { status: 204, retry_after: None, written: true }
    }
    fn status(s: u16) -> Answer {
        Answer { status: s, retry_after: None, written: true }
    }
}

#[derive(Clone, Debug)]
struct Request {
    proto: WriteProto,
    headers: BTreeMap<String, String>,
    /// (series as `{a="b"}` text, timestamp, value bits) in request order.
    samples: Vec<(String, i64, u64)>,
    /// How many `TimeSeries` carried them.
    timeseries: usize,
    status: u16,
    at: Instant,
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    requests: Vec<Request>,
    refuse: bool,
}

#[derive(Clone)]
struct Receiver {
    addr: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Receiver { addr: l.local_addr().unwrap().to_string(), state: Default::default() };
        let r2 = r.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                if r2.state.lock().unwrap().refuse {
                    drop(conn); // a down receiver: the connection closes with no answer
                    continue;
                }
                let r = r2.clone();
                std::thread::spawn(move || r.serve(conn));
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    fn script(&self, answers: &[Answer]) {
        self.state.lock().unwrap().script.extend(answers.iter().cloned());
    }

    fn refuse(&self, on: bool) {
        self.state.lock().unwrap().refuse = on;
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn serve(&self, conn: TcpStream) {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut w = conn;
        loop {
            let Some((_, headers)) = read_head(&mut r) else { return };
            let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let proto = parse_content_type(headers.get("content-type").map(String::as_str)).unwrap();
            let (samples, timeseries) = decode(proto, &body);
            let answer = self.state.lock().unwrap().script.pop_front().unwrap_or_else(Answer::ok);
            let mut head = format!("HTTP/1.1 {} X\r\nContent-Length: 0\r\n", answer.status);
            if let Some(ra) = answer.retry_after {
                head.push_str(&format!("Retry-After: {ra}\r\n"));
            }
            if proto == WriteProto::V2 && answer.written && (200..300).contains(&answer.status) {
                head.push_str(&format!("X-Prometheus-Remote-Write-Samples-Written: {}\r\nX-Prometheus-Remote-Write-Histograms-Written: 0\r\nX-Prometheus-Remote-Write-Exemplars-Written: 0\r\n", samples.len()));
            }
            head.push_str("\r\n");
            self.state.lock().unwrap().requests.push(Request {
                proto,
                headers,
                samples,
                timeseries,
                status: answer.status,
                at: Instant::now(),
            });
            if w.write_all(head.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// The samples of a request, and how many `TimeSeries` it has.
fn decode(proto: WriteProto, body: &[u8]) -> (Vec<(String, i64, u64)>, usize) {
    let mut out = Vec::new();
    let timeseries;
    match proto {
        WriteProto::V1 => {
            let req: rw1::WriteRequest = decode_body(body, 64 << 20).unwrap();
            timeseries = req.timeseries.len();
            for ts in req.timeseries {
                let ls = ferry_protocol::LabelSet::from_labels(ts.labels).unwrap().to_string();
                for s in ts.samples {
                    out.push((ls.clone(), s.timestamp, s.value.to_bits()));
                }
            }
        }
        WriteProto::V2 => {
            let req: rw2::Request = decode_body(body, 64 << 20).unwrap();
            timeseries = req.timeseries.len();
            for ts in req.timeseries {
                let ls = resolve_label_set(&ts.labels_refs, &req.symbols).unwrap().to_string();
                for s in ts.samples {
                    out.push((ls.clone(), s.timestamp, s.value.to_bits()));
                }
            }
        }
    }
    (out, timeseries)
}

/// Accepted samples of `up` for a target: the scrape timestamps that arrived.
fn accepted_up(reqs: &[Request]) -> Vec<i64> {
    reqs.iter()
        .filter(|r| (200..300).contains(&r.status))
        .flat_map(|r| r.samples.iter().filter(|s| s.0.starts_with("{__name__=\"up\"")).map(|s| s.1))
        .collect()
}

/// The timestamps of the agent's next `n` scrapes with samples (its batches on stdout).
fn scrape_times(a: &Agent, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| {
            let b = a.wait_for(Duration::from_secs(10), |b| {
                b["samples"].as_array().is_some_and(|s| !s.is_empty())
            });
            b["timestamp"].as_i64().unwrap()
        })
        .collect()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(target: &str, rx: &Receiver, extra: &str) -> String {
    format!(
        "global: {{scrape_interval: 1s, external_labels: {{site: edge}}}}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{targets: ['{target}']}}]\nremote_write:\n  - url: {}\n    queue_config: {{min_backoff: 100ms, max_backoff: 500ms}}\n{extra}",
        rx.url()
    )
}

fn exposition(n: usize) -> String {
    (0..n).map(|i| format!("m{{i=\"{i}\"}} {i}\n")).collect()
}

#[test]
fn one_scrape_per_request_in_order_with_the_spec_headers() {
    let t = Target::start(Reply::text(&exposition(50)));
    let rx = Receiver::start();
    let _a = Agent::start("atomic", &config(&t.addr, &rx, ""));
    wait_until(Duration::from_secs(20), || rx.requests().len() >= 4);
    let reqs = rx.requests();
    for r in &reqs {
        // 50 series + 5 report series, all stamped with one scrape time.
        assert_eq!(r.samples.len(), 55, "one whole scrape per request");
        let ts: std::collections::HashSet<i64> = r.samples.iter().map(|s| s.1).collect();
        assert_eq!(ts.len(), 1, "exactly one scrape in the request");
        assert!(r.samples.iter().all(|s| s.0.contains("site=\"edge\"")), "external labels");
        assert_eq!(r.headers["content-encoding"], "snappy");
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        assert_eq!(r.headers["x-prometheus-remote-write-version"], "0.1.0");
        assert!(r.headers["user-agent"].starts_with("ferry-agent/"));
    }
    let up = accepted_up(&reqs);
    assert!(up.windows(2).all(|w| w[0] < w[1]), "timestamps in order: {up:?}");
}

#[test]
fn held_scrapes_merge_by_series_and_a_kill9_loses_none() {
    let t = Target::start(Reply::text(&exposition(30)));
    let rx = Receiver::start();
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - url: {}\n    protobuf_message: io.prometheus.write.v2.Request\n    queue_config: {{batch_send_deadline: 4s, max_samples_per_send: 1000}}\nwal: {{sync_interval: 100ms}}\n",
        t.addr,
        rx.url()
    );
    let mut a = Agent::start("held", &config);
    let first = scrape_times(&a, 6);
    wait_until(Duration::from_secs(20), || {
        let up = accepted_up(&rx.requests());
        first.iter().all(|t| up.contains(t))
    });
    let reqs = rx.requests();
    assert!(
        reqs.len() < first.len(),
        "{} requests for {} scrapes: scrapes were held",
        reqs.len(),
        first.len()
    );
    // 30 series and 5 report series, each once per request with all its samples, in order.
    let merged = reqs.iter().filter(|r| r.samples.len() > 35).count();
    assert!(merged > 0, "some request carries more than one scrape");
    for r in &reqs {
        assert_eq!(r.timeseries, 35, "one TimeSeries per series");
        assert_eq!(r.samples.len() % 35, 0, "whole scrapes only");
        for w in r.samples.windows(2).filter(|w| w[0].0 == w[1].0) {
            assert!(w[0].1 < w[1].1, "a series' samples in timestamp order: {w:?}");
        }
    }
    let held_gauge = || {
        let (_, text) = http(&a.web, "GET", "/metrics");
        text.lines()
            .find(|l| l.starts_with("ferry_remote_held_samples{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    wait_until(Duration::from_secs(10), || held_gauge().is_some_and(|v| v >= 35.0));
    // Scrapes held when the agent dies are in the WAL, unacknowledged: sent after restart.
    let held = scrape_times(&a, 2);
    std::thread::sleep(Duration::from_millis(300)); // the WAL sync interval
    a.kill9_and_restart();
    wait_until(Duration::from_secs(30), || {
        let up = accepted_up(&rx.requests());
        held.iter().all(|t| up.contains(t))
    });
}

#[test]
fn retries_carry_the_same_samples_and_4xx_is_not_retried() {
    let t = Target::start(Reply::text("g 1\n"));
    let rx = Receiver::start();
    rx.script(&[
        Answer::status(500),
        Answer::ok(),
        Answer { status: 429, retry_after: Some("2"), written: true },
        Answer::ok(),
        Answer::status(400),
    ]);
    let _a = Agent::start("retries", &config(&t.addr, &rx, ""));
    wait_until(Duration::from_secs(30), || rx.requests().len() >= 7);
    let reqs = rx.requests();
    let first_ts = |r: &Request| r.samples[0].1;
    // 500 → the next request is the same scrape, marked as a retry.
    assert_eq!(reqs[0].status, 500);
    assert_eq!(first_ts(&reqs[1]), first_ts(&reqs[0]), "a retry carries the same samples");
    assert_eq!(reqs[1].headers.get("retry-attempt").map(String::as_str), Some("1"));
    // 429 with Retry-After: 2 → the same scrape again, no sooner than 2 s later.
    assert_eq!(reqs[2].status, 429);
    assert_eq!(first_ts(&reqs[3]), first_ts(&reqs[2]));
    let waited = reqs[3].at - reqs[2].at;
    assert!(waited >= Duration::from_millis(1900), "Retry-After honoured: waited {waited:?}");
    // 400 → dropped; that scrape never comes back.
    assert_eq!(reqs[4].status, 400);
    let rejected = first_ts(&reqs[4]);
    assert!(reqs[5..].iter().all(|r| first_ts(r) != rejected), "a 400 is not retried");
    assert!(!reqs[5].headers.contains_key("retry-attempt"));
}

#[test]
fn outage_then_kill9_then_recovery_loses_nothing() {
    let t = Target::start(Reply::text(&exposition(20)));
    let rx = Receiver::start();
    // On one runtime worker per core, where every other test runs the default single thread.
    let cfg = config(&t.addr, &rx, "wal: {sync_interval: 100ms}\n");
    let mut a = Agent::start_env("outage", &cfg, &[("FERRY_WORKER_THREADS", "0")]);
    wait_until(Duration::from_secs(20), || !accepted_up(&rx.requests()).is_empty());
    rx.refuse(true);
    // Scrapes made during the outage (the agent keeps scraping).
    let during = scrape_times(&a, 4);
    std::thread::sleep(Duration::from_millis(300)); // let the WAL sync interval pass
    a.kill9_and_restart();
    std::thread::sleep(Duration::from_secs(2));
    rx.refuse(false);
    wait_until(Duration::from_secs(30), || {
        let up = accepted_up(&rx.requests());
        during.iter().all(|t| up.contains(t))
    });
    // No gaps: every scrape time between the first and the last accepted one arrived,
    // apart from the second or so the agent was down.
    let mut up = accepted_up(&rx.requests());
    let len_with_dups = up.len();
    up.sort_unstable();
    up.dedup();
    let dups = len_with_dups - up.len();
    assert!(dups <= 2, "only in-flight requests may be re-sent: {dups} duplicates");
    let before_kill: Vec<i64> = up.iter().copied().filter(|t| *t <= *during.last().unwrap()).collect();
    for w in before_kill.windows(2) {
        assert!(w[1] - w[0] <= 1500, "gap in delivered scrapes before the kill: {w:?}");
    }
    // Per series, timestamps arrive in order (excluding exact re-sends).
    let reqs = rx.requests();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for r in reqs.iter().filter(|r| (200..300).contains(&r.status)) {
        for (s, ts, _) in &r.samples {
            if let Some(prev) = last.get(s) {
                assert!(ts >= prev, "series {s} went back in time: {prev} then {ts}");
            }
            last.insert(s.clone(), *ts);
        }
    }
}

#[test]
fn rw2_falls_back_to_rw1_on_415_and_on_missing_written_headers() {
    for (tag, answer) in
        [("f415", Answer::status(415)), ("fnohdr", Answer { status: 204, retry_after: None, written: false })]
    {
        let t = Target::start(Reply::text("g 1\n"));
        let rx = Receiver::start();
        rx.script(&[answer]);
        let cfg = config(
            &t.addr,
            &rx,
            "    protobuf_message: io.prometheus.write.v2.Request
",
        );
        let a = Agent::start(tag, &cfg);
        wait_until(Duration::from_secs(20), || rx.requests().len() >= 3);
        let reqs = rx.requests();
        assert_eq!(reqs[0].proto, WriteProto::V2);
        assert_eq!(reqs[1].proto, WriteProto::V1, "{tag}: re-sent as RW1");
        assert_eq!(reqs[1].samples, reqs[0].samples, "{tag}: the same data");
        assert!(reqs[2..].iter().all(|r| r.proto == WriteProto::V1), "{tag}: stays on RW1");
        let (_, metrics) = http(&a.web, "GET", "/metrics");
        assert!(
            metrics.lines().any(|l| l.starts_with("ferry_remote_rw1_fallback{") && l.ends_with(" 1")),
            "{metrics}"
        );
    }
}

#[test]
fn torn_wal_tail_is_repaired_on_start_and_the_cap_drops_and_counts() {
    let t = Target::start(Reply::text(&exposition(2000)));
    let rx = Receiver::start();
    rx.refuse(true);
    let mut a = Agent::start("cap", &config(&t.addr, &rx, "wal: {max_size: 64KB, sync_interval: 100ms}\n"));
    // With the receiver down the WAL fills past its cap: the oldest data goes, counted.
    wait_until(Duration::from_secs(40), || {
        let (_, m) = http(&a.web, "GET", "/metrics");
        m.lines().any(|l| {
            l.starts_with("ferry_remote_dropped_samples_total{")
                && l.contains("wal_full")
                && !l.ends_with(" 0")
        })
    });
    let (_, m) = http(&a.web, "GET", "/metrics");
    let size: f64 = m
        .lines()
        .find(|l| l.starts_with("ferry_wal_size_bytes "))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // The cap holds to within one record (the first record here carries 2,000 series
    // definitions, larger than a segment).
    assert!(size <= 2.0 * 64.0 * 1024.0, "WAL stays near its cap: {size}");
    // Crash, tear the newest segment's tail, restart: repaired, and delivery resumes.
    a.kill9_and_restart();
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let wal_dir = a.dir.join("data").join("wal");
    let newest = std::fs::read_dir(&wal_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap()
        .write_all(&[0xff, 0x00, 0x00, 0x10, 1, 2])
        .unwrap();
    a.kill9_and_restart();
    rx.refuse(false);
    wait_until(Duration::from_secs(30), || accepted_up(&rx.requests()).len() >= 3);
}

/// A full disk (a 1 MiB tmpfs under the storage path, mounted when running as root):
/// the agent drops and counts, keeps scraping, and recovers when space returns.
#[test]
fn full_disk_is_survived_and_counted() {
    let body: String = (0..2000).map(|i| format!("m{{i=\"{i}\"}} {i}.5\n")).collect();
    let t = Target::start(Reply::text(&body));
    let rx = Receiver::start();
    rx.refuse(true);
    let dir = std::env::temp_dir().join(format!("ferry-fulldisk-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping full_disk_is_survived_and_counted: cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(data.clone());
    // A cap larger than the filesystem, so the disk fills before the cap acts.
    let cfg = config(&t.addr, &rx, "wal: {max_size: 100MB, sync_interval: 100ms}\n")
        .replace("scrape_interval: 1s", "scrape_interval: 200ms, scrape_timeout: 200ms");
    std::fs::write(dir.join("agent.yaml"), cfg).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let a = Agent::spawn(dir.clone(), web);
    wait_until(Duration::from_secs(60), || {
        let (_, m) = http(&a.web, "GET", "/metrics");
        m.lines().any(|l| l.starts_with("ferry_wal_write_failures_total ") && !l.ends_with(" 0"))
    });
    // Still alive, still scraping.
    assert_eq!(http(&a.web, "GET", "/-/healthy").0, 200);
    a.wait_for(Duration::from_secs(10), |b| b["samples"].as_array().is_some_and(|s| !s.is_empty()));
    // Space returns when the receiver takes the backlog and segments are deleted.
    rx.refuse(false);
    let before = accepted_up(&rx.requests()).len();
    wait_until(Duration::from_secs(60), || accepted_up(&rx.requests()).len() >= before + 3);
    let (_, m) = http(&a.web, "GET", "/metrics");
    let failures_now: u64 = m
        .lines()
        .find(|l| l.starts_with("ferry_wal_write_failures_total "))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (_, m) = http(&a.web, "GET", "/metrics");
    let failures_later: u64 = m
        .lines()
        .find(|l| l.starts_with("ferry_wal_write_failures_total "))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(failures_now, failures_later, "writes succeed again once space is back");
    drop(a);
}

/// README's quickstart, as written: the agent with config.example.yaml and an embedded
/// receiver; after a few scrapes the receiver answers queries with the agent's own `up`.
#[test]
fn quickstart_pipeline_delivers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = std::env::temp_dir().join(format!("ferry-quickstart-{}", std::process::id()));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .current_dir(root)
        .args(["--config.file=config.example.yaml", "--receiver.listen-address=127.0.0.1:9201"])
        .arg(format!("--storage.path={}", dir.display()))
        .arg("--web.listen-address=127.0.0.1:9099")
        .env("FERRY_SITE", "ci")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    // Each job scrapes at its own phase within the 15 s interval, so wait for both.
    wait_until(Duration::from_secs(60), || {
        let (status, body) = http("127.0.0.1:9201", "GET", "/api/v1/query?query=up");
        let (_, receiver) =
            http("127.0.0.1:9201", "GET", "/api/v1/series?match[]=%7Bjob%3D%22ferry-receiver%22%7D");
        status == 200
            && body.contains("\"job\":\"ferry-agent\"")
            && body.contains("\"site\":\"ci\"")
            && receiver.contains("ferry_receiver_samples_written_total")
    });
    drop(_guard);
    let _ = std::fs::remove_dir_all(dir);
}

/// Two endpoints, one dead: the live one gets every scrape; the dead one's backlog waits in
/// the WAL under its own cursor and arrives, complete, when it comes back.
#[test]
fn a_dead_endpoint_never_blocks_a_live_one() {
    let t = Target::start(Reply::text("g 1\n"));
    let live = Receiver::start();
    let dead = Receiver::start();
    dead.refuse(true);
    let cfg = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - {{url: '{}', name: live}}\n  - {{url: '{}', name: dead, queue_config: {{min_backoff: 100ms, max_backoff: 300ms}}}}\n",
        t.addr,
        live.url(),
        dead.url()
    );
    let _a = Agent::start("twoends", &cfg);
    wait_until(Duration::from_secs(20), || accepted_up(&live.requests()).len() >= 4);
    assert!(accepted_up(&dead.requests()).is_empty());
    dead.refuse(false);
    let sent_live = accepted_up(&live.requests());
    wait_until(Duration::from_secs(20), || {
        let got = accepted_up(&dead.requests());
        sent_live.iter().all(|t| got.contains(t))
    });
}

/// SIGTERM with the endpoint down: the agent gives up at the flush deadline instead of
/// hanging, exits 0, and what it could not send is delivered after the restart.
#[test]
fn shutdown_respects_the_flush_deadline_and_keeps_the_rest() {
    let t = Target::start(Reply::text("g 1\n"));
    let rx = Receiver::start();
    rx.refuse(true);
    let dir = std::env::temp_dir().join(format!("ferry-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agent.yaml"), config(&t.addr, &rx, "wal: {sync_interval: 100ms}\n")).unwrap();
    let start = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
            .arg(format!("--config.file={}", dir.join("agent.yaml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
            .arg("--storage.remote.flush-deadline=1s")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = start(&dir);
    std::thread::sleep(Duration::from_secs(4)); // a few scrapes pile up in the WAL
    let asked = Instant::now();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(asked.elapsed() < Duration::from_secs(10), "took {:?} to stop", asked.elapsed());
    assert!(accepted_up(&rx.requests()).is_empty());
    rx.refuse(false);
    let mut child = start(&dir);
    wait_until(Duration::from_secs(20), || accepted_up(&rx.requests()).len() >= 3);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
