//! The harness checks receivers for real: run against ferry-receiver (in-process, real HTTP on
//! loopback) every case passes; run against a deliberately broken receiver the right MUST
//! cases fail and the exit code says so.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

fn run(url: &str, read_url: Option<&str>, format: &str) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry-conformance"));
    cmd.args(["receiver", "--url", url, "--format", format]);
    if let Some(r) = read_url {
        cmd.args(["--remote-read-url", r]);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn ferry_receiver_passes_every_case() {
    let dir = std::env::temp_dir().join(format!("ferry-conformance-{}", std::process::id()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = rt
        .block_on(ferry_receiver::server::start(
            ferry_receiver::server::Options {
                listen: "127.0.0.1:0".into(),
                storage: dir.clone(),
                config: Default::default(),
                checkpoint_interval: std::time::Duration::from_secs(60),
                cache_bytes: 16 << 20,
            },
            async {
                let _ = stop_rx.await;
            },
        ))
        .unwrap();
    let base = format!("http://{}", running.addr);
    let (code, json) = run(&format!("{base}/api/v1/write"), Some(&format!("{base}/api/v1/read")), "json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let failed: Vec<&serde_json::Value> =
        v["cases"].as_array().unwrap().iter().filter(|c| c["result"] != "pass").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(code, 0);
    let _ = stop_tx.send(());
    let _ = rt.block_on(running.done);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_receiver_fails_the_right_must_cases() {
    // Answers 200 to everything, with no *-Written headers and no body: a receiver that
    // decodes nothing and checks nothing.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let mut seen = Vec::new();
                // Read headers and the body (Content-Length) before answering.
                loop {
                    let Ok(n) = c.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            });
        }
    });
    let (code, json) = run(&format!("http://{addr}/api/v1/write"), None, "json");
    assert_eq!(code, 1, "a MUST failed, so the exit code is 1");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let result = |id: &str| {
        v["cases"].as_array().unwrap().iter().find(|c| c["case"] == id).unwrap_or_else(|| panic!("{id}"))["result"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for id in [
        "rw2_written_headers_exact",
        "unsupported_content_type_is_415",
        "unsupported_encoding_is_415",
        "corrupt_snappy_is_400",
        "partial_write_is_not_2xx",
        "odd_label_refs_are_400",
        "invalid_histogram_is_400",
    ] {
        assert_eq!(result(id), "fail", "{id} must catch the broken receiver");
    }
    assert_eq!(result("rw1_valid_request_is_2xx"), "pass");
    assert_eq!(result("stale_marker_stored_bit_exact"), "n/a", "no read URL given");
    // The other formats render the same verdicts.
    let (_, junit) = run(&format!("http://{addr}/api/v1/write"), None, "junit");
    assert!(junit.contains("<testsuite name=\"receiver\"") && junit.contains("<failure"));
    let (_, table) = run(&format!("http://{addr}/api/v1/write"), None, "table");
    assert!(table.contains("MUST failures)"));
}

// ---------------------------------------------------------------------------------------------
// Sender mode.

/// ferry-agent, built by this workspace (next to the harness binary).
fn ferry_agent() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_BIN_EXE_ferry-conformance")).with_file_name("ferry-agent");
    if !p.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "ferry-agent", "--bin", "ferry-agent"])
            .status()
            .unwrap();
        assert!(st.success(), "building ferry-agent");
    }
    p
}

/// Sender suites are timing-sensitive (backoff gaps, Retry-After, outages): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sender(args: &[&str]) -> (i32, serde_json::Value) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-conformance"))
        .arg("sender")
        .args(args)
        .args(["--format", "json", "--parallel", "6"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

fn verdicts(v: &serde_json::Value) -> std::collections::BTreeMap<String, (String, String)> {
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            (s("case"), (s("result"), s("reason")))
        })
        .collect()
}

#[test]
fn ferry_agent_passes_the_sender_suite_with_rw1_and_rw2() {
    let agent = ferry_agent();
    for protocol in ["1", "2"] {
        let (code, v) = sender(&[
            "--profile",
            "ferry-agent",
            "--binary",
            agent.to_str().unwrap(),
            "--protocol",
            protocol,
        ]);
        let failed: Vec<_> = verdicts(&v).into_iter().filter(|(_, (r, _))| r == "fail").collect();
        assert!(failed.is_empty(), "RW{protocol}: {failed:#?}");
        assert_eq!(code, 0);
        let na: Vec<_> =
            verdicts(&v).into_iter().filter(|(_, (r, _))| r == "n/a").map(|(id, _)| id).collect();
        let want_na: &[&str] = if protocol == "1" {
            &[
                "headers_rw2",
                "rw2_2xx_without_written_headers_is_not_success",
                "rw2_exemplars",
                "rw2_fallback_to_rw1_on_415",
                "rw2_metadata",
                "rw2_symbol_table",
            ]
        } else {
            &["headers_rw1"]
        };
        assert_eq!(na, want_na, "RW{protocol}: only the other protocol's cases are n/a");
    }
}

/// Flaws of the fake sender, and the cases that must catch each.
const FLAWS: &[(&str, &[&str])] = &[
    ("none", &[]),
    ("no-up", &["up", "up_invalid_exposition", "up_zero_and_stale_on_failed_scrape"]),
    ("no-staleness", &["staleness_disappearing_series", "up_zero_and_stale_on_failed_scrape"]),
    ("retries-400", &["no_retry_on_4xx"]),
    ("drops-5xx", &["retry_on_5xx", "backoff_on_5xx"]),
    // Nothing decodes, so every case fails; snappy_block_protobuf says why.
    ("framed-snappy", &["*"]),
    ("unsorted-labels", &["sorted_labels"]),
];

/// The cases the fake sender is run on: the ones some flaw must fail, plus a few it passes.
const FAKE_CASES: &str = "up,staleness_disappearing_series,up_zero_and_stale,no_retry_on_4xx,retry_on_5xx,backoff_on_5xx,snappy_block,sorted_labels,job_label";

#[test]
fn broken_senders_fail_the_right_cases() {
    let exe = std::env::current_exe().unwrap();
    for (flaw, must_fail) in FLAWS {
        let cmd = format!(
            "env FAKE_SENDER_FLAW={flaw} FAKE_SENDER_TARGET={{target}} FAKE_SENDER_URL={{url}} {} --exact fake_sender --nocapture",
            exe.display()
        );
        let (code, v) = sender(&["--command", &cmd, "--cases", FAKE_CASES]);
        let verdicts = verdicts(&v);
        assert!(verdicts.len() >= 9, "{flaw}: {verdicts:?}");
        for (id, (result, reason)) in &verdicts {
            let want = if must_fail.contains(&id.as_str()) || must_fail == &["*"] { "fail" } else { "pass" };
            assert_eq!(result, want, "flaw {flaw}: case {id} ({reason})");
        }
        assert_eq!(code, if must_fail.is_empty() { 0 } else { 1 }, "flaw {flaw}: exit code");
        if *flaw == "framed-snappy" {
            assert!(
                verdicts["snappy_block_protobuf"].1.contains("framed"),
                "{:?}",
                verdicts["snappy_block_protobuf"]
            );
        }
    }
}

/// Not a test of its own: when FAKE_SENDER_TARGET is set, this test binary acts as a small
/// remote-write sender (scrape every second, RW 1.0, retries with backoff) with the flaw
/// named by FAKE_SENDER_FLAW, until it is killed.
#[test]
fn fake_sender() {
    let (Ok(target), Ok(url)) = (std::env::var("FAKE_SENDER_TARGET"), std::env::var("FAKE_SENDER_URL"))
    else {
        return;
    };
    let flaw = std::env::var("FAKE_SENDER_FLAW").unwrap_or_default();
    fake::run(&target, &url, &flaw);
}

mod fake {
    use std::collections::{BTreeMap, VecDeque};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant, SystemTime};

    use ferry_protocol::rw1::{Label, Sample, TimeSeries, WriteRequest};

    fn http(addr: &str, req: &[u8]) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(req).ok()?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.split(' ').nth(1)?.parse().ok()?;
        Some((status, out.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default()))
    }

    /// `name{labels} value` lines; None when any line is invalid (the scrape fails).
    fn parse(body: &str) -> Option<Vec<(BTreeMap<String, String>, f64)>> {
        let mut out = Vec::new();
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().ok()?,
            };
            let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                return None;
            }
            let mut labels = BTreeMap::from([("__name__".to_owned(), name.to_owned())]);
            let inner = rest.strip_suffix('}')?;
            for pair in inner.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=')?;
                let v = v.strip_prefix('"')?.strip_suffix('"')?;
                if labels.insert(k.to_owned(), v.to_owned()).is_some() {
                    return None;
                }
            }
            labels.retain(|_, v| !v.is_empty());
            out.push((labels, value));
        }
        Some(out)
    }

    fn framed(raw: &[u8]) -> Vec<u8> {
        // Stream identifier + one uncompressed chunk (checksum left zero: the receiver
        // rejects the framing before it would look).
        let mut out = vec![0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];
        let len = raw.len() + 4;
        out.extend_from_slice(&[0x01, len as u8, (len >> 8) as u8, (len >> 16) as u8, 0, 0, 0, 0]);
        out.extend_from_slice(raw);
        out
    }

    pub fn run(target: &str, url: &str, flaw: &str) {
        let push_addr = url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
        let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
        let mut previous: Vec<BTreeMap<String, String>> = Vec::new();
        let mut next_scrape = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            if Instant::now() >= next_scrape {
                next_scrape += Duration::from_secs(1);
                let ts = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
                let req = format!("GET /metrics HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
                let parsed = match http(target, req.as_bytes()) {
                    Some((200, body)) => parse(&body),
                    _ => None,
                };
                let mut series = Vec::new();
                let up = parsed.is_some();
                let mut current = Vec::new();
                for (mut l, v) in parsed.unwrap_or_default() {
                    for k in ["job", "instance"] {
                        if let Some(x) = l.remove(k) {
                            l.insert(format!("exported_{k}"), x);
                        }
                    }
                    l.insert("job".into(), "test".into());
                    l.insert("instance".into(), target.into());
                    current.push(l.clone());
                    series.push((l, v));
                }
                if flaw != "no-staleness" {
                    for gone in previous.iter().filter(|p| !current.contains(p)) {
                        series.push((gone.clone(), f64::from_bits(0x7ff0000000000002)));
                    }
                }
                previous = current;
                if flaw != "no-up" {
                    let l = BTreeMap::from([
                        ("__name__".to_owned(), "up".to_owned()),
                        ("instance".to_owned(), target.to_owned()),
                        ("job".to_owned(), "test".to_owned()),
                    ]);
                    series.push((l, if up { 1.0 } else { 0.0 }));
                }
                let timeseries = series
                    .into_iter()
                    .map(|(l, v)| {
                        let mut labels: Vec<Label> = l.into_iter().map(|(k, v)| Label::new(k, v)).collect();
                        if flaw == "unsorted-labels" {
                            labels.reverse();
                        }
                        TimeSeries {
                            labels,
                            samples: vec![Sample { value: v, timestamp: ts }],
                            ..Default::default()
                        }
                    })
                    .collect();
                let msg = WriteRequest { timeseries, ..Default::default() };
                let body = if flaw == "framed-snappy" {
                    let mut raw = Vec::new();
                    prost::Message::encode(&msg, &mut raw).unwrap();
                    framed(&raw)
                } else {
                    ferry_protocol::codec::Encoder::default().encode(&msg)
                };
                queue.push_back(body);
            }
            if let Some(body) = queue.front() {
                let mut req = format!(
                    "POST /api/v1/write HTTP/1.1\r\nHost: {push_addr}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\nUser-Agent: fake-sender\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                req.extend_from_slice(body);
                let retry = match http(&push_addr, &req) {
                    Some((s, _)) if (200..300).contains(&s) => false,
                    Some((s, _)) if s >= 500 => flaw != "drops-5xx",
                    Some((400..=499, _)) => flaw == "retries-400",
                    _ => true,
                };
                if retry {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                } else {
                    queue.pop_front();
                    backoff = Duration::from_millis(200);
                }
                continue;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus 2.42 (Debian) as the reference peer. `.ci/run` installs it and sets
// FERRY_REQUIRE_PROMETHEUS=1; elsewhere these tests skip when it is missing.

fn prometheus() -> Option<&'static str> {
    let found = Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("FERRY_REQUIRE_PROMETHEUS").is_none(), "prometheus is not installed");
        eprintln!("skipping: prometheus is not installed");
        return None;
    }
    Some("prometheus")
}

/// Prometheus 2.42 agent mode (RW 1.0) passes the classic suite, as the published results
/// say (reference §3.2). The one difference is a MAY: 2.42 applies Retry-After to 429 only,
/// not to 5xx (later versions use it for both).
#[test]
fn prometheus_agent_mode_matches_its_known_results() {
    let Some(bin) = prometheus() else { return };
    let (code, v) = sender(&["--profile", "prometheus", "--binary", bin]);
    let verdicts = verdicts(&v);
    for (id, (result, reason)) in &verdicts {
        let want = match id.as_str() {
            // Ferry's extensions are not Prometheus' promises: it passes the durability ones
            // at this scale, and splits a scrape over requests when a batch fills up.
            "atomic_scrape_requests" => continue,
            "retry_after_on_5xx" => "fail",
            id if id.starts_with("rw2_") || id == "headers_rw2" => "n/a",
            _ => "pass",
        };
        assert_eq!(result, want, "prometheus: {id} ({reason})");
    }
    assert_eq!(code, 0, "no MUST fails");
}

/// Prometheus 2.42's receiver (`--web.enable-remote-write-receiver`) speaks RW 1.0 only: it
/// decodes a body before looking at its Content-Type and reads RW 2.0 bodies as empty RW 1.0
/// requests (204, no Written headers). The harness reports exactly that.
#[test]
fn prometheus_receiver_matches_its_known_results() {
    let Some(bin) = prometheus() else { return };
    let dir = std::env::temp_dir().join(format!("ferry-conformance-prom-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), "global: {}\n").unwrap();
    let mut child = Command::new(bin)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "prometheus did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, json) = run(&format!("http://127.0.0.1:{port}/api/v1/write"), None, "json");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let failing = [
        "rw2_written_headers_exact",
        "unsupported_content_type_is_415",
        "unknown_proto_message_is_415",
        "unsupported_encoding_is_415",
        "partial_write_is_not_2xx",
        "partial_write_counts_what_was_written",
        "error_body_is_human_readable",
        "odd_label_refs_are_400",
        "out_of_range_ref_is_400",
        "far_future_is_400",
        "valid_histogram_is_counted",
        "invalid_histogram_is_400",
    ];
    for c in v["cases"].as_array().unwrap() {
        let id = c["case"].as_str().unwrap();
        let want = if failing.contains(&id) {
            "fail"
        } else if id == "stale_marker_stored_bit_exact" {
            "n/a"
        } else {
            "pass"
        };
        assert_eq!(c["result"], want, "prometheus receiver: {id} ({})", c["reason"]);
    }
    assert_eq!(code, 1, "MUST failures");
}
